"""Where a run's start goes before its first step: cProfile over the setup (data, model, optimizer, step).

    python benchmarks/profile_setup.py --root /tmp/utk-23708 --size 32 --batch-size 512 [--out setup.txt]

Runs `hydranet.train` on the folder with the speed benchmark's spec
(`speed.hydranet_spec`: compiled on CUDA, as `auto` says) and profiles `RunSetup._setup` alone: the part of
the start-up `timings["setup_parts"]` splits into before_data, data, model
and step. The first step itself (compiling, recording the CUDA graph) is not
profiled; the speed benchmark times it. Run it twice to see a warm start:
the second run finds the decode cache. Prints the functions by cumulative
and by own time, and stops the run once setup is done.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path


class SetupDone(Exception):
    """Raised after the profiled setup, to end the run before its first step."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="a UTKFace-format folder (speed.py's synthetic one, say)")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--out", default=None, help="also write the report here")
    args = parser.parse_args()

    import hydranet
    import hydranet.core.run_setup as run_setup
    from speed import hydranet_spec  # beside this script

    setup = run_setup.RunSetup._setup
    report = io.StringIO()

    def profiled(trainer) -> None:
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        try:
            setup(trainer)
        finally:
            profiler.disable()
        parts = ", ".join(f"{name} {seconds:.2f}" for name, seconds in trainer.timings["setup_parts"].items())
        print(f"setup {time.perf_counter() - started:.2f} s in _setup ({parts}); "
              f"{trainer.settings.describe()}; decode cache {'hit' if trainer.timings['cache_hit'] else 'miss'}",
              file=report)
        for order in ("cumulative", "tottime"):
            print(f"\n--- by {order}", file=report)
            pstats.Stats(profiler, stream=report).sort_stats(order).print_stats(args.rows)
        raise SetupDone

    run_setup.RunSetup._setup = profiled
    args.epochs = 1
    spec = hydranet_spec(args, Path(args.root), args.device, "auto")  # the speed benchmark's spec
    with tempfile.TemporaryDirectory(prefix="hydranet-profile-setup-") as out_dir:
        try:
            hydranet.train(spec, out_dir=out_dir, progress=False, echo=False)
        except SetupDone:
            pass
    text = report.getvalue()
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    sys.exit(0 if text else 1)


if __name__ == "__main__":
    main()
