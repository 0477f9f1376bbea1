"""Using a trained model needs only the plugins that build it, and says what a plugin did wrong.

- predict, eval and export (and `hydranet.load`) need the backbone and task
  plugins only: the weighting's never, the dataset's only to evaluate on the
  stored data; a missing one is named with its plugin and the way out;
- a regression head outputs the label's units: eval and export say so when
  a task's decode shows other values than its head gives;
- `--data DIR` sets the model's dataset's `root`, whatever its default, and
  refuses a dataset without one instead of swapping in another;
- a decode that returns the wrong number of rows names its task and plugin;
- a name two plugins claim (a plugin reusing a built-in's) resolves, for a
  checkpoint, to the plugin the checkpoint records; a spec still refuses it.

One tiny run (one epoch, 16 px) on three inline plugins, a weighting, a
dataset and a task, serves most tests.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

import hydranet
from conftest import tiny_spec, trained_on, with_inline_plugin
from hydranet.core import checkpoint as checkpoint_module
from hydranet.core import inference as inference_module
from hydranet.core.cli import cli
from hydranet.core.errors import CheckpointError, DataError, HydranetError, SpecError
from hydranet.core.export import export_checkpoint
from hydranet.core.inference import TrainedModel
from hydranet.core.metrics import MaskedMean
from hydranet.core.plugins import BUILTIN_PLUGINS, Components, load_components, make_plugin_manager
from hydranet.core.spec import load_spec
from hydranet.plugins.datasets.utkface import UTKFaceDataset
from hydranet.plugins.weighting.sum import Sum
from hydranet.tasks.kinds import RegressionTask
from hydranet.tasks.utkface import AgeParams

SCALE = 100.0  # the scaled task's head outputs age / SCALE


class Focus(Sum):
    """A third-party weighting (the plain sum under another name)."""


class FirstParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str = Field("data/faces", description="Folder of UTKFace images (it has a default).")
    first: int = Field(100, description="How many images to read.")


class FirstImages(UTKFaceDataset):
    """The first `first` UTKFace images of a folder: a dataset whose `root` has a default."""

    def __init__(self, params: FirstParams):
        super().__init__(params.root)
        self.first = params.first

    def samples(self):
        return super().samples()[:self.first]


class FolderPathParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    folder_path: str = Field(description="Folder of UTKFace images (not called root).")


def folder_path_dataset(params: FolderPathParams) -> UTKFaceDataset:
    return UTKFaceDataset(params.folder_path)


class DrawingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str | None = Field(None, description="Folder to draw into.")


class Drawing(UTKFaceDataset):
    """A dataset that writes its images to `root` (as synthetic does) and says so."""

    draws_images = True

    def __init__(self, params: DrawingParams):
        super().__init__(params.root or "drawn")


class ScaledParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = "age"


class ScaledMae(MaskedMean):
    """MAE in years, of a head that outputs years / SCALE."""

    higher_is_better = False

    def row_values(self, output: Tensor, target: Tensor) -> Tensor:
        return (output[:, 0] * SCALE - target).abs()


class ScaledAge(hydranet.Task):
    """Age / 100 as the head's output: breaks the contract that a regression head outputs the label's units."""

    problem = "regression"

    def __init__(self, name: str, params: ScaledParams):
        super().__init__(name, params.label, hidden=8)

    @property
    def out_features(self) -> int:
        return 1

    def parse_label(self, record: Mapping[str, str]) -> float | None:
        try:
            value = float(record[self.label])
        except (KeyError, ValueError):
            return None
        return value if math.isfinite(value) else None

    def per_sample_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return (output[:, 0] - target / SCALE).abs()

    def metrics(self) -> dict[str, hydranet.Metric]:
        return {"mae": ScaledMae()}

    def decode(self, output: Tensor) -> list[dict[str, Any]]:
        return [{"value": round(float(v) * SCALE, 1), "unit": "years"} for v in output[:, 0].tolist()]

    def trivial_output(self, targets: Tensor) -> Tensor:
        return torch.tensor([float(targets[~torch.isnan(targets)].mean()) / SCALE])


def inline(pm, name: str, distribution: str, hook: str, *args, **kwargs) -> None:
    def register_one(self, register):
        register(*args, **kwargs)

    pm.add_plugin(type("Plugin", (), {hook: hydranet.hookimpl(register_one)})(), name, distribution=distribution,
                  version="1.0", builtin=False)


def components_with(*plugins: str) -> Components:
    """Built-ins plus the named ones of this module's inline plugins: weighting, dataset, task."""
    pm = make_plugin_manager(entry_points=False)
    if "weighting" in plugins:
        inline(pm, "focus_plugin", "hydranet-focus", "register_weightings", "focus", Focus)
    if "dataset" in plugins:
        inline(pm, "first_plugin", "hydranet-first", "register_datasets", "first_images", FirstImages,
               params=FirstParams)
    if "task" in plugins:
        inline(pm, "scaled_plugin", "hydranet-scaled", "register_tasks", "scaled_age", ScaledAge,
               params=ScaledParams)
    return load_components(pm)


@pytest.fixture(scope="module")
def run(faces, tmp_path_factory) -> Path:
    """best.pt of a run on all three plugins: the age/100 task beside gender, read by first_images, weighted by focus."""
    components = components_with("weighting", "dataset", "task")
    raw = tiny_spec(faces, epochs=1)
    raw.update(tasks=["scaled_age", "gender"], weighting="focus",
               data={"name": "first_images", "root": str(faces), "first": 200, "val_fraction": 0.25})
    out = tmp_path_factory.mktemp("plugins") / "run"
    hydranet.train(load_spec(raw, components=components), out_dir=out, components=components, progress=False,
                   echo=False)
    return out / "best.pt"


def invoke(*args: Any, ok: bool = True):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def installed(monkeypatch):
    """Make the commands (and `hydranet.load`) see these components as the installed plugins."""
    def use(components: Components) -> None:
        monkeypatch.setattr(inference_module, "default_components", lambda: components)
    return use


# --- 1. only the backbone and task plugins are needed ------------------------------------------------

def test_predict_and_export_need_neither_the_weighting_nor_the_dataset_plugin(run, faces, tmp_path, installed):
    everything = TrainedModel.from_checkpoint(run, components=components_with("weighting", "dataset", "task"))
    model = TrainedModel.from_checkpoint(run, components=components_with("task"))
    image = sorted(faces.glob("*.jpg"))[0]
    assert model.predict(image) == everything.predict(image)
    assert model.spec.weighting.entry.name == "focus" and model.spec.to_dict()["data"]["first"] == 200  # kept as stored
    installed(components_with("task"))
    rows = json.loads(invoke("predict", run, image, "--json", "--device", "cpu").stdout)
    assert rows[0]["scaled_age"]["unit"] == "years"
    result = export_checkpoint(run, tmp_path / "m.ts.pt", "torchscript", check=False)
    assert result.path.is_file()


def test_eval_on_the_stored_data_names_the_missing_dataset_and_the_ways_out(run, faces, installed):
    model = TrainedModel.from_checkpoint(run, components=components_with("task"))
    with pytest.raises(DataError) as caught:
        model.evaluate()
    message = str(caught.value)
    assert (f"{run} was trained on dataset 'first_images' from plugin 'first_plugin' (hydranet-first), which is "
            "not available here. Install that plugin (pip install hydranet-first) or "
            "allow it in HYDRANET_PLUGINS") in message  # the checkpoint records who provided its dataset
    assert "predict and export do not" in message and "evaluate('data={name: folder, root: DIR}'" in message
    with pytest.raises(DataError, match="trained on dataset 'first_images'"):
        model.evaluate(f"data.root={faces}")  # its format is unknown here: refused, not read as another
    other = model.evaluate(f"data={{name: utkface, root: {faces}}}", split="all", details=False)
    assert other.images == 240 and other.dataset == "utkface"
    installed(components_with("task"))
    cli_result = invoke("eval", run, "--device", "cpu", ok=False)
    assert cli_result.exit_code == 1 and "Traceback" not in cli_result.output
    assert "dataset 'first_images'" in cli_result.output and "--set 'data={name: folder, root: DIR}'" in cli_result.output


def test_a_checkpoint_from_before_components_were_recorded_still_says_what_to_install(run, tmp_path):
    saved = torch.load(run, weights_only=True)
    del saved["components"]
    torch.save(saved, tmp_path / "old.pt")
    model = TrainedModel.from_checkpoint(tmp_path / "old.pt", components=components_with("task"))
    with pytest.raises(DataError) as caught:
        model.evaluate()
    assert "trained on dataset 'first_images', which is not available here" in str(caught.value)
    assert "registers dataset 'first_images'" in str(caught.value) and "HYDRANET_PLUGINS" in str(caught.value)


def test_a_missing_backbone_or_task_is_named_with_its_plugin_and_package(run, tmp_path):
    saved = torch.load(run, weights_only=True)
    saved["spec"]["backbone"] = {"name": "minicnn", "width": 8}
    bare = tmp_path / "bare.pt"
    torch.save(saved, bare)
    with pytest.raises(CheckpointError) as caught:
        TrainedModel.from_checkpoint(bare, components=components_with("task"))
    assert str(caught.value) == (f"{bare} needs backbone 'minicnn', which is not available here. Install the "
                                 "package whose plugin registers backbone 'minicnn' (`hydranet plugins` lists the "
                                 "installed ones) or allow it in HYDRANET_PLUGINS.")
    saved["components"] = {"backbone": {"name": "minicnn", "plugin": "minicnn", "distribution": "hydranet-minicnn"}}
    recorded = tmp_path / "recorded.pt"
    torch.save(saved, recorded)
    with pytest.raises(CheckpointError) as caught:
        TrainedModel.from_checkpoint(recorded)  # the built-ins: the task plugin is missing too
    message = str(caught.value)
    assert message.startswith(f"{recorded} needs plugins that are not available here:\n  task 'scaled_age' "
                              "from plugin 'scaled_plugin' (hydranet-scaled), which is not available here.")
    assert ("backbone 'minicnn' from plugin 'minicnn' (hydranet-minicnn), which is "
            "not available here. Install that plugin (pip install hydranet-minicnn)") in message
    assert "weighting" not in message and "first_images" not in message


def test_a_plugin_left_out_or_failing_is_named_as_such(run, tmp_path, monkeypatch):
    saved = torch.load(run, weights_only=True)
    saved["spec"]["backbone"] = {"name": "minicnn", "width": 8}
    saved["components"] = {"backbone": {"name": "minicnn", "plugin": "minicnn", "distribution": "hydranet-minicnn"}}
    path = tmp_path / "recorded.pt"
    torch.save(saved, path)
    monkeypatch.setattr(checkpoint_module, "_installed_entry_points", lambda: {"minicnn"})
    monkeypatch.setenv("HYDRANET_PLUGINS", "scaled_plugin")
    with pytest.raises(CheckpointError, match=r"Its plugin 'minicnn' is installed, but HYDRANET_PLUGINS leaves it "
                                              r"out: add 'minicnn' to HYDRANET_PLUGINS"):
        TrainedModel.from_checkpoint(path, components=components_with("task"))
    saved.pop("components")  # a checkpoint that does not record whose backbone it is
    torch.save(saved, path)
    with pytest.raises(CheckpointError, match=r"HYDRANET_PLUGINS leaves out installed plugins that may register it: "
                                              r"minicnn; add the one that does"):
        TrainedModel.from_checkpoint(path, components=components_with("task"))
    saved["components"] = {"backbone": {"name": "minicnn", "plugin": "minicnn", "distribution": "hydranet-minicnn"}}
    torch.save(saved, path)
    monkeypatch.delenv("HYDRANET_PLUGINS")
    broken = components_with("task")
    broken.pm.record_error("minicnn", "failed to import 'minicnn.plugin': ImportError: no torchvision")
    with pytest.raises(CheckpointError, match=r"Its plugin 'minicnn' is installed but failed to load: failed to "
                                              r"import 'minicnn.plugin': ImportError: no torchvision"):
        TrainedModel.from_checkpoint(path, components=broken)


def test_component_provenance_records_backbone_dataset_and_weighting(run):
    components = components_with("weighting", "dataset", "task")
    spec = load_spec(torch.load(run, weights_only=True)["spec"], components=components)
    assert checkpoint_module.component_provenance(spec, components.pm) == {
        "backbone": {"name": "tiny", "plugin": "hydranet.plugins.backbones", "distribution": "hydranet"},
        "data": {"name": "first_images", "plugin": "first_plugin", "distribution": "hydranet-first"},
        "weighting": {"name": "focus", "plugin": "focus_plugin", "distribution": "hydranet-focus"},
    }


def test_stored_data_the_dataset_no_longer_takes_blocks_only_eval(checkpoint, faces, tmp_path):
    changed = trained_on(checkpoint, tmp_path / "best.pt", subset="old-parameter")  # utkface takes no `subset`
    model = hydranet.load(changed)
    assert len(model.predict(sorted(faces.glob("*.jpg"))[:2])) == 2
    with pytest.raises(DataError, match=r"does not resolve with dataset 'utkface' as installed here: data.subset: "
                                        r"unknown field"):
        model.evaluate()


# --- 2. a regression head outputs the label's units ------------------------------------------------

def test_eval_warns_when_decode_shows_other_values_than_the_head_and_reports_decodes(run):
    model = TrainedModel.from_checkpoint(run, components=components_with("weighting", "dataset", "task"))
    evaluation = model.evaluate()
    report = evaluation.details["scaled_age"]
    assert report["unit"] == "years"  # from decode: the task has no params.unit
    assert report["mae"] == pytest.approx(evaluation.result.metrics["scaled_age"]["mae"], rel=1e-3, abs=0.05)
    assert "the head does not output the label's units" in report["warning"]
    assert "warning" not in evaluation.details.get("gender", {})


def test_the_builtin_regression_kind_gets_no_warning(checkpoint):
    model = hydranet.load(checkpoint)
    report = model.evaluate().details["age"]
    assert "warning" not in report and report["unit"] == "years"


def test_export_says_a_head_outside_the_label_units_is_raw(run, tmp_path, installed):
    installed(components_with("weighting", "dataset", "task"))
    result = export_checkpoint(run, tmp_path / "m.pt2", "exported", check=False)
    by_name = {o["name"]: o for o in result.manifest["outputs"]}
    assert by_name["scaled_age"]["meaning"].startswith("the head's raw output, not in the label's units")
    assert len(result.warnings) == 1 and "output 'scaled_age' is the head's raw output" in result.warnings[0]
    printed = invoke("export", run, "--format", "torchscript", "--out", tmp_path / "m.ts.pt", "--no-check")
    assert "warning: output 'scaled_age'" in printed.stderr and "warning:" not in printed.stdout


def test_decode_disagreement_passes_rounding_and_a_few_clamped_rows():
    from hydranet.core.evaluation import decode_disagreement

    output = torch.tensor([31.234, 42.71, 18.5, 67.02, -1.0])
    assert decode_disagreement(output, output.round()) is None  # whole years
    assert decode_disagreement(output, torch.round(output * 1000) / 1000) is None
    assert decode_disagreement(output, output.clamp_min(0)) is None  # one clamped row
    assert decode_disagreement(output / 100, output) == pytest.approx(float((output - output / 100).abs().median()))
    small = torch.tensor([0.12, 0.5, 0.77])
    assert decode_disagreement(small, small * 100) is not None and decode_disagreement(small, small.round(decimals=2)) is None


# --- 4. --data DIR sets the model's dataset's root -------------------------------------------------

def test_data_root_is_read_by_a_dataset_whose_root_has_a_default(checkpoint, faces, tmp_path):
    components = with_inline_plugin("register_datasets", "first_images", FirstImages, params=FirstParams)
    stored = trained_on(checkpoint, tmp_path / "best.pt", name="first_images", root="elsewhere", first=100)
    model = TrainedModel.from_checkpoint(stored, components=components)
    evaluation = model.evaluate(f"data.root={faces}", split="all", details=False)
    assert evaluation.images == 100  # its first 100, not all 240 read as another dataset (utkface)
    assert evaluation.dataset == "first_images" and evaluation.note == ""
    with pytest.raises(DataError, match=rf"^{tmp_path / 'nowhere'} is not a folder: .*'first_images' dataset$"):
        model.evaluate(f"data.root={tmp_path / 'nowhere'}")


def test_data_root_is_refused_for_a_dataset_without_root_never_read_as_another(checkpoint, faces, tmp_path,
                                                                             installed):
    components = with_inline_plugin("register_datasets", "by_path", folder_path_dataset, params=FolderPathParams,
                                    plugin="path_plugin")
    stored = trained_on(checkpoint, tmp_path / "best.pt", name="by_path", folder_path="elsewhere")
    del_root = torch.load(stored, weights_only=True)
    del del_root["spec"]["data"]["root"]
    torch.save(del_root, stored)
    model = TrainedModel.from_checkpoint(stored, components=components)
    with pytest.raises(DataError) as caught:
        model.evaluate(f"data.root={faces}", split="all")
    message = str(caught.value)
    assert message.startswith("data.root=DIR needs a dataset that reads the folder its `root` parameter names; the "
                              "model's dataset 'by_path' from plugin 'path_plugin' (test 0) has no `root` parameter "
                              "(its parameters: folder_path)")
    assert "evaluate('data.KEY=VALUE')" in message and "evaluate('data={name: folder, root: DIR}')" in message
    assert model.evaluate(f"data.folder_path={faces}", split="all", details=False).images == 240  # the way out
    installed(components)
    result = invoke("eval", stored, "--data", faces, "--device", "cpu", ok=False)
    assert result.exit_code == 1 and "--data DIR (data.root=DIR) needs a dataset" in result.output
    assert "--set data.KEY=VALUE" in result.output and "Traceback" not in result.output


def test_a_dataset_that_draws_its_images_reads_the_folder_as_utkface_and_says_so(checkpoint, faces, tmp_path,
                                                                                 installed):
    components = with_inline_plugin("register_datasets", "drawing", Drawing, params=DrawingParams)
    stored = trained_on(checkpoint, tmp_path / "best.pt", name="drawing", root=None)
    model = TrainedModel.from_checkpoint(stored, components=components)
    before = sorted(faces.iterdir())
    evaluation = model.evaluate(f"data.root={faces}", split="all", details=False)
    assert evaluation.images == 240 and evaluation.dataset == "utkface" and sorted(faces.iterdir()) == before
    assert evaluation.note == ("dataset 'drawing' draws its images instead of reading a folder, so data.root is "
                               "read as a 'utkface' folder (labels in the file names)")
    installed(components)
    result = invoke("eval", stored, "--data", faces, "--split", "all", "--json", "--device", "cpu")
    assert "note: dataset 'drawing' draws its images" in result.stderr
    assert json.loads(result.stdout)["dataset"] == "utkface"


# --- 5. decode must give one row per image ---------------------------------------------------------

def test_a_decode_with_too_few_rows_names_the_task_and_its_plugin(checkpoint, faces, monkeypatch):
    from hydranet.tasks.kinds import BinaryTask

    model = hydranet.load(checkpoint)
    images = sorted(faces.glob("*.jpg"))[:3]
    monkeypatch.setattr(BinaryTask, "decode", lambda self, output: [{"class": "x"}])
    with pytest.raises(HydranetError) as caught:
        model.predict(images)
    assert str(caught.value) == ("the decode of task 'gender' from plugin 'hydranet.tasks.utkface' (built-in) "
                                 "returned 1 row for a batch of 3 images; expected 3. Fix the task's decode: it "
                                 "returns one dict per row of its output, in order.")
    result = invoke("predict", checkpoint, *images, "--device", "cpu", ok=False)
    assert result.exit_code == 1 and "returned 1 row for a batch of 3 images; expected 3" in result.output
    assert "Traceback" not in result.output and "IndexError" not in result.output
    monkeypatch.setattr(BinaryTask, "decode", lambda self, output: ["male"] * output.shape[0])
    with pytest.raises(HydranetError, match=r"returned str 'male' for row 0; expected a dict such as"):
        model.predict(images)


def test_predict_shows_a_class_without_a_probability(checkpoint, faces, monkeypatch):
    from hydranet.tasks.kinds import BinaryTask

    monkeypatch.setattr(BinaryTask, "decode", lambda self, output: [{"class": "x"}] * output.shape[0])
    table = invoke("predict", checkpoint, sorted(faces.glob("*.jpg"))[0], "--device", "cpu").stdout
    header, _, row = table.splitlines()
    assert row[header.index("gender"):].split()[0] == "x"


# --- 3. the task page documents what a plugin author must set --------------------------------------

def test_the_task_page_documents_the_regression_units_the_metric_direction_and_label_problem():
    page = (Path(__file__).resolve().parent.parent / "docs" / "plugins" / "task.md").read_text(encoding="utf-8")
    contract = page[page.index("## The contract"):page.index("## A complete example")]
    for member in ("higher_is_better", "label_problem", "unit", "label's units"):
        assert member in contract, member


# --- 6. a name another plugin also claims: a checkpoint uses the plugin it records ------------------

class ShadowAge(RegressionTask):
    """A third-party task registered as 'age', the built-in's name: its rows say whose they are."""

    def decode(self, output: Tensor) -> list[dict[str, Any]]:
        return [{**row, "by": "shadow"} for row in super().decode(output)]


def shadowed(builtins=BUILTIN_PLUGINS) -> Components:
    """`builtins` plus plugin 'shadow_age', which registers task 'age' too (a conflict beside the built-in)."""
    pm = make_plugin_manager(builtins=builtins, entry_points=False)
    inline(pm, "shadow_age", "hydranet-shadow", "register_tasks", "age", ShadowAge, params=AgeParams)
    return load_components(pm)


@pytest.fixture(scope="module")
def shadow_run(faces, tmp_path_factory) -> Path:
    """best.pt of a run whose task 'age' came from plugin 'shadow_age' (the built-in UTKFace tasks not loaded)."""
    components = shadowed([b for b in BUILTIN_PLUGINS if b != "hydranet.tasks.utkface"])
    raw = {**tiny_spec(faces, epochs=1), "tasks": ["age"]}
    out = tmp_path_factory.mktemp("shadow") / "run"
    hydranet.train(load_spec(raw, components=components), out_dir=out, components=components, progress=False,
                   echo=False)
    return out / "best.pt"


def test_a_checkpoint_uses_the_builtin_it_records_when_a_plugin_also_registers_the_name(checkpoint, faces, tmp_path,
                                                                                       installed):
    components = shadowed()
    assert components.tasks.conflicts() == {"age": ["hydranet.tasks.utkface", "shadow_age"]}
    with pytest.raises(SpecError, match="task 'age' is registered more than once"):
        load_spec(tiny_spec(faces), components=components)  # training from a spec still refuses
    image = sorted(faces.glob("*.jpg"))[0]
    model = TrainedModel.from_checkpoint(checkpoint, components=components)
    assert model.spec.tasks[0].component.entry.plugin == "hydranet.tasks.utkface"
    assert type(model.tasks[0]) is RegressionTask
    assert model.predict(image) == hydranet.load(checkpoint).predict(image)
    assert "by" not in model.predict(image)[0]["age"]
    assert model.evaluate(details=False).result.metrics["age"]["mae"] >= 0
    assert model.evaluate(f"data.root={faces}", split="all", components=components, details=False).images == 240
    installed(components)
    assert hydranet.load(checkpoint).spec.tasks[0].component.entry.plugin == "hydranet.tasks.utkface"
    rows = json.loads(invoke("predict", checkpoint, image, "--json", "--device", "cpu").stdout)
    assert rows[0]["age"]["unit"] == "years" and "by" not in rows[0]["age"]
    assert "age" in json.loads(invoke("eval", checkpoint, "--json", "--device", "cpu").stdout)["metrics"]
    assert export_checkpoint(checkpoint, tmp_path / "m.ts.pt", "torchscript", check=False).path.is_file()


def test_a_checkpoint_trained_with_the_shadowing_plugin_uses_that_plugin(shadow_run, faces):
    model = TrainedModel.from_checkpoint(shadow_run, components=shadowed())
    assert model.spec.tasks[0].component.entry.plugin == "shadow_age" and type(model.tasks[0]) is ShadowAge
    assert model.predict(sorted(faces.glob("*.jpg"))[0])[0]["age"]["by"] == "shadow"
    assert model.evaluate(f"data.root={faces}", split="all", components=shadowed(), details=False).images == 240


def test_a_checkpoint_that_records_another_plugin_or_none_still_gets_the_conflict(checkpoint, tmp_path):
    saved = torch.load(checkpoint, weights_only=True)
    saved["tasks"][0]["plugin"] = "gone_age"
    torch.save(saved, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"task 'age' is registered more than once, by plugin "
                                              r"'hydranet.tasks.utkface' \(built-in\) and plugin 'shadow_age'"):
        TrainedModel.from_checkpoint(tmp_path / "other.pt", components=shadowed())
    backbone = with_inline_plugin("register_backbones", "tiny", lambda: None, plugin="shadow_tiny")
    assert TrainedModel.from_checkpoint(checkpoint, components=backbone).spec.backbone.entry.plugin == \
        "hydranet.plugins.backbones"  # the checkpoint records its backbone's plugin
    saved = torch.load(checkpoint, weights_only=True)
    del saved["components"]  # written before hydranet recorded it
    torch.save(saved, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match=r"backbone 'tiny' is registered more than once"):
        TrainedModel.from_checkpoint(tmp_path / "old.pt", components=backbone)
