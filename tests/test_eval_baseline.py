"""The baseline `hydranet eval` shows is the constant fitted on the labels the model was trained on, on any data.

Training stores each task's best constant prediction (`trivial_output` on
the training labels) in the checkpoint; eval scores that constant on the data
it evaluates. Fitting it on the evaluated folder's own train split instead
measured the folder against itself, and gave two baselines for the same
images depending on how the folder was named (`--data DIR` keeps the stored
val_fraction, `--set 'data={...}'` does not). A checkpoint written before
the constants were stored still evaluates as it did, and says so.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import hydranet
from conftest import tiny_spec
from hydranet.core.cli import cli
from hydranet.core.inference import UNSTORED_BASELINE, TrainedModel
from hydranet.core.run_setup import load_prepared_data
from hydranet.core.spec import load_spec
from hydranet.plugins.datasets.synthetic import write_synthetic


@pytest.fixture(scope="module")
def other(tmp_path_factory) -> Path:
    """A held-out folder of faces the model never saw, in the training data's format (UTKFace)."""
    return write_synthetic(tmp_path_factory.mktemp("heldout") / "faces", count=48, size=32, seed=11, progress=False)


def without_stored_baselines(checkpoint: Path, path: Path) -> Path:
    """A copy of `checkpoint` as hydranet wrote it before it stored the constants."""
    saved = torch.load(checkpoint, weights_only=True)
    del saved["baseline_outputs"]
    torch.save(saved, path)
    return path


def ages(folder: Path) -> torch.Tensor:
    """The ages a UTKFace folder's file names give (AGE_GENDER_RACE_DATE.jpg)."""
    return torch.tensor([float(p.name.split("_")[0]) for p in sorted(folder.glob("*.jpg"))])


def median_train_age(spec_dict: dict, model: TrainedModel) -> float:
    """The median age of the train split of the data `spec_dict` names: the age task's constant prediction
    (the best constant for its MAE; the midpoint of the two middle ages for an even count)."""
    data = load_prepared_data(load_spec(spec_dict), model.tasks, progress=False)
    return float(np.nanmedian(data.targets[data.train_index, 0].numpy()))


def eval_json(*args) -> tuple[dict, str]:
    result = CliRunner().invoke(cli, ["eval", *map(str, args), "--split", "all", "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def test_both_ways_of_naming_another_folder_give_the_training_labels_baseline(checkpoint, other):
    by_data, said = eval_json(checkpoint, "--data", other)
    by_section, _ = eval_json(checkpoint, "--set", f"data={{name: utkface, root: {other}}}")
    assert by_data["images"] == by_section["images"] == 48
    assert by_data["baselines"] == by_section["baselines"]
    assert UNSTORED_BASELINE not in said

    model = hydranet.load(checkpoint)
    trained_median = median_train_age(model.spec.to_dict(), model)  # the labels it was trained on
    assert model.baseline_outputs["age"] == pytest.approx([trained_median])
    assert by_data["baselines"]["age"]["mae"] == pytest.approx(float((ages(other) - trained_median).abs().mean()),
                                                               rel=1e-5)
    # the evaluated folder's own median would give another baseline: the one it used to show
    assert median_train_age({**model.spec.to_dict(), "data": {"name": "utkface", "root": str(other)}},
                            model) != pytest.approx(trained_median)


def test_eval_on_the_stored_data_shows_the_baseline_training_showed(checkpoint):
    """On the data it trained on, the stored constant is the one training scored: the same numbers."""
    evaluation = hydranet.load(checkpoint).evaluate()
    trained = json.loads((checkpoint.parent / "summary.json").read_text())["baselines"]
    assert evaluation.baselines == trained and evaluation.note == ""


def test_an_older_checkpoint_still_evaluates_and_says_where_its_baseline_comes_from(checkpoint, other, tmp_path):
    old = without_stored_baselines(checkpoint, tmp_path / "old.pt")
    report, said = eval_json(old, "--data", other)
    assert f"note: {UNSTORED_BASELINE}" in said
    assert report["note"] == UNSTORED_BASELINE
    model = hydranet.load(old)
    assert model.baseline_outputs == {}
    data = {**model.spec.to_dict()["data"], "root": str(other)}
    own_median = median_train_age({**model.spec.to_dict(), "data": data}, model)
    assert report["baselines"]["age"]["mae"] == pytest.approx(float((ages(other) - own_median).abs().mean()), rel=1e-5)
    table = CliRunner().invoke(cli, ["eval", str(old), "--data", str(other), "--device", "cpu"])
    assert table.exit_code == 0 and table.stderr.count("note:") == 1, table.output


def test_an_older_checkpoint_is_used_as_before(checkpoint, faces, tmp_path):
    """predict, export, init_from and hydranet.load take a checkpoint without the stored constants."""
    from hydranet.core.export import export_checkpoint

    old = without_stored_baselines(checkpoint, tmp_path / "old.pt")
    image = sorted(faces.glob("*.jpg"))[0]
    assert hydranet.load(old).predict(image) == hydranet.load(checkpoint).predict(image)
    assert export_checkpoint(old, tmp_path / "old.ts.pt", fmt="torchscript").path.is_file()
    further = hydranet.train(load_spec(tiny_spec(faces, epochs=1)), overrides=f"init_from={old}",
                             out_dir=tmp_path / "further", progress=False, echo=False)
    stored = torch.load(tmp_path / "further" / "best.pt", weights_only=True)["baseline_outputs"]
    assert set(stored) == {"age", "gender", "ethnicity"} and further.baselines


def test_a_run_resumed_from_an_older_checkpoint_stores_the_constants(faces, tmp_path):
    from test_resume import signalled_run

    components, _, _ = signalled_run(faces, tmp_path, epochs=2, at=14, signum=signal.SIGTERM)
    cut = tmp_path / "cut" / "last.pt"
    without_stored_baselines(cut, cut)
    hydranet.train(components=components, resume=tmp_path / "cut", progress=False, echo=False)
    resumed = torch.load(cut, weights_only=True)["baseline_outputs"]
    whole = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)["baseline_outputs"]
    assert resumed == whole


def test_eval_from_another_folder_reads_a_relative_data_root_where_the_run_started(faces, tmp_path, monkeypatch):
    # the run read data.root "utk" from the folder it started in; eval run elsewhere reads that same folder
    project, elsewhere = faces.parent, tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(project)
    spec = load_spec({**tiny_spec(Path(faces.name), epochs=1)})
    hydranet.train(spec, out_dir=tmp_path / "run", progress=False, echo=False)
    best = tmp_path / "run" / "best.pt"
    monkeypatch.chdir(elsewhere)
    result = CliRunner().invoke(cli, ["eval", str(best), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f"val split of {faces}" in said
    assert CliRunner().invoke(cli, ["eval", str(best), "--device", "cpu", "--data", str(faces)]).exit_code == 0
