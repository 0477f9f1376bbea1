"""A weighting's state kept in Python numbers (`get_extra_state`) survives a stop and resume, as its buffers do.

`nn.Module.state_dict()` saves such state as an `_extra_state` entry (any
picklable value, not a tensor) beside the buffers; resuming used to refuse
every such last.pt as damaged, for `rlw` and `pcgrad` too. The stop is the
in-process SIGTERM of tests/test_resume.py.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import hydranet
from conftest import tiny_spec, with_weighting
from hydranet.core.checkpoint import read_checkpoint
from hydranet.core.checkpoint_checks import resume_problems
from hydranet.core.cli import cli
from hydranet.core.errors import CheckpointError, TrainingInterrupted
from hydranet.core.spec import load_spec
from hydranet.core.weighting import WeightedSum
from test_resume import assert_same_run, resume_matches_the_whole_run, signalled_run


class Alternating(WeightedSum):
    """Doubles one task's weight each step, in turn, counting the steps in a Python int (as docs/plugins/weighting.md
    says such state is kept); sends SIGTERM to its own process at step `stop_at`."""

    stop_at = 10**9

    def __init__(self, tasks):
        super().__init__(tasks)
        self.steps = 0
        self.register_buffer("current", torch.ones(self.num_tasks))

    def multipliers(self):
        return self.current

    def backward(self, losses, context=None):
        self.steps += 1
        if self.steps == Alternating.stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
        self.current.fill_(1.0)
        self.current[self.steps % self.num_tasks] = 2.0
        return super().backward(losses, context)

    def get_extra_state(self):
        return {"steps": self.steps, "scale": 0.5}

    def set_extra_state(self, state):
        self.steps = int(state["steps"])


@pytest.mark.parametrize("weighting", ["rlw", "pcgrad"])
def test_a_built_in_weighting_with_extra_state_resumes_exactly(faces, tmp_path, weighting):
    components, _, progress = signalled_run(faces, tmp_path, epochs=3, at=14, weighting=weighting)  # epoch 2, step 1
    assert (progress["epoch"], progress["step"]) == (2, 1)
    assert "_extra_state" in read_checkpoint(tmp_path / "cut" / "last.pt")["weighting"]
    resume_matches_the_whole_run(components, tmp_path)


def test_a_plugins_weighting_with_python_number_state_resumes_exactly(faces, tmp_path):
    components = with_weighting("alternating", Alternating)
    raw = tiny_spec(faces, epochs=3, batch_size=16)
    raw["weighting"] = "alternating"
    spec = load_spec(raw, components=components)
    Alternating.stop_at = 10**9
    hydranet.train(spec, out_dir=tmp_path / "whole", components=components, progress=False, echo=False)
    Alternating.stop_at = 12  # 11 steps an epoch: epoch 2, step 1
    try:
        with pytest.raises(TrainingInterrupted):
            hydranet.train(spec, out_dir=tmp_path / "cut", components=components, progress=False, echo=False)
    finally:
        Alternating.stop_at = 10**9
    saved = read_checkpoint(tmp_path / "cut" / "last.pt")
    assert saved["weighting"]["_extra_state"] == {"steps": 12, "scale": 0.5}
    hydranet.train(components=components, resume=tmp_path / "cut", progress=False, echo=False)
    assert_same_run(tmp_path / "cut", tmp_path / "whole")


def test_such_a_checkpoint_is_evaluated_used_for_prediction_and_as_init_from(faces, tmp_path):
    """Using a trained model never reads the weighting's state: its extra state does not get in the way."""
    runner = CliRunner()
    (tmp_path / "rlw.yaml").write_text(yaml.safe_dump({**tiny_spec(faces, epochs=1), "weighting": "rlw"}))
    trained = runner.invoke(cli, ["train", str(tmp_path / "rlw.yaml"), "--out", str(tmp_path / "rlw"),
                                  "--no-progress"], catch_exceptions=False)
    assert trained.exit_code == 0, trained.output
    last = tmp_path / "rlw" / "last.pt"
    assert "_extra_state" in read_checkpoint(last)["weighting"]
    evaluated = runner.invoke(cli, ["eval", str(last), "--device", "cpu"], catch_exceptions=False)
    assert evaluated.exit_code == 0, evaluated.output
    image = next(iter(sorted(Path(faces).glob("*.jpg"))))
    predicted = runner.invoke(cli, ["predict", str(last), str(image), "--json", "--device", "cpu"],
                              catch_exceptions=False)
    assert predicted.exit_code == 0, predicted.output
    raw = {**tiny_spec(faces, epochs=1), "weighting": "rlw", "init_from": str(last)}
    (tmp_path / "again.yaml").write_text(yaml.safe_dump(raw))
    trained = runner.invoke(cli, ["train", str(tmp_path / "again.yaml"), "--out", str(tmp_path / "again"),
                                  "--no-progress"], catch_exceptions=False)
    assert trained.exit_code == 0, trained.output


def _with_weighting_state(state: dict) -> dict:
    return {"weighting": state, "optimizer": {"state": {}, "param_groups": [{"params": [0], "lr": 0.1}]},
            "tasks": [], "progress": {}}


def _weighting_problems(state: dict) -> list[tuple[str, str]]:
    return [p for p in resume_problems(_with_weighting_state(state)) if p[0].startswith("weighting")]


def test_extra_state_at_any_module_prefix_is_accepted_and_real_damage_still_refused():
    assert _weighting_problems({"last_weights": torch.ones(2), "_extra_state": {"draws": 3}}) == []
    assert _weighting_problems({"inner.scale": torch.ones(2), "inner._extra_state": 7,
                                "_extra_state": [1, 2.5]}) == []
    assert _weighting_problems({"last_weights": "edited"}) == [
        ("weighting.last_weights", "is 'edited', not a tensor (only a module's _extra_state may hold other values)")]
    assert _weighting_problems({"my_extra_state": 3})[0][0] == "weighting.my_extra_state"
    assert _weighting_problems([1, 2]) == [("weighting", "is [1, 2], not a mapping of tensors")]


def test_a_resumed_last_pt_whose_weighting_state_was_damaged_is_still_refused(faces, tmp_path):
    components, _, _ = signalled_run(faces, tmp_path, epochs=2, at=14, weighting="rlw")
    last = tmp_path / "cut" / "last.pt"
    saved = torch.load(last, weights_only=True)
    saved["weighting"]["last_weights"] = [0.5, 0.5]
    torch.save(saved, last)
    with pytest.raises(CheckpointError, match=r"last\.pt: weighting\.last_weights is \[0\.5, 0\.5\], not a tensor"):
        hydranet.train(components=components, resume=tmp_path / "cut", progress=False, echo=False)
