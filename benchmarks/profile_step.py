"""Where a training step's time goes: torch.profiler over one steady-state epoch.

    python benchmarks/profile_step.py --count 4096 --size 32 --batch-size 512

Builds the same Trainer `hydranet train` uses, runs two epochs to get past
compilation and CUDA-graph recording, then profiles a third and prints the
operators by device time, the wall time per step, and how much of it the
device was busy (the rest is launch and Python overhead).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import yaml
from torch.profiler import ProfilerActivity, profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4096)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--compile-mode", default="auto")
    parser.add_argument("--set", dest="train_keys", action="append", default=[],
                        help="extra train key=value (YAML value), e.g. --set channels_last=true")
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()

    from hydranet.core.engine import Trainer
    from hydranet.core.spec import load_spec
    from hydranet.plugins.datasets.synthetic import default_root, write_synthetic

    root = write_synthetic(default_root(args.count, 200, 0), args.count, 200, 0, progress=False)
    spec = load_spec({
        "backbone": {"name": args.backbone}, "image_size": args.size, "tasks": ["age", "gender", "ethnicity"],
        "data": {"name": "utkface", "root": str(root), "val_fraction": 0.1},
        "augment": {"flip": True, "translate": 0.06},
        "train": {"epochs": 3, "batch_size": args.batch_size, "compile_mode": args.compile_mode,
                  **{key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.train_keys)}},
    })
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(spec, out_dir=out, progress=False, echo=False)
        trainer._setup()
        for epoch in (1, 2):
            started = time.perf_counter()
            trainer._train_epoch(epoch, trainer.data.train_index)
            print(f"warm-up epoch {epoch}: {time.perf_counter() - started:.3f}s")
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        with profile(activities=activities) as prof:
            started = time.perf_counter()
            trainer._train_epoch(3, trainer.data.train_index)
            wall = time.perf_counter() - started
    steps = trainer.steps_per_epoch
    sort = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=args.rows))
    if torch.cuda.is_available():
        busy = sum(e.self_device_time_total for e in prof.key_averages()) / 1e6
        print(f"device busy {busy:.4f}s of {wall:.4f}s wall ({100 * busy / wall:.0f}%)")
    print(f"{steps} steps, {1000 * wall / steps:.3f} ms/step, {trainer.timings['train_images'] / wall:,.0f} img/s, "
          f"{trainer.settings.describe()}")


if __name__ == "__main__":
    main()
