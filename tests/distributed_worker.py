"""Run by tests/test_distributed.py under torchrun: train one spec per case on every rank, save what each rank holds.

Usage: python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_worker.py CASES.json OUT
       python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_worker.py consistency SPEC.json OUT
       python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_worker.py signals OUT

CASES.json is a list of {"label": ..., "spec": {...}}. For each, every rank
trains the spec with the same engine `hydranet train` uses and writes
OUT/<label>.rank<R>.pt with its model and weighting state, so the test can
compare the ranks with each other and with a one-process run. The process
group is initialised here once, so the engine borrows it instead of creating
(and destroying) one per case.

With `consistency SPEC.json OUT`, every rank checks what it must agree on or
keep as its own (tests/test_distributed_consistency.py) and writes
OUT/consistency.rank<R>.pt: the data placement it chose when the ranks'
memory differs (rank 1 has almost none), the random state it saved (each rank
draws differently: rank R draws R extra numbers first) and the one it resumed
with.

With `signals` for CASES.json, every rank instead takes signals as a training run does
(`hydranet.core.interrupts`) during a step that never ends, so only "stop at
once" ends it; it writes OUT/rank<R>.log: the lines the run would log, then
"stopped at once".
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path

import torch


class SignalledRun:
    """What `interrupt_requests` reads and writes of a Trainer; its log is a file."""

    def __init__(self, log: Path):
        from hydranet.core.distributed import Distributed

        self.stop_signal, self.stop_requested_at, self.validating = None, 0.0, False
        self.dist = Distributed.single()
        self.run_folder, self.path = self, log

    def log(self, line: str) -> None:
        with open(self.path, "a") as handle:
            handle.write(line + "\n")


def take_signals(out: Path) -> None:
    from hydranet.core.interrupts import interrupt_requests

    run = SignalledRun(out / f"rank{os.environ['RANK']}.log")
    with interrupt_requests(run):
        run.log("ready")
        try:
            while True:
                time.sleep(0.01)
        except KeyboardInterrupt:
            run.log("stopped at once")
            sys.exit(130)


def placement_with_little_memory_on_rank_one(spec: dict, out: Path, rank: int) -> str:
    """The placement this rank's run chooses (set-up only) when rank 1 has almost no host memory."""
    from unittest import mock

    from hydranet.core import batches
    from hydranet.core.engine import Trainer
    from hydranet.core.spec import load_spec

    memory = 1 << 40 if rank == 0 else 1 << 10
    with mock.patch.object(batches, "host_memory_bytes", lambda: memory):
        trainer = Trainer(load_spec(spec), out_dir=out / "placement", progress=False, echo=False)
        try:
            trainer._setup()
            return trainer.source.placement
        finally:
            trainer.run_folder.close()


def generator_states_across_a_resume(spec: dict, out: Path, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's random state this rank had when its last checkpoint was saved, and the one it resumed with.

    Rank R draws R extra numbers after set-up, so the ranks' states differ, as
    a GPU's generator of each rank does in a real run.
    """
    from unittest import mock

    from hydranet.core import run_checkpoints
    from hydranet.core.checkpoint import read_checkpoint
    from hydranet.core.engine import Trainer
    from hydranet.core.spec import load_spec

    saved, restored = [], []
    setup, save, restore = Trainer._setup, Trainer._save, run_checkpoints.restore_generators

    def setup_then_draw(self) -> None:
        setup(self)
        torch.rand(rank)

    def record_then_save(self, *args, **kwargs) -> None:
        saved.append(torch.get_rng_state())
        save(self, *args, **kwargs)

    def restore_then_record(*args, **kwargs) -> None:
        restore(*args, **kwargs)
        restored.append(torch.get_rng_state())

    run = out / "resumed"
    with mock.patch.object(Trainer, "_setup", setup_then_draw), mock.patch.object(Trainer, "_save", record_then_save), \
            mock.patch.object(run_checkpoints, "restore_generators", restore_then_record):
        Trainer(load_spec({**spec, "train": {**spec["train"], "epochs": 1}}), out_dir=run, progress=False,
                echo=False).run()
        Trainer(load_spec(spec), out_dir=run, progress=False, echo=False,
                resume_state=read_checkpoint(run / "last.pt")).run()
    return saved[0], restored[0]


def check_consistency(spec_file: Path, out: Path) -> None:
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    spec = json.loads(spec_file.read_text())
    placement = placement_with_little_memory_on_rank_one(spec, out, rank)
    saved, restored = generator_states_across_a_resume(spec, out, rank)
    torch.save({"placement": placement, "saved": saved, "restored": restored}, out / f"consistency.rank{rank}.pt")
    end_group()


def end_group() -> None:
    """Destroy the process group now and collect: a group still held by a reference cycle through a finished
    Trainer would be destroyed at interpreter shutdown, where gloo's threads can abort the rank ("terminate
    called without an active exception", exit -6), as `Distributed.close` explains for the engine's own group."""
    torch.distributed.destroy_process_group()
    gc.collect()


def main() -> None:
    if sys.argv[1] == "signals":
        take_signals(Path(sys.argv[2]))
        return
    if sys.argv[1] == "consistency":
        check_consistency(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    cases_file, out = Path(sys.argv[1]), Path(sys.argv[2])
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    from hydranet.core.engine import Trainer
    from hydranet.core.spec import load_spec

    for case in json.loads(cases_file.read_text()):
        trainer = Trainer(load_spec(case["spec"]), out_dir=out / case["label"], progress=False, echo=False)
        trainer.run()
        torch.save({"model": trainer.model.state_dict(), "weighting": trainer.weighting.state_dict(),
                    "world_size": int(os.environ["WORLD_SIZE"])},
                   out / f"{case['label']}.rank{rank}.pt")
    end_group()


if __name__ == "__main__":
    main()
