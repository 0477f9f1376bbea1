"""What a plugin's factories return, and how its hooks register, as a plugin author meets them.

Each test is a mistake from a plugin-author walkthrough: a backbone factory that returns None or a module
without `out_features`, a weighting factory that returns None or an nn.Linear (raw tracebacks from deep in
the engine before), a weighting whose `__init__` takes (params, tasks), a plugin with two implementations
of one hook (every command failed, even `hydranet --help`), and advice that pointed the wrong way: resuming
a run whose plugin HYDRANET_PLUGINS leaves out, loading a model whose plugin was defined inline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types

import pytest
import torch
from pydantic import BaseModel
from torch import nn

import hydranet
from conftest import tiny_spec, with_inline_plugin
from hydranet.core.errors import CheckpointError, ComponentError, SpecError
from hydranet.core.plugins import load_components, make_plugin_manager
from hydranet.core.resume import resume_checkpoint, resumed_spec
from hydranet.core.spec import load_spec
from hydranet.core.weighting import WeightedSum

PLUGIN = "plugin 'x' (hydranet-x 0.1)"


def plugin_x(hook: str, *args, **kwargs):
    """The built-ins plus one component of plugin 'x' (hydranet-x 0.1)."""
    return with_inline_plugin(hook, *args, plugin="x", distribution="hydranet-x", version="0.1", **kwargs)


def train(raw: dict, components, out) -> None:
    hydranet.train(load_spec(raw, components=components), out_dir=out, components=components, progress=False,
                   echo=False)


# ---------------------------------------------------------------- 1. what a factory returns is checked


class NoWidth(nn.Module):
    """A backbone that never says its width."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, images):
        return self.net(images)


class TextWidth(NoWidth):
    def __init__(self):
        super().__init__()
        self.out_features = "8"


class PlainModule(NoWidth):
    """Not a hydranet.Backbone, but an nn.Module with an int out_features: all the engine reads of it."""

    def __init__(self):
        super().__init__()
        self.out_features = 8


@pytest.mark.parametrize("factory, returned", [
    (lambda: None, "returned None"),
    (NoWidth, "returned a NoWidth (test_plugin_factories) with no out_features"),
    (TextWidth, "returned a TextWidth (test_plugin_factories) whose out_features is '8' (a str), not a positive int"),
    (lambda: object(), "returned <object object"),
])
def test_a_backbone_factory_that_returns_no_backbone_is_named_with_its_plugin(faces, tmp_path, factory, returned):
    components = plugin_x("register_backbones", "bnone", factory)
    with pytest.raises(ComponentError) as caught:
        train({**tiny_spec(faces, epochs=1), "backbone": "bnone"}, components, tmp_path / "run")
    message = str(caught.value)
    assert message.startswith(f"the factory of backbone 'bnone' from {PLUGIN} {returned}"), message
    assert ("a backbone factory returns a hydranet.Backbone (an nn.Module) that sets self.out_features, the width "
            "of its features (an int), in __init__") in message
    assert "\n" not in message


def test_a_plain_module_with_an_int_out_features_still_trains_as_a_backbone(faces, tmp_path):
    components = plugin_x("register_backbones", "plain", PlainModule)
    train({**tiny_spec(faces, epochs=1), "backbone": "plain"}, components, tmp_path / "run")
    assert (tmp_path / "run" / "best.pt").is_file()


@pytest.mark.parametrize("factory, returned", [
    (lambda tasks: None, "returned None"),
    (lambda tasks: nn.Linear(1, 1), "returned a Linear (torch.nn.modules.linear)"),
])
def test_a_weighting_factory_that_returns_no_weighting_is_a_spec_problem(faces, factory, returned):
    components = plugin_x("register_weightings", "wnone", factory)
    with pytest.raises(SpecError) as caught:
        load_spec({**tiny_spec(faces), "weighting": "wnone"}, components=components)
    assert (f"weighting: the factory of weighting 'wnone' from {PLUGIN} {returned}; a weighting factory returns a "
            f"hydranet.Weighting. Fix its factory") in str(caught.value)


def test_a_task_factory_that_returns_no_task_is_a_spec_problem(faces):
    components = plugin_x("register_tasks", "tnone", lambda name: None)
    with pytest.raises(SpecError) as caught:
        load_spec({**tiny_spec(faces), "tasks": ["age", "tnone"]}, components=components)
    assert (f"the factory of task 'tnone' from {PLUGIN} returned None; a task factory returns a hydranet.Task"
            in str(caught.value))


def test_a_dataset_factory_that_returns_no_dataset_is_named(faces, tmp_path):
    components = plugin_x("register_datasets", "dnone", lambda: [])
    with pytest.raises(ComponentError) as caught:
        train({**tiny_spec(faces, epochs=1), "data": "dnone"}, components, tmp_path / "run")
    assert str(caught.value).startswith(f"the factory of dataset 'dnone' from {PLUGIN} returned [] (a list); a "
                                        "dataset factory returns a hydranet.Dataset")


# ---------------------------------------------------------------- 2. a factory that takes its arguments swapped


class SwappedArguments(WeightedSum):
    def __init__(self, params, tasks):  # hydranet calls factory(tasks, params)
        super().__init__(tasks)


class Power(BaseModel):
    power: float = 1.0


def test_a_weighting_that_takes_params_before_tasks_is_told_how_its_factory_is_called(faces):
    components = plugin_x("register_weightings", "sigw2", SwappedArguments, params=Power)
    with pytest.raises(SpecError) as caught:
        load_spec({**tiny_spec(faces), "weighting": "sigw2"}, components=components)
    message = str(caught.value)
    assert f"building weighting 'sigw2' from {PLUGIN} raised AttributeError" in message
    assert ("hydranet calls the factory as factory(tasks, params): first the list of hydranet.Task objects, then "
            "the validated params; check the order of its arguments") in message
    assert "Raised at" in message


def test_a_backbone_factory_that_raises_gets_no_hint_about_an_order_it_does_not_have(faces, tmp_path):
    def broken():
        return None.width  # an AttributeError, but a backbone's factory takes only its params

    components = plugin_x("register_backbones", "braise", broken)
    with pytest.raises(ComponentError) as caught:
        train({**tiny_spec(faces, epochs=1), "backbone": "braise"}, components, tmp_path / "run")
    assert "raised AttributeError" in str(caught.value) and "calls the factory as" not in str(caught.value)


class BrokenWithParams(WeightedSum):
    def __init__(self, tasks, params):  # the right order, but a bug of its own
        super().__init__(tasks)
        self.scale = params.power * None.real  # AttributeError on NoneType, nothing to do with the order


def test_a_weighting_factory_with_params_in_the_right_order_gets_no_order_hint_for_its_own_bug(faces):
    components = plugin_x("register_weightings", "sigw3", BrokenWithParams, params=Power)
    with pytest.raises(SpecError) as caught:
        load_spec({**tiny_spec(faces), "weighting": "sigw3"}, components=components)
    assert "raised AttributeError" in str(caught.value) and "calls the factory as" not in str(caught.value)


# ---------------------------------------------------------------- 3. two implementations of one hook in a plugin


#: a plugin module's source: register_weightings, and a second implementation of it under another name
TWO_IMPLS = textwrap.dedent("""
    import hydranet
    from hydranet.core.weighting import WeightedSum

    class PyCounter(WeightedSum):
        '''A weighting.'''

    @hydranet.hookimpl
    def register_weightings(register):
        register("pycounterok", PyCounter)

    @hydranet.hookimpl(specname="register_weightings")
    def more_weightings(register):
        register("pycounter2", PyCounter)
""")


def two_impls_module(name: str = "wts") -> types.ModuleType:
    """A plugin module with register_weightings and a second implementation of it under another name."""
    module = types.ModuleType(name)
    exec(TWO_IMPLS, module.__dict__)
    return module


def test_a_plugin_with_two_implementations_of_a_hook_registers_each_name_once():
    pm = make_plugin_manager(entry_points=False)
    pm.add_plugin(two_impls_module(), "wts", distribution="hydranet-bad", version="0.1", builtin=False)
    components = load_components(pm)
    assert pm.problems() == []
    assert {"pycounterok", "pycounter2"} <= set(components.weightings.names())
    assert sorted(pm.info["wts"].components["weightings"]) == ["pycounter2", "pycounterok"]


def test_a_registration_error_leaves_its_plugin_out_instead_of_failing_every_command(monkeypatch):
    """Whatever `register`'s checks in the hook miss, registering is refused for the plugin alone, whole."""
    from hydranet.core.registry import RegistrationError, Registry

    register = Registry.register

    def refuse_pycounter2(self, name, *args, **kwargs):
        if name == "pycounter2":
            raise RegistrationError("refused", kwargs["plugin"], kwargs["distribution"], kwargs["version"])
        return register(self, name, *args, **kwargs)

    monkeypatch.setattr(Registry, "register", refuse_pycounter2)
    pm = make_plugin_manager(entry_points=False)
    pm.add_plugin(two_impls_module(), "wts", distribution="hydranet-bad", version="0.1", builtin=False)
    components = load_components(pm)
    assert pm.load_errors() == ["plugin 'wts' (hydranet-bad 0.1): refused; the plugin is left out: none of its "
                                "components are registered"]
    assert "pycounterok" not in components.weightings and "sum" in components.weightings


def test_the_command_line_lists_and_loads_a_plugin_with_two_implementations_of_a_hook(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "hn_wts.py").write_text(TWO_IMPLS)
    info = site / "hydranet_bad-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hydranet-bad\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[hydranet]\nwts = hn_wts\n")
    code = textwrap.dedent("""
        from click.testing import CliRunner
        from hydranet.core.cli import cli

        runner = CliRunner()
        for args in (["--help"], ["plugins"], ["list", "weightings"]):
            result = runner.invoke(cli, args)
            print(result.exit_code, result.output, repr(result.exception) if result.exit_code else "", "@@")
    """)
    env = {**os.environ, "HYDRANET_PLUGINS": "wts", "PYTHONPATH": os.pathsep.join([str(site),
                                                                                   os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    helped, plugins, listed, _ = done.stdout.split("@@")
    assert helped.startswith("0 Usage: "), helped
    assert plugins.strip().startswith("0 ") and "wts  (hydranet-bad 0.1)" in plugins and "ERROR" not in plugins
    assert "pycounterok" in listed and "pycounter2" in listed


# ---------------------------------------------------------------- 4. advice that names the right way back


class MyCNN(hydranet.Backbone):
    def __init__(self):
        super().__init__()
        self.out_features = 8
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, images):
        return self.net(images)


@pytest.fixture(scope="module")
def ext_run(faces, tmp_path_factory):
    """A finished one-epoch run whose backbone 'mycnn' came from plugin 'ext' (hydranet-ext 0.1)."""
    components = with_inline_plugin("register_backbones", "mycnn", MyCNN, plugin="ext", distribution="hydranet-ext",
                                    version="0.1")
    out = tmp_path_factory.mktemp("ext") / "run"
    train({**tiny_spec(faces, epochs=1), "backbone": "mycnn"}, components, out)
    return out


@pytest.fixture
def ext_installed_but_left_out(tmp_path, monkeypatch):
    """An installed entry point 'ext', which HYDRANET_PLUGINS ('' in the tests) leaves out."""
    info = tmp_path / "site" / "hydranet_ext-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hydranet-ext\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[hydranet]\next = hydranet_ext_missing\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))


ADD_EXT = "is installed, but HYDRANET_PLUGINS leaves it out: add 'ext' to HYDRANET_PLUGINS"


def test_resuming_a_run_whose_plugin_is_left_out_says_so_as_eval_does(ext_run, ext_installed_but_left_out):
    with pytest.raises(CheckpointError) as loading:
        hydranet.load(ext_run / "best.pt")
    assert ADD_EXT in str(loading.value)
    checkpoint, data = resume_checkpoint(ext_run)
    with pytest.raises(CheckpointError) as resuming:
        resumed_spec(checkpoint, data)
    message = str(resuming.value)
    assert message.startswith(f"resuming the run in {ext_run} needs backbone 'mycnn' from plugin 'ext' "
                              "(hydranet-ext), which is not available here."), message
    assert ADD_EXT in message and "unknown backbone" not in message


def test_train_resume_of_a_run_whose_plugin_is_left_out_says_so_as_eval_does(ext_run, ext_installed_but_left_out):
    with pytest.raises(CheckpointError) as caught:
        hydranet.train(resume=ext_run, progress=False, echo=False)
    assert ADD_EXT in str(caught.value)


def test_resuming_with_the_plugin_resolves_the_spec(ext_run):
    components = with_inline_plugin("register_backbones", "mycnn", MyCNN, plugin="ext", distribution="hydranet-ext",
                                    version="0.1")
    checkpoint, data = resume_checkpoint(ext_run)
    assert resumed_spec(checkpoint, data, components).backbone.entry.name == "mycnn"


class ext:  # noqa: N801 -- named as the installed plugin is, as a notebook's plugin may be
    """An inline plugin, as a notebook defines it, under the name of an installed plugin left out here."""

    @hydranet.hookimpl
    def register_backbones(self, register):
        register("mycnn", MyCNN)


def test_a_model_of_an_inline_plugin_is_told_to_pass_components_not_to_edit_hydranet_plugins(
        faces, tmp_path, ext_installed_but_left_out):
    components = hydranet.components(ext())
    train({**tiny_spec(faces, epochs=1), "backbone": "mycnn"}, components, tmp_path / "run")
    assert torch.load(tmp_path / "run" / "best.pt", weights_only=True)["components"]["backbone"]["distribution"] \
        == "<inline>"
    with pytest.raises(CheckpointError) as caught:
        hydranet.load(tmp_path / "run" / "best.pt")
    message = str(caught.value)
    advice = message[message.index("which is not available here. ") + len("which is not available here. "):]
    assert advice.startswith("Pass components= with the plugin that registers backbone 'mycnn' (as at training), as "
                             "in hydranet.load(path, components=hydranet.components(plugin))"), message
    assert "(or, to use the installed plugin of that name, which HYDRANET_PLUGINS leaves out, add 'ext'" in advice
