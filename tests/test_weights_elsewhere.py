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


def test_a_batch_of_one_image_that_batch_norm_cannot_normalise_is_a_spec_problem_before_training(faces, tmp_path):
    """resnet18's last batch norm sees a 1x1 map at 16 px: a batch of 1 was a ValueError traceback mid-step."""
    raw = tiny_spec(faces, epochs=1, batch_size=1)
    raw["backbone"] = {"name": "resnet18"}
    spec = tmp_path / "one.yaml"
    spec.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(cli, ["train", str(spec), "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert ("train.batch_size: a batch of 1 image per process reaches a batch-norm layer of the model as one value "
            "per channel (a 1x1 map at 16x16 px, or a head's features)") in result.output
    assert not (tmp_path / "run").exists()  # nothing left behind


def test_a_frozen_backbone_s_batch_norm_does_not_count(faces):
    """Its batch norm keeps its statistics fixed, so a batch of 1 passes it: no refusal."""
    from hydranet.core.forward import check_heads, model_for_settings
    from hydranet.core.spec import load_spec

    raw = tiny_spec(faces, epochs=1, batch_size=1)
    raw["backbone"] = {"name": "resnet18"}
    for freeze, smallest in (([], 1), (["backbone"], None)):
        spec = load_spec({**raw, "freeze": freeze})
        tasks = spec.build_tasks()
        model = model_for_settings(spec, tasks, type("Settings", (), {"device": "cpu", "channels_last": False})())
        assert check_heads(model, tasks, spec) == smallest, freeze
