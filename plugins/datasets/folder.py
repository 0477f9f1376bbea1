"""An image folder plus a CSV of labels: the way to train on your own data.

Each CSV row names an image (relative to the folder) and gives any number of
label columns. A task reads the column its `label` parameter names, so a new
task (`{name: smiling, kind: binary, label: smile}`) needs only a new column.
An empty cell is a missing label for that task alone; the image still trains
the others.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hydranet.core.errors import DataError
from hydranet.core.hookspecs import hookimpl
from hydranet.core.interfaces import Dataset, Sample
from hydranet.core.paths import existing_dir, existing_file

DEFAULT_CSV = "labels.csv"


def row_record(row: Mapping[str | None, Any], file_column: str) -> dict[str, str]:
    """The raw label fields of one CSV row: every non-empty cell except the file's.

    Empty cells are left out rather than kept as "", so that "no label" means
    the same thing (a missing key) for every dataset.
    """
    return {column: value.strip() for column, value in row.items()
            if column is not None and column != file_column and isinstance(value, str) and value.strip()}


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
        folder = existing_dir(self.root, "image folder", "set data.root to the folder that holds the images "
                                                          "(in the spec, or --set data.root=DIR)")
        table = existing_file(self.csv, "label CSV", f"set data.csv to the CSV of labels, or put it at "
                                                      f"<root>/{DEFAULT_CSV} (a `{self.file_column}` column "
                                                      f"naming each image, plus one column per label)")
        try:
            with open(table, newline="", encoding="utf-8-sig") as handle:
                return self._read(csv.DictReader(handle), folder)
        except UnicodeDecodeError as error:
            raise DataError(f"{table} is not UTF-8 text ({error.reason} at byte {error.start}); "
                            "save it as a UTF-8 CSV") from error
        except csv.Error as error:
            raise DataError(f"{table} is not a readable CSV: {error}") from error

    def _read(self, reader: csv.DictReader, folder: Path) -> list[Sample]:
        columns = self._columns(reader)
        samples = []
        first: dict[Path, int] = {}  # resolved image path -> CSV line that listed it first
        for row in reader:
            where = f"{self.csv}:{reader.line_num}"
            file = (row.get(self.file_column) or "").strip()
            if None in row:  # more cells than the header: the labels would land in the wrong columns
                self.report_problem(where, f"row has {len(columns) + len(row[None])} cells "  # type: ignore[index]
                                           f"but the header has {len(columns)}")
            elif not file:
                self.report_problem(where, f"no image file in column '{self.file_column}'")
            elif not (folder / file).is_file():
                self.report_problem(where, f"image file '{file}' not found in {folder}")
            elif (image := (folder / file).resolve()) in first:
                self.report_problem(where, f"duplicate of {self.csv}:{first[image]} (image '{file}' is listed twice)")
            else:
                first[image] = reader.line_num
                samples.append(Sample(str(folder / file), row_record(row, self.file_column)))
        return samples

    def _columns(self, reader: csv.DictReader) -> list[str]:
        """The header, with stray spaces dropped (`file, age` is common); checks the file column is there."""
        if not reader.fieldnames:
            raise DataError(f"{self.csv} is empty; it needs a header row with a '{self.file_column}' column "
                            "and one column per label")
        reader.fieldnames = columns = [name.strip() for name in reader.fieldnames]
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
