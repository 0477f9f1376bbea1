"""An image folder plus a CSV of labels: the way to train on your own data.

Each CSV row names an image (relative to the folder) and gives any number of
label columns. A task reads the column its `label` parameter names, so a new
task (`{name: smiling, kind: binary, label: smile}`) needs only a new column.
An empty cell is a missing label for that task alone; the image still trains
the others.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hydranet.core.errors import DataError, closest_name
from hydranet.core.hookspecs import hookimpl
from hydranet.core.interfaces import Dataset, Sample
from hydranet.core.paths import existing_dir, existing_file, os_reason, path_spellings
from hydranet.core.wording import english_list, plural
from hydranet.plugins.datasets.csv_cells import (EXCEL_SEPARATOR_LINE, SemicolonNumbers, not_utf8_error, row_record,
                                                 sniff_delimiter)
from hydranet.plugins.datasets.name_matching import NameListings, folded, nfc, path_below, spelled
from hydranet.plugins.datasets.utkface import listed_images_up_to

DEFAULT_CSV = "labels.csv"
#: The least number of images the search for images the CSV leaves out reads; it reads ten per CSV row beyond
#: that (see `FolderDataset._unused_note`).
UNUSED_SEARCH_MIN = 10_000


def _resolve(path: Path, folders: dict[Path, Path]) -> Path:
    """`path.resolve()` of an existing file, each folder resolved once (`folders` keeps them).

    Resolving looks at every part of a path (an `lstat` each); for 23,708 rows that was most of the
    listing's time. Only the file's own name is looked at per row: a file that is no link resolves to its
    resolved folder plus its name; a link is resolved whole, as before.
    """
    if os.path.islink(path):
        return path.resolve()
    return _resolved_folder(path.parent, folders) / path.name


def _resolved_folder(folder: Path, folders: dict[Path, Path]) -> Path:
    """`folder.resolve()`, once per folder: `folders` keeps each one resolved."""
    if folder not in folders:
        folders[folder] = folder.resolve()
    return folders[folder]


class FolderParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str = Field(description="Folder of images; the CSV's file names are relative to it.")
    csv: str | None = Field(None, description=f"CSV with one row per image and one column per label; "
                                              f"default: <root>/{DEFAULT_CSV}.")
    file_column: str = Field("file", description="CSV column that names each row's image file.")


class FolderDataset(Dataset):
    """Images listed by a CSV; rows without a usable image are reported and skipped.

    A row naming an image an earlier row already named (however spelled:
    `a.jpg`, `./a.jpg`, a symlink) is a duplicate: the first row is kept and
    the later one reported, so one image is never weighted twice or split
    across training and validation.
    """

    def __init__(self, root: str | Path, csv_path: str | Path | None = None, file_column: str = "file"):
        self.root = str(root)
        self.csv = str(csv_path) if csv_path else str(Path(root) / DEFAULT_CSV)
        self.file_column = file_column

    @classmethod
    def from_params(cls, params: FolderParams) -> FolderDataset:
        return cls(params.root, params.csv, params.file_column)

    def samples(self) -> list[Sample]:
        self.problems.clear()  # listing twice must not report every problem twice
        self.notes.clear()
        folder = existing_dir(self.root, "image folder", "set data.root to the folder that holds the images "
                                                          "(in the spec, or --set data.root=DIR)")
        table = existing_file(self.csv, "label CSV", f"set data.csv to the CSV of labels, or put it at "
                                                      f"<root>/{DEFAULT_CSV} (a `{self.file_column}` column "
                                                      f"naming each image, plus one column per label)")
        try:
            with open(table, newline="", encoding="utf-8-sig") as handle:
                first = handle.readline()
                excel = EXCEL_SEPARATOR_LINE.fullmatch(first.strip("\r\n"))
                if excel:  # Excel's "sep=;" line names the separator; the header is the line after it
                    return self._read(csv.DictReader(handle, delimiter=excel.group(1)), folder, skipped=1)
                delimiter = sniff_delimiter(first, self.file_column)
                handle.seek(0)
                return self._read(csv.DictReader(handle, delimiter=delimiter), folder)
        except UnicodeDecodeError as error:
            raise not_utf8_error(table, error) from error
        except csv.Error as error:
            raise DataError(f"{table} is not a readable CSV: {error}") from error
        except OSError as error:  # permission denied, an I/O error: the file is there (checked above)
            raise DataError(f"cannot read label CSV {table}: {os_reason(error)}; make it readable by this user, "
                            "or set data.csv to another CSV of labels") from error

    def _read(self, reader: csv.DictReader, folder: Path, skipped: int = 0) -> list[Sample]:
        """The samples of the CSV rows `reader` gives; `skipped` lines before its header (Excel's `sep=` line) are
        counted in the line numbers that name each row."""
        columns = self._columns(reader)
        delimiter = reader.reader.dialect.delimiter
        samples = []
        first: dict[Path, tuple[int, dict[str, str]]] = {}  # resolved image -> its first line, its record
        named: set[Path] = set()  # resolved images some row names, usable or not: the others are unused
        listings = NameListings()  # folders' names, for names written in another form
        resolved: dict[Path, Path] = {}  # folder -> itself resolved, for `_resolve`
        renamed: list[tuple[str, str, Path]] = []  # (where, the CSV's name, the file) matched in another form
        numbers = SemicolonNumbers(delimiter)  # decimal commas read, dotted thousands noted
        for row in reader:
            where = f"{self.csv}:{reader.line_num + skipped}"
            file = (row.get(self.file_column) or "").strip()
            path, others = self._find_image(folder, file, listings) if file else (None, [])
            image = _resolve(path, resolved) if path is not None else None
            problem = (self._row_problem(row, columns, delimiter)
                       or ("" if file else f"no image file in column '{self.file_column}'"))
            record, read = numbers.read(row_record(row, self.file_column))
            if image is not None:
                named.add(image)
                if not problem and image in first:
                    problem = self._duplicate(file, record, *first[image])
            elif file:
                hinted, reason = self._not_found(folder, file, listings, others)
                named.update(_resolve(other, resolved) for other in hinted)
                problem = problem or reason
            if problem:
                self.report_problem(where, problem)
                continue
            first[image] = (reader.line_num + skipped, record)
            samples.append(Sample(str(path), record, origin=where))
            numbers.keep(where, record, read)
            if others:
                renamed.append((where, file, path))
        if renamed:
            self.notes.append(self._renamed_note(folder, renamed))
        self.notes.extend(numbers.notes())
        unused = self._unused_note(folder, named, resolved, limit=UNUSED_SEARCH_MIN + 10 * reader.line_num)
        if unused:
            self.notes.append(unused)
        return samples

    def _duplicate(self, file: str, record: dict[str, str], line: int, kept: dict[str, str]) -> str:
        """Why a row naming an image an earlier row (at `line`, with the labels `kept`) named is skipped.

        Whether the two rows' labels differ matters: the same labels twice is a
        harmless repeat, other labels are a conflict the user must settle, and
        the message says which row's labels the run uses.
        """
        same = f"duplicate of {self.csv}:{line} (image '{file}' is listed twice"
        differ = [column for column in dict.fromkeys([*kept, *record]) if record.get(column) != kept.get(column)]
        if not differ:
            return f"{same}, with the same labels)"

        def cell(value: str | None) -> str:
            return repr(value) if value is not None else "empty"

        shown = ", ".join(f"{column} {cell(record.get(column))} here, {cell(kept.get(column))} at line {line}"
                          for column in differ[:3])
        more = f", and {plural(len(differ) - 3, 'other column')}" if len(differ) > 3 else ""
        return (f"{same} with other labels: {shown}{more}); line {line}'s labels are used: if this row's are the "
                f"right ones, remove line {line}, else remove this row")

    def _unused_note(self, folder: Path, named: set[Path], resolved: dict[Path, Path], limit: int) -> str:
        """The note for images under `folder` that no row of the CSV names, or "": they are left out unsaid otherwise.

        The folder is searched as the `utkface` dataset and `hydranet predict`
        search one (image suffixes; hidden files and folders skipped), one
        listing per folder and no system call per regular file, so it costs
        less than the CSV's rows already did (a `stat` each): each image's
        resolved path is its folder's, resolved once, plus its name, and only
        one that no row names that way (a link, say) is resolved whole. A CSV
        naming a few images of a huge tree (data.root a home folder) need not
        pay for listing it whole: the search stops after `limit` images (ten
        per row, and some), and the count is then a lower bound.
        """
        listed, complete = listed_images_up_to(folder, limit)
        named_text = {str(path) for path in named}
        folders: dict[tuple[str, ...], str] = {}  # parts below `folder` -> that folder resolved, with a separator
        unused = []
        for image in listed:
            below = image.parts[:-1]
            if below not in folders:
                folders[below] = os.path.join(_resolved_folder(folder.joinpath(*below), resolved), "")
            if image.broken or folders[below] + image.parts[-1] in named_text:
                continue
            if _resolve(path := Path(image.source), resolved) not in named:
                unused.append(path)
        if not unused:
            return ""
        count = plural(len(unused), "image")
        if not complete:
            count = f"at least {count} (the search stopped after {limit} images)"
        one = len(unused) == 1
        examples = ", ".join(repr(path_below(path, folder)) for path in unused[:3])
        return (f"{count} under {folder} {'is' if one else 'are'} not named in {self.csv}, e.g. {examples}; "
                f"{'it is' if one else 'they are'} not used. Add a row for each image to train on")

    @staticmethod
    def _renamed_note(folder: Path, renamed: list[tuple[str, str, Path]]) -> str:
        """The note for rows whose image name matched a file only in another Unicode normalisation."""
        where, file, path = renamed[0]
        count = len(renamed)
        one = count == 1
        return (f"{plural(count, 'image')} of the CSV {'is' if one else 'are'} named in another Unicode "
                f"normalisation than {'its file' if one else 'their files'} in {folder} (macOS writes names "
                f"decomposed, NFD; most other programs composed, NFC), and matched to {'it' if one else 'them'}: "
                f"e.g. {where} names {spelled(file)}, the file is {spelled(path_below(path, folder))}. "
                f"Nothing is skipped; to match byte for byte, write the CSV's names as the files are named")

    @staticmethod
    def _row_problem(row: Mapping[str | None, Any], columns: list[str], delimiter: str) -> str:
        """Why a row's cells cannot be matched to the header's columns, or "".

        With more cells than columns, or fewer, a cell may sit under the wrong
        column (`a.jpg,0,yes` under `file,age,gender,smile` would train age 0):
        the row is skipped rather than trained on labels that may be shifted.
        The advice is the likely cause of each: more cells, a separator inside
        an unquoted value (a decimal comma in a ','-separated file, most often)
        or a column the header does not name; fewer, labels left out. Extra cells
        that are all empty are no such risk (Excel writes `a.jpg,30,` for a
        column once used and emptied): they are dropped without a word.
        """
        extra = row.get(None) or []
        if not any(isinstance(cell, str) and cell.strip() for cell in extra):
            extra = []
        cells = len(columns) + len(extra) - sum(1 for column in columns if row.get(column) is None)
        if cells == len(columns):
            return ""
        mismatch = (f"row has {plural(cells, 'cell')} but the header has {len(columns)}, so a label may be in the "
                    f"wrong column; ")
        if extra:
            if delimiter == ",":
                value = "a ',' (text, or a decimal comma as in 133,41) must be quoted (\"133,41\", or write 133.41)"
            else:
                shown = "a tab" if delimiter == "\t" else f"a '{delimiter}'"
                value = f"{shown} must be quoted (\"a{delimiter}b\")"
            return f"{mismatch}a value holding {value}; or the header lacks a column: add its name to the header"
        empty = delimiter.join(["a.jpg", "30", "", ""]) if delimiter != "\t" else "a.jpg<TAB>30<TAB><TAB>"
        return f"{mismatch}write an empty cell for each missing label (e.g. {empty})"

    def _find_image(self, folder: Path, file: str, listings: NameListings) -> tuple[Path | None, list[Path]]:
        """The image a CSV cell names, relative to `folder` (or absolute), and the files it names in another form.

        A name that is there as written is that file (others: []). One that is
        not, but names one file in another Unicode normalisation, is that file
        (others: [it]); two or more such files leave it unmatched (None), as
        which one was meant is anyone's guess; the message lists them.
        """
        for name in path_spellings(file):
            if (path := folder / name).is_file():
                return path, []
        others = self._matches(folder, file, listings, nfc)
        return (others[0] if len(others) == 1 else None), others

    def _matches(self, folder: Path, file: str, listings: NameListings, key: Callable[[str], str]) -> list[Path]:
        """The files a CSV cell names, in any of its `path_spellings`, once each part is compared by `key`."""
        return list(dict.fromkeys(path for name in path_spellings(file)
                                  for path in listings.matches(folder, name, key)))

    def _not_found(self, folder: Path, file: str, listings: NameListings, others: list[Path]) -> tuple[list[Path], str]:
        """Why the image a row names is not there, with the files the user most likely meant (and those files).

        `others`: the files it names in other Unicode normalisations, when there are several to choose from.
        """
        path = folder / path_spellings(file)[-1]
        if others:
            return others, (f"image file {spelled(file)} not found in {folder}, and files with the same name in "
                            f"other Unicode normalisations are: "
                            f"{', '.join(spelled(path_below(p, folder)) for p in others)}"
                            f"; write the CSV's name as the one meant is named, byte for byte")
        if path.is_dir():
            return [], f"'{file}' in {folder} is a folder, not an image file"
        if path.is_symlink():
            return [], (f"image file '{file}' in {folder} is a broken symbolic link "
                        f"(to {os.readlink(path)}, which does not exist)")
        reason = f"image file '{file}' not found in {folder}"
        other_case = self._matches(folder, file, listings, folded)
        if other_case:
            names = english_list(repr(path_below(other, folder)) for other in other_case)
            return other_case, (f"{reason}; there {'is' if len(other_case) == 1 else 'are'} {names} (file and folder "
                                f"names differ in upper/lower case here): fix the CSV")
        for base, what in ((Path(self.csv).parent, "the CSV's folder"), (Path.cwd(), "the current folder")):
            if (base / file).is_file() and base.resolve() != folder.resolve():
                return [], (f"{reason}, but it is in {what} ({base / file}); the CSV's file names count from "
                            f"data.root ({folder}): write them relative to it, or set data.root to {base}")
        return [], reason

    def _columns(self, reader: csv.DictReader) -> list[str]:
        """The header, with stray spaces dropped (`file, age` is common); checks the file column is there."""
        if not reader.fieldnames:
            raise DataError(f"{self.csv} is empty; it needs a header row with a '{self.file_column}' column "
                            "and one column per label")
        reader.fieldnames = columns = [name.strip() for name in reader.fieldnames]
        twice = sorted({name for name in columns if name and columns.count(name) > 1})
        if twice:  # csv.DictReader would keep the last such cell of each row, and drop the others unsaid
            raise DataError(f"{self.csv} names column{'s' if len(twice) > 1 else ''} {', '.join(map(repr, twice))} "
                            "more than once in its header; rename or remove the extra ones")
        if self.file_column not in columns:
            close = closest_name(self.file_column, columns, cutoff=0.7)  # `File`, `files`: a near miss, not a choice
            meant = (f"; did you mean {close!r}? Rename it to '{self.file_column}', or set data.file_column={close}"
                     if close is not None else "; set data.file_column to the column that names the images")
            raise DataError(f"{self.csv} has no '{self.file_column}' column (its columns: {', '.join(columns)}){meant}")
        return columns

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={self.root!r}, csv={self.csv!r})"


@hookimpl
def register_datasets(register: Any) -> None:
    register("folder", FolderDataset.from_params, params=FolderParams,
             description="Your own images plus a CSV: a file column and one column per label.")
