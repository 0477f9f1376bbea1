"""Heads have lives of their own: start from a trained model, add a task, freeze parts, fine-tune one head."""

from __future__ import annotations

import pytest
import torch

import hydranet
from conftest import tiny_spec
from hydranet.core.errors import CheckpointError
from hydranet.core.spec import load_spec


def train(components, faces, out, tasks, **extra):
    raw = tiny_spec(faces, epochs=extra.pop("epochs", 2), scheduler="none")
    raw["tasks"] = tasks
    raw.update(extra)
    spec = load_spec(raw, components=components)
    hydranet.train(spec, out_dir=out, components=components, progress=False, echo=False)
    return out / "last.pt"


@pytest.fixture(scope="module")
def stages(faces, tmp_path_factory):
    """age+gender, then ethnicity added on a frozen model, then only the age head fine-tuned."""
    from hydranet.core.plugins import load_components, make_plugin_manager

    components = load_components(make_plugin_manager(entry_points=False))
    root = tmp_path_factory.mktemp("surgery")
    first = train(components, faces, root / "first", ["age", "gender"])
    second = train(components, faces, root / "second", ["age", "gender", "ethnicity"], init_from=str(first),
                   freeze=["backbone", "age", "gender"])
    third = train(components, faces, root / "third", ["age", "gender", "ethnicity"], init_from=str(second),
                  freeze=["backbone", "gender", "ethnicity"], train={**tiny_spec(faces)["train"], "epochs": 1,
                                                                   "scheduler": "none", "head_lr": {"age": 0.01}})
    return components, first, second, third


def outputs(checkpoint, images):
    return hydranet.load(checkpoint).predict_tensor(images)


def test_adding_a_task_on_a_frozen_model_keeps_old_heads_bit_identical(stages):
    _, first, second, _ = stages
    images = torch.randint(0, 256, (7, 3, 16, 16), dtype=torch.uint8)
    before, after = outputs(first, images), outputs(second, images)
    for task in ("age", "gender"):
        assert torch.equal(before[task], after[task]), task
    assert set(after) == {"age", "gender", "ethnicity"}
    log = (second.parent / "train.log").read_text()
    assert "heads loaded: age, gender; new heads: ethnicity; dropped (not in the spec): none" in log
    assert "frozen: backbone, age, gender" in log


def test_fine_tuning_one_head_changes_no_other_parameter(stages):
    _, _, second, third = stages
    old = torch.load(second, weights_only=True)["model"]
    new = torch.load(third, weights_only=True)["model"]
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    assert changed and all(k.startswith("heads.age.") for k in changed), changed
    # frozen batch-norm statistics too (the backbone's running means would move in train mode)
    assert any("running_mean" in k for k in old)


def test_frozen_parts_have_no_optimizer_state_and_parts_have_their_own_rates(stages):
    _, _, second, third = stages
    groups = torch.load(third, weights_only=True)["optimizer"]["param_groups"]
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"head.age"} and by_name["head.age"]["lr"] == pytest.approx(0.01)
    state = torch.load(second, weights_only=True)["optimizer"]
    assert {g["name"] for g in state["param_groups"]} == {"head.ethnicity"}


def test_tasks_absent_from_the_spec_are_dropped(stages, faces, tmp_path):
    components, _, second, _ = stages
    train(components, faces, tmp_path, ["age"], init_from=str(second), epochs=1)
    log = (tmp_path / "train.log").read_text()
    assert "heads loaded: age; new heads: none; dropped (not in the spec): ethnicity, gender" in log
    assert set(torch.load(tmp_path / "last.pt", weights_only=True)["task_state"]) == {"age"}


def test_init_from_a_different_backbone_is_a_clear_error(stages, faces, tmp_path):
    components, first, _, _ = stages
    raw = tiny_spec(faces)
    raw["backbone"] = {"name": "tiny", "width": 12}
    raw["init_from"] = str(first)
    with pytest.raises(CheckpointError, match=r"does not fit this spec's backbone: \S+ has shape \(12, .* here "
                                              r"but \(8, .* in the checkpoint \(\d+ more differ\)\. Use the same"):
        hydranet.train(load_spec(raw, components=components), out_dir=tmp_path, components=components,
                       progress=False, echo=False)
    raw["init_from"] = str(tmp_path)
    with pytest.raises(CheckpointError, match="init_from: checkpoint .* is a folder; give a run's best.pt"):
        hydranet.train(load_spec(raw, components=components), out_dir=tmp_path / "b", components=components,
                       progress=False, echo=False)


def test_a_missing_init_from_is_named_before_any_data_is_read(stages, faces, tmp_path, monkeypatch):
    components = stages[0]
    import hydranet.core.run_setup as run_setup  # where Trainer._setup looks it up

    def must_not_run(*args, **kwargs):
        raise AssertionError("the data was read before init_from was checked")

    monkeypatch.setattr(run_setup, "load_prepared_data", must_not_run)
    with pytest.raises(CheckpointError, match=r"init_from: checkpoint .*nope\.pt was not found; give a run's best.pt"):
        train(components, faces, tmp_path / "run", ["age"], init_from=str(tmp_path / "nope.pt"))
    assert not (tmp_path / "run").exists()


def test_a_spec_file_as_init_from_is_named_before_any_data_is_read(stages, faces, tmp_path, monkeypatch):
    import hydranet.core.run_setup as run_setup

    monkeypatch.setattr(run_setup, "load_prepared_data", lambda *a, **k: pytest.fail("the data was read first"))
    spec = tmp_path / "tiny.yaml"
    spec.write_text("tasks: [age]\n")
    with pytest.raises(CheckpointError, match=r"^init_from: .*tiny\.yaml: it is a spec file, not a checkpoint: "
                                              r"train it first"):
        train(stages[0], faces, tmp_path / "run", ["age"], init_from=str(spec))
    assert not (tmp_path / "run").exists()


def test_spec_validate_reports_a_missing_init_from(faces, tmp_path):
    from click.testing import CliRunner

    from hydranet.core.cli import cli

    spec = tmp_path / "spec.yaml"
    spec.write_text(f"tasks: [age]\ndata: {{name: utkface, root: {faces}}}\ninit_from: {tmp_path / 'gone.pt'}\n")
    result = CliRunner().invoke(cli, ["spec", "validate", str(spec)])
    assert result.exit_code == 1 and "gone.pt was not found" in result.output


def test_a_resumed_run_does_not_need_its_init_from_any_more(stages, faces, tmp_path):
    components, first = stages[0], stages[1]
    start = tmp_path / "start.pt"
    start.write_bytes(first.read_bytes())
    raw = tiny_spec(faces, epochs=2, scheduler="none")
    raw.update(tasks=["age", "gender"], init_from=str(start))
    hydranet.train(load_spec(raw, components=components), out_dir=tmp_path / "run", components=components,
                   progress=False, echo=False)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    state["progress"]["epoch"] = 2  # as if stopped after epoch 1
    torch.save(state, tmp_path / "run" / "last.pt")
    start.unlink()
    result = hydranet.train(components=components, resume=tmp_path / "run", progress=False, echo=False)
    assert len(result.history) == 2


def test_a_frozen_backbone_with_nothing_loaded_into_it_is_warned_about(faces, tmp_path):
    from hydranet.core.spec import load_spec

    random_frozen = {**tiny_spec(faces, epochs=1), "freeze": ["backbone"]}
    hydranet.train(load_spec(random_frozen), out_dir=tmp_path / "frozen", progress=False, echo=False)
    log = (tmp_path / "frozen" / "train.log").read_text()
    assert ("warning: the backbone is frozen but starts from random weights (no init_from, and backbone 'tiny' "
            "loads none): the heads will learn from random features.") in log
    fine_tune = {**random_frozen, "init_from": str(tmp_path / "frozen" / "best.pt")}
    hydranet.train(load_spec(fine_tune), out_dir=tmp_path / "tuned", progress=False, echo=False)
    assert "starts from random weights" not in (tmp_path / "tuned" / "train.log").read_text()
