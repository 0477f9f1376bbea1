"""How the classification kinds read a label, and what the data report says when they cannot.

A user's own CSV column meets a task from a spec: numeric class names must not
collide with class indices (a silent wrong label), a binary column of yes/no or
true/false is read, a column mixing names and indices is pointed out, and a
task whose values are words is given the class_names to paste.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import labelled_images, tiny_spec
from hydranet.core.data_report import LabelReport, check_labels
from hydranet.core.engine import load_prepared_data
from hydranet.core.errors import DataError
from hydranet.core.interfaces import Sample
from hydranet.core.spec import load_spec
from hydranet.tasks.kinds import BinaryParams, BinaryTask, MulticlassParams, MulticlassTask, RegressionParams, \
    RegressionTask


def binary(**params: Any) -> BinaryTask:
    return BinaryTask("x", BinaryParams(label="v", **params))


def multiclass(**params: Any) -> MulticlassTask:
    return MulticlassTask("x", MulticlassParams(label="v", **params))


def read(task: Any, *values: str) -> list[int | None]:
    return [task.parse_label({"v": value}) for value in values]


# --- numeric class names: read by name (and number), never by position ---------------------------

def test_numeric_class_names_are_not_read_as_indices() -> None:
    task = multiclass(class_names=["1", "2", "3", "4", "5"])
    assert read(task, "0", "1", "2", "5") == [None, 0, 1, 4]  # 0 was index 0 = "1", merged with the real 1s
    assert read(multiclass(class_names=["10", "20", "30"]), "1", "10", "30") == [None, 0, 2]  # '1' was "20"
    assert "no value is read as a class index" in task.label_problem("0")


def test_a_numeric_class_name_matches_its_number_as_pandas_writes_it() -> None:
    """A column of ints with a gap is written by pandas as floats: '2.0' is class '2'."""
    assert read(multiclass(class_names=["1", "2", "3"]), "2.0", " 3 ", "2.5") == [1, 2, None]


def test_word_class_names_still_take_indices() -> None:
    """UTKFace's gender column is 0/1 under class_names [male, female]: names that are words keep indices."""
    assert read(binary(class_names=["male", "female"]), "0", "1", "Female", "2") == [0, 1, 1, None]


def test_numeric_class_names_with_a_column_of_indices_are_invalid_and_reported(tmp_path: Path,
                                                                               components) -> None:
    values = [str(i % 5) for i in range(20)]  # 0..4 under class names 1..5
    spec = folder_spec(folder(tmp_path, values), components,
                       {"name": "stars", "kind": "multiclass", "label": "v", "class_names": ["1", "2", "3", "4", "5"]})
    notes = load_prepared_data(spec, spec.build_tasks(), progress=False).notes
    assert "4 invalid 'v' labels for task 'stars' (treated as missing):" in notes
    assert any(line.endswith("v='0': not one of the class names (1, 2, 3, 4, 5); they are numbers, so no value "
                             "is read as a class index") for line in notes)


def test_a_class_name_that_is_a_number_among_words_is_named_as_the_reason_no_index_is_read() -> None:
    """It said "they are numbers" of [0, cat, dog], where only one name is: the user looks for the wrong fault."""
    task = multiclass(class_names=["0", "cat", "dog"])
    assert read(task, "0", "1", "cat") == [0, None, 1]
    assert task.label_problem("1") == ("not one of the class names (0, cat, dog); the name 0 is a number, so no "
                                       "value is read as a class index")


# --- class_names given as YAML numbers ---------------------------------------------------------------

def test_class_names_as_numbers_are_their_text(tmp_path: Path) -> None:
    from_numbers, from_text = binary(class_names=[0, 1]), binary(class_names=["0", "1"])
    values = ("0", "1", "1.0", "2", "yes", "no", "x")
    assert from_numbers.class_names == from_text.class_names == ["0", "1"]
    assert read(from_numbers, *values) == read(from_text, *values) == [0, 1, 1, None, 1, 0, None]
    assert multiclass(class_names=[0, 1, 2, 3, 4]).class_names == ["0", "1", "2", "3", "4"]
    assert multiclass(class_names=[1.5, 2]).class_names == ["1.5", "2"]


def test_unquoted_numeric_class_names_in_a_spec_file_are_accepted(tmp_path: Path, components) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("tasks:\n  - {name: stars, kind: multiclass, label: stars, class_names: [1, 2, 3, 4, 5]}\n"
                    "data: synthetic\n")
    (task,) = load_spec(path, components=components).build_tasks()
    assert task.class_names == ["1", "2", "3", "4", "5"]
    assert task.parse_label({"stars": "0"}) is None  # numeric names: no index reading


def test_two_class_names_for_one_number_are_refused() -> None:
    with pytest.raises(ValueError, match="class names '1' and '1.0' are the same number"):
        MulticlassParams(label="v", class_names=[1, 1.0])


# --- a binary task reads yes/no words ---------------------------------------------------------------

def test_a_binary_task_reads_the_usual_yes_no_spellings() -> None:
    values = ("yes", "no", "true", "false", "True", "FALSE", " y ", "n", "t", "f", "maybe")
    assert read(binary(), *values) == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, None]
    assert "yes/no word" in binary().label_problem("maybe")


def test_yes_no_words_follow_class_names_that_are_such_words() -> None:
    assert read(binary(class_names=["no", "yes"]), "true", "false", "No", "1") == [1, 0, 0, 1]
    assert read(binary(class_names=["yes", "no"]), "true", "false", "n") == [0, 1, 1]  # true is 'yes', index 0
    assert read(binary(class_names=["0", "1"]), "true", "f") == [1, 0]


def test_class_names_win_over_yes_no_words() -> None:
    assert read(binary(class_names=["other", "t"]), "t", "T", "true", "f") == [1, 1, 1, 0]
    assert read(binary(class_names=["f", "t"]), "f", "true") == [0, 1]
    # 'f' begins 'female' (class 1): read as false (class 0) it would be a silent wrong label; it stays invalid
    assert read(binary(class_names=["other", "f"]), "f", "true") == [1, 0]


def test_class_names_that_say_nothing_of_yes_or_no_take_no_yes_no_word() -> None:
    """Is `true` a dog, or a female? A guess would be a silent wrong label; an invalid one is reported."""
    assert read(binary(class_names=["male", "female"]), "f", "F", "true", "n", "1") == [None, None, None, None, 1]
    assert read(binary(class_names=["cat", "dog"]), "yes", "no", "t", "dog") == [None, None, None, 1]


def test_numbers_other_than_0_and_1_as_names_take_no_yes_no_word() -> None:
    assert read(binary(class_names=["1", "2"]), "true", "no") == [None, None]


def test_a_multiclass_task_takes_no_yes_no_word() -> None:
    assert read(multiclass(num_classes=3), "yes", "true") == [None, None]


def test_a_column_of_true_false_trains_a_binary_task(tmp_path: Path, components) -> None:
    values = ["True", "False", "yes", "no", "y", "n", "t", "f"] * 3
    spec = folder_spec(folder(tmp_path, values), components, {"name": "smiling", "kind": "binary", "label": "v"})
    data = load_prepared_data(spec, spec.build_tasks(), progress=False)
    assert data.targets[:, 0].tolist() == [1.0, 0.0] * 12
    assert not [line for line in data.notes if "invalid" in line or "WARNING" in line], data.notes


# --- a column that mixes class names and class indices -----------------------------------------------

def test_a_column_mixing_class_names_and_indices_gets_one_warning(tmp_path: Path, components) -> None:
    values = ["yes", "no", "1", "0"] * 5 + ["yes"] * 4
    spec = folder_spec(folder(tmp_path, values), components,
                       {"name": "smiling", "kind": "binary", "label": "v", "class_names": ["yes", "no"]})
    data = load_prepared_data(spec, spec.build_tasks(), progress=False)
    warnings = [line for line in data.notes if line.startswith("WARNING")]
    assert warnings == [
        "WARNING: task 'smiling': its 'v' column holds both class names (yes, no) and class indices (1, 0); an "
        "index is a position in class_names (yes, no), so it reads 1 as 'no' and 0 as 'yes'. If that is not what "
        "the data means, write the column with class names only."]
    assert data.targets[:4, 0].tolist() == [0.0, 1.0, 1.0, 0.0]  # read as before: the warning changes nothing


def test_a_column_of_names_only_or_indices_only_gets_no_warning(tmp_path: Path, components) -> None:
    for i, values in enumerate([["yes", "no"] * 6, ["1", "0"] * 6, ["yes", "no", "true", "false"] * 3]):
        spec = folder_spec(folder(tmp_path / str(i), values), components,
                           {"name": "smiling", "kind": "binary", "label": "v", "class_names": ["yes", "no"]})
        notes = load_prepared_data(spec, spec.build_tasks(), progress=False).notes
        assert not [line for line in notes if "WARNING" in line], notes


def test_numbers_matching_numeric_class_names_are_names_not_indices(tmp_path: Path, components) -> None:
    spec = folder_spec(folder(tmp_path, ["1", "2.0", "3", "2"] * 4), components,
                       {"name": "stars", "kind": "multiclass", "label": "v", "class_names": [1, 2, 3]})
    notes = load_prepared_data(spec, spec.build_tasks(), progress=False).notes
    assert not [line for line in notes if "WARNING" in line], notes


# --- the fix for a task whose values are words: class_names ready to paste ------------------------------

def test_a_multiclass_task_with_no_valid_label_is_given_its_class_names(tmp_path: Path, components) -> None:
    values = ["dog"] * 6 + ["cat"] * 4 + ["bird, blue"] * 2
    spec = folder_spec(folder(tmp_path, values), components,
                       {"name": "pet", "kind": "multiclass", "label": "v", "num_classes": 3})
    with pytest.raises(DataError) as caught:
        load_prepared_data(spec, spec.build_tasks(), progress=False)
    message = str(caught.value)
    assert "task 'pet' found no valid label" in message
    assert 'give the task `class_names: [dog, cat, "bird, blue"]`, in label order' in message
    assert "min/max" not in message


def test_the_suggestion_keeps_the_class_names_in_use_and_counts_the_classes(tmp_path: Path, components) -> None:
    values = ["cat"] * 6 + ["bird"] * 5 + ["fish"] * 2 + ["dog"]
    spec = folder_spec(folder(tmp_path, values), components,
                       {"name": "pet", "kind": "multiclass", "label": "v", "class_names": ["cat", "dog"]})
    notes = load_prepared_data(spec, spec.build_tasks(), progress=False).notes
    (warning,) = [line for line in notes if line.startswith("WARNING")]
    assert "`class_names: [cat, dog, bird, fish]`" in warning  # cat and dog keep their indices
    assert "That is 4 names for its 2 classes" in warning and "or change num_classes" in warning


def no_valid_label_error(task: Any, invalid: list[tuple[str, str, str]]) -> str:
    """The error a task whose every label is one of `invalid` stops the run with."""
    report = LabelReport(labelled={task.name: 0}, missing={task.name: 0}, invalid={task.name: invalid})
    samples = [Sample(source, {task.label: raw}) for source, raw, _ in invalid]
    with pytest.raises(DataError) as error:
        check_labels([task], samples, report, "d")
    return str(error.value)


def test_the_suggestion_lists_at_most_twenty_values() -> None:
    invalid = [(f"s{i}", f"w{i:02d}", "") for i in range(25)]
    fix = no_valid_label_error(multiclass(num_classes=25), invalid)
    assert "w19]` (5 more values are left out)" in fix and "w20" not in fix


def test_a_classification_task_with_invalid_numbers_keeps_the_general_advice() -> None:
    fix = no_valid_label_error(multiclass(num_classes=3), [("s", "7", "")])
    assert "class_names spelled as in the data" in fix


def test_a_regression_task_with_no_valid_label_keeps_the_min_max_advice(tmp_path: Path, components) -> None:
    spec = folder_spec(folder(tmp_path, ["tall", "short", "1e400", "inf"] * 3), components,
                       {"name": "height", "kind": "regression", "label": "v"})
    with pytest.raises(DataError) as caught:
        load_prepared_data(spec, spec.build_tasks(), progress=False)
    message = str(caught.value)
    assert "'tall' (not a number)" in message and "'1e400' (not a finite number)" in message
    assert "min/max" in message and "class_names" not in message


def test_a_regression_label_that_overflows_is_not_a_finite_number() -> None:
    task = RegressionTask("h", RegressionParams(label="v"))
    assert [task.label_problem(raw) for raw in ("1e400", "inf", "-Infinity", "tall", "")] == \
        ["not a finite number"] * 3 + ["not a number"] * 2


# --- helpers ---------------------------------------------------------------------------------------

def folder(root: Path, values: list[str]) -> Path:
    """A `folder` dataset under `root` (made here): one tiny image per value, and labels.csv of file and v."""
    return labelled_images(root / "faces", "file,v", [f'"{value}"' for value in values])


def folder_spec(root: Path, components, task: dict[str, Any]):
    raw = tiny_spec(root)
    raw["tasks"] = [task]
    raw["data"] = {"name": "folder", "root": str(root), "val_fraction": 0.25}
    return load_spec(raw, components=components)
