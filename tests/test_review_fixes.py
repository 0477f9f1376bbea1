"""Regression tests for bugs found reviewing the day's changes (one test per bug, each failing before its fix)."""

from __future__ import annotations

import os
import sys
import time
import types
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import hydranet
from conftest import tiny_spec, with_weighting
from hydranet.core.errors import TrainingError
from hydranet.core.spec import load_spec
from hydranet.core.weighting import WeightedSum

HOUR_AGO = time.time() - 3600


def train(faces, strategy: type, tmp_path) -> None:
    components = with_weighting("mine", strategy, plugin="w-plugin")
    spec = load_spec({**tiny_spec(faces, epochs=1), "weighting": "mine"}, components=components)
    hydranet.train(spec, out_dir=tmp_path / "run", components=components, progress=False, echo=False)


# ---------------------------------------------------------------- step: the error wrapping on torch 2.4


class RaisesInBackward(WeightedSum):
    error: BaseException = KeyError("no such task")

    def multipliers(self):
        return torch.ones(self.num_tasks)

    def backward(self, losses, context=None):
        raise type(self).error


def test_a_weightings_exception_is_named_on_torch_2_4_which_has_no_torch_OutOfMemoryError(faces, tmp_path,
                                                                                          monkeypatch):
    # torch.OutOfMemoryError is new in torch 2.5; on 2.4 the except clause naming it raised AttributeError.
    monkeypatch.delattr(torch, "OutOfMemoryError", raising=False)
    with pytest.raises(TrainingError) as caught:
        train(faces, RaisesInBackward, tmp_path)
    assert "the backward of weighting 'mine' from plugin 'w-plugin' (test 0) raised KeyError" in str(caught.value)


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError("CUDA out of memory"), MemoryError(),
                                   KeyboardInterrupt()])
def test_running_out_of_memory_or_ctrl_c_in_a_weighting_is_not_blamed_on_it(faces, tmp_path, monkeypatch, error):
    monkeypatch.setattr(RaisesInBackward, "error", error)
    with pytest.raises(type(error)):
        train(faces, RaisesInBackward, tmp_path)


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError("CUDA out of memory"), MemoryError()])
def test_running_out_of_memory_in_any_plugin_code_is_not_blamed_on_the_plugin(error):
    # Heads, losses and backbones go through the same PluginCall as a weighting's backward.
    from hydranet.core.plugin_calls import PluginCall, Provenance

    def head(_):
        raise error

    call = PluginCall("the head of", Provenance("task 'smile'", "plugin 'shapes'"), "Fix the head")
    with pytest.raises(type(error)) as caught:
        call(head, torch.zeros(1))
    assert caught.value is error
    with pytest.raises(TrainingError, match="the head of task 'smile' from plugin 'shapes' raised KeyError"):
        call(lambda _: {}["x"], torch.zeros(1))


# ---------------------------------------------------------------- export: torch 2.4's ONNX exporter


def test_the_torchscript_based_onnx_writer_passes_only_what_torch_2_4_takes(monkeypatch, tmp_path):
    """torch 2.4's torch.onnx.export has neither `dynamic_shapes` nor `dynamo` (both came in 2.5)."""
    import hydranet.core.export as export_module

    calls = []

    def export_2_4(model, args, f, export_params=True, verbose=False, training=None, input_names=None,
                   output_names=None, operator_export_type=None, opset_version=None, do_constant_folding=True,
                   dynamic_axes=None, keep_initializers_as_inputs=None, custom_opsets=None,
                   export_modules_as_functions=False, autograd_inlining=True):
        calls.append(dict(opset_version=opset_version, dynamic_axes=dynamic_axes))

    class Model:
        def __init__(self):
            self.metadata_props = types.SimpleNamespace(add=lambda: types.SimpleNamespace())

    fake_onnx = types.SimpleNamespace(load=lambda path: Model(), save=lambda model, path: None)
    monkeypatch.setattr(torch.onnx, "export", export_2_4)
    monkeypatch.setitem(sys.modules, "onnx", fake_onnx)
    assert not export_module._dynamo_onnx_exporter()
    wrapper = types.SimpleNamespace(task_names=["age", "gender"])
    export_module._write_onnx_torchscript_based(wrapper, torch.zeros(2, 3, 16, 16), tmp_path / "m.onnx", {}, None)
    assert calls and calls[0]["opset_version"] == export_module.MIN_OPSET
    assert set(calls[0]["dynamic_axes"]) == {"images", "age", "gender"}


# ---------------------------------------------------------------- cache clear: only what hydranet wrote


def test_cache_clear_removes_only_hydranets_own_items_from_the_cache_folder(tmp_path, monkeypatch):
    """HYDRANET_CACHE may point at a folder that holds other things (a home folder, a shared disk)."""
    from hydranet.core.cli import cli

    cache = tmp_path / "somewhere"
    monkeypatch.setenv("HYDRANET_CACHE", str(cache))
    reports, synthetic = cache / "data-reports", cache / "synthetic"
    reports.mkdir(parents=True)
    synthetic.mkdir()
    ours_report = reports / "utkface-0123456789ab.txt"
    ours_report.write_text("1 unreadable image skipped:\n")
    theirs_notes = reports / "notes"  # a folder of the user's, not a data-problem list
    theirs_notes.mkdir()
    (theirs_notes / "thesis.tex").write_text("months of work")
    theirs_file = reports / "budget.xlsx"
    theirs_file.write_text("numbers")
    ours_faces = synthetic / "n40-s32-seed0"
    ours_faces.mkdir()
    (ours_faces / ".hydranet-synthetic.json").write_text("{}")
    (ours_faces / "30_0_3_0.jpg").write_bytes(b"x")
    theirs_photos = synthetic / "holiday"
    theirs_photos.mkdir()
    (theirs_photos / "beach.jpg").write_bytes(b"y")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    (reports / "link.txt").symlink_to(outside / "keep.txt")
    for path in [ours_report, theirs_notes, theirs_file, ours_faces, theirs_photos, *theirs_notes.iterdir(),
                 *ours_faces.iterdir(), *theirs_photos.iterdir()]:
        os.utime(path, (HOUR_AGO, HOUR_AGO))
    listing = CliRunner().invoke(cli, ["cache", "list"])
    assert listing.exit_code == 0, listing.output
    assert "data-problem lists: 1 item" in listing.output and "synthetic faces: 1 item" in listing.output
    result = CliRunner().invoke(cli, ["cache", "clear", "--all"])
    assert result.exit_code == 0, result.output
    assert not ours_report.exists() and not ours_faces.exists()
    assert (theirs_notes / "thesis.tex").read_text() == "months of work"
    assert theirs_file.exists() and (theirs_photos / "beach.jpg").exists()
    assert (reports / "link.txt").is_symlink() and (outside / "keep.txt").read_text() == "keep"
    assert "removed 0 decoded-image entries and 2 other items" in result.output


def test_cache_clear_knows_the_synthetic_datasets_marker_and_report_names():
    from hydranet.core import cache_command
    from hydranet.core.data_report import full_report_path
    from hydranet.plugins.datasets.synthetic import MARKER

    assert cache_command.SYNTHETIC_MARKER == MARKER
    dataset = types.SimpleNamespace(root="/data/UTKFace", csv="")
    assert cache_command.REPORT_NAME.fullmatch(full_report_path(dataset, "utkface").name)


# ---------------------------------------------------------------- pruning never fails the decode it follows


def test_an_orphan_the_system_refuses_to_remove_does_not_fail_the_decode(tmp_path, monkeypatch):
    """Another user's killed decode in a shared (sticky) cache folder, or a file mapped on Windows."""
    from test_cache_pruning import SIZE, draw

    from hydranet.core.decode import decode_images

    cache = tmp_path / "cache"
    cache.mkdir()
    theirs = cache / ".decoded-0123.abc.tmp"
    theirs.write_bytes(b"\0" * 10)
    two_days_ago = time.time() - 2 * 86400
    os.utime(theirs, (two_days_ago, two_days_ago))
    unlink = Path.unlink

    def refuse(self, missing_ok=False):
        if self.name == theirs.name:
            raise PermissionError(13, "Operation not permitted", str(self))
        return unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    decoded = decode_images(draw(tmp_path / "data"), SIZE, cache_dir=cache, progress=False, workers=1)
    assert decoded.images.shape[0] == 4 and theirs.exists()
