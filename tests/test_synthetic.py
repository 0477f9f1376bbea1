"""Synthetic faces: deterministic, UTKFace-named, reused when complete, learnable, and the `synth` command."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hydranet.core.errors import DataError
from hydranet.plugins import synth_command
from hydranet.plugins.datasets import synthetic
from hydranet.plugins.datasets.synthetic import (
    MARKER,
    RACE_SHARES,
    SyntheticDataset,
    draw_labels,
    missing_race_indices,
    write_synthetic,
)
from hydranet.plugins.datasets.utkface import UTKFaceDataset, parse_utkface_name


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != MARKER}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 images: the smallest count that must hold a race-missing name."""
    return write_synthetic(tmp_path_factory.mktemp("syn") / "faces", count=200, size=16, seed=7, progress=False)


def test_same_seed_gives_identical_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = contents(write_synthetic(tmp_path / "a", count=12, size=16, seed=1, progress=False))
    b = contents(write_synthetic(tmp_path / "b", count=12, size=16, seed=1, progress=False))
    c = contents(write_synthetic(tmp_path / "c", count=12, size=16, seed=2, progress=False))
    assert a == b
    assert len(a) == 12
    assert set(a) != set(c) and list(a.values()) != list(c.values())


def test_pool_and_serial_writers_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each image depends only on (seed, index), so the process pool cannot change the result."""
    serial = contents(write_synthetic(tmp_path / "serial", count=40, size=16, seed=4, progress=False))
    monkeypatch.setattr(synthetic, "POOL_MIN_COUNT", 1)
    monkeypatch.setattr(synthetic.os, "cpu_count", lambda: 2)
    pooled = contents(write_synthetic(tmp_path / "pooled", count=40, size=16, seed=4, progress=False))
    assert serial == pooled


def test_names_round_trip_through_the_utkface_parser(small: Path) -> None:
    samples = UTKFaceDataset(small).samples()
    assert len(samples) == 200 and len({s.source for s in samples}) == 200
    missing = [s for s in samples if "race" not in s.record]
    assert len(missing) >= 1
    assert all(set(s.record) == {"age", "gender"} for s in missing)
    for sample in samples:
        name = Path(sample.source).name
        assert name.endswith(".jpg.chip.jpg")
        assert len(name.split("_")[-1].split(".")[0]) == 17  # a UTKFace-like 17-digit date
        assert 1 <= int(sample.record["age"]) <= 100 and sample.record["gender"] in {"0", "1"}
    with Image.open(samples[0].source) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (16, 16))


def test_missing_race_share() -> None:
    assert missing_race_indices(199, 0) == set()
    assert len(missing_race_indices(200, 0)) == 1
    assert len(missing_race_indices(23708, 0)) == round(23708 * 0.002)
    assert missing_race_indices(5000, 3) == missing_race_indices(5000, 3)


def test_label_distribution_resembles_utkface() -> None:
    rng = np.random.default_rng(0)
    labels = [draw_labels(rng) for _ in range(4000)]
    ages = np.array([label.age for label in labels])
    assert ages.min() >= 1 and ages.max() <= 100
    assert 0.45 < np.mean((ages >= 20) & (ages <= 40)) < 0.75  # skewed towards 20-40
    assert np.mean(ages <= 10) > 0.05 and np.mean(ages >= 60) > 0.03  # children and a tail
    assert 0.44 < np.mean([label.gender for label in labels]) < 0.56
    races = Counter(label.race for label in labels)
    for race, share in enumerate(RACE_SHARES):
        assert abs(races[race] / len(labels) - share) < 0.03


def test_complete_folder_is_reused_not_redrawn(small: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise AssertionError("a complete folder was drawn again")

    monkeypatch.setattr(synthetic, "_render_all", fail)
    assert write_synthetic(small, count=200, size=16, seed=7, progress=False) == small


def test_interrupted_run_leaves_nothing_that_looks_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = synthetic.render_face

    def crash_on_fifth(*args: object) -> Image.Image:
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(synthetic, "render_face", crash_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic(tmp_path / "faces", count=10, size=16, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its partial sibling
    monkeypatch.setattr(synthetic, "render_face", real)
    out = write_synthetic(tmp_path / "faces", count=10, size=16, progress=False)
    assert len(contents(out)) == 10


def test_refuses_to_write_over_other_data(tmp_path: Path) -> None:
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "thesis.txt").write_text("keep me")
    with pytest.raises(DataError, match=r"mine already exists .*count=5, size=16, seed=0; choose") as caught:
        write_synthetic(precious, count=5, size=16, progress=False)
    assert "dataset" not in str(caught.value)  # a thesis is no dataset: no advice to read it as one
    assert [p.name for p in precious.iterdir()] == ["thesis.txt"]

    other = write_synthetic(tmp_path / "faces", count=5, size=16, progress=False)
    with pytest.raises(DataError, match="count=6.* It holds synthetic faces made with count=5, size=16, seed=0"):
        write_synthetic(other, count=6, size=16, progress=False)  # other settings: not silently replaced

    utk = tmp_path / "utk"
    utk.mkdir()
    (utk / "25_0_1_20170109150557335.jpg.chip.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"UTKFace-named images .* data: \{name: utkface, root: "):
        write_synthetic(utk, count=5, size=16, progress=False)
    labelled = tmp_path / "labelled"
    (labelled / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match=r"use the folder dataset: data: \{name: folder, root: "):
        write_synthetic(labelled, count=5, size=16, progress=False)

    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(contents(write_synthetic(empty, count=3, size=16, progress=False))) == 3


def test_dataset_draws_on_first_listing(tmp_path: Path) -> None:
    dataset = SyntheticDataset(tmp_path / "faces", count=8, size=16, seed=0)
    assert not (tmp_path / "faces").exists()
    samples = dataset.samples()
    assert len(samples) == 8 and dataset.problems == []
    assert (tmp_path / "faces" / MARKER).is_file()


def test_cues_survive_downscaling_to_8px(tmp_path: Path) -> None:
    """A linear probe on 8x8 thumbnails beats the constant predictors on all three labels.

    A cheap stand-in for "a small CNN learns this at 32 px": if a change to the
    drawing hides a cue, this fails in a second instead of in a training run.
    """
    samples = UTKFaceDataset(write_synthetic(tmp_path / "f", count=800, size=32, seed=5, progress=False)).samples()
    pixels = np.stack([np.asarray(Image.open(s.source).convert("RGB").resize((8, 8), Image.BOX), float).ravel() / 255
                       for s in samples])
    x = np.hstack([pixels, np.ones((len(samples), 1))])
    order = np.random.default_rng(0).permutation(len(samples))  # names sort by age: split at random
    train, val = order[:600], order[600:]

    def probe(y: np.ndarray, rows: np.ndarray) -> np.ndarray:
        a, b = x[train][rows[train]], y[train][rows[train]]
        w = np.linalg.solve(a.T @ a + np.eye(a.shape[1]), a.T @ b)  # ridge regression
        return x[val] @ w

    every = np.ones(len(samples), bool)
    age = np.array([float(s.record["age"]) for s in samples])
    mae, baseline = np.abs(probe(age, every) - age[val]).mean(), np.abs(age[val] - age[train].mean()).mean()
    assert mae < 0.7 * baseline

    gender = np.array([float(s.record["gender"]) for s in samples])
    accuracy = np.mean((probe(gender, every) > 0.5) == gender[val])
    assert accuracy > max(gender[val].mean(), 1 - gender[val].mean()) + 0.2

    race = np.array([int(s.record.get("race", -1)) for s in samples])
    known = race >= 0
    scores = probe(np.eye(5)[race.clip(0)], known)[known[val]]
    accuracy = np.mean(scores.argmax(1) == race[val][known[val]])
    assert accuracy > np.mean(race[val][known[val]] == 0) + 0.3


# --- the synth command -----------------------------------------------------------------------

@pytest.fixture
def cli() -> click.Group:
    # With hydranet's own context settings: click caches a command's help option from the first context
    # that asks, so a bare group would leave `hydranet synth -h` unknown for the rest of the session.
    from hydranet.core.cli import cli as hydranet_cli

    group = click.Group(context_settings=hydranet_cli.context_settings)
    synth_command.register_commands(group)
    return group


def test_synth_command_writes_then_reuses(cli: click.Group, tmp_path: Path) -> None:
    args = ["synth", str(tmp_path / "out"), "--count", "6", "--size", "16", "--seed", "2", "--no-progress"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert f"wrote 6 synthetic faces (16x16 px, seed 2) in {tmp_path / 'out'}" in first.output
    names = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name != MARKER)
    assert len(names) == 6 and all(parse_utkface_name(n) for n in names)
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0 and second.output.startswith("reused 6")


def test_synth_command_help_and_errors(cli: click.Group, tmp_path: Path) -> None:
    help_text = CliRunner().invoke(cli, ["synth", "--help"]).output
    assert "hydranet synth data/faces --count 5000" in help_text
    assert CliRunner().invoke(cli, ["synth", str(tmp_path), "--size", "8"]).exit_code == 2
    (tmp_path / "keep.txt").write_text("x")
    result = CliRunner().invoke(cli, ["synth", str(tmp_path), "--count", "2", "--no-progress"])
    assert result.exit_code == 1
    assert "already exists" in result.output and "Traceback" not in result.output
