"""Plugin authors' mistakes, as they meet them: `register` misuse, partial registration, invisible plugins,
name clashes, and what `hydranet plugins`, `hydranet list` and spec errors then say (no tracebacks)."""

from __future__ import annotations

import dataclasses
import sys
import textwrap
import types
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from pydantic import BaseModel

import hydranet
from conftest import tiny_spec
from hydranet.core.cli import cli
from hydranet.core.errors import DuplicateNameError, SpecError
from hydranet.core.plugins import load_components, make_plugin_manager
from hydranet.core.registry import Registry
from hydranet.core.spec import load_spec
from hydranet.tasks.kinds import BinaryParams, BinaryTask, RegressionParams, RegressionTask

SPEC = {"tasks": ["age"], "data": {"name": "utkface", "root": "x"}, "backbone": "tiny"}


def with_plugin(plugin: object, name: str = "mine", distribution: str = "hydranet-mine"):
    """The built-ins plus `plugin`, loaded as an installed package's entry point would be."""
    pm = make_plugin_manager(entry_points=False)
    pm.add_plugin(plugin, name, distribution=distribution, version="0.1", builtin=False)
    return load_components(pm)


def plugin_with(**hooks) -> object:
    """An inline plugin object whose methods are `hooks`, each marked as a hookimpl."""
    return type("Plugin", (), {name: hydranet.hookimpl(function) for name, function in hooks.items()})()


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


# ------------------------------------------------------------------ 1. register() checks what it is given


@dataclasses.dataclass
class DataclassParams:
    label: str = "age"


class Params(BaseModel):
    label: str = "age"


MISUSES = {
    "params a dataclass": (("dc_params", BinaryTask), {"params": DataclassParams},
                           ["task 'dc_params'", "DataclassParams, a dataclass", "pydantic.BaseModel"]),
    "params an instance": (("inst", BinaryTask), {"params": Params()},
                           ["an instance of Params", "params=Params"]),
    "a name with a space": (("bad name", BinaryTask), {"params": BinaryParams},
                            ["'bad name' is not a valid task name", "lowercase letters"]),
    "an upper-case name": (("Smile", BinaryTask), {"params": BinaryParams}, ["'Smile' is not a valid task name"]),
    "no name": ((None, BinaryTask), {"params": BinaryParams}, ["None is not a valid task name"]),
    "factory None": (("notcallable", None), {}, ["the factory of task 'notcallable' is None",
                                                   "not a class or a function"]),
    "aliases one string": (("grin", BinaryTask), {"params": BinaryParams, "aliases": "smile"},
                           ["aliases of task 'grin' must be a list of names", "aliases=['smile']"]),
    "a bad alias": (("grin", BinaryTask), {"params": BinaryParams, "aliases": ["a b"]},
                    ["alias 'a b' of task 'grin' is not a valid name"]),
    "description not text": (("grin", BinaryTask), {"params": BinaryParams, "description": 3},
                             ["description of task 'grin' must be a string"]),
}


@pytest.mark.parametrize("misuse", list(MISUSES))
def test_register_misuse_leaves_the_plugin_out_with_an_error_naming_it(misuse):
    args, kwargs, said = MISUSES[misuse]

    def register_tasks(self, register):
        register("fine", BinaryTask, params=BinaryParams)
        register(*args, **kwargs)

    components = with_plugin(plugin_with(register_tasks=register_tasks))
    (error,) = components.pm.load_errors()
    assert error.startswith("plugin 'mine' (hydranet-mine 0.1): register_tasks: ")
    assert all(part in error for part in said), error
    assert "the plugin is left out" in error and "Traceback" not in error
    assert components.pm.info["mine"].left_out
    assert "fine" not in components.tasks and args[0] not in components.tasks  # left out whole
    assert {"age", "gender", "binary"} <= set(components.tasks.names())  # the other plugins keep working


def test_registry_register_refuses_a_dataclass_naming_the_plugin():
    from hydranet.core.registry import RegistrationError

    registry = Registry("task", ("name",))
    with pytest.raises(RegistrationError) as caught:
        registry.register("dc", BinaryTask, params=DataclassParams, plugin="shapes", distribution="hydranet-shapes")
    assert str(caught.value).startswith("plugin 'shapes' (hydranet-shapes): params of task 'dc' must be")
    assert "dc" not in registry


def test_a_plugin_registering_a_dataclass_breaks_no_command(use, tmp_path):
    """`hydranet list tasks`, `spec schema` and `spec validate` crashed for everyone with AttributeError."""

    def register_tasks(self, register):
        register("dc_params", BinaryTask, params=DataclassParams)

    use(with_plugin(plugin_with(register_tasks=register_tasks), "reg_misuse", "hydranet-broken"))
    listed = invoke("list", "tasks")
    assert listed.exit_code == 0 and "age" in listed.output and "dc_params" not in listed.output
    assert invoke("spec", "schema").exit_code == 0
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "tasks": ["age", "agee"]}))
    checked = invoke("spec", "validate", str(spec))
    assert checked.exit_code == 1 and "did you mean 'age'?" in checked.output
    assert "plugin 'reg_misuse' (hydranet-broken 0.1): register_tasks: params of task 'dc_params'" in checked.output
    shown = invoke("plugins").output
    assert "reg_misuse  (hydranet-broken 0.1)\n    ERROR: register_tasks: params of task 'dc_params'" in shown
    for result in (listed, checked):
        assert not isinstance(result.exception, AttributeError) and "Traceback" not in result.output


def test_the_component_name_rule_is_new_plugins_rule():
    from hydranet.core import registry
    from hydranet.plugins import scaffold

    assert scaffold.NAME is registry.NAME  # one rule: what new-plugin writes, register() accepts
    for name in ("age", "age_group", "resnet18", "shufflenet_v2_x0_5", "age-bands"):
        Registry("task", ("name",)).check(name, BinaryTask, params=BinaryParams)


def test_the_same_plugin_registering_a_name_twice_is_refused():
    def register_tasks(self, register):
        register("grin", BinaryTask, params=BinaryParams)
        register("grin", BinaryTask, params=BinaryParams)

    components = with_plugin(plugin_with(register_tasks=register_tasks))
    assert "registers task 'grin' twice" in components.pm.load_errors()[0]


# ------------------------------------------------------------------ 2. a plugin registers whole or not at all


def test_a_hook_that_raises_after_registering_leaves_nothing_behind():
    def register_tasks(self, register):
        register("partial_ok", BinaryTask, params=BinaryParams)
        register("partial_second", BinaryTask, params=BinaryParams, descripton="typo kwarg")

    components = with_plugin(plugin_with(register_tasks=register_tasks), "partial", "hydranet-broken")
    assert "partial_ok" not in components.tasks and "partial_second" not in components.tasks
    (error,) = components.pm.load_errors()
    assert ("register_tasks: register() got an unexpected keyword argument 'descripton'; did you mean "
            "'description'?") in error
    assert components.pm.info["partial"].components == {}
    with pytest.raises(SpecError) as caught:
        load_spec({**SPEC, "tasks": ["partial_ok"]}, components=components)
    assert "a plugin failed to load, which may be why a name is unknown: plugin 'partial' (hydranet-broken 0.1)" in str(
        caught.value)


def test_a_failure_in_one_hook_rolls_back_the_plugins_other_hooks():
    def register_tasks(self, register):
        register("smiling", BinaryTask, params=BinaryParams)

    def register_weightings(self, register):
        raise RuntimeError("needs a GPU")

    line = register_weightings.__code__.co_firstlineno + 1

    def register_commands(self, cli):
        @cli.command()
        def hello():
            pass

    components = with_plugin(plugin_with(register_tasks=register_tasks, register_weightings=register_weightings,
                                         register_commands=register_commands))
    assert "smiling" not in components.tasks
    assert components.pm.load_errors() == ["plugin 'mine' (hydranet-mine 0.1): register_weightings raised "
                                           f"RuntimeError: needs a GPU (at tests/test_plugin_loading.py:{line} in "
                                           "register_weightings); the plugin is left out: none of its "
                                           "components are registered"]
    import click

    group = click.Group()
    components.add_commands(group)
    assert "hello" not in group.commands  # a left-out plugin adds no commands either
    assert load_components(components.pm).tasks.get("age")  # loading again: the same, no duplicate reports
    assert len(components.pm.load_errors()) == 1


def test_a_register_commands_hook_that_raises_keeps_none_of_its_commands():
    import click

    def register_commands(self, cli):
        @cli.command()
        def hello():
            pass

        raise RuntimeError("second command broke")

    components = with_plugin(plugin_with(register_commands=register_commands))
    group = click.Group()
    components.add_commands(group)
    assert "hello" not in group.commands
    assert "register_commands raised RuntimeError: second command broke (at " in components.pm.load_errors()[0]
    assert "in register_commands); its commands are left out" in components.pm.load_errors()[0]


@pytest.mark.parametrize("call, said", [
    (lambda register: register("grin", BinaryTask, BinaryParams),
     "register() takes two arguments by position, the name and the factory, but got 3: give the others by "
     "keyword (params=, description=, aliases=)"),
    (lambda register: register("grin"), "register(): missing a required argument: 'factory'"),
    (lambda register: register("grin", BinaryTask, param=BinaryParams), "did you mean 'params'?"),
])
def test_a_wrong_call_of_register_says_how_to_call_it(call, said):
    components = with_plugin(plugin_with(register_tasks=lambda self, register: call(register)))
    (error,) = components.pm.load_errors()
    assert said in error and "register(name, factory, *, params=None, description=None, aliases=())" in error


# ------------------------------------------------------------------ 3. plugins that would load silently wrong


def write_distribution(site: Path, dist: str, module: str, source: str, entry_points: str) -> None:
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("HYDRANET_PLUGINS", raising=False)
    yield site
    for name in [m for m in sys.modules if m.startswith("hn_load_")]:
        del sys.modules[name]


GLASSES = """
    import hydranet
    from hydranet.tasks.kinds import BinaryParams, BinaryTask

    @hydranet.hookimpl
    def register_tasks(register):
        register("glasses", BinaryTask, params=BinaryParams)
"""


@pytest.mark.parametrize("group, table", [("hydranets", "hydranets"), ("hydra_net", "hydra_net"),
                                          ("hydranet.plugins", '"hydranet.plugins"')])
def test_entry_points_in_a_misspelt_group_are_reported(site, monkeypatch, use, group, table):
    write_distribution(site, "hydranet-glasses", "hn_load_glasses", GLASSES, f"[{group}]\nglasses = hn_load_glasses\n")
    write_distribution(site, "other-tool", "hn_load_other", "", "[hydra]\nx = hn_load_other\n[pytest12]\ny = z\n")
    components = use(load_components(make_plugin_manager(allow=None)))
    said = (f"plugin 'glasses' (hydranet-glasses 1.2.3): entry points in group '{group}' of package "
            f"hydranet-glasses are not loaded: the group is 'hydranet'. In its pyproject.toml, rename "
            f"[project.entry-points.{table}] to [project.entry-points.hydranet] and reinstall it")
    assert any(e.startswith(said) for e in components.pm.load_errors()), components.pm.load_errors()
    assert len(components.pm.load_errors()) == 1  # the unrelated 'hydra' group is not reported
    assert "glasses  (hydranet-glasses 1.2.3)\n    ERROR: entry points in group" in invoke("plugins").output
    with pytest.raises(SpecError) as caught:
        load_spec({**SPEC, "tasks": [{"name": "g", "kind": "glasses"}]}, components=components)
    assert ("which may be why a name is unknown: plugin 'glasses' (hydranet-glasses 1.2.3): entry points in group"
            in str(caught.value))
    monkeypatch.setenv("HYDRANET_PLUGINS", "glasses")  # named in the allow-list: the same, not "no such plugin"
    errors = make_plugin_manager().load_errors()
    assert len(errors) == 1 and errors[0].startswith(said)
    monkeypatch.setenv("HYDRANET_PLUGINS", "")  # built-ins only: not reported
    assert make_plugin_manager().load_errors() == []


UNMARKED = """
    import hydranet
    from hydranet.tasks.kinds import BinaryParams, BinaryTask

    def register_tasks(register):   # forgot @hydranet.hookimpl
        register("no_marker", BinaryTask, params=BinaryParams)
"""


def test_hook_functions_without_the_marker_are_warned_about(site, use):
    write_distribution(site, "hydranet-broken", "hn_load_unmarked", UNMARKED, "[hydranet]\nno_marker = hn_load_unmarked\n")
    components = use(load_components(make_plugin_manager(allow=None)))
    said = ("registers nothing: register_tasks is named like a hook but has no @hydranet.hookimpl marker, so "
            "hydranet never calls it: put @hydranet.hookimpl on the line above def register_tasks")
    assert components.pm.load_errors() == [f"plugin 'no_marker' (hydranet-broken 1.2.3): {said}"]
    assert f"no_marker  (hydranet-broken 1.2.3)\n    WARNING: {said}" in invoke("plugins").output
    with pytest.raises(SpecError) as caught:
        load_spec({**SPEC, "tasks": ["no_marker"]}, components=components)
    assert (f"which may be why a name is unknown: plugin 'no_marker' (hydranet-broken 1.2.3): {said}"
            in str(caught.value))


def test_an_unmarked_misspelt_hook_and_one_unmarked_hook_beside_marked_ones():
    module = types.ModuleType("hn_load_module")
    module.register_task = lambda register: None
    components = with_plugin(module)
    assert components.pm.load_errors() == [
        "plugin 'mine' (hydranet-mine 0.1): registers nothing: register_task looks like the hook register_tasks but is "
        "neither marked nor named like it, so hydranet never calls it: rename it to register_tasks and put "
        "@hydranet.hookimpl above it"]

    module = types.ModuleType("hn_load_module")
    module.register_tasks = hydranet.hookimpl(lambda register: register("grin", BinaryTask, params=BinaryParams))
    module.register_weightings = lambda register: None
    module.register_task_kinds = lambda: None  # a helper of a similar name, in a plugin that has hooks: fine
    components = with_plugin(module)
    assert "grin" in components.tasks
    assert components.pm.load_errors() == [
        "plugin 'mine' (hydranet-mine 0.1): register_weightings is named like a hook but has no @hydranet.hookimpl "
        "marker, so hydranet never calls it: put @hydranet.hookimpl on the line above def register_weightings"]


def test_a_misspelt_hook_gets_a_did_you_mean():
    pm = make_plugin_manager(entry_points=False)
    assert not pm.add_plugin(plugin_with(register_task=lambda self, register: None), "typo", distribution="t",
                             version="1", builtin=False)
    (error,) = pm.load_errors()
    assert "implements an unknown hook 'register_task'; did you mean 'register_tasks'?" in error


def test_a_hook_named_through_specname_is_called():
    # pluggy lets a function implement a hook under another name: @hookimpl(specname="register_tasks")
    def add_grin(register):
        register("grin", BinaryTask, params=BinaryParams)

    module = types.ModuleType("hn_specname")
    module.add_my_tasks = hydranet.hookimpl(specname="register_tasks")(add_grin)
    pm = make_plugin_manager(entry_points=False)
    assert pm.add_plugin(module, "aliased", distribution="t", version="1", builtin=False)
    assert pm.load_errors() == []
    assert "grin" in load_components(pm).tasks


def test_a_hook_with_a_wrong_argument_name_says_which_name_to_use():
    pm = make_plugin_manager(entry_points=False)
    assert not pm.add_plugin(plugin_with(register_tasks=lambda self, registry: None), "wrong_arg",
                             distribution="t", version="1", builtin=False)
    (error,) = pm.load_errors()
    assert "its hook register_tasks(registry) takes 'registry', which hydranet does not pass" in error
    assert "write def register_tasks(register)" in error and "\n" not in error


def test_the_unknown_name_hint_names_the_plugin_that_failed_not_a_name_conflict():
    pm = make_plugin_manager(entry_points=False)
    pm.add_plugin(plugin_with(register_tasks=lambda self, register: register("age", BinaryTask, params=BinaryParams)),
                  "shadow_age", distribution="hydranet-broken", version="1", builtin=False)
    pm.add_plugin(plugin_with(register_tasks=lambda self, register: 1 / 0), "hook_raises",
                  distribution="hydranet-broken", version="1", builtin=False)
    components = load_components(pm)
    with pytest.raises(SpecError) as caught:
        load_spec({**SPEC, "tasks": ["gender", "unheard_of"]}, components=components)
    message = str(caught.value)
    assert ("a plugin failed to load, which may be why a name is unknown: plugin 'hook_raises' (hydranet-broken 1): "
            "register_tasks raised ZeroDivisionError") in message
    assert "also registered" not in message

    pm = make_plugin_manager(entry_points=False)  # a conflict alone: no plugin failed to load, no such hint
    pm.add_plugin(plugin_with(register_tasks=lambda self, register: register("age", BinaryTask, params=BinaryParams)),
                  "shadow_age", distribution="hydranet-broken", version="1", builtin=False)
    with pytest.raises(SpecError) as caught:
        load_spec({**SPEC, "tasks": ["gender", "unheard_of"]}, components=load_components(pm))
    assert "failed to load" not in str(caught.value)


# ------------------------------------------------------------------ 4. name clashes name the packages


def test_a_name_clash_names_the_distribution_to_uninstall(use, tmp_path):
    components = use(with_plugin(plugin_with(register_tasks=lambda self, register: register(
        "age", BinaryTask, params=BinaryParams)), "shadow_age", "hydranet-broken"))
    with pytest.raises(DuplicateNameError) as caught:
        components.tasks.get("age")
    # HYDRANET_PLUGINS lists entry points: it cannot leave the built-in out, so the advice is about the other
    assert str(caught.value) == (
        "task 'age' is registered more than once, by plugin 'hydranet.tasks.utkface' (built-in) and "
        "plugin 'shadow_age' (hydranet-broken 0.1), so no spec can use the name until one of them is left out. "
        "A built-in plugin cannot be left out, so uninstall plugin 'shadow_age' (pip uninstall hydranet-broken), "
        "or leave it out with HYDRANET_PLUGINS (the entry points to load, comma-separated, without "
        "'shadow_age'); or have it register the task under another name.")
    shown = invoke("plugins").output
    assert ("shadow_age  (hydranet-broken 0.1)\n    tasks: age\n    ERROR: task 'age' is also registered by "
            "plugin 'hydranet.tasks.utkface' (built-in), so a spec cannot use it. A built-in plugin cannot be left "
            "out, so uninstall plugin 'shadow_age' (pip uninstall hydranet-broken)") in shown
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    assert "plugin 'shadow_age' (hydranet-broken 0.1)" in invoke("spec", "validate", str(spec)).output


def test_a_clash_between_two_packages_names_both():
    pm = make_plugin_manager(entry_points=False)
    for name in ("dup_a", "dup_b"):
        pm.add_plugin(plugin_with(register_tasks=lambda self, register: register("dupe", BinaryTask,
                                                                                 params=BinaryParams)),
                      name, distribution=f"hydranet-{name.replace('_', '-')}", version="1", builtin=False)
    with pytest.raises(DuplicateNameError) as caught:
        load_components(pm).tasks.get("dupe")
    assert ("plugin 'dup_a' (hydranet-dup-a 1) and plugin 'dup_b' (hydranet-dup-b 1), so no spec can use the name "
            "until one of them is left out. Uninstall the package of one of them (pip uninstall hydranet-dup-a or "
            "hydranet-dup-b), or leave one out with HYDRANET_PLUGINS") in str(caught.value)


# ------------------------------------------------------------------ 5. train --device


def test_train_takes_device_as_eval_and_predict_do(faces, tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(faces, epochs=1, device="auto")))
    assert "--device" in invoke("train", "--help").output
    out = tmp_path / "run"
    result = invoke("train", str(spec), "--device", "cpu", "--out", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((out / "spec.yaml").read_text())["train"]["device"] == "cpu"

    refused = invoke("train", str(spec), "--device", "gpu")
    assert refused.exit_code == 1 and "Error: --device: 'gpu' is not a device; an NVIDIA GPU is 'cuda'" in (
        refused.output)
    both = invoke("train", str(spec), "--device", "cpu", "--set", "train.device=cpu")
    assert both.exit_code == 2 and "give one of the two, not both" in both.output
    resumed = invoke("train", "--resume", str(out), "--device", "cpu")
    assert resumed.exit_code == 2 and "give no --device with it" in resumed.output


def test_eval_predict_and_train_word_device_alike():
    helps = {command: invoke(command, "--help").output for command in ("eval", "predict", "train")}
    assert "Device to evaluate on." in helps["eval"] and "Device to predict on." in helps["predict"]
    assert "Device to train on." in " ".join(helps["train"].split())


# ------------------------------------------------------------------ 6. how a factory is called


def test_a_factory_is_called_without_params_when_registered_without_them():
    calls = []

    class Plain(RegressionTask):
        def __init__(self, *args):
            calls.append(args)
            super().__init__(args[0], RegressionParams(label="age"))

    components = with_plugin(plugin_with(register_tasks=lambda self, register: register("plain", Plain)))
    load_spec({**SPEC, "tasks": ["plain"]}, components=components).build_tasks()
    assert calls and all(args == ("plain",) for args in calls)
    page = (Path(__file__).resolve().parent.parent / "docs" / "plugins" / "index.md").read_text()
    for said in ("`factory(name, params)`, or `factory(name)` if registered without `params=`",
                 "`factory(tasks, params)`, or `factory(tasks)` without `params=`",
                 "`factory(params)`, or `factory()` without `params=`"):
        assert said in page


@pytest.mark.parametrize("hook, args, kwargs, said", [
    ("register_tasks", ("needs", BinaryTask), {},
     "task 'needs' was registered without params=, so hydranet calls its factory as factory(name), but "
     "BinaryTask(name: 'str', params: 'BinaryParams') needs a params argument: pass params=YourModel"),
    ("register_weightings", ("ramp", lambda tasks, params: None), {},
     "weighting 'ramp' was registered without params=, so hydranet calls its factory as factory(tasks)"),
    ("register_backbones", ("net", lambda: None), {"params": Params},
     "backbone 'net' was registered with params=, so hydranet calls its factory as factory(params), but "
     "<lambda>() takes no params argument: accept one, or leave params= out"),
    ("register_datasets", ("rows", lambda a, b, c: None), {},
     "hydranet calls the factory of dataset 'rows' as factory(), which <lambda>(a, b, c) does not accept"),
])
def test_a_factory_that_cannot_take_hydranets_call_is_reported_when_the_plugin_loads(hook, args, kwargs, said):
    components = with_plugin(plugin_with(**{hook: lambda self, register: register(*args, **kwargs)}))
    (error,) = components.pm.load_errors()
    assert error.startswith(f"plugin 'mine' (hydranet-mine 0.1): {hook}: ") and said in error, error
