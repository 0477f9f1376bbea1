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
