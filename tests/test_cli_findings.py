"""What a walkthrough of the command line found: compare's data roots, its wording, notes and exit codes; eval's
hints, header and data report; export's warnings; the device list in messages."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import hydranet
from conftest import tiny_spec
from hydranet.core.cli import cli

DIRECTIONS = {"age": {"mae": False}, "gender": {"accuracy": True}, "ethnicity": {"accuracy": True, "macro_f1": True}}


def invoke(*args, code: int = 0):
    result = CliRunner().invoke(cli, [str(a) for a in args], prog_name="hydranet", catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def make_run(folder: Path, values: dict[str, float], *, root: str = "faces", started_in: Path | None = None,
             checkpoint: Path | None = None, directions: dict | None = None, seed: int = 0, **train) -> Path:
    """A finished run folder written by hand, and, with `started_in`, a last.pt (a copy of `checkpoint`) that
    records the folder it started in, as the engine does."""
    directions = directions or DIRECTIONS
    spec = tiny_spec(Path(root), seed=seed, **{"epochs": 1, **train})
    spec["data"]["root"] = root
    spec["tasks"] = list(directions)
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (folder / "metrics.csv").write_text("epoch," + ",".join(f"val.{k}" for k in values) + "\n1,"
                                        + ",".join(map(str, values.values())) + "\n")
    (folder / "summary.json").write_text(json.dumps({"best_epoch": 1, "higher_is_better": directions}))
    if started_in is not None:
        saved = torch.load(checkpoint, weights_only=True)
        saved["started_in"] = str(started_in)
        torch.save(saved, folder / "last.pt")
    return folder


VALUES = {"age.mae": 10.0, "gender.accuracy": 0.5, "ethnicity.accuracy": 0.4, "ethnicity.macro_f1": 0.2}


# ------------------------------------------------------------------ 1. data.root counts from where each run started


def test_a_relative_root_is_the_folder_the_run_started_in(checkpoint, tmp_path):
    start = tmp_path / "wt_cli"
    a = make_run(tmp_path / "a", VALUES, root=str(start / "faces"), started_in=start, checkpoint=checkpoint)
    rel = make_run(tmp_path / "rel", VALUES, root="faces", started_in=start, checkpoint=checkpoint)
    report = json.loads(invoke("compare", a, rel, "--json").output)
    assert [r["differs"] for r in report["runs"]] == [{}, {}]
    assert not any("read other data" in note for note in report["notes"]), report["notes"]
    assert "data.root" not in invoke("compare", a, rel).output


def test_one_relative_root_from_two_folders_is_two_folders(checkpoint, tmp_path):
    one = make_run(tmp_path / "one", VALUES, started_in=tmp_path / "x", checkpoint=checkpoint)
    two = make_run(tmp_path / "two", VALUES, started_in=tmp_path / "y", checkpoint=checkpoint, seed=1)
    report = json.loads(invoke("compare", one, two, "--json").output)
    assert report["runs"][1]["differs"] == {"train.seed": 1, "data.root": str(tmp_path / "y" / "faces")}
    assert "groups" not in report  # other images: not seeds of one experiment
    assert (f"two read other data than the reference: data.root differs ({tmp_path / 'x' / 'faces'} in one, "
            f"{tmp_path / 'y' / 'faces'} in two)") in " ".join(report["notes"])


def test_a_relative_root_of_a_run_that_does_not_say_where_it_started_is_compared_as_written(checkpoint, tmp_path):
    old = make_run(tmp_path / "old", VALUES)  # no checkpoint left to say where it started (deleted, or older)
    new = make_run(tmp_path / "new", VALUES, started_in=tmp_path / "x", checkpoint=checkpoint, seed=1)
    report = json.loads(invoke("compare", old, new, "--json").output)
    assert report["runs"][1]["differs"] == {"train.seed": 1}
    assert not any("read other data" in note for note in report["notes"]), report["notes"]
    assert len(report["groups"]) == 1  # seeds of one experiment, as before the roots were resolved


# ------------------------------------------------------------------ 2. the differs column as YAML writes values


def test_the_differs_column_writes_values_as_yaml(tmp_path):
    ref = make_run(tmp_path / "ref", VALUES)
    off = make_run(tmp_path / "off", VALUES, compile=False)
    text = invoke("compare", ref, off).output
    assert "train.compile=false" in text and "False" not in text


# ------------------------------------------------------------------ 3. option conflicts are usage errors


def test_test_split_at_another_epoch_is_a_usage_error(tmp_path):
    run = make_run(tmp_path / "a", VALUES)
    result = invoke("compare", run, "--split", "test", "--epoch", "last", code=2)
    assert "test metrics exist only for the best epoch" in result.output
    assert invoke("compare", tmp_path / "missing", code=1)  # a bad folder stays exit status 1
    with pytest.raises(hydranet.HydranetError, match="test metrics exist only for the best epoch"):
        hydranet.compare(run, split="test", epoch="last")


# ------------------------------------------------------------------ 4. several checkpoints given to eval


def test_two_checkpoints_of_one_run_are_no_shell_pattern_and_no_comparison(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        for ckpt in ("best.pt", "last.pt"):
            (tmp_path / "runs" / name / ckpt).write_bytes(b"not read")
    output = " ".join(invoke("eval", "runs/a/best.pt", "runs/a/last.pt", code=2).output.split())
    assert "shell pattern" not in output and "hydranet compare" not in output
    assert "2 checkpoints given: runs/a/best.pt, runs/a/last.pt" in output
    assert "best.pt holds its best epoch, last.pt its last" in output
    output = " ".join(invoke("eval", "runs/a/best.pt", "runs/a/last.pt", "runs/b/best.pt", code=2).output.split())
    assert "(to compare runs: hydranet compare runs/a runs/b)" in output


def test_default_run_folders_of_one_day_are_named_by_a_shell_pattern(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = ["runs/demo-20261128-004101", "runs/demo-20261128-005230"]
    for run in runs:
        (tmp_path / run).mkdir(parents=True)
        (tmp_path / run / "best.pt").write_bytes(b"not read")
    output = " ".join(invoke("eval", *(f"{run}/best.pt" for run in runs), code=2).output.split())
    assert "a shell pattern like runs/demo-20261128-*/best.pt matches every run it fits" in output


# ------------------------------------------------------------------ 5. export's warnings on stderr


def test_export_warns_on_stderr_and_answers_on_stdout(checkpoint, tmp_path):
    result = invoke("export", checkpoint, "--format", "torchscript", "--no-check", "--out", tmp_path / "weird.onnx")
    assert "warning:" not in result.stdout
    assert "holds a TorchScript model, but its name ends in .onnx" in result.stderr
    assert result.stdout.startswith(f"wrote {tmp_path / 'weird.onnx'}")


# ------------------------------------------------------------------ 6. devices listed as the help lists them


def test_a_misspelt_device_lists_cuda_n(checkpoint):
    output = " ".join(invoke("eval", checkpoint, "--device", "cude", code=1).output.split())
    assert "did you mean 'cuda'? devices: auto, cpu, cuda, cuda:N, mps" in output


# ------------------------------------------------------------------ 7. compare's notes, CSV and legend


def test_metrics_left_out_are_said_once_for_all_the_runs(tmp_path):
    extra = {"age": {"mae": False, "rmse": False}, **{k: v for k, v in DIRECTIONS.items() if k != "age"}}
    runs = [make_run(tmp_path / "ref", VALUES)]
    runs += [make_run(tmp_path / f"r{i}", {**VALUES, "age.rmse": 12.0}, directions=extra) for i in range(5)]
    notes = json.loads(invoke("compare", *runs, "--json").output)["notes"]
    assert notes == ["5 runs: left out, as not every run has it: age.rmse"]
    notes = json.loads(invoke("compare", *runs[:3], "--json").output)["notes"]
    assert notes == ["r0 and r1: left out, as not every run has it: age.rmse"]


def test_a_group_identical_to_the_reference_has_a_delta_m_of_0_not_float_noise(tmp_path):
    runs = []
    for group in ("ref", "same"):
        for seed, age in enumerate((0.1, 0.2, 0.7)):
            runs.append(make_run(tmp_path / f"{group}{seed}", {**VALUES, "age.mae": age}, seed=seed,
                                 lr=3e-3 if group == "ref" else 1e-3))
    rows = list(csv.DictReader(io.StringIO(invoke("compare", *runs, "--csv").stdout)))
    assert [(r["delta_m_percent"], r["delta_m_percent.mean"]) for r in rows] == [("0", "0"), ("0", "0")]
    groups = json.loads(invoke("compare", *runs, "--json").output)["groups"]
    assert [(g["delta_m"], g["delta_m_mean"]) for g in groups] == [(0, 0), (0, 0)]


def test_the_legend_is_worded_for_the_metrics_shown(tmp_path):
    age = {"age": {"mae": False}}
    runs = [make_run(tmp_path / n, {"age.mae": v}, directions=age) for n, v in (("a", 10.0), ("b", 9.0))]
    text = " ".join(invoke("compare", *runs).output.split())
    assert "Lower is better for age.mae." in text and "the others" not in text


# ------------------------------------------------------------------ 8. eval over all the images of a folder


def test_eval_over_all_images_says_so_and_names_what_was_skipped_once(checkpoint, faces, tmp_path):
    images = tmp_path / "imgs"
    shutil.copytree(faces, images)
    shutil.copy(next(images.glob("*.jpg")), images / "badname.jpg")
    output = invoke("eval", checkpoint, "--data", images, "--split", "all", "--no-progress").output
    assert f"all images of {images}, 240 images" in output and "all split of" not in output
    assert output.count("1 entry of dataset 'utkface' skipped") == 1
    assert "badname.jpg: file name does not match" in output


def test_eval_and_predict_share_the_progress_option():
    for command in ("eval", "predict"):
        assert "--progress / --no-progress" in invoke(command, "--help").output


def test_synth_words_its_progress_option_as_eval_does():
    def progress_help(command: str) -> str:
        text = " ".join(invoke(command, "--help").output.split())
        return text.partition("--progress / --no-progress ")[2].split(" -", 1)[0]

    assert progress_help("synth") == progress_help("eval") == "Progress bar on stderr (default: on in a terminal)."
