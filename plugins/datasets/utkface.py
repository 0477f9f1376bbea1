"""UTKFace: a folder of face crops whose labels live in the file names.

`30_0_3_20170117145159065.jpg.chip.jpg` is age 30, gender 0, race 3, then the
capture date. The dataset only splits names into raw fields; the tasks
(`tasks/utkface.py`) decide what a valid age, gender or race is. That split
keeps a wrong label a per-task missing label instead of a lost sample.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from hydranet.core.errors import DataError
from hydranet.core.hookspecs import hookimpl
from hydranet.core.image_input import IMAGE_SUFFIXES, FolderWalk
from hydranet.core.interfaces import Dataset, Sample
from hydranet.core.paths import existing_dir, os_reason, printable

# IMAGE_SUFFIXES are those `hydranet predict` reads: a .webp or .tif face that predict takes must not be
# left out of training without a word.
#: The label fields of a name, in order; the date that follows them is not a label.
LABEL_FIELDS = ("age", "gender", "race")
MALFORMED = "file name does not match AGE_GENDER_RACE_DATE.jpg"
#: UTKFace dates are 17-digit timestamps. Requiring a long last field is what tells
#: `39_1_20170116174525125.jpg` (race missing) from `30_0_3.jpg` (date missing): without
#: it the latter would silently lose its race label instead of being reported.
MIN_DATE_DIGITS = 8

_DIGITS = re.compile(r"[0-9]*")


def parse_utkface_name(filename: str) -> dict[str, str] | None:
    """Raw label fields of a UTKFace file name, or None when it is malformed.

    Lenient where the real data is sloppy: whitespace around fields is dropped
    (`44_1_4_20170116235150272 .jpg.chip.jpg`), the date ends at its first
    non-digit (`55_0_0_20170116232725357jpg.chip.jpg`), a name with only age
    and gender before the date has no "race" key (three real files), and an
    empty field is a missing label (`53__0_...` has no gender, race 0). Values
    are not range-checked: that is each task's job.
    """
    split = _split_name(filename)
    return None if split is None else _record(split[0])


def utkface_key(filename: str) -> str | None:
    """What identifies one UTKFace sample: its label fields and capture date, or None when malformed.

    The data ships in two spellings of the same photo (`X.jpg` in the "in the
    wild" set, `X.jpg.chip.jpg` in the aligned crops, sometimes with a stray
    space); both give the same key, so a folder holding both is not counted twice.
    """
    split = _split_name(filename)
    return None if split is None else _key(*split)


def _record(labels: list[str]) -> dict[str, str]:
    """The raw label fields of a name's label part; an empty field is no key (a missing label)."""
    return {key: value for key, value in zip(LABEL_FIELDS, labels) if value}


def _key(labels: list[str], date: str) -> str:
    """`utkface_key` of a split name."""
    return "_".join([*labels, date])


def _split_name(filename: str) -> tuple[list[str], str] | None:
    """(label fields, date digits) of a well-formed name, else None."""
    fields = [field.strip() for field in os.path.basename(filename).strip().split("_")]
    if len(fields) < 3:
        return None
    labels, last = fields[:-1], fields[-1]
    date = _DIGITS.match(last).group()  # type: ignore[union-attr]  # "*" always matches
    if len(labels) > len(LABEL_FIELDS) or len(date) < MIN_DATE_DIGITS:
        return None
    if not labels[0].isascii() or not labels[0].isdigit():
        return None
    return labels, date


def is_image_name(name: str) -> bool:
    """An image by its extension; hidden files (macOS `._x.jpg` forks) are not images."""
    return not name.startswith(".") and name.strip().lower().endswith(IMAGE_SUFFIXES)


def image_files(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files in `folder` and, when `recursive`, in its subfolders, in a stable order.

    The order is by path below `folder`, part by part, so a folder without
    subfolders lists exactly as it always did (by name): its samples keep
    their decode-cache key and their train/validation split. Hidden folders
    (`.thumbnails/`, `.git/`) are skipped, as `hydranet predict` skips them.
    Symbolic links to folders are followed (a part of the download kept on
    another disk and linked in), each real folder read once: a second link
    to one, or a link back to a folder above it (which would never end), is
    not read again (`FolderWalk`; the dataset reports it). A broken symbolic
    link is listed (it is named like an image): the dataset reports it,
    rather than leaving it out unsaid.
    """
    return [Path(image.source) for image in listed_images(folder, recursive, [])]


class ListedImage(NamedTuple):
    """One listed image: its path as `str(folder / part / ...)` spells it, its parts below `folder`, and whether
    it is a broken symbolic link (reported, not read: found while listing, so it is not asked again)."""

    source: str
    parts: tuple[str, ...]
    broken: bool


def listed_images(folder: Path, recursive: bool, unlisted: list[tuple[str, OSError]],
                  repeated: list[tuple[str, str]] | None = None) -> list[ListedImage]:
    """`image_files`' listing, without a system call or a `Path` per regular file.

    The real data is 23,708 files in one folder, listed on every run before
    the decode cache is even asked: a `stat` per file (`Path.is_file`), then
    an `lstat` (is it a broken link?), plus a `Path` built, joined and made
    relative for the sort, cost most of a warm start's data time. The type a
    folder listing already reports (`os.scandir`; a file system that reports
    none is asked, by `DirEntry`) tells a regular file from a link; only links
    are asked about further, as before. A folder that cannot be listed (no
    permission) lists nothing, and is added to `unlisted` with the error, so
    the dataset can report it rather than lose its images without a word; a
    folder not read again (a second link to it, a link back up) is added to
    `repeated` with why, for the same reason.
    """
    return _walk(folder, recursive, unlisted, None, repeated)[0]


def listed_images_up_to(folder: Path, limit: int) -> tuple[list[ListedImage], bool]:
    """`listed_images` of `folder` and its subfolders, reading no further folder once `limit` images are found,
    and whether every folder was read (then the list is whole, however far past `limit` its last folder took it).

    A caller that only counts, as the `folder` dataset counts the images its
    CSV leaves out, need not list a huge tree whole, and can say whether its
    count is exact or a lower bound.
    """
    return _walk(folder, True, [], limit)


def _walk(folder: Path, recursive: bool, unlisted: list[tuple[str, OSError]], limit: int | None,
          repeated: list[tuple[str, str]] | None = None) -> tuple[list[ListedImage], bool]:
    """The images below `folder` in path order, and whether no folder was left unread for `limit`."""
    found: list[ListedImage] = []
    walk = FolderWalk(folder, _visible if recursive else None)
    for below, place, entries in walk:
        found += _images(place, below, entries)
        if limit is not None and len(found) >= limit:
            break
    unlisted += walk.unlisted
    if repeated is not None:
        repeated += walk.repeated
    return sorted(found, key=lambda image: image.parts), walk.complete


def _visible(name: str) -> bool:
    """Whether a subfolder is read: hidden ones (`.thumbnails/`, `.git/`) hold no photos of the data."""
    return not name.startswith(".")


def _images(place: Path, below: tuple[str, ...], entries: list[os.DirEntry]) -> list[ListedImage]:
    """The images among the entries (other than folders) of `place`; `below` is its parts."""
    prefix = _child_prefix(place)
    images = []
    for entry in entries:
        name = entry.name
        if is_image_name(name):
            path = prefix + name
            if entry.is_symlink():
                listed, broken = _link_listing(Path(path))
            else:
                listed, broken = entry.is_file(follow_symlinks=False), False
            if listed:
                images.append(ListedImage(path, (*below, name), broken))
    return images


def _link_listing(path: Path) -> tuple[bool, bool]:
    """Whether a link is listed, and whether it is broken: listed when it leads to a file, or leads nowhere
    (then reported as broken)."""
    if path.is_file():
        return True, False
    broken = _broken_link(path)
    return broken, broken


def _child_prefix(place: Path) -> str:
    """What `str(place / name)` writes before `name`: the sources (and so the cache key) stay as `Path` spells
    them. `Path(".") / "a.jpg"` is "a.jpg", not "./a.jpg"."""
    return "" if place == Path(".") else os.path.join(place, "")


def _broken_link(path: Path) -> bool:
    """A symbolic link whose target is gone (a moved data folder, a link copied without it)."""
    return path.is_symlink() and not path.exists()


def _unlisted_reason(error: OSError) -> str:
    """Why a folder below data.root was not read, as its report line says it."""
    return f"cannot list this folder ({os_reason(error)}), so the images in it are left out"


def _no_images_error(folder: Path, recursive: bool, unlisted: list[tuple[str, OSError]]) -> DataError:
    """Explain a folder without images; with `recursive` off, name the subfolders that hold some.

    Subfolders that could not be listed may hold the images: they are named, with why.
    """
    found = f"no {'/'.join(IMAGE_SUFFIXES)} images in {folder}"
    if unlisted:
        named = "; ".join(f"{printable(place)} could not be listed ({os_reason(error)})"
                          for place, error in unlisted[:5])
        more = f"; and {len(unlisted) - 5} more" if len(unlisted) > 5 else ""
        return DataError(f"{found} or the subfolders that could be read; {named}{more}. Make them readable by "
                         "this user, or set data.root to the folder that holds the UTKFace .jpg files")
    if recursive:
        return DataError(f"{found} or its subfolders; set data.root to the folder that holds the UTKFace .jpg files")
    try:
        nested = sorted(p.name for p in folder.iterdir() if p.is_dir() and image_files(p))
    except OSError:
        nested = []
    hint = (f"its subfolders {', '.join(nested)} hold images: set data.recursive: true to read them all"
            if nested else "set data.root to the folder that holds the UTKFace .jpg files")
    return DataError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {folder} (data.recursive is false); {hint}")


class UTKFaceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str = Field(description="Folder of UTKFace images (e.g. data/UTKFace); labels are read from the file names.")
    recursive: bool = Field(True, description="Read the images in root's subfolders too (the in-the-wild download "
                                              "unpacks into part1/, part2/, part3/); false reads root's own only.")


class UTKFaceDataset(Dataset):
    """Every image in `root` and its subfolders whose name parses; malformed names and duplicates are reported.

    Subfolders are read because the real downloads come in them: the
    in-the-wild set unpacks into part1/, part2/ and part3/, and reading only
    the top folder (or, as the old error advised, one part) trained on a third
    of the data without a word. Two files with the same label fields and date
    (`X.jpg` and `X.jpg.chip.jpg`, or one photo in two parts) are one sample:
    the first in path order is kept, the other reported as its duplicate, so
    it cannot land in both the training and validation split. A symbolic
    link to a folder is read as that folder (one part kept on another disk
    and linked in), each real folder once: a second link to one, or a link
    back to a folder above it, is reported and not read (`FolderWalk`).
    """

    #: What to tell a user whose root is missing; subclasses point elsewhere.
    missing_root_hint = ("download UTKFace (the aligned and cropped faces) and set data.root to its folder "
                         "(in the spec, or --set data.root=DIR), or try `data: synthetic`, which needs no download")

    def __init__(self, root: str | Path, recursive: bool = True):
        self.root = str(root)
        self.recursive = recursive

    @classmethod
    def from_params(cls, params: UTKFaceParams) -> UTKFaceDataset:
        return cls(params.root, params.recursive)

    def samples(self) -> list[Sample]:
        self.problems.clear()  # listing twice must not report every problem twice
        folder = existing_dir(self.root, "UTKFace folder", self.missing_root_hint)
        unlisted: list[tuple[str, OSError]] = []  # folders that could not be listed, and why
        repeated: list[tuple[str, str]] = []  # folders not read again (a second link, a link back up), and why
        files = listed_images(folder, self.recursive, unlisted, repeated)
        if unlisted and unlisted[0][0] == str(folder):  # the root itself, read first
            raise DataError(f"cannot list UTKFace folder {printable(str(folder))}: {os_reason(unlisted[0][1])}; "
                            "make it readable by this user, or set data.root to another folder")
        if not files:
            raise _no_images_error(folder, self.recursive, unlisted)
        for place, error in unlisted:  # reported like any other skipped entry, so strict mode stops for them
            self.report_problem(place, _unlisted_reason(error))
        for place, why in repeated:
            self.report_problem(place, why)
        samples = []
        first: dict[str, tuple[str, ...]] = {}  # key -> the parts below `folder` of the file that has it
        for source, parts, broken in files:
            split = _split_name(parts[-1])  # once per name: it gives both the record and the key
            if broken:
                self.report_problem(source, f"broken symbolic link (to {os.readlink(source)}, which does not exist)")
            elif split is None:
                self.report_problem(source, MALFORMED)
            elif (key := _key(*split)) in first:
                self.report_problem(source, f"duplicate of {'/'.join(first[key])}")
            else:
                first[key] = parts
                samples.append(Sample(source, _record(split[0])))
        return samples

    def __repr__(self) -> str:
        recursive = "" if self.recursive else ", recursive=False"
        return f"{type(self).__name__}(root={self.root!r}{recursive})"


@hookimpl
def register_datasets(register: Any) -> None:
    register("utkface", UTKFaceDataset.from_params, params=UTKFaceParams,
             description="UTKFace face crops; age, gender and race parsed from AGE_GENDER_RACE_DATE.jpg names.")
