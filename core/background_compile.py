"""Compile in a child process while the run trains uncompiled, then switch (`train.compile_in_background`).

Why: on a GPU, torch.compile spends 20 to 30 s before the first step of a run
whose compiler caches are cold, while an uncompiled step at 32 px takes a few
milliseconds. Waiting for the compiler means a short run may spend most of
its time waiting, and a long one shows nothing for half a minute.

How: the run starts a child process that builds the same model from the
same spec (with the tasks' fitted values, so every constant in the graphs
agrees), compiles the same functions (`make_forward_losses`) and runs each
once on a dummy batch of the run's shapes, training and evaluation. That
fills the compiler's on-disk caches (inductor's FX-graph cache, the
AOTAutograd cache, Triton's kernels), and the child exits. Meanwhile the run
trains uncompiled. When the child is done the run compiles its own model,
which now finds every graph in the cache: a pause of seconds instead of the
cold compile, after which every step is compiled.

Only the caches pass between the two processes. A child that fails or finds
other graphs costs nothing but time: the run then compiles as it would have
without it. How many steps run uncompiled depends on how fast the child is,
so runs with this switch on do not repeat bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from hydranet.core.augment import DeviceAugment
from hydranet.core.device import RunSettings
from hydranet.core.forward import compile_static, make_forward_losses, model_for_settings
from hydranet.core.spec import load_spec

#: Lines of the child's log quoted when it fails.
TAIL_LINES = 6

#: The child's command line, before the job file's path.
CHILD_COMMAND = [sys.executable, "-m", "hydranet.core.background_compile"]


@dataclass
class CompileJob:
    """What the child needs to build the run's graphs: plain values only (written as JSON)."""

    spec: dict[str, Any]
    task_states: list[dict[str, Any]]
    settings: dict[str, Any]
    train_batch: int
    eval_batch: int

    def to_json(self) -> str:
        """The job as JSON; TypeError or ValueError when a value is not plain (a plugin task's state)."""
        return json.dumps(asdict(self))

    @classmethod
    def read(cls, path: Path) -> CompileJob:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def blockers(*, processes: int, graphs: str, deterministic: bool) -> list[str]:
    """Why compiling in the background is not possible for this run (empty: it is)."""
    reasons = []
    if processes > 1:
        reasons.append(f"{processes} processes would each start a compiler")
    if graphs == "step":
        reasons.append("train.cuda_graphs: step records the compiled step once, before the first step")
    if deterministic:
        reasons.append("train.deterministic asks for runs that repeat bit for bit")
    return reasons


class BackgroundCompile:
    """The child process that warms the compiler's caches, and what became of it."""

    def __init__(self, job: CompileJob, log_path: Path, command: list[str] | None = None):
        """Write the job file and start the child, its output going to `log_path`."""
        self.started = time.perf_counter()
        self.log_path = log_path
        text = job.to_json()  # first: a job that cannot be written leaves nothing behind
        use_graph_cache()  # here, and in the child through the environment
        self._folder = tempfile.TemporaryDirectory(prefix="hydranet-compile-")
        job_path = Path(self._folder.name) / "job.json"
        job_path.write_text(text, encoding="utf-8")
        command = [*(command or CHILD_COMMAND), str(job_path)]
        with open(log_path, "ab") as log:
            # Its own session: Ctrl-C in the terminal is for the run, which finishes its step and stops the child.
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        self.seconds: float | None = None

    def done(self) -> bool:
        """True once the child has exited (a non-blocking check: cheap enough for every step)."""
        return self._exited(self.process.poll())

    def wait(self) -> bool:
        """Block until the child exits; True. (For tests that need the switch at a known step.)"""
        return self._exited(self.process.wait())

    def _exited(self, returncode: int | None) -> bool:
        if self.seconds is None and returncode is not None:
            self.seconds = time.perf_counter() - self.started
        return self.seconds is not None

    def failure(self) -> str | None:
        """Why the child failed, quoting the end of its log; None when it succeeded."""
        if self.process.returncode == 0:
            return None
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        except OSError:
            lines = []
        tail = " | ".join(line.strip() for line in lines[-TAIL_LINES:])
        return f"exit status {self.process.returncode}" + (f": {tail}" if tail else "")

    def stop(self) -> None:
        """End the child if it still runs (the run finished or was interrupted first) and remove the job file."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._folder.cleanup()


def use_graph_cache() -> None:
    """Turn on inductor's on-disk FX-graph cache, the only way compiled graphs pass from the child to the run.

    It is on by default from torch 2.5. Torch 2.4 has it but off, and there the
    run would compile every graph again after the child. A user's explicit
    TORCHINDUCTOR_FX_GRAPH_CACHE=0 is kept (the switch then saves nothing).
    """
    if os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1") != "0":
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = True


def warm_caches(job: CompileJob) -> None:
    """Build the run's model and compile its training and evaluation graphs on dummy batches (the child's work)."""
    spec = load_spec(job.spec)
    settings = RunSettings(**{**job.settings, "device": torch.device(job.settings["device"])})
    tasks = spec.build_tasks()
    for task, state in zip(tasks, job.task_states):
        task.load_state_dict(state)
    model = model_for_settings(spec, tasks, settings)
    weighting = spec.build_weighting(tasks).to(settings.device)
    aug = spec.spec.augment
    augment = DeviceAugment(settings.device, flip=aug.flip, translate=aug.translate, color_jitter=aug.color_jitter,
                            seed=0, channels_last=settings.channels_last)
    size = spec.spec.image_size

    def batch(rows: int, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = torch.zeros(rows, 3, size, size, dtype=torch.uint8, device=settings.device)
        return augment(pixels, train=train), torch.zeros(rows, len(tasks), device=settings.device)

    started = time.perf_counter()
    model.train()
    forward_losses = make_forward_losses(model, tasks, settings, weighting.needs_features, compile=True)
    if settings.cuda_graphs:
        torch.compiler.cudagraph_mark_step_begin()
    losses, _ = forward_losses(*batch(job.train_batch, train=True))
    losses.float().sum().backward()
    print(f"training graphs compiled in {time.perf_counter() - started:.1f}s", flush=True)

    started = time.perf_counter()
    model.eval()
    forward = compile_static(model, settings)
    images, _ = batch(job.eval_batch, train=False)
    with torch.no_grad(), settings.autocast():
        if settings.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        forward(images)
    if settings.device.type == "cuda":
        torch.cuda.synchronize(settings.device)
    print(f"evaluation graph compiled in {time.perf_counter() - started:.1f}s", flush=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m hydranet.core.background_compile JOB.json`: what the run starts; not a user command."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m hydranet.core.background_compile JOB.json (started by hydranet train)", file=sys.stderr)
        return 2
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    warm_caches(CompileJob.read(Path(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
