"""The name of a run folder hydranet chooses (no --out): runs/<spec name>-<date>-<time>."""

from __future__ import annotations

import re

import hydranet
from conftest import tiny_spec
from hydranet.core.run import default_run_dir, run_name
from hydranet.core.spec import load_spec

STAMP = r"\d{8}-\d{6}"


def test_a_run_is_named_by_its_spec(tmp_path):
    assert run_name("specs/utkface.yaml") == "utkface" and run_name("demo") == "demo" and run_name(None) == "run"
    assert re.fullmatch(rf"dwa-{STAMP}", default_run_dir("experiments/dwa.toml", tmp_path).name)


def test_a_spec_yaml_is_named_by_its_folder_less_the_folders_own_date_and_time(tmp_path):
    """Training a run folder's spec.yaml again made runs/spec-<time>."""
    assert run_name("runs/demo-20261127-101010/spec.yaml") == "demo"
    assert run_name("runs/demo-20261127-101010-2/spec.yaml") == "demo"  # the suffix of a second run that second
    assert run_name("experiments/dwa/spec.yml") == "dwa"
    assert run_name("runs/my-20261127/spec.yaml") == "my-20261127"  # not the date and time hydranet writes
    assert re.fullmatch(rf"demo-{STAMP}", default_run_dir("runs/demo-20261127-101010/spec.yaml", tmp_path).name)


def test_training_a_run_folders_spec_again_names_the_new_run_after_it(faces, tmp_path, components, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = hydranet.train(load_spec(tiny_spec(faces, epochs=1), components=components),
                           out_dir="runs/tiny-20261127-101010", components=components, progress=False, echo=False)
    again = hydranet.train(str(first.run_dir / "spec.yaml"), components=components, progress=False, echo=False)
    assert again.run_dir.parent == first.run_dir.parent and re.fullmatch(rf"tiny-{STAMP}", again.run_dir.name)


def test_an_unwritable_or_full_output_folder_is_refused_in_the_callers_words(tmp_path, monkeypatch):
    """From Python the way out is out_dir=, on the command line --out DIR."""
    import shutil
    from collections import namedtuple

    import pytest

    from hydranet.core.errors import HydranetError
    from hydranet.core.run import RunFolder

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(HydranetError, match=r"cannot write to the output folder .*Choose another with out_dir=\."):
        RunFolder(blocker / "run", option="overrides", fresh=True)
    with pytest.raises(HydranetError, match=r"Choose another with --out DIR\."):
        RunFolder(blocker / "run", option="--set", fresh=True)
    # a resumed run cannot move (--resume takes no --out): make it writable, or a new run from its weights
    with pytest.raises(HydranetError) as caught:
        RunFolder(blocker / "run", option="--set")
    assert str(caught.value).endswith(
        "A resumed run writes the folder it started in: make it writable, or start a new run from its weights "
        f"with init_from: {blocker / 'run' / 'last.pt'} and another folder.") and "--out" not in str(caught.value)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 1024))
    with pytest.raises(HydranetError, match=r"only 0 MiB free .*choose another folder with out_dir=\."):
        RunFolder(tmp_path / "full", option="overrides", fresh=True)
    with pytest.raises(HydranetError, match=r"only 0 MiB free .* Free some space\.$"):
        RunFolder(tmp_path / "full", option="overrides")
