"""Run by tests/test_distributed.py under torchrun: train one spec per case on every rank, save what each rank holds.

Usage: python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_worker.py CASES.json OUT
       python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_worker.py signals OUT

CASES.json is a list of {"label": ..., "spec": {...}}. For each, every rank
trains the spec with the same engine `hydranet train` uses and writes
OUT/<label>.rank<R>.pt with its model and weighting state, so the test can
compare the ranks with each other and with a one-process run. The process
group is initialised here once, so the engine borrows it instead of creating
(and destroying) one per case.

With `signals` for CASES.json, every rank instead takes signals as a training run does
(`hydranet.core.interrupts`) during a step that never ends, so only "stop at
once" ends it; it writes OUT/rank<R>.log: the lines the run would log, then
"stopped at once".
"""

from __future__ import annotations

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


def main() -> None:
    if sys.argv[1] == "signals":
        take_signals(Path(sys.argv[2]))
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
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
