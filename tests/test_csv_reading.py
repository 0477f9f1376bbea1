"""Reading a user's own label CSV (`folder` dataset): European Excel files, rows that do not fit, names that miss.

Each test is a file as a user brought it, written to disk and read by the
dataset: it either reads as meant, or the message names the line and column
at fault and says what to do.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_image
from hydranet.core.errors import DataError
from hydranet.plugins.datasets import folder as folder_module
from hydranet.plugins.datasets.csv_cells import decimal_point
from hydranet.plugins.datasets.folder import FolderDataset


@pytest.fixture
def houses(tmp_path: Path) -> Path:
    """A folder of four images: a.jpg, b.jpg, c.jpg and house2/floor0/img_030.jpg."""
    root = tmp_path / "houses"
    for name in ["a.jpg", "b.jpg", "c.jpg", "house2/floor0/img_030.jpg"]:
        make_image(root / name, 8)
    return root


def read(root: Path, csv_bytes: bytes) -> tuple[FolderDataset, dict[str, dict[str, str]]]:
    """The folder dataset of `root` with `csv_bytes` as its labels.csv, and {image below root: record} it lists."""
    (root / "labels.csv").write_bytes(csv_bytes)
    dataset = FolderDataset(root)
    return dataset, {Path(s.source).relative_to(root).as_posix(): dict(s.record) for s in dataset.samples()}


def excel(rows: list[list[str]], delimiter: str = ";") -> bytes:
    """A CSV as Excel saves one ("CSV UTF-8": a byte-order mark, Windows line endings)."""
    return ("\ufeff" + "".join(delimiter.join(row) + "\r\n" for row in rows)).encode("utf-8")


# --- decimal commas --------------------------------------------------------------------------

@pytest.mark.parametrize("cell, number", [
    ("133,41", "133.41"), ("-0,5", "-0.5"), ("+2,0", "+2.0"), ("1234,5", "1234.5"), ("1.234,5", "1234.5"),
    ("1.234.567,89", "1234567.89"), ("1 234,5", "1234.5"), ("1\u00a0234,5", "1234.5"), ("1\u202f234,5", "1234.5"),
])
def test_a_decimal_comma_number_is_read_with_a_point(cell: str, number: str) -> None:
    assert decimal_point(cell) == number


@pytest.mark.parametrize("cell, number", [("1.200.000", "1200000"), ("-12.500.000", "-12500000")])
def test_thousands_grouped_by_two_dots_are_a_whole_number(cell: str, number: str) -> None:
    """`1.200.000` cannot be a decimal, so it can only be German Excel's thousands: it was "not a number"."""
    assert decimal_point(cell) == number


@pytest.mark.parametrize("cell", ["1.20.000", "01.200.000", "1.200.000.5", "1.200.00",
                                  "12,5 kg", "1,2,3", "1.234", "1.23,5", "12.345.6,7", "1.234 567,8", ",5", "5,",
                                  "a,b", "1,234.5", "30", "Smith, 12"])
def test_cells_that_are_not_decimal_comma_numbers_are_left_alone(cell: str) -> None:
    """Conservative: text, lists, a grouping that is not by threes, and a point-decimal number are no such number."""
    assert decimal_point(cell) is None


def test_a_semicolon_csv_with_decimal_commas_reads_them_as_numbers_with_a_note(houses: Path) -> None:
    """European Excel writes `133,41` in a ';' file: every such price was "not a number", and 2 labels trained."""
    dataset, records = read(houses, excel([["file", "price", "area", "note"],
                                           ["a.jpg", "133,41", "1.234,5", "12,5 kg"],
                                           ["b.jpg", "120", "-0,5", "tall, dark"], ["c.jpg", "99,9", "", "x"]]))
    assert records == {"a.jpg": {"price": "133.41", "area": "1234.5", "note": "12,5 kg"},
                                    "b.jpg": {"price": "120", "area": "-0.5", "note": "tall, dark"},
                                    "c.jpg": {"price": "99.9", "note": "x"}}
    assert dataset.problems == []
    note, = [note for note in dataset.notes if "decimal comma" in note]
    assert note.startswith(f"read 4 cells with a decimal comma as numbers (e.g. {houses / 'labels.csv'}:2 price "
                           f"'133,41' -> 133.41), as the file is ';'-separated")


def test_a_regression_task_trains_on_every_decimal_comma_label(houses: Path, components) -> None:
    from conftest import tiny_spec
    from hydranet.core.engine import load_prepared_data
    from hydranet.core.spec import load_spec

    (houses / "labels.csv").write_bytes(excel([["file", "price"], ["a.jpg", "133,41"], ["b.jpg", "120,5"],
                                               ["c.jpg", "1.099,9"]]))
    raw = tiny_spec(houses)
    raw["tasks"] = [{"name": "price", "kind": "regression", "label": "price"}]
    raw["data"] = {"name": "folder", "root": str(houses), "val_fraction": 0}
    spec = load_spec(raw, components=components)
    data = load_prepared_data(spec, spec.build_tasks(), progress=False)
    assert data.usable == 3
    assert any("read 3 cells with a decimal comma as numbers" in line for line in data.notes), data.notes


# --- a dot before three digits in a ';' file: thousands or a decimal? ---------------------------------

def test_a_semicolon_csv_reads_dotted_millions_as_numbers_and_says_how(houses: Path) -> None:
    dataset, records = read(houses, excel([["file", "price"], ["a.jpg", "1.200.000"], ["b.jpg", "950,5"]]))
    assert records == {"a.jpg": {"price": "1200000"}, "b.jpg": {"price": "950.5"}}
    note, = [note for note in dataset.notes if "as numbers" in note]
    assert note.startswith(f"read 2 cells with a decimal comma or '.' thousands as numbers (e.g. "
                           f"{houses / 'labels.csv'}:2 price '1.200.000' -> 1200000)")
    assert not [note for note in dataset.notes if "thousands with a dot" in note]


def test_dotted_thousands_in_a_semicolon_number_column_get_a_note_and_are_read_as_decimals(houses: Path) -> None:
    """`1.200` in a ';' file may be German Excel's 1200 or a decimal 1.2: it was read as 1.2 without a word."""
    dataset, records = read(houses, excel([["file", "price", "area"], ["a.jpg", "120", "1.234,5"],
                                           ["b.jpg", "NA", "70"], ["c.jpg", "1.200", "80"],
                                           ["house2/floor0/img_030.jpg", "-12.500", "99,9"]]))
    assert records["c.jpg"] == {"price": "1.200", "area": "80"}  # read as before: no guess
    assert records["house2/floor0/img_030.jpg"]["price"] == "-12.500"
    dotted = [note for note in dataset.notes if "thousands with a dot" in note]
    assert dotted == [f"2 cells of column 'price' in a ';'-separated file look like thousands with a dot (e.g. "
                      f"{houses / 'labels.csv'}:4 '1.200'); they are read as decimals (1.2): if they are thousands, "
                      f"write them without the dot"]
    assert any(note.startswith("read 2 cells with a decimal comma") for note in dataset.notes)  # still said


def test_one_dotted_thousand_is_worded_in_the_singular(houses: Path) -> None:
    dataset, _ = read(houses, excel([["file", "price"], ["a.jpg", "12.500"], ["b.jpg", "3"]]))
    assert [note for note in dataset.notes if "thousands with a dot" in note] == [
        f"1 cell of column 'price' in a ';'-separated file looks like thousands with a dot (e.g. "
        f"{houses / 'labels.csv'}:2 '12.500'); it is read as a decimal (12.5): if it is thousands, write it "
        f"without the dot"]


@pytest.mark.parametrize("rows, delimiter", [
    ([["a.jpg", "1.200"], ["b.jpg", "tall"]], ";"),  # a text column: not read as numbers
    ([["a.jpg", "1.200"], ["b.jpg", "3"]], ","),  # a ',' file writes decimals with a point
    ([["a.jpg", "0.500"], ["b.jpg", "1.20"], ["c.jpg", "1234.500"], ["house2/floor0/img_030.jpg", "1.2345"]], ";"),
])
def test_cells_that_cannot_be_dotted_thousands_get_no_such_note(houses: Path, rows: list[list[str]],
                                                                delimiter: str) -> None:
    dataset, _ = read(houses, excel([["file", "price"], *rows], delimiter=delimiter))
    assert not [note for note in dataset.notes if "thousands with a dot" in note], dataset.notes


def test_a_comma_separated_csv_keeps_its_quoted_commas(houses: Path) -> None:
    """In a ',' file a comma is the separator: a quoted `"133,41"` may be text or a list, and is left as written."""
    dataset, records = read(houses, b'file,price\na.jpg,"133,41"\n')
    assert records["a.jpg"] == {"price": "133,41"}
    assert not [note for note in dataset.notes if "decimal comma" in note]


# --- rows that do not fit the header ---------------------------------------------------------

def test_a_row_with_too_many_cells_says_to_quote_or_name_the_column(houses: Path) -> None:
    """`a.jpg,133,41,3` (a decimal comma in a ',' file) got "row has 4 cells but the header has 3" and no advice."""
    dataset, records = read(houses, b"file,price,rooms\na.jpg,133,41,3\nb.jpg,120,2\n")
    assert list(records) == ["b.jpg"]
    (where, reason), = dataset.problems
    assert where.endswith("labels.csv:2")
    assert reason == ("row has 4 cells but the header has 3, so a label may be in the wrong column; a value holding "
                      "a ',' (text, or a decimal comma as in 133,41) must be quoted (\"133,41\", or write 133.41); "
                      "or the header lacks a column: add its name to the header")


def test_a_row_with_too_many_cells_names_the_files_own_separator(houses: Path) -> None:
    dataset, _ = read(houses, excel([["file", "note"], ["a.jpg", "tall", "dark"]]))
    assert "a value holding a ';' must be quoted (\"a;b\")" in dataset.problems[0][1]
    dataset, _ = read(houses, excel([["file", "note"], ["a.jpg", "tall", "dark"]], delimiter="\t"))
    assert "a value holding a tab must be quoted" in dataset.problems[0][1]


@pytest.mark.parametrize("delimiter", [",", ";"])
def test_trailing_empty_cells_beyond_the_header_are_dropped_silently(houses: Path, delimiter: str) -> None:
    """Excel writes `a.jpg,30,` (a column once used, now empty, still spanned): it was skipped as too many cells."""
    dataset, records = read(houses, excel([["file", "age"], ["a.jpg", "30", ""], ["b.jpg", "41", " ", ""],
                                           ["c.jpg", "", ""], ["house2/floor0/img_030.jpg", "5", ""]],
                                          delimiter=delimiter))
    assert records == {"a.jpg": {"age": "30"}, "b.jpg": {"age": "41"}, "c.jpg": {},
                       "house2/floor0/img_030.jpg": {"age": "5"}}
    assert dataset.problems == []
    assert dataset.notes == []


def test_a_non_empty_cell_beyond_the_header_still_skips_the_row_with_every_cell_counted(houses: Path) -> None:
    dataset, records = read(houses, b"file,age\na.jpg,30,,x,\nb.jpg,41\n")
    assert list(records) == ["b.jpg"]
    (where, reason), = dataset.problems
    assert where.endswith("labels.csv:2")
    assert reason.startswith("row has 5 cells but the header has 2, so a label may be in the wrong column; "
                             "a value holding a ','")


# --- one image twice -------------------------------------------------------------------------

def test_a_duplicate_with_other_labels_says_which_differ_and_which_are_used(houses: Path) -> None:
    dataset, records = read(houses, b"file,price,rooms,view\na.jpg,120,3,\nb.jpg,80,2,sea\na.jpg,999,3,sea\n")
    assert records["a.jpg"] == {"price": "120", "rooms": "3"}
    (where, reason), = dataset.problems
    csv = houses / "labels.csv"
    assert where == f"{csv}:4"
    assert reason == (f"duplicate of {csv}:2 (image 'a.jpg' is listed twice with other labels: price '999' here, "
                      f"'120' at line 2, view 'sea' here, empty at line 2); line 2's labels are used: if this row's "
                      f"are the right ones, remove line 2, else remove this row")


def test_a_duplicate_with_the_same_labels_says_so(houses: Path) -> None:
    dataset, _ = read(houses, excel([["file", "price"], ["a.jpg", "120,5"], ["./a.jpg", "120,50"], ["a.jpg", "120.5"]]))
    reasons = [reason for _, reason in dataset.problems]
    assert "listed twice with other labels: price '120.50' here, '120.5' at line 2" in reasons[0]
    assert reasons[1].endswith("(image 'a.jpg' is listed twice, with the same labels)")  # 120,5 is 120.5


def test_a_duplicate_with_many_other_labels_names_three_and_counts_the_rest(houses: Path) -> None:
    dataset, _ = read(houses, b"file,p,q,r,s,t\na.jpg,1,1,1,1,1\na.jpg,2,2,2,2,2\n")
    assert "r '2' here, '1' at line 2, and 2 other columns)" in dataset.problems[0][1]


# --- names that miss -------------------------------------------------------------------------

def test_a_path_whose_folders_are_in_another_case_names_the_file_that_is_there(houses: Path) -> None:
    """Only the file's own name was compared: a wrong-case folder got a bare "not found"."""
    dataset, _ = read(houses, b"file,price\nHOUSE2/FLOOR0/IMG_030.JPG,1\nhouse2\\FLOOR0\\img_030.jpg,2\n")
    reasons = [reason for _, reason in dataset.problems]
    assert reasons[0] == (f"image file 'HOUSE2/FLOOR0/IMG_030.JPG' not found in {houses}; there is "
                          f"'house2/floor0/img_030.jpg' (file and folder names differ in upper/lower case here): "
                          f"fix the CSV")
    assert "there is 'house2/floor0/img_030.jpg'" in reasons[1]  # a Windows path too


def test_a_name_in_several_cases_lists_each(houses: Path) -> None:
    make_image(houses / "A.jpg", 8)
    dataset, _ = read(houses, b"file,price\na.JPG,1\n")
    assert "there are 'A.jpg' and 'a.jpg' (file and folder names differ" in dataset.problems[0][1]


def test_each_folder_is_listed_once_however_many_rows_miss(houses: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    listed: list[str] = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda path: listed.append(str(path)) or real_listdir(path))
    rows = "".join(f"HOUSE2/FLOOR0/IMG_{i:03}.JPG,1\n" for i in range(20))
    read(houses, f"file,price\n{rows}".encode())
    assert len(listed) == len(set(listed)) == 3  # root, house2, house2/floor0


def test_a_file_column_in_another_case_gets_a_did_you_mean(houses: Path) -> None:
    with pytest.raises(DataError) as error:
        read(houses, b"File,price\na.jpg,1\n")
    assert str(error.value) == (f"{houses / 'labels.csv'} has no 'file' column (its columns: File, price); did you "
                                f"mean 'File'? Rename it to 'file', or set data.file_column=File")


def test_a_file_column_nothing_like_file_gets_no_guess(houses: Path) -> None:
    with pytest.raises(DataError, match=r"\(its columns: image, price\); set data.file_column to the column"):
        read(houses, b"image,price\na.jpg,1\n")


# --- images the CSV leaves out ---------------------------------------------------------------

def test_images_the_csv_does_not_name_are_counted_in_a_note(houses: Path) -> None:
    """They were ignored without a word; hidden files and folders are skipped, as the folder search skips them."""
    (houses / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 resource fork")
    make_image(houses / ".thumbnails" / "x.jpg", 8)
    (houses / "notes.txt").write_text("not an image")
    dataset, _ = read(houses, b"file,price\na.jpg,1\nB.JPG,2\n")  # b.jpg is named, in another case: not unused
    assert [note for note in dataset.notes if "not named in" in note] == [
        f"2 images under {houses} are not named in {houses / 'labels.csv'}, e.g. 'c.jpg', "
        f"'house2/floor0/img_030.jpg'; they are not used. Add a row for each image to train on"]


def test_a_csv_naming_every_image_however_spelt_has_no_such_note(houses: Path) -> None:
    dataset, _ = read(houses, b"file,price,rooms\na.jpg,1,2\n./b.jpg,2\nc.jpg,3,3,3\nhouse2/floor0/img_030.jpg,4,4\n")
    assert len(dataset.problems) == 2  # b.jpg and c.jpg's rows do not fit; their images are named all the same
    assert not [note for note in dataset.notes if "not named in" in note], dataset.notes


def test_a_link_to_a_named_image_is_that_image_not_an_unused_one(houses: Path) -> None:
    (houses / "house2" / "latest.jpg").symlink_to(houses / "a.jpg")
    dataset, _ = read(houses, b"file,price\na.jpg,1\nb.jpg,2\nc.jpg,3\nhouse2/floor0/img_030.jpg,4\n")
    assert not [note for note in dataset.notes if "not named in" in note], dataset.notes


def test_the_search_for_unused_images_stops_on_a_huge_folder(houses: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(folder_module, "UNUSED_SEARCH_MIN", 0)  # then ten images per CSV line: 20 for 2 lines
    for folder in ("more", "most"):  # whichever is read first reaches the limit, and the other is left unread
        for i in range(25):
            make_image(houses / folder / f"{i}.jpg", 8)
    dataset, _ = read(houses, b"file,price\na.jpg,1\n")
    note, = [note for note in dataset.notes if "not named in" in note]
    assert note.startswith("at least ") and "images (the search stopped after 20 images) under" in note


def test_a_search_that_read_every_folder_gives_the_exact_count(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """One flat folder past the limit is read whole all the same: it said "at least 24 images (the search stopped
    after 20 images)", though nothing was left unread (a CSV naming a subset of UTKFace's one folder)."""
    monkeypatch.setattr(folder_module, "UNUSED_SEARCH_MIN", 0)
    for i in range(25):
        make_image(tmp_path / f"{i}.jpg", 8)
    dataset, _ = read(tmp_path, b"file,price\n0.jpg,1\n")
    note, = [note for note in dataset.notes if "not named in" in note]
    assert note.startswith(f"24 images under {tmp_path} are not named in"), note


# --- not UTF-8 -------------------------------------------------------------------------------

def test_a_latin1_csv_names_the_line_column_and_byte(houses: Path) -> None:
    """It said "invalid continuation byte at byte 16": no line, and no hint that the byte was an é."""
    with pytest.raises(DataError) as error:
        read(houses, "file,name\na.jpg,José\n".encode("cp1252"))
    assert str(error.value) == (f"{houses / 'labels.csv'} is not UTF-8 text (line 2, column 10: the byte b'\\xe9' "
                                f"('é' in Latin-1/cp1252): invalid continuation byte); save it as a UTF-8 CSV "
                                f"(Excel: Save As, 'CSV UTF-8'), or convert it (iconv -f cp1252 -t utf-8)")


def test_a_latin1_byte_far_into_the_file_is_placed_by_line_not_by_chunk(houses: Path) -> None:
    """The decoder counts bytes from the chunk it was given (8 KiB or so), not from the start of the file."""
    rows = "".join(f"a.jpg,name {i}\n" for i in range(2, 3000))
    text = "\ufefffile,name\n" + rows + "b.jpg,Zoë\n"
    with pytest.raises(DataError, match=r"\(line 3000, column 9: the byte b'\\xeb' \('ë' in Latin-1/cp1252\)"):
        read(houses, text.encode("utf-8")[:3] + text[1:].encode("cp1252"))


def test_a_byte_that_is_no_cp1252_character_gets_no_guess(houses: Path) -> None:
    with pytest.raises(DataError, match=r"\(line 1, column 5: the byte b'\\x81': invalid start byte\)"):
        read(houses, b"file\x81,name\na.jpg,x\n")
