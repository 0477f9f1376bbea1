"""Usage errors that say what was probably meant: a spec field given as an option (`--epochs 2`), and several
checkpoints or runs where one is taken (a shell pattern like runs/demo-* that matched several runs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from hydranet.core.cli import cli


def fail(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), prog_name="hydranet", catch_exceptions=False)
    assert result.exit_code == 2, result.output  # a usage error, before any work
    return result.output


@pytest.fixture
def two_runs(tmp_path, monkeypatch) -> Path:
    """runs/demo-a and runs/demo-b with a best.pt each (never read: the errors come first), and photos/a.jpg."""
    monkeypatch.chdir(tmp_path)
    for name in ("demo-a", "demo-b"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "best.pt").write_bytes(b"not read")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"not read")
    return tmp_path


@pytest.mark.parametrize("args, key", [
    (["--epochs", "2"], "train.epochs=2"),
    (["--batch-size=8"], "train.batch_size=8"),
    (["--lr", "0.01"], "train.lr=0.01"),
    (["--weighting", "dwa"], "weighting=dwa"),
    (["--image-size", "32"], "image_size=32"),
    (["--backbone", "resnet50"], "backbone=resnet50"),
    (["--train.epochs", "3"], "train.epochs=3"),
    (["--flip", "false"], "augment.flip=false"),
    (["--data", "data/UTKFace"], "data.root=data/UTKFace"),
])
def test_a_spec_field_given_to_train_as_an_option_points_to_set(args, key):
    output = fail("train", *args)
    assert f"No such option '{args[0].partition('=')[0]}'" in output
    assert f"--set {key}" in output
    assert "Did you mean" not in output  # click's nearest option (--nproc for --epochs) was a wrong lead


def test_an_option_like_no_spec_field_keeps_click_s_suggestion():
    assert "Did you mean" in fail("train", "--nprocs", "2")


def test_eval_points_to_set_for_the_data_only(two_runs):
    assert "--set data.val_fraction=0.3" in fail("eval", "runs/demo-a/best.pt", "--val-fraction", "0.3")
    assert "--set train.epochs" not in fail("eval", "runs/demo-a/best.pt", "--epochs", "3")  # eval's --set: data.*


def test_predict_refuses_a_second_checkpoint_among_the_images(two_runs):
    """`hydranet predict runs/demo-*/best.pt photos/` with two runs used the first and printed the second as a
    row "not an image", with exit status 0."""
    output = fail("predict", "runs/demo-a/best.pt", "runs/demo-b/best.pt", "photos/")
    assert "predict takes one checkpoint" in output
    assert "runs/demo-b/best.pt is a checkpoint too" in output
    assert "a shell pattern like runs/demo-*/best.pt" in output


@pytest.mark.parametrize("other", ["model.onnx", "model.pt2", "weights.pth"])
def test_predict_refuses_any_model_file_among_the_images(two_runs, other):
    (two_runs / other).write_bytes(b"not read")
    output = fail("predict", "runs/demo-a/best.pt", "photos/a.jpg", other)
    assert f"{other} is a checkpoint too" in output


def test_predict_refuses_a_run_folder_among_the_images(two_runs):
    """Its PNG charts would otherwise be predicted as photos."""
    output = fail("predict", "runs/demo-a", "runs/demo-b", "photos/")
    assert "runs/demo-b is a run folder too" in output and "runs/demo-*" in output


@pytest.mark.parametrize("command", ["eval", "export"])
def test_eval_and_export_say_one_checkpoint_at_a_time(two_runs, command):
    output = fail(command, "runs/demo-a/best.pt", "runs/demo-b/best.pt")
    assert f"hydranet {command} takes one checkpoint at a time" in output
    assert "a shell pattern like runs/demo-*/best.pt" in output
    assert "unexpected extra argument" not in output
    assert ("hydranet compare runs/demo-a runs/demo-b" in output) == (command == "eval")


def test_plot_of_several_runs_asks_where_to_write_their_charts(two_runs):
    """plot draws several runs side by side now; with no --out, no one run's folder is theirs."""
    output = fail("plot", "runs/demo-a", "runs/demo-b")
    assert "2 runs given: pass --out DIR" in output


def test_an_extra_argument_that_is_no_model_keeps_click_s_message(two_runs):
    assert "Got unexpected extra argument (photos)" in fail("eval", "runs/demo-a/best.pt", "photos")
