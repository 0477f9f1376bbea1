"""Using a trained model: rebuild it from a checkpoint, predict, evaluate.

`hydranet.load(CKPT)` needs nothing but the checkpoint and the plugins of
its backbone and tasks: the spec, the tasks' fitted state and the
preprocessing are all stored in it. The dataset's plugin is needed only to
evaluate on the stored data, the weighting's never (see
`checkpoint.inference_components`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from hydranet.core.augment import DeviceAugment
from hydranet.core.checkpoint import read_checkpoint
from hydranet.core.checkpoint_checks import BASELINES, check_task_states
from hydranet.core.checkpoint_stage import Stage, checkpoint_stage
from hydranet.core.decode import decode_file, to_square_rgb, unreadable_reason
from hydranet.core.device import resolve_settings
from hydranet.core.errors import CheckpointError, DataError, InputError, not_a_choice
from hydranet.core.eval_data import check_data_overrides, evaluation_spec, missing_data_message
from hydranet.core.evaluated import Evaluation
from hydranet.core.forward import spec_model
from hydranet.core.image_input import (ACCEPTED, ImageInput, array_to_pil, batch_size_argument, file_object,
                                       find_image_files, float_range_problem, given, image_items, tensor_image)
from hydranet.core.interfaces import Task
from hydranet.core.model import HydraNet
from hydranet.core.model_loading import (check_stored_baselines, device_argument, resolve_checkpoint_spec,
                                         state_dict_mismatch)
from hydranet.core.paths import MissingPathError
from hydranet.core.plugins import Components, default_components
from hydranet.core.spec import ResolvedSpec
from hydranet.core.task_answers import decode_outputs, decode_task, error_report

__all__ = ["Evaluation", "SPLITS", "TrainedModel", "UNSTORED_BASELINE"]

#: the parts of a checkpoint's data `TrainedModel.evaluate` (and `hydranet eval --split`) can score
SPLITS = ("val", "train", "all", "test")

#: `Evaluation.note` for a checkpoint that does not store the constants fitted on its training labels
UNSTORED_BASELINE = ("the baseline is fitted on this data's own train split: this checkpoint is older than hydranet's "
                     "storing the one fitted on its training labels")


class TrainedModel:
    """A HydraNet with its tasks and preprocessing, ready to predict or evaluate."""

    def __init__(self, model: HydraNet, tasks: Sequence[Task], spec: ResolvedSpec, preprocess: dict[str, Any],
                 device: torch.device, checkpoint: dict[str, Any] | None = None,
                 components: Components | None = None, path: str | Path | None = None):
        self.model = model.eval()
        #: the checkpoint it was loaded from (None when built otherwise)
        self.path = None if path is None else Path(path)
        self.tasks = list(tasks)
        self.spec = spec
        #: what `spec` resolved with (stand-ins for the weighting, and for a dataset that is not installed)
        self.components = components
        self.image_size = int(preprocess["image_size"])
        self.device = device
        self.mean, self.std = tuple(preprocess["mean"]), tuple(preprocess["std"])
        self.normalize = DeviceAugment(device, flip=False, mean=self.mean, std=self.std)
        self.info = {k: v for k, v in (checkpoint or {}).items() if k in ("epoch", "metrics", "hydranet_version")}
        #: the folder its run started in, where the spec's relative paths count from (None: not recorded)
        self.started_in: str | None = (checkpoint or {}).get("started_in")
        #: which epoch of its run the weights are from, and whether best.pt's or an unfinished run's (None: unknown)
        self.stage: Stage | None = checkpoint_stage(checkpoint) if checkpoint else None
        #: each task's best constant prediction fitted on the training labels (`evaluation.baseline_outputs`), as
        #: the checkpoint stores it: the baseline `evaluate` scores on any data. Empty for an older checkpoint.
        self.baseline_outputs: dict[str, list[float] | None] = dict((checkpoint or {}).get(BASELINES) or {})

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu",
                        components: Components | None = None) -> "TrainedModel":
        target = device_argument(device)
        if components is not None and not isinstance(components, Components):
            raise InputError(f"components are what hydranet.components(...) returns (None: the installed "
                             f"plugins); got a {type(components).__name__}")
        data = read_checkpoint(path)  # which also refuses a path that is not a str or Path
        path = Path(path)
        components = components or default_components()
        spec, components = resolve_checkpoint_spec(path, data, components)
        tasks = spec.build_tasks()
        check_task_states(path, data, tasks)
        for task in tasks:
            task.load_state_dict(data.get("task_state", {}).get(task.name, {}))
        check_stored_baselines(path, data, tasks)
        model = spec_model(spec, tasks)
        try:
            model.load_state_dict(data["model"])
        except RuntimeError as error:
            raise CheckpointError(f"the weights in {path} do not fit the model its spec describes:\n"
                                  + state_dict_mismatch(error)) from None
        return cls(model.to(target), tasks, spec, data["preprocess"], target, data, components, path=path)

    def __repr__(self) -> str:
        """TrainedModel('runs/demo/best.pt', epoch 3 of 20, best, backbone tiny, tasks age, gender, ethnicity,
        image_size 32, device cpu): the epoch, so that a mid-run last.pt is not taken for the final model."""
        source = f"{str(self.path)!r}, " if self.path is not None else ""
        stage = f"{self.stage.short()}, " if self.stage is not None else ""
        return (f"TrainedModel({source}{stage}backbone {self.spec.backbone.entry.name}, "
                f"tasks {', '.join(self.task_names)}, image_size {self.image_size}, device {self.device})")

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def preprocess(self, image: ImageInput) -> Tensor:
        """One image as uint8 (3, S, S) RGB, prepared exactly as the training images were.

        Takes an image file (str or Path, or a binary file object such as
        io.BytesIO), a PIL image, a numpy array (H, W) or (H, W, C) uint8 or
        uint16 with C 1, 3 or 4, read as grayscale, RGB or RGBA (flip OpenCV's
        BGR first: `array[..., ::-1]`; a CMYK image's array is not RGBA: pass
        the PIL image), or a tensor (C, H, W) uint8, uint16 or float in [0, 1].
        16-bit pixels keep their high byte, as 16-bit files do. Any size is
        centre-cropped to a square and resized to S, as training did; a uint8
        (3, S, S) tensor is taken as already prepared and returned as it is.
        A file is decoded as training decoded its files (large JPEGs at
        reduced scale); a PIL image is the caller's, so it is never changed.
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
        stream = file_object(image)
        if stream is not None:
            return self._read_stream(stream)
        raise InputError(f"preprocess takes one image: {ACCEPTED}; got {given(image)}")

    def _read_path(self, path: Path) -> Tensor:
        if path.is_dir():
            raise InputError(f"{path} is a folder; predict takes image files. For every image in it, each "
                             f"row naming its file, use predict_files({str(path)!r}), as `hydranet predict "
                             "FOLDER` does")
        try:
            return self._read_file(path)
        except Exception as error:  # PIL raises many kinds; the message says which
            reason = "file not found" if isinstance(error, FileNotFoundError) else unreadable_reason(error, path)
            raise InputError(f"cannot read image {path}: {reason}. predict_files() reports an unreadable file "
                             "in its row instead of stopping") from None

    def _read_file(self, path: Path) -> Tensor:
        return torch.from_numpy(decode_file(path, self.image_size))

    def _read_stream(self, stream: IO[bytes]) -> Tensor:
        """A binary file object's image, decoded as the file itself would be (`decode_file`)."""
        try:
            return torch.from_numpy(decode_file(stream, self.image_size))
        except Exception as error:  # PIL raises many kinds; the message says which
            raise InputError(f"cannot read an image from {given(stream)}: {unreadable_reason(error)}") from None

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
            results += decode_outputs(self, self.predict_tensor(batch))
        return results

    def evaluate(self, overrides: str | Iterable[str] = (), split: str = "val", progress: bool = False,
                 components: Components | None = None, details: bool = True, *,
                 option: str = "overrides") -> "Evaluation":
        """Metrics on the stored spec's data, or on data changed by `overrides` ("data.KEY=VALUE", one or a list).

        `split` is one of `SPLITS`: "val" (the part training scored),
        "train", "all" (every part), or "test": the part held out from
        training and from choosing the best epoch, which only a spec with
        `data.test_fraction` > 0 has. To score other held-out images,
        evaluate a folder of them with
        `evaluate("data.root=DIR", split="all")`: DIR is read in the format
        of the model's dataset (which takes DIR as its `root` parameter), or
        as a UTKFace folder when that dataset draws its images instead of
        reading them (synthetic); nothing is written to DIR. A dataset with
        no `root` parameter is refused, not swapped for another
        (`folder_role`). `option` is what messages call the overrides
        (`hydranet eval` passes "--set").

        The metrics come from the training loop's own `evaluate`, so they match
        what training recorded; `details` adds a second pass for what a metric
        hides: each classification task's confusion matrix and each regression
        task's error distribution. The baseline is the constant prediction
        fitted on the labels the model was trained on (stored in the
        checkpoint), scored on this data, so that any data is measured against
        the same constant; a checkpoint older than that fits it on this
        data's own train split, and the note says so.
        """
        from hydranet.core.engine import batch_source, load_prepared_data
        from hydranet.core.evaluation import baseline_outputs, evaluate, score_baselines

        if split not in SPLITS:
            raise InputError(f"{not_a_choice(split, SPLITS, 'split')}. 'val' is the part of the data "
                             "training scored, 'test' the part held out (data.test_fraction), 'all' every part. "
                             "To score other "
                             "held-out images, evaluate a folder of them in the same format, "
                             "evaluate('data.root=DIR', split='all') (hydranet eval CKPT --data DIR --split all)")
        overrides = check_data_overrides(overrides, option)
        spec, note = evaluation_spec(self, overrides, components, option)
        try:
            data = load_prepared_data(spec, self.tasks, progress)
        except MissingPathError as missing:
            raise DataError(missing_data_message(self, missing, option) if not overrides else str(missing)) from None
        if split == "test" and spec.spec.data.test_fraction <= 0:
            raise DataError(f"this model's spec has no test split (data.test_fraction is "
                            f"{spec.spec.data.test_fraction:g}): its run held no images out. Evaluate split 'val', "
                            "train a new run with data.test_fraction > 0 (e.g. --set data.test_fraction=0.1), or "
                            "score a folder of held-out images with --data DIR --split all")
        index = {"val": data.val_index, "train": data.train_index, "test": data.test_index,
                 "all": torch.cat([data.train_index, data.val_index, data.test_index]).sort().values}[split]
        if index.numel() == 0:
            if split == "val":  # no validation split: the run measured its metrics on the training images
                raise DataError("the 'val' split of this data is empty, so the run measured its metrics on the "
                                "training images; evaluate on split 'train' (--split train), as it did, or 'all' "
                                "(--split all) instead")
            raise DataError(f"the '{split}' split of this data is empty; evaluate on split 'all' (--split all) "
                            "instead")
        settings = resolve_settings(str(self.device), "fp32", False, False)
        self.model.eval()
        result = evaluate(self.model, self.tasks, batch_source(spec, data, settings), data.targets.to(self.device),
                          index, self.normalize, settings, batch_size=256)
        constants: dict[str, Any] = dict(self.baseline_outputs)
        unstored = {task.name for task in self.tasks} - set(constants)
        if unstored:  # an older checkpoint: fit them on this data's train split, as hydranet did before
            constants.update(baseline_outputs(self.tasks, data.targets[data.train_index], only=unstored))
            note = "; ".join(filter(None, [note, UNSTORED_BASELINE]))
        baselines = score_baselines(self.tasks, constants, data.targets[index])
        report = self.error_report(data, index) if details else {}
        root = getattr(spec.data.params, "root", None)
        return Evaluation(split, int(index.numel()), result, baselines, report, spec.data.entry.name, note,
                          usable=data.usable, data_notes=list(data.notes), problems=list(data.problems),
                          data_root=os.path.abspath(os.path.expanduser(root)) if isinstance(root, (str, os.PathLike))
                          else None)

    def error_report(self, data: Any, index: Tensor, batch_size: int = 256) -> dict[str, dict[str, Any]]:
        """Per task: a confusion matrix (classification) or the error distribution (regression); see
        `task_answers.error_report`."""
        return error_report(self, data, index, batch_size)

    def predict_files(self, files: str | os.PathLike | Iterable[str | os.PathLike], batch_size: int = 64,
                      progress: bool = False) -> list[dict[str, Any]]:
        """One row per file, in order: `{file, task: prediction, ...}`, or `{file, error}` for an unreadable one.

        `files`: image files and folders, one or a list, as `hydranet
        predict` takes them; a folder stands for its image files (searched
        recursively, sorted; see `find_image_files`). A path that does not exist
        is refused before any work. A folder of photos usually holds a few
        broken or non-image files; one of them must not cost the whole run,
        so each is reported in its row. The image-like files a folder's
        search leaves out (hidden ones, a .gif) get no row, so a UserWarning
        names them (`FoundImages.note`, what `hydranet predict` prints on
        stderr): silent, they would look lost.
        """
        from tqdm import tqdm

        batch_size = batch_size_argument(batch_size)
        found = find_image_files(files)
        if found.skipped:
            warnings.warn(found.note(), UserWarning, stacklevel=2)
        files = found.files
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
                        slot["error"] = unreadable_reason(error, path)
                if images:
                    for slot, prediction in zip(readable, decode_outputs(self, self.predict_tensor(torch.stack(images)))):
                        slot.update(prediction)
                rows += slots
                bar.update(len(chunk))
        return rows

    def decode_task(self, k: int, output: Tensor) -> list[Any]:
        """Task k's `decode` of a batch of its outputs (on the host), checked: one dict per row, in order; see
        `task_answers.decode_task`, which names the task and its plugin when the rows are wrong."""
        return decode_task(self, k, output)
