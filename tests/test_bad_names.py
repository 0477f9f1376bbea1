"""Bad UTKFace names and duplicate samples, through listing, label parsing, train.log and strict mode.

The rules: a name whose shape is wrong is skipped and reported (MALFORMED); a
well-shaped name with an out-of-range or non-numeric value keeps its sample
and loses only that task's label (listed as an invalid label); a second file
for the same sample (same age, gender, race and date) is reported as a
duplicate of the first in sorted order. `data.strict` makes all of these fatal.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hydranet
from conftest import tiny_spec
from hydranet.core.engine import load_prepared_data
from hydranet.core.errors import DataError
from hydranet.core.spec import load_spec
from hydranet.core.wording import plural
from hydranet.plugins.datasets.folder import FolderDataset
from hydranet.plugins.datasets.utkface import MALFORMED, UTKFaceDataset, utkface_key

#: name -> the (age, gender, race) labels it must give; NaN where the label is missing or invalid
KEPT = {
    # the real anomalies of UTKFace
    "39_1_20170116174525125.jpg.chip.jpg": (39, 1, math.nan),  # race field missing
    "44_1_4_20170116235150272 .jpg.chip.jpg": (44, 1, 4),  # a space before .jpg
    "55_0_0_20170116232725357jpg.chip.jpg": (55, 0, 0),  # no dot before jpg
    # out of range: the sample stays, that task's label is treated as missing
    "200_0_1_20170116000000101.jpg.chip.jpg": (math.nan, 0, 1),
    "30_2_1_20170116000000102.jpg.chip.jpg": (30, math.nan, 1),
    "31_0_7_20170116000000103.jpg.chip.jpg": (31, 0, math.nan),
    # non-numeric label fields
    "32_x_1_20170116000000104.jpg.chip.jpg": (32, math.nan, 1),
    "33_1_Asian_20170116000000105.jpg.chip.jpg": (33, 1, 2),  # a class name is a valid label
    "34_1_?_20170116000000106.jpg.chip.jpg": (34, 1, math.nan),
}
INVALID = {  # task -> the "field='value'" each invalid label is listed with
    "age": ["age='200'"],
    "gender": ["gender='2'", "gender='x'"],
    "ethnicity": ["race='7'", "race='?'"],
}
MALFORMED_NAMES = [
    "abc_0_1_20170116000000201.jpg.chip.jpg",  # age not a number: not a UTKFace name at all
    "3.5_0_1_20170116000000202.jpg.chip.jpg",
    "30_0_1_yesterday.jpg.chip.jpg",  # no date
    "30_0.jpg",  # too few fields
    "30_0_1_2_20170116000000203.jpg",  # too many fields
]


def face(path: Path, seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG")
    return path


def good_faces(root: Path, count: int = 12) -> None:
    for i in range(count):
        face(root / f"{20 + i}_{i % 2}_{i % 5}_{20170116000000000 + i}.jpg.chip.jpg", seed=i)


@pytest.fixture
def bad_names(tmp_path: Path) -> Path:
    root = tmp_path / "utk"
    good_faces(root)
    for i, name in enumerate([*KEPT, *MALFORMED_NAMES]):
        face(root / name, seed=100 + i)
    return root


def by_name(sources: list[str]) -> dict[str, int]:
    return {Path(source).name: i for i, source in enumerate(sources)}


def test_anomalous_names_keep_their_sample_and_lose_only_the_bad_label(bad_names: Path, components) -> None:
    spec = load_spec(tiny_spec(bad_names), components=components)
    data = load_prepared_data(spec, spec.build_tasks(), progress=False)
    index = by_name(data.sources)
    used = set(torch.cat([data.train_index, data.val_index]).tolist())
    for name, labels in KEPT.items():
        assert name in index, f"{name} was dropped"
        assert index[name] in used
        got = data.targets[index[name]].tolist()
        assert all((math.isnan(a) and math.isnan(b)) or a == b for a, b in zip(got, labels)), (name, got)
    for name in MALFORMED_NAMES:
        assert name not in index


def test_dataset_reports_each_malformed_name(bad_names: Path) -> None:
    dataset = UTKFaceDataset(bad_names)
    dataset.samples()
    assert sorted(Path(source).name for source, _ in dataset.problems) == sorted(MALFORMED_NAMES)
    assert {reason for _, reason in dataset.problems} == {MALFORMED}


def test_train_log_lists_malformed_names_and_invalid_labels(bad_names: Path, tmp_path: Path, components) -> None:
    spec = load_spec(tiny_spec(bad_names, epochs=1), components=components)
    hydranet.train(spec, out_dir=tmp_path / "run", components=components, progress=False, echo=False)
    log = (tmp_path / "run" / "train.log").read_text()
    assert f"{len(MALFORMED_NAMES)} entries of dataset 'utkface' skipped:" in log
    for name in MALFORMED_NAMES:
        assert f"{name}: {MALFORMED}" in log
    label_of = {"age": "age", "gender": "gender", "ethnicity": "race"}
    for task, values in INVALID.items():
        counted = plural(len(values), f"invalid '{label_of[task]}' label")  # '1 invalid 'age' label', not 'labels'
        assert f"{counted} for task '{task}' (treated as missing):" in log
        for value in values:
            assert any(value in line and ".jpg" in line for line in log.splitlines()), value
    assert f"data: {12 + len(KEPT)} images" in log


def test_strict_mode_refuses_an_out_of_range_label_naming_the_file(tmp_path: Path, components) -> None:
    root = tmp_path / "utk"
    good_faces(root)
    face(root / "30_0_7_20170116000000300.jpg.chip.jpg")
    raw = tiny_spec(root)
    raw["data"]["strict"] = True
    spec = load_spec(raw, components=components)
    with pytest.raises(DataError, match=r"30_0_7_20170116000000300\.jpg\.chip\.jpg: race='7'(.|\n)*strict"):
        load_prepared_data(spec, spec.build_tasks(), progress=False)


# --- duplicates ----------------------------------------------------------------------------------

@pytest.mark.parametrize("names, kept", [
    # the same photo in both spellings UTKFace ships: the sorted-first one is kept
    (["30_0_3_20170117145159065.jpg.chip.jpg", "30_0_3_20170117145159065.jpg"], "30_0_3_20170117145159065.jpg"),
    # the stray-space spelling of the same name ("_ .jpg" sorts before "_.jpg")
    (["30_0_3_20170117145159065.jpg", "30_0_3_20170117145159065 .jpg.chip.jpg"],
     "30_0_3_20170117145159065 .jpg.chip.jpg"),
    # no dot before jpg, and a PNG copy
    (["30_0_3_20170117145159065jpg.chip.jpg", "30_0_3_20170117145159065.png"], "30_0_3_20170117145159065.png"),
])
def test_duplicate_files_of_one_sample_keep_the_first(tmp_path: Path, names: list[str], kept: str) -> None:
    for i, name in enumerate(names):
        face(tmp_path / name, seed=i)
    dataset = UTKFaceDataset(tmp_path)
    samples = dataset.samples()
    assert [Path(s.source).name for s in samples] == [kept]
    (duplicate,) = [name for name in names if name != kept]
    assert dataset.problems == [(str(tmp_path / duplicate), f"duplicate of {kept}")]


def test_same_date_with_different_labels_is_not_a_duplicate(tmp_path: Path) -> None:
    names = ["30_0_3_20170117145159065.jpg", "31_0_3_20170117145159065.jpg", "30_1_20170117145159065.jpg"]
    for name in names:
        face(tmp_path / name)
    dataset = UTKFaceDataset(tmp_path)
    assert len(dataset.samples()) == 3 and dataset.problems == []
    assert len({utkface_key(name) for name in names}) == 3


def test_duplicates_are_listed_in_the_notes_and_fatal_in_strict_mode(tmp_path: Path, components) -> None:
    root = tmp_path / "utk"
    good_faces(root)
    first = face(root / "20_0_0_20170116000000000.jpg")  # good_faces wrote the .jpg.chip.jpg spelling
    duplicate = root / "20_0_0_20170116000000000.jpg.chip.jpg"
    raw = tiny_spec(root)
    spec = load_spec(raw, components=components)
    data = load_prepared_data(spec, spec.build_tasks(), progress=False)
    assert str(duplicate) not in data.sources and str(first) in data.sources
    assert f"  {duplicate}: duplicate of {first.name}" in data.notes
    raw["data"]["strict"] = True
    spec = load_spec(raw, components=components)
    with pytest.raises(DataError, match=f"{duplicate.name}: duplicate of {first.name}"):
        load_prepared_data(spec, spec.build_tasks(), progress=False)


def test_folder_csv_listing_one_image_twice_reports_the_later_rows(tmp_path: Path) -> None:
    root = tmp_path / "images"
    for name in ("a.jpg", "b.jpg"):
        face(root / name)
    (root / "sub").mkdir()
    (root / "link.jpg").symlink_to(root / "a.jpg")
    (root / "labels.csv").write_text("file,smile\n"
                                     "a.jpg,1\n"
                                     "b.jpg,0\n"
                                     "a.jpg,0\n"  # the same file again, with a conflicting label
                                     "./a.jpg,1\n"  # another spelling of the same file
                                     "sub/../b.jpg,1\n"
                                     "link.jpg,1\n")  # a symlink to a.jpg
    dataset = FolderDataset(root)
    samples = dataset.samples()
    assert [(Path(s.source).name, dict(s.record)) for s in samples] == [("a.jpg", {"smile": "1"}),
                                                                         ("b.jpg", {"smile": "0"})]
    csv = root / "labels.csv"
    assert [source for source, _ in dataset.problems] == [f"{csv}:4", f"{csv}:5", f"{csv}:6", f"{csv}:7"]
    reasons = [reason for _, reason in dataset.problems]
    assert reasons[0].startswith(f"duplicate of {csv}:2") and "a.jpg" in reasons[0]
    assert reasons[1].startswith(f"duplicate of {csv}:2") and "./a.jpg" in reasons[1]
    assert reasons[2].startswith(f"duplicate of {csv}:3")
    assert reasons[3].startswith(f"duplicate of {csv}:2") and "link.jpg" in reasons[3]


# --- invalid labels: why, and when none is valid ----------------------------------------------------

def test_invalid_labels_are_listed_with_a_reason(bad_names: Path, components) -> None:
    spec = load_spec(tiny_spec(bad_names), components=components)
    notes = load_prepared_data(spec, spec.build_tasks(), progress=False).notes
    lines = [line for line in notes if "='" in line]
    assert lines and not any(line.rstrip().endswith(":") for line in lines)
    assert any(line.endswith("200_0_1_20170116000000101.jpg.chip.jpg: age='200': outside [0, 120] (min/max)")
               for line in lines), lines
    assert any(line.endswith("gender='x': not a class index 0-1 or class name (male, female)") for line in lines)
    assert any(line.endswith("race='7': not a class index 0-4 or class name "
                             "(White, Black, Asian, Indian, Others)") for line in lines)


def test_folder_invalid_labels_say_why(tmp_path: Path, components) -> None:
    root = tmp_path / "images"
    rows = ["file,smile,age"] + [f"{i}.jpg,{['no', 'yes', 'maybe'][i % 3]},{['30', 'old'][i % 2]}" for i in range(6)]
    for i in range(6):
        face(root / f"{i}.jpg", seed=i)
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    raw = tiny_spec(root)
    raw["data"] = {"name": "folder", "root": str(root), "val_fraction": 0.25}
    raw["tasks"] = [{"name": "smiling", "kind": "binary", "label": "smile", "class_names": ["no", "yes"]},
                    {"name": "years", "kind": "regression", "label": "age"}]
    spec = load_spec(raw, components=components)
    notes = load_prepared_data(spec, spec.build_tasks(), progress=False).notes
    csv = root / "labels.csv"  # each listed by its CSV line, where it is fixed, and its image
    assert f"  {csv}:4 ({root / '2.jpg'}): smile='maybe': not a class index 0-1 or class name (no, yes)" in notes
    assert f"  {csv}:3 ({root / '1.jpg'}): age='old': not a number" in notes


def test_a_range_that_rejects_every_label_says_so_not_that_the_field_is_wrong(tmp_path: Path, components) -> None:
    root = tmp_path / "utk"
    good_faces(root)  # ages 20 to 31
    raw = tiny_spec(root)
    raw["tasks"] = ["gender", {"name": "a", "kind": "regression", "label": "age", "min": 150, "max": 200}]
    spec = load_spec(raw, components=components)
    with pytest.raises(DataError) as caught:
        load_prepared_data(spec, spec.build_tasks(), progress=False)
    message = str(caught.value)
    assert "task 'a'" in message and "every value of 'age'" in message and "outside [150, 200] (min/max)" in message
    assert "'20'" in message  # an example of the values it saw
    assert "Set the task's `label`" not in message
    # a wrong field name still gets the list of fields
    raw["tasks"][1] = {"name": "a", "kind": "regression", "label": "agee"}
    spec = load_spec(raw, components=components)
    with pytest.raises(DataError, match="Set the task's `label` to one of them"):
        load_prepared_data(spec, spec.build_tasks(), progress=False)
