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
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hydranet.core.errors import DataError
from hydranet.core.hookspecs import hookimpl
from hydranet.core.image_input import IMAGE_SUFFIXES
from hydranet.core.interfaces import Dataset, Sample
from hydranet.core.paths import existing_dir

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
    if split is None:
        return None
    labels, _ = split
    return {key: value for key, value in zip(LABEL_FIELDS, labels) if value}


def utkface_key(filename: str) -> str | None:
    """What identifies one UTKFace sample: its label fields and capture date, or None when malformed.

    The data ships in two spellings of the same photo (`X.jpg` in the "in the
    wild" set, `X.jpg.chip.jpg` in the aligned crops, sometimes with a stray
    space); both give the same key, so a folder holding both is not counted twice.
    """
    split = _split_name(filename)
    return None if split is None else "_".join([*split[0], split[1]])


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
    (`.thumbnails/`, `.git/`) are skipped, as `hydranet predict` skips them,
    and symbolic links to folders are not followed (one pointing at a parent
    would never end). A broken symbolic link is listed (it is named like an
    image): the dataset reports it, rather than leaving it out unsaid.
    """
    found = []
    for place, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")] if recursive else []
        found += [path for path in map(Path(place).joinpath, names)
                  if is_image_name(path.name) and (path.is_file() or _broken_link(path))]
    return sorted(found, key=lambda path: path.relative_to(folder).parts)


def _broken_link(path: Path) -> bool:
    """A symbolic link whose target is gone (a moved data folder, a link copied without it)."""
    return path.is_symlink() and not path.exists()


def _no_images_error(folder: Path, recursive: bool) -> DataError:
    """Explain a folder without images; with `recursive` off, name the subfolders that hold some."""
    if recursive:
        return DataError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {folder} or its subfolders; set data.root to "
                         "the folder that holds the UTKFace .jpg files")
    nested = sorted(p.name for p in folder.iterdir() if p.is_dir() and image_files(p))
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
    it cannot land in both the training and validation split.
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
        files = image_files(folder, self.recursive)
        if not files:
            raise _no_images_error(folder, self.recursive)
        samples = []
        first: dict[str, Path] = {}
        for path in files:
            record, key = parse_utkface_name(path.name), utkface_key(path.name)
            if _broken_link(path):
                self.report_problem(str(path), f"broken symbolic link (to {os.readlink(path)}, which does not exist)")
            elif record is None or key is None:
                self.report_problem(str(path), MALFORMED)
            elif key in first:
                self.report_problem(str(path), f"duplicate of {first[key].relative_to(folder).as_posix()}")
            else:
                first[key] = path
                samples.append(Sample(str(path), record))
        return samples

    def __repr__(self) -> str:
        recursive = "" if self.recursive else ", recursive=False"
        return f"{type(self).__name__}(root={self.root!r}{recursive})"


@hookimpl
def register_datasets(register: Any) -> None:
    register("utkface", UTKFaceDataset.from_params, params=UTKFaceParams,
             description="UTKFace face crops; age, gender and race parsed from AGE_GENDER_RACE_DATE.jpg names.")
