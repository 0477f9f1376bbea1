"""What the Python API takes as images and paths: checks that name what was given, and conversions.

`TrainedModel.predict`, `preprocess`, `predict_tensor` and `predict_files`
(and `hydranet predict`) share these, so every entry point accepts the same
inputs and refuses the same mistakes with the same words.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from hydranet.core.errors import InputError
from hydranet.core.values import is_whole_number

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

ImageInput = str | os.PathLike | Image.Image | np.ndarray | Tensor

#: what `predict` and `preprocess` take, for the messages
ACCEPTED = ("image files (a str or pathlib.Path), PIL images, numpy arrays (H, W) or (H, W, C) uint8, "
            "or tensors (C, H, W) uint8 or float in [0, 1]")


def given(value: Any) -> str:
    """What a user passed, in a few words: 'a torch.uint8 tensor of shape (3, 16, 16)', 'int 5'."""
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"a numpy {value.dtype} array of shape {value.shape}"
    if isinstance(value, (list, tuple, set, dict)):
        return f"a {type(value).__name__} of {len(value)} item{'s' if len(value) != 1 else ''}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def batch_size_argument(value: Any) -> int:
    if not is_whole_number(value) or value < 1:
        raise InputError(f"batch_size must be a whole number >= 1; got {given(value)}")
    return value


def float_range_problem(images: Tensor) -> str | None:
    """Why a float image tensor is not in [0, 1], or None. One fused aminmax (a device sync on a GPU)."""
    if images.numel() == 0:
        return None
    low, high = (float(v) for v in torch.aminmax(images))
    if low >= 0 and high <= 1:  # NaN fails both
        return None
    scale = " (it looks like 0-255 pixels: pass them as uint8, images.round().to(torch.uint8))" if high > 1 else ""
    return f"{given(images)} has values from {low:g} to {high:g}; a float tensor must be in [0, 1]{scale}"


def array_to_pil(array: np.ndarray) -> Image.Image:
    """A numpy image as PIL gives and takes it: (H, W) grayscale or (H, W, C) with C 1, 3 (RGB) or 4 (RGBA), uint8.

    Channels are taken as RGB: OpenCV's BGR arrays need `array[..., ::-1]`
    (or cv2.cvtColor(array, cv2.COLOR_BGR2RGB)) first.
    """
    if array.dtype != np.uint8:
        raise InputError(f"{given(array)}: a numpy image must be uint8 (0-255), as PIL and OpenCV give it; "
                         "for values in [0, 1] use (array * 255).round().astype('uint8')")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        if array.ndim == 3 and array.shape[0] in (1, 3, 4):
            hint = " It looks channels first (C, H, W): use array.transpose(1, 2, 0)."
        elif array.ndim == 4:
            hint = " For a batch (N, H, W, C), pass it to predict as a whole."
        else:
            hint = ""
        raise InputError(f"{given(array)} is not an image: a numpy image is (H, W) or (H, W, C) with C 1, 3 "
                         f"or 4, channels last, as PIL and OpenCV give it.{hint}")
    if 0 in array.shape:
        raise InputError(f"{given(array)} is empty: an image needs at least one pixel")
    return Image.fromarray(np.ascontiguousarray(array))


def tensor_image(image: Tensor, size: int) -> Tensor | np.ndarray:
    """A (C, H, W) or (H, W) tensor image as uint8: (3, S, S) as it is, any other size as an (H, W, C) array."""
    image = image.detach()  # an image needs no autograd graph; reading one that has it makes torch warn
    if image.dim() == 2:
        image = image.unsqueeze(0)
    if image.dim() != 3 or image.shape[0] not in (1, 3, 4):
        if image.dim() == 4:
            hint = " For a batch (N, C, H, W), pass it to predict as a whole."
        elif image.dim() == 3 and image.shape[-1] in (1, 3, 4):
            hint = " It looks channels last (H, W, C): use image.permute(2, 0, 1)."
        else:
            hint = ""
        raise InputError(f"{given(image)} is not an image: a tensor image is (C, H, W) with C 1, 3 or 4, "
                         f"or (H, W).{hint}")
    if image.is_floating_point():
        problem = float_range_problem(image)
        if problem:
            raise InputError(problem)
        image = (image * 255).round().to(torch.uint8)
    elif image.dtype != torch.uint8:
        raise InputError(f"{given(image)}: a tensor image must be torch.uint8 (0-255) or a float in [0, 1]")
    if image.shape == (3, size, size):
        return image
    return image.permute(1, 2, 0).cpu().numpy()


def image_files(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """What `predict_files` and `hydranet predict` run on: files as given, folders as their image files.

    Folders are searched recursively for the `IMAGE_SUFFIXES`, sorted. A path
    that does not exist, an item that is not a path, and paths that hold no
    image file at all are refused before any work.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    elif not isinstance(paths, Iterable) or isinstance(paths, (bytes, Mapping, Image.Image, np.ndarray, Tensor)):
        raise InputError(f"predict_files takes paths (str or pathlib.Path) of image files or folders, one or a "
                         f"list; got {given(paths)}. For PIL images, arrays or tensors use predict().")
    paths = list(paths)
    for path in paths:
        if not isinstance(path, (str, os.PathLike)):
            raise InputError(f"predict_files takes paths (str or pathlib.Path) of image files or folders; got "
                             f"{given(path)}. For PIL images, arrays or tensors use predict().")
    missing = [str(p) for p in paths if not Path(p).exists() and not Path(p).is_symlink()]  # a broken link: a row
    if missing:
        raise InputError(f"not found: {', '.join(missing)}. predict_files takes paths of image files and "
                         f"folders that exist (a folder stands for its image files, searched recursively), "
                         f"e.g. predict_files('photos/') or predict_files(['a.jpg', 'b.png'])")
    found = expand_image_paths(paths)
    if paths and not found:
        raise InputError("no image files found in: " + ", ".join(map(str, paths))
                         + " (looked for " + ", ".join(IMAGE_SUFFIXES) + ")")
    return found


IMAGE_TYPES = (str, os.PathLike, Image.Image, np.ndarray, Tensor)


def image_items(images: Any) -> list[Any]:
    """`predict`'s argument as a list of single images; anything that is not an image is refused by its index."""
    if isinstance(images, (Tensor, np.ndarray)):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    if not isinstance(images, Iterable) or isinstance(images, (bytes, Mapping)):
        raise InputError(f"predict takes {ACCEPTED}, or a list of them; got {given(images)}")
    items = list(images)
    for index, item in enumerate(items):
        if not isinstance(item, IMAGE_TYPES):
            raise InputError(f"images[{index}] is {given(item)}; predict takes {ACCEPTED}")
    return items


def expand_image_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders as their image files (sorted, recursive), hidden ones left out."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            # a broken link is kept, so that its row says so instead of the image going missing without a word
            found += sorted(p for p in path.rglob("*") if (p.is_file() or p.is_symlink())
                            and p.suffix.lower() in IMAGE_SUFFIXES and not _hidden(p.relative_to(path)))
        else:
            found.append(path)
    return found


def _hidden(relative: Path) -> bool:
    """A hidden file or one in a hidden folder, below the folder given: not a photo of the user's.

    A folder copied from a Mac to a USB stick or a share holds a `._x.jpg`
    (resource fork, not an image) beside every `x.jpg`; `.thumbnails/` and
    `.git/` hold images that are not the user's either. Training's datasets
    skip them the same way.
    """
    return any(part.startswith(".") for part in relative.parts)
