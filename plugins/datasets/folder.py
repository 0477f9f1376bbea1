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
import unicodedata
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hydranet.core.errors import DataError
from hydranet.core.hookspecs import hookimpl
from hydranet.core.interfaces import Dataset, Sample
from hydranet.core.paths import existing_dir, existing_file, os_reason
from hydranet.core.wording import plural

DEFAULT_CSV = "labels.csv"
#: Separators tried on the header, in order: Excel writes ';' where the decimal mark is a comma, and
#: exports tab-separated text; a CSV read with the wrong one is one column whose name is the whole header.
DELIMITERS = (",", ";", "\t", "|")


def sniff_delimiter(header: str, file_column: str) -> str:
    """The separator that makes `file_column` a column of `header`; else the one giving the most columns.

    Only the header is read: it names the columns, and a label cell (a decimal
    written `3,5`, a quoted name) could mislead a guess from the data rows.
    """
    def cells(delimiter: str) -> list[str]:
        return [cell.strip() for cell in next(csv.reader([header], delimiter=delimiter), [])]

    for delimiter in DELIMITERS:
        if file_column in cells(delimiter):
            return delimiter
    return max(DELIMITERS, key=lambda delimiter: len(cells(delimiter)))  # max keeps the first of a tie: ','


def row_record(row: Mapping[str | None, Any], file_column: str) -> dict[str, str]:
    """The raw label fields of one CSV row: every non-empty cell except the file's.

    Empty cells are left out rather than kept as "", so that "no label" means
    the same thing (a missing key) for every dataset.
    """
    return {column: value.strip() for column, value in row.items()
            if column is not None and column != file_column and isinstance(value, str) and value.strip()}


def _other_case(path: Path, listings: dict[Path, dict[str, str]]) -> str | None:
    """The name of a file beside `path` that differs from it only in case (`A.JPG` for `a.jpg`), or None.

    A CSV written on Windows or macOS, whose file systems ignore case, often
    spells names differently from the files; here that is another file.
    `listings` keeps each folder's names, lower-cased (and in NFC, as
    `_otherwise_normalised` compares them), so that a CSV whose every row is
    missing reads each folder once.
    """
    if path.parent not in listings:
        try:
            listings[path.parent] = {_nfc(name).lower(): name for name in sorted(os.listdir(path.parent), reverse=True)}
        except OSError:
            listings[path.parent] = {}
    match = listings[path.parent].get(_nfc(path.name).lower())
    return match if match != path.name else None


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _otherwise_normalised(folder: Path, name: str, listings: dict[Path, dict[str, list[str]]]) -> list[Path]:
    """The files whose path below `folder` is `name` once both are in Unicode's NFC form.

    macOS writes file names decomposed (NFD: "e" then a combining accent),
    most editors and spreadsheets composed (NFC: one "é"); Linux keeps the
    bytes as written, so a CSV typed on one system names the files copied
    from the other in a form that is not there. Each part of `name` that is
    not there as written is looked up in its folder's names by their NFC form;
    `listings` keeps those, each folder listed once. Called only for a name
    not found as written, so a CSV whose names are all there lists nothing.
    """
    found = [folder]
    for part in PurePath(name).parts:
        found = [base / other for base in found
                 for other in ([part] if os.path.lexists(base / part) else _by_nfc(base, listings).get(_nfc(part), []))]
    return [path for path in found if path.is_file()]


def _by_nfc(folder: Path, listings: dict[Path, dict[str, list[str]]]) -> dict[str, list[str]]:
    """`folder`'s names by their NFC form (several when the folder holds one name in two forms); {} if unlistable."""
    if folder not in listings:
        listings[folder] = {}
        try:
            for name in sorted(os.listdir(folder)):
                listings[folder].setdefault(_nfc(name), []).append(name)
        except OSError:
            pass
    return listings[folder]


def _below(path: Path, folder: Path) -> str:
    """`path` as a CSV names it: relative to `folder` when it is in it, else whole."""
    return path.relative_to(folder).as_posix() if path.is_relative_to(folder) else str(path)


def _spelled(name: str) -> str:
    """A name with its code points shown, so that two normalisations of it read apart: 'cafe\\u0301.jpg' (NFD)."""
    form = next((form for form in ("NFC", "NFD") if unicodedata.is_normalized(form, name)), "mixed")
    return f"{name!a} ({form})"


def _resolve(path: Path, folders: dict[Path, Path]) -> Path:
    """`path.resolve()` of an existing file, each folder resolved once (`folders` keeps them).

    Resolving looks at every part of a path (an `lstat` each); for 23,708 rows that was most of the
    listing's time. Only the file's own name is looked at per row: a file that is no link resolves to its
    resolved folder plus its name; a link is resolved whole, as before.
    """
    if os.path.islink(path):
        return path.resolve()
    parent = path.parent
    if parent not in folders:
        folders[parent] = parent.resolve()
    return folders[parent] / path.name


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
                delimiter = sniff_delimiter(handle.readline(), self.file_column)
                handle.seek(0)
                return self._read(csv.DictReader(handle, delimiter=delimiter), folder)
        except UnicodeDecodeError as error:
            raise DataError(f"{table} is not UTF-8 text ({error.reason} at byte {error.start}); "
                            "save it as a UTF-8 CSV") from error
        except csv.Error as error:
            raise DataError(f"{table} is not a readable CSV: {error}") from error
        except OSError as error:  # permission denied, an I/O error: the file is there (checked above)
            raise DataError(f"cannot read label CSV {table}: {os_reason(error)}; make it readable by this user, "
                            "or set data.csv to another CSV of labels") from error

    def _read(self, reader: csv.DictReader, folder: Path) -> list[Sample]:
        columns = self._columns(reader)
        samples = []
        first: dict[Path, int] = {}  # resolved image path -> CSV line that listed it first
        listings: dict[Path, dict[str, str]] = {}  # folder -> its file names by lower case, for hints
        normalised: dict[Path, dict[str, list[str]]] = {}  # folder -> its file names by NFC form
        resolved: dict[Path, Path] = {}  # folder -> itself resolved, for `_resolve`
        renamed: list[tuple[str, str, Path]] = []  # (where, the CSV's name, the file) matched in another form
        for row in reader:
            where = f"{self.csv}:{reader.line_num}"
            file = (row.get(self.file_column) or "").strip()
            problem = (self._row_problem(row, columns, reader.reader.dialect.delimiter)
                       or ("" if file else f"no image file in column '{self.file_column}'"))
            path, others = (None, []) if problem else self._find_image(folder, file, normalised)
            if not problem and path is None:
                problem = self._not_found(folder, file, listings, others)
            elif path is not None and (image := _resolve(path, resolved)) in first:
                problem = f"duplicate of {self.csv}:{first[image]} (image '{file}' is listed twice)"
            if problem:
                self.report_problem(where, problem)
                continue
            first[image] = reader.line_num
            samples.append(Sample(str(path), row_record(row, self.file_column)))
            if others:
                renamed.append((where, file, path))
        if renamed:
            self.notes.append(self._renamed_note(folder, renamed))
        return samples

    @staticmethod
    def _renamed_note(folder: Path, renamed: list[tuple[str, str, Path]]) -> str:
        """The note for rows whose image name matched a file only in another Unicode normalisation."""
        where, file, path = renamed[0]
        count = len(renamed)
        one = count == 1
        return (f"{plural(count, 'image')} of the CSV {'is' if one else 'are'} named in another Unicode "
                f"normalisation than {'its file' if one else 'their files'} in {folder} (macOS writes names "
                f"decomposed, NFD; most other programs composed, NFC), and matched to {'it' if one else 'them'}: "
                f"e.g. {where} names {_spelled(file)}, the file is {_spelled(_below(path, folder))}. "
                f"Nothing is skipped; to match byte for byte, write the CSV's names as the files are named")

    @staticmethod
    def _row_problem(row: Mapping[str | None, Any], columns: list[str], delimiter: str) -> str:
        """Why a row's cells cannot be matched to the header's columns, or "".

        With more cells than columns, or fewer, a cell may sit under the wrong
        column (`a.jpg,0,yes` under `file,age,gender,smile` would train age 0):
        the row is skipped rather than trained on labels that may be shifted.
        """
        extra = row.get(None)
        if extra:  # more cells than the header: the labels would land in the wrong columns
            return f"row has {plural(len(columns) + len(extra), 'cell')} but the header has {len(columns)}"
        absent = sum(1 for column in columns if row.get(column) is None)
        if absent:
            empty = delimiter.join(["a.jpg", "30", "", ""]) if delimiter != "\t" else "a.jpg<TAB>30<TAB><TAB>"
            return (f"row has {plural(len(columns) - absent, 'cell')} but the header has {len(columns)}, so a label "
                    f"may be in the wrong column; write an empty cell for each missing label (e.g. {empty})")
        return ""

    @staticmethod
    def _spellings(file: str) -> list[str]:
        """A CSV cell as written and, where `\\` is no path separator, with `/` (a Windows-made CSV: `imgs\\a.jpg`)."""
        return list(dict.fromkeys([file, file.replace("\\", "/")]))

    def _find_image(self, folder: Path, file: str,
                    normalised: dict[Path, dict[str, list[str]]]) -> tuple[Path | None, list[Path]]:
        """The image a CSV cell names, relative to `folder` (or absolute), and the files it names in another form.

        A name that is there as written is that file (others: []). One that is
        not, but names one file in another Unicode normalisation, is that file
        (others: [it]); two or more such files leave it unmatched (None), as
        which one was meant is anyone's guess; the message lists them.
        """
        spellings = self._spellings(file)
        for name in spellings:
            if (path := folder / name).is_file():
                return path, []
        others = list(dict.fromkeys(path for name in spellings
                                    for path in _otherwise_normalised(folder, name, normalised)))
        return (others[0] if len(others) == 1 else None), others

    def _not_found(self, folder: Path, file: str, listings: dict[Path, dict[str, str]],
                   others: list[Path]) -> str:
        """Why the image a row names is not there, with the file the user most likely meant.

        `others`: the files it names in other Unicode normalisations, when there are several to choose from.
        """
        path = folder / file.replace("\\", "/")
        if others:
            return (f"image file {_spelled(file)} not found in {folder}, and files with the same name in other "
                    f"Unicode normalisations are: {', '.join(_spelled(_below(p, folder)) for p in others)}"
                    f"; write the CSV's name as the one meant is named, byte for byte")
        if path.is_dir():
            return f"'{file}' in {folder} is a folder, not an image file"
        if path.is_symlink():
            return (f"image file '{file}' in {folder} is a broken symbolic link "
                    f"(to {os.readlink(path)}, which does not exist)")
        reason = f"image file '{file}' not found in {folder}"
        other_case = _other_case(path, listings)
        if other_case:
            return f"{reason}; there is '{other_case}' (file names differ in upper/lower case here): fix the CSV"
        for base, what in ((Path(self.csv).parent, "the CSV's folder"), (Path.cwd(), "the current folder")):
            if (base / file).is_file() and base.resolve() != folder.resolve():
                return (f"{reason}, but it is in {what} ({base / file}); the CSV's file names count from "
                        f"data.root ({folder}): write them relative to it, or set data.root to {base}")
        return reason

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
            raise DataError(f"{self.csv} has no '{self.file_column}' column (its columns: {', '.join(columns)}); "
                            f"set data.file_column to the column that names the images")
        return columns

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={self.root!r}, csv={self.csv!r})"


@hookimpl
def register_datasets(register: Any) -> None:
    register("folder", FolderDataset.from_params, params=FolderParams,
             description="Your own images plus a CSV: a file column and one column per label.")
