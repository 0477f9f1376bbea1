"""Reading a label CSV's cells as spreadsheets write them: the separator, the label fields, decimal commas.

The `folder` dataset decides which rows become samples; this module only
turns the text of a header or a cell into what it means, and words the error
for a file that is not UTF-8, so the rules for Excel's ways live in one place.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydranet.core.errors import DataError

#: Separators tried on the header, in order: Excel writes ';' where the decimal mark is a comma, and
#: exports tab-separated text; a CSV read with the wrong one is one column whose name is the whole header.
DELIMITERS = (",", ";", "\t", "|")
#: A number written with a decimal comma, as Excel writes it where the decimal mark is a comma: `133,41`, `-0,5`,
#: and with its thousands grouped by '.' or a space (`1.234,5`, `1 234,5`; French Excel groups with a no-break
#: space), the same separator throughout. Nothing else (`12,5 kg`, `1,2,3`, `1.234`) is one.
DECIMAL_COMMA = re.compile(r"[-+]?(?:\d{1,3}(?P<group>[. \u00a0\u202f])\d{3}(?:(?P=group)\d{3})*|\d+),\d+")

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

    `'133,41'` -> `'133.41'`, `'1.234,5'` and `'1 234,5'` -> `'1234.5'`. The
    result stays a string (records hold raw fields), so no digit is rounded.
    """
    match = DECIMAL_COMMA.fullmatch(cell)
    if match is None:
        return None
    return (cell.replace(match["group"], "") if match["group"] else cell).replace(",", ".")


def not_utf8_error(table: Path, error: UnicodeDecodeError) -> DataError:
    """The error for a CSV that is not UTF-8: where the first odd byte is, and what it is in Windows' Latin-1.

    Excel's plain "CSV" in a Western locale is cp1252 (Latin-1 plus a few
    characters): `José` is written `Jos` and the byte 0xE9. The decoder's own
    position counts from the start of the chunk it was given, not the file,
    so the file is decoded again whole (only on this error) to give the line
    and column, and the byte read as cp1252 says which character it was.
    """
    place = ""  # where in the file, when it can be read again and still is not UTF-8
    try:
        raw = table.read_bytes()
        raw.decode("utf-8")
    except UnicodeDecodeError as whole:
        error = whole
        line_start = raw.rfind(b"\n", 0, error.start) + 1
        column = len(raw[line_start:error.start].decode("utf-8-sig" if line_start == 0 else "utf-8")) + 1
        line = raw.count(b"\n", 0, error.start) + 1
        place = f"line {line}, column {column}: "
    except OSError:
        pass
    bad = error.object[error.start:error.end]
    character = bad.decode("cp1252", errors="replace")
    guess = f" ({character!r} in Latin-1/cp1252)" if character.isprintable() and "\ufffd" not in character else ""
    return DataError(f"{table} is not UTF-8 text ({place}the byte{'s' if len(bad) > 1 else ''} {bad!r}{guess}: "
                     f"{error.reason}); save it as a UTF-8 CSV (Excel: Save As, 'CSV UTF-8'), or convert it "
                     f"(iconv -f cp1252 -t utf-8)")
