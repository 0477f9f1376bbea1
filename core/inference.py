"""Using a trained model: rebuild it from a checkpoint, predict, evaluate.

`hydranet.load(CKPT)` needs nothing but the checkpoint (and the plugins that
provided its tasks): the spec, the tasks' fitted state and the preprocessing
are all stored in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from hydranet.core.augment import DeviceAugment
from hydranet.core.checkpoint import read_checkpoint
from hydranet.core.decode import to_square_rgb, unreadable_reason
from hydranet.core.device import pick_device, resolve_settings
from hydranet.core.errors import CheckpointError, HydranetError, SpecError
from hydranet.core.interfaces import Task
from hydranet.core.model import HydraNet, build_model
from hydranet.core.plugins import Components, default_components
from hydranet.core.spec import ResolvedSpec, load_spec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

ImageInput = str | Path | Image.Image | Tensor


def _spec_without_weight_loading(spec: dict[str, Any]) -> dict[str, Any]:
    """The weights come from the checkpoint: never load (or look for) pretrained files again."""
    backbone = dict(spec.get("backbone", {}))
    if "pretrained" in backbone:
        backbone["pretrained"] = False
    if "weights" in backbone:
        backbone["weights"] = None
    return {**spec, "backbone": backbone}


def _resolve_checkpoint_spec(path: Path, data: dict[str, Any], components: Components) -> ResolvedSpec:
    for task in data["tasks"]:
        if task["kind"] not in components.tasks:
            raise CheckpointError(
                f"{path} needs task '{task['name']}' (registered as '{task['kind']}' by plugin '{task['plugin']}' "
                f"from distribution '{task['distribution']}'), which is not installed here. Install that plugin "
                f"(pip install {task['distribution']}) or allow it in HYDRANET_PLUGINS."
            )
    try:
        return load_spec(_spec_without_weight_loading(data["spec"]), components=components)
    except SpecError as error:
        raise CheckpointError(f"the spec stored in {path} does not resolve with the plugins installed here:\n"
                              + "\n".join(f"  {p}: {m}" for p, m in error.problems)) from None


class TrainedModel:
    """A HydraNet with its tasks and preprocessing, ready to predict or evaluate."""

    def __init__(self, model: HydraNet, tasks: Sequence[Task], spec: ResolvedSpec, preprocess: dict[str, Any],
                 device: torch.device, checkpoint: dict[str, Any] | None = None):
        self.model = model.eval()
        self.tasks = list(tasks)
        self.spec = spec
        self.image_size = int(preprocess["image_size"])
        self.device = device
        self.mean, self.std = tuple(preprocess["mean"]), tuple(preprocess["std"])
        self.normalize = DeviceAugment(device, flip=False, mean=self.mean, std=self.std)
        self.info = {k: v for k, v in (checkpoint or {}).items() if k in ("epoch", "metrics", "hydranet_version")}

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu",
                        components: Components | None = None) -> "TrainedModel":
        path = Path(path)
        data = read_checkpoint(path)
        components = components or default_components()
        spec = _resolve_checkpoint_spec(path, data, components)
        tasks = spec.build_tasks()
        for task in tasks:
            task.load_state_dict(data.get("task_state", {}).get(task.name, {}))
        model = build_model(spec.backbone.build(), tasks)
        try:
            model.load_state_dict(data["model"])
        except RuntimeError as error:
            raise CheckpointError(f"the weights in {path} do not fit the model its spec describes:\n"
                                  + state_dict_mismatch(error)) from None
        target = pick_device(str(device), option="device") if isinstance(device, str) else device
        return cls(model.to(target), tasks, spec, data["preprocess"], target, data)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def preprocess(self, image: ImageInput) -> Tensor:
        """One image as uint8 (3, S, S), prepared exactly as the training images were."""
        if isinstance(image, Tensor):
            if image.dtype != torch.uint8 or image.shape != (3, self.image_size, self.image_size):
                raise ValueError(f"a tensor image must be uint8 of shape (3, {self.image_size}, {self.image_size})")
            return image
        if isinstance(image, Image.Image):
            return torch.from_numpy(to_square_rgb(image, self.image_size))
        with Image.open(image) as opened:
            return torch.from_numpy(to_square_rgb(opened, self.image_size))

    @torch.no_grad()
    def predict_tensor(self, images: Tensor) -> dict[str, Tensor]:
        """Raw head outputs for a uint8 batch (N, 3, S, S)."""
        return self.model(self.normalize(images.to(self.device), train=False))

    def predict(self, images: ImageInput | Iterable[ImageInput], batch_size: int = 64) -> list[dict[str, Any]]:
        """Readable per-task predictions, one dict per image: {task: {class, probability} or {value}}.

        `images`: file paths, PIL images, uint8 (3, S, S) tensors, a list of
        those, or a uint8 batch (N, 3, S, S).
        """
        if isinstance(images, Tensor) and images.dim() == 4:
            items: list[Any] = list(images)  # a uint8 batch (N, 3, S, S)
        elif isinstance(images, (str, Path, Image.Image, Tensor)):
            items = [images]
        else:
            items = list(images)
        results: list[dict[str, Any]] = []
        for start in range(0, len(items), batch_size):
            batch = torch.stack([self.preprocess(item) for item in items[start:start + batch_size]])
            results += self._decode(self.predict_tensor(batch))
        return results

    def evaluate(self, overrides: Iterable[str] = (), split: str = "val", progress: bool = False,
                 components: Components | None = None, details: bool = True) -> "Evaluation":
        """Metrics on the stored spec's data (or data overridden by `--set data.*`).

        The metrics come from the training loop's own `evaluate`, so they match
        what training recorded; `details` adds a second pass for what a metric
        hides: each classification task's confusion matrix and each regression
        task's error distribution.
        """
        from hydranet.core.engine import batch_source, load_prepared_data
        from hydranet.core.evaluation import baseline_metrics, evaluate

        overrides = check_data_overrides(overrides)
        spec = self.spec
        if overrides:
            spec = load_spec(spec.to_dict(), overrides, components)
        data = load_prepared_data(spec, self.tasks, progress)
        index = {"val": data.val_index, "train": data.train_index,
                 "all": torch.cat([data.train_index, data.val_index]).sort().values}[split]
        if index.numel() == 0:
            raise CheckpointError(f"the '{split}' split is empty for this data; use --split all")
        settings = resolve_settings(str(self.device), "fp32", False, False)
        self.model.eval()
        result = evaluate(self.model, self.tasks, batch_source(spec, data, settings), data.targets.to(self.device),
                          index, self.normalize, settings, batch_size=256)
        baselines = baseline_metrics(self.tasks, data.targets[data.train_index], data.targets[index])
        report = self.error_report(data, index) if details else {}
        return Evaluation(split, int(index.numel()), result, baselines, report)

    @torch.no_grad()
    def error_report(self, data, index: Tensor, batch_size: int = 256) -> dict[str, dict[str, Any]]:
        """Per task: a confusion matrix (classification) or the error distribution (regression)."""
        outputs: dict[str, list[Tensor]] = {t.name: [] for t in self.tasks}
        for start in range(0, index.numel(), batch_size):
            rows = index[start:start + batch_size]
            for name, value in self.predict_tensor(data.images[rows]).items():
                outputs[name].append(value.float().cpu())
        report = {}
        for k, task in enumerate(self.tasks):
            output = torch.cat(outputs[task.name]) if outputs[task.name] else torch.zeros(0, task.out_features)
            target = data.targets[index, k]
            labelled = ~torch.isnan(target)
            output, target = output[labelled], target[labelled]
            if task.problem == "classification":
                report[task.name] = confusion_report(output, target, getattr(task, "class_names", None))
            else:
                unit = getattr(getattr(task, "params", None), "unit", "") or ""
                report[task.name] = {"unit": unit, **error_distribution(output[:, 0] - target)}
        return report

    def predict_files(self, files: Sequence[Path], batch_size: int = 64,
                      progress: bool = False) -> list[dict[str, Any]]:
        """One row per file, in order: `{file, task: prediction, ...}`, or `{file, error}` for an unreadable one.

        A folder of photos usually holds a few broken or non-image files; one
        of them must not cost the whole run, so each is reported in its row.
        """
        from tqdm import tqdm

        rows: list[dict[str, Any]] = []
        with tqdm(total=len(files), desc="predicting", unit="image", disable=not progress) as bar:
            for start in range(0, len(files), batch_size):
                chunk = files[start:start + batch_size]
                slots: list[dict[str, Any]] = [{"file": str(path)} for path in chunk]
                readable, images = [], []
                for slot, path in zip(slots, chunk):
                    try:
                        images.append(self.preprocess(path))
                        readable.append(slot)
                    except Exception as error:  # PIL raises many kinds; the row says which
                        slot["error"] = unreadable_reason(error)
                if images:
                    for slot, prediction in zip(readable, self._decode(self.predict_tensor(torch.stack(images)))):
                        slot.update(prediction)
                rows += slots
                bar.update(len(chunk))
        return rows

    def _decode(self, outputs: dict[str, Tensor]) -> list[dict[str, Any]]:
        decoded = {task.name: task.decode(outputs[task.name].float().cpu()) for task in self.tasks}
        count = len(next(iter(decoded.values()))) if decoded else 0
        return [{name: rows[i] for name, rows in decoded.items()} for i in range(count)]


def check_data_overrides(overrides: Iterable[str]) -> tuple[str, ...]:
    """Overrides of the data only: evaluating a trained model can change what it sees, not how it was made.

    A `train.epochs=3` would otherwise be applied to a spec nobody trains
    again and silently ignored.
    """
    overrides = tuple(overrides)
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key != "data" and not key.startswith("data."):
            raise HydranetError(f"override '{item}' is not a data.* key: evaluating a checkpoint can change only "
                                "its data (e.g. --set data.root=DIR or --set data.val_fraction=0.2); the model "
                                "and its training settings come from the checkpoint")
    return overrides


@dataclass
class Evaluation:
    """`TrainedModel.evaluate`'s answer: metrics next to the constant baseline, and the per-task details."""

    split: str
    images: int
    result: Any  # evaluation.EvalResult: losses, metrics, labelled counts, higher_is_better
    baselines: dict[str, dict[str, float]]
    details: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for `hydranet eval --json`."""
        confusion = {k: v for k, v in self.details.items() if "confusion_matrix" in v}
        return {
            "split": self.split, "images": self.images, "metrics": self.result.metrics,
            "losses": self.result.losses, "labelled": self.result.labelled, "baselines": self.baselines,
            "confusion_matrices": confusion,
            "error_distributions": {k: v for k, v in self.details.items() if k not in confusion},
        }


def state_dict_mismatch(error: RuntimeError, limit: int = 5) -> str:
    """The informative lines of load_state_dict's error (which weights are missing, extra, or misshapen)."""
    lines = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
    details = []
    for line in lines:
        details += [part.strip() + ("." if not part.strip().endswith(".") else "") for part in line.split(". ")
                    if part.strip()]
    shown = details[:limit] or [str(error).splitlines()[0]]
    more = f"\n  ... and {len(details) - limit} more" if len(details) > limit else ""
    return "\n".join(f"  {line}" for line in shown) + more


def confusion_report(output: Tensor, target: Tensor, class_names: Sequence[str] | None) -> dict[str, Any]:
    """Counts[true class][predicted class] with the class names, from logits."""
    from hydranet.core.metrics import predicted_class

    k = 2 if output.shape[1] == 1 else output.shape[1]
    names = list(class_names or [str(i) for i in range(k)])
    matrix = torch.zeros(k, k, dtype=torch.long)
    if target.numel():
        matrix.index_put_((target.long(), predicted_class(output)), torch.ones(target.numel(), dtype=torch.long),
                          accumulate=True)
    return {"classes": names, "confusion_matrix": matrix.tolist()}


ERROR_QUANTILES = (0.5, 0.9, 0.99)


def error_distribution(errors: Tensor) -> dict[str, Any]:
    """Signed errors (predicted - true): bias (mean), median, MAE, RMSE, |error| quantiles, histogram.

    An MAE alone cannot tell a model that is always a little off from one that
    is usually right and sometimes wildly wrong, or one that is biased.
    """
    if errors.numel() == 0:
        return {"count": 0}
    absolute = errors.abs()
    edges = torch.linspace(float(errors.min()), float(errors.max()) + 1e-6, 11)
    counts = torch.histc(errors, bins=10, min=float(edges[0]), max=float(edges[-1]))
    return {
        "count": errors.numel(),
        "bias": float(errors.mean()),
        "median": float(errors.median()),
        "mae": float(absolute.mean()),
        "rmse": float(errors.pow(2).mean().sqrt()),
        "abs_error_quantiles": {f"p{int(q * 100)}": float(absolute.quantile(q)) for q in ERROR_QUANTILES},
        "histogram": {"edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]},
    }


def expand_image_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders as their image files (sorted, recursive)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(path)
    return found
