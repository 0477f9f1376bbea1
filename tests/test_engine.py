"""The training engine: determinism, checkpoints, the non-finite loss stop, the Python API."""

from __future__ import annotations

import csv

import pytest
import torch

import hydranet
from click.testing import CliRunner
from conftest import tiny_spec, with_task_kind, with_weighting
from hydranet.core.cli import cli
from hydranet.core.errors import RunFolderError, TrainingError
from hydranet.core.plugins import load_components, make_plugin_manager
from hydranet.core.spec import load_spec
from hydranet.tasks.kinds import RegressionParams, RegressionTask


def losses(run_dir):
    return [{k: v for k, v in row.items() if k.startswith(("train_loss", "val_loss", "val."))}
            for row in csv.DictReader(open(run_dir / "metrics.csv"))]


def test_same_seed_same_run(faces, tmp_path, components):
    spec = load_spec(tiny_spec(faces), components=components)
    hydranet.train(spec, out_dir=tmp_path / "a", components=components, progress=False, echo=False)
    hydranet.train(spec, out_dir=tmp_path / "b", components=components, progress=False, echo=False)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    other = load_spec(tiny_spec(faces, seed=1), components=components)
    hydranet.train(other, out_dir=tmp_path / "c", components=components, progress=False, echo=False)
    assert losses(tmp_path / "a") != losses(tmp_path / "c")


def test_training_learns_and_checkpoint_round_trips(faces, tmp_path, components):
    spec = load_spec(tiny_spec(faces, epochs=3), ["weighting=dwa"], components=components)
    result = hydranet.train(spec, out_dir=tmp_path, components=components, progress=False, echo=False)
    first, last = result.history[0], result.history[-1]
    assert sum(last[f"train_loss.{t}"] for t in spec.task_names) < sum(first[f"train_loss.{t}"] for t in spec.task_names)
    # DWA: weights 1 for two epochs, then adapted, and always summing to K
    assert [result.history[0][f"weight.{t}"] for t in spec.task_names] == [1.0, 1.0, 1.0]
    third = [result.history[2][f"weight.{t}"] for t in spec.task_names]
    assert sum(third) == pytest.approx(3.0) and third != [1.0, 1.0, 1.0]

    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["epoch"] == 3 and state["spec"] == spec.to_dict()
    assert state["weighting"]["epochs_seen"].item() == 3
    assert {t["name"]: t["plugin"] for t in state["tasks"]}["age"] == "hydranet.tasks.utkface"

    model = hydranet.load(tmp_path / "last.pt")
    for key, value in model.model.state_dict().items():
        assert torch.equal(value, state["model"][key]), key
    image = sorted(faces.glob("*.jpg"))[0]
    prediction = model.predict([image])[0]
    assert set(prediction) == {"age", "gender", "ethnicity"}
    assert prediction == model.predict(str(image))[0]


def test_best_pt_holds_what_using_the_model_needs_and_last_pt_what_resuming_needs(faces, tmp_path, components):
    """best.pt carried the optimizer state too (resnet18: 144 MB, as last.pt; the weights alone are 48 MB)."""
    from hydranet.core.compare import compare_runs, read_runs

    spec = load_spec(tiny_spec(faces, epochs=1), ["train.optimizer=adamw"], components=components)
    hydranet.train(spec, out_dir=tmp_path / "run", components=components, progress=False, echo=False)
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert {"optimizer", "scheduler", "progress"} <= set(last)
    assert not {"optimizer", "scheduler", "progress"} & set(best)
    assert {key: value for key, value in last.items() if key not in ("optimizer", "scheduler", "progress")}.keys() \
        == best.keys() and best["epoch"] == 1
    assert (tmp_path / "run" / "best.pt").stat().st_size < (tmp_path / "run" / "last.pt").stat().st_size / 2
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    outputs = hydranet.load(tmp_path / "run" / "best.pt").predict_tensor(images)
    for task, value in hydranet.load(tmp_path / "run" / "last.pt").predict_tensor(images).items():
        assert torch.equal(outputs[task], value), task  # one epoch: the same weights
    (tmp_path / "run" / "summary.json").unlink()  # as a run still training: compare reads best.pt's epoch
    records, reference, _ = read_runs([str(tmp_path / "run")], None, "best", False)
    assert compare_runs(records, reference, "best").runs[0].best_epoch == 1
    further = hydranet.train(spec, overrides=f"init_from={tmp_path / 'run' / 'best.pt'}", out_dir=tmp_path / "next",
                             components=components, progress=False, echo=False)
    assert "backbone loaded" in (further.run_dir / "train.log").read_text()


class FailingAge(RegressionTask):
    """Gives a NaN loss from its 7th call on: mid-way through the second epoch."""

    calls = 0

    def per_sample_loss(self, output, target):
        FailingAge.calls += 1
        loss = super().per_sample_loss(output, target)
        return loss * float("nan") if FailingAge.calls >= 7 else loss


class FailingPlugin:
    @hydranet.hookimpl
    def register_tasks(self, register):
        register("failing_age", FailingAge, params=RegressionParams)


def test_non_finite_loss_stops_naming_the_task_and_keeps_the_last_good_checkpoint(faces, tmp_path):
    pm = make_plugin_manager(entry_points=False)
    pm.add_plugin(FailingPlugin(), "failing", distribution="test", version="0", builtin=False)
    components = load_components(pm)
    raw = tiny_spec(faces, epochs=3)
    raw["tasks"] = ["gender", {"name": "bad_age", "kind": "failing_age", "label": "age"}]
    FailingAge.calls = 0
    spec = load_spec(raw, components=components)
    with pytest.raises(TrainingError) as caught:
        hydranet.train(spec, out_dir=tmp_path, components=components, progress=False, echo=False)
    message = str(caught.value)
    assert message.startswith("non-finite loss for task 'bad_age' at epoch 2, step 1")
    good = torch.load(tmp_path / "last.pt", weights_only=True)
    assert good["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in good["model"].values() if v.is_floating_point())
    assert "non-finite loss" in (tmp_path / "train.log").read_text()


def test_sample_lacking_a_label_still_trains_the_others(faces, tmp_path, components):
    """The synthetic set holds three-field names (race missing): they are kept, not dropped."""
    from hydranet.core.engine import load_prepared_data

    spec = load_spec(tiny_spec(faces), components=components)
    tasks = spec.build_tasks()
    data = load_prepared_data(spec, tasks, progress=False)
    no_race = torch.isnan(data.targets[:, 2])
    assert no_race.any(), "the synthetic set should contain names without race"
    assert not torch.isnan(data.targets[no_race][:, :2]).any()


def test_a_new_run_refuses_a_folder_holding_a_run_and_resume_continues_it(faces, tmp_path, components):
    spec = load_spec(tiny_spec(faces, epochs=1), components=components)
    hydranet.train(spec, out_dir=tmp_path / "run", components=components, progress=False, echo=False)
    (tmp_path / "run" / "summary.json").unlink()  # as if stopped before the end (a finished run: the next test)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(hydranet.HydranetError) as caught:
        hydranet.train(spec, out_dir=tmp_path / "run", components=components, progress=False, echo=False)
    message = str(caught.value)
    assert f"{tmp_path / 'run'} already holds a run (spec.yaml, metrics.csv, train.log, last.pt, best.pt)" in message
    # in the caller's words: Python's here, the command line's below
    assert f'continue it with `hydranet.train(resume="{tmp_path / "run"}")`' in message and "out_dir=" in message
    result = CliRunner().invoke(cli, ["train", "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 1 and f"hydranet train --resume {tmp_path / 'run'}" in result.output
    assert "--out DIR" in result.output
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before  # nothing touched
    stopped = tmp_path / "stopped"  # a run that stopped before its first epoch ended left only these
    stopped.mkdir()
    (stopped / "spec.yaml").write_text(spec.to_yaml())  # as the run wrote it: not a spec of the user's
    (stopped / "train.log").write_text("non-finite loss at epoch 1, step 2\n")
    hydranet.train(spec, out_dir=stopped, components=components, progress=False, echo=False)
    assert (stopped / "last.pt").exists() and "non-finite" not in (stopped / "train.log").read_text()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")  # a folder of other files holds no run: refused too
    with pytest.raises(RunFolderError, match="is not empty \\(notes.txt\\) and holds no run"):
        hydranet.train(spec, out_dir=tmp_path / "other", components=components, progress=False, echo=False)
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["notes.txt"]


def test_a_new_run_in_a_finished_runs_folder_is_offered_another_folder_or_its_weights_not_resume(
        faces, tmp_path, components):
    """It said "continue it with --resume", and --resume then said there was nothing left to train: a loop."""
    run = tmp_path / "run"
    spec = load_spec(tiny_spec(faces, epochs=2), components=components)
    hydranet.train(spec, out_dir=run, components=components, progress=False, echo=False)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(hydranet.HydranetError) as caught:
        hydranet.train(spec, out_dir=run, components=components, progress=False, echo=False)
    message = str(caught.value)
    assert message == (f"{run} holds a finished run (finished its 2 epochs; spec.yaml, metrics.csv, train.log, "
                       f"last.pt, best.pt, summary.json), and a new run needs a folder of its own: choose one with "
                       f"out_dir=. To train further from this run's weights, start the new run with init_from: "
                       f"{run / 'best.pt'} (in its spec, or overrides=\"init_from={run / 'best.pt'}\")")
    assert "resume" not in message
    result = CliRunner().invoke(cli, ["train", "--out", str(run), "--no-progress"])
    assert result.exit_code == 1 and "choose one with --out DIR" in result.output, result.output
    assert f"--set init_from={run / 'best.pt'}" in result.output and "--resume" not in result.output
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    further = hydranet.train(spec, overrides=f"init_from={run / 'best.pt'}", out_dir=tmp_path / "further",
                             components=components, progress=False, echo=False)  # the way offered works
    assert f"init_from {run / 'best.pt'}: backbone loaded" in (further.run_dir / "train.log").read_text()


def test_a_run_that_fails_before_training_leaves_no_folder(faces, tmp_path, components):
    raw = tiny_spec(faces)
    raw["data"]["root"] = str(tmp_path / "no-such-faces")
    spec = load_spec(raw, components=components)
    with pytest.raises(hydranet.HydranetError, match="no-such-faces"):
        hydranet.train(spec, out_dir=tmp_path / "runs" / "a", components=components, progress=False, echo=False)
    assert not (tmp_path / "runs" / "a").exists()
    (tmp_path / "mine").mkdir()  # a folder the user made stays, without what the failed run wrote
    (tmp_path / "mine" / ".notes").write_text("mine")  # hidden: a folder holding only such files is an empty one
    for _ in range(2):  # and the next try is not refused as a folder that holds a run
        with pytest.raises(hydranet.HydranetError, match="no-such-faces"):
            hydranet.train(spec, out_dir=tmp_path / "mine", components=components, progress=False, echo=False)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == [".notes"]


def test_a_resume_that_fails_keeps_the_run_folder(faces, tmp_path, components):
    spec = load_spec(tiny_spec(faces, epochs=2), components=components)
    hydranet.train(spec, out_dir=tmp_path / "run", components=components, progress=False, echo=False)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    state["progress"]["epoch"], state["progress"]["best_epoch"] = 2, 1  # as if stopped after epoch 1
    state["spec"]["data"]["root"] = str(tmp_path / "moved-away")
    torch.save(state, tmp_path / "run" / "last.pt")
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    with pytest.raises(hydranet.HydranetError, match="moved-away"):
        hydranet.train(components=components, resume=tmp_path / "run", progress=False, echo=False)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before


def test_without_a_validation_split_metrics_come_from_the_training_set(faces, tmp_path, components):
    raw = tiny_spec(faces, epochs=1)
    raw["data"]["val_fraction"] = 0
    result = hydranet.train(load_spec(raw, components=components), out_dir=tmp_path, components=components,
                            progress=False, echo=False)
    assert "no validation split" in (tmp_path / "train.log").read_text()
    assert set(result.baselines) == {"age", "gender", "ethnicity"}
    assert all(torch.isfinite(torch.tensor(v)) for metrics in result.final.metrics.values() for v in metrics.values())


def test_logged_weights_are_the_mean_of_those_each_step_applied(faces, tmp_path):
    """A weighting whose weight is its step count (1, 2, ..., S in epoch 1): weight.<task> is (S + 1) / 2."""
    from hydranet.core.weighting import WeightedSum

    class StepCount(WeightedSum):
        def __init__(self, tasks):
            super().__init__(tasks)
            self.register_buffer("steps", torch.zeros(()))

        def combine(self, losses):
            self.steps.add_(1)  # the weight of step i is i
            return super().combine(losses)

        def multipliers(self):
            return self.steps.expand(self.num_tasks)

    components = with_weighting("step_count", StepCount)
    raw = tiny_spec(faces, epochs=2, batch_size=32)
    raw["weighting"] = "step_count"
    run = hydranet.train(load_spec(raw, components=components), out_dir=tmp_path / "run", components=components,
                         progress=False, echo=False)
    steps = run.timings["train_images"] // 32  # steps per epoch (the ragged tail is dropped)
    assert steps >= 2
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for epoch, row in enumerate(rows):
        first, last = epoch * steps + 1, (epoch + 1) * steps
        for task in ("age", "gender", "ethnicity"):
            assert float(row[f"weight.{task}"]) == pytest.approx((first + last) / 2)


def test_overrides_apply_to_an_already_loaded_spec(faces, tmp_path):
    """hydranet.train(load_spec(...), overrides=[...]) used to ignore the overrides without a word."""
    run = hydranet.train(load_spec(tiny_spec(faces, epochs=2)), overrides=["train.epochs=1", "weighting=dwa"],
                         out_dir=tmp_path / "run", progress=False, echo=False)
    assert [row["epoch"] for row in run.history] == [1]
    assert "name: dwa" in (tmp_path / "run" / "spec.yaml").read_text()


def test_one_override_may_be_given_as_a_string(faces, tmp_path, components):
    """hydranet.train(..., overrides="train.epochs=1") split the string into its letters ('t' is no key=value)."""
    run = hydranet.train(tiny_spec(faces, epochs=2), overrides="train.epochs=1", out_dir=tmp_path / "run",
                         components=components, progress=False, echo=False)
    assert [row["epoch"] for row in run.history] == [1]
    for wrong, named in ((5, "int 5"), (["train.epochs=1", 2], "int 2"), ({"train.epochs": 1}, "a dict of 1 item")):
        with pytest.raises(hydranet.InputError, match=rf"^overrides are 'KEY=VALUE' strings, one or a list "
                                                      rf"\(e.g. overrides='train.epochs=5'\); got {named}$"):
            hydranet.train(tiny_spec(faces), overrides=wrong, out_dir=tmp_path / "no", components=components)
    assert not (tmp_path / "no").exists()


def test_metrics_csv_lines_end_in_newline_and_old_crlf_files_still_continue(checkpoint, tmp_path):
    """metrics.csv was written with the csv module's default "\r\n" line endings."""
    from hydranet.core.run import RunFolder, read_metrics

    assert b"\r" not in (checkpoint.parent / "metrics.csv").read_bytes()
    old = tmp_path / "metrics.csv"
    old.write_bytes(b"epoch,train_loss.age\r\n1,0.5\r\n2,0.25\r\n")
    folder = RunFolder(tmp_path, echo=False)
    folder.append_metrics({"epoch": 3, "train_loss.age": 0.125})
    assert [row["train_loss.age"] for row in read_metrics(old)] == [0.5, 0.25, 0.125]
    folder.truncate_metrics(2)
    assert old.read_bytes() == b"epoch,train_loss.age\n1,0.5\n2,0.25\n"


def test_python_overrides_are_named_as_the_argument_and_cli_ones_as_set(faces, tmp_path):
    from click.testing import CliRunner

    from hydranet.core.cli import cli
    from hydranet.core.errors import SpecError

    with pytest.raises(SpecError) as caught:
        hydranet.train(tiny_spec(faces), overrides=["train.epoch=2"], out_dir=tmp_path / "py")
    assert [path for path, _ in caught.value.problems] == ["train.epoch (from overrides 'train.epoch=2')"]
    result = CliRunner().invoke(cli, ["train", "--set", "train.epoch=2", "--out", str(tmp_path / "cli")])
    assert result.exit_code != 0 and "train.epoch (from --set train.epoch=2)" in result.output
    assert not (tmp_path / "py").exists() and not (tmp_path / "cli").exists()


class BlowsUpInValidation(RegressionTask):
    """Trains normally; its validation loss is infinite (evaluation runs without gradients)."""

    def per_sample_loss(self, output, target):
        loss = super().per_sample_loss(output, target)
        return loss if torch.is_grad_enabled() else loss + float("inf")


def test_an_epoch_whose_validation_loss_is_not_finite_is_never_the_best_and_is_named(faces, tmp_path):
    components = with_task_kind("blowup_age", BlowsUpInValidation, RegressionParams)
    raw = tiny_spec(faces, epochs=2)
    raw["tasks"] = ["gender", {"name": "bad_age", "kind": "blowup_age", "label": "age"}]
    run = hydranet.train(load_spec(raw, components=components), out_dir=tmp_path / "run", components=components,
                         progress=False, echo=False)
    assert run.best_epoch == 0 and not (tmp_path / "run" / "best.pt").exists()
    log = (tmp_path / "run" / "train.log").read_text()
    assert "warning: epoch 1's validation loss is not finite for 'bad_age', so it cannot be the best epoch" in log
    assert f"no epoch had a finite validation loss, so no best.pt was written; {tmp_path / 'run' / 'last.pt'}" in log


class FakeStderr:
    """sys.stderr as a file or a terminal: what it was written, and what isatty says."""

    def __init__(self, tty: bool):
        self.tty, self.text = tty, []

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        self.text.append(text)
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("tty", [False, True])
def test_python_train_shows_progress_bars_only_on_a_terminal_as_the_cli_does(faces, tmp_path, components, monkeypatch,
                                                                            tty):
    """hydranet.train() drew tqdm bars into a stderr redirected to a file."""
    from hydranet.core.engine import Trainer

    shown = []
    original = Trainer.run

    def run(self):
        shown.append(self.progress)
        return original(self)

    monkeypatch.setattr(Trainer, "run", run)
    stderr = FakeStderr(tty)
    monkeypatch.setattr("sys.stderr", stderr)
    hydranet.train(load_spec(tiny_spec(faces, epochs=1), components=components), out_dir=tmp_path / "run",
                   components=components)
    assert shown == [tty]
    written = "".join(stderr.text)
    assert "epoch 1/1" in written  # the log lines reach stderr either way
    assert ("step/s" in written or "s/step" in written) == tty, written  # a bar's rate, on a terminal only
