"""The commands that use a trained model: `hydranet eval`, `predict` and `export`.

They live apart from `cli.py` (training, listing, specs) because they share
one concern, turning a checkpoint into something a person or a program reads,
and its formatting helpers. `cli.py` registers them on the `hydranet` group.
Everything they print to stdout is the answer (a table, JSON or CSV);
progress and counts of unreadable images go to stderr, so pipes stay clean.
Errors name these commands' options (--device, --set, --out), not the spec
keys that training uses for the same things.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from hydranet.core.cli_options import HintingCommand, device_option, is_model_path, pick_device_option, several_models
from hydranet.core.cli_types import check_data_overrides
from hydranet.core.option_types import Count, progress_option, show_progress
from hydranet.core.paths import not_utf8, os_reason, path_spellings
from hydranet.core.eval_text import confusion_text, data_report_text, distribution_text
from hydranet.core.export_formats import FORMATS, MIN_OPSET, SUFFIX
from hydranet.core.prediction_text import nothing_readable, predictions_csv, predictions_table
from hydranet.core.report import format_table, indent
from hydranet.core.wording import plural

OUT_HINT = "Choose another with --out FILE."


# ------------------------------------------------------------------ eval


@click.command("eval", cls=HintingCommand, spec_sections=("data",))
@click.argument("checkpoint", type=click.Path())
@click.option("--data", "data_root", type=click.Path(), metavar="DIR",
              help="Evaluate on the images in DIR instead of the data the model trained on: short for --set "
                   "data.root=DIR, keeping the other data settings. The model's dataset reads DIR in its own "
                   "format when it takes a `root` parameter (utkface, folder; --set data.csv=FILE names another "
                   "CSV); one trained on data that is drawn, not read (synthetic), reads DIR as a UTKFace folder "
                   "(labels in the file names); a dataset without `root` is refused, with the ways out. Nothing "
                   "is written to DIR.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", callback=check_data_overrides,
              help="Override the stored spec's data, e.g. --set data.val_fraction=0.2.")
# The choices are inference.SPLITS, spelt out so that every command need not import inference (test_cli_model).
@click.option("--split", type=click.Choice(["val", "train", "all", "test"]), default="val", show_default=True,
              help="Which part of the data to evaluate on: test is the part held out from training and from "
                   "choosing the best epoch (only a spec with data.test_fraction > 0 has one).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (metrics, baselines, confusion matrices, "
                                                      "error distributions) instead of tables.")
@device_option("evaluate on")
@progress_option()
def eval_command(checkpoint: str, data_root: str | None, overrides: tuple[str, ...], split: str, as_json: bool,
                 device: str, progress: bool | None) -> None:
    """Per-task metrics, confusion matrices and error distributions.

    Evaluates a checkpoint on the data it trained on (its validation split by
    default) or on other data (--data, --set data.*). The header says which
    epoch of its run the checkpoint holds (a last.pt of an interrupted run is
    a mid-run snapshot) and the folder read: a relative data.root that the
    model trained with counts from the folder its run started in, wherever
    eval runs, and a note names a folder of that name in the current folder
    (evaluate that one with --data DIR, which counts from the current folder).

    The metrics table puts each metric next to the best constant prediction
    (the baseline a model must beat). Then each classification task gets its
    confusion matrix (rows: true class, columns: predicted class) and each
    regression task the distribution of its errors (predicted - true).

    \b
    Examples:
      hydranet eval runs/demo-20260101-120000/best.pt
      hydranet eval best.pt --data data/UTKFace --split all
      hydranet eval best.pt --split test
      hydranet eval best.pt --json > eval.json
    """
    from hydranet.core.eval_data import check_data_overrides
    from hydranet.core.inference import TrainedModel
    from hydranet.core.report import metrics_table

    check_data_overrides(overrides, option="--set")
    model = TrainedModel.from_checkpoint(checkpoint, device=pick_device_option(device))
    if data_root:
        overrides = (f"data.root={data_root}", *overrides)
    evaluation = model.evaluate(overrides, split=split, progress=show_progress(progress), option="--set")
    if evaluation.note:
        click.echo(f"note: {evaluation.note}", err=True)
    stage = model.stage
    header = f"{checkpoint}: {stage.summary()}" if stage is not None else checkpoint
    where = evaluation.data_root or f"dataset '{evaluation.dataset}'"
    if as_json:
        trained = {"trained": stage.to_dict() if stage is not None else None}
        click.echo(json.dumps({"checkpoint": checkpoint, **trained, **evaluation.to_dict()}, indent=2))
        # the JSON has them as "trained" and "data"; a terminal shows them too
        click.echo(f"{header}\ndata: {where}\n{data_report_text(evaluation)}", err=True)
        return
    click.echo(header)
    part = "all images" if split == "all" else f"{split} split"
    click.echo(f"{part} of {where}, {plural(evaluation.images, 'image')}; baseline = best constant prediction")
    click.echo(data_report_text(evaluation))
    click.echo(metrics_table(evaluation.result.metrics, evaluation.baselines, evaluation.result.higher_is_better))
    for task, detail in evaluation.details.items():
        click.echo("")
        if "confusion_matrix" in detail:
            click.echo(confusion_text(task, detail))
        else:
            click.echo(distribution_text(task, detail))


# ------------------------------------------------------------------ predict


@click.command("predict", cls=HintingCommand)
@click.argument("checkpoint", type=click.Path())
@click.argument("paths", nargs=-1, type=click.Path(exists=True, allow_dash=True))
@click.option("--files-from", "list_file", type=click.Path(exists=True, dir_okay=False, allow_dash=True),
              metavar="FILE", help="Also predict the paths FILE lists, one a line (- reads them from stdin); blank "
                                   "lines and lines starting with # are skipped. NUL-separated paths (find -print0) "
                                   "are read too. A relative path counts from FILE's folder (from the current "
                                   "folder for stdin).")
@click.option("--json", "as_json", is_flag=True, help="JSON: one object per image, every class's probability.")
@click.option("--csv", "as_csv", is_flag=True,
              help="CSV: file, then per task its value (regression) or class and <task>_probability, the "
                   "probability of the class shown (for a binary task not P(class 1) when class 0 is shown: "
                   "then P(class 1) is 1 minus it; --json gives every class's); then error.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write to FILE (atomically) instead of stdout; without --json/--csv the format "
                   "follows FILE's ending (.json, .csv, else a table).")
@click.option("--force", is_flag=True,
              help="Replace an existing --out FILE that is not an earlier predictions file of the same format "
                   "(never a checkpoint or an image being read).")
@click.option("--batch-size", default=64, show_default=True, type=Count(1), help="Images per forward pass.")
@device_option("predict on")
@progress_option()
def predict_command(checkpoint: str, paths: tuple[str, ...], list_file: str | None, as_json: bool, as_csv: bool,
                    out_file: str | None, force: bool, batch_size: int, device: str, progress: bool | None) -> None:
    """Predict every task for image files and folders.

    Folders are searched recursively for image files.

    Predictions are readable: class names with their probability, regression
    values in their unit (ages in years). An image that cannot be read gets
    its reason in its row instead of stopping the run; their number is
    printed on stderr at the end. When no image at all can be read, the
    command exits with status 1 and leaves an existing --out file alone.
    An existing --out file is replaced only when it holds earlier predictions
    in the same format, or with --force; a hydranet checkpoint never is.

    A list of paths (a .txt file, or find's output on stdin) is read with
    --files-from: its relative paths count from the list's folder, so a list
    kept beside its images works from anywhere.

    \b
    Examples:
      hydranet predict runs/demo-20260101-120000/best.pt face.jpg
      hydranet predict best.pt photos/ --csv --out predictions.csv
      hydranet predict best.pt photos/ more.jpg --json > predictions.json
      hydranet predict best.pt --files-from photos/list.txt
      find photos -name '*.jpg' | hydranet predict best.pt --files-from -
    """
    from hydranet.core.atomic import atomic_write_text, writable_folder
    from hydranet.core.image_input import find_image_files
    from hydranet.core.inference import TrainedModel

    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    fmt = "json" if as_json else "csv" if as_csv else _format_of(out_file)
    if "-" in paths:
        raise click.UsageError("'-' (stdin) is not read as an image: to predict the paths listed on stdin, one a "
                               "line, pass --files-from -")
    models = [path for path in paths if is_model_path(path)]
    if models and not is_model_path(checkpoint) and Path(checkpoint).exists() and len(models) == 1:
        rest = [path for path in (checkpoint, *paths) if path != models[0]]
        raise click.UsageError(f"{checkpoint} is not a checkpoint but {models[0]} is: the checkpoint comes first: "
                               f"hydranet predict {models[0]} {' '.join(rest)}")
    if models:  # before loading the model; a checkpoint read as an image would only be a row "not an image"
        what = "run folder" if all(Path(m).is_dir() for m in (checkpoint, *models)) else "checkpoint"
        raise click.UsageError(f"predict takes one checkpoint, then images and folders of them; {', '.join(models)} "
                               f"{'is a' if len(models) == 1 else 'are'} {what}{'s' if len(models) > 1 else ''} "
                               f"too ({several_models([checkpoint, *models], what)}). Name one checkpoint.")
    listed = listed_paths(list_file) if list_file else []
    if not paths and not listed:
        raise click.UsageError("no images given: name image files or folders of them after the checkpoint, or a "
                               "list of their paths with --files-from FILE")
    model = TrainedModel.from_checkpoint(checkpoint, device=pick_device_option(device))
    if model.stage is not None and model.stage.kind == "unfinished":
        click.echo(f"note: {checkpoint}: {model.stage.summary()}", err=True)
    # what model.predict_files runs on; "no image files found in: ..." if none
    found = find_image_files([*paths, *listed])
    files = found.files
    if found.skipped:  # a folder's .gif or .hidden.jpg must not go missing without a word
        click.echo(found.note(), err=True)
    if out_file:
        check_out_file(Path(out_file), fmt, [checkpoint, *files], force)
        writable_folder(out_file, hint=OUT_HINT)  # before predicting, not after
    rows = model.predict_files(files, batch_size=batch_size, progress=show_progress(progress))
    failed = [row for row in rows if "error" in row]
    for row in failed:
        if Path(row["file"]).suffix.lower() in LIST_SUFFIXES:
            row["error"] += f"; to predict the images a list names, one a line, pass --files-from {row['file']}"
    text = {"json": lambda: json.dumps(rows, indent=2) + "\n",
            "csv": lambda: predictions_csv(rows, model.tasks),
            "table": lambda: predictions_table(rows, model.task_names) + "\n"}[fmt]()
    if len(failed) == len(rows):
        if not out_file:
            click.echo(text, nl=False)
        raise click.ClickException(nothing_readable(failed, out_file))
    if out_file:
        atomic_write_text(out_file, text)
        click.echo(f"wrote {plural(len(rows), 'prediction')} to {out_file}", err=True)
    else:
        click.echo(text, nl=False)
    if failed:
        click.echo(f"{len(failed)} of {len(rows)} images could not be read; their rows say why.", err=True)


def check_out_file(out: Path, fmt: str, inputs: Sequence[str | Path], force: bool) -> None:
    """Refuse an --out FILE that is an input (the checkpoint, an image), or a file other than earlier predictions.

    Predictions replace the file whole, so --out best.pt, or a spec or table
    the user keeps, would be lost; earlier predictions in the same format are
    what a second run of the same command replaces. Any hydranet checkpoint
    is refused even with --force (`refuse_checkpoint`).
    """
    from hydranet.core.atomic import same_file

    if not out.exists():
        return
    read = next((k for k, path in enumerate(inputs) if same_file(path, out)), None)
    if read is not None:
        what = "the checkpoint" if read == 0 else "an image"
        raise click.ClickException(f"--out {out} is {what} being read ({inputs[read]}): the predictions would "
                                   f"replace it. {OUT_HINT}")
    refuse_checkpoint(out)
    if not force and not is_predictions_file(out, fmt):
        raise click.ClickException(f"{out} exists and is not a {fmt} file of predictions hydranet wrote: the "
                                   f"predictions would replace it. {OUT_HINT[:-1]}, or pass --force to replace it.")


def refuse_checkpoint(out: Path) -> None:
    """Refuse to write predictions over a hydranet checkpoint, --force or not (`never_replaced` says why). The
    check reads the file's marker, not its tensors (`is_hydranet_checkpoint`)."""
    from hydranet.core.checkpoint import is_hydranet_checkpoint, never_replaced

    if is_hydranet_checkpoint(out):
        raise click.ClickException(never_replaced(out))


#: endings of files that usually list paths; predict's row for one, "not an image", points to --files-from
LIST_SUFFIXES = (".txt", ".csv", ".lst")
#: how to write a list of paths as UTF-8, for `not_utf8`'s advice: PowerShell 5's `>` writes UTF-16
LIST_SAVE_AS = "UTF-8 (PowerShell: ... | Out-File -Encoding utf8 FILE)"


def listed_paths(list_file: str, shown: int = 5) -> list[Path]:
    """The paths `list_file` lists, one a line ("-": stdin), blank lines and # comments skipped; or separated by
    NUL characters (`find -print0`), as `xargs -0` reads them.

    A relative path counts from the list's folder (the current folder for
    stdin), as rsync's --files-from counts from its source: a list kept
    beside its images (photos/list.txt naming a.jpg) works from any folder,
    and `find photos ... > list.txt` in the current folder too. Paths that
    are not there are refused before the model loads, each with its line;
    one that the current folder has instead is pointed out. A path with `\\`
    that is there only with `/` (a list made on Windows) is that file. A list
    that is not UTF-8 (PowerShell 5's `>` writes UTF-16) is refused with why
    and how to convert it (`not_utf8`).
    """
    where = "stdin" if list_file == "-" else list_file
    try:
        raw = _stdin_bytes() if list_file == "-" else Path(list_file).read_bytes()
    except OSError as error:
        raise click.ClickException(f"--files-from {list_file}: cannot read it ({os_reason(error)}); pass a text "
                                   "file of paths, one a line") from None
    base = Path() if list_file == "-" else Path(list_file).parent
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise click.ClickException(f"--files-from {where} {not_utf8(raw, LIST_SAVE_AS)}") from None
    if "\0" in text:  # find -print0: only NUL separates, as for xargs -0 (a name may hold a line break or a #)
        items = [item for item in text.split("\0") if item.strip("\r\n")]
        entries = [(number, Path(item.strip("\r\n")).expanduser()) for number, item in enumerate(items, 1)]
    else:
        entries = [(number, Path(line.strip()).expanduser()) for number, line in enumerate(text.splitlines(), 1)
                   if line.strip() and not line.strip().startswith("#")]
    if not entries:
        raise click.ClickException(f"--files-from {where} lists no paths (one a line; blank lines and # comments "
                                   "are skipped)")
    paths = [_listed_path(base, entry) for _, entry in entries]
    missing = [(number, entry, path) for (number, entry), path in zip(entries, paths)
               if not path.exists() and not path.is_symlink()]  # a broken link gets its row, as a given one does
    if not missing:
        return paths
    item = "entry" if "\0" in text else "line"
    lines = [f"--files-from {where}: {plural(len(missing), 'listed path')} not found:"]
    lines += [f"  {item} {number}: {path}" for number, _, path in missing[:shown]]
    if len(missing) > shown:
        lines.append(f"  ... and {len(missing) - shown} more")
    if base != Path() and any(entry.exists() for _, entry, _ in missing):
        lines.append(f"Relative paths in a list count from its folder, {base}; these are in the current folder: "
                     f"list them relative to {base}, or as absolute paths.")
    else:
        lines.append("List files and folders that exist, one a line.")
    raise click.ClickException("\n".join(lines))


def _stdin_bytes() -> bytes:
    """stdin's bytes, decoded as a list file's are; a stdin without bytes (a notebook's) gives its text."""
    stdin = getattr(sys.stdin, "buffer", None)
    return stdin.read() if stdin is not None else sys.stdin.read().encode("utf-8", "surrogateescape")


def _listed_path(base: Path, entry: Path) -> Path:
    """A listed path below `base`, with its `\\` read as `/` when only so it is there (`sub dir\\photo.JPG` from a
    list made on Windows), as the label CSV's file names are; else as written, which the message names."""
    spellings = [base / Path(name).expanduser() for name in path_spellings(str(entry))]
    return next((path for path in spellings if path.exists() or path.is_symlink()), spellings[0])


def is_predictions_file(path: Path, fmt: str) -> bool:
    """Whether `path` is what `predict` writes in `fmt`: a CSV from `file` to `error`, a JSON list of rows with
    `file`, or a table headed `file`. Told from its start (a JSON file whole); any other file is not."""
    try:
        if not path.is_file():
            return False
        if fmt == "json":
            rows = json.loads(path.read_text(encoding="utf-8"))
            return isinstance(rows, list) and all(isinstance(row, dict) and "file" in row for row in rows)
        with open(path, encoding="utf-8-sig", newline="") as handle:
            head = handle.read(65536)
        lines = head.splitlines()
        if fmt == "csv":
            header = next(csv.reader(lines[:1]), [])
            return header[:1] == ["file"] and header[-1:] == ["error"]
        return (len(lines) >= 2 and lines[0].split()[:1] == ["file"]
                and set(lines[1]) <= {"-", " "} and "-" in lines[1])
    except (OSError, UnicodeDecodeError, ValueError, csv.Error):
        return False


def _format_of(out_file: str | None) -> str:
    suffix = Path(out_file).suffix.lower() if out_file else ""
    return {".json": "json", ".csv": "csv"}.get(suffix, "table")


# ------------------------------------------------------------------ export


@click.command("export", cls=HintingCommand)
@click.argument("checkpoint", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="onnx (onnxruntime and most runtimes), exported (torch.export.load), torchscript (torch.jit.load; "
                   "deprecated in torch, which warns on loading: prefer exported or onnx). Default: the format "
                   "--out's ending names (" + ", ".join(f"{s} {f}" for f, s in SUFFIX.items()) + "), else onnx.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Where to write (default: next to CHECKPOINT: "
                   + ", ".join(f"best{s}" for s in SUFFIX.values()) + ").")
@click.option("--opset", type=Count(MIN_OPSET),
              help=f"ONNX opset version ({MIN_OPSET} or newer; default: the exporter's).")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Run the written file on random images and compare it with PyTorch (to 1e-4) before keeping it.")
@click.option("--force", is_flag=True,
              help="Replace an existing --out FILE that is not an earlier export in this format (never CHECKPOINT "
                   "or any other hydranet checkpoint).")
def export_command(checkpoint: str, fmt: str | None, out_file: str | None, opset: int | None, check: bool,
                   force: bool) -> None:
    """Write a model as one ONNX, TorchScript or torch.export file.

    The file is for deployment: it needs neither hydranet nor its plugins.

    The file takes float32 RGB images in [0, 1], shape (N, 3, S, S) with S
    the training size and any batch size N (normalisation is inside), and
    gives one output per task in task order: regression values in their unit,
    classification logits. ONNX names each output after its task;
    TorchScript and torch.export return a tuple in that order. The names,
    class names and units are also stored in the file as a JSON manifest.
    ONNX needs pip install 'hydranet[export]'. An existing output file is
    replaced only when it is an earlier export in the same format, or with
    --force; a hydranet checkpoint never is. TorchScript is deprecated in
    torch (torch.jit.load warns); use it only for a runtime that needs it.

    \b
    Examples:
      hydranet export runs/demo-20260101-120000/best.pt
      hydranet export best.pt --format exported --out model.pt2
      hydranet export best.pt --format onnx --opset 20 --out deploy/model.onnx
    """
    from hydranet.core.export import export_checkpoint

    fmt = fmt or format_named_by(out_file)
    result = export_checkpoint(checkpoint, out_file, fmt, opset=opset, check=check,  # type: ignore[arg-type]
                               force=force)
    # the summary, from "wrote FILE" on, is the answer (what the file is, and where): stdout; its warnings are
    # not, and go to stderr as every command's do
    click.echo(export_summary(result))
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)


def format_named_by(out_file: str | None) -> str:
    """The export format `--out`'s ending names (`model.ts.pt`: torchscript); onnx for any other name, or none:
    a `--out m.pt2` without `--format` wrote ONNX into it, and only warned."""
    name = Path(out_file).name.lower() if out_file else ""
    return next((fmt for fmt, suffix in SUFFIX.items() if name.endswith(suffix)), "onnx")


#: the last line of `export_summary`: the file checks its input's shape and dtype, but not its range, the mistake
#: (pixels not divided by 255) that gives wrong outputs without an error
RANGE_NOTE = ("not checked: the input's range. 0-255 floats (pixels not / 255) give wrong outputs without an error; "
              "decode images as the manifest's input.decode says")


def export_summary(result: Any) -> str:
    """What a user of the file needs: where it is, its input shape, each output's name, shape and meaning, and
    what the file does not check (`RANGE_NOTE`), last so that it is what a reader of the output sees. The
    export's warnings are not part of it: the command prints them on stderr."""
    spec = result.manifest["input"]
    shape = "(" + ", ".join(str(d) for d in spec["shape"]) + ")"
    size = result.path.stat().st_size
    outputs = [[o["name"], "(" + ", ".join(map(str, o["shape"])) + ")", o["meaning"]]
               for o in result.manifest["outputs"]]
    order = "named, in this order" if result.fmt == "onnx" else "a tuple in this order"
    lines = [
        f"wrote {result.path} ({result.fmt}, {size / 1024:.0f} KiB)",
        f"input '{spec['name']}': float32 {shape}, RGB in [0, 1] (pixels / 255; normalisation is inside); "
        "N is free",
        f"outputs ({order}):",
        indent(format_table(["name", "shape", "meaning"], outputs)),
    ]
    if result.max_difference is not None:
        lines.append(f"checked against PyTorch on random batches of 1 and 3 images: "
                     f"largest difference {result.max_difference:.2g}")
    lines.append(RANGE_NOTE)
    return "\n".join(lines)
