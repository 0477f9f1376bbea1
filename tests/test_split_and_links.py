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
    rows = ["file,age,smile"]
    for i in range(count):
        make_image(root / f"{i}.jpg", 16)
        rows.append(f"{i}.jpg,{20 + i},{'' if i in unlabelled else ('yes' if i % 2 else 'no')}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


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
