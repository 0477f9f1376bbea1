"""A run whose weights come from a checkpoint (a resume, init_from) never looks for its backbone's starting file.

Resuming loaded `backbone.weights` (or torchvision's pretrained file) again before last.pt replaced them, so a
run could not be resumed on another machine, after the torch cache was cleared, or from another folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torchvision
import yaml
from click.testing import CliRunner

from conftest import tiny_spec
from hydranet.core.cli import cli


def spec_with_weights(faces: Path, tmp_path: Path, **train) -> tuple[Path, Path]:
    weights = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    raw = tiny_spec(faces, **train)
    raw["backbone"] = {"name": "resnet18", "weights": str(weights)}
    spec = tmp_path / "r18.yaml"
    spec.write_text(yaml.safe_dump(raw))
    return spec, weights


def test_resume_and_init_from_do_not_need_the_backbone_s_weights_file_again(faces, tmp_path):
    spec, weights = spec_with_weights(faces, tmp_path, epochs=1)
    run = tmp_path / "run"
    first = CliRunner().invoke(cli, ["train", str(spec), "--out", str(run), "--no-progress"])
    assert first.exit_code == 0, first.output
    weights.unlink()  # another machine, a cleared cache
    (run / "summary.json").unlink()  # killed after its last epoch: resuming completes it
    resumed = CliRunner().invoke(cli, ["train", "--resume", str(run), "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    assert "completed the run" in resumed.output and json.loads((run / "summary.json").read_text())["best_epoch"] == 1
    again = CliRunner().invoke(cli, ["train", str(spec), "--set", f"init_from={run / 'best.pt'}", "--out",
                                     str(tmp_path / "again"), "--no-progress"])
    assert again.exit_code == 0, again.output
    fresh = CliRunner().invoke(cli, ["train", str(spec), "--out", str(tmp_path / "fresh"), "--no-progress"])
    assert fresh.exit_code == 1 and f"{weights}" in fresh.output  # a new run still needs it, and says so
