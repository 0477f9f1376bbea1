"""What the Python API takes as images and paths: checks that name what was given, and conversions.

`TrainedModel.predict`, `preprocess`, `predict_tensor` and `predict_files`
(and `hydranet predict`) share these, so every entry point accepts the same
inputs and refuses the same mistakes with the same words.
"""

from __future__ import annotations

import heapq
import io
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from hydranet.core.decode import high_byte
from hydranet.core.errors import InputError
from hydranet.core.paths import os_reason
from hydranet.core.values import is_whole_number
from hydranet.core.wording import plural

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

ImageInput = str | os.PathLike | IO[bytes] | Image.Image | np.ndarray | Tensor

#: what `predict` and `preprocess` take, for the messages
ACCEPTED = ("image files (a str or pathlib.Path, or a binary file object such as io.BytesIO), PIL images, "
            "numpy arrays (H, W) or (H, W, C) uint8 or uint16, or tensors (C, H, W) uint8, uint16 or float in [0, 1]; "
            "C is 1, 3 (RGB) or 4 (RGBA, composited onto black)")


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
    """A numpy image as PIL gives and takes it: (H, W) grayscale or (H, W, C) with C 1, 3 (RGB) or 4 (RGBA).

    uint8, or uint16 (a 16-bit image, as OpenCV's IMREAD_UNCHANGED gives it)
    kept to its high byte, as a 16-bit file is read (`decode.to_rgb`), so the
    array and the file give the same prediction. Channels are taken as RGB:
    OpenCV's BGR arrays need `array[..., ::-1]` (or cv2.cvtColor(array,
    cv2.COLOR_BGR2RGB)) first.

    Four channels are read as RGBA, alpha composited onto black as for files
    (`decode.BACKGROUND`), whatever they hold: `np.asarray` of a CMYK image
    (a CMYK JPEG) also has four channels, and nothing in the array tells them
    apart, so such an image must be passed as the PIL image itself, or
    `image.convert("RGB")` first. The messages say 4 is RGBA for that reason.
    """
    if array.dtype == np.uint16:
        array = high_byte(array)
    if array.dtype != np.uint8:
        raise InputError(f"{given(array)}: {dtype_problem('a numpy image', 'astype')}")
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
                         f"or 4 (gray, RGB, RGBA), channels last, as PIL and OpenCV give it.{hint}")
    if 0 in array.shape:
        raise InputError(f"{given(array)} is empty: an image needs at least one pixel")
    return Image.fromarray(np.ascontiguousarray(array))


def dtype_problem(what: str, cast: str) -> str:
    """Which pixel types `what` (an array or a tensor image) may have, and how to get one from another.

    A float image is most often [0, 1], another integer type most often
    0-255 that arithmetic widened; `cast` is numpy's `astype` or torch's `to`.
    """
    target = "'uint8'" if cast == "astype" else "torch.uint8"
    floats = " or a float in [0, 1]" if cast == "to" else ""
    return (f"{what} must be uint8 (0-255) or uint16 (0-65535, read as its high byte, as 16-bit files are)"
            f"{floats}; for values 0-255 in another type use .round().{cast}({target}), for values in [0, 1] "
            f"(image * 255).round().{cast}({target})")


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
        raise InputError(f"{given(image)} is not an image: a tensor image is (C, H, W) with C 1, 3 or 4 "
                         f"(gray, RGB, RGBA), or (H, W).{hint}")
    if image.is_floating_point():
        problem = float_range_problem(image)
        if problem:
            raise InputError(problem)
        image = (image * 255).round().to(torch.uint8)
    elif image.dtype == torch.uint16:
        image = torch.from_numpy(high_byte(image.cpu().numpy()))  # torch has no >> for uint16
    elif image.dtype != torch.uint8:
        raise InputError(f"{given(image)}: {dtype_problem('a tensor image', 'to')}")
    if image.shape == (3, size, size):
        return image
    return image.permute(1, 2, 0).cpu().numpy()


def find_image_files(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> FoundImages:
    """Files as given, folders as their image files, and the files in those folders that were left out.

    Folders are searched recursively for the `IMAGE_SUFFIXES`, sorted. A path
    that does not exist, an item that is not a path, and paths that hold no
    image file at all are refused before any work. What the search leaves out
    that looks like an image is returned too (`FoundImages.skipped`), so that
    the caller can say so (`FoundImages.note`): a user whose .gif or
    `.hidden.jpg` got no row must learn why, not find it missing.
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
    found = search_image_paths(paths)
    if paths and not found.files:
        skipped = f"\n{found.note()}" if found.skipped else ""
        raise InputError("no image files found in: " + ", ".join(map(str, paths))
                         + " (looked for " + ", ".join(IMAGE_SUFFIXES) + ")" + skipped)
    return found


IMAGE_TYPES = (str, os.PathLike, Image.Image, np.ndarray, Tensor)


def file_object(value: Any) -> IO[bytes] | None:
    """`value` when it is a binary file object (io.BytesIO, open(path, 'rb'), anything with .read), else None.

    One file object is one image, as for PIL's Image.open; without this check
    it would be iterated as a list of its lines. A text-mode file cannot hold
    an image and is refused, with the way out.
    """
    if isinstance(value, (str, bytes, os.PathLike, Image.Image, np.ndarray, Tensor)):
        return None
    if not callable(getattr(value, "read", None)):
        return None
    if isinstance(value, io.TextIOBase):
        raise InputError(f"{given(value)} is a file opened in text mode, which cannot hold an image: open it in "
                         "binary mode, open(path, 'rb'), or pass its path")
    return value


def image_items(images: Any) -> list[Any]:
    """`predict`'s argument as a list of single images; anything that is not an image is refused by its index."""
    if isinstance(images, (Tensor, np.ndarray)):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, (str, os.PathLike, Image.Image)) or file_object(images) is not None:
        return [images]
    if not isinstance(images, Iterable) or isinstance(images, (bytes, Mapping)):
        raise InputError(f"predict takes {ACCEPTED}, or a list of them; got {given(images)}{_bytes_hint(images)}")
    items = list(images)
    for index, item in enumerate(items):
        try:
            if isinstance(item, IMAGE_TYPES) or file_object(item) is not None:
                continue
        except InputError as error:
            raise InputError(f"images[{index}]: {error}") from None
        raise InputError(f"images[{index}] is {given(item)}; predict takes {ACCEPTED}{_bytes_hint(item)}")
    return items


def _bytes_hint(value: Any) -> str:
    """For raw bytes: they are taken as a file's contents only when wrapped, so that a list of them is no puzzle."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ". For the bytes of an image file, pass io.BytesIO(data)"
    return ""


@dataclass(frozen=True)
class Skipped:
    """A file that a folder search left out although it looks like an image (by its name), and why (`SKIP_REASONS`);
    or, with `folder`, a folder it did not read again (a second link to it, a link back up), and why."""

    path: Path
    reason: str
    folder: bool = False


#: Why a folder search leaves an image-like file out, in the order `FoundImages.note` lists them. Each skip
#: is right, but silent it looks like a lost image, so every one is recorded.
IN_HIDDEN_FOLDER = "in hidden folders (.git/, .thumbnails/), which are not searched"
RESOURCE_FORK = "macOS resource forks (._x.jpg beside x.jpg), which are not images"
HIDDEN_FILE = "hidden (the name starts with a dot), as training's datasets skip them; rename one to include it"
OTHER_FORMAT = "named as an image format that is not searched for, as training's datasets do not read it either"
SKIP_REASONS = (IN_HIDDEN_FOLDER, RESOURCE_FORK, HIDDEN_FILE, OTHER_FORMAT)


@dataclass
class FoundImages:
    """What `find_image_files` found: the files to read, and the image-like files of the folders left out (and
    the folders not read again)."""

    files: list[Path]
    skipped: list[Skipped] = field(default_factory=list)

    def note(self, shown: int = 3) -> str:
        """The skipped files in a few lines for the user ("" when none): a count and examples per reason; then
        each folder not read again, and why.

        `hydranet predict` prints it on stderr; each line names up to `shown` files.
        """
        files = [s for s in self.skipped if not s.folder]
        folders = [s for s in self.skipped if s.folder]
        lines = []
        if files:
            lines.append(f"skipped {plural(len(files), 'file')} in the folders given that look like images "
                         f"(the search reads {', '.join(IMAGE_SUFFIXES)}); name a file to read it anyway:")
        for reason in SKIP_REASONS:
            paths = [str(s.path) for s in files if s.reason == reason]
            if paths:
                more = f", ... and {len(paths) - shown} more" if len(paths) > shown else ""
                lines.append(f"  {len(paths)} {reason}: {', '.join(paths[:shown])}{more}")
        if folders:
            lines.append(f"skipped {plural(len(folders), 'folder')} in the folders given, each read once "
                         "(links to folders are followed):")
            lines += [f"  {s.path}: {s.reason}" for s in folders]
        return "\n".join(lines)


def search_image_paths(paths: Iterable[str | Path]) -> FoundImages:
    """Files as given, folders as their image files (sorted, recursive), and what the folders' search left out.

    A file named directly is always kept: the user asked for it, and its row
    says if it cannot be read. Links to folders are followed as training's
    datasets follow them (`FolderWalk`): each real folder is read once, and a
    link to one read already, or back to a folder above it, is listed as skipped.
    """
    found = FoundImages([])
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            found.files.append(path)
            continue
        walk = FolderWalk(path, descend=lambda name: True)  # hidden folders too: their images are reported
        files: list[tuple[Path, str | None]] = []
        for below, place, entries in walk:
            # a broken link is kept, so that its row says so instead of the image going missing without a word
            files += [(place / entry.name, _skip_reason(Path(*below, entry.name))) for entry in entries
                      if _is_file_or_link(entry)]
        for file, reason in sorted(files, key=lambda item: item[0]):
            if reason is None:
                found.files.append(file)
            elif reason:
                found.skipped.append(Skipped(file, reason))
        found.skipped += [Skipped(Path(place), why, folder=True) for place, why in walk.repeated]
        found.skipped += [Skipped(Path(place), f"cannot be read ({os_reason(error)}): its images are not predicted",
                                  folder=True) for place, error in walk.unlisted]
    return found


def _is_file_or_link(entry: os.DirEntry) -> bool:
    """A file (following links), or a link that leads to no file (listed, so that its row says it is broken).

    The link is asked first: `is_file()` of a loop of links raises (ELOOP), which would leave it out unseen.
    """
    try:
        return entry.is_symlink() or entry.is_file()
    except OSError:
        return False


class FolderWalk:
    """The folders below `root`, each real folder read once, links to folders followed; for each folder read,
    in turn: its parts below `root`, its path, and its entries other than folders.

    A link to a folder is read as the folder it leads to (a download kept
    elsewhere and linked into the data folder, `part3 -> /mnt/big/part3`):
    not following it would train on part of the data without a word. Each
    folder's identity (`os.stat`'s st_dev and st_ino, the same whatever path
    or link leads to it) is remembered, so a folder reached again, by a second
    link or through a link that leads back up to a folder that holds it
    (which would never end), is not read again: it is added to `repeated`,
    with why, for the caller to report. The folders reached without a link
    are read first, in path order, then each link in path order with what
    lies below it: a folder that both holds and is linked to is read under
    its own path, and the order (so which path is read, which reported)
    stays the same from run to run. `descend(name)` says which subfolders are
    read (None: `root`'s own entries only). A folder that cannot be listed is
    added to `unlisted` with the error; what was read of it is kept.
    `complete` says whether every folder was read, for a caller that stops
    early.
    """

    def __init__(self, root: Path, descend: Callable[[str], bool] | None):
        self.root = root
        self.descend = descend
        self.repeated: list[tuple[str, str]] = []
        self.unlisted: list[tuple[str, OSError]] = []
        self._read: dict[tuple[int, int], tuple[str, ...]] = {}  # identity -> the parts it was read as
        self._pending: list[tuple[str, ...]] = [()]  # folders reached without a link: a stack, the next one last
        self._links: list[tuple[str, ...]] = []  # links to folders: a heap, the next one first in path order

    @property
    def complete(self) -> bool:
        return not self._pending and not self._links

    def __iter__(self) -> Iterator[tuple[tuple[str, ...], Path, list[os.DirEntry]]]:
        while self._pending or self._links:
            below = self._pending.pop() if self._pending else heapq.heappop(self._links)
            place = self.root.joinpath(*below)
            entries = self._entries(place, below)
            if entries is None:
                continue
            files, subfolders = [], []
            for entry in entries:
                if not _is_folder(entry):
                    files.append(entry)
                elif self.descend is not None and self.descend(entry.name):
                    if entry.is_symlink():
                        heapq.heappush(self._links, (*below, entry.name))
                    else:
                        subfolders.append((*below, entry.name))
            self._pending += sorted(subfolders, reverse=True)
            yield below, place, files

    def _entries(self, place: Path, below: tuple[str, ...]) -> list[os.DirEntry] | None:
        """The entries of `place`, or None when it was read already (then it is in `repeated`)."""
        entries: list[os.DirEntry] = []
        try:
            info = os.stat(place)
            first = self._read.setdefault((info.st_dev, info.st_ino), below)
            if first != below:
                self.repeated.append((str(place), self._why_not(first, below)))
                return None
            with os.scandir(place) as listing:
                for entry in listing:
                    entries.append(entry)
        except OSError as error:
            self.unlisted.append((str(place), error))
        return entries

    def _why_not(self, first: tuple[str, ...], below: tuple[str, ...]) -> str:
        """Why the folder at `below` is not read: it is the one read as `first`."""
        shown = str(self.root.joinpath(*first))
        if below[:len(first)] == first:
            return f"a link back to {shown}, a folder that holds it: not followed, as it would never end"
        return f"the same folder as {shown}, which is read already: not read twice"


def _is_folder(entry: os.DirEntry) -> bool:
    """Whether an entry is a folder (following links), as `os.walk` decides it: an error means no."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _skip_reason(relative: Path) -> str | None:
    """Why the folder search leaves out the file at `relative` (below the folder given): None when it is read,
    "" when it is no image by its name (notes.txt, .DS_Store), else one of `SKIP_REASONS`.

    Hidden files and folders are not the user's photos: a folder copied from
    a Mac to a USB stick or a share holds a `._x.jpg` (resource fork, not an
    image) beside every `x.jpg`; `.thumbnails/` and `.git/` hold images that
    are not the user's either. Training's datasets skip them the same way,
    and read only the `IMAGE_SUFFIXES`, so predict does too.
    """
    suffix = relative.suffix.lower()
    if suffix not in IMAGE_SUFFIXES and suffix not in _pillow_suffixes():
        return ""
    if any(part.startswith(".") for part in relative.parts[:-1]):
        return IN_HIDDEN_FOLDER
    if relative.name.startswith("._"):
        return RESOURCE_FORK
    if relative.name.startswith("."):
        return HIDDEN_FILE
    return None if suffix in IMAGE_SUFFIXES else OTHER_FORMAT


@cache
def _pillow_suffixes() -> frozenset[str]:
    """File name suffixes of the formats Pillow can open (.gif, .ico, .ppm, ...): what looks like an image."""
    Image.init()
    return frozenset(suffix for suffix, name in Image.registered_extensions().items() if name in Image.OPEN)
