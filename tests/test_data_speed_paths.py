"""The fast paths of preparing data give what the plain ones gave: sources spelt as before (the decode cache's
key depends on them), links and folders listed as before, a CSV's duplicates found as before, labels parsed
into the same table, the same decode-cache key."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hydranet.core.data import parse_labels
from hydranet.core.decode import cache_key
from hydranet.core.decode_cache import data_folder
from hydranet.core.interfaces import Sample
from hydranet.plugins.datasets.folder import FolderDataset
from hydranet.plugins.datasets.utkface import UTKFaceDataset, image_files

FACE = "30_0_3_20170117145159065.jpg.chip.jpg"


@pytest.mark.parametrize("root", [".", "", "faces", "./faces", "faces/", "faces//sub/..", "ABSOLUTE"])
def test_sources_are_spelt_as_path_spells_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               root: str) -> None:
    """`str(Path(root) / name)`, however root is written: "." gives "a.jpg", not "./a.jpg"."""
    folder = tmp_path / "faces"
    (folder / "sub").mkdir(parents=True)
    (folder / FACE).write_bytes(b"x")
    (folder / "sub" / "31_1_2_20170117145159066.jpg").write_bytes(b"x")
    if root == "ABSOLUTE":
        root = str(folder)
    monkeypatch.chdir(folder if root in (".", "") else tmp_path)
    sources = [s.source for s in UTKFaceDataset(root).samples()]
    base = Path(root).expanduser()
    assert sources == [str(base / FACE), str(base / "sub" / "31_1_2_20170117145159066.jpg")]
    assert [str(p) for p in image_files(base)] == sources


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_links_and_folders_are_listed_as_before(tmp_path: Path) -> None:
    """A link to an image is an image; a broken link, or one to itself, is listed and reported as broken; a
    folder named like an image is no image; a second link to a folder already read is listed, not read again; a
    hidden folder is skipped."""
    root = tmp_path / "faces"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "sub" / "31_1_2_20170117145159066.jpg").write_bytes(b"x")
    (root / ".hidden" / "32_1_2_20170117145159067.jpg").write_bytes(b"x")
    (root / "40_0_0_20170117145159072.jpg").mkdir()
    (root / "41_0_0_20170117145159073.jpg").symlink_to(root / "sub" / "31_1_2_20170117145159066.jpg")
    (root / "42_0_0_20170117145159074.jpg").symlink_to(tmp_path / "gone.jpg")
    (root / "43_0_0_20170117145159075.jpg").symlink_to(root / "43_0_0_20170117145159075.jpg")
    (root / "linked").symlink_to(root / "sub")
    dataset = UTKFaceDataset(root)
    assert [Path(s.source).relative_to(root).as_posix() for s in dataset.samples()] == [
        "41_0_0_20170117145159073.jpg", "sub/31_1_2_20170117145159066.jpg"]
    assert [(Path(where).name, why.split(" (")[0]) for where, why in dataset.problems] == [
        ("linked", f"the same folder as {root / 'sub'}, which is read already: not read twice"),
        ("42_0_0_20170117145159074.jpg", "broken symbolic link"),
        ("43_0_0_20170117145159075.jpg", "broken symbolic link")]
    assert [p.relative_to(root).as_posix() for p in image_files(root)] == [
        "41_0_0_20170117145159073.jpg", "42_0_0_20170117145159074.jpg", "43_0_0_20170117145159075.jpg",
        "sub/31_1_2_20170117145159066.jpg"]


class _AsGiven:
    """A task whose label is the sample's "v" field as it is: a number of any kind, or None (no label)."""

    label = "v"

    def __init__(self, name: str):
        self.name = name

    def parse_label(self, record: dict) -> object:
        return record.get("v")


def test_labels_fill_the_table_as_setting_each_element_did() -> None:
    """The column is built at once; each value is rounded to float32 as an element assignment rounds it."""
    values = [1, 2.5, 1 / 3, np.float64(0.1), torch.tensor(2.0), True, math.nan, math.inf, -math.inf, 16777217,
              1e-46, 3.4028234663852886e38, None]
    samples = [Sample(f"{i}.jpg", {} if v is None else {"v": v}) for i, v in enumerate(values)]
    table, report = parse_labels(samples, [_AsGiven("a"), _AsGiven("b")])
    expected = torch.full((len(values), 2), math.nan)
    for i, v in enumerate(values):
        if v is not None:
            expected[i] = float(v)
    assert table.dtype == torch.float32 and torch.equal(table.nan_to_num(7.0), expected.nan_to_num(7.0))
    assert report.labelled == {"a": len(values) - 1, "b": len(values) - 1} and report.missing == {"a": 1, "b": 1}


@pytest.mark.parametrize("huge", [1e39, -1e39, 3.4028235e38])
def test_a_label_beyond_float32_is_an_invalid_label(huge: float) -> None:
    """Once torch's "cannot be converted to type float without overflow"; now reported as the built-in kinds
    report '1e39' in a labels.csv (tests/test_robustness_data.py)."""
    samples = [Sample("0.jpg", {"v": 1.0}), Sample("1.jpg", {"v": huge})]
    table, report = parse_labels(samples, [_AsGiven("a")])
    assert torch.isnan(table[1, 0]) and report.labelled["a"] == 1
    assert "not a finite number as float32" in report.invalid["a"][0][2]


def test_the_decode_cache_key_is_the_one_existing_caches_were_written_under(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Pinned: a key that changed would make every cache on disk a miss, and decode the data again."""
    monkeypatch.chdir(tmp_path)
    Path("a.jpg").write_bytes(b"abc")
    Path("b.jpg").write_bytes(b"hello")
    for name in ("a.jpg", "b.jpg"):
        os.utime(name, ns=(1577934245123456789, 1577934245123456789))
    assert cache_key(["a.jpg", "b.jpg", "gone.jpg", "dir/ü.jpg"], 64) == "6f2587e899268793dbe855c994f1c0e2"


def test_the_data_folder_is_the_deepest_folder_holding_every_source(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """What a cache entry's header records as its data (the entries it supersedes share it)."""
    monkeypatch.chdir(tmp_path)
    assert data_folder([]) is None
    assert data_folder(["faces/a.jpg", "faces/b.jpg"]) == str(tmp_path / "faces")
    assert data_folder(["faces/part1/a.jpg", "faces/part2/b.jpg", "faces/part2/c.jpg"]) == str(tmp_path / "faces")
    assert data_folder(["a.jpg", str(tmp_path / "faces" / "b.jpg")]) == str(tmp_path)
    assert data_folder(["faces/../x/a.jpg", "x/./b.jpg"]) == str(tmp_path / "x")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_a_csv_finds_one_image_through_linked_folders_and_same_names_in_two_folders(tmp_path: Path) -> None:
    """Each folder is resolved once, and a file's own name per row: an image reached through a linked folder
    is still a duplicate, and files of one name in two folders are two images."""
    real = tmp_path / "real"
    for name in ("a.jpg", "one/b.jpg", "two/b.jpg"):
        (real / name).parent.mkdir(parents=True, exist_ok=True)
        (real / name).write_bytes(b"x")
    (tmp_path / "root").symlink_to(real)
    (real / "alias").symlink_to(real)
    (real / "labels.csv").write_text("file,smile\na.jpg,1\none/b.jpg,0\ntwo/b.jpg,1\nalias/a.jpg,0\n"
                                     "alias/one/b.jpg,1\none/../a.jpg,1\n")
    dataset = FolderDataset(tmp_path / "root")
    assert [Path(s.source).relative_to(tmp_path / "root").as_posix() for s in dataset.samples()] == [
        "a.jpg", "one/b.jpg", "two/b.jpg"]
    assert [(where.rsplit(":", 1)[1], why.split(" (")[0]) for where, why in dataset.problems] == [
        ("5", f"duplicate of {tmp_path / 'root' / 'labels.csv'}:2"),
        ("6", f"duplicate of {tmp_path / 'root' / 'labels.csv'}:3"),
        ("7", f"duplicate of {tmp_path / 'root' / 'labels.csv'}:2")]
