"""The data report as a whole: strict mode refuses every kind of problem in one error, a task with a large
share of invalid labels gets a warning of its own, and counts read as English ('1 invalid label').

The per-kind rules (which names are malformed, which images unreadable) are in test_bad_names.py and
test_bad_images.py; here is how the kinds come together.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import hydranet
from conftest import labelled_images, tiny_spec
from hydranet.core.data import SHOW_PROBLEMS
from hydranet.core.engine import load_prepared_data
from hydranet.core.errors import DataError
from hydranet.core.spec import load_spec
from test_bad_images import noise_jpeg, truncated_jpeg, zero_byte

DATE = 20170116000000000


def utk(root: Path, age: object, gender: object, race: object, index: int) -> Path:
    return root / f"{age}_{gender}_{race}_{DATE + index}.jpg.chip.jpg"


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    """A UTKFace folder with every kind of problem: 3 bad names, 1 bad age, 2 bad genders, 1 corrupt JPEG."""
    root = tmp_path / "utk"
    root.mkdir()
    for i in range(10):
        noise_jpeg(utk(root, 20 + i, i % 2, i % 5, i), size=32, seed=i)
    for i, name in enumerate(["abc_0_1_x.jpg", "30_0.jpg", "30_0_1_yesterday.jpg"]):
        noise_jpeg(root / name, size=32, seed=50 + i)
    noise_jpeg(utk(root, 200, 0, 1, 60), size=32)  # age out of range
    noise_jpeg(utk(root, 30, 2, 1, 61), size=32)  # gender 2
    noise_jpeg(utk(root, 31, "x", 1, 62), size=32)  # gender x
    truncated_jpeg(utk(root, 32, 1, 1, 63))
    return root


def strict_spec(root: Path, components, **train):
    raw = tiny_spec(root, **train)
    raw["data"]["strict"] = True
    return load_spec(raw, components=components)


def test_strict_mode_lists_every_kind_of_problem_in_one_error(messy: Path, components) -> None:
    spec = strict_spec(messy, components)
    with pytest.raises(DataError) as caught:
        load_prepared_data(spec, spec.build_tasks(), progress=False)
    message = str(caught.value)
    assert message.startswith("dataset 'utkface' has 7 problems of 4 kinds, and data.strict is true:")
    assert "3 entries of dataset 'utkface' would be skipped:" in message
    assert "1 invalid 'age' label for task 'age' (would be treated as missing):" in message
    assert "2 invalid 'gender' labels for task 'gender' (would be treated as missing):" in message
    assert "1 unreadable image would be skipped:" in message
    for shown in ["abc_0_1_x.jpg: file name does not match", "30_0.jpg", "30_0_1_yesterday.jpg", "age='200'",
                  "gender='2'", "gender='x'", f"{DATE + 63}.jpg.chip.jpg: truncated"]:
        assert shown in message, shown
    # a run that stops treats nothing as missing: the wording says what would happen, and the way out
    assert "(treated as missing)" not in message
    assert message.endswith("(without strict mode these would be skipped or treated as missing; strict mode stops "
                            "instead: fix or remove them, or set data.strict: false)")
    assert "... and" not in message  # every problem is shown, so no full list is pointed at


def test_strict_mode_stops_training_with_the_whole_list(messy: Path, tmp_path: Path, components) -> None:
    spec = strict_spec(messy, components, epochs=1)
    with pytest.raises(DataError, match=r"has 7 problems of 4 kinds(.|\n)*gender='x'(.|\n)*truncated"):
        hydranet.train(spec, out_dir=tmp_path / "run", components=components, progress=False, echo=False)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_long_list_shows_the_first_few_and_where_all_of_them_are(tmp_path: Path, components) -> None:
    root = tmp_path / "utk"
    root.mkdir()
    for i in range(6):
        noise_jpeg(utk(root, 20 + i, 0, 1, i), size=32, seed=i)
    empty = [zero_byte(utk(root, 40 + i, 0, 1, 20 + i)) for i in range(SHOW_PROBLEMS + 2)]
    bad_ages = [noise_jpeg(utk(root, 300 + i, 0, 1, 40 + i), size=32) for i in range(SHOW_PROBLEMS + 1)]
    with pytest.raises(DataError) as caught:
        spec = strict_spec(root, components)
        load_prepared_data(spec, spec.build_tasks(), progress=False)
    message = str(caught.value)
    assert f"{len(empty)} unreadable images would be skipped:" in message
    assert f"{len(bad_ages)} invalid 'age' labels for task 'age' (would be treated as missing):" in message
    found = re.findall(r"\.\.\. and 2 more \(all 7 are listed in (.+)\)", message)
    assert found and Path(found[0]).is_file()
    assert f"... and 1 more (all 6 are listed in {found[0]})" in message
    full = Path(found[0]).read_text()
    assert all(path.name in full for path in [*empty, *bad_ages])
    assert sum(path.name in message for path in empty) == SHOW_PROBLEMS

    # without strict mode, train.log's notes point at the same full list
    spec = load_spec(tiny_spec(root), components=components)
    notes = "\n".join(load_prepared_data(spec, spec.build_tasks(), progress=False).notes)
    assert f"{len(empty)} unreadable images skipped:" in notes
    assert f"... and 2 more (all 7 are listed in {found[0]})" in notes


def test_counts_of_one_are_singular(tmp_path: Path, components) -> None:
    root = tmp_path / "utk"
    root.mkdir()
    for i in range(6):
        noise_jpeg(utk(root, 20 + i, 0, 1, i), size=32, seed=i)
    noise_jpeg(root / "30_0.jpg", size=32)
    noise_jpeg(utk(root, 200, 0, 1, 30), size=32)
    zero_byte(utk(root, 33, 0, 1, 31))
    noise_jpeg(utk(root, 300, 7, 9, 32), size=32)  # no task has a valid label
    spec = load_spec(tiny_spec(root), components=components)
    notes = load_prepared_data(spec, spec.build_tasks(), progress=False).notes
    assert "1 entry of dataset 'utkface' skipped:" in notes
    assert "1 unreadable image skipped:" in notes
    assert "1 sample with no valid label for any task skipped:" in notes
    assert f"  {utk(root, 300, 7, 9, 32)}" in notes  # named, so that it can be found
    assert "2 invalid 'age' labels for task 'age' (treated as missing):" in notes
    assert "1 invalid 'gender' label for task 'gender' (treated as missing):" in notes


# --- a large share of one task's labels invalid ---------------------------------------------------

def folder_with_genders(root: Path, genders: list[str]) -> Path:
    return labelled_images(root, "file,age,gender", [f"{20 + i % 50},{gender}" for i, gender in enumerate(genders)])


def folder_spec(root: Path, components, strict: bool = False):
    raw = tiny_spec(root)
    raw["tasks"] = ["age", "gender"]
    raw["data"] = {"name": "folder", "root": str(root), "val_fraction": 0.25, "strict": strict}
    return load_spec(raw, components=components)


def test_a_task_with_many_invalid_labels_gets_a_warning_naming_the_values_and_the_fix(tmp_path: Path,
                                                                                        components) -> None:
    genders = ["F"] * 14 + ["1"] * 10 + ["0"] * 5 + ["f"]  # 15 of 30 invalid: the data writes F, not female
    root = folder_with_genders(tmp_path / "faces", genders)
    spec = folder_spec(root, components)
    data = load_prepared_data(spec, spec.build_tasks(), progress=False)
    warnings = [line for line in data.notes if line.startswith("WARNING")]
    assert len(warnings) == 1, data.notes
    (warning,) = warnings
    assert "task 'gender': 50% of its labels are invalid (15 of 30 samples with a 'gender' value)" in warning
    assert "'F' ×14, 'f' ×1" in warning
    assert "'F': not a class index 0-1 or class name (male, female)" in warning  # what the task accepts
    assert "'F' may stand for class 'female' and 'f' may stand for class 'female'." in warning
    assert "class_names" in warning  # and the likely fix
    assert data.notes[-1] == warning  # last, right above the data summary line, where it is seen
    assert data.usable == 30  # a warning, not an error: training goes on

    spec = folder_spec(root, components, strict=True)
    with pytest.raises(DataError, match="WARNING: task 'gender': 50% of its labels"):
        load_prepared_data(spec, spec.build_tasks(), progress=False)


def test_a_few_invalid_labels_get_no_warning(tmp_path: Path, components) -> None:
    root = folder_with_genders(tmp_path / "faces", ["F"] * 5 + ["1"] * 15 + ["0"] * 10)  # 17%
    spec = folder_spec(root, components)
    notes = load_prepared_data(spec, spec.build_tasks(), progress=False).notes
    assert "5 invalid 'gender' labels for task 'gender' (treated as missing):" in notes
    assert not [line for line in notes if "WARNING" in line]


def test_a_regression_task_with_many_invalid_labels_suggests_its_range(tmp_path: Path, components) -> None:
    root = labelled_images(tmp_path / "faces", "file,age,gender", [f"{150 + i if i < 4 else 30},1" for i in range(10)])
    notes = load_prepared_data(spec := folder_spec(root, components), spec.build_tasks(), progress=False).notes
    (warning,) = [line for line in notes if line.startswith("WARNING")]
    assert "task 'age': 40% of its labels are invalid" in warning and "outside [0, 120] (min/max)" in warning
    assert "min/max" in warning.split(").")[-1]
