"""Using a trained model: rebuild it from a checkpoint, predict, evaluate.

`hydranet.load(CKPT)` needs nothing but the checkpoint (and the plugins that
provided its tasks): the spec, the tasks' fitted state and the preprocessing
are all stored in it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from hydranet.core.augment import DeviceAugment
from hydranet.core.checkpoint import read_checkpoint
from hydranet.core.decode import to_square_rgb, unreadable_reason
from hydranet.core.device import pick_device, resolve_settings
from hydranet.core.errors import CheckpointError, DataError, HydranetError, InputError, SpecError, not_a_choice
from hydranet.core.image_input import (ACCEPTED, ImageInput, array_to_pil, batch_size_argument, float_range_problem,
                                       given, image_files, image_items, tensor_image)
from hydranet.core.interfaces import Task
from hydranet.core.forward import spec_model
from hydranet.core.model import HydraNet
from hydranet.core.overrides import override_list
from hydranet.core.plugins import Components, default_components
from hydranet.core.spec import ResolvedSpec, load_spec
from hydranet.core.spec_models import DataSection

#: the parts of a checkpoint's data `TrainedModel.evaluate` (and `hydranet eval --split`) can score
SPLITS = ("val", "train", "all")

#: what evaluating on another folder reads it as when the model's dataset reads no folder (synthetic draws one)
FOLDER_FORMAT = "utkface"

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


def _device_argument(device: Any) -> torch.device:
    """`device=` as a str ("auto", "cpu", "cuda:1"), a torch.device or a CUDA index, checked by `pick_device`."""
    if isinstance(device, int) and not isinstance(device, bool):
        device = f"cuda:{device}"  # torch's meaning of a bare index
    elif isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise InputError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N', 'mps', a torch.device or a CUDA "
                         f"index; got {given(device)}")
    return pick_device(device, option="device")


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
        target = _device_argument(device)
        data = read_checkpoint(path)  # which also refuses a path that is not a str or Path
        path = Path(path)
        components = components or default_components()
        spec = _resolve_checkpoint_spec(path, data, components)
        tasks = spec.build_tasks()
        for task in tasks:
            task.load_state_dict(data.get("task_state", {}).get(task.name, {}))
        model = spec_model(spec, tasks)
        try:
            model.load_state_dict(data["model"])
        except RuntimeError as error:
            raise CheckpointError(f"the weights in {path} do not fit the model its spec describes:\n"
                                  + state_dict_mismatch(error)) from None
        return cls(model.to(target), tasks, spec, data["preprocess"], target, data)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def preprocess(self, image: ImageInput) -> Tensor:
        """One image as uint8 (3, S, S) RGB, prepared exactly as the training images were.

        Takes an image file (str or Path), a PIL image, a numpy array (H, W)
        or (H, W, C) uint8 with C 1, 3 or 4, read as grayscale, RGB or RGBA
        (flip OpenCV's BGR first: `array[..., ::-1]`), or a tensor (C, H, W)
        uint8 or float in [0, 1]. Any size is centre-cropped to a square and
        resized to S, as training did; a uint8 (3, S, S) tensor is taken as
        already prepared and returned as it is.
        """
        if isinstance(image, Tensor):
            image = tensor_image(image, self.image_size)
            if isinstance(image, Tensor):
                return image
        if isinstance(image, np.ndarray):
            image = array_to_pil(image)
        if isinstance(image, Image.Image):
            return torch.from_numpy(to_square_rgb(image, self.image_size))
        if isinstance(image, (str, os.PathLike)):
            return self._read_path(Path(image))
        raise InputError(f"preprocess takes one image: {ACCEPTED}; got {given(image)}")

    def _read_path(self, path: Path) -> Tensor:
        if path.is_dir():
            raise InputError(f"{path} is a folder; predict takes image files. For every image in it, each "
                             f"row naming its file, use predict_files({str(path)!r}), as `hydranet predict "
                             "FOLDER` does")
        try:
            return self._read_file(path)
        except Exception as error:  # PIL raises many kinds; the message says which
            reason = "file not found" if isinstance(error, FileNotFoundError) else unreadable_reason(error)
            raise InputError(f"cannot read image {path}: {reason}. predict_files() reports an unreadable file "
                             "in its row instead of stopping") from None

    def _read_file(self, path: Path) -> Tensor:
        with Image.open(path) as opened:
            return torch.from_numpy(to_square_rgb(opened, self.image_size))

    def _check_batch(self, images: Any) -> Tensor:
        """`images` if `predict_tensor` can take it, else an InputError that says what is wrong and what to do.

        Shape and dtype are metadata; only a float tensor's range is read
        from its values (one aminmax).
        """
        size = self.image_size
        want = f"(N, 3, {size}, {size})"
        if not isinstance(images, Tensor):
            hint = (" Use torch.from_numpy(array), or predict(array) for (H, W, C) images of any size."
                    if isinstance(images, np.ndarray) else " For files, PIL images or lists, use predict().")
            raise InputError(f"predict_tensor takes a torch.Tensor {want}; got {given(images)}.{hint}")
        images = images.detach()  # the model runs without autograd; reading a tensor that has it makes torch warn
        if images.dim() != 4:
            hint = " For one image, add the batch dimension: images.unsqueeze(0)." if images.dim() == 3 else ""
            raise InputError(f"predict_tensor takes a batch {want}; got {given(images)}.{hint}")
        if images.shape[1] != 3:
            if images.shape[1] == 1:
                hint = " For grayscale, repeat the channel: images.expand(-1, 3, -1, -1)."
            elif images.shape[3] == 3:
                hint = " It looks channels last (N, H, W, 3): use images.permute(0, 3, 1, 2)."
            else:
                hint = ""
            raise InputError(f"predict_tensor takes 3 channels (RGB) in dimension 1, {want}; got "
                             f"{given(images)}.{hint}")
        if tuple(images.shape[2:]) != (size, size):
            raise InputError(f"predict_tensor takes images of this model's size, {size}x{size} {want}; got "
                             f"{images.shape[2]}x{images.shape[3]} in {given(images)}. They are not resized: "
                             "model.preprocess(image) prepares one as training did (centre crop, resize), and "
                             "model.predict takes images of any size")
        if images.dtype == torch.uint8:
            return images
        if not images.is_floating_point():
            raise InputError(f"predict_tensor got dtype {images.dtype}; expected torch.uint8 (pixels 0-255) or a "
                             "float dtype with values in [0, 1]")
        problem = float_range_problem(images)
        if problem:
            raise InputError(f"predict_tensor: {problem}")
        return images

    @torch.no_grad()
    def predict_tensor(self, images: Tensor) -> dict[str, Tensor]:
        """Raw head outputs (regression values, logits) for a batch of prepared RGB images (N, 3, S, S).

        S is `image_size`. The pixels are uint8 0-255 (what `preprocess`
        gives and training saw) or float in [0, 1] (what an exported model
        takes); both give the same outputs. The input is checked: its shape
        and dtype for free, and a float tensor's range with one aminmax,
        which on a GPU waits for the tensor (uint8 skips it). Images of
        another size are refused, not resized.
        """
        images = self._check_batch(images).to(self.device)
        if images.is_floating_point():
            images = images.float() * 255
        return self.model(self.normalize(images, train=False))

    def predict(self, images: ImageInput | Iterable[ImageInput], batch_size: int = 64) -> list[dict[str, Any]]:
        """Readable per-task predictions, one dict per image, in order: {task: {class, probability} or {value}}.

        `images`: one image or a list of them, each as `preprocess` takes it
        (a file, a PIL image, a numpy array, a tensor), or a batch: a tensor
        (N, C, H, W) or a numpy array (N, H, W, C). For a folder, use
        `predict_files`, whose rows name their files.
        """
        batch_size = batch_size_argument(batch_size)
        items = image_items(images)
        results: list[dict[str, Any]] = []
        for start in range(0, len(items), batch_size):
            batch = torch.stack([self.preprocess(item) for item in items[start:start + batch_size]])
            results += self._decode(self.predict_tensor(batch))
        return results

    def evaluate(self, overrides: str | Iterable[str] = (), split: str = "val", progress: bool = False,
                 components: Components | None = None, details: bool = True, *,
                 option: str = "overrides") -> "Evaluation":
        """Metrics on the stored spec's data, or on data changed by `overrides` ("data.KEY=VALUE", one or a list).

        `split` is one of `SPLITS`: "val" (the part training scored),
        "train", or "all" (both). There is no separate test split: to score
        held-out images, evaluate a folder of them with
        `evaluate("data.root=DIR", split="all")`: DIR is read in the format
        of the model's dataset, or as a UTKFace folder when that dataset
        draws its images instead of reading them (synthetic); nothing is
        written to DIR. `option` is what messages call the overrides
        (`hydranet eval` passes "--set").

        The metrics come from the training loop's own `evaluate`, so they match
        what training recorded; `details` adds a second pass for what a metric
        hides: each classification task's confusion matrix and each regression
        task's error distribution.
        """
        from hydranet.core.engine import batch_source, load_prepared_data
        from hydranet.core.evaluation import baseline_metrics, evaluate

        if split not in SPLITS:
            raise InputError(f"{not_a_choice(split, SPLITS, 'split')}. 'val' is the part of the data "
                             "training scored, 'all' both parts. There is no separate test split: to score "
                             "held-out images, evaluate a folder of them in the same format, "
                             "evaluate('data.root=DIR', split='all') (hydranet eval CKPT --data DIR --split all)")
        spec = self._data_spec(overrides, components, option)
        data = load_prepared_data(spec, self.tasks, progress)
        index = {"val": data.val_index, "train": data.train_index,
                 "all": torch.cat([data.train_index, data.val_index]).sort().values}[split]
        if index.numel() == 0:
            raise DataError(f"the '{split}' split of this data is empty; evaluate on split 'all' "
                            "(--split all) instead")
        settings = resolve_settings(str(self.device), "fp32", False, False)
        self.model.eval()
        result = evaluate(self.model, self.tasks, batch_source(spec, data, settings), data.targets.to(self.device),
                          index, self.normalize, settings, batch_size=256)
        baselines = baseline_metrics(self.tasks, data.targets[data.train_index], data.targets[index])
        report = self.error_report(data, index) if details else {}
        return Evaluation(split, int(index.numel()), result, baselines, report)

    def _data_spec(self, overrides: str | Iterable[str] = (), components: Components | None = None,
                  option: str = "overrides") -> ResolvedSpec:
        """The spec `evaluate` reads its data with: the stored one, changed by `data.*` overrides.

        `data.root=DIR` is another folder in the same format. A model whose
        dataset reads no folder (`synthetic` draws its own into `root`, which
        evaluating must never do) reads DIR as a UTKFace folder, labels in
        the file names, keeping the shared data settings (val_fraction,
        split_seed, ...). Naming the dataset too (`data.name=folder`) keeps
        the stored section instead. Problems name the overrides as `option`.
        """
        overrides = check_data_overrides(overrides, option)
        if not overrides:
            return self.spec
        raw = self.spec.to_dict()
        keys = {item.partition("=")[0].strip() for item in overrides}
        if "data.root" in keys and not keys & {"data", "data.name"} and not reads_a_folder(self.spec):
            raw["data"] = {"name": FOLDER_FORMAT, **{k: v for k, v in raw["data"].items()
                                                     if k in DataSection.model_fields and k != "name"}}
        spec = load_spec(raw, overrides, components, option=option)
        root = getattr(spec.data.params, "root", None)
        if "data.root" in keys and reads_a_folder(spec) and not Path(root).is_dir():
            labels = " (labels in the file names)" if spec.data.entry.name == FOLDER_FORMAT else ""
            raise DataError(f"{root} is not a folder: data.root names an existing folder of images to evaluate "
                            f"on, read as a '{spec.data.entry.name}' dataset{labels}")
        return spec

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

    def predict_files(self, files: str | os.PathLike | Iterable[str | os.PathLike], batch_size: int = 64,
                      progress: bool = False) -> list[dict[str, Any]]:
        """One row per file, in order: `{file, task: prediction, ...}`, or `{file, error}` for an unreadable one.

        `files`: image files and folders, one or a list, as `hydranet
        predict` takes them; a folder stands for its image files (searched
        recursively, sorted; see `image_files`). A path that does not exist
        is refused before any work. A folder of photos usually holds a few
        broken or non-image files; one of them must not cost the whole run,
        so each is reported in its row.
        """
        from tqdm import tqdm

        batch_size = batch_size_argument(batch_size)
        files = image_files(files)
        rows: list[dict[str, Any]] = []
        with tqdm(total=len(files), desc="predicting", unit="image", disable=not progress) as bar:
            for start in range(0, len(files), batch_size):
                chunk = files[start:start + batch_size]
                slots: list[dict[str, Any]] = [{"file": str(path)} for path in chunk]
                readable, images = [], []
                for slot, path in zip(slots, chunk):
                    try:
                        images.append(self._read_file(path))
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


def check_data_overrides(overrides: str | Iterable[str], option: str = "overrides") -> tuple[str, ...]:
    """Overrides of the data only: evaluating a trained model can change what it sees, not how it was made.

    A `train.epochs=3` would otherwise be applied to a spec nobody trains
    again and silently ignored.

    One override may be given as a string, as from Python's
    `model.evaluate("data.root=DIR")`. Messages name the overrides as
    `option`: "overrides" (the Python argument) or "--set" (the CLI's).
    """
    example = ("--set data.root=DIR or --set data.val_fraction=0.2" if option == "--set"
               else f"{option}='data.root=DIR' or {option}=['data.root=DIR', 'data.val_fraction=0.2']")
    overrides = tuple(override_list(overrides, option, form="data.KEY=VALUE", example="data.root=DIR"))
    for item in overrides:
        key, equals, _ = item.partition("=")
        if not equals or not key.strip():
            raise InputError(f"{option}: {item!r} is not of the form data.KEY=VALUE (e.g. {example})")
        key = key.strip()
        if key != "data" and not key.startswith("data."):
            raise HydranetError(f"override '{item}' is not a data.* key: evaluating a checkpoint can change only "
                                f"its data (e.g. {example}); the model and its training settings come from the "
                                "checkpoint")
    return overrides


def reads_a_folder(spec: ResolvedSpec) -> bool:
    """Whether the spec's dataset reads a folder its `root` names (utkface, folder), as opposed to drawing one."""
    params = spec.data.entry.params
    root = params.model_fields.get("root") if params is not None else None
    return root is not None and root.is_required()


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
