"""The Python API as a notebook uses it: components made from plugin objects, the errors' types and hints,
the results' short reprs, and what `hydranet` exports.

Each test here stands for something a researcher ran into: a model trained
with a notebook's plugin that `hydranet.load` could not load (and told to
`pip install notebook`), `device="gpu"` raising a bare HydranetError,
one comma-joined override string, a 10,000-character SweepResult repr.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import torch

import hydranet
from conftest import tiny_spec
from hydranet import HydranetError, InputError
from hydranet.core.plugins import INLINE, load_components, make_plugin_manager
from hydranet.tasks.kinds import RegressionTask
from hydranet.tasks.utkface import AgeParams


class YearsPlugin:
    """A task plugin defined in the caller's code, as a notebook cell defines it."""

    @hydranet.hookimpl
    def register_tasks(self, register):
        register("years", RegressionTask, params=AgeParams, description="age in years, from a notebook")


def years_spec(faces) -> dict:
    return {**tiny_spec(faces, epochs=1), "tasks": ["years", "gender"]}


@pytest.fixture(scope="module")
def inline_run(faces, tmp_path_factory):
    """best.pt of a one-epoch run whose task comes from `YearsPlugin`, through `hydranet.components`."""
    components = hydranet.components(YearsPlugin())
    out = tmp_path_factory.mktemp("inline") / "run"
    hydranet.train(years_spec(faces), out_dir=out, components=components, progress=False, echo=False)
    return out / "best.pt"


# --- 1, 2: inline components ----------------------------------------------------------------------

def test_a_task_defined_inline_trains_and_loads_with_the_same_components(inline_run, faces):
    model = hydranet.load(inline_run, components=hydranet.components(YearsPlugin()))
    assert isinstance(model, hydranet.TrainedModel)
    assert [task.name for task in model.tasks] == ["years", "gender"]
    image = sorted(faces.glob("*.jpg"))[0]
    assert set(model.predict(image)[0]) == {"years", "gender"}


def test_loading_without_the_inline_plugin_says_to_pass_components_not_to_pip_install(inline_run):
    assert torch.load(inline_run, weights_only=True)["tasks"][0]["distribution"] == INLINE
    with pytest.raises(hydranet.CheckpointError) as caught:
        hydranet.load(inline_run)
    message = str(caught.value)
    assert "task 'years' from plugin 'YearsPlugin', defined in the training code (not installed)" in message
    assert "Pass components= with the plugin that registers task 'years' (as at training)" in message
    assert "pip install" not in message


def test_a_plugin_made_in_main_with_add_plugin_is_recorded_as_inline_whatever_distribution_it_was_given(
        faces, tmp_path):
    """The researcher's way before `hydranet.components`: add_plugin(..., distribution="notebook") from a
    notebook, whose classes live in `__main__`; loading said `pip install notebook` (Jupyter)."""
    plugin = type("NotebookPlugin", (), {"__module__": "__main__",
                                         "register_tasks": YearsPlugin.register_tasks})()
    pm = make_plugin_manager(entry_points=False)
    pm.add_plugin(plugin, "NotebookPlugin", distribution="notebook", version="0", builtin=False)
    components = load_components(pm)
    hydranet.train(years_spec(faces), out_dir=tmp_path / "run", components=components, progress=False, echo=False)
    with pytest.raises(hydranet.CheckpointError) as caught:
        hydranet.load(tmp_path / "run" / "best.pt")
    assert "pip install notebook" not in str(caught.value) and "Pass components=" in str(caught.value)
    assert hydranet.load(tmp_path / "run" / "best.pt", components=components).tasks[0].name == "years"


def test_components_refuses_a_name_taken_twice_and_what_is_no_plugin():
    with pytest.raises(InputError, match=r"^plugin name 'YearsPlugin' is already registered \(by plugin "
                                         r"'YearsPlugin' \(<inline>\)\); give this plugin another name$"):
        hydranet.components(YearsPlugin(), YearsPlugin())
    with pytest.raises(InputError, match=r"plugin name 'hydranet.tasks.kinds' is already registered "
                                         r"\(by plugin 'hydranet.tasks.kinds' \(built-in\)\)"):
        import hydranet.tasks.kinds as kinds

        make_plugin_manager(entry_points=False).add_plugin(kinds, kinds.__name__, distribution="x", version="0",
                                                           builtin=False)
    with pytest.raises(InputError, match=r"plugin 1 is a str 'my_plugin'"):
        hydranet.components("my_plugin")


def test_components_raises_what_a_given_plugin_did_wrong():
    class Broken:
        @hydranet.hookimpl
        def register_tasks(self, register):
            register("years")  # no factory

    with pytest.raises(InputError, match=r"plugin 'Broken' \(<inline>\): register_tasks: register\(\)"):
        hydranet.components(Broken())


def test_load_refuses_components_that_are_not_components(checkpoint):
    with pytest.raises(InputError, match=r"components are what hydranet.components\(...\) returns .*got a list"):
        hydranet.load(checkpoint, components=[YearsPlugin()])


# --- 3: error types and hints -----------------------------------------------------------------------

def test_a_wrong_device_argument_is_an_input_error(checkpoint, monkeypatch):
    with pytest.raises(InputError, match=r"^device: 'gpu' is not a device; an NVIDIA GPU is 'cuda'"):
        hydranet.load(checkpoint, device="gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match=r"^device: cuda was asked for"):
        hydranet.load(checkpoint, device="cuda")
    from hydranet.core.device import pick_device

    with pytest.raises(HydranetError) as caught:  # the spec's key: not an argument
        pick_device("cuda")
    assert type(caught.value) is HydranetError


def test_evaluate_with_a_training_override_is_an_input_error(checkpoint):
    with pytest.raises(InputError, match=r"^override 'train.epochs=3' is not a data.\* key"):
        hydranet.load(checkpoint).evaluate("train.epochs=3")


def test_overrides_joined_by_commas_get_the_hint_to_pass_a_list(faces, tmp_path):
    with pytest.raises(hydranet.SpecError) as caught:
        hydranet.train(tiny_spec(faces), overrides="train.epochs=1,train.lr=0.01", out_dir=tmp_path / "r",
                       progress=False, echo=False)
    assert ("pass several overrides as a list: overrides=['train.epochs=1', 'train.lr=0.01']"
            in str(caught.value))
    from hydranet.core.overrides import origin

    assert origin("--set", "train.epochs=1,train.lr=0.01").endswith(
        "; one --set per override: --set train.epochs=1 --set train.lr=0.01")
    assert origin("overrides", "data.root=a,b") == "overrides 'data.root=a,b'"  # a comma in a value alone


def test_sweep_values_must_be_lists(faces, tmp_path):
    with pytest.raises(InputError, match=r"^values\['train.seed'\] must be a non-empty list of values"):
        hydranet.sweep(tiny_spec(faces), {"train.seed": 0}, out_dir=tmp_path / "s", echo=False)


def test_an_interrupted_sweep_says_to_call_sweep_again(faces, tmp_path, monkeypatch):
    from hydranet.core.engine import Trainer

    def stop_in_seed_one(self) -> bool:  # as if Jupyter's interrupt came during the second run
        if self.cfg.seed == 1:
            self.stop_signal = signal.SIGINT
        return self.stop_signal is not None

    monkeypatch.setattr(Trainer, "_stop_agreed", stop_in_seed_one)
    out = tmp_path / "seeds"
    with pytest.raises(hydranet.TrainingInterrupted) as caught:
        hydranet.sweep(tiny_spec(faces, epochs=1), {"train.seed": [0, 1]}, out_dir=out,
                       components=load_components(make_plugin_manager(entry_points=False)), progress=False,
                       echo=False)
    message = str(caught.value)
    assert message.startswith(f"sweep stopped at run 2/2, its progress saved in {out / 'train.seed=1' / 'last.pt'}")
    assert f"call hydranet.sweep again with the same out_dir ({str(out)!r})" in message
    assert "hydranet.train(resume=...) of this run alone would not train the rest" in message
    assert isinstance(caught.value, Exception) and caught.value.signum == signal.SIGINT


# --- 4: reprs and exports ---------------------------------------------------------------------------

def test_sweep_result_and_evaluation_have_short_reprs(checkpoint, tmp_path):
    from hydranet.core.sweep import Combination, SweepResult

    result = SweepResult(tmp_path / "s", {1: "trained", 2: "skipped", 3: "failed"},
                         failures=[(Combination(3, (("train.seed", "2"),)), "out of memory")],
                         compare_csv=tmp_path / "s" / "compare.csv")
    assert repr(result) == (f"SweepResult({str(tmp_path / 's')!r}, 3 runs: 1 trained, 1 skipped, 1 failed; "
                            "failed: train.seed=2; compared in compare.csv)")
    evaluation = hydranet.load(checkpoint).evaluate()
    shown = repr(evaluation)
    assert shown.startswith("Evaluation(split 'val', 60 images of utkface; age: mae ") and len(shown) < 400
    assert "(baseline " in shown and "ethnicity: " in shown


def test_the_result_types_are_exported_lazily():
    from hydranet.core.compare import Comparison
    from hydranet.core.engine import RunResult
    from hydranet.core.evaluation import EvalResult
    from hydranet.core.inference import Evaluation, TrainedModel
    from hydranet.core.plugins import Components, components
    from hydranet.core.sweep import SweepResult

    for name, value in [("RunResult", RunResult), ("SweepResult", SweepResult), ("TrainedModel", TrainedModel),
                        ("Evaluation", Evaluation), ("EvalResult", EvalResult), ("Comparison", Comparison),
                        ("components", components), ("Components", Components)]:
        assert getattr(hydranet, name) is value and name in dir(hydranet)
    code = "import sys, hydranet; hydranet.__all__; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_load_and_sweep_are_annotated():
    import inspect

    assert inspect.signature(hydranet.load).return_annotation in ("TrainedModel", hydranet.TrainedModel)
    hints = inspect.signature(hydranet.sweep).parameters
    assert "Components" in str(hints["components"].annotation) and str(hints["spec"].annotation).startswith("ResolvedSpec")


# --- 5: the guide's examples run -------------------------------------------------------------------------

def test_the_python_api_guides_examples_run_in_order(tmp_path, monkeypatch):
    """docs/guides/python-api.md says its examples run as they are, in order, in one session."""
    import re
    from pathlib import Path

    guide = (Path(__file__).parent.parent / "docs" / "guides" / "python-api.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", guide, flags=re.S)
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    for block in blocks:
        exec(compile(block, "docs/guides/python-api.md", "exec"), namespace)
    assert namespace["years"].tasks[0].name == "years"
    assert repr(namespace["swept"]).endswith("2 runs: 2 trained; compared in compare.csv)")
