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
