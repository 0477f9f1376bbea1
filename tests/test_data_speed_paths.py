"""The fast paths of preparing data give what the plain ones gave: sources spelt as before (the decode cache's
key depends on them), links and folders listed as before, labels parsed into the same table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
    """A link to an image is an image; a broken or looping link is listed and reported; a folder named like an
    image is no image (a link to itself counts as broken); a linked folder is not followed; a hidden folder is skipped."""
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
        ("42_0_0_20170117145159074.jpg", "broken symbolic link"),
        ("43_0_0_20170117145159075.jpg", "broken symbolic link")]
    assert [p.relative_to(root).as_posix() for p in image_files(root)] == [
        "41_0_0_20170117145159073.jpg", "42_0_0_20170117145159074.jpg", "43_0_0_20170117145159075.jpg",
        "sub/31_1_2_20170117145159066.jpg"]
