"""Speed benchmark: the article's training loop against `hydranet.train` on the same files.

    python benchmarks/speed.py                      # CPU: 2,000 images; GPU: 23,708 (UTKFace's size)
    python benchmarks/speed.py --warm --json out.json

Both loops read the same UTKFace-format folder (synthetic faces written once
into the hydranet cache folder, or `--root`), build the same backbone through
hydranet's registry, and train at the same image size and batch size; the
article's loop is timed first, then hydranet through its public API.

Every hydranet run happens in a child process with fresh, private decode and
compiler caches, so the first run of each variant is honestly cold (nothing
left over from an earlier benchmark or from the previous variant in the same
process) and a crash inside one compile mode cannot take the others down;
`--warm` runs it a second time on the same caches, which is what a user's
next run sees.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run as a script or imported by the tests: article_loop sits beside us
    sys.path.insert(0, str(HERE))

UTKFACE_COUNT = 23708
CPU_COUNT = 2000
VAL_FRACTION = 0.1
SYNTHETIC_SEED = 0


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the article's training loop and hydranet's on the same UTKFace-format images.")
    parser.add_argument("--count", type=int, default=None,
                        help=f"images to write or use (default: {CPU_COUNT} on CPU, {UTKFACE_COUNT} on CUDA)")
    parser.add_argument("--size", type=int, default=32, help="training image size in px (default: %(default)s)")
    parser.add_argument("--image-size-on-disk", type=int, default=200, help="side of the written JPEGs in px (default: %(default)s, as UTKFace)")
    parser.add_argument("--batch-size", type=int, default=64, help="both loops' batch size (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per loop (default: %(default)s); s/epoch is the median of those after the first")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu; the default), cpu, cuda, ...")
    parser.add_argument("--backbone", default="resnet18", help="a hydranet backbone name: resnet18 (default), tiny, ...")
    parser.add_argument("--root", default=None,
                        help="use this UTKFace-format folder instead of writing synthetic faces")
    parser.add_argument("--baseline-workers", default="0",
                        help="comma list of DataLoader worker counts for the article loop, e.g. 0,8 (default: %(default)s)")
    parser.add_argument("--baseline-max-steps", type=int, default=None,
                        help="time only the first N steps of each article-loop epoch and extrapolate (labelled)")
    parser.add_argument("--skip-baseline", action="store_true", help="run hydranet only")
    parser.add_argument("--compile-modes", default="auto",
                        help="hydranet variants, comma list of auto, off, default, reduce-overhead, ... "
                             "(auto: the spec's default for the device), or train keys joined by +, "
                             "e.g. cuda_graphs=step+compile=false")
    parser.add_argument("--warm", action="store_true",
                        help="run each hydranet variant twice; the second run hits the decode and compiler caches")
    parser.add_argument("--in-process", action="store_true",
                        help="run hydranet in this process (no cache isolation; for debugging)")
    parser.add_argument("--progress", action="store_true", help="show the loops' progress bars")
    parser.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write every figure here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: spec JSON of one hydranet run
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("size", "image_size_on_disk", "batch_size", "epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.count is not None and args.count < 2:
        parser.error("--count must be at least 2")
    try:
        args.baseline_workers = [int(w) for w in args.baseline_workers.split(",") if w.strip()]
    except ValueError:
        parser.error("--baseline-workers takes a comma list of integers, e.g. 0,8")
    args.compile_modes = [m.strip() for m in args.compile_modes.split(",") if m.strip()] or ["auto"]
    return args


# ---------------------------------------------------------------- data


def prepare_root(args: argparse.Namespace) -> Path:
    """The folder both loops read: `--root`, or synthetic faces written once into the cache folder."""
    if args.root:
        return Path(args.root).expanduser()
    from hydranet.plugins.datasets.synthetic import default_root, write_synthetic

    root = default_root(args.count, args.image_size_on_disk, SYNTHETIC_SEED)
    return write_synthetic(root, args.count, args.image_size_on_disk, SYNTHETIC_SEED, progress=args.progress or None)


# ---------------------------------------------------------------- the article's loop


def run_baselines(args: argparse.Namespace, root: Path, device: str) -> list[dict[str, Any]]:
    from article_loop import run_article_loop

    loops = []
    for workers in args.baseline_workers:
        print(f"article loop, {workers} DataLoader workers ...", file=sys.stderr, flush=True)
        figures = run_article_loop(root, args.size, args.batch_size, args.epochs, device, workers=workers,
                                   limit=args.baseline_max_steps, backbone=args.backbone,
                                   val_fraction=VAL_FRACTION, progress=args.progress)
        name = "article loop (PIL per item, backbone per head, fp32)"
        if workers:
            name = f"article loop, {workers} DataLoader workers"
        loops.append({"kind": "article", "name": name, **figures})
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # hand the baseline's memory back before hydranet's child processes start
    return loops


# ---------------------------------------------------------------- hydranet


def compile_settings(mode: str) -> dict[str, Any]:
    """A `--compile-modes` word as `train` keys: auto = the spec's defaults, off, or a torch.compile mode."""
    from hydranet.core.spec import TrainSection

    word = mode.lower()
    if "=" in word:  # train keys themselves: cuda_graphs=step+compile=false
        from hydranet.core import yaml12  # as --set reads values: off stays a word

        return {key.strip(): yaml12.load(value) for key, value in (pair.split("=", 1) for pair in mode.split("+"))}
    if word == "auto":
        return {}
    if word in ("off", "false", "none", "no"):
        return {"compile": False}
    if word in ("on", "true"):
        return {"compile": True}
    if "compile_mode" in TrainSection.model_fields:
        return {"compile": True, "compile_mode": mode}  # the spec validates the mode's name
    if word == "default":  # an engine without compile modes: plain torch.compile is its one mode
        return {"compile": True}
    return {"compile": True, "compile_mode": mode}  # rejected by the spec, and reported as a failed run


def hydranet_spec(args: argparse.Namespace, root: Path, device: str, mode: str) -> dict[str, Any]:
    """The article's setup in spec form: same backbone, size, batch, losses (sum), SGD, no augmentation."""
    from hydranet.core.plugins import default_components

    backbone: dict[str, Any] = {"name": args.backbone}
    params = default_components().backbones.get(args.backbone).params
    if params is not None and "pretrained" in params.model_fields:
        backbone["pretrained"] = False
    train: dict[str, Any] = {"epochs": args.epochs, "batch_size": args.batch_size, "optimizer": "sgd",
                             "lr": 1e-4, "momentum": 0.09, "weight_decay": 0.0, "scheduler": "none",
                             "device": device}
    train.update(compile_settings(mode))
    return {
        "backbone": backbone,
        "image_size": args.size,
        "tasks": ["age", "gender", "ethnicity"],
        "data": {"name": "utkface", "root": str(root), "val_fraction": VAL_FRACTION},
        "weighting": "sum",
        "augment": {"flip": False, "translate": 0},
        "train": train,
    }


def train_and_time(spec: dict[str, Any]) -> dict[str, Any]:
    """One `hydranet.train` run and what it measured (`RunResult.timings`, with fallbacks until it exists)."""
    import hydranet

    with tempfile.TemporaryDirectory(prefix="hydranet-speed-run-") as out_dir:
        started = time.perf_counter()
        result = hydranet.train(spec, out_dir=out_dir, progress=False, echo=False)
        total = time.perf_counter() - started
        log = Path(out_dir, "train.log").read_text() if Path(out_dir, "train.log").is_file() else ""
    timings = dict(getattr(result, "timings", None) or {})
    figures: dict[str, Any] = {"total_seconds": total, "settings": result.settings.describe(),
                               "final_metrics": result.final.metrics,
                               # fallbacks and warnings (a CUDA graph that could not be recorded, ...)
                               "log_notes": [line for line in log.splitlines()
                                             if "warning" in line or "not possible" in line]}
    if timings.get("epoch_train_seconds"):
        figures["epoch_seconds"] = list(timings["epoch_train_seconds"])
        figures["epoch_source"] = "RunResult.timings (training steps only)"
    else:  # until the engine reports training-only time: whole epochs, validation included
        figures["epoch_seconds"] = [float(row["seconds"]) for row in result.history]
        figures["epoch_source"] = "history seconds (validation included)"
    if timings.get("first_step_seconds") is not None:
        figures["first_step_seconds"] = float(timings["first_step_seconds"])
    else:  # setup only (data, model build); a compile in the first step is not in it
        figures["first_step_seconds"] = total - sum(float(row["seconds"]) for row in result.history)
        figures["first_step_estimated"] = True
    for key in ("data_seconds", "setup_seconds", "setup_parts", "compiled_from", "decode_seconds", "cache_hit", "placement", "epoch_val_seconds", "train_images"):
        if key in timings:
            figures[key] = timings[key]
    return figures


def finite(value: Any) -> Any:
    """NaN and infinities as None: strict JSON has no NaN, and other tools refuse files that carry one."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def run_child(spec_path: str, out_path: str) -> None:
    """Entry point of a child process: one hydranet run, figures written as JSON."""
    spec = json.loads(Path(spec_path).read_text())
    Path(out_path).write_text(json.dumps(finite(train_and_time(spec)), default=str))


def run_isolated(spec: dict[str, Any], caches: Path, in_process: bool) -> dict[str, Any]:
    """One hydranet run with its decode and compiler caches under `caches`."""
    env = {"HYDRANET_CACHE": str(caches / "hydranet"),
           "TORCHINDUCTOR_CACHE_DIR": str(caches / "inductor"),
           "TRITON_CACHE_DIR": str(caches / "triton")}
    if in_process:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            return train_and_time(spec)
        except Exception as error:  # reported like a failed child, so the other variants still run
            return {"error": f"hydranet run failed: {type(error).__name__}: {error}"}
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    spec_file, out_file = caches / "spec.json", caches / "figures.json"
    spec_file.write_text(json.dumps(spec))
    out_file.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_file), "--child-out", str(out_file)]
    done = subprocess.run(command, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0 or not out_file.is_file():
        tail = "\n".join(done.stdout.strip().splitlines()[-25:])
        return {"error": f"hydranet run failed (exit {done.returncode}):\n{tail}"}
    return json.loads(out_file.read_text())


def run_hydranet(args: argparse.Namespace, root: Path, device: str) -> list[dict[str, Any]]:
    loops = []
    for mode in args.compile_modes:
        spec = hydranet_spec(args, root, device, mode)
        with tempfile.TemporaryDirectory(prefix="hydranet-speed-caches-") as caches:
            for run, state in enumerate(("cold", "warm")[: 2 if args.warm else 1]):
                label = f"hydranet, {mode}" if "=" in mode else f"hydranet, compile {mode}"
                print(f"{label}, {state} caches ...", file=sys.stderr, flush=True)
                figures = run_isolated(spec, Path(caches), args.in_process)
                loops.append({"kind": "hydranet", "name": f"{label}, {state} caches",
                              "compile_mode": mode, "caches": state, "images_per_epoch": figures.pop("train_images", None),
                              **figures})
                if "error" in figures:
                    print(figures["error"], file=sys.stderr)
                    break
    return loops


# ---------------------------------------------------------------- report


def summarise(loops: list[dict[str, Any]]) -> None:
    """Add first-epoch and steady-state s/epoch, img/s and the ratio to the article's loop, in place."""
    for loop in loops:
        epochs = loop.get("epoch_seconds") or []
        if not epochs:
            continue
        loop["first_epoch_seconds"] = epochs[0]
        steady = epochs[1:] or epochs
        switch = loop.get("compiled_from")
        if switch and len(epochs) > switch["epoch"]:  # compiled in the background: the epochs after the switch
            steady = epochs[switch["epoch"]:]
        loop["seconds_per_epoch"] = statistics.median(steady)
        loop["images_per_second"] = loop["images_per_epoch"] / loop["seconds_per_epoch"]
    article = next((loop for loop in loops if loop["kind"] == "article" and "seconds_per_epoch" in loop), None)
    for loop in loops:
        if article is not None and "seconds_per_epoch" in loop:
            loop["ratio_vs_article"] = article["seconds_per_epoch"] / loop["seconds_per_epoch"]


def _num(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if abs(value) >= 1000 or digits == 0:
        return f"{value:,.0f}{suffix}"
    return f"{value:.{digits}f}{suffix}" if abs(value) < 100 else f"{value:.1f}{suffix}"


def _notes(loop: dict[str, Any]) -> str:
    notes = []
    if loop.get("extrapolated"):
        notes.append(f"extrapolated from {loop['timed_steps_per_epoch']} of {loop['steps_per_epoch']} steps")
    if loop.get("dropped_names"):
        notes.append(f"{loop['dropped_names']} 3-field names dropped")
    if loop["kind"] == "hydranet":
        if "settings" in loop:
            notes.append(loop["settings"])
        if loop.get("placement"):
            notes.append(f"images on {loop['placement']}")
        if "cache_hit" in loop:
            notes.append("decode cache hit" if loop["cache_hit"] else "decode cache miss")
        if loop.get("data_seconds") is not None:
            notes.append(f"data {_num(loop['data_seconds'])} s")
        if loop.get("decode_seconds") is not None:
            notes.append(f"decode {_num(loop['decode_seconds'])} s")
        if loop.get("setup_seconds") is not None and loop.get("first_step_seconds") is not None:
            # where a cold start goes: everything before the step loop, then the first step (compile, graphs)
            parts = loop.get("setup_parts") or {}
            split = f" ({', '.join(f'{name} {_num(seconds)}' for name, seconds in parts.items())})" if parts else ""
            notes.append(f"setup {_num(loop['setup_seconds'])} s{split}, "
                         f"first step {_num(loop['first_step_seconds'] - loop['setup_seconds'])} s")
        switch = loop.get("compiled_from")
        if switch:  # train.compile_in_background: when the compiled model took over, and what the switch cost
            notes.append(f"compiled from epoch {switch['epoch']} step {switch['step']}"
                         f"{' (background compile failed)' if switch.get('failed') else ''}, "
                         f"first compiled step {_num(switch.get('first_step_seconds', float('nan')))} s")
        if loop.get("first_step_estimated"):
            notes.append("before-first-step is setup only (engine timings missing)")
        if loop.get("epoch_source", "").startswith("history"):
            notes.append("s/epoch includes validation (engine timings missing)")
    return "; ".join(notes)


def markdown_table(loops: list[dict[str, Any]], size: int, batch: int) -> str:
    lines = ["| loop | px | batch | s/epoch | first epoch s | img/s | vs article | before first step s | notes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for loop in loops:
        if "error" in loop:
            lines.append(f"| {loop['name']} | {size} | {batch} | failed | | | | | "
                         f"{loop['error'].splitlines()[-1][:120]} |")
            continue
        ratio = loop.get("ratio_vs_article")
        lines.append(" | ".join([
            f"| {loop['name']}", str(size), str(batch),
            _num(loop.get("seconds_per_epoch")) + ("*" if loop.get("extrapolated") else ""),
            _num(loop.get("first_epoch_seconds")) + ("*" if loop.get("extrapolated") else ""),
            _num(loop.get("images_per_second"), 0),
            "n/a" if ratio is None else f"{_num(ratio, 2)}x",
            _num(loop.get("first_step_seconds")) + ("~" if loop.get("first_step_estimated") else ""),
            _notes(loop) + " |",
        ]))
    return "\n".join(lines)


def environment(device: str) -> dict[str, Any]:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "device": device,
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover - torchvision is a dependency
        pass
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child:
        run_child(args.child, args.child_out)
        return {}
    from hydranet.core.device import pick_device

    device = str(pick_device(args.device))
    if args.count is None:
        args.count = UTKFACE_COUNT if device.startswith("cuda") else CPU_COUNT
    root = prepare_root(args)
    if args.root:  # a given folder holds what it holds, whatever --count says
        args.count = sum(1 for path in root.iterdir() if path.suffix.lower() in (".jpg", ".jpeg", ".png"))
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    loops = [] if args.skip_baseline else run_baselines(args, root, device)
    loops += run_hydranet(args, root, device)
    summarise(loops)
    report = {
        "config": {"count": args.count, "size": args.size, "image_size_on_disk": args.image_size_on_disk,
                   "batch_size": args.batch_size, "epochs": args.epochs, "backbone": args.backbone,
                   "root": str(root), "baseline_max_steps": args.baseline_max_steps,
                   "compile_modes": args.compile_modes, "warm": args.warm},
        "environment": {**environment(device), "loadavg_before": load_before,
                        "loadavg_after": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "loops": loops,
    }
    table = markdown_table(loops, args.size, args.batch_size)
    report["table"] = table
    on_disk = "" if args.root else f" ({args.image_size_on_disk}px on disk)"
    per_epoch = ("median of epochs after the first" if args.epochs > 1
                 else "the one epoch's, compilation and warm-up included: pass --epochs 2 or more to leave them out")
    print(f"\n{args.count} images{on_disk} in {root}; {args.backbone}, "
          f"{args.epochs} epoch{'s' if args.epochs != 1 else ''} on {device}; s/epoch = {per_epoch}"
          + ("; * = extrapolated" if any(loop.get("extrapolated") for loop in loops) else "") + "\n")
    print(table)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(finite(report), indent=2, default=str) + "\n")
    return report


if __name__ == "__main__":
    from hydranet.core.errors import HydranetError

    try:
        main()
    except HydranetError as error:  # a mistyped --backbone or --device: the message, not a traceback
        sys.exit(f"error: {error}")
