"""Training on several processes (GPUs, or CPU processes with gloo), launched by torchrun.

How a distributed step works, and why it is built this way rather than by
wrapping the model in `DistributedDataParallel`:

- Every rank draws the same seeded permutation each epoch; global batch t is
  `order[t*B:(t+1)*B]` exactly as in one process, and rank r trains on its
  slice `[r*B/W, (r+1)*B/W)` of it (B = `train.batch_size`, the *global* batch,
  W = the number of processes). Augmentation draws its random numbers for the
  whole global batch and keeps the rank's rows, so a sample is flipped and
  shifted the same whatever W is. Hence a run can resume with a different W.
- Each task's loss is the mean over the *global* batch's labelled rows. A rank
  computes its share `L_part = mean_local * n_local / n_global` (n: labelled
  rows, so a task labelled on few rows is weighted exactly as in one process)
  and the global value `L = sum_r mean_r * n_r / n_global`, from one
  all-reduce of the K loss sums and K counts together. The weighting receives `L_part + (L - L_part).detach()`: its
  value is the global loss, its gradient is this rank's share. Any weighting
  that is a function of the losses, f(L), then yields f'(L) dL_part on each
  rank, and their sum is the exact global gradient f'(L) dL: nonlinear
  weightings (gls, dbmtl's log, famo) stay exact, not means of means.
- After the weighting's backward every model gradient holds the rank's share,
  and one flat all-reduce (sum) makes it the global gradient on every rank.
  DDP averages instead, and only within one backward call; gradient-based
  weightings run several (per-task gradients, then the combined one) and must
  reduce *before* they combine (a min-norm or projection of averaged
  per-rank directions is not the direction of the global gradients). Doing the
  one reduction ourselves keeps a single code path for all of them, with the
  same cost as DDP's bucketed all-reduce (one collective per step).
- A weighting's own learned parameters (uncertainty's log-variances, GradNorm's
  weights) see only global values (the losses' values, all-reduced norms), so
  their gradients are already identical on every rank and are not reduced.
- Gradient-based weightings reduce what they combine: in parameter space the
  (K, D) Jacobian (a sum of the ranks' shares); in feature space, where each
  rank holds the gradients of its own images, the (K, K) Gram matrix of the
  per-task gradients, from which every built-in strategy's task weights follow
  (see `hydranet.core.weighting.GradientWeighting`).
- Batch-norm statistics are per rank during an epoch (as with DDP); the running
  buffers are averaged across ranks before each evaluation, so every rank
  holds the same model. Validation is split across ranks and its sums and
  counts (losses, metric buffers) are all-reduced: exact, not means of means.
- Only rank 0 writes the run folder (logs, metrics, checkpoints, plots).

In one process `Distributed.single()` makes every one of these operations the
identity, so the engine has one code path and the CPU tests cover it.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from hydranet.core.errors import HydranetError
from hydranet.core.interfaces import label_mask
from hydranet.core.launch import AGENT_SIGNALS
from hydranet.core.wording import english_list, plural

#: Environment variables torchrun sets for every worker.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class DistributedError(HydranetError):
    """A distributed launch that cannot work as configured."""


@dataclass
class Distributed:
    """This process's place in a (possibly one-process) run, and the collectives the engine uses."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None
    #: True when this object initialised the process group (and so destroys it in `close`).
    owns_group: bool = False

    # ------------------------------------------------------------ set-up

    @classmethod
    def single(cls) -> "Distributed":
        return cls()

    @classmethod
    def from_environment(cls, device_name: str = "auto") -> "Distributed":
        """The torchrun launch this process belongs to (or a single process), with its group initialised.

        NCCL when the run trains on CUDA, gloo otherwise (CPU processes).
        """
        if not all(name in os.environ for name in TORCHRUN_VARIABLES):
            return cls.single()
        world_size = int(os.environ["WORLD_SIZE"])
        if world_size <= 1:
            return cls.single()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
        use_cuda = trains_on_cuda(device_name)
        if use_cuda:
            if local_rank >= torch.cuda.device_count():
                raise DistributedError(
                    f"local rank {local_rank} has no GPU: this machine has {torch.cuda.device_count()}. "
                    "Start at most one process per GPU (torchrun --nproc-per-node N, hydranet train --nproc N).")
            torch.cuda.set_device(local_rank)
        backend = "nccl" if use_cuda else "gloo"
        owns = not torch.distributed.is_initialized()
        if owns:
            torch.distributed.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
        return cls(rank, local_rank, world_size, torch.distributed.get_backend(), owns)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """The device this rank trains on: its own GPU under NCCL."""
        if self.active and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def close(self) -> None:
        """End the group this process started, while the interpreter is fully alive.

        `destroy_process_group` only drops torch's own references; a group
        still held elsewhere (a reference cycle through the finished run) would
        be destroyed at interpreter shutdown, where gloo's threads can abort
        the process ("terminate called without an active exception", seen once
        in CI on a rank that had finished). Collecting now destroys it here.
        """
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            gc.collect()

    # ------------------------------------------------------------ data

    def local_rows(self, global_batch: int) -> slice:
        """This rank's rows of a global batch (the batch size is checked to divide by W)."""
        per_rank = global_batch // self.world_size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    def check_batch_size(self, batch_size: int, field: str = "train.batch_size") -> None:
        check_global_batch(batch_size, self.world_size, field)

    def local_index(self, index: Tensor) -> Tensor:
        """This rank's part of an evaluation index (every W-th sample, so parts differ by at most one)."""
        return index[self.rank::self.world_size] if self.active else index

    # ------------------------------------------------------------ collectives

    def all_reduce(self, tensor: Tensor, op: str = "sum") -> Tensor:
        """Sum (or max, or min) `tensor` over the ranks, in place, and return it; the identity in one process."""
        if self.active:
            reduce_op = {"max": torch.distributed.ReduceOp.MAX,
                         "min": torch.distributed.ReduceOp.MIN}.get(op, torch.distributed.ReduceOp.SUM)
            torch.distributed.all_reduce(tensor, op=reduce_op)
        return tensor

    def least(self, values: Sequence[float]) -> list[float]:
        """Each of `values` at its smallest over the ranks: what every rank can afford (memory budgets).

        A decision each rank would take from its own measurement (where the
        data fits) is taken from these on every rank, so all decide alike.
        """
        if not self.active:
            return list(values)
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self._collective_device)
        return self.all_reduce(tensor, op="min").tolist()

    def gather_objects(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank (e.g. each rank's random generator states)."""
        if not self.active:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, value)
        return gathered

    @property
    def _collective_device(self) -> torch.device:
        """Where a tensor made for a collective must live: NCCL reduces GPU tensors only, gloo CPU ones."""
        if self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def share_losses(self, losses: Tensor, targets: Tensor) -> Tensor:
        """Per-task losses whose value is the global batch's and whose gradient is this rank's share."""
        if not self.active:
            return losses
        k = losses.shape[0]
        counts = label_mask(targets).sum(dim=0).to(losses.dtype)
        # one all-reduce per step: the loss sums and the label counts travel together
        sums, total = self.all_reduce(torch.cat([losses.detach() * counts, counts])).split(k)
        total = total.clamp_min(1)
        part = losses * counts / total
        return part + (sums / total - part).detach()

    def sum_gradients(self, parameters: Sequence[nn.Parameter]) -> None:
        """Turn every rank's gradient shares into the global gradient, with one flat all-reduce.

        A parameter without a gradient on this rank takes part with zeros, so
        every rank passes the same layout (a missing gradient then means zero).
        """
        if not self.active or not parameters:
            return
        grads = []
        for p in parameters:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def average_buffers(self, module: nn.Module) -> None:
        """Average floating-point buffers (batch-norm running statistics) so every rank holds the same model."""
        if not self.active:
            return
        for buffer in module.buffers():
            if buffer.is_floating_point():
                self.all_reduce(buffer).div_(self.world_size)

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when `flag` is true on any (a host synchronisation: call it rarely)."""
        if not self.active:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        return bool(self.all_reduce(value, op="max").item() > 0)

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (e.g. the run folder's path)."""
        if not self.active:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_module(self, module: nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank (once, at the start)."""
        if self.active:
            for tensor in [*module.parameters(), *module.buffers()]:
                torch.distributed.broadcast(tensor.data, src=0)

    def divergence(self, *modules: nn.Module) -> float:
        """The largest difference between any parameter or buffer here and on rank 0, over all ranks.

        Every rank applies the same summed gradient, so this should be exactly
        0; the engine checks it once at the end of a run (it sends the model
        once, like the broadcast at the start).
        """
        if not self.active:
            return 0.0
        tensors = [t.detach().reshape(-1).double() for m in modules for t in [*m.parameters(), *m.buffers()]
                   if t.is_floating_point()]
        if not tensors:
            return 0.0
        mine = torch.cat(tensors)
        reference = mine.clone()
        torch.distributed.broadcast(reference, src=0)
        gap = (mine - reference).abs().max().reshape(1)
        return float(self.all_reduce(gap, op="max").item())

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. decodes into the cache), then the others (which read it)."""
        if not self.is_main:
            self.barrier()
        try:
            yield
        finally:
            if self.is_main:
                self.barrier()


def trains_on_cuda(device_name: str | torch.device) -> bool:
    """Whether a run with `train.device` = `device_name` trains on GPUs (NCCL), not on the CPU (gloo)."""
    name = str(device_name)
    return name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())


def check_global_batch(batch_size: int, processes: int, field: str = "train.batch_size") -> None:
    """Refuse a global batch that does not split evenly among `processes`, naming the nearest sizes that do."""
    if batch_size % processes == 0:
        return
    below = batch_size - batch_size % processes
    sizes = [str(size) for size in (below, below + processes) if size > 0]
    raise DistributedError(
        f"{field} = {batch_size} is the global batch (all processes together) and must divide by the "
        f"{processes} processes; use {english_list(sizes, 'or')} (--set {field}=N), "
        f"or a number of processes that divides {batch_size}")


#: Signals the --nproc wrapper passes on to torchrun: those torchrun passes on to its workers.
FORWARDED_SIGNALS = AGENT_SIGNALS

#: Signals passed on even when the wrapper started with them ignored, as one process takes them whatever their
#: disposition (`hydranet.core.interrupts`): a shell starts a script's background job (`cmd &`) with SIGINT
#: ignored, yet `kill -INT PID` must stop the run. The others stay ignored when they start so (nohup's SIGHUP).
ALWAYS_FORWARDED = tuple(sig for sig in (signal.SIGINT, signal.SIGTERM) if sig in FORWARDED_SIGNALS)


def launch_local(nproc: int, argv: Sequence[str], device: str | torch.device = "auto") -> int:
    """Run `hydranet ARGV` in `nproc` processes on this machine through torchrun; return its exit status.

    `device` is the run's `train.device`: on GPUs (one process each) `nproc`
    may not exceed their number; CPU processes (gloo) are not counted against
    the GPUs a machine may also have.

    torchrun runs through `hydranet.core.launch`, which takes its arguments
    but prints only hydranet's messages (no tracebacks when a worker fails or
    a signal stops the run) and exits with the worker's status.
    """
    check_process_count(nproc, device)
    command = [sys.executable, "-m", "hydranet.core.launch", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "hydranet", *argv]
    # torchrun kills workers that have not stopped 30 s after a signal; workers stop at the next log
    # interval and then save, which can take longer. A user's own setting wins.
    env = {**os.environ}
    env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(SHUTDOWN_SECONDS))
    env.setdefault("OMP_NUM_THREADS", str(worker_threads(nproc)))
    return run_forwarding_signals(command, env=env)


def check_process_count(nproc: int, device: str | torch.device = "auto", option: str = "--nproc") -> None:
    """Refuse more processes than GPUs when the run trains on them (one GPU each); CPU processes are not counted.

    `option` is how the user asked: the CLI's `--nproc`, or `nproc` for the Python API's argument.
    """
    if torch.cuda.is_available() and trains_on_cuda(device) and nproc > torch.cuda.device_count():
        asked = f"{option} {nproc}" if option.startswith("-") else f"{option}={nproc}"
        raise DistributedError(f"{asked} asks for more processes than this machine's "
                               f"{plural(torch.cuda.device_count(), 'GPU')}; use at most one per GPU")


def worker_threads(nproc: int) -> int:
    """The CPU threads each of `nproc` workers on this machine uses (OMP_NUM_THREADS), unless the user chose.

    torchrun sets 1 whenever it starts several workers, and says so in a
    banner: a blanket guard against oversubscription, since it does not know
    the machine's share of the job. An equal share of the cores this process
    may run on is just as safe (the workers together use each core once) and
    lets their CPU work use the machine: all of a gloo run's training, and on
    GPUs the one-time image decode and the host-side work of each step, which
    a share speeds up and which one thread would slow. So the same rule for
    both: cores // nproc, at least 1.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // nproc)


#: How long torchrun waits for workers to save and stop after a signal before killing them.
SHUTDOWN_SECONDS = 600


def run_forwarding_signals(command: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run `command` (torchrun), pass signals on to it, wait for it and return its exit status.

    The wrapper must neither die of a signal, leaving the workers running as
    orphans, nor swallow one sent to it alone (`kill -INT PID`, a scheduler's
    SIGTERM): it passes each on, once, and keeps waiting while torchrun's
    workers finish their step, save and stop.

    torchrun runs in a session of its own (as torchrun starts each worker), so a
    terminal's Ctrl-C reaches it only through the wrapper. Otherwise it would
    get every Ctrl-C twice, from the terminal and from the wrapper, and a
    second signal is what turns torchrun's graceful shutdown into a SIGTERM
    to the workers: the first Ctrl-C would use up the second's meaning, and
    a second Ctrl-C would make torchrun exit without waiting for its workers.
    Passed on once, the first Ctrl-C reaches the workers as SIGINT (finish the
    step, save, stop) and a second one, more than a second later, as SIGTERM, which a
    worker that was asked to stop by SIGINT takes as "stop at once" (see
    `hydranet.core.interrupts`).

    After a signal the wrapper returns 128 + N, the shell's convention for
    "stopped by signal N", as one process does, whatever status the child
    ends with (`hydranet.core.launch` ends with that too; a plain torchrun
    ends with its generic 1).
    """
    received: list[tuple[int, bool]] = []  # (signal, passed on by the handler)
    children: list[subprocess.Popen] = []

    def forward(signum: int, frame: Any) -> None:
        received.append((signum, bool(children)))
        for child in children:
            child.send_signal(signum)  # a no-op once the child has ended

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in FORWARDED_SIGNALS:
            if sig in ALWAYS_FORWARDED or signal.getsignal(sig) is not signal.SIG_IGN:  # nohup's SIGHUP stays ignored
                previous[sig] = signal.signal(sig, forward)
    try:
        process = subprocess.Popen(list(command), start_new_session=True, env=None if env is None else dict(env))
        children.append(process)
        for signum, passed in list(received):
            if not passed:  # it came while the child was starting
                process.send_signal(signum)
        status = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if status < 0:  # the child died of signal -status (before torchrun took over its handling)
        return 128 - status
    if status and received:
        return 128 + received[0][0]
    return status
