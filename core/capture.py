"""Record the whole training step once as a CUDA graph and replay it (train.cuda_graphs: step).

At 32 px a resnet18 step is a few hundred small kernels and about 1 ms of GPU
work, so the time per step is set by the CPU launching kernels, not by the GPU.
torch.compile's reduce-overhead mode records the model's forward and backward
as graphs, but the rest of the step (the weighting, the optimizer, the
bookkeeping) still launches kernel by kernel. Recording the whole `TrainStep`
leaves one graph launch and two input copies per step.

How: the step runs a few times on a side stream on the first batch (the
compiler, cuDNN and the optimizer create their kernels and state there, as
capture forbids), everything those warm-up steps changed is put back from a
snapshot, and the step is recorded once. A replay re-runs that device work on
whatever the static input tensors hold. The first batch's step is then taken
twice from the same state, eagerly and by replay, and the two updates must
agree, so a graph that recorded the wrong work is caught before it trains. This is only correct when the step
keeps all its state in tensors it updates in place and never reads a tensor
on the host, so it is used only where that holds:

- the weighting says so (`Weighting.capturable`: the loss-based built-ins);
- one process (a collective inside a graph is not supported here);
- `train.on_nonfinite: stop` (skipping a bad batch reads the losses on the host);
- images placed on the device or in host memory, not streamed by DataLoader
  workers (their pinning thread calls CUDA, which recording forbids);
- learning rates are tensors the graph reads, rewritten in place after each
  step by `MirroredScheduler`, since a Python float would be frozen into the
  graph at its value when recorded.

Where any of this does not hold, the run says why and falls back to the
compiler's graphs. The graph backend is a small object (`graph_backend`), so
the tests run this very code on a CPU with a backend that re-runs the step
eagerly instead of replaying a recording.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from hydranet.core.errors import HydranetError
from hydranet.core.interfaces import Weighting
from hydranet.core.step import TrainStep

#: Warm-up steps before recording: the first compiles and creates optimizer state, later ones must reuse it.
WARMUP_STEPS = 3
#: How closely the first replayed update must match an eager one: the cosine of the two, and their size ratio's
#: distance from 1 (kernels that add in a different order stay far inside both; wrong work falls far outside).
REPLAY_COSINE = 0.99
REPLAY_SIZE = 0.1


class GraphBackend(Protocol):
    """Records and replays a step: CUDA graphs on a GPU, an eager stand-in in tests."""

    #: True when `record` really runs the step (the stand-in), so its effects must be undone.
    record_runs_work: bool

    def warmup(self) -> contextlib.AbstractContextManager: ...

    def record(self, step: Callable[[], None]) -> Any: ...

    def replay(self, graph: Any) -> None: ...


class CudaGraphs:
    """torch.cuda's graphs: warm-up on a side stream, record, replay."""

    record_runs_work = False

    def __init__(self, device: torch.device):
        self.device = device

    @contextlib.contextmanager
    def warmup(self) -> Iterator[None]:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with torch.cuda.stream(side):
                yield
        finally:
            # Also when a warm-up step raised: the snapshot is then restored on the run's stream, and must
            # not overwrite the state while the side stream's earlier steps are still writing it.
            torch.cuda.current_stream(self.device).wait_stream(side)

    def record(self, step: Callable[[], None]) -> torch.cuda.CUDAGraph:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        return graph

    def replay(self, graph: torch.cuda.CUDAGraph) -> None:
        graph.replay()


def graph_backend(device: torch.device) -> GraphBackend | None:
    """The backend that records steps on `device`, or None where there are no CUDA graphs."""
    return CudaGraphs(device) if device.type == "cuda" and torch.cuda.is_available() else None


def capture_blockers(device: torch.device, weighting: Weighting, *, processes: int,
                     on_nonfinite: str, placement: str = "device") -> list[str]:
    """Why the whole step cannot be recorded in this run (empty: it can)."""
    reasons = []
    if placement == "stream":  # its loader's pinning thread would call CUDA while the step is being recorded
        reasons.append("data.placement is stream (its loader threads use CUDA while the step is recorded)")
    if graph_backend(device) is None:
        reasons.append(f"device {device} has no CUDA graphs")
    if not weighting.capturable:
        reasons.append(f"weighting {type(weighting).__name__} is not capturable "
                       "(it reads values on the host or keeps Python state)")
    if processes > 1:
        reasons.append(f"the run uses {processes} processes")
    if on_nonfinite != "stop":
        reasons.append("train.on_nonfinite: skip reads every step's losses on the host")
    return reasons


class StateSnapshot:
    """A copy of everything a training step changes, to undo the warm-up steps recording needs.

    Parameters and buffers of the modules, the step's bookkeeping, the
    optimizer's state and the random-number generators. Optimizer state that
    did not exist when the snapshot was taken (the first step creates it) is
    zeroed rather than removed: a recorded graph keeps pointing at those very
    tensors, and zeroed momentum and moment estimates with a zero step count
    are exactly a fresh optimizer's state for SGD (without dampening) and AdamW.
    """

    def __init__(self, modules: Sequence[nn.Module], optimizer: torch.optim.Optimizer, extra: Sequence[Tensor],
                 device: torch.device):
        self.live = [t for m in modules for t in [*m.parameters(), *m.buffers()]] + list(extra)
        self.saved = [t.detach().clone() for t in self.live]
        self.optimizer = optimizer
        self.optimizer_state = {p: {k: _clone(v) for k, v in state.items()} for p, state in optimizer.state.items()}
        self.device = device
        self.cpu_rng = torch.get_rng_state()
        self.device_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    @torch.no_grad()
    def restore(self) -> None:
        for live, saved in zip(self.live, self.saved):
            live.copy_(saved)
        for p, state in self.optimizer.state.items():
            saved_state = self.optimizer_state.get(p, {})
            for key, value in state.items():
                if key in saved_state:
                    if isinstance(value, Tensor):
                        value.copy_(saved_state[key])
                    else:
                        state[key] = _clone(saved_state[key])
                elif isinstance(value, Tensor):
                    value.zero_()
        torch.set_rng_state(self.cpu_rng)
        if self.device_rng is not None:
            torch.cuda.set_rng_state(self.device_rng, self.device)


def _same_layout(a: Tensor, b: Tensor) -> bool:
    """Whether `a` can be copied into the static input `b` as one batch of the same size and kind."""
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device


def _clone(value: Any) -> Any:
    return value.detach().clone() if isinstance(value, Tensor) else copy.deepcopy(value)


def learning_rates_as_tensors(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Make each group's lr a tensor on the device, which a recorded optimizer step reads when replayed.

    On CUDA, Adam-family optimizers must also be told they run inside a graph
    (`capturable`), which keeps their step counts on the device.
    """
    for group in optimizer.param_groups:
        if not isinstance(group["lr"], Tensor):
            group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)
        if device.type == "cuda" and "capturable" in group:
            group["capturable"] = True


def portable_optimizer_state(optimizer_state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state_dict as a plain run would write it: what `learning_rates_as_tensors` did, undone.

    Tensor learning rates and `capturable` groups are how a recorded step
    runs, not training settings, and a capturable group cannot step on a CPU.
    The checkpoint gets float learning rates and capturable off, so any kind
    of run can resume it.
    """
    for group in optimizer_state["param_groups"]:
        if isinstance(group.get("lr"), Tensor):
            group["lr"] = float(group["lr"])
        if group.get("capturable"):
            group["capturable"] = False
    return optimizer_state


class MirroredScheduler:
    """Steps a torch LR scheduler on float copies of the learning rates and writes them into the lr tensors.

    torch's schedulers compute the next lr from the current one: with tensor
    learning rates on a GPU that would read a tensor on the host every step.
    Here the scheduler runs on a stand-in optimizer that holds the same
    learning rates as floats, and each new value is written into the real
    optimizer's tensors with `fill_`, which needs no synchronisation. The
    schedule's values and its state_dict are those of the eager run.
    """

    def __init__(self, optimizer: torch.optim.Optimizer,
                 build: Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler],
                 state: dict[str, Any] | None = None):
        self.optimizer = optimizer
        current = [float(g["lr"]) for g in optimizer.param_groups]  # the eager schedule's values now
        self.stand_in = torch.optim.SGD(
            [{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in current])
        self.scheduler = build(self.stand_in)
        self.stand_in.step()  # a no-op (no gradients) that tells torch the scheduler steps after the optimizer
        if state is not None:
            self.scheduler.load_state_dict(state)
        # a scheduler that computes the lr from the step count (LambdaLR: train.warmup_epochs) set the stand-in's
        # to its factor at step 0 of the rates it was given, which are already scaled, and loading the state
        # leaves them so: the next step would run at that value, not at the schedule's. Keep the current ones.
        for group, lr in zip(self.stand_in.param_groups, current):
            group["lr"] = lr
        self._write()

    def step(self) -> None:
        self.scheduler.step()
        self._write()

    def _write(self) -> None:
        for group, stand_in in zip(self.optimizer.param_groups, self.stand_in.param_groups):
            group["lr"].fill_(stand_in["lr"])

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)
        self._write()


class CapturedStep:
    """A `TrainStep` recorded on its first call and replayed on every later one.

    If recording fails, or the first replay disagrees with an eager step, the
    state is put back, `on_fallback` is told why, and the step runs without a
    graph from then on: a slower run, not a lost one.
    """

    def __init__(self, step: TrainStep, modules: Sequence[nn.Module], backend: GraphBackend, device: torch.device,
                 on_fallback: Callable[[str], None] = lambda reason: None, warmup_steps: int = WARMUP_STEPS):
        self.step, self.modules, self.backend, self.device = step, list(modules), backend, device
        self.on_fallback, self.warmup_steps = on_fallback, warmup_steps
        self.graph: Any = None
        self.failed: str | None = None  #: why recording (or its check against an eager step) failed
        self.closed = False  #: the run is over and the graph dropped: later calls run eagerly
        self.static: tuple[Tensor, Tensor] | None = None
        #: (cosine, size ratio) of the first replayed update against the eager one, once recorded
        self.agreement: tuple[float, float] | None = None

    def __call__(self, images: Tensor, targets: Tensor) -> None:
        if self.failed is None and self.graph is None and not self.closed:
            self._record(images, targets)  # which also takes this batch's step, checked against an eager one
            if self.failed is None:
                return
        # No graph (recording failed, or the run is closed), or a batch of another shape: copy_ would broadcast a
        # smaller batch into the recorded one (or fail), so it is taken eagerly, on the same state tensors the
        # graph updates. Metadata only, no sync.
        if self.static is None or self.graph is None or not (
                _same_layout(images, self.static[0]) and _same_layout(targets, self.static[1])):
            self.step(images, targets)
            return
        static_images, static_targets = self.static
        static_images.copy_(images)
        static_targets.copy_(targets)
        self.backend.replay(self.graph)

    def close(self) -> None:
        """Drop the recorded graph and its static inputs (its private memory pool goes with them); the run is over.

        A finished run's trainer is held by reference cycles until the collector comes round, and with it a
        graph pool as large as a step's activations and gradients: closing frees that at once.
        """
        self.graph, self.static = None, None
        self.closed = True

    def _record(self, images: Tensor, targets: Tensor) -> None:
        step = self.step
        self.static = (images.clone(), targets.clone())
        snapshot = StateSnapshot(self.modules, step.optimizer, step.running, self.device)
        try:
            with self.backend.warmup():
                for _ in range(self.warmup_steps):
                    step(*self.static)
            snapshot.restore()
            step.optimizer.zero_grad(set_to_none=True)
            static_images, static_targets = self.static
            graph = self.backend.record(lambda: step(static_images, static_targets))
        except HydranetError:  # the step's own fault (a plugin's weights() of the wrong length ...): said as it is
            snapshot.restore()
            raise
        except Exception as error:  # any failure to record: run on without a graph
            first_line = (str(error).strip().splitlines() or [""])[0]
            self._fall_back(snapshot, f"{type(error).__name__}: {first_line}")
            return
        if self.backend.record_runs_work:
            snapshot.restore()
        self.graph = graph
        problem = self._first_replay_matches_eager(snapshot)
        if problem:
            self._fall_back(snapshot, problem)

    def _fall_back(self, snapshot: StateSnapshot, reason: str) -> None:
        """Put the state back as it was before recording and run without a graph from now on."""
        self.graph, self.failed = None, reason
        self.step.optimizer.zero_grad(set_to_none=True)
        snapshot.restore()
        self.on_fallback(reason)

    def _first_replay_matches_eager(self, snapshot: StateSnapshot) -> str:
        """Take the first batch's step twice, eagerly and by replay, from the same state; "" if they agree.

        The replay's step is the one kept. A graph that recorded the wrong
        work (an update that reads a stale value, or none at all) would train
        on silently; this catches it once, at the cost of one extra step and
        one host read. The two updates must point the same way (cosine at
        least `REPLAY_COSINE`) and be as large (within `REPLAY_SIZE`): kernels
        that add in a different order make a few of AdamW's first-step
        updates, which are about lr * sign(gradient), flip sign where a
        gradient is within rounding of zero, which barely moves either figure.
        """
        step = self.step
        params = [p for group in step.optimizer.param_groups for p in group["params"]]
        before = [p.detach().clone() for p in params]
        step(*self.static)
        eager = [p.detach() - b for p, b in zip(params, before)]
        step.optimizer.zero_grad(set_to_none=True)
        snapshot.restore()
        self.backend.replay(self.graph)
        replayed = [p.detach() - b for p, b in zip(params, before)]
        figures = torch.stack([
            sum((e.float() * r.float()).sum() for e, r in zip(eager, replayed)),
            sum(e.float().square().sum() for e in eager),
            sum(r.float().square().sum() for r in replayed),
        ]).tolist()  # the one host read of the check
        dot, eager_sq, replayed_sq = figures
        if eager_sq == 0 and replayed_sq == 0:
            return ""  # nothing moved either way (every gradient zero): nothing to tell apart
        if not math.isfinite(eager_sq):
            # The eager step itself broke the weights (a non-finite loss or gradient on the first batch): there
            # is nothing to compare against, and a run without a graph would be just as broken. The run's own
            # check of the losses stops it at the log interval and names the task; calling that a failed
            # recording would blame the graph.
            return ""
        size = (replayed_sq / eager_sq) ** 0.5 if eager_sq > 0 else float("inf")
        cosine = dot / (eager_sq * replayed_sq) ** 0.5 if eager_sq > 0 and replayed_sq > 0 else 0.0
        self.agreement = (cosine, size)
        if cosine >= REPLAY_COSINE and abs(size - 1) <= REPLAY_SIZE:
            return ""
        return (f"the replayed step's update disagrees with an eager step's (cosine {cosine:.3f}, "
                f"size ratio {size:.3g})")
