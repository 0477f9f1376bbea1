"""Messy data as people bring it: CSVs from Excel and pandas, file names from other systems, odd image files.

Each test is one thing a real folder of images, or its CSV, often gets
wrong. The outcome is either that it works, or that the sample is skipped
and the report names the file or row and what to do; never a silent wrong
label.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from conftest import make_image
from hydranet.core.errors import DataError
from hydranet.plugins.datasets.folder import FolderDataset


@pytest.fixture
def people(tmp_path: Path) -> Path:
    """A folder of three images, a.jpg, b.jpg and sub/c.jpg, without a CSV."""
    root = tmp_path / "people"
    for name in ["a.jpg", "b.jpg", "sub/c.jpg"]:
        make_image(root / name, 8)
    return root


def listed(root: Path, csv_text: str, **kwargs) -> tuple[dict[str, dict[str, str]], list[tuple[str, str]]]:
    """({image relative to root: record}, problems) of a folder dataset whose labels.csv is `csv_text`."""
    (root / "labels.csv").write_bytes(csv_text.encode("utf-8"))
    dataset = FolderDataset(root, **kwargs)
    samples = dataset.samples()
    return {Path(s.source).relative_to(root).as_posix(): dict(s.record) for s in samples}, list(dataset.problems)


# --- CSV shape -------------------------------------------------------------------------------

@pytest.mark.parametrize("separator", [";", "\t", "|"])
def test_a_csv_with_another_separator_is_read(people: Path, separator: str) -> None:
    """Excel writes ';' where the decimal mark is a comma; it used to be one column named 'file;age;gender'."""
    text = "\r\n".join(separator.join(row) for row in [["file", "age", "gender"], ["a.jpg", "30", "1"],
                                                           ["b.jpg", "41", "0"]]) + "\r\n"
    records, problems = listed(people, "\ufeff" + text)
    assert records == {"a.jpg": {"age": "30", "gender": "1"}, "b.jpg": {"age": "41", "gender": "0"}}
    assert problems == []


def test_a_comma_in_a_quoted_cell_does_not_make_the_separator_a_semicolon(people: Path) -> None:
    records, _ = listed(people, 'file,age,note\na.jpg,30,"tall; dark, hat"\n')
    assert records == {"a.jpg": {"age": "30", "note": "tall; dark, hat"}}


def test_a_row_with_fewer_cells_than_the_header_is_skipped_not_shifted(people: Path) -> None:
    """`a.jpg,0,yes` under `file,age,gender,smile` (age forgotten) used to train age 0 and gender 'yes'."""
    records, problems = listed(people, "file,age,gender,smile\na.jpg,0,yes\nb.jpg,41,1,no\n")
    assert records == {"b.jpg": {"age": "41", "gender": "1", "smile": "no"}}
    (where, reason), = problems
    assert where.endswith("labels.csv:2")
    assert "row has 3 cells but the header has 4" in reason and "empty cell for each missing label" in reason
    assert "a.jpg,30,," in reason


def test_a_row_of_one_cell_is_counted_in_the_singular(people: Path) -> None:
    _, problems = listed(people, "file,age\na.jpg\n")
    assert "row has 1 cell but" in problems[0][1]


def test_a_column_named_twice_is_an_error_naming_it(people: Path) -> None:
    """csv.DictReader keeps the last of two 'age' cells and drops the first without a word."""
    with pytest.raises(DataError, match=r"labels.csv names column 'age' more than once in its header"):
        listed(people, "file,age,gender,age\na.jpg,30,1,31\n")


# --- file names in the CSV -------------------------------------------------------------------

def test_windows_backslash_paths_are_read(people: Path) -> None:
    records, problems = listed(people, "file,age\nsub\\c.jpg,30\n")
    assert records == {"sub/c.jpg": {"age": "30"}} and problems == []


def test_a_name_in_another_case_says_which_file_is_there(people: Path) -> None:
    """A CSV made on Windows or macOS (case-insensitive) names A.JPG for a.jpg."""
    _, problems = listed(people, "file,age\nA.JPG,30\n")
    assert "image file 'A.JPG' not found" in problems[0][1] and "there is 'a.jpg'" in problems[0][1]


NFC, NFD = "caf\u00e9.jpg", "cafe\u0301.jpg"  # one name, composed (most programs) and decomposed (macOS)


@pytest.mark.parametrize("on_disk, in_csv", [(NFD, NFC), (NFC, NFD)], ids=["nfd_file_nfc_csv", "nfc_file_nfd_csv"])
def test_a_name_in_another_unicode_normalisation_is_matched_with_a_note(people: Path, on_disk: str,
                                                                        in_csv: str) -> None:
    """A CSV typed on Linux or Windows names the files copied from a Mac in another form: it was "not found"."""
    make_image(people / "été" / on_disk, 8)
    folder = unicodedata.normalize("NFD" if on_disk == NFC else "NFC", "été")  # with an NFD CSV, the folder differs too
    (people / "labels.csv").write_text(f"file,age\n{folder}/{in_csv},30\na.jpg,31\n", encoding="utf-8")
    dataset = FolderDataset(people)
    samples = dataset.samples()
    assert [s.source for s in samples] == [str(people / "été" / on_disk), str(people / "a.jpg")]
    assert dataset.problems == []
    note = dataset.notes[0]  # then the note on b.jpg and sub/c.jpg, which the CSV leaves out
    assert "1 image of the CSV is named in another Unicode normalisation than its file" in note
    assert f"labels.csv:2 names {ascii(folder + '/' + in_csv)}" in note and ascii("été/" + on_disk) in note


def test_a_name_in_two_other_unicode_normalisations_on_disk_is_not_guessed(people: Path) -> None:
    composed, decomposed, mixed = "\u01d8.jpg", "u\u0308\u0301.jpg", "\u00fc\u0301.jpg"  # ǘ three ways
    make_image(people / decomposed, 8)
    make_image(people / mixed, 8)
    records, problems = listed(people, f"file,age\n{composed},30\n")
    assert records == {}
    reason = problems[0][1]
    assert f"image file {ascii(composed)} (NFC) not found" in reason
    assert f"{ascii(decomposed)} (NFD), {ascii(mixed)} (mixed)" in reason and "byte for byte" in reason


def test_one_image_named_in_both_unicode_forms_is_a_duplicate(people: Path) -> None:
    make_image(people / NFD, 8)
    records, problems = listed(people, f"file,age\n{NFD},30\n{NFC},31\n")
    assert records == {NFD: {"age": "30"}}
    assert "duplicate of" in problems[0][1] and problems[0][0].endswith("labels.csv:3")


def test_training_reports_the_names_matched_in_another_unicode_form(people: Path, components) -> None:
    make_image(people / NFD, 8)
    data = prepared(people, components, f"file,age,gender\n{NFC},30,0\na.jpg,31,1\nb.jpg,32,0\n")
    assert data.usable == 3
    assert any("named in another Unicode normalisation" in note for note in data.notes), data.notes


def test_paths_relative_to_the_current_folder_say_where_they_count_from(people: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(people.parent)
    _, problems = listed(people, "file,age\npeople/a.jpg,30\n")
    reason = problems[0][1]
    assert "not found" in reason and "it is in the current folder" in reason
    assert "count from data.root" in reason and f"set data.root to {people.parent}" in reason


def test_paths_relative_to_the_csv_folder_say_where_they_count_from(people: Path, tmp_path: Path) -> None:
    table = tmp_path / "meta" / "labels.csv"
    make_image(table.parent / "photos" / "x.jpg", 8)
    table.write_text("file,age\nphotos/x.jpg,30\n")
    dataset = FolderDataset(people, table)
    dataset.samples()
    assert "it is in the CSV's folder" in dataset.problems[0][1]


def test_a_folder_or_a_broken_link_in_the_file_column_says_so(people: Path) -> None:
    (people / "gone.jpg").symlink_to(people / "nowhere.jpg")
    _, problems = listed(people, "file,age\nsub,30\ngone.jpg,31\n")
    assert "'sub' in" in problems[0][1] and "is a folder, not an image file" in problems[0][1]
    assert "broken symbolic link" in problems[1][1] and "nowhere.jpg" in problems[1][1]


# --- label cells -----------------------------------------------------------------------------

def prepared(root: Path, components, csv_text: str, tasks: list | None = None):
    """The prepared data of a folder dataset with `csv_text` as its labels.csv, for the given tasks."""
    from conftest import tiny_spec
    from hydranet.core.engine import load_prepared_data
    from hydranet.core.spec import load_spec

    (root / "labels.csv").write_text(csv_text)
    raw = tiny_spec(root)
    raw["tasks"] = tasks or ["age", "gender"]
    raw["data"] = {"name": "folder", "root": str(root), "val_fraction": 0}
    spec = load_spec(raw, components=components)
    return load_prepared_data(spec, spec.build_tasks(), progress=False)


def test_na_nan_and_null_cells_are_missing_labels_not_invalid_ones(people: Path, components) -> None:
    """pandas writes NaN as 'nan', R writes 'NA', Excel '#N/A': none is a wrong label to list or warn about."""
    data = prepared(people, components, "file,age,gender\na.jpg,NA,female\nb.jpg,nan,#N/A\nsub/c.jpg,30,N/A\n")
    assert not [line for line in data.notes if "invalid" in line or "WARNING" in line], data.notes
    assert data.usable == 2  # b.jpg has no label left for any task
    assert "1 sample with no valid label for any task skipped:" in data.notes
    assert f"  {people / 'labels.csv'}:3 ({people / 'b.jpg'})" in data.notes  # its CSV line, then its image


def test_a_task_whose_every_value_is_na_says_so(people: Path, components) -> None:
    with pytest.raises(DataError, match=r"every value of 'age' \(2 of 3 samples\) marks a missing value, e.g. 'NA'"):
        prepared(people, components, "file,age,gender\na.jpg,NA,0\nb.jpg,nan,1\nsub/c.jpg,,1\n")


@pytest.mark.parametrize("header, suggestion", [("Age", "Age"), ("agee", "agee")])
def test_a_label_column_spelt_otherwise_gets_a_did_you_mean(people: Path, components, header: str,
                                                            suggestion: str) -> None:
    with pytest.raises(DataError, match=rf"field 'age' .* Did you mean '{suggestion}'\? The samples have fields"):
        prepared(people, components, f"file,{header},gender\na.jpg,30,0\nb.jpg,41,1\n")


# --- UTKFace folders -------------------------------------------------------------------------

def test_utkface_reads_every_format_predict_reads(tmp_path: Path) -> None:
    """.webp, .bmp and .tif faces used to be left out of training without a word, though predict read them."""
    from hydranet.core.image_input import IMAGE_SUFFIXES
    from hydranet.plugins.datasets.utkface import UTKFaceDataset

    root = tmp_path / "utk"
    for i, suffix in enumerate(IMAGE_SUFFIXES):
        make_image(root / f"{20 + i}_0_1_2017011600000000{i}{suffix.upper() if i % 2 else suffix}", 8)
    dataset = UTKFaceDataset(root)
    assert sorted(Path(s.source).suffix.lower() for s in dataset.samples()) == sorted(IMAGE_SUFFIXES)
    assert dataset.problems == []


def test_utkface_reports_a_broken_symbolic_link(tmp_path: Path) -> None:
    from hydranet.plugins.datasets.utkface import UTKFaceDataset

    root = tmp_path / "utk"
    make_image(root / "20_0_1_20170116000000000.jpg", 8)
    (root / "21_0_1_20170116000000001.jpg").symlink_to(tmp_path / "moved" / "x.jpg")
    dataset = UTKFaceDataset(root)
    assert len(dataset.samples()) == 1
    (where, reason), = dataset.problems
    assert where.endswith("21_0_1_20170116000000001.jpg") and "broken symbolic link" in reason
    assert str(tmp_path / "moved" / "x.jpg") in reason


# --- predict on the same messy folder --------------------------------------------------------

def test_predict_skips_hidden_files_and_says_an_empty_file_is_empty(checkpoint: Path, tmp_path: Path) -> None:
    """A folder copied from a Mac holds a `._x.jpg` resource fork beside every x.jpg: not a photo to predict."""
    import hydranet

    folder = tmp_path / "photos"
    make_image(folder / "a.jpg", 16)
    (folder / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 resource fork")
    make_image(folder / ".thumbnails" / "a.jpg", 8)
    (folder / "b.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"(?s)skipped 2 files .* hidden folders .* macOS resource forks"):
        rows = hydranet.load(checkpoint).predict_files(folder)
    assert [Path(row["file"]).name for row in rows] == ["a.jpg", "b.jpg"]
    assert "error" not in rows[0] and rows[1]["error"] == "empty file (0 bytes)"


# --- a task labelled on few images -----------------------------------------------------------

def sparse_folder(root: Path, smiles: dict[int, str], count: int = 12) -> Path:
    """`count` images with age and gender, and a smile label only on the images `smiles` names."""
    rows = ["file,age,gender,smile"]
    for i in range(count):
        make_image(root / f"{i}.jpg", 16)
        rows.append(f"{i}.jpg,{20 + i},{i % 2},{smiles.get(i, '')}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def sparse_spec(root: Path, components):
    from conftest import tiny_spec
    from hydranet.core.spec import load_spec

    raw = tiny_spec(root, epochs=1)
    raw["tasks"] = ["age", "gender", {"name": "smiling", "kind": "binary", "label": "smile",
                                      "class_names": ["no", "yes"]}]
    raw["data"] = {"name": "folder", "root": str(root), "val_fraction": 0.25}
    return load_spec(raw, components=components)


def test_a_task_whose_few_labels_all_fell_in_training_gets_one_in_validation(tmp_path: Path, components) -> None:
    """Its validation loss was NaN: no epoch could be the best, and the warning blamed the learning rate."""
    from hydranet.core.data import split_indices
    from hydranet.core.engine import load_prepared_data
    from hydranet.core.interfaces import label_mask

    train_part, _ = split_indices(12, 0.25, 0)  # as the default split_seed splits 12 images
    first, second = train_part[:2].tolist()  # both smile labels land in training
    root = sparse_folder(tmp_path / "people", {first: "yes", second: "no"})
    spec = sparse_spec(root, components)
    data = load_prepared_data(spec, spec.build_tasks(), progress=False)
    assert label_mask(data.targets[data.val_index, 2]).sum() == 1
    assert label_mask(data.targets[data.train_index, 2]).sum() == 1
    assert set(data.train_index.tolist()).isdisjoint(data.val_index.tolist())
    assert data.usable == 12
    assert any("task 'smiling' had none of its 2 labels among the validation images: moved" in n for n in data.notes)
    again = load_prepared_data(spec, spec.build_tasks(), progress=False)
    assert again.val_index.tolist() == data.val_index.tolist()  # the same split on every run


def test_a_task_with_no_validation_label_still_lets_an_epoch_be_the_best(tmp_path: Path, components) -> None:
    import hydranet
    from hydranet.core.data import split_indices

    train_part, _ = split_indices(12, 0.25, 0)
    root = sparse_folder(tmp_path / "people", {int(train_part[0]): "yes"})  # its one label, in training
    out = tmp_path / "run"
    hydranet.train(sparse_spec(root, components), out_dir=out, components=components, progress=False, echo=False)
    assert (out / "best.pt").is_file()
    log = (out / "train.log").read_text()
    assert "task 'smiling' has no label among the validation images and 1 label in training" in log
    assert "learning rate" not in log


def test_a_run_on_one_image_counts_it_in_the_singular(tmp_path: Path, components) -> None:
    """The data line of train.log said "data: 1 images" (fixed in core/run_setup.py)."""
    import hydranet
    from conftest import tiny_spec
    from hydranet.core.spec import load_spec

    make_image(tmp_path / "faces" / "30_0_3_20170117145159065.jpg.chip.jpg", 16)
    out = tmp_path / "run"
    spec = load_spec(tiny_spec(tmp_path / "faces", epochs=1), components=components)
    hydranet.train(spec, out_dir=out, components=components, progress=False, echo=False)
    assert "data: 1 image at 16px, 1 train / 0 validation" in (out / "train.log").read_text()
