"""Bad checkpoints: each one is refused with a CheckpointError that names the file; none runs code.

A checkpoint is loaded with `weights_only=True`, so a pickled object whose
`__reduce__` would run a command is refused, not executed. Truncated, empty,
foreign and tampered files get a message saying what is wrong, and a
checkpoint whose task came from a plugin that is not installed names the
task, the plugin and its distribution.
"""

from __future__ import annotations

import copy
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import hydranet
from conftest import tiny_spec
from hydranet.core.checkpoint import read_checkpoint
from hydranet.core.errors import CheckpointError
from hydranet.core.inference import TrainedModel
from hydranet.core.plugins import Components, load_components, make_plugin_manager
from hydranet.core.spec import load_spec
from hydranet.tasks.kinds import RegressionParams, RegressionTask

PLUGIN, DISTRIBUTION = "years_plugin", "hydranet-years"


class YearsPlugin:
    """A third-party task plugin, registered inline on a fresh plugin manager."""

    @hydranet.hookimpl
    def register_tasks(self, register: Any) -> None:
        register("years", RegressionTask, params=RegressionParams)


def builtin_components() -> Components:
    return load_components(make_plugin_manager(entry_points=False))


@pytest.fixture(scope="module")
def with_plugin() -> Components:
    pm = make_plugin_manager(entry_points=False)
    pm.add_plugin(YearsPlugin(), PLUGIN, distribution=DISTRIBUTION, version="1.0", builtin=False)
    return load_components(pm)


@pytest.fixture(scope="module")
def run(faces: Path, with_plugin: Components, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny finished run: a built-in task and one from YearsPlugin."""
    raw = tiny_spec(faces, epochs=1)
    raw["tasks"] = ["gender", {"name": "how_old", "kind": "years", "label": "age"}]
    out = tmp_path_factory.mktemp("run")
    hydranet.train(load_spec(raw, components=with_plugin), out_dir=out, components=with_plugin,
                   progress=False, echo=False)
    return out


def refused(path: Path, components: Components) -> str:
    """Load `path` as a model; it must fail with a CheckpointError naming the file. Returns the message."""
    with pytest.raises(CheckpointError) as caught:
        TrainedModel.from_checkpoint(path, components=components)
    message = str(caught.value)
    assert str(path) in message
    return message


def test_the_good_checkpoint_loads(run: Path, with_plugin: Components) -> None:
    """The baseline every bad file below is a variation of."""
    model = TrainedModel.from_checkpoint(run / "last.pt", components=with_plugin)
    assert model.task_names == ["gender", "how_old"]


# --- code execution -------------------------------------------------------------------------------

class Payload:
    """Unpickling this runs a shell command: what a malicious checkpoint would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@pytest.mark.parametrize("shape", ["bare", "inside_a_checkpoint"])
def test_pickled_code_is_refused_without_running(tmp_path: Path, run: Path, with_plugin: Components,
                                                  shape: str) -> None:
    marker = tmp_path / "pwned"
    if shape == "bare":
        content: Any = Payload(marker)
    else:  # a real checkpoint with the payload tucked into a field nobody looks at
        content = torch.load(run / "last.pt", weights_only=True)
        content["metrics"]["note"] = Payload(marker)
    path = tmp_path / "evil.pt"
    torch.save(content, path)

    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path)
    assert str(path) in str(caught.value) and "cannot read checkpoint" in str(caught.value)
    refused(path, with_plugin)
    assert not marker.exists(), "loading a checkpoint ran the code pickled in it"

    # the payload is live: a loader without weights_only would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


# --- damaged and foreign files --------------------------------------------------------------------

def test_truncated_checkpoint(tmp_path: Path, run: Path, with_plugin: Components) -> None:
    data = (run / "last.pt").read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    message = refused(path, with_plugin)
    assert "the file is truncated or damaged" in message and "miniz" not in message  # not torch's paragraph


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all\n", bytes(range(256)) * 4])
def test_empty_and_garbage_files(tmp_path: Path, with_plugin: Components, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    assert "cannot read checkpoint" in refused(path, with_plugin)


@pytest.mark.parametrize("name, content", [
    ("tiny.yaml", "backbone: {name: tiny, width: 8}\nimage_size: 16\n"),
    ("tiny.toml", "image_size = 16\n[backbone]\nname = 'tiny'\n"),
])
def test_a_spec_file_passed_as_a_checkpoint_says_to_train_it_first(tmp_path: Path, with_plugin: Components,
                                                                   name: str, content: str) -> None:
    from hydranet.core.surgery import load_initial_weights

    spec = tmp_path / name
    spec.write_text(content)
    expected = (f"cannot read checkpoint {spec}: it is a spec file, not a checkpoint: train it first "
                f"(hydranet train {spec}) and pass the best.pt or last.pt of the run folder that writes")
    assert refused(spec, with_plugin) == expected  # no torch internals (IndexError: pop from empty list)
    with pytest.raises(CheckpointError) as caught:  # --set init_from=tiny.yaml reads it the same way
        load_initial_weights(None, [], spec, print)  # type: ignore[arg-type]
    assert str(caught.value) == expected


def test_another_file_passed_as_a_checkpoint_says_what_to_pass(tmp_path: Path, with_plugin: Components) -> None:
    path = tmp_path / "face.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 a JPEG, not a checkpoint")
    message = refused(path, with_plugin)
    assert message == (f"cannot read checkpoint {path}: it is not a checkpoint (torch.save did not write it); "
                       "pass a .pt file written by hydranet train (a run folder keeps last.pt and best.pt)")


@pytest.mark.parametrize("foreign", [
    lambda: torch.nn.Linear(3, 2).state_dict(),  # a plain state dict, as most projects save
    lambda: {"model": torch.nn.Linear(3, 2).state_dict(), "epoch": 3},  # someone else's checkpoint layout
    lambda: torch.zeros(3),
    lambda: [1, 2, 3],
])
def test_foreign_torch_file(tmp_path: Path, with_plugin: Components, foreign) -> None:
    path = tmp_path / "foreign.pt"
    torch.save(foreign(), path)
    assert "not a hydranet checkpoint" in refused(path, with_plugin)


def test_missing_file_and_folder(tmp_path: Path, run: Path, with_plugin: Components) -> None:
    assert "checkpoint not found" in refused(tmp_path / "nope.pt", with_plugin)
    message = refused(run, with_plugin)  # the run folder instead of a file in it
    assert f"{run} is a run folder, not a checkpoint; pass one of its checkpoints: {run / 'best.pt'}, " \
           f"{run / 'last.pt'}" in message
    assert "not found" not in message  # the folder is there
    (tmp_path / "empty").mkdir()
    assert "no checkpoint in it" in refused(tmp_path / "empty", with_plugin)


# --- export files passed as checkpoints ----------------------------------------------------------

@pytest.fixture
def exported_run(run: Path, tmp_path: Path) -> Path:
    """A copy of the run holding what `hydranet export` writes next to best.pt, in each format.

    Tiny stand-in models, saved the way export.py saves them (its manifest
    included): what is tested is how a checkpoint reader tells them apart.
    """
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    linear = torch.nn.Linear(3, 2).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(linear, torch.zeros(1, 3)), str(folder / "best.ts.pt"),
                       _extra_files={"hydranet.json": "{}"})
    torch.export.save(torch.export.export(linear, (torch.zeros(1, 3),)), str(folder / "best.pt2"),
                      extra_files={"hydranet.json": "{}"})
    (folder / "best.onnx").write_bytes(b"\x08\x0a\x12\x07pytorch")  # how torch's ONNX files begin (protobuf)
    return folder


def test_a_run_folder_lists_only_its_checkpoints(exported_run: Path, with_plugin: Components) -> None:
    message = refused(exported_run, with_plugin)
    assert message.endswith(f"pass one of its checkpoints: {exported_run / 'best.pt'}, {exported_run / 'last.pt'}")
    assert ".ts.pt" not in message and ".pt2" not in message and ".onnx" not in message


@pytest.mark.parametrize("name, kind", [("best.ts.pt", "TorchScript model"), ("best.pt2", "torch.export program"),
                                        ("best.onnx", "ONNX model")])
def test_an_export_file_is_named_as_one(exported_run: Path, with_plugin: Components, name: str, kind: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "looks like a TorchScript archive" warning must not show
        message = refused(exported_run / name, with_plugin)
    assert f"is an exported {kind}" in message and "not a hydranet checkpoint" in message
    assert message.endswith(f"pass {exported_run / 'best.pt'}")
    assert "Python objects" not in message and "miniz" not in message  # the misdiagnoses it replaced


def test_an_export_file_without_its_checkpoint_beside_it(exported_run: Path, tmp_path: Path,
                                                         with_plugin: Components) -> None:
    alone = tmp_path / "model.pt"  # a TorchScript file under a checkpoint's name
    shutil.copy(exported_run / "best.ts.pt", alone)
    message = refused(alone, with_plugin)
    assert "is an exported TorchScript model (written by hydranet export)" in message
    assert "pass the .pt checkpoint it was exported from" in message


def test_checkpoint_from_a_newer_hydranet(tmp_path: Path, run: Path, with_plugin: Components) -> None:
    data = torch.load(run / "last.pt", weights_only=True)
    data["format_version"] = 99
    path = tmp_path / "newer.pt"
    torch.save(data, path)
    assert "newer hydranet" in refused(path, with_plugin)


# --- tampered: a hydranet checkpoint whose contents do not fit -------------------------------------

def head_weight(data: dict) -> str:
    return next(k for k in data["model"] if k.startswith("heads.how_old") and k.endswith("weight"))


def tampered(tmp_path: Path, run: Path, edit) -> Path:
    data = copy.deepcopy(torch.load(run / "last.pt", weights_only=True))
    edit(data)
    path = tmp_path / "tampered.pt"
    torch.save(data, path)
    return path


def test_weights_of_the_wrong_shape_name_the_weight(tmp_path: Path, run: Path, with_plugin: Components) -> None:
    key = None

    def edit(data: dict) -> None:
        nonlocal key
        key = head_weight(data)
        data["model"][key] = torch.zeros(3, 3)

    message = refused(tampered(tmp_path, run, edit), with_plugin)
    assert "do not fit" in message
    assert key in message and "[3, 3]" in message


def test_weights_of_the_wrong_shape_are_refused(tmp_path: Path, run: Path, with_plugin: Components) -> None:
    path = tampered(tmp_path, run, lambda data: data["model"].__setitem__(head_weight(data), torch.zeros(3, 3)))
    assert "do not fit the model" in refused(path, with_plugin)


@pytest.mark.parametrize("edit", [
    pytest.param(lambda d: d["model"].pop(head_weight(d)), id="weight_missing"),
    pytest.param(lambda d: d["model"].__setitem__("heads.extra.weight", torch.zeros(2)), id="unexpected_weight"),
    pytest.param(lambda d: d.__setitem__("spec", {"tasks": 1}), id="spec_invalid"),
    pytest.param(lambda d: d.pop("model"), id="model_missing"),
    pytest.param(lambda d: d.__setitem__("model", "garbage"), id="model_not_a_dict"),
    pytest.param(lambda d: d.__setitem__("spec", "garbage"), id="spec_not_a_dict"),
    pytest.param(lambda d: d.__setitem__("tasks", [{"name": "how_old"}]), id="task_entry_incomplete"),
    pytest.param(lambda d: d.__setitem__("format_version", "one"), id="format_version_not_a_number"),
    pytest.param(lambda d: d.pop("preprocess"), id="preprocess_missing"),
    pytest.param(lambda d: d.__setitem__("baseline_outputs", [1.0]), id="baselines_not_a_dict"),
    pytest.param(lambda d: d["baseline_outputs"].__setitem__("how_old", "30"), id="baseline_not_numbers"),
])
def test_tampered_checkpoint_contents(tmp_path: Path, run: Path, with_plugin: Components, edit) -> None:
    refused(tampered(tmp_path, run, edit), with_plugin)


def test_a_stored_baseline_of_the_wrong_length_is_refused(tmp_path: Path, run: Path, with_plugin: Components) -> None:
    path = tampered(tmp_path, run, lambda data: data["baseline_outputs"].__setitem__("how_old", [30.0, 40.0]))
    message = refused(path, with_plugin)
    assert "'baseline_outputs' holds 2 values for task 'how_old', whose head outputs 1; the file was altered" in message


def test_a_checkpoint_without_stored_baselines_loads(tmp_path: Path, run: Path, with_plugin: Components) -> None:
    """Written before hydranet stored them: the model loads, and eval fits them on the data (test_eval_baseline)."""
    path = tampered(tmp_path, run, lambda data: data.pop("baseline_outputs"))
    assert TrainedModel.from_checkpoint(path, components=with_plugin).baseline_outputs == {}


# --- a task plugin that is not installed ----------------------------------------------------------

def test_missing_task_plugin_names_task_plugin_and_distribution(run: Path) -> None:
    message = refused(run / "last.pt", builtin_components())
    assert "'how_old'" in message  # the task
    assert "'years'" in message  # the name it was registered under
    assert f"'{PLUGIN}'" in message and DISTRIBUTION in message
    assert f"pip install {DISTRIBUTION}" in message  # and the way out


def test_torch_2_5s_export_archive_is_named_as_one(run: Path, tmp_path: Path, with_plugin: Components) -> None:
    # torch 2.5 and older wrote serialized_exported_program.json and extra_files/ at the archive's top level
    import zipfile

    old = tmp_path / "best.pt2"
    with zipfile.ZipFile(old, "w") as archive:
        for member in ("serialized_exported_program.json", "serialized_state_dict.pt", "version",
                       "extra_files/hydranet.json"):
            archive.writestr(member, "{}")
    message = refused(old, with_plugin)
    assert "is an exported torch.export program (written by hydranet export), not a hydranet checkpoint" in message

