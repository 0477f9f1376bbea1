"""Hand-edited or damaged checkpoints: every command refuses them naming the file and the key, with no traceback.

Resuming reads more of last.pt than using a model does (the optimizer, the
scheduler, `progress`): those are checked before any data loads. A model whose
weights hold NaN still evaluates: its report counts the predictions that are
not finite and warns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from click.testing import CliRunner

from conftest import make_image
from hydranet.core.cli import cli
from hydranet.core.resume import resume_checkpoint

Edit = Callable[[dict[str, Any]], Any]


def edited(source: Path, target: Path, edit: Edit) -> Path:
    """`source` copied to `target`, edited as plain data with torch.load/torch.save, as a user would."""
    target.parent.mkdir(parents=True, exist_ok=True)
    data = torch.load(source, weights_only=True)
    edit(data)
    torch.save(data, target)
    return target


def resumable(data: dict[str, Any]) -> None:
    """The one-epoch run's last.pt, made a 2-epoch run's: it resumes at epoch 2 (what a stopped run leaves)."""
    data["spec"]["train"]["epochs"] = 2


def refused(args: list[str], path: Path, *words: str) -> str:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # a message, not a crash
    assert "Traceback" not in result.output
    assert str(path) in result.output
    for word in words:
        assert word in result.output
    return result.output


# --- resume reads progress, the optimizer and the rest of last.pt -------------------------------------

def test_an_unedited_last_pt_passes_the_resume_checks(checkpoint: Path, tmp_path: Path) -> None:
    last = edited(checkpoint.parent / "last.pt", tmp_path / "run" / "last.pt", resumable)
    assert resume_checkpoint(tmp_path / "run")[0] == last


def _set(*keys: str, value: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = keys
        for key in parents:
            data = data[key]
        data[last] = value
    return edit


RESUME_CASES = [
    pytest.param(lambda d: d.pop("optimizer"), "optimizer is missing", id="optimizer_missing"),
    pytest.param(_set("optimizer", value=[1, 2]), "optimizer is [1, 2], not an optimizer's state", id="optimizer_not_a_state"),
    pytest.param(_set("optimizer", "param_groups", value=[{"lr": 0.1}]), "optimizer.param_groups[0]",
                 id="param_group_without_params"),
    pytest.param(lambda d: d["progress"].__setitem__("epoch_order_state", d["progress"]["epoch_order_state"][:100]),
                 "progress.epoch_order_state is a torch.uint8 tensor of shape (100,)", id="order_state_short"),
    pytest.param(_set("progress", "best_loss", value="x"), "progress.best_loss is 'x', not a number",
                 id="best_loss_not_a_number"),
    pytest.param(_set("progress", "best_value", value="x"), "progress.best_value is 'x', not a number",
                 id="best_value_not_a_number"),
    pytest.param(_set("progress", "epochs_without_improvement", value=-1),
                 "progress.epochs_without_improvement is -1, not a whole number of 0 or more", id="patience_count"),
    pytest.param(_set("progress", "stopped_early", value="yes"), "progress.stopped_early is 'yes', not true or false",
                 id="stopped_early_not_a_bool"),
    pytest.param(_set("progress", "epoch", value="2"), "progress.epoch is '2', not a whole number",
                 id="epoch_a_string"),
    pytest.param(lambda d: d["progress"].pop("step"), "progress.step is missing", id="step_missing"),
    pytest.param(lambda d: d["progress"]["generators"].pop("augment"), "progress.generators", id="augment_state_missing"),
    pytest.param(_set("progress", "loss_sums", value=[1.0]), "progress.loss_sums is [1.0], not a list "
                 "of 3 numbers", id="loss_sums_short"),
    pytest.param(_set("progress", "best_epoch", value=5), "progress.best_epoch is 5", id="best_epoch_ahead"),
    pytest.param(_set("progress", value="garbage"), "progress is 'garbage', not a mapping", id="progress_garbage"),
    pytest.param(lambda d: d.pop("weighting"), "weighting is missing", id="weighting_missing"),
    pytest.param(_set("scheduler", value=3), "scheduler is 3, not a mapping", id="scheduler_not_a_mapping"),
]


@pytest.mark.parametrize("edit, said", RESUME_CASES)
def test_resume_refuses_an_edited_last_pt_before_loading_anything(checkpoint: Path, tmp_path: Path, edit: Edit,
                                                                  said: str) -> None:
    run = tmp_path / "run"
    last = edited(checkpoint.parent / "last.pt", run / "last.pt", lambda d: (resumable(d), edit(d)))
    output = refused(["train", "--resume", str(run), "--no-progress"], last, f"{last}: {said}")
    assert "the file was edited or damaged: resume from an undamaged copy of it, or start a new run from its " \
           f"weights with init_from: {last}" in output
    assert [p.name for p in run.iterdir()] == ["last.pt"]  # refused before the run folder was touched


def test_an_optimizer_state_that_does_not_fit_the_model_names_the_key(checkpoint: Path, tmp_path: Path) -> None:
    """What only the rebuilt run can tell (the groups' sizes against the model's parameters) is named too."""
    def one_param_short(data: dict[str, Any]) -> None:
        resumable(data)
        data["optimizer"]["param_groups"][0]["params"].pop()

    run = tmp_path / "run"
    last = edited(checkpoint.parent / "last.pt", run / "last.pt", one_param_short)
    refused(["train", "--resume", str(run), "--no-progress"], last, f"{last}: optimizer does not fit the run",
            "the file was edited or damaged")


# --- eval, predict and export read the preprocessing and each task's state ------------------------------

def _drop_task_state(name: str) -> Edit:
    return lambda d: d["task_state"].pop(name)


USE_CASES = [
    pytest.param(_set("preprocess", "mean", value=[0.5, 0.5]), "preprocess.mean is [0.5, 0.5], not 3 numbers",
                 id="mean_of_2"),
    pytest.param(_set("preprocess", "std", value=[0.2, 0.0, 0.2]), "preprocess.std is [0.2, 0.0, 0.2], not 3 numbers "
                 "above 0", id="std_zero"),
    pytest.param(_set("preprocess", "image_size", value="16"), "preprocess.image_size is '16'", id="size_a_string"),
    pytest.param(_drop_task_state("age"), "task_state has no entry for task 'age'", id="task_state_lacks_age"),
    pytest.param(lambda d: d.pop("task_state"), "task_state is missing", id="task_state_missing"),
    pytest.param(_set("task_state", "age", value={"mean": 30.0}), "task_state.age cannot be restored by task 'age' "
                 "(no 'std'", id="age_state_incomplete"),
]


@pytest.mark.parametrize("command", ["eval", "predict", "export"])
@pytest.mark.parametrize("edit, said", USE_CASES)
def test_using_an_edited_checkpoint_names_the_file_and_key(checkpoint: Path, tmp_path: Path, command: str,
                                                           edit: Edit, said: str) -> None:
    path = edited(checkpoint, tmp_path / "best.pt", edit)
    args = {"eval": ["eval", str(path), "--device", "cpu"],
            "predict": ["predict", str(path), str(make_image(tmp_path / "a.jpg")), "--device", "cpu"],
            "export": ["export", str(path), "--out", str(tmp_path / "best.onnx")]}[command]
    output = refused(args, path, f"{path}: {said}")
    assert "the file was edited or damaged: use an undamaged copy of it, or another checkpoint" in output
    assert not (tmp_path / "best.onnx").exists()


# --- a model that outputs NaN ------------------------------------------------------------------------

def test_eval_of_a_model_that_outputs_nan_warns_and_reports(checkpoint: Path, tmp_path: Path) -> None:
    def nan_heads(data: dict[str, Any]) -> None:
        for key, value in data["model"].items():
            if key.startswith("heads.") and value.is_floating_point():
                value.fill_(float("nan"))

    path = edited(checkpoint, tmp_path / "best.pt", nan_heads)
    result = CliRunner().invoke(cli, ["eval", str(path), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "warning: the model outputs NaN or inf: all " in result.output and "are not finite" in result.output
    assert "age: error distribution" in result.output and "gender: confusion matrix, 60 labelled" in result.output
    confusion = result.output.split("gender: confusion matrix", 1)[1].splitlines()[1]
    assert confusion.startswith("  warning: the model outputs NaN or inf")  # classification tasks say so too
    report = CliRunner().invoke(cli, ["eval", str(path), "--device", "cpu", "--json"])
    assert report.exit_code == 0, report.output


def test_a_partly_non_finite_model_histograms_its_finite_predictions() -> None:
    from hydranet.core.evaluation import confusion_report, error_distribution

    errors = torch.tensor([1.0, float("nan"), 3.0, float("inf"), -float("inf")])
    report = error_distribution(errors)
    assert report["count"] == 5 and report["nonfinite"] == 3 and sum(report["histogram"]["counts"]) == 2
    assert report["mae"] == 2.0 and "3 of 5 predictions are not finite" in report["warning"]
    assert "warning" not in error_distribution(torch.tensor([1.0, 2.0]))
    logits = torch.tensor([[float("nan"), 1.0], [0.0, 1.0]])
    confusion = confusion_report(logits, torch.tensor([0.0, 1.0]), ["a", "b"])
    assert sum(map(sum, confusion["confusion_matrix"])) == 2  # counted as the metrics count it
    assert confusion["nonfinite"] == 1 and "1 of 2 predictions is not finite" in confusion["warning"]



# --- resume: weights that do not fit the model the stored spec builds ----------------------------------

def _stored_spec(*keys: str, value: Any) -> Edit:
    return lambda d: (resumable(d), _set("spec", *keys, value=value)(d))


@pytest.mark.parametrize("edit, differs, new_run", [
    pytest.param(_stored_spec("backbone", "width", value=16), "(backbone, head 'age', head 'gender' and head 'ethnicity' differ)",
                 "from scratch (init_from cannot load these weights either: the backbone differs)", id="backbone"),
    pytest.param(lambda d: (resumable(d), d["spec"]["tasks"][0].__setitem__("hidden", 8)), "(head 'age' differs)",
                 "which loads the backbone and the heads that still fit (head 'age' starts afresh)", id="one_head"),
])
def test_resuming_weights_another_model_trained_says_so_not_to_use_init_from_alike(
        checkpoint: Path, tmp_path: Path, edit: Edit, differs: str, new_run: str) -> None:
    """The model's weights misfit: resuming from a copy of last.pt, or (with another backbone) init_from, fails alike.

    It used to say "the file was edited or damaged: ... start a new run from its weights with init_from: last.pt",
    advice that fails the same way when the backbone differs."""
    run = tmp_path / "run"
    last = edited(checkpoint.parent / "last.pt", run / "last.pt", edit)
    output = refused(["train", "--resume", str(run), "--no-progress"], last,
                     f"{last}: model does not fit the run its spec describes", differs,
                     "put back the spec or the plugins the run trained with and resume again",
                     "start a new run without --resume, ", new_run)
    assert "resume from an undamaged copy" not in output


# --- a checkpoint from before a parameter existed keeps doing what it did then -------------------------

def _without_recursive(data: dict[str, Any]) -> None:
    del data["spec"]["data"]["recursive"]


def test_a_checkpoint_from_before_data_recursive_reads_its_root_alone_as_it_trained(checkpoint: Path,
                                                                                      tmp_path: Path) -> None:
    """utkface read root's own images until data.recursive came (default true): an older stored spec means false."""
    import hydranet
    from hydranet.core.checkpoint import read_checkpoint

    old = edited(checkpoint, tmp_path / "old.pt", _without_recursive)
    assert read_checkpoint(old)["spec"]["data"]["recursive"] is False
    assert hydranet.load(old).spec.to_dict()["data"]["recursive"] is False
    assert read_checkpoint(checkpoint)["spec"]["data"]["recursive"] is True  # a newer one says so itself
    theirs = edited(checkpoint, tmp_path / "theirs.pt", lambda d: (
        _without_recursive(d), d["components"]["data"].__setitem__("plugin", "their.utkface")))
    assert "recursive" not in read_checkpoint(theirs)["spec"]["data"]  # another plugin's dataset: as stored


def test_resuming_a_run_from_before_data_recursive_keeps_reading_its_root_alone(checkpoint: Path,
                                                                                tmp_path: Path) -> None:
    from hydranet.core.checkpoint import read_checkpoint

    run = tmp_path / "run"
    edited(checkpoint.parent / "last.pt", run / "last.pt", lambda d: (resumable(d), _without_recursive(d)))
    result = CliRunner().invoke(cli, ["train", "--resume", str(run), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert read_checkpoint(run / "last.pt")["spec"]["data"]["recursive"] is False
    assert "recursive: false" in (run / "spec.yaml").read_text()
