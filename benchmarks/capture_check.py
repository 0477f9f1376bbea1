"""Does the recorded step (`cuda_graphs: step`, auto's choice on CUDA) train as the unrecorded one does?

    python benchmarks/capture_check.py [--epochs 2] [--variants demo,dwa,...] [--resume]

For the demo spec and common variants of it, trains twice: with the default
(the step recorded as one CUDA graph on a GPU) and with `train.cuda_graphs=off`,
and prints for each whether the step was recorded (or why not, from the run's
log), how closely the first replay matched an eager step, and both runs' final
validation loss, which should agree to bf16's run-to-run noise. `--resume`
also stops a recorded run in epoch 2 and resumes it from last.pt, to end where
an uninterrupted run ends. Made for the GPU machine (`gpu_smoke.sh`'s
`capture` part); on a CPU nothing is recorded and both columns are one path.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

#: variant -> --set overrides on the demo spec (a task with dropout draws random numbers inside the graph)
VARIANTS: dict[str, list[str]] = {
    "demo": [], "dwa": ["weighting=dwa"], "famo": ["weighting=famo"], "gls": ["weighting=gls"],
    "static": ["weighting=static"], "sgd": ["train.optimizer=sgd"], "nosched": ["train.scheduler=none"],
    "host": ["data.placement=host"], "fp32": ["train.precision=fp32"], "dropout": [],
}
RECORDED = "the training step is recorded as one CUDA graph"


def demo_spec(variant: str) -> dict[str, Any]:
    from hydranet.core.spec_files import builtin_spec_path

    spec = yaml.safe_load(builtin_spec_path("demo").read_text())
    if variant == "dropout":
        spec["tasks"] = [{"name": "age", "dropout": 0.3}, *spec["tasks"][1:]]
    return spec


def train(spec: dict[str, Any], overrides: list[str], out_dir: Path) -> tuple[float, str]:
    """One run; its final validation loss and what its log says about the recorded step."""
    import hydranet

    result = hydranet.train(spec, overrides=overrides, out_dir=out_dir, progress=False, echo=False)
    log = (out_dir / "train.log").read_text()
    said = [line.split("] ", 1)[-1] for line in log.splitlines()
            if RECORDED in line or "CUDA graph" in line and ("failed" in line or "not recorded" in line
                                                             or "not possible" in line)]
    return result.final.total_loss, "; ".join(said) or "nothing recorded"


def resume_check(epochs: int, root: Path) -> str:
    """A recorded run stopped in epoch 2 at step 5 and resumed from last.pt, against an uninterrupted run."""
    import hydranet
    from hydranet.core.engine import Trainer
    from hydranet.core.errors import TrainingInterrupted

    original = Trainer._stop_requested
    Trainer._stop_requested = lambda self, done: (self.progress_state.epoch == 2 and done == 5) or original(self, done)
    try:
        hydranet.train(overrides=[f"train.epochs={epochs}"], out_dir=root / "cut", progress=False, echo=False)
    except TrainingInterrupted:
        pass
    finally:
        Trainer._stop_requested = original
    resumed = hydranet.train(resume=root / "cut", progress=False, echo=False)
    whole = hydranet.train(overrides=[f"train.epochs={epochs}"], out_dir=root / "whole", progress=False, echo=False)
    return f"resumed {resumed.final.total_loss:.4f} / uninterrupted {whole.final.total_loss:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--resume", action="store_true", help="also stop a recorded run and resume it")
    args = parser.parse_args()
    unknown = sorted(set(args.variants.split(",")) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    with tempfile.TemporaryDirectory(prefix="hydranet-capture-check-") as folder:
        root = Path(folder)
        print("| variant | final val loss, default | with cuda_graphs=off | the default's log |")
        print("|---|---|---|---|")
        for variant in args.variants.split(","):
            sets = [*VARIANTS[variant], f"train.epochs={args.epochs}"]
            recorded, said = train(demo_spec(variant), sets, root / variant)
            plain, _ = train(demo_spec(variant), [*sets, "train.cuda_graphs=off"], root / f"{variant}-off")
            print(f"| {variant} | {recorded:.4f} | {plain:.4f} | {re.sub(r'[|]', '/', said)} |", flush=True)
        if args.resume:
            print(resume_check(max(args.epochs, 3), root))


if __name__ == "__main__":
    main()
