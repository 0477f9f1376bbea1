"""Nothing the user wrote is lost: a run, an export, predictions and a sweep replace only what hydranet wrote.

Each test is a bad input found on a tour of the commands: a folder given as
`train --out` that holds the user's own spec.yaml, `export --out` or
`predict --out` naming the checkpoint being read or a file of the user's, a
sweep into another sweep's folder, a metrics.csv saved again by a
spreadsheet, a file name that is not UTF-8.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import hydranet
from conftest import make_image, tiny_spec
from hydranet.core.cli import cli
from hydranet.core.spec import load_spec


def invoke(*args, code: int | None = None):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if code is not None:
        assert result.exit_code == code, result.output
    return result


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


# ------------------------------------------------------------------ train --out


def test_train_out_at_a_folder_holding_the_users_own_spec_keeps_it(faces, tmp_path, monkeypatch):
    mine = "# my experiment: the tiny spec\n" + yaml.safe_dump(tiny_spec(faces, epochs=1))
    (tmp_path / "spec.yaml").write_text(mine)
    monkeypatch.chdir(tmp_path)
    failed = invoke("train", "spec.yaml", "--set", "data.root=../nope", "--out", ".", "--no-progress", code=1)
    assert "spec.yaml" in failed.output and "--out DIR" in failed.output
    assert (tmp_path / "spec.yaml").read_text() == mine
    invoke("train", "spec.yaml", "--out", ".", "--no-progress", code=1)  # data that loads: refused all the same
    assert files(tmp_path) == {"spec.yaml": mine.encode()}
    invoke("train", "spec.yaml", "--out", "run", "--no-progress", code=0)  # the way out offered works
    assert (tmp_path / "spec.yaml").read_text() == mine and (tmp_path / "run" / "best.pt").is_file()


def test_a_train_log_or_compile_log_of_the_users_is_refused_and_kept(faces, tmp_path, components):
    spec = load_spec(tiny_spec(faces, epochs=1), components=components)
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.log").write_text("my notes of the last week\n")  # e.g. `hydranet train ... > train.log`
    with pytest.raises(hydranet.HydranetError) as caught:
        hydranet.train(spec, out_dir=out, components=components, progress=False, echo=False)
    assert f"{out} holds train.log" in str(caught.value) and "out_dir=" in str(caught.value)
    assert files(out) == {"train.log": b"my notes of the last week\n"}
    (out / "spec.yaml").write_text(spec.to_yaml())  # a copy of a run's spec, with a log of the user's: no run's
    (out / "train.log").unlink()
    with pytest.raises(hydranet.HydranetError, match="holds spec.yaml, which a run writes"):
        hydranet.train(spec, out_dir=out, components=components, progress=False, echo=False)
    assert (out / "spec.yaml").read_text() == spec.to_yaml()


def test_what_a_killed_run_left_is_cleared_and_the_folder_reused(faces, tmp_path, components):
    """A run killed before its first epoch ended leaves its spec.yaml and its lock file (and perhaps train.log)."""
    spec = load_spec(tiny_spec(faces, epochs=1), components=components)
    out = tmp_path / "killed"
    out.mkdir()
    (out / "spec.yaml").write_text(spec.to_yaml())
    (out / ".lock").write_text("12345 1700000000\n")
    result = hydranet.train(spec, out_dir=out, components=components, progress=False, echo=False)
    assert result.run_dir == out and (out / "summary.json").is_file() and not (out / ".lock").exists()


def test_a_failed_runs_own_folder_is_still_removed_and_an_existing_run_still_refused(faces, tmp_path):
    raw = tiny_spec(faces, epochs=1)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    invoke("train", tmp_path / "s.yaml", "--set", "data.root=nope", "--out", tmp_path / "new", "--no-progress",
           code=1)
    assert not (tmp_path / "new").exists()
    invoke("train", tmp_path / "s.yaml", "--out", tmp_path / "run", "--no-progress", code=0)
    (tmp_path / "run" / "summary.json").unlink()
    again = invoke("train", tmp_path / "s.yaml", "--out", tmp_path / "run", "--no-progress", code=1)
    assert f"hydranet train --resume {tmp_path / 'run'}" in again.output


# ------------------------------------------------------------------ export --out, predict --out


@pytest.fixture
def own_checkpoint(checkpoint, tmp_path) -> Path:
    """A copy of the session's checkpoint, which a test may lose without harming the others."""
    (tmp_path / "run").mkdir()
    return Path(shutil.copy(checkpoint, tmp_path / "run" / "best.pt"))


def test_export_never_writes_over_the_checkpoint_it_reads(own_checkpoint, tmp_path):
    before = own_checkpoint.read_bytes()
    link = tmp_path / "link.pt"
    link.symlink_to(own_checkpoint)
    for out in (own_checkpoint, link, tmp_path / "run" / ".." / "run" / "best.pt"):
        result = invoke("export", own_checkpoint, "--format", "torchscript", "--out", out, "--no-check", "--force",
                        code=1)
        assert "is the checkpoint being exported" in result.output
    assert own_checkpoint.read_bytes() == before
    from hydranet.core.export import ExportError, export_checkpoint

    with pytest.raises(ExportError, match="is the checkpoint being exported"):
        export_checkpoint(link, own_checkpoint, "torchscript", check=False, force=True)
    assert own_checkpoint.read_bytes() == before


def test_export_replaces_only_an_earlier_export_of_its_format_unless_forced(own_checkpoint, tmp_path):
    from hydranet.core.export import ExportError, export_checkpoint
    from hydranet.core.exported_files import read_manifest

    spec = tmp_path / "s.yaml"
    spec.write_text("backbone: tiny\n")
    refused = invoke("export", own_checkpoint, "--format", "torchscript", "--out", spec, "--no-check", code=1)
    assert f"{spec} exists and is not a torchscript file hydranet exported" in refused.output
    assert "--force" in refused.output and spec.read_text() == "backbone: tiny\n"
    with pytest.raises(ExportError, match="not a torchscript file hydranet exported"):
        export_checkpoint(own_checkpoint, spec, "torchscript", check=False)
    model = tmp_path / "model.ts.pt"
    invoke("export", own_checkpoint, "--format", "torchscript", "--out", model, "--no-check", code=0)
    invoke("export", own_checkpoint, "--format", "torchscript", "--out", model, "--no-check", code=0)  # again
    program = tmp_path / "model.pt2"
    invoke("export", own_checkpoint, "--format", "exported", "--out", program, "--no-check", code=0)
    other = invoke("export", own_checkpoint, "--format", "torchscript", "--out", program, "--no-check", code=1)
    assert "is not a torchscript file hydranet exported" in other.output  # an export, but of another format
    invoke("export", own_checkpoint, "--format", "torchscript", "--out", spec, "--no-check", "--force", code=0)
    assert read_manifest(spec, "torchscript")["format"] == "hydranet-export"
    invoke("export", own_checkpoint, "--format", "torchscript", "--no-check", code=0)  # the default name, twice
    invoke("export", own_checkpoint, "--format", "torchscript", "--no-check", code=0)


def test_predict_never_writes_over_its_inputs_or_a_file_of_the_users(own_checkpoint, tmp_path):
    images = tmp_path / "images"
    make_image(images / "a.jpg")
    make_image(images / "b.png")
    before = own_checkpoint.read_bytes()
    refused = invoke("predict", own_checkpoint, images, "--csv", "--out", own_checkpoint, "--force", code=1)
    assert "is the checkpoint being read" in refused.output and own_checkpoint.read_bytes() == before
    picture = (images / "a.jpg").read_bytes()
    refused = invoke("predict", own_checkpoint, images, "--json", "--out", images / "a.jpg", "--force", code=1)
    assert "is an image being read" in refused.output and (images / "a.jpg").read_bytes() == picture
    notes = tmp_path / "notes.csv"
    notes.write_text("name,phone\nme,123\n")
    refused = invoke("predict", own_checkpoint, images, "--out", notes, code=1)
    assert f"{notes} exists and is not a csv file of predictions hydranet wrote" in refused.output
    assert "--force" in refused.output and notes.read_text() == "name,phone\nme,123\n"
    for out in (tmp_path / "p.csv", tmp_path / "p.json", tmp_path / "p.txt"):
        invoke("predict", own_checkpoint, images, "--out", out, code=0)
        invoke("predict", own_checkpoint, images / "a.jpg", "--out", out, code=0)  # earlier predictions: replaced
    assert len(json.loads((tmp_path / "p.json").read_text())) == 1
    refused = invoke("predict", own_checkpoint, images, "--json", "--out", tmp_path / "p.csv", code=1)
    assert "is not a json file of predictions" in refused.output  # predictions, but another format
    invoke("predict", own_checkpoint, images, "--out", notes, "--force", code=0)
    assert next(csv.reader(notes.open()))[0] == "file"


# ------------------------------------------------------------------ sweeps


def test_a_sweep_of_other_keys_is_refused_from_another_sweeps_folder(faces, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(faces, epochs=1)))
    out = tmp_path / "sw"
    invoke("train", spec, "--sweep", "train.lr=1e-3", "--out", out, "--no-progress", code=0)
    compared = (out / "compare.csv").read_bytes()
    refused = invoke("train", spec, "--sweep", "weighting=sum,dwa", "--out", out, "--no-progress", code=1)
    assert f"{out} holds the runs of another sweep (train.lr=1e-3), not of one over weighting" in refused.output
    assert "another folder with --out" in refused.output
    assert sorted(p.name for p in out.iterdir()) == ["compare.csv", "train.lr=1e-3"]
    assert (out / "compare.csv").read_bytes() == compared
    refused = invoke("train", spec, "--sweep", "train.lr=1e-3", "--sweep", "train.seed=0", "--out", out,
                     "--no-progress", code=1)  # a key added is another sweep too: its runs are named otherwise
    assert "holds the runs of another sweep" in refused.output
    with pytest.raises(hydranet.HydranetError, match="another folder with out_dir="):
        hydranet.sweep(spec, {"weighting": ["sum"]}, out_dir=out, progress=False, echo=False)
    added = invoke("train", spec, "--sweep", "train.lr=1e-3,1e-2", "--out", out, "--no-progress", code=0)
    assert "finished already" in added.output and "run 2/2 done" in added.output  # the same sweep, a value added
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert len(rows) == 2


# ------------------------------------------------------------------ resume and metrics.csv


def stopped_run(faces, tmp_path, components, monkeypatch) -> Path:
    """A run of 2 epochs stopped (SIGTERM) after its first: metrics.csv holds epoch 1, last.pt goes on."""
    from hydranet.core.observers import RunObservers

    finished = RunObservers.epoch_finished

    def stop_after_it(self, epoch, row):
        finished(self, epoch, row)
        os.kill(os.getpid(), signal.SIGTERM)

    spec = load_spec(tiny_spec(faces, epochs=2), components=components)
    monkeypatch.setattr(RunObservers, "epoch_finished", stop_after_it)
    with pytest.raises(hydranet.TrainingInterrupted):
        hydranet.train(spec, out_dir=tmp_path / "run", components=components, progress=False, echo=False)
    monkeypatch.setattr(RunObservers, "epoch_finished", finished)
    return tmp_path / "run"


def test_resume_reads_a_metrics_csv_a_spreadsheet_saved_with_a_byte_order_mark(faces, tmp_path, components,
                                                                                  monkeypatch):
    run = stopped_run(faces, tmp_path, components, monkeypatch)
    text = (run / "metrics.csv").read_text()
    (run / "metrics.csv").write_text("\ufeff" + text.replace("\n", "\r\n"), encoding="utf-8")
    hydranet.train(components=components, resume=run, progress=False, echo=False)
    rows = list(csv.DictReader((run / "metrics.csv").open(encoding="utf-8-sig")))
    assert [row["epoch"] for row in rows] == ["1", "2"] and all(row["train_loss.age"] for row in rows)


@pytest.mark.parametrize("header", ["", "a;b;c\n", "garbled\n"])
def test_resume_refuses_a_metrics_csv_without_the_runs_columns_before_training(faces, tmp_path, components,
                                                                                monkeypatch, header):
    run = stopped_run(faces, tmp_path, components, monkeypatch)
    lines = (run / "metrics.csv").read_text().splitlines(keepends=True)
    (run / "metrics.csv").write_text(header + ("".join(lines[1:]) if header else ""))
    before = files(run)
    result = invoke("train", "--resume", run, "--no-progress", code=1)
    assert f"{run / 'metrics.csv'}" in result.output
    assert "Put back the metrics.csv the run wrote" in result.output
    assert f"--set init_from={run / 'last.pt'}" in result.output
    assert files(run) == before  # nothing trained, nothing written


# ------------------------------------------------------------------ file names that are not UTF-8


LATIN1 = os.fsdecode(b"caf\xe9.jpg")  # as Python lists a Latin-1 name on a UTF-8 system: 'caf\udce9.jpg'


def test_a_latin1_file_name_is_written_escaped_to_train_log(faces, checkpoint, tmp_path, components):
    """The data report escapes the names it lists itself; any other line naming such a file (init_from's) was lost
    with the run: `UnicodeEncodeError: 'utf-8' codec can't encode character '\\udce9'`."""
    weights = Path(shutil.copy(checkpoint, tmp_path / os.fsdecode(b"caf\xe9.pt")))
    data = tmp_path / "faces"
    shutil.copytree(faces, data)
    make_image(data / LATIN1)  # not AGE_GENDER_RACE_DATE.jpg: skipped and listed in train.log
    raw = {**tiny_spec(data, epochs=1), "init_from": str(weights)}
    result = hydranet.train(load_spec(raw, components=components), out_dir=tmp_path / "run",
                            components=components, progress=False, echo=False)
    log = (result.run_dir / "train.log").read_text(encoding="utf-8")
    assert "caf\\xe9.pt: backbone loaded" in log and "caf\\xe9.jpg" in log and "epoch 1/1" in log


def test_predict_writes_a_latin1_file_name_escaped(checkpoint, tmp_path):
    make_image(tmp_path / "images" / LATIN1)
    make_image(tmp_path / "images" / "b.jpg")
    for out in ("p.csv", "p.txt", "p.json"):
        invoke("predict", checkpoint, tmp_path / "images", "--out", tmp_path / out, code=0)
        text = (tmp_path / out).read_text(encoding="utf-8")
        escaped = "caf\\udce9.jpg" if out.endswith(".json") else "caf\\xe9.jpg"  # JSON's own escape, which loads back
        assert escaped in text and "b.jpg" in text
