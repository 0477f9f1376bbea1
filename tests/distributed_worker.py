"""Run by tests/test_distributed.py under torchrun: train one spec per case on every rank, save what each rank holds.

Usage: python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_worker.py CASES.json OUT

CASES.json is a list of {"label": ..., "spec": {...}}. For each, every rank
trains the spec with the same engine `hydranet train` uses and writes
OUT/<label>.rank<R>.pt with its model and weighting state, so the test can
compare the ranks with each other and with a one-process run. The process
group is initialised here once, so the engine borrows it instead of creating
(and destroying) one per case.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch


def main() -> None:
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
