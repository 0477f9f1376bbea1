"""The recorded training step (train.cuda_graphs: step), run on a CPU with an eager stand-in for CUDA graphs.

The stand-in runs the step where CUDA would record it and re-runs it on the
static inputs where CUDA would replay it. Everything else is the code a GPU
runs: the warm-up steps and the snapshot that undoes them, the static input
buffers, learning rates as tensors written by the mirrored scheduler, the
on-device bookkeeping, the fallbacks. A run recorded this way must train
exactly as the plain step does.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

import hydranet
import hydranet.core.capture as capture
from conftest import make_tasks, tiny_spec
from hydranet.core.capture import MirroredScheduler, StateSnapshot, learning_rates_as_tensors
from hydranet.core.device import resolve_settings
from hydranet.core.engine import Trainer
from hydranet.core.errors import HydranetError, TrainingError, TrainingInterrupted
from hydranet.core.spec import load_spec


class EagerReplay:
    """CUDA graphs' stand-in: `record` runs the step once, `replay` runs it again."""

    record_runs_work = True

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.recorded = 0
        self.replays = 0

    def warmup(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def record(self, step: Callable[[], None]) -> Callable[[], None]:
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        step()
        self.recorded += 1
        return step

    def replay(self, graph: Callable[[], None]) -> None:
        self.replays += 1
        graph()


@pytest.fixture
def stand_in(monkeypatch) -> EagerReplay:
    backend = EagerReplay()
    monkeypatch.setattr(capture, "graph_backend", lambda device: backend)
    return backend


def final_state(result) -> dict[str, torch.Tensor]:
    return torch.load(result.run_dir / "last.pt", weights_only=True)["model"]


def assert_same_training(a, b, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Two runs agree: every weight and every logged loss and metric."""
    sa, sb = final_state(a), final_state(b)
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=rtol, atol=atol, msg=key)
    for row_a, row_b in zip(a.history, b.history):
        for key, value in row_a.items():
            if not key.endswith("seconds"):
                assert value == pytest.approx(row_b[key], rel=1e-4, abs=1e-6, nan_ok=True), key


def plain_and_recorded(spec: dict, tmp_path):
    """The same spec trained as usual and with `cuda_graphs: step`, in two run folders."""
    plain = hydranet.train(spec, out_dir=tmp_path / "plain", progress=False, echo=False)
    recorded = hydranet.train(spec, overrides=["train.cuda_graphs=step"], out_dir=tmp_path / "step", progress=False,
                              echo=False)
    return plain, recorded


@pytest.mark.parametrize("weighting,optimizer", [("sum", "adamw"), ("uncertainty", "sgd"), ("dwa", "adamw"),
                                                 ("famo", "sgd")])
def test_recorded_step_trains_exactly_as_the_plain_step(faces, tmp_path, stand_in, weighting, optimizer):
    spec = tiny_spec(faces, epochs=3, optimizer=optimizer, scheduler="cosine")
    spec["weighting"] = weighting
    plain, recorded = plain_and_recorded(spec, tmp_path)
    assert "CUDA graph per step" in recorded.settings.describe()
    assert stand_in.recorded == 1
    assert stand_in.replays == 3 * (180 // 32)  # every step of every epoch is a replay (180 training images)
    assert_same_training(recorded, plain)
    # the learning rate followed the cosine schedule in both (logged as a float, not a tensor)
    assert [r["lr"] for r in recorded.history] == pytest.approx([r["lr"] for r in plain.history], rel=1e-6)
    assert all(isinstance(r["lr"], float) for r in recorded.history)


def test_recorded_step_follows_a_warmup_then_cosine_schedule_as_the_plain_step(faces, tmp_path, stand_in):
    """train.warmup_epochs is a LambdaLR: the recorded step mirrors it on float copies into its lr tensors."""
    spec = tiny_spec(faces, epochs=3, optimizer="adamw", scheduler="cosine", warmup_epochs=1)
    plain, recorded = plain_and_recorded(spec, tmp_path)
    assert "CUDA graph per step" in recorded.settings.describe()
    assert_same_training(recorded, plain)
    lrs = [r["lr"] for r in recorded.history]
    assert lrs == pytest.approx([r["lr"] for r in plain.history], rel=1e-6)
    assert lrs[0] == pytest.approx(3e-3)  # warmed up to train.lr by the end of epoch 1, then annealed
    assert lrs[0] > lrs[1] > lrs[2] >= 0


@pytest.mark.parametrize("schedule", [{}, {"scheduler": "cosine", "warmup_epochs": 1.5}])
def test_recorded_run_resumes_from_its_checkpoint_like_an_uninterrupted_one(faces, tmp_path, stand_in,
                                                                           monkeypatch, schedule):
    """Stopped after step 3 of epoch 1 (inside the warmup, where the lr is a function of the step count)."""
    spec = tiny_spec(faces, epochs=2, optimizer="sgd", **schedule)
    whole = hydranet.train(spec, overrides=["train.cuda_graphs=step"], out_dir=tmp_path / "whole", progress=False,
                           echo=False)

    original = Trainer._stop_requested

    def stop_in_epoch_1_after_step_3(self, done):
        return self.progress_state.epoch == 1 and done == 3 or original(self, done)

    monkeypatch.setattr(Trainer, "_stop_requested", stop_in_epoch_1_after_step_3)
    with pytest.raises(TrainingInterrupted):
        hydranet.train(spec, overrides=["train.cuda_graphs=step"], out_dir=tmp_path / "cut", progress=False,
                       echo=False)
    saved = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert all(isinstance(g["lr"], float) for g in saved["optimizer"]["param_groups"])
    monkeypatch.setattr(Trainer, "_stop_requested", original)
    resumed = hydranet.train(resume=tmp_path / "cut", progress=False, echo=False)
    assert_same_training(resumed, whole)


def test_a_failed_recording_falls_back_to_the_plain_step_with_nothing_lost(faces, tmp_path, monkeypatch):
    """The warm-up steps ran before recording failed: the snapshot must undo all of them."""
    backend = EagerReplay(fail=True)
    monkeypatch.setattr(capture, "graph_backend", lambda device: backend)
    spec = tiny_spec(faces, epochs=2, optimizer="adamw")
    plain, fell_back = plain_and_recorded(spec, tmp_path)
    log = (fell_back.run_dir / "train.log").read_text()
    assert "recording the training step as a CUDA graph failed (RuntimeError: operation not permitted" in log
    assert backend.replays == 0
    assert_same_training(fell_back, plain)


class FaultyStep(EagerReplay):
    """A step that raises hydranet's own error while it is recorded, as a plugin's wrong-shape weights() does."""

    def record(self, step: Callable[[], None]) -> Callable[[], None]:
        raise TrainingError("the weights() of weighting 'w' from plugin 'p' returned shape (2,); expected (3,)")


def test_hydranets_own_error_while_recording_is_raised_not_taken_for_a_failed_recording(faces, tmp_path,
                                                                                    monkeypatch):
    """It used to log 'recording ... failed (TrainingError: ...)', fall back, and raise the same error eagerly."""
    monkeypatch.setattr(capture, "graph_backend", lambda device: FaultyStep())
    with pytest.raises(TrainingError, match=r"the weights\(\) of weighting 'w'"):
        hydranet.train(tiny_spec(faces, epochs=1), overrides=["train.cuda_graphs=step"], out_dir=tmp_path / "run",
                       progress=False, echo=False)
    log = (tmp_path / "run" / "train.log").read_text() if (tmp_path / "run" / "train.log").exists() else ""
    assert "failed" not in log and "fell back" not in log


class SilentReplay(EagerReplay):
    """A recording that replays nothing: the kind of wrong graph only a check of the first replay can see."""

    def replay(self, graph: Callable[[], None]) -> None:
        self.replays += 1


class DoubleReplay(EagerReplay):
    """A recording that takes every step twice: the right direction, twice the size (as a stale lr would)."""

    def replay(self, graph: Callable[[], None]) -> None:
        self.replays += 1
        graph()
        graph()


@pytest.mark.parametrize("backend_class", [SilentReplay, DoubleReplay], ids=["no-update", "double-update"])
def test_a_replay_that_disagrees_with_an_eager_step_is_caught_on_the_first_batch(faces, tmp_path, monkeypatch,
                                                                                backend_class):
    backend = backend_class()
    monkeypatch.setattr(capture, "graph_backend", lambda device: backend)
    spec = tiny_spec(faces, epochs=2, optimizer="sgd")
    plain, checked = plain_and_recorded(spec, tmp_path)
    log = (checked.run_dir / "train.log").read_text()
    assert "recording the training step as a CUDA graph failed (the replayed step's update disagrees" in log
    assert backend.replays == 1  # the check's replay; every step after it ran without a graph
    assert_same_training(checked, plain)


def test_step_recording_where_it_cannot_work_says_why_and_trains_anyway(faces, tmp_path, stand_in):
    spec = tiny_spec(faces, epochs=1)
    spec["weighting"] = "mgda"  # solves for its weights: not capturable
    result = hydranet.train(spec, overrides=["train.cuda_graphs=step"], out_dir=tmp_path / "mgda", progress=False,
                            echo=False)
    log = (result.run_dir / "train.log").read_text()
    assert "train.cuda_graphs: step is not possible here (weighting MGDA is not capturable" in log
    assert stand_in.recorded == 0 and "CUDA graph per step" not in result.settings.describe()

    skip = hydranet.train(tiny_spec(faces, epochs=1, on_nonfinite="skip"), overrides=["train.cuda_graphs=step"],
                          out_dir=tmp_path / "skip", progress=False, echo=False)
    assert "train.on_nonfinite: skip reads every step's losses on the host" in (skip.run_dir / "train.log").read_text()

    streamed = hydranet.train(tiny_spec(faces, epochs=1), overrides=["train.cuda_graphs=step", "data.placement=stream"],
                              out_dir=tmp_path / "stream", progress=False, echo=False)
    assert "data.placement is stream" in (streamed.run_dir / "train.log").read_text()


@pytest.fixture
def auto_is_step(monkeypatch):
    """`cuda_graphs: auto` resolves as it does on a GPU (the recorded step), unless the run rules that out."""
    import dataclasses

    import hydranet.core.run_setup as run_setup

    real = run_setup.resolve_settings
    asked = []

    def as_on_a_gpu(*args, whole_step=True, **options):
        settings = real(*args, whole_step=whole_step, **options)
        asked.append(whole_step)
        return dataclasses.replace(settings, graphs="step") if whole_step and args[5] == "auto" else settings

    monkeypatch.setattr(run_setup, "resolve_settings", as_on_a_gpu)
    return asked


def test_auto_records_the_step_where_it_can_and_says_why_where_it_cannot(faces, tmp_path, stand_in, auto_is_step):
    recorded = hydranet.train(tiny_spec(faces, epochs=1), out_dir=tmp_path / "sum", progress=False, echo=False)
    assert stand_in.recorded == 1 and "CUDA graph per step" in recorded.settings.describe()

    spec = tiny_spec(faces, epochs=1)
    spec["weighting"] = "mgda"
    fallen_back = hydranet.train(spec, out_dir=tmp_path / "mgda", progress=False, echo=False)
    log = (fallen_back.run_dir / "train.log").read_text()
    assert ("the whole step is not recorded as one CUDA graph here (weighting MGDA is not capturable" in log
            and "train.cuda_graphs: step" not in log)  # the spec did not ask for it: no complaint about the spec
    assert stand_in.recorded == 1 and "CUDA graph per step" not in fallen_back.settings.describe()


def test_auto_leaves_the_step_unrecorded_for_a_background_compile(faces, tmp_path, stand_in, auto_is_step):
    """The background compiler caches the compiler's graphs for the switch, which the recorded step would not use."""
    from hydranet.core.engine import Trainer

    spec = load_spec(tiny_spec(faces, epochs=1), overrides=["train.compile_in_background=true"])
    trainer = Trainer(spec, out_dir=tmp_path / "bg", progress=False, echo=False)
    assert auto_is_step == [False] and trainer.settings.graphs != "step"


def test_without_cuda_graphs_the_run_names_the_device(faces, tmp_path):
    result = hydranet.train(tiny_spec(faces, epochs=1), overrides=["train.cuda_graphs=step"],
                            out_dir=tmp_path / "cpu", progress=False, echo=False)
    assert "device cpu has no CUDA graphs" in (result.run_dir / "train.log").read_text()
    assert math.isfinite(result.final.total_loss)


@pytest.mark.parametrize("make_optimizer", [
    lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
    lambda params: torch.optim.AdamW(params, lr=0.01),
], ids=["sgd", "adamw"])
def test_snapshot_undoes_warm_up_steps_exactly(make_optimizer):
    """Zeroed optimizer state created by warm-up steps is a fresh optimizer's state, bit for bit."""
    def build():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
        return model, make_optimizer(model.parameters())

    def train(model, optimizer, steps):
        for i in range(steps):
            x = torch.linspace(-1, 1, 32).view(8, 4) * (i + 1)
            model(x).pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    fresh_model, fresh_optimizer = build()
    train(fresh_model, fresh_optimizer, 4)
    model, optimizer = build()
    counter = torch.zeros((), dtype=torch.long)
    snapshot = StateSnapshot([model], optimizer, [counter], torch.device("cpu"))
    train(model, optimizer, 3)  # the warm-up
    counter.add_(7)
    snapshot.restore()
    assert counter.item() == 0
    train(model, optimizer, 4)
    for got, want in zip(model.state_dict().values(), fresh_model.state_dict().values()):
        assert torch.equal(got, want)


def test_checkpoints_hold_a_plain_runs_optimizer_settings():
    """A recorded step's tensor learning rates and capturable groups do not leak into checkpoints."""
    from hydranet.core.capture import portable_optimizer_state

    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(2))], lr=0.01)
    learning_rates_as_tensors(optimizer, torch.device("cpu"))
    optimizer.param_groups[0]["capturable"] = True  # as learning_rates_as_tensors sets it on CUDA
    saved = portable_optimizer_state(optimizer.state_dict())["param_groups"][0]
    assert saved["lr"] == pytest.approx(0.01) and isinstance(saved["lr"], float) and saved["capturable"] is False
    assert isinstance(optimizer.param_groups[0]["lr"], torch.Tensor)  # the live optimizer is untouched


def test_mirrored_scheduler_writes_the_eager_schedule_into_lr_tensors():
    params = [nn.Parameter(torch.zeros(2))]
    optimizer = torch.optim.SGD([{"params": params, "lr": 0.1}, {"params": [nn.Parameter(torch.zeros(1))],
                                                                 "lr": 0.02}])
    reference = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(2))], "lr": 0.1},
                                 {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.02}])

    def build(opt):
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)

    eager = build(reference)
    reference.step()  # no gradients: a no-op that keeps torch from warning about the order of steps
    for _ in range(3):
        eager.step()
    learning_rates_as_tensors(optimizer, torch.device("cpu"))
    tensors = [g["lr"] for g in optimizer.param_groups]
    optimizer.param_groups[0]["lr"].fill_(reference.param_groups[0]["lr"])
    optimizer.param_groups[1]["lr"].fill_(reference.param_groups[1]["lr"])
    mirrored = MirroredScheduler(optimizer, build, eager.state_dict())
    for _ in range(5):
        eager.step()
        mirrored.step()
        for group, want in zip(optimizer.param_groups, reference.param_groups):
            assert float(group["lr"]) == pytest.approx(want["lr"], rel=1e-6)
    assert [g["lr"] for g in optimizer.param_groups] == tensors  # the very tensors a graph reads
    assert all(g["lr"] is t for g, t in zip(optimizer.param_groups, tensors))
    assert mirrored.state_dict()["last_epoch"] == eager.state_dict()["last_epoch"] == 8


def test_cuda_graph_settings_resolve_and_contradictions_are_named():
    step = resolve_settings("cpu", "auto", True, "auto", "auto", "step")
    assert step.graphs == "step" and step.compile_mode == "default"
    assert resolve_settings("cpu", "auto", True, "auto", "max-autotune", "step").compile_mode == \
        "max-autotune-no-cudagraphs"
    assert resolve_settings("cpu", "auto", True, "auto", "reduce-overhead").graphs == "compiler"
    assert resolve_settings("cpu", "auto", "auto", "auto").graphs == "off"
    assert resolve_settings("cpu", "auto", "auto", "auto").cudnn_benchmark is False
    with pytest.raises(HydranetError, match="cuda_graphs: off contradicts train.compile_mode reduce-overhead"):
        resolve_settings("cpu", "auto", True, "auto", "reduce-overhead", "off")
    with pytest.raises(HydranetError, match="cuda_graphs: compiler needs train.compile on"):
        resolve_settings("cpu", "auto", False, "auto", "auto", "compiler")


def test_spec_rejects_an_unknown_cuda_graphs_choice(faces):
    with pytest.raises(HydranetError, match="cuda_graphs"):
        load_spec(tiny_spec(faces, cuda_graphs="always"))


def test_cuda_graphs_off_survives_yaml_reading_it_as_false(faces):
    """`cuda_graphs: off` in a spec file and `--set train.cuda_graphs=off` both reach the field as False."""
    assert load_spec(tiny_spec(faces), ["train.cuda_graphs=off"]).spec.train.cuda_graphs == "off"
    assert load_spec(tiny_spec(faces, cuda_graphs=False)).spec.train.cuda_graphs == "off"


def capturable_weightings() -> list[str]:
    from hydranet.core.plugins import load_components, make_plugin_manager

    weightings = load_components(make_plugin_manager(entry_points=False)).weightings
    return sorted(e.name for e in weightings if getattr(e.factory, "capturable", False))


def test_the_capturable_builtins_are_the_loss_based_ones_without_python_state():
    assert capturable_weightings() == ["dwa", "famo", "gls", "static", "sum", "uncertainty"]


@pytest.mark.parametrize("name", capturable_weightings())
def test_capturable_weightings_change_state_only_in_place(name, components):
    """A replay repeats device work only: a capturable weighting must never rebind a tensor or change a
    Python attribute in `backward` or `epoch_end`, or the replayed steps would use stale state."""
    entry = components.weightings.get(name)
    tasks = make_tasks(components, "age", "gender", "ethnicity")
    weighting = entry.factory(tasks, entry.validate_params({}))
    tensors = {key: value for key, value in [*weighting.named_parameters(), *weighting.named_buffers()]}
    python_state = {k: v for k, v in vars(weighting).items() if not k.startswith("_") and not callable(v)}
    frozen = {k: repr(v) for k, v in python_state.items()}
    before = {key: value.detach().clone() for key, value in tensors.items()}
    for step in range(3):
        losses = torch.tensor([0.9, 0.7, 1.3]) / (step + 1)
        losses.requires_grad_(True)
        weighting.backward(losses)
        weighting.epoch_end(losses.detach())
    after = dict([*weighting.named_parameters(), *weighting.named_buffers()])
    assert after.keys() == tensors.keys() and all(after[k] is tensors[k] for k in tensors), "a tensor was rebound"
    assert {k: repr(getattr(weighting, k)) for k in python_state} == frozen, "a Python attribute changed"
    if name not in ("sum", "static", "gls"):  # those keep no state a step changes (gls: only its log record)
        assert any(not torch.equal(before[k], tensors[k]) for k in tensors) or any(
            p.grad is not None for p in weighting.parameters()), f"{name}: nothing changed, the test saw nothing"


# ---------------------------------------------------------------- the recorded step on its own (no run)

def toy_step(optimizer: str = "adamw"):
    """A real `TrainStep` on a linear model with the built-in sum weighting."""
    from types import SimpleNamespace

    from hydranet.core.interfaces import StepContext
    from hydranet.core.step import TrainStep
    from hydranet.plugins.weighting.sum import Sum

    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    weighting = Sum([SimpleNamespace(name=n, problem="regression") for n in "abc"])
    make = torch.optim.AdamW if optimizer == "adamw" else (lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9))
    opt = make(model.parameters(), lr=0.01)

    def forward_losses(images, targets):
        return (model(images) - targets).pow(2).mean(0), None

    step = TrainStep(forward_losses, weighting, opt, lambda features: StepContext(features, [], [], []),
                     num_tasks=3, device=torch.device("cpu"))
    return step, model, weighting


def batch(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 4, generator=generator), torch.randn(rows, 3, generator=generator)


def test_a_batch_of_another_size_is_taken_eagerly_not_broadcast_into_the_recorded_one():
    """copy_ into the static input broadcasts a one-row batch over all eight rows without a word."""
    recorded, model, weighting = toy_step()
    plain, plain_model, _ = toy_step()
    backend = EagerReplay()
    captured = capture.CapturedStep(recorded, [model, weighting], backend, torch.device("cpu"), warmup_steps=1)
    for rows, seed in [(8, 0), (8, 1), (1, 2), (8, 3)]:
        captured(*batch(rows, seed))
        plain(*batch(rows, seed))
    assert captured.failed is None and backend.replays == 3  # the check's, then the two 8-row batches
    for got, want in zip(model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(recorded.loss_sums, plain.loss_sums)


def test_a_non_finite_first_batch_is_left_to_the_loss_check_not_blamed_on_the_recording():
    """Both updates are NaN: that is the data's (or the rate's) fault, which the run's loss check names."""
    step, model, weighting = toy_step()
    reasons: list[str] = []
    captured = capture.CapturedStep(step, [model, weighting], EagerReplay(), torch.device("cpu"),
                                    on_fallback=reasons.append, warmup_steps=1)
    images, targets = batch(8, 0)
    targets[3, 0] = float("inf")  # task a's loss is not finite, and so is its part of the update
    captured(images, targets)
    assert reasons == [] and captured.failed is None and captured.graph is not None
    assert step.first_bad.tolist() == [1, -1, -1]  # what stops the run, naming the task


def test_the_first_replays_agreement_is_kept_and_closing_drops_the_graph():
    step, model, weighting = toy_step(optimizer="sgd")
    captured = capture.CapturedStep(step, [model, weighting], EagerReplay(), torch.device("cpu"), warmup_steps=1)
    captured(*batch(8, 0))
    cosine, size = captured.agreement
    assert cosine == pytest.approx(1.0, abs=1e-6) and size == pytest.approx(1.0, abs=1e-6)
    captured.close()
    assert captured.graph is None and captured.static is None
    assert captured.closed and captured.failed is None  # closing is not a failed recording
    before = [p.detach().clone() for p in model.parameters()]
    captured(*batch(8, 1))  # a closed step still trains, eagerly
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_the_warm_up_stream_is_joined_even_when_a_warm_up_step_raises(monkeypatch):
    """Otherwise the snapshot is restored on the run's stream while the side stream may still write the weights."""
    joined = []

    class FakeStream:
        def wait_stream(self, other):
            joined.append((self, other))

    run_stream, side_streams = FakeStream(), []

    def new_stream(device):
        side_streams.append(FakeStream())
        return side_streams[-1]

    monkeypatch.setattr(torch.cuda, "Stream", new_stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: run_stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    backend = capture.CudaGraphs(torch.device("cuda"))
    with pytest.raises(RuntimeError, match="compile failed"):
        with backend.warmup():
            raise RuntimeError("compile failed")
    assert joined == [(side_streams[0], run_stream), (run_stream, side_streams[0])]


def test_what_blocks_recording_the_whole_step(components, monkeypatch):
    """Pinned host buffers may feed a recorded step (no thread calls CUDA); several processes may not."""
    tasks = make_tasks(components, "age", "gender")
    sum_ = components.weightings.get("sum")
    weighting = sum_.factory(tasks, sum_.validate_params({}))
    cuda = torch.device("cuda")
    monkeypatch.setattr(capture, "graph_backend", lambda device: object())  # as on a GPU
    assert capture.capture_blockers(cuda, weighting, processes=1, on_nonfinite="stop", placement="host") == []
    assert capture.capture_blockers(cuda, weighting, processes=1, on_nonfinite="stop") == []
    assert capture.capture_blockers(cuda, weighting, processes=2, on_nonfinite="stop") == ["the run uses 2 processes"]


def test_a_recorded_run_logs_the_replays_agreement_and_frees_its_graph_when_it_ends(faces, tmp_path, stand_in,
                                                                                   monkeypatch):
    closed = []
    close = capture.CapturedStep.close
    monkeypatch.setattr(capture.CapturedStep, "close", lambda self: (closed.append(self.graph is not None),
                                                                     close(self)))
    result = hydranet.train(tiny_spec(faces, epochs=1), overrides=["train.cuda_graphs=step"], out_dir=tmp_path / "r",
                            progress=False, echo=False)
    log = (result.run_dir / "train.log").read_text()
    assert ("the training step is recorded as one CUDA graph; its first replay matched an eager step "
            "(update cosine 1.0") in log
    assert closed == [True]  # the run closed its graph (which was still there) on the way out

    spec = tiny_spec(faces, epochs=1)
    spec["weighting"] = "mgda"  # not capturable: nothing recorded, nothing said about a replay
    unrecorded = hydranet.train(spec, overrides=["train.cuda_graphs=step"], out_dir=tmp_path / "m", progress=False,
                                echo=False)
    assert "its first replay matched" not in (unrecorded.run_dir / "train.log").read_text()
    assert closed == [True]
