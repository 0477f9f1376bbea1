"""Reading a label CSV's cells as spreadsheets write them: the separator, the label fields, decimal commas and
the dotted thousands that may be decimals.

The `folder` dataset decides which rows become samples; this module only
turns the text of a header or a cell into what it means, and makes the error
for a file that is not UTF-8 (worded by `core.paths.not_utf8`, as for every
text file) or that starts with Excel's `sep=;` line, so the rules for Excel's
ways live in one place.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydranet.core.data import is_missing_marker
from hydranet.core.errors import DataError
from hydranet.core.paths import not_utf8
from hydranet.core.wording import plural

#: Separators tried on the header, in order: Excel writes ';' where the decimal mark is a comma, and
#: exports tab-separated text; a CSV read with the wrong one is one column whose name is the whole header.
DELIMITERS = (",", ";", "\t", "|")
#: A number written with a decimal comma, as Excel writes it where the decimal mark is a comma: `133,41`, `-0,5`,
#: and with its thousands grouped by '.' or a space (`1.234,5`, `1 234,5`; French Excel groups with a no-break
#: space), the same separator throughout. Nothing else (`12,5 kg`, `1,2,3`, `1.234`) is one.
DECIMAL_COMMA = re.compile(r"[-+]?(?:\d{1,3}(?P<group>[. \u00a0\u202f])\d{3}(?:(?P=group)\d{3})*|\d+),\d+")
#: A whole number with its thousands grouped by two or more '.' (`1.200.000`): no decimal has two points, so
#: unlike `1.200` it can only be thousands, as German Excel writes them.
DOTTED_MILLIONS = re.compile(r"[-+]?[1-9]\d{0,2}(?:\.\d{3}){2,}")

#: A number with a point before exactly three digits and one to three before it (`1.200`, `-12.500`): in a
#: ';'-separated file, German Excel's thousands (1200) as much as a decimal (1.2). `0.500`, `1.20` and
#: `1234.500` cannot be thousands grouped so, and are no such number.
DOTTED_THOUSANDS = re.compile(r"[-+]?[1-9]\d{0,2}\.\d{3}")
#: A number as written with a decimal point (what a cell is once its decimal comma is read): `120`, `-0.5`, `1e3`.
PLAIN_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
#: How to save a label CSV that is not UTF-8 as UTF-8, for `not_utf8`'s advice.
SAVE_AS = "a UTF-8 CSV (Excel: Save As, 'CSV UTF-8')"
#: Excel's optional first line naming the separator (`sep=;`), which it reads and writes but Python's csv does not:
#: the folder dataset takes the separator from it, and the header from the line after it.
EXCEL_SEPARATOR_LINE = re.compile(r"sep=(.)")


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


def decimal_point(cell: str) -> str | None:
    """`cell` written with a decimal point if it is a number written with a decimal comma, else None.

    `'133,41'` -> `'133.41'`, `'1.234,5'` and `'1 234,5'` -> `'1234.5'`, and
    `'1.200.000'` (dotted thousands that cannot be a decimal) -> `'1200000'`.
    The result stays a string (records hold raw fields), so no digit is rounded.
    """
    if DOTTED_MILLIONS.fullmatch(cell):
        return cell.replace(".", "")
    match = DECIMAL_COMMA.fullmatch(cell)
    if match is None:
        return None
    return (cell.replace(match["group"], "") if match["group"] else cell).replace(",", ".")


class SemicolonNumbers:
    """How the number cells of a ';'-separated CSV are read, and the notes that say so, gathered row by row.

    Excel writes ';' where the decimal mark is a comma, so there `133,41` is
    133.41 (read as written, a regression task would find it "not a number"),
    and `1.200` may be a thousand and two hundred as much as 1.2. The first is
    read with a point; the second is read as a decimal, as before, and not
    guessed at: a note names how many cells of which column, and the first,
    so it can be checked. Only cells of rows the dataset keeps count, and a
    `1.200` only in a column whose every cell is a number (or marks a missing
    one: NA, nan): in a text column it is text. In a file with another
    separator nothing is read otherwise and nothing is noted.
    """

    def __init__(self, delimiter: str) -> None:
        self.semicolon = delimiter == ";"
        self.decimals: list[tuple[str, str, str, str]] = []  # (where, column, cell, number) read with a decimal comma
        self.dotted: dict[str, list[tuple[str, str]]] = {}  # column -> (where, cell) that may be dotted thousands
        self.not_numbers: set[str] = set()  # columns with a cell that is not a number

    def read(self, record: dict[str, str]) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
        """`record` with its decimal-comma numbers written with a point, and {column: (cell, number)} of those.

        The result stays strings (records hold raw fields), so no digit is rounded. A ','-separated
        file's record is returned as it is: there such a cell must be quoted, and may as well be a
        list or text.
        """
        if not self.semicolon:
            return record, {}
        read = {column: (cell, number) for column, cell in record.items()
                if (number := decimal_point(cell)) is not None}
        return {**record, **{column: number for column, (_, number) in read.items()}}, read

    def keep(self, where: str, record: dict[str, str], read: dict[str, tuple[str, str]]) -> None:
        """Count a kept row (at `where`): its `record` as `read` returned it, and what was read with a comma."""
        if not self.semicolon:
            return
        self.decimals += [(where, column, cell, number) for column, (cell, number) in read.items()]
        for column, cell in record.items():
            if DOTTED_THOUSANDS.fullmatch(cell):
                self.dotted.setdefault(column, []).append((where, cell))
            elif not PLAIN_NUMBER.fullmatch(cell) and not is_missing_marker(cell):
                self.not_numbers.add(column)

    def notes(self) -> list[str]:
        """The decimal-comma note, then one for each number column with cells that may be dotted thousands."""
        notes = [self._decimals_note()] if self.decimals else []
        for column, cells in self.dotted.items():
            if column in self.not_numbers:
                continue
            where, cell = cells[0]
            one = len(cells) == 1
            notes.append(f"{plural(len(cells), 'cell')} of column {column!r} in a ';'-separated file "
                         f"{'looks' if one else 'look'} like thousands with a dot (e.g. {where} {cell!r}); "
                         f"{'it is' if one else 'they are'} read as {'a decimal' if one else 'decimals'} "
                         f"({float(cell):g}): if {'it is' if one else 'they are'} thousands, write "
                         f"{'it' if one else 'them'} without the dot")
        return notes

    def _decimals_note(self) -> str:
        """The note for the cells read with a decimal comma: how many, and the first, so it can be checked."""
        where, column, cell, number = self.decimals[0]
        numbers = "a number" if len(self.decimals) == 1 else "numbers"
        written = "a decimal comma" if all("," in read[2] for read in self.decimals) else \
            "a decimal comma or '.' thousands"
        return (f"read {plural(len(self.decimals), 'cell')} with {written} as {numbers} "
                f"(e.g. {where} {column} {cell!r} -> {number}), as the file is ';'-separated (Excel's way where the "
                f"decimal mark is a comma); thousands grouped by '.' or a space count too (1.234,5 -> 1234.5)")


def not_utf8_error(table: Path, error: UnicodeDecodeError) -> DataError:
    """The error for a CSV that is not UTF-8: UTF-16 (Excel's "Unicode Text"), or where the first odd byte is and
    what it is in Windows' Latin-1 (Excel's plain "CSV" in a Western locale); `not_utf8` words it, for every
    text file alike. The file is read again whole: the decoder's position counts from the chunk it was given."""
    try:
        raw: bytes | None = table.read_bytes()
    except OSError:
        raw = None
    return DataError(f"{table} {not_utf8(raw, SAVE_AS, error)}")
