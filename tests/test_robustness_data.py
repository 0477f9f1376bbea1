"""Robustness of the data path: a damaged decode cache, labels beyond float32, a Ctrl-C in setup's cleanup,
SIGHUP, and temporaries that a killed writer left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import hydranet
import hydranet.core.run_setup as run_setup
from conftest import labelled_images, tiny_spec, train_from_the_cli, with_task_kind
from hydranet.core.atomic import atomic_file, remove_stale_temporaries, stale_temporaries, writer_tag
from hydranet.core.data import parse_labels
from hydranet.core.decode import CHECKSUM_KEY, SAMPLE_BLOCK, SAMPLE_BLOCKS, cache_key, decode_images, pixel_checksum
from hydranet.core.engine import load_prepared_data
from hydranet.core.errors import TrainingInterrupted
from hydranet.core.interfaces import Sample
from hydranet.core.spec import load_spec
from hydranet.tasks.kinds import RegressionParams, RegressionTask


def folder_spec(root: Path, components):
    raw = tiny_spec(root)
    raw["tasks"] = [{"name": "age", "kind": "regression", "label": "age"}]
    raw["data"] = {"name": "folder", "root": str(root), "val_fraction": 0.25}
    return load_spec(raw, components=components)


def _ended() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def tag_of(pid: int) -> str:
    return f"{pid}@{writer_tag().partition('@')[2]}"


# --- 1. a damaged decode cache -----------------------------------------------------------------------------

def test_a_cache_pixel_file_overwritten_with_noise_is_decoded_again_with_a_note(tmp_path, components, monkeypatch):
    monkeypatch.setenv("HYDRANET_CACHE", str(tmp_path / "cache"))
    spec = folder_spec(labelled_images(tmp_path / "faces", "file,age", [str(20 + i) for i in range(12)]), components)
    first = load_prepared_data(spec, spec.build_tasks(), progress=False)
    good = first.images.clone()
    [pixels] = (tmp_path / "cache").rglob("decoded-*.u8")
    pixels.write_bytes(np.random.default_rng(0).integers(0, 256, pixels.stat().st_size, np.uint8).tobytes())
    again = load_prepared_data(spec, spec.build_tasks(), progress=False)
    assert torch.equal(again.images, good)  # decoded again, not noise
    [note] = [line for line in again.notes if "damaged" in line]
    assert str(pixels) in note and "decoded again" in note
    third = load_prepared_data(spec, spec.build_tasks(), progress=False)  # the rebuilt entry is a clean hit
    assert third.decoded.from_cache and not [line for line in third.notes if "damaged" in line]
    assert torch.equal(third.images, good)


@pytest.fixture
def jpegs(tmp_path) -> list[str]:
    return [str(path) for path in sorted(labelled_images(tmp_path / "imgs", "file,age", ["1"] * 5).glob("*.jpg"))]


@pytest.mark.parametrize("damage", ["zeroed", "swapped"])
def test_a_zeroed_or_swapped_pixel_file_is_a_miss(tmp_path, jpegs, damage):
    cache = tmp_path / "cache"
    decode_images(jpegs, 16, cache_dir=cache, progress=False)
    decode_images(jpegs[::-1], 16, cache_dir=cache, progress=False)  # same size, other pixels
    mine = cache / f"decoded-{cache_key(jpegs, 16)}.u8"
    other = cache / f"decoded-{cache_key(jpegs[::-1], 16)}.u8"
    mine.write_bytes(bytes(mine.stat().st_size) if damage == "zeroed" else other.read_bytes())
    result = decode_images(jpegs, 16, cache_dir=cache, progress=False)
    assert not result.from_cache and any(str(mine) in line for line in result.warnings)


def test_the_sampled_checksum_sees_blocks_it_samples_and_not_the_bytes_between(tmp_path):
    """Documented limits: a file over SAMPLE_BLOCKS * 4 KiB is sampled; a byte between samples goes unseen."""
    path = tmp_path / "pixels.u8"
    data = bytearray(np.random.default_rng(1).integers(0, 256, 3 * SAMPLE_BLOCKS * SAMPLE_BLOCK, np.uint8))
    path.write_bytes(data)
    original = pixel_checksum(path)

    def changed_at(offset: int) -> bool:
        flipped = bytearray(data)
        flipped[offset] ^= 1
        path.write_bytes(flipped)
        return pixel_checksum(path) != original

    assert changed_at(0) and changed_at(len(data) - 1)  # the first and the last block are sampled
    assert not changed_at(SAMPLE_BLOCK + 10)  # the second block is not (blocks are ~3 blocks apart)


def test_an_entry_written_without_a_checksum_is_accepted_and_given_one(tmp_path, jpegs):
    cache = tmp_path / "cache"
    decode_images(jpegs, 16, cache_dir=cache, progress=False)
    header = cache / f"decoded-{cache_key(jpegs, 16)}.json"
    meta = json.loads(header.read_text())
    recorded = meta.pop(CHECKSUM_KEY)
    header.write_text(json.dumps(meta))  # as an older hydranet wrote it
    assert decode_images(jpegs, 16, cache_dir=cache, progress=False).from_cache
    assert json.loads(header.read_text())[CHECKSUM_KEY] == recorded


def test_a_cache_entrys_files_have_one_mode(tmp_path, jpegs):
    cache = tmp_path / "cache"
    decode_images(jpegs, 16, cache_dir=cache, progress=False)
    mask = os.umask(0)
    os.umask(mask)
    modes = {path.suffix: path.stat().st_mode & 0o777 for path in cache.glob("decoded-*")}
    assert modes == {".json": 0o666 & ~mask, ".u8": 0o666 & ~mask}


# --- 2. labels beyond float32 ------------------------------------------------------------------------------

def test_a_label_beyond_float32_is_an_invalid_label_naming_file_row_and_task(tmp_path, components):
    ages = ["1e39", "1e300", "inf", "-1e39", *(str(20 + i) for i in range(12))]
    spec = folder_spec(labelled_images(tmp_path / "faces", "file,age", ages), components)
    data = load_prepared_data(spec, spec.build_tasks(), progress=False)
    text = "\n".join(data.notes)
    assert "for task 'age'" in text
    assert "labels.csv:2 (" in text and "0.jpg): age='1e39': not a finite number as float32 (beyond" in text
    assert "labels.csv:3 (" in text and "1.jpg): age='1e300': not a finite number as float32" in text
    assert "2.jpg): age='inf': not a finite number\n" in text
    assert torch.isnan(data.targets[:4]).all() and not torch.isnan(data.targets[4:]).any()


def test_a_regression_task_says_why_a_huge_label_is_invalid():
    task = RegressionTask("h", RegressionParams(label="v"))
    assert task.parse_label({"v": "1e39"}) is None and task.parse_label({"v": "3e38"}) == 3e38
    assert task.label_problem("-1e39") == "not a finite number as float32 (beyond ±3.4e38)"


class _AsGiven(RegressionTask):
    def __init__(self, name: str):
        super().__init__(name, RegressionParams(label="v"))

    def parse_label(self, record):
        return record.get("v")


def test_a_plugin_label_beyond_float32_is_invalid_not_torchs_overflow_error():
    samples = [Sample("0.jpg", {"v": 1.0}), Sample("1.jpg", {"v": 1e39})]
    table, report = parse_labels(samples, [_AsGiven("a")])
    assert table[0, 0] == 1.0 and torch.isnan(table[1, 0])
    [(where, raw, why)] = report.invalid["a"]
    assert "1.jpg" in where and raw == "1e+39" and "not a finite number as float32" in why


def test_a_plugin_label_beyond_any_float_is_invalid_not_pythons_overflow_error():
    # float(10**400) raises OverflowError: the label is a number, too large for float32 like 1e39
    samples = [Sample("0.jpg", {"v": 1.0}), Sample("1.jpg", {"v": 10**400}), Sample("2.jpg", {"v": -(10**400)})]
    table, report = parse_labels(samples, [_AsGiven("a")])
    assert table[0, 0] == 1.0 and torch.isnan(table[1:, 0]).all()
    assert [(where, raw) for where, raw, _ in report.invalid["a"]] == [
        ("1.jpg", "an integer beyond ±1.8e308"), ("2.jpg", "an integer beyond ±1.8e308")]
    assert all("not a finite number as float32" in why for _, _, why in report.invalid["a"])


# --- 3. Ctrl-C during setup --------------------------------------------------------------------------------

def test_unchanged_switches_are_not_set_again(monkeypatch):
    def broken(*args):
        raise AttributeError("partially initialized module 'torch._inductor' has no attribute 'custom_graph_pass'")

    monkeypatch.setattr(run_setup, "_set_deterministic", broken)
    with pytest.raises(KeyboardInterrupt):
        with run_setup.callers_torch_switches():
            raise KeyboardInterrupt
    with run_setup.callers_torch_switches():
        pass  # nothing changed, nothing set: no error either


def test_a_failing_restore_never_masks_ctrl_c(faces, tmp_path, monkeypatch, components):
    """The run changed a switch (deterministic: true), Ctrl-C came during setup, and setting the switch back
    fails as it does inside a half-imported torch._inductor: still "stopped by Ctrl-C" and exit 130."""
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    def broken(*args):
        raise AttributeError("partially initialized module 'torch._inductor' has no attribute 'custom_graph_pass'")

    monkeypatch.setattr(run_setup, "load_prepared_data", ctrl_c)
    monkeypatch.setattr(run_setup, "_set_deterministic", broken)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        result = train_from_the_cli(tiny_spec(faces, deterministic=True), components, tmp_path, monkeypatch)
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    assert result.exit_code == 130, result.output
    assert "stopped by Ctrl-C" in result.output and "AttributeError" not in result.output


# --- 4. SIGHUP ---------------------------------------------------------------------------------------------

class HangUpAt(RegressionTask):
    """Sends SIGHUP to its own process from inside its `at`-th training loss call."""

    calls, at = 0, 3

    def per_sample_loss(self, output, target):
        if output.shape[0] > 1:
            HangUpAt.calls += 1
            if HangUpAt.calls == HangUpAt.at:
                os.kill(os.getpid(), signal.SIGHUP)
        return super().per_sample_loss(output, target)


def hangup_spec(faces):
    """A 2-epoch spec whose age task sends its own process SIGHUP at HangUpAt.at's loss call (counter reset)."""
    components = with_task_kind("hangup_age", HangUpAt, RegressionParams, plugin="hangup")
    raw = tiny_spec(faces, epochs=2, batch_size=16)
    raw["tasks"] = [{"name": "age", "kind": "hangup_age", "label": "age"}]
    HangUpAt.calls = 0
    return load_spec(raw, components=components), components


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_saves_logs_the_resume_command_and_leaves_no_lock(faces, tmp_path):
    spec, components = hangup_spec(faces)
    with pytest.raises(TrainingInterrupted) as caught:
        hydranet.train(spec, out_dir=tmp_path / "run", components=components, progress=False, echo=False)
    assert caught.value.signum == signal.SIGHUP and "stopped by SIGHUP" in str(caught.value)
    assert (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / ".lock").exists()
    log = (tmp_path / "run" / "train.log").read_text()
    assert "SIGHUP received" in log and "Continue with:" in log
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL  # the handler is put back


# --- 5. temporaries a killed writer left -------------------------------------------------------------------

def test_a_killed_decodes_temporary_is_removed_when_its_entry_is_written(tmp_path, jpegs):
    cache = tmp_path / "cache"
    cache.mkdir()
    key = cache_key(jpegs, 16)
    killed = cache / f".decoded-{key}.{tag_of(_ended())}.abcd1234.tmp"
    running = cache / f".decoded-{key}.{tag_of(os.getppid())}.efgh5678.tmp"  # another live run decoding it now
    old_style = cache / f".decoded-{key}.ijkl9012.tmp"  # no writer recorded, written just now: may be live
    other_entry = cache / f".decoded-{'0' * 32}.{tag_of(_ended())}.mnop3456.tmp"  # not this entry's
    for path in (killed, running, old_style, other_entry):
        path.write_bytes(b"\0" * 100)
    decode_images(jpegs, 16, cache_dir=cache, progress=False)
    assert not killed.exists()
    assert running.exists() and old_style.exists() and other_entry.exists()


def test_stale_temporaries_of_given_names_are_removed_and_live_ones_kept(tmp_path):
    dead, alive = tag_of(_ended()), tag_of(os.getppid())
    elsewhere = f"{_ended()}@00000000"  # another machine's: its PID cannot be checked here
    files = {
        "killed": f".report.csv.{dead}.a1b2c3d4.tmp",
        "live": f".report.csv.{alive}.e5f6g7h8.tmp",
        "fresh_untagged": ".report.csv.i9j0k1l2.tmp",
        "old_untagged": ".report.csv.m3n4o5p6.tmp",
        "fresh_elsewhere": f".report.csv.{elsewhere}.q7r8s9t0.tmp",
        "other_name": f".report.csv.old.{dead}.u1v2w3x4.tmp",
        "final": "report.csv",
        "probe": ".report.csv.y5z6a7b8.probe",
    }
    for name in files.values():
        (tmp_path / name).write_text("x")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(tmp_path / files["old_untagged"], (two_days_ago, two_days_ago))
    expected = sorted(tmp_path / files[k] for k in ("killed", "old_untagged"))
    assert sorted(stale_temporaries(tmp_path, ["report.csv"])) == expected
    assert sorted(remove_stale_temporaries(tmp_path, ["report.csv"])) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        files[k] for k in files if k not in ("killed", "old_untagged"))
    assert remove_stale_temporaries(tmp_path / "missing", ["report.csv"]) == []


def test_a_temporary_being_written_is_never_stale(tmp_path):
    with atomic_file(tmp_path / "last.pt") as tmp:
        tmp.write_text("x")
        assert writer_tag() in tmp.name
        assert stale_temporaries(tmp_path, ["last.pt"]) == []
