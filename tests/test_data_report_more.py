"""The data report for a user who brought their own CSV: every task that cannot train named in one error, an
invalid label named by the CSV line it is fixed at, and `compare` saying which data setting two runs differ in.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import tiny_spec
from hydranet.core.cli import cli
from hydranet.core.data import parse_labels
from hydranet.core.decode import cache_key
from hydranet.core.engine import load_prepared_data
from hydranet.core.errors import DataError
from hydranet.core.interfaces import Sample
from hydranet.core.spec import load_spec
from hydranet.tasks.kinds import BinaryParams, BinaryTask, RegressionParams, RegressionTask
from test_bad_images import noise_jpeg


def house_csv(root: Path, rows: list[str], header: str = "file,kind,price") -> Path:
    """`root/labels.csv` with `header` and one row per image (images 0.jpg, 1.jpg, ... written as it goes)."""
    for i in range(len(rows)):
        noise_jpeg(root / f"{i}.jpg", size=16, seed=i)
    (root / "labels.csv").write_text("\n".join([header, *rows]) + "\n")
    return root / "labels.csv"


def folder_spec(root: Path, components, *tasks: dict):
    raw = tiny_spec(root)
    raw["data"] = {"name": "folder", "root": str(root), "val_fraction": 0.25}
    raw["tasks"] = list(tasks)
    return load_spec(raw, components=components)


# --- 1. every task that cannot train, in one error -----------------------------------------------------

def test_every_task_with_no_valid_label_is_named_in_one_error(tmp_path: Path, components) -> None:
    house_csv(tmp_path, [f"{i}.jpg,{['villa', 'flat'][i % 2]},{100 + i}" for i in range(8)])
    spec = folder_spec(tmp_path, components,
                       {"name": "kind", "kind": "multiclass", "label": "kind", "class_names": ["house", "barn"]},
                       {"name": "cost", "kind": "regression", "label": "Price"},
                       {"name": "size", "kind": "regression", "label": "price"})  # a good one, not listed
    with pytest.raises(DataError) as caught:
        load_prepared_data(spec, spec.build_tasks(), progress=False)
    message = str(caught.value)
    head, *items = message.splitlines()
    assert head == ("2 tasks found no valid label in dataset 'folder', so none of them can train; fix each of them "
                    "(or leave it out of the spec) before the next run:")
    assert len(items) == 2
    assert items[0].startswith("  - task 'kind' found no valid label in dataset 'folder': ")
    assert "give the task `class_names: [villa, flat]`" in items[0]  # its own fix
    assert items[1] == ("  - task 'cost' found no valid label in field 'Price' of dataset 'folder' (8 samples). "
                        "Did you mean 'price'? The samples have fields: kind, price. Set the task's `label` to one "
                        "of them.")
    assert "task 'size'" not in message


def test_one_task_with_no_valid_label_keeps_its_one_sentence(tmp_path: Path, components) -> None:
    house_csv(tmp_path, [f"{i}.jpg,flat,{100 + i}" for i in range(4)])
    spec = folder_spec(tmp_path, components, {"name": "cost", "kind": "regression", "label": "Price"},
                       {"name": "size", "kind": "regression", "label": "price"})
    with pytest.raises(DataError) as caught:
        load_prepared_data(spec, spec.build_tasks(), progress=False)
    assert str(caught.value).startswith("task 'cost' found no valid label in field 'Price' of dataset 'folder'")


# --- 2. an invalid label named by its CSV line, then its image ----------------------------------------

def test_an_invalid_label_is_named_by_its_csv_line_and_its_image(tmp_path: Path, components) -> None:
    csv = house_csv(tmp_path, [f"{i}.jpg,flat,{'-' if i == 3 else 100 + i}" for i in range(8)])
    spec = folder_spec(tmp_path, components, {"name": "price", "kind": "regression", "label": "price"})
    notes = load_prepared_data(spec, spec.build_tasks(), progress=False).notes
    assert f"  {csv}:5 ({tmp_path / '3.jpg'}): price='-': not a number" in notes  # the header is line 1


def test_an_unreadable_image_and_an_unlabelled_sample_are_named_by_csv_line_too(tmp_path: Path, components) -> None:
    """Both lists named the image alone, while an invalid label named its CSV line: now all three read alike."""
    csv = house_csv(tmp_path, [f"{i}.jpg,flat,{'-' if i == 2 else 100 + i}" for i in range(8)])
    (tmp_path / "5.jpg").write_bytes(b"")  # unreadable
    spec = folder_spec(tmp_path, components, {"name": "price", "kind": "regression", "label": "price"})
    data = load_prepared_data(spec, spec.build_tasks(), progress=False)
    assert "1 unreadable image skipped:" in data.notes
    assert any(line.startswith(f"  {csv}:7 ({tmp_path / '5.jpg'}): ") for line in data.notes), data.notes
    assert "1 sample with no valid label for any task skipped:" in data.notes
    assert f"  {csv}:4 ({tmp_path / '2.jpg'})" in data.notes


def test_a_sample_without_an_origin_is_named_by_its_source_as_before() -> None:
    task = RegressionTask("price", RegressionParams(label="price"))
    _, report = parse_labels([Sample("a.jpg", {"price": "-"}), Sample("b.jpg", {"price": "-"}, origin="t.csv:3")],
                             [task])
    assert [where for where, _, _ in report.invalid["price"]] == ["a.jpg", "t.csv:3 (b.jpg)"]


def test_a_plugin_dataset_sample_of_its_own_with_no_origin_still_works() -> None:
    """A plugin may return objects with only `source` and `record`; that has always worked."""

    class OwnSample:
        def __init__(self, source: str, record: dict[str, str]) -> None:
            self.source, self.record = source, record

    task = RegressionTask("price", RegressionParams(label="price"))
    _, report = parse_labels([OwnSample("a.jpg", {"price": "x"})], [task])  # type: ignore[list-item]
    assert report.invalid["price"][0][0] == "a.jpg"


class RaisingLabel(BinaryTask):
    def parse_label(self, record):
        return float(record[self.label] + "x")


def test_a_parse_label_that_raises_names_the_csv_line_of_the_sample() -> None:
    task = RaisingLabel("smile", BinaryParams(label="smile"))
    with pytest.raises(DataError, match=r"\(sample labels\.csv:7 \(faces/1\.png\), smile='1'\)"):
        parse_labels([Sample("faces/1.png", {"smile": "1"}, origin="labels.csv:7")], [task])


def test_the_origin_changes_neither_equality_nor_the_decode_cache_key() -> None:
    """The same images and labels from a CSV with one more blank line are the same samples, and decode once."""
    assert Sample("a.jpg", {"v": "1"}, origin="labels.csv:2") == Sample("a.jpg", {"v": "1"}, origin="labels.csv:3")
    assert Sample("a.jpg", {"v": "1"}) == Sample("a.jpg", {"v": "1"}, "labels.csv:2")
    assert cache_key([Sample("a.jpg", {}, origin="x:2").source], 16) == cache_key(["a.jpg"], 16)


# --- 3. compare names the data setting that differs ---------------------------------------------------

def hand_run(folder: Path, data: dict) -> Path:
    """A finished one-epoch run folder written by hand, with the data section `data`."""
    spec = {"backbone": {"name": "tiny"}, "weighting": {"name": "sum"}, "data": data,
            "tasks": [{"name": "price", "kind": "regression", "label": "price"}], "train": {"epochs": 1}}
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (folder / "metrics.csv").write_text("epoch,val.price.mae\n1,10.0\n")
    (folder / "summary.json").write_text(json.dumps({"best_epoch": 1, "higher_is_better": {"price": {"mae": False}}}))
    return folder


def compare_notes(*runs: Path) -> list[str]:
    result = CliRunner().invoke(cli, ["compare", *map(str, runs), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["notes"]


def test_compare_says_the_label_csv_differs_not_the_images(tmp_path: Path) -> None:
    data = {"name": "folder", "root": "data", "csv": "labels.csv", "val_fraction": 0.25}
    a = hand_run(tmp_path / "a", data)
    b = hand_run(tmp_path / "b", {**data, "csv": "labels_semicolon.csv"})
    assert compare_notes(a, b) == [
        "b read other data than the reference: data.csv differs (labels.csv in a, labels_semicolon.csv in b): the "
        "runs may have read different labels; its metrics and delta_m may not compare like with like"]


def test_compare_names_each_data_setting_with_what_it_may_change(tmp_path: Path) -> None:
    data = {"name": "folder", "root": "data", "csv": None, "val_fraction": 0.25, "split_seed": 0}
    a = hand_run(tmp_path / "a", data)
    b = hand_run(tmp_path / "b", {**data, "root": "other", "csv": "x.csv", "val_fraction": 0.5, "split_seed": 1})
    assert compare_notes(a, b) == [
        "b read other data than the reference: data.root differs (data in a, other in b): the runs may have read "
        "other images; data.csv differs (not set in a, x.csv in b): the runs may have read different labels; "
        "data.val_fraction differs (0.25 in a, 0.5 in b) and data.split_seed differs (0 in a, 1 in b): they "
        "validate on other images; its metrics and delta_m may not compare like with like"]
