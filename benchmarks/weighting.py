"""Cost of each weighting strategy: time per training step relative to `sum`, same model and batch.

    python benchmarks/weighting.py                                  # CPU: resnet18, 32 px, batch 64
    python benchmarks/weighting.py --backbone tiny --steps 40       # CPU, quicker and noisier
    python benchmarks/weighting.py --device cuda --json gpu.json    # GPU: resnet18, 32 px, batch 256
    python benchmarks/weighting.py --strategies dwa,pcgrad,mgda

Every strategy in the registry is timed (strategies added later are picked up
without editing this file): loss-based ones once, gradient-based ones
(`GradientWeighting` subclasses) once per gradient space their parameters
accept (`grad_space: features`, then `params`). Each variant is a real
`Trainer` set up as `hydranet train` would (device, precision, compile,
fused optimizer, split forward for strategies that read the shared
representation), and a step is what `Trainer._train_epoch` does per batch
minus the data gathering: forward and losses, `weighting.backward`,
optimizer step, zero_grad. All variants train on one fixed batch with the
same initial weights.

Timing: after warm-up steps (compilation, CUDA-graph recording), each
variant runs `--repeats` blocks of steps, interleaved across variants so a
drifting machine load hits all of them alike. A block is timed with one
device synchronisation at its end, never per step, so a strategy that
synchronises with the host inside its step pays for it here as it would in
training. ms/step is the median block; `--stat min` compares the best
blocks instead, which other processes can only slow down, never speed up
(the better choice on a shared, busy machine). The spread (min-max over
blocks) and a control row, a second `sum` Trainer timed like the others,
show how much of a difference is noise.

Targets (issue 4): loss-based at most 1.05x `sum`; gradient-based on the
shared representation at most 1.3x; on the shared parameters at most K + 0.5
(K = number of tasks, 3 here).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TASKS = ("age", "gender", "ethnicity")
BASELINE = "sum"
LOSS_TARGET = 1.05
FEATURES_TARGET = 1.3
PARAMS_MARGIN = 0.5
STAT_WORDS = {"median": "ratio of median blocks", "min": "ratio of best (fastest) blocks"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu; default), cpu, cuda, ...")
    parser.add_argument("--backbone", default="resnet18", help="backbone name (default: %(default)s; tiny is quicker)")
    parser.add_argument("--size", type=int, default=32, help="image size in px (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default: 256 on CUDA, 64 elsewhere)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per variant, split into --repeats blocks (default: 100 on CUDA, 30 elsewhere)")
    parser.add_argument("--repeats", type=int, default=10, help="timed blocks per variant (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 10 on CUDA, 3 elsewhere)")
    parser.add_argument("--strategies", default=None,
                        help="comma list of weighting names (default: every registered one); sum is always timed")
    parser.add_argument("--spaces", default="features,params",
                        help="gradient spaces to time for gradient-based strategies (default: %(default)s)")
    parser.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                        help="torch.compile as the spec's train.compile (default: auto = on for CUDA)")
    parser.add_argument("--stat", choices=["median", "min"], default="median",
                        help="block statistic the ratios use: median (default), or min, the best block, which "
                             "other processes cannot slow down (use it on a shared, busy machine)")
    parser.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write every figure to this file")
    args = parser.parse_args(argv)
    for name in ("size", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    for name in ("batch_size", "steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup is not None and args.warmup < 0:
        parser.error("--warmup must be at least 0")
    args.spaces = [s.strip() for s in args.spaces.split(",") if s.strip()]
    if not set(args.spaces) <= {"features", "params"} or not args.spaces:
        parser.error("--spaces takes features, params or both")
    return args


# ---------------------------------------------------------------- variants


@dataclass
class Variant:
    """One strategy in one gradient space, and what was measured for it."""

    name: str
    kind: str  # "loss" or "gradient"
    space: str | None  # None: loss-based (no gradient space)
    target: float | None = None
    block_ms: list[float] = field(default_factory=list)
    error: str | None = None
    control: bool = False  # a second `sum`, timed like the others: its ratio is the measurement noise
    trainer: Any = field(default=None, repr=False)

    @property
    def label(self) -> str:
        if self.control:
            return f"{self.name} (control)"
        return self.name if self.space is None else f"{self.name} [{self.space}]"

    def value(self, stat: str) -> float:
        """ms/step: the median block, or the best (min) one; NaN when nothing was timed."""
        if not self.block_ms:
            return math.nan
        return min(self.block_ms) if stat == "min" else statistics.median(self.block_ms)


def _accepts_space(entry: Any, space: str) -> bool:
    params = entry.params
    if params is None or "grad_space" not in params.model_fields:
        return False
    try:
        params.model_validate({"grad_space": space})
    except Exception:  # pydantic's ValidationError: the strategy does not work in this space
        return False
    return True


def plan_variants(args: argparse.Namespace, num_tasks: int) -> list[Variant]:
    """sum, a control sum, then each chosen strategy (each valid gradient space for gradient-based ones)."""
    from hydranet.core.plugins import default_components
    from hydranet.core.weighting import GradientWeighting

    registry = default_components().weightings
    names = registry.names() if args.strategies is None else [
        n.strip() for n in args.strategies.split(",") if n.strip()]
    for name in names:
        registry.get(name)  # unknown names: UnknownNameError with a did-you-mean
    ordered = [BASELINE] + [n for n in names if n != BASELINE]
    variants = [Variant(BASELINE, "loss", None, control=True)]
    for name in ordered:
        entry = registry.get(name)
        factory = entry.factory
        if isinstance(factory, type) and issubclass(factory, GradientWeighting):
            spaces = [s for s in args.spaces if _accepts_space(entry, s)]
            if not spaces:
                variants.append(Variant(name, "gradient", None, error="accepts none of the spaces "
                                        + ", ".join(args.spaces)))
            for space in spaces:
                target = FEATURES_TARGET if space == "features" else num_tasks + PARAMS_MARGIN
                variants.append(Variant(name, "gradient", space, target))
        else:
            variants.append(Variant(name, "loss", None, None if name == BASELINE else LOSS_TARGET))
    variants.insert(1, variants.pop(0))  # the control right after the baseline
    return variants


def spec_for(args: argparse.Namespace, root: Path, device: str, variant: Variant) -> Any:
    from hydranet.core.spec import load_spec

    weighting: dict[str, Any] = {"name": variant.name}
    if variant.space is not None:
        weighting["grad_space"] = variant.space
    compile_ = {"auto": "auto", "on": True, "off": False}[args.compile]
    return load_spec({
        "backbone": {"name": args.backbone}, "image_size": args.size, "tasks": list(TASKS),
        "data": {"name": "utkface", "root": str(root), "val_fraction": 0.1},
        "augment": {"flip": False, "translate": 0},
        "weighting": weighting,
        "train": {"epochs": 1, "batch_size": args.batch_size, "device": device, "compile": compile_,
                  "scheduler": "none", "seed": 0},
    })


def setup_trainer(args: argparse.Namespace, root: Path, device: str, variant: Variant, out: Path) -> Any:
    """A Trainer set up as `hydranet train` would (same seed: same initial weights for every variant)."""
    from hydranet.core.engine import Trainer

    trainer = Trainer(spec_for(args, root, device, variant), out_dir=out, progress=False, echo=False)
    trainer._setup()
    return trainer


def fixed_batch(trainer: Any, batch_size: int) -> tuple[Any, Any]:
    """The first training batch, normalised (no random augmentation), shared by every variant."""
    order = trainer.data.train_index[:batch_size]
    images, index = next(iter(trainer.source.batches(order, batch_size, drop_last=True)))
    return trainer.augment(images, train=False), trainer.targets[index]


def train_step(trainer: Any, x: Any, y: Any) -> None:
    """What `Trainer._train_epoch` does for one batch, minus gathering it and the bookkeeping."""
    import torch

    if trainer.settings.cuda_graphs:
        torch.compiler.cudagraph_mark_step_begin()
    losses, features = trainer.train_step.forward_losses(x, y)
    trainer.weighting.backward(losses, trainer._step_context(features))
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)


def synchronizer(device: str):
    import torch

    if device.startswith("cuda"):
        return lambda: torch.cuda.synchronize()
    if device.startswith("mps"):
        return lambda: torch.mps.synchronize()
    return lambda: None


# ---------------------------------------------------------------- report


def ratio(variant: Variant, base: Variant, stat: str) -> float:
    """variant / sum, both by the same statistic of their blocks (median, or best = min)."""
    mine, theirs = variant.value(stat), base.value(stat)
    return mine / theirs if theirs > 0 else math.nan


def verdict(variant: Variant, base: Variant, stat: str) -> str:
    if variant.error:
        return "error"
    if variant.control:
        return "control"
    if variant.target is None:
        return "baseline"
    r = ratio(variant, base, stat)
    return "n/a" if math.isnan(r) else ("pass" if r <= variant.target else "FAIL")


def markdown_table(variants: list[Variant], base: Variant, stat: str) -> str:
    lines = ["| strategy | type | grad space | ms/step (median) | best | spread (min-max) | vs sum | target | result |",
             "|---|---|---|---|---|---|---|---|---|"]
    for v in variants:
        target = "-" if v.target is None else f"<= {v.target:g}x"
        if v.error:
            lines.append(f"| {v.label} | {v.kind} | {v.space or '-'} | failed | | | | {target} | "
                         f"error: {v.error.splitlines()[0][:100]} |")
            continue
        spread = f"{min(v.block_ms):.1f}-{max(v.block_ms):.1f}" if v.block_ms else ""
        lines.append(" | ".join([
            f"| {v.label if v.control else v.name}", v.kind, v.space or "-", f"{v.value('median'):.2f}",
            f"{v.value('min'):.2f}", spread, f"{ratio(v, base, stat):.2f}x", target,
            verdict(v, base, stat) + " |"]))
    return "\n".join(lines)


def environment(device: str) -> dict[str, Any]:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "device": device,
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    from hydranet.core.device import pick_device
    from hydranet.core.errors import HydranetError
    from hydranet.plugins.datasets.synthetic import default_root, write_synthetic

    device = str(pick_device(args.device))
    cuda = device.startswith("cuda")
    args.batch_size = args.batch_size or (256 if cuda else 64)
    args.steps = args.steps or (100 if cuda else 30)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 3)
    per_block = max(1, args.steps // args.repeats)
    if args.compile != "off":
        # Every variant compiles the same engine functions for another model; past dynamo's default
        # limit of 8 recompilations it would silently fall back to eager and skew the later variants.
        import torch._dynamo.config as dynamo_config

        for name in ("cache_size_limit", "recompile_limit"):
            if hasattr(dynamo_config, name):
                setattr(dynamo_config, name, max(256, getattr(dynamo_config, name)))

    try:
        variants = plan_variants(args, len(TASKS))
    except HydranetError as error:
        sys.exit(f"error: {error}")
    count = max(128, 2 * args.batch_size)  # 10% held out: the training split still holds one full batch
    root = write_synthetic(default_root(count, 64, 0), count, 64, 0, progress=False)
    sync = synchronizer(device)

    settings = ""
    with tempfile.TemporaryDirectory(prefix="hydranet-weighting-bench-") as tmp:
        batch = None
        for i, v in enumerate(variants):
            if v.error:
                continue
            print(f"setting up {v.label} ...", file=sys.stderr, flush=True)
            try:
                v.trainer = setup_trainer(args, root, device, v, Path(tmp) / f"{i}-{v.name}")
                if batch is None:
                    batch = fixed_batch(v.trainer, args.batch_size)
                    settings = v.trainer.settings.describe()
                for _ in range(args.warmup):
                    train_step(v.trainer, *batch)
                sync()
            except Exception as error:  # one broken strategy must not hide the others' figures
                v.error, v.trainer = f"{type(error).__name__}: {error}", None
                print(f"  {v.label} failed: {v.error}", file=sys.stderr)
        for block in range(args.repeats):
            print(f"timing block {block + 1}/{args.repeats} ...", file=sys.stderr, flush=True)
            for v in variants:
                if v.trainer is None:
                    continue
                try:
                    sync()
                    started = time.perf_counter()
                    for _ in range(per_block):
                        train_step(v.trainer, *batch)
                    sync()
                    v.block_ms.append(1000 * (time.perf_counter() - started) / per_block)
                except Exception as error:
                    v.error, v.trainer = f"{type(error).__name__}: {error}", None
        for v in variants:
            v.trainer = None
    base = next(v for v in variants if v.name == BASELINE and not v.control)
    control = next(v for v in variants if v.control)
    stat = args.stat
    table = markdown_table(variants, base, stat)
    print(f"\n{args.backbone} at {args.size} px, batch {args.batch_size}, {len(TASKS)} tasks on {device} "
          f"({torch.get_num_threads()} threads); {args.repeats} blocks x {per_block} steps per variant after "
          f"{args.warmup} warm-up steps; vs sum = {STAT_WORDS[stat]}\n{settings}\n")
    print(table)
    verdicts = {v.label: verdict(v, base, stat) for v in variants}
    failed = [label for label, word in verdicts.items() if word == "FAIL"]
    errors = [label for label, word in verdicts.items() if word == "error"]
    print(f"\n{list(verdicts.values()).count('pass')} pass, {len(failed)} over target"
          + (f" ({', '.join(failed)})" if failed else "") + f", {len(errors)} failed to run"
          + (f" ({', '.join(errors)})" if errors else ""))
    control_ratio = ratio(control, base, stat)
    if not math.isnan(control_ratio):
        print(f"noise: a second, identical sum Trainer timed the same way came out at {control_ratio:.2f}x; "
              "a ratio that close to its target is not a clear pass or fail on this machine")
    report = {
        "config": {"backbone": args.backbone, "size": args.size, "batch_size": args.batch_size,
                   "steps": per_block * args.repeats, "repeats": args.repeats, "warmup": args.warmup,
                   "compile": args.compile, "stat": stat, "tasks": list(TASKS), "spaces": args.spaces,
                   "settings": settings},
        "environment": environment(device),
        "baseline_ms": base.value(stat),
        "variants": [{**{k: val for k, val in asdict(v).items() if k != "trainer"}, "label": v.label,
                      "ms": v.value("median"), "best_ms": v.value("min"), "ratio": ratio(v, base, stat),
                      "verdict": verdicts[v.label]}
                     for v in variants],
        "table": table,
    }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(_finite(report), indent=2) + "\n")
    return report


def _finite(value: Any) -> Any:
    """NaN as None: strict JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


if __name__ == "__main__":
    main()
