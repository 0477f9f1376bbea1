"""A spec author's walkthrough: rates that must be positive, init_from heads that do not fit, warmup, settings
that do nothing, a freeze that leaves nothing to train, dropped images, and what the run's lines say."""

from __future__ import annotations

import csv
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import hydranet
from conftest import tiny_spec
from hydranet.core import engine
from hydranet.core.cli import cli
from hydranet.core.errors import SpecError, TrainingInterrupted
from hydranet.core.spec import load_spec

DOCS = Path(__file__).resolve().parents[1] / "docs"


def train(raw: dict, out: Path, components, **kwargs) -> hydranet.RunResult:
    return hydranet.train(load_spec(raw, components=components), out_dir=out, components=components,
                          progress=False, echo=False, **kwargs)


def validate(tmp_path: Path, raw: dict):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return CliRunner().invoke(cli, ["spec", "validate", str(path)])


# 1. head_lr ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head_lr, where", [(-1, "train.head_lr"), (0, "train.head_lr"),
                                            ({"age": -0.1}, "train.head_lr.age"), ({"age": 0}, "train.head_lr.age")])
def test_head_lr_must_be_positive_like_backbone_lr(faces, tmp_path, components, head_lr, where):
    """-1 ran gradient ascent on the heads; 0 was silently replaced by lr."""
    raw = tiny_spec(faces, head_lr=head_lr)
    result = validate(tmp_path, raw)
    assert result.exit_code != 0
    assert f"{where}: should be greater than 0" in result.output, result.output
    with pytest.raises(SpecError) as caught:
        load_spec(raw, components=components)
    assert [path for path, _ in caught.value.problems] == [where]


def test_positive_head_lr_still_loads(faces, components):
    assert load_spec(tiny_spec(faces, head_lr={"age": 1e-2}), components=components).spec.train.head_lr == {"age": 1e-2}
    assert load_spec(tiny_spec(faces, head_lr=1e-2), components=components).spec.train.head_lr == 1e-2


# 2. init_from with a head whose shape changed -----------------------------------------------------------------


def test_init_from_says_why_a_checkpoint_head_was_not_loaded_and_warns_when_it_is_frozen(faces, checkpoint,
                                                                                         tmp_path, components):
    raw = tiny_spec(faces, epochs=1)
    raw["tasks"] = [{"name": "age", "hidden": 3}, "gender"]
    raw["init_from"] = str(checkpoint)
    raw["freeze"] = ["backbone", "age"]
    result = train(raw, tmp_path / "run", components)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "heads loaded: gender; new heads: age;" in log
    unfit = re.search(r"warning: head 'age' of the checkpoint does not fit: its shapes differ \((.*) in the "
                      r"checkpoint vs (.*) in this spec\); it starts from random weights", log)
    assert unfit, log
    assert "(3, " in unfit.group(2) and "(3, " not in unfit.group(1)
    frozen = ("warning: head 'age' is frozen but starts from random weights (init_from "
              f"{checkpoint} did not load it")
    assert frozen in log
    assert any(note.startswith(frozen) for note in result.notes), result.notes
    assert not any("backbone is frozen" in note for note in result.notes)  # init_from loaded it


def test_a_frozen_head_without_init_from_is_warned_about(faces, tmp_path, components):
    raw = tiny_spec(faces, epochs=1)
    raw["freeze"] = ["gender"]
    result = train(raw, tmp_path / "run", components)
    assert any(note.startswith("warning: head 'gender' is frozen but starts from random weights (no init_from)")
               for note in result.notes), result.notes


# 3. warmup_epochs ----------------------------------------------------------------------------------------------


def test_every_train_field_has_a_description_in_the_reference():
    from hydranet.core.spec_models import TrainSection

    assert [name for name, field in TrainSection.model_fields.items() if not field.description] == []
    reference = (DOCS / "reference" / "spec.md").read_text()
    assert "| `warmup_epochs` |" in reference


@pytest.mark.parametrize("scheduler", ["none", "cosine"])
def test_warmup_rises_linearly_then_follows_the_scheduler(faces, tmp_path, components, scheduler):
    # 180 training images, batch 36: 5 steps an epoch; warmup 1.4 epochs = 7 steps of 20 in all
    lr, steps, warmup, total = 3e-3, 5, 7, 20
    result = train(tiny_spec(faces, epochs=4, batch_size=36, warmup_epochs=1.4, scheduler=scheduler),
                   tmp_path / "run", components)

    def factor(step: int) -> float:  # the lr of the update after `step` updates
        if step < warmup:
            return (step + 1) / warmup
        if scheduler == "none":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    assert [row["lr"] for row in result.history] == pytest.approx([lr * factor(steps * e) for e in (1, 2, 3, 4)])
    assert result.history[0]["lr"] == pytest.approx(lr * 6 / 7)  # still rising after epoch 1
    if scheduler == "cosine":
        assert result.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_a_run_with_warmup_resumes_the_schedule_exactly(faces, tmp_path, components, monkeypatch):
    raw = tiny_spec(faces, epochs=3, batch_size=36, warmup_epochs=1.4, deterministic=True)
    whole = train(raw, tmp_path / "whole", components)
    real_evaluate = engine.evaluate

    def stop_after_epoch_one(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the epoch validates, saves and stops
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", stop_after_epoch_one)
    with pytest.raises(TrainingInterrupted):
        train(raw, tmp_path / "cut", components)
    monkeypatch.setattr(engine, "evaluate", real_evaluate)
    saved = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert saved["scheduler"]["last_epoch"] == 5
    resumed = hydranet.train(resume=tmp_path / "cut", components=components, progress=False, echo=False)
    assert [row["lr"] for row in resumed.history[1:]] == [row["lr"] for row in whole.history[1:]]

    def lr_column(run: Path) -> list[str]:
        return [row["lr"] for row in csv.DictReader(open(run / "metrics.csv"))]

    assert lr_column(tmp_path / "cut") == lr_column(tmp_path / "whole")
    final = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["model"]
    reference = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(final[name], reference[name]) for name in reference)


def test_warmup_epochs_is_checked(faces, tmp_path):
    result = validate(tmp_path, tiny_spec(faces, warmup_epochs=-1))
    assert result.exit_code != 0 and "train.warmup_epochs: should be at least 0" in result.output


# 4, 7, 9: one plain run: the documented history keys, the dropped images, the data line -------------------------


@pytest.fixture(scope="module")
def plain_run(faces, tmp_path_factory):
    """tiny_spec as it is: 180 training images in batches of 32 (20 dropped, 11%)."""
    from hydranet.core.plugins import load_components, make_plugin_manager

    components = load_components(make_plugin_manager(entry_points=False))
    out = tmp_path_factory.mktemp("plain") / "run"
    return train(tiny_spec(faces, epochs=1), out, components), (out / "train.log").read_text()


def test_the_python_api_guide_names_the_history_keys_a_run_has(plain_run):
    result, _ = plain_run
    guide = (DOCS / "guides" / "python-api.md").read_text()
    row = next(line for line in guide.splitlines() if line.startswith("| `history` |"))
    named = re.findall(r"`([^`]+)`", row)[1:]
    assert "train.loss" not in named
    keys = set(result.history[0])
    assert named and all(name in keys for name in named), (named, sorted(keys))


def test_a_batch_size_that_drops_a_tenth_of_the_training_set_is_noted(plain_run, faces, tmp_path, components):
    _, log = plain_run
    assert ("train.batch_size = 32 leaves 20 training images of 180 (11%) out of every epoch (the last, partial "
            "batch is dropped)") in log
    assert "train.batch_size 30 drops none" in log  # the largest below 32 that divides better
    train(tiny_spec(faces, epochs=1, batch_size=36), tmp_path / "even", components)
    assert "out of every epoch" not in (tmp_path / "even" / "train.log").read_text()


def test_the_data_line_says_where_the_images_are(plain_run, faces, tmp_path, components):
    _, log = plain_run
    assert "; images on device" in log
    raw = tiny_spec(faces, epochs=1, batch_size=36)
    raw["data"]["placement"] = "stream"
    train(raw, tmp_path / "stream", components)
    log = (tmp_path / "stream" / "train.log").read_text()
    assert "; images streamed from the cache file by DataLoader workers" in log and "images on stream" not in log


# 5. settings that do nothing -----------------------------------------------------------------------------------


def test_settings_that_do_nothing_are_noted(plain_run, faces, tmp_path, components):
    raw = tiny_spec(faces, epochs=1, batch_size=36, momentum=0.5, backbone_lr=1e-2, head_lr={"age": 1e-2},
                    compile=False, compile_mode="default", precision="bf16", warmup_epochs=1)
    raw["freeze"] = ["backbone", "age"]
    raw["data"]["device_memory_gb"] = 1
    notes = train(raw, tmp_path / "run", components).notes
    expected = ["warning: train.momentum (0.5) does nothing with optimizer adamw",
                "warning: train.backbone_lr does nothing: the backbone is frozen",
                "warning: train.head_lr for age does nothing: that head is frozen",
                "warning: train.compile_mode (default) does nothing: the model is not compiled here",
                "warning: data.device_memory_gb does nothing",
                "warning: train.precision: bf16 on the CPU is usually slower than fp32",
                "warning: train.warmup_epochs (1) is as long as the run (1 epoch): the whole run warms up"]
    for start in expected:
        assert sum(note.startswith(start) for note in notes) == 1, (start, notes)
    result, _ = plain_run
    assert not any("does nothing" in note or "bf16" in note or "warms up" in note for note in result.notes), \
        result.notes


# 6. freeze that leaves nothing to train ------------------------------------------------------------------------


def test_freezing_every_part_with_a_weighting_that_learns_nothing_is_a_spec_problem(faces, tmp_path, components):
    raw = tiny_spec(faces)
    raw["freeze"] = ["backbone", "age", "gender", "ethnicity"]
    result = validate(tmp_path, raw)
    assert result.exit_code != 0
    assert ("freeze: freezes every part (backbone, age, gender, ethnicity) and weighting 'sum' has no parameters "
            "of its own, so a run would have nothing to train") in result.output
    with pytest.raises(SpecError):
        load_spec(raw, components=components)
    raw["weighting"] = "uncertainty"  # its log-variances would still train
    assert validate(tmp_path, raw).exit_code == 0
    raw["weighting"], raw["freeze"] = "sum", ["backbone", "age", "gender"]
    assert validate(tmp_path, raw).exit_code == 0


# 8. compile on the CPU ------------------------------------------------------------------------------------------


def test_compiling_on_the_cpu_lets_no_cuda_home_line_through(tmp_path):
    """torch.utils.cpp_extension logs "No CUDA runtime is found, using CUDA_HOME=..." when the CPU compile
    imports it, where a CUDA toolkit is installed; in a fresh process, since it is said once per import."""
    (tmp_path / "cuda").mkdir()
    spec = {"backbone": {"name": "tiny", "width": 4}, "image_size": 16, "tasks": ["age"],
            "data": {"name": "synthetic", "count": 24, "size": 16, "root": str(tmp_path / "data")},
            "train": {"epochs": 1, "batch_size": 8, "device": "cpu", "compile": True}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    done = subprocess.run([sys.executable, "-m", "hydranet", "train", str(tmp_path / "spec.yaml"), "--out",
                           str(tmp_path / "run"), "--no-progress"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CUDA_HOME": str(tmp_path / "cuda")})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No CUDA runtime is found" not in done.stdout + done.stderr
    assert "compile default" in done.stdout + done.stderr  # it did compile
