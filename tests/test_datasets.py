"""The built-in datasets: UTKFace name parsing and listing, image folder + CSV, and plugin discovery."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from pydantic import ValidationError

from conftest import make_image
from hydranet.core.errors import DataError
from hydranet.core.interfaces import Dataset
from hydranet.core.paths import cache_dir
from hydranet.plugins.datasets.csv_cells import row_record
from hydranet.plugins.datasets.folder import FolderDataset
from hydranet.plugins.datasets.utkface import MALFORMED, UTKFaceDataset, is_image_name, parse_utkface_name

DATASET_MODULES = {
    "utkface": "hydranet.plugins.datasets.utkface",
    "synthetic": "hydranet.plugins.datasets.synthetic",
    "folder": "hydranet.plugins.datasets.folder",
}


# --- UTKFace name parsing --------------------------------------------------------------------

@pytest.mark.parametrize("name, record", [
    ("30_0_3_20170117145159065.jpg.chip.jpg", {"age": "30", "gender": "0", "race": "3"}),
    ("1_1_2_20161219140530307.jpg", {"age": "1", "gender": "1", "race": "2"}),
    # the three real files without race: no "race" key, the date is not taken for a race
    ("39_1_20170116174525125.jpg.chip.jpg", {"age": "39", "gender": "1"}),
    ("61_1_20170109142408075.jpg.chip.jpg", {"age": "61", "gender": "1"}),
    ("61_1_20170109150557335.jpg.chip.jpg", {"age": "61", "gender": "1"}),
    # stray space before the extension, and a missing dot before jpg
    ("44_1_4_20170116235150272 .jpg.chip.jpg", {"age": "44", "gender": "1", "race": "4"}),
    ("55_0_0_20170116232725357jpg.chip.jpg", {"age": "55", "gender": "0", "race": "0"}),
    # doubled underscore: the empty gender field is a missing label, race stays 0
    ("53__0_20170116184028385.jpg", {"age": "53", "race": "0"}),
    (" 26_0_1_20170116000000000.jpg ", {"age": "26", "gender": "0", "race": "1"}),
    # values are passed on unvalidated: range checks belong to the tasks
    ("130_7_9_20170116000000000.jpg", {"age": "130", "gender": "7", "race": "9"}),
    ("data/UTKFace/20_1_0_20170116000000000.jpg.chip.jpg", {"age": "20", "gender": "1", "race": "0"}),
])
def test_parse_utkface_name(name: str, record: dict[str, str]) -> None:
    assert parse_utkface_name(name) == record


@pytest.mark.parametrize("name", [
    "30_0.jpg",  # too few fields
    "portrait.jpg",
    "",
    "x_0_3_20170117145159065.jpg",  # age not a number
    "_0_3_20170117145159065.jpg",  # age empty
    "3.5_0_3_20170117145159065.jpg",
    "30_0_3.jpg",  # no date: "3" must not be read as a date with race missing
    "30_0_3_1_20170117145159065.jpg",  # too many fields to know which is which
    "30_0_3_abc.jpg",
])
def test_parse_utkface_name_rejects_malformed(name: str) -> None:
    assert parse_utkface_name(name) is None


@pytest.mark.parametrize("name, expected", [
    ("a.jpg", True), ("a.JPG", True), ("a.jpeg", True), ("a.Png", True), ("a.jpg ", True),
    ("a.gif", False), ("labels.csv", False), ("._30_0_3_20170117145159065.jpg", False), (".hidden.png", False),
])
def test_is_image_name(name: str, expected: bool) -> None:
    assert is_image_name(name) is expected


# --- UTKFace listing -------------------------------------------------------------------------

@pytest.fixture
def utk_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "UTKFace"
    for name in ["30_0_3_20170117145159065.jpg.chip.jpg", "39_1_20170116174525125.jpg.chip.jpg",
                 "2_1_2_20170116000000001.JPG", "70_0_1_20170116000000002.png", "not_a_face.jpg"]:
        make_image(folder / name)
    (folder / "notes.txt").write_text("not an image")
    (folder / "._30_0_3_20170117145159065.jpg.chip.jpg").write_bytes(b"macOS resource fork")
    make_image(folder / "nested" / "25_0_0_20170116000000003.jpg")  # read too, unless data.recursive is false
    make_image(folder / ".thumbnails" / "26_0_0_20170116000000004.jpg")  # hidden: never read
    return folder


def test_utkface_lists_sorted_samples_with_raw_records(utk_folder: Path) -> None:
    samples = UTKFaceDataset(utk_folder, recursive=False).samples()
    names = [Path(s.source).name for s in samples]
    assert names == sorted(names)
    assert names == ["2_1_2_20170116000000001.JPG", "30_0_3_20170117145159065.jpg.chip.jpg",
                     "39_1_20170116174525125.jpg.chip.jpg", "70_0_1_20170116000000002.png"]
    by_name = {Path(s.source).name: dict(s.record) for s in samples}
    assert by_name["39_1_20170116174525125.jpg.chip.jpg"] == {"age": "39", "gender": "1"}
    assert all(Path(s.source).is_file() for s in samples)


def test_utkface_reports_malformed_names_once(utk_folder: Path) -> None:
    dataset = UTKFaceDataset(utk_folder)
    dataset.samples()
    assert dataset.problems == [(str(utk_folder / "not_a_face.jpg"), MALFORMED)]
    dataset.samples()
    assert len(dataset.problems) == 1  # listing again does not double the report


def test_utkface_missing_root_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"UTKFace folder .*nowhere does not exist.*synthetic") as caught:
        UTKFaceDataset(tmp_path / "nowhere").samples()
    assert "set data.root to its folder (in the spec, or --set data.root=DIR)" in str(caught.value)


def test_utkface_reads_subfolders_in_path_order(utk_folder: Path) -> None:
    """The top folder's samples keep their sources and order (the decode cache's key, the split); the
    subfolder's are listed by their path below root, and the hidden folder is skipped."""
    flat = [s.source for s in UTKFaceDataset(utk_folder, recursive=False).samples()]
    every = [s.source for s in UTKFaceDataset(utk_folder).samples()]
    assert every == [*flat, str(utk_folder / "nested" / "25_0_0_20170116000000003.jpg")]  # '7' sorts before 'n'


def test_utkface_reads_the_in_the_wild_parts(tmp_path: Path) -> None:
    """The in-the-wild download unpacks into part1/, part2/, part3/: all three are read, not one of them,
    and a photo in two parts is one sample, its copy listed as a duplicate by its path below root."""
    root = tmp_path / "UTKface_inthewild"
    for part, date in [("part1", 1), ("part2", 2), ("part3", 3), ("part3", 1)]:
        make_image(root / part / f"30_0_3_2017011600000000{date}.jpg")
    dataset = UTKFaceDataset(root)
    assert [Path(s.source).relative_to(root).as_posix() for s in dataset.samples()] == [
        "part1/30_0_3_20170116000000001.jpg", "part2/30_0_3_20170116000000002.jpg",
        "part3/30_0_3_20170116000000003.jpg"]
    assert dataset.problems == [(str(root / "part3" / "30_0_3_20170116000000001.jpg"),
                                 "duplicate of part1/30_0_3_20170116000000001.jpg")]


def test_utkface_without_recursion_names_the_subfolders_that_hold_images(tmp_path: Path) -> None:
    make_image(tmp_path / "part1" / "30_0_3_20170117145159065.jpg")
    make_image(tmp_path / "part2" / "31_0_3_20170117145159066.jpg")
    with pytest.raises(DataError, match=r"no .* images in .*\(data.recursive is false\); its subfolders part1, part2 "
                                        r"hold images: set data.recursive: true to read them all"):
        UTKFaceDataset(tmp_path, recursive=False).samples()
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no .* images in .*empty or its subfolders; set data.root to the folder"):
        UTKFaceDataset(tmp_path / "empty").samples()


def test_datasets_pickle_and_open_images(utk_folder: Path) -> None:
    """Worker processes get a pickled copy of the dataset and call open_image on it."""
    dataset = pickle.loads(pickle.dumps(UTKFaceDataset(utk_folder)))
    sample = dataset.samples()[0]
    with dataset.open_image(sample.source) as image:
        assert image.size == (16, 16)


# --- image folder + CSV ----------------------------------------------------------------------

def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for name in ["a.jpg", "b.png", "sub/c.jpg", "d.jpg"]:
        make_image(root / name)
    return root


def test_folder_reads_labels_and_skips_bad_rows(image_folder: Path) -> None:
    csv_path = write_csv(image_folder / "labels.csv", "\ufefffile, smile ,age\n"  # BOM and stray spaces
                         "a.jpg,1,30\n"
                         "b.png,,41\n"  # empty cell: smile missing
                         "sub/c.jpg, 0 ,\n"
                         "missing.jpg,1,20\n"
                         ",1,20\n"
                         "\n"
                         "d.jpg,1,20,extra\n")
    dataset = FolderDataset(image_folder)
    samples = dataset.samples()
    assert [(Path(s.source).relative_to(image_folder).as_posix(), dict(s.record)) for s in samples] == [
        ("a.jpg", {"smile": "1", "age": "30"}),
        ("b.png", {"age": "41"}),
        ("sub/c.jpg", {"smile": "0"}),
    ]
    sources = [source for source, _ in dataset.problems]
    assert sources == [f"{csv_path}:5", f"{csv_path}:6", f"{csv_path}:8"]
    reasons = [reason for _, reason in dataset.problems]
    assert "missing.jpg" in reasons[0] and "not found" in reasons[0]
    assert "no image file in column 'file'" in reasons[1]
    assert "4 cells" in reasons[2] and "header has 3" in reasons[2]


def test_folder_custom_csv_and_file_column(image_folder: Path, tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "elsewhere.csv", "path,label\nd.jpg,cat\n")
    samples = FolderDataset(image_folder, csv_path, file_column="path").samples()
    assert [dict(s.record) for s in samples] == [{"label": "cat"}]
    assert samples[0].source == str(image_folder / "d.jpg")


def test_folder_missing_file_column_names_csv_columns_and_param(image_folder: Path) -> None:
    write_csv(image_folder / "labels.csv", "image,age\na.jpg,3\n")
    with pytest.raises(DataError) as error:
        FolderDataset(image_folder).samples()
    message = str(error.value)
    assert "labels.csv" in message and "no 'file' column" in message
    assert "image, age" in message and "set data.file_column" in message


@pytest.mark.parametrize("setup, match", [
    (lambda root: None, r"label CSV .*labels.csv does not exist; set data.csv to"),
    (lambda root: write_csv(root / "labels.csv", ""), r"labels.csv is empty"),
    (lambda root: write_csv(root / "labels.csv", "file,name\na.jpg,Jos\u00e9\n", "latin-1"), r"not UTF-8"),
])
def test_folder_unreadable_csv_is_a_data_error(image_folder: Path, setup, match: str) -> None:
    setup(image_folder)
    with pytest.raises(DataError, match=match):
        FolderDataset(image_folder).samples()


def test_folder_missing_root(tmp_path: Path) -> None:
    """Hints name the spec key (data.root), not a bare parameter name that is nowhere in the spec's paths."""
    with pytest.raises(DataError, match=r"image folder .*absent does not exist; set data.root to"):
        FolderDataset(tmp_path / "absent").samples()


def test_row_record_drops_file_column_empty_and_overflow_cells() -> None:
    row = {"file": "a.jpg", "age": " 3 ", "smile": "", "mood": "   ", "x": None, None: ["spill"]}
    assert row_record(row, "file") == {"age": "3"}


# --- plugin discovery ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def datasets():
    from hydranet.core.plugins import load_components, make_plugin_manager

    return load_components(make_plugin_manager(entry_points=False)).datasets


@pytest.mark.parametrize("name", sorted(DATASET_MODULES))
def test_datasets_are_registered_by_their_builtin_plugin(datasets, name: str) -> None:
    entry = datasets.get(name)
    assert entry.plugin == DATASET_MODULES[name]
    assert entry.description
    assert entry.params is not None
    for field_name, field in entry.params.model_fields.items():
        assert field.description, f"{name}.{field_name} has no description"
    with pytest.raises(ValidationError, match="roots"):
        entry.validate_params({"root": "x", "roots": "y"})  # extra="forbid" catches typos


def test_dataset_params_validate_and_build(datasets, tmp_path: Path) -> None:
    utk = datasets.get("utkface")
    dataset = utk.factory(utk.validate_params({"root": str(tmp_path)}))
    assert isinstance(dataset, UTKFaceDataset) and dataset.root == str(tmp_path)
    with pytest.raises(ValidationError, match="root"):
        utk.validate_params({})

    folder = datasets.get("folder")
    dataset = folder.factory(folder.validate_params({"root": str(tmp_path)}))
    assert isinstance(dataset, Dataset) and dataset.csv == str(tmp_path / "labels.csv")

    synthetic = datasets.get("synthetic")
    params = synthetic.validate_params({"count": 10})
    assert (params.count, params.size, params.seed, params.root) == (10, 64, 0, None)
    for bad in ({"count": 0}, {"size": 8}, {"size": 1024}):
        with pytest.raises(ValidationError):
            synthetic.validate_params(bad)
    dataset = synthetic.factory(params)
    assert Path(dataset.root) == cache_dir() / "synthetic" / "n10-s64-seed0"
    assert not Path(dataset.root).exists()  # drawn on first listing, never on construction


# --- cache folder ----------------------------------------------------------------------------

@pytest.mark.parametrize("env, expected", [
    ({"HYDRANET_CACHE": "/c/h", "XDG_CACHE_HOME": "/x"}, Path("/c/h")),
    ({"HYDRANET_CACHE": "", "XDG_CACHE_HOME": "/x"}, Path("/x/hydranet")),
    ({}, Path("~/.cache/hydranet").expanduser()),
])
def test_cache_dir_precedence(env: dict[str, str], expected: Path) -> None:
    assert cache_dir(env) == expected


def test_synth_command_says_one_face_in_the_singular(tmp_path: Path) -> None:
    import click
    from click.testing import CliRunner

    from hydranet.core.cli import cli as hydranet_cli
    from hydranet.plugins import synth_command

    group = click.Group(context_settings=hydranet_cli.context_settings)  # see test_synthetic's cli fixture
    synth_command.register_commands(group)
    result = CliRunner().invoke(group, ["synth", str(tmp_path / "one"), "--count", "1", "--size", "16",
                                        "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"wrote 1 synthetic face (16x16 px, seed 0) in {tmp_path / 'one'}" in result.output
