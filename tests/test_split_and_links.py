"""The train/validation split does not depend on the spec's tasks, and a linked subfolder of the data is read
(once, and a link that loops is reported, not followed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from conftest import make_image, tiny_spec


# --- the split is drawn over every readable image, whatever tasks the spec has -----------------------

def smile_folder(root: Path, unlabelled: set[int], count: int) -> Path:
    """`count` images with an age on every one and a smile label on all but those `unlabelled` names."""
    from test_messy_data import sparse_folder

    return sparse_folder(root, {i: "yes" if i % 2 else "no" for i in range(count) if i not in unlabelled}, count)


SMILING = {"name": "smiling", "kind": "binary", "label": "smile", "class_names": ["no", "yes"]}


def prepared(root: Path, tasks: list, components, **data):
    """The split training would use (`load_prepared_data`) for a spec with `tasks` on the folder `root`."""
    from hydranet.core.engine import load_prepared_data
    from hydranet.core.spec import load_spec

    raw = tiny_spec(root, epochs=1)
    raw["tasks"] = tasks
    raw["data"] = {"name": "folder", "root": str(root), "val_fraction": 0.25, **data}
    spec = load_spec(raw, components=components)
    return load_prepared_data(spec, spec.build_tasks(), progress=False)


def names(data, index: torch.Tensor) -> set[str]:
    return {Path(data.sources[i]).name for i in index.tolist()}


@pytest.mark.parametrize("test_fraction", [0.0, 0.2])
def test_a_single_task_baseline_validates_on_the_multi_task_runs_images(tmp_path: Path, components,
                                                                        test_fraction: float) -> None:
    """The user's case: a spec with only the task that some images lack validated on other images than the
    multi-task spec on the same folder, so `hydranet compare` scored the two on different images."""
    unlabelled = {i for i in range(40) if i % 3 == 0}
    root = smile_folder(tmp_path / "people", unlabelled, 40)
    both = prepared(root, ["age", SMILING], components, test_fraction=test_fraction)
    alone = prepared(root, [SMILING], components, test_fraction=test_fraction)
    assert both.usable == 40 and alone.usable == 40 - len(unlabelled)
    labelled = {f"{i}.jpg" for i in range(40) if i not in unlabelled}
    parts = ("train_index", "val_index", "test_index")
    for part in parts:  # each image is in the same part under both specs, where the spec has a label for it
        assert names(alone, getattr(alone, part)) == names(both, getattr(both, part)) & labelled, part
    assert names(alone, alone.val_index)  # validation is not empty: the check above says something
    assert not any("moved" in note for note in both.notes + alone.notes)
    assert f"{len(unlabelled)} samples with no valid label for any task skipped:" in alone.notes
    assert not any("no valid label for any task" in note for note in both.notes)


def test_where_every_image_is_labelled_the_split_is_as_it_was(faces: Path) -> None:
    """The demo's case: its split (names hashed as the code split them before the change) stays the same, so
    runs resume with the same data and report the same metrics."""
    import hydranet
    from hydranet.core.engine import load_prepared_data

    def digest(data, index: torch.Tensor) -> str:
        return hashlib.sha256("\n".join(sorted(names(data, index))).encode()).hexdigest()[:16]

    expected = {0.0: ("b1f7c07a0d5a3432", "95c02cd5f3ef583f", "e3b0c44298fc1c14"),
                0.2: ("c5632e4c81d531d8", "95c02cd5f3ef583f", "724e0b7d0927dfcb")}
    for test_fraction, hashes in expected.items():
        raw = tiny_spec(faces)
        raw["data"]["test_fraction"] = test_fraction
        spec = hydranet.load_spec(raw)
        data = load_prepared_data(spec, spec.build_tasks(), progress=False)
        assert tuple(digest(data, index) for index in (data.train_index, data.val_index, data.test_index)) == hashes


def test_validation_drawn_only_on_unlabelled_images_still_gets_a_labelled_one(tmp_path: Path, components) -> None:
    from hydranet.core.data import split_indices

    val = set(split_indices(8, 0.25, 0)[1].tolist())  # the 2 images the default split_seed holds out of 8
    data = prepared(smile_folder(tmp_path / "people", val, 8), [SMILING], components)
    assert data.val_index.numel() == 1 and data.train_index.numel() == 5
    assert any(note.startswith("task 'smiling' had none of its 6 labels among the validation images: moved")
               for note in data.notes)


def test_training_drawn_only_on_unlabelled_images_still_gets_a_labelled_one(tmp_path: Path, components) -> None:
    from hydranet.core.data import split_indices

    train = set(split_indices(3, 0.5, 0)[0].tolist())  # the one image training gets of 3
    data = prepared(smile_folder(tmp_path / "people", train, 3), [SMILING], components, val_fraction=0.5)
    assert data.train_index.numel() == 1 and data.val_index.numel() == 1
    assert any(note.startswith("none of the images drawn for training has a label for the spec's tasks: moved")
               and note.endswith("there from the validation images, so that training has one")
               for note in data.notes)


# --- links to folders below the data root, and below a folder given to predict ---------------------------

def face_name(i: int) -> str:
    return f"{20 + i}_{i % 2}_{i % 5}_20170117145159{i:03d}.jpg"


def linked_faces(tmp_path: Path) -> Path:
    """data/part1 holds 6 faces; data/part2 links to a folder elsewhere holding 6 more. Also three links not
    to read again: data/a_first to part1 (a real folder, read under its own path), data/zz_again to the
    linked folder, and part1/up back to data (a loop), and one more loop inside the linked folder."""
    root, elsewhere = tmp_path / "data", tmp_path / "elsewhere" / "part2"
    for i in range(6):
        make_image(root / "part1" / face_name(i))
        make_image(elsewhere / face_name(10 + i))
    (root / "part2").symlink_to(elsewhere, target_is_directory=True)
    (root / "zz_again").symlink_to(elsewhere, target_is_directory=True)
    (root / "a_first").symlink_to(root / "part1", target_is_directory=True)
    (root / "part1" / "up").symlink_to(root, target_is_directory=True)
    (elsewhere / "home").symlink_to(root, target_is_directory=True)
    return root


def test_train_and_predict_read_a_linked_subfolder_once(tmp_path: Path) -> None:
    """A linked subfolder was skipped without a word: training used half the data, predict half the images."""
    import yaml
    from click.testing import CliRunner

    from hydranet.core.cli import cli

    root = linked_faces(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "backbone": {"name": "tiny", "width": 4}, "image_size": 16, "tasks": ["age", "gender"],
        "data": {"name": "utkface", "root": str(root), "val_fraction": 0.25},
        "train": {"epochs": 1, "batch_size": 3, "device": "cpu"}}))
    trained = CliRunner().invoke(cli, ["train", str(spec), "--out", str(tmp_path / "run"), "--no-progress"])
    assert trained.exit_code == 0, trained.output
    assert "data: 12 images at 16px, 9 train / 3 validation" in trained.output
    skipped = [
        f"  {root / 'a_first'}: the same folder as {root / 'part1'}, which is read already: not read twice",
        f"  {root / 'part1' / 'up'}: a link back to {root}, a folder that holds it: not followed, as it would "
        "never end",
        f"  {root / 'part2' / 'home'}: a link back to {root}, a folder that holds it: not followed, as it would "
        "never end",
        f"  {root / 'zz_again'}: the same folder as {root / 'part2'}, which is read already: not read twice"]
    assert "4 entries of dataset 'utkface' skipped:" in trained.output
    assert sorted(line for line in trained.output.splitlines() if "read" in line and line.startswith("  ")) == skipped

    predicted = CliRunner().invoke(cli, ["predict", str(tmp_path / "run" / "best.pt"), str(root)])
    assert predicted.exit_code == 0, predicted.output
    rows = [line.split()[0] for line in predicted.output.splitlines() if line.startswith(str(root))]
    assert rows == [str(root / "part1" / face_name(i)) for i in range(6)] + [
        str(root / "part2" / face_name(10 + i)) for i in range(6)]
    assert "skipped 4 folders in the folders given, each read once (links to folders are followed):" in (
        predicted.output)
    assert sorted(line for line in predicted.output.splitlines() if "read" in line and line.startswith("  ")) == (
        skipped)


def test_recursive_reads_the_linked_subfolder_its_hint_names(tmp_path: Path) -> None:
    """`data.recursive: false`'s error said "set data.recursive: true to read them all", which then read none."""
    from hydranet.core.errors import DataError
    from hydranet.plugins.datasets.utkface import UTKFaceDataset

    root = tmp_path / "data"
    make_image(tmp_path / "download" / face_name(1))
    root.mkdir()
    (root / "part1").symlink_to(tmp_path / "download", target_is_directory=True)
    with pytest.raises(DataError, match="its subfolders part1 hold images: set data.recursive: true"):
        UTKFaceDataset(root, recursive=False).samples()
    dataset = UTKFaceDataset(root)
    assert [s.source for s in dataset.samples()] == [str(root / "part1" / face_name(1))]
    assert dataset.problems == []


def test_predict_lists_a_folder_it_cannot_read_instead_of_skipping_it_silently(tmp_path: Path, monkeypatch) -> None:
    """A folder that cannot be listed (permission denied) left its images out of predict without a word."""
    import os

    from hydranet.core.image_input import search_image_paths

    (tmp_path / "photos" / "locked").mkdir(parents=True)
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    real = os.scandir

    def refusing(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", refusing)
    found = search_image_paths([tmp_path / "photos"])
    assert found.files == [tmp_path / "photos" / "a.jpg"]
    assert f"  {tmp_path / 'photos' / 'locked'}: cannot be read (permission denied): its images are not predicted" in (
        found.note())
