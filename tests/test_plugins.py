"""The plugin system as a plugin author meets it: hooks, provenance, conflicts, broken plugins, the allow-list."""

from __future__ import annotations

import sys
import textwrap
import types
from pathlib import Path

import pytest

import hydranet
from hydranet.core.errors import DuplicateNameError, UnknownNameError, did_you_mean
from hydranet.core.plugins import BUILTIN_PLUGINS, allowed_plugins, load_components, make_plugin_manager
from hydranet.tasks.kinds import BinaryParams, BinaryTask


def fresh_pm():
    return make_plugin_manager(entry_points=False)


class SmilePlugin:
    """An inline plugin, registered the way tests of pytest/llm plugins do it."""

    @hydranet.hookimpl
    def register_tasks(self, register):
        register("smiling", BinaryTask, params=BinaryParams, description="Is the person smiling?")


def test_builtins_register_the_documented_components(components):
    assert {"age", "gender", "ethnicity", "regression", "binary", "multiclass"} <= set(components.tasks.names())
    assert {"sum", "static", "uncertainty", "dwa"} <= set(components.weightings.names())
    assert {"tiny", "resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "efficientnet_b0"} <= set(
        components.backbones.names())
    assert {"utkface", "synthetic", "folder"} <= set(components.datasets.names())
    assert components.pm.load_errors() == []


def test_every_component_knows_the_plugin_that_registered_it(components):
    assert components.tasks.get("age").plugin == "hydranet.tasks.utkface"
    assert components.tasks.get("binary").plugin == "hydranet.tasks.kinds"
    info = components.pm.info["hydranet.tasks.utkface"]
    assert info.builtin and info.version == hydranet.__version__
    assert set(info.components["tasks"]) == {"age", "gender", "ethnicity"}


def test_inline_plugin_adds_a_task():
    pm = fresh_pm()
    pm.add_plugin(SmilePlugin(), "smile", distribution="hydranet-smile", version="0.1", builtin=False)
    components = load_components(pm)
    entry = components.tasks.get("smiling")
    assert entry.plugin == "smile"
    task = entry.factory("smiling", entry.validate_params({"label": "smile"}))
    assert task.parse_label({"smile": "1"}) == 1


def test_duplicate_name_is_an_error_naming_both_plugins():
    class Impostor:
        @hydranet.hookimpl
        def register_tasks(self, register):
            register("age", BinaryTask, params=BinaryParams)

    pm = fresh_pm()
    pm.add_plugin(Impostor(), "impostor", distribution="impostor-dist", version="1.0", builtin=False)
    components = load_components(pm)
    with pytest.raises(DuplicateNameError) as caught:
        components.tasks.get("age")
    assert "'hydranet.tasks.utkface'" in str(caught.value) and "'impostor'" in str(caught.value)
    assert any("also registered by plugin 'hydranet.tasks.utkface' (built-in)" in e for e in pm.problems())
    assert pm.load_errors() == []  # a conflict is no load failure: both plugins loaded
    # the rest of the registry keeps working
    assert components.tasks.get("gender").plugin == "hydranet.tasks.utkface"


def test_unknown_name_suggests_the_closest_and_lists_known(components):
    with pytest.raises(UnknownNameError) as caught:
        components.weightings.get("dwaa")
    message = str(caught.value)
    assert "did you mean 'dwa'?" in message
    assert "uncertainty" in message and "static" in message


def test_did_you_mean_ignores_case_and_suggests_the_real_spelling(components):
    with pytest.raises(UnknownNameError) as caught:
        components.weightings.get("DWA")
    assert "did you mean 'dwa'?" in str(caught.value)
    assert did_you_mean("Unet", ["UNet", "resnet"]) == " did you mean 'UNet'?"
    assert did_you_mean("AGE", ["Age", "age"]) == " did you mean 'Age'?"  # the closest as written
    assert did_you_mean("xyz", ["dwa"]) == ""


def test_plugin_raising_during_registration_is_reported_and_isolated():
    class Broken:
        @hydranet.hookimpl
        def register_weightings(self, register):
            raise RuntimeError("boom")

    pm = fresh_pm()
    pm.add_plugin(Broken(), "broken", distribution="broken-dist", version="0.0.1", builtin=False)
    components = load_components(pm)
    errors = pm.load_errors()
    assert len(errors) == 1
    assert "plugin 'broken' (broken-dist 0.0.1)" in errors[0] and "RuntimeError: boom" in errors[0]
    assert "sum" in components.weightings


def test_misspelled_hook_is_an_error_and_the_plugin_is_left_out():
    class Misspelled:
        @hydranet.hookimpl
        def register_task(self, register):  # missing "s"
            register("x", BinaryTask)

    pm = fresh_pm()
    assert not pm.add_plugin(Misspelled(), "typo", distribution="typo-dist", version="1", builtin=False)
    errors = pm.load_errors()
    assert any("typo" in e and "unknown hook" in e and "register_tasks" in e for e in errors)
    assert "typo" not in dict(pm.list_name_plugin())
    load_components(pm)  # the manager still works


def write_distribution(site: Path, dist: str, module: str, source: str, entry_name: str) -> None:
    """An installed distribution as importlib.metadata sees one: a module plus a .dist-info folder."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[hydranet]\n{entry_name} = {module}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in [m for m in sys.modules if m.startswith("hn_test_")]:
        del sys.modules[name]


GOOD_PLUGIN = """
    import hydranet
    from hydranet.tasks.kinds import BinaryParams, BinaryTask

    @hydranet.hookimpl
    def register_tasks(register):
        register("glasses", BinaryTask, params=BinaryParams)
"""


def test_entry_point_plugins_load_with_their_distribution(site):
    write_distribution(site, "hn-glasses", "hn_test_glasses", GOOD_PLUGIN, "glasses")
    pm = make_plugin_manager(allow=None)
    info = pm.info["glasses"]
    assert (info.distribution, info.version, info.builtin) == ("hn-glasses", "1.2.3", False)
    assert load_components(pm).tasks.get("glasses").plugin == "glasses"


def test_broken_entry_point_is_named_with_its_distribution(site):
    write_distribution(site, "hn-broken", "hn_test_broken", "raise ImportError('needs a GPU driver')", "broken")
    write_distribution(site, "hn-glasses", "hn_test_glasses", GOOD_PLUGIN, "glasses")
    pm = make_plugin_manager(allow=None)
    errors = pm.load_errors()
    assert any(e.startswith("plugin 'broken' (hn-broken 1.2.3)") and "needs a GPU driver" in e for e in errors)
    assert "glasses" in load_components(pm).tasks  # the good plugin still works


def test_allow_list_filters_entry_points(site, monkeypatch):
    write_distribution(site, "hn-glasses", "hn_test_glasses", GOOD_PLUGIN, "glasses")
    monkeypatch.setenv("HYDRANET_PLUGINS", "")
    assert "glasses" not in make_plugin_manager().info  # empty = built-ins only
    monkeypatch.setenv("HYDRANET_PLUGINS", "other, glasses")
    assert "glasses" in make_plugin_manager().info
    monkeypatch.setenv("HYDRANET_PLUGINS", "other")
    pm = make_plugin_manager()
    assert "glasses" not in pm.info
    assert set(BUILTIN_PLUGINS) <= set(pm.info)


def test_an_allow_list_name_no_plugin_has_is_reported(site, monkeypatch):
    write_distribution(site, "hn-glasses", "hn_test_glasses", GOOD_PLUGIN, "glasses")
    monkeypatch.setenv("HYDRANET_PLUGINS", "glases")
    errors = make_plugin_manager().load_errors()
    assert any("HYDRANET_PLUGINS names 'glases', but no installed plugin has that entry point; "
               "did you mean 'glasses'?" in e for e in errors)


def test_an_unknown_name_mentions_a_plugin_that_failed_to_load(site, monkeypatch, tmp_path):
    from hydranet.core.errors import SpecError
    from hydranet.core.spec import load_spec

    write_distribution(site, "hn-broken", "hn_test_broken", "raise ImportError('needs a GPU driver')", "broken")
    components = load_components(make_plugin_manager(allow=None))
    raw = {"tasks": ["age", {"name": "smile", "kind": "broken_smile"}], "data": {"name": "utkface", "root": "x"}}
    with pytest.raises(SpecError) as caught:
        load_spec(raw, components=components)
    message = str(caught.value)
    assert "a plugin failed to load, which may be why a name is unknown: plugin 'broken' (hn-broken 1.2.3)" in message
    assert "needs a GPU driver" in message and "hydranet plugins" in message
    with pytest.raises(SpecError) as caught:  # without a failed plugin, no such hint
        load_spec(raw, components=load_components(make_plugin_manager(entry_points=False)))
    assert "failed to load" not in str(caught.value)


def test_allow_list_parsing():
    assert allowed_plugins({}) is None
    assert allowed_plugins({"HYDRANET_PLUGINS": ""}) == set()
    assert allowed_plugins({"HYDRANET_PLUGINS": " a ,b,, "}) == {"a", "b"}


def test_register_commands_hook_adds_a_click_command():
    import click
    from click.testing import CliRunner

    class Commands:
        @hydranet.hookimpl
        def register_commands(self, cli):
            @cli.command()
            def hello():
                click.echo("hello from a plugin")

    pm = fresh_pm()
    pm.add_plugin(Commands(), "greeter", distribution="g", version="1", builtin=False)
    group = click.Group()
    load_components(pm).add_commands(group)
    assert CliRunner().invoke(group, ["hello"]).output == "hello from a plugin\n"
    assert pm.info["greeter"].components["commands"] == ["hello"]  # what `hydranet plugins` lists


def test_plugins_command_lists_the_commands_a_plugin_adds():
    from click.testing import CliRunner

    from hydranet.core.cli import cli

    output = CliRunner().invoke(cli, ["plugins"]).output
    assert "hydranet.plugins.scaffold  (built-in)\n    commands: new-plugin" in output


def test_a_cli_run_of_plugins_records_each_plugins_commands_once(use):
    """`hydranet plugins` runs each plugin's register_commands once to record its commands (the command line's
    `default_components()` records them, and `hydranet plugins` asked again)."""
    import copy

    import click
    from click.testing import CliRunner

    from hydranet.core.cli import cli

    calls = []

    class Commands:
        @hydranet.hookimpl
        def register_commands(self, cli):
            calls.append(cli)

            @cli.command()
            def hello():
                click.echo("hello")

    pm = fresh_pm()
    pm.add_plugin(Commands(), "greeter", distribution="g", version="1", builtin=False)
    use(load_components(pm))
    group = copy.copy(cli)  # a command line that has not added its plugin commands yet, as in a fresh process
    group.commands, group._plugins_added = dict(cli.commands), False
    output = CliRunner().invoke(group, ["plugins"]).output
    assert "greeter  (g 1)\n    commands: hello" in output
    assert len(calls) == 1, calls


def test_plugin_manager_is_built_fresh_each_time():
    assert fresh_pm() is not fresh_pm()
    module = types.ModuleType("nothing")
    pm = fresh_pm()
    pm.add_plugin(module, "empty", distribution="x", version="1", builtin=False)
    assert "empty" not in dict(fresh_pm().list_name_plugin())


def test_readme_task_plugin_snippet_works():
    """The twenty-line plugin in README.md registers and parses labels as the README says."""
    import re

    from hydranet.core.spec import load_spec

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "register_tasks" in block)
    module = types.ModuleType("readme_plugin")
    exec(compile(snippet, "README.md", "exec"), module.__dict__)
    pm = fresh_pm()
    pm.add_plugin(module, "readme", distribution="readme", version="0", builtin=False)
    components = load_components(pm)
    spec = load_spec({"tasks": [{"name": "age_group", "label": "age",
                                 "class_names": ["child", "teen", "adult", "senior"]}],
                      "data": {"name": "utkface", "root": "x"}, "backbone": "tiny"}, components=components)
    task = spec.build_tasks()[0]
    assert [task.parse_label({"age": a}) for a in ("5", "13", "45", "70", "x")] == [0, 1, 2, 3, None]
    assert task.out_features == 4
    years = load_spec({"tasks": [{"name": "age_group", "label": "years", "class_names": ["c", "t", "a", "s"]}],
                       "data": {"name": "utkface", "root": "x"}, "backbone": "tiny"}, components=components)
    assert years.build_tasks()[0].parse_label({"years": "70", "age": "5"}) == 3  # the field `label` names


def test_a_plugin_task_that_needs_a_label_is_listed_as_a_kind():
    """Kinds and ready tasks share the task registry; a task whose params have no default label is a kind."""
    from hydranet.core.errors import SpecError
    from hydranet.core.spec import load_spec

    pm = fresh_pm()
    pm.add_plugin(SmilePlugin(), "smile", distribution="hydranet-smile", version="0.1", builtin=False)
    components = load_components(pm)
    assert components.tasks.get("smiling").needs_params and components.tasks.get("binary").needs_params
    assert not components.tasks.get("age").needs_params
    with pytest.raises(SpecError) as caught:
        load_spec({"tasks": [{"name": "grin", "kind": "smilng", "label": "smile"}], "data": "synthetic"},
                  components=components)
    message = dict(caught.value.problems)["tasks[0].kind"]
    assert "did you mean 'smiling'?" in message
    assert "known kinds: binary, multiclass, regression, smiling " in message
