"""What a plugin author meets when their plugin goes wrong, as a walkthrough found it.

1. An error raised in plugin code names the file, line and function of the plugin's code where it was raised
   (not hydranet's or torch's), and `hydranet --traceback` (or HYDRANET_TRACEBACK=1) prints its whole
   traceback; without it the message ends with a hint to ask for it.
2. `hydranet plugins` exits 1 when a plugin has a problem, so a plugin's CI can run it.
3. A params model without `extra="forbid"` does not drop a misspelt key: it is an unknown field, with a
   did-you-mean, like a built-in's.
4. `hydranet list KIND NAME` shows one component: description, plugin, parameters.
5. A name two plugins register shows as a clash in `hydranet list`, and the advice fits a built-in side.
6. A weighting without `weights()` says which method to write.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict, Field

import hydranet
from conftest import install_as_if_pip, with_inline_plugin
from hydranet.core.cli import cli
from hydranet.core.errors import TRACEBACK_ENV, SpecError, TrainingError
from hydranet.core.interfaces import Weighting
from hydranet.core.plugin_calls import PluginCall, Provenance
from hydranet.core.plugins import load_components, make_plugin_manager
from hydranet.core.spec import load_spec
from hydranet.tasks.kinds import BinaryParams, BinaryTask

HERE = Path(__file__).name
SPEC = {"backbone": "tiny", "tasks": ["age"], "data": {"name": "utkface", "root": "x"}}


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, list(args), env=env)


def oops(hook: str, *args, **kwargs):
    """The built-ins plus one component of plugin 'oops' (hydranet-oops 0.0.1)."""
    return with_inline_plugin(hook, *args, plugin="oops", distribution="hydranet-oops", version="0.0.1", **kwargs)


# ---------------------------------------------------------------- 1. where plugin code raised, and --traceback


def bins_of(params) -> int:
    return {}["bins"]  # the bug: a key that is not there


BINS_LINE = bins_of.__code__.co_firstlineno + 1


class Boom(BinaryTask):
    def __init__(self, name, params):
        self.bins = bins_of(params)  # the factory calls a helper, which raises


def with_boom(use):
    return use(oops("register_tasks", "boom", Boom, params=BinaryParams))


def test_an_error_in_a_factory_names_the_line_of_the_plugins_code_that_raised_it(use):
    components = with_boom(use)
    with pytest.raises(SpecError) as caught:
        load_spec({**SPEC, "tasks": [{"name": "boom", "label": "gender"}]}, components=components)
    message = str(caught.value)
    assert ("building task 'boom' from plugin 'oops' (hydranet-oops 0.0.1) raised KeyError: 'bins'. Fix its "
            f"factory ({__name__}.Boom), or leave it out of the spec. Raised at tests/{HERE}:{BINS_LINE} in "
            "bins_of.") in message


@pytest.fixture
def boom_spec(use, tmp_path) -> Path:
    with_boom(use)
    path = tmp_path / "boom.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "tasks": [{"name": "boom", "label": "gender"}]}))
    return path


HINT = "(raised in plugin code: `hydranet --traceback COMMAND ...` prints the whole traceback)"


@pytest.mark.parametrize("command", [["spec", "validate"], ["spec", "show"]])
def test_the_cli_hints_at_traceback_and_prints_it_when_asked(boom_spec, command):
    plain = invoke(*command, str(boom_spec))
    assert plain.exit_code == 1
    assert "raised KeyError: 'bins'. Fix its factory" in plain.output
    assert f"or leave it out of the spec. Raised at tests/{HERE}:{BINS_LINE} in bins_of." in plain.output
    assert plain.output.rstrip().endswith(HINT) and "Traceback" not in plain.output

    for result in (invoke("--traceback", *command, str(boom_spec)),
                   invoke(*command, str(boom_spec), env={TRACEBACK_ENV: "1"})):
        assert result.exit_code == 1
        out = result.output
        assert "plugin code raised KeyError: 'bins'" in out and "Traceback (most recent call last)" in out
        assert f'{HERE}", line {BINS_LINE}, in bins_of' in out  # the plugin's frame, as Python prints it
        assert HINT not in out
        assert out.rstrip().splitlines()[-1].endswith(f"Raised at tests/{HERE}:{BINS_LINE} in bins_of.")  # last
    assert TRACEBACK_ENV not in os.environ  # the flag is for the one command


def test_an_error_not_raised_in_plugin_code_has_no_hint(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "weighting": "dwaa"}))
    result = invoke("spec", "show", str(path))
    assert result.exit_code == 1 and "did you mean 'dwa'?" in result.output and HINT not in result.output
    assert "--traceback" in invoke("--help").output


OOPS_PYPROJECT = """
[project]
name = "hydranet-oops"
version = "0.0.1"

[project.entry-points.hydranet]
oops = "hydranet_oops.plugin"
"""

OOPS_PLUGIN = """\
import json
import hydranet
SETTINGS = json.loads("{'bins': 3}")   # line 3: not JSON; the error is raised inside the json module


@hydranet.hookimpl
def register_tasks(register):
    pass
"""


@pytest.fixture
def installed_oops(tmp_path, monkeypatch, use):
    package = tmp_path / "hydranet-oops"
    (package / "src" / "hydranet_oops").mkdir(parents=True)
    (package / "pyproject.toml").write_text(OOPS_PYPROJECT)
    (package / "src" / "hydranet_oops" / "__init__.py").write_text("")
    (package / "src" / "hydranet_oops" / "plugin.py").write_text(OOPS_PLUGIN)
    install_as_if_pip(package, tmp_path / "site", monkeypatch)
    yield use(load_components(make_plugin_manager()))
    for name in [m for m in sys.modules if m == "hydranet_oops" or m.startswith("hydranet_oops.")]:
        del sys.modules[name]


def test_a_plugin_that_fails_to_import_names_its_line_and_plugins_exits_1(installed_oops):
    (error,) = installed_oops.pm.load_errors()
    assert re.search(r"failed to import 'hydranet_oops.plugin': JSONDecodeError: .* \(at \S*hydranet_oops/plugin.py:3\)",
                     error), error  # the plugin's line, not the json module's
    shown = invoke("plugins")
    assert shown.exit_code == 1  # a plugin's CI can run `hydranet plugins`
    assert "oops  (hydranet-oops 0.0.1)\n    ERROR: failed to import" in shown.output
    assert "1 plugin problem;" in shown.output and "`hydranet --traceback plugins`" in shown.output
    traced = invoke("--traceback", "plugins")
    assert traced.exit_code == 1
    assert "Traceback (most recent call last)" in traced.output and 'plugin.py", line 3, in <module>' in traced.output


def test_plugins_exits_0_without_problems_and_says_when_it_exits_1():
    assert invoke("plugins").exit_code == 0  # built-ins only (conftest)
    assert "Exits with status 1 when any plugin has a problem" in invoke("plugins", "--help").output


# ---------------------------------------------------------------- 3. misspelt keys of a loose params model


class Loose(BaseModel):  # no extra="forbid": pydantic would drop unknown keys
    power: float = Field(1.0, description="Exponent of the inverse loss.")


class InvLoss(Weighting):
    """Weights each task by its inverse loss."""

    def __init__(self, tasks, params: Loose):
        super().__init__(tasks)
        self.power = params.power


def with_invloss():
    return oops("register_weightings", "invloss", InvLoss, params=Loose)


def test_a_misspelt_key_of_a_loose_params_model_is_an_unknown_field_with_a_did_you_mean(tmp_path, use):
    components = with_invloss()
    with pytest.raises(SpecError) as caught:
        load_spec({**SPEC, "weighting": {"name": "invloss", "powr": 3}}, components=components)
    assert "weighting.powr: unknown field; did you mean 'power'? valid fields: power" in str(caught.value)
    with pytest.raises(SpecError) as caught:  # reported with the model's own problems
        load_spec({**SPEC, "weighting": {"name": "invloss", "powr": 3, "power": "x"}}, components=components)
    assert "weighting.powr: unknown field" in str(caught.value) and "weighting.power: should be a number" in str(
        caught.value)
    assert load_spec({**SPEC, "weighting": {"name": "invloss", "power": 3}},
                     components=components).weighting.params.power == 3
    use(components)
    path = tmp_path / "powr.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "weighting": {"name": "invloss", "powr": 3}}))
    result = invoke("spec", "validate", str(path))
    assert result.exit_code == 1 and "did you mean 'power'?" in result.output and "ok" not in result.output


class Aliased(BaseModel):
    learning_rate: float = Field(0.1, alias="lr")


class Named(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    learning_rate: float = Field(0.1, alias="lr")


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")  # takes any key, on purpose


class Rate(Weighting):
    def __init__(self, tasks, params):
        super().__init__(tasks)
        self.params = params


@pytest.mark.parametrize("model, given, value", [
    (Aliased, {"lr": 0.5}, 0.5),
    (Aliased, {"learning_rate": 0.5}, 0.5),  # as a resolved spec writes it (spec.yaml, a checkpoint)
    (Named, {"lr": 0.5}, 0.5),
    (Named, {"learning_rate": 0.5}, 0.5),
])
def test_params_models_with_aliases_keep_working(model, given, value):
    components = oops("register_weightings", "rate", Rate, params=model)
    resolved = load_spec({**SPEC, "weighting": {"name": "rate", **given}}, components=components)
    assert resolved.weighting.params.learning_rate == value
    assert load_spec(resolved.to_dict(), components=components).weighting.params.learning_rate == value
    with pytest.raises(SpecError, match=r"weighting.learning_rat: unknown field; did you mean 'learning_rate'"):
        load_spec({**SPEC, "weighting": {"name": "rate", "learning_rat": 1}}, components=components)


def test_a_params_model_that_allows_extra_keys_still_gets_them():
    components = oops("register_weightings", "open", Rate, params=Open)
    assert load_spec({**SPEC, "weighting": {"name": "open", "anything": 1}},
                     components=components).weighting.params.model_extra == {"anything": 1}


# ---------------------------------------------------------------- 4. hydranet list KIND NAME


def test_list_kind_name_shows_a_third_party_components_params(use):
    use(with_invloss())
    result = invoke("list", "weightings", "invloss")
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("weighting 'invloss'\n")
    assert "description:  Weights each task by its inverse loss." in out
    assert "plugin:       oops  (hydranet-oops 0.0.1)" in out
    assert f"factory:      {__name__}.InvLoss" in out
    assert "in a spec:    weighting: {name: invloss}" in out
    rows = [line.split(None, 3) for line in out.splitlines()[out.splitlines().index("  parameters:") + 1:]]
    assert rows[0] == ["name", "type", "default", "description"]
    assert rows[2] == ["power", "number", "1.0", "Exponent of the inverse loss."]


def test_list_kind_name_shows_built_ins_and_refuses_unknown_names_with_a_did_you_mean():
    dwa = invoke("list", "weightings", "dwa").output
    assert "plugin:       hydranet.plugins.weighting.dwa  (built-in)" in dwa and "temperature" in dwa
    binary = invoke("list", "tasks", "binary").output
    assert "in a spec:    tasks: [{name: NAME, kind: binary, label: FIELD}]" in binary
    assert re.search(r"label +string +\(required\)", binary)
    unknown = invoke("list", "weightings", "invlos")
    assert unknown.exit_code == 1 and "unknown weighting 'invlos'" in unknown.output
    assert "did you mean 'invloss'?" not in unknown.output  # not installed here
    assert "unknown weighting 'dwaa'; did you mean 'dwa'?" in invoke("list", "weightings", "dwaa").output


# ---------------------------------------------------------------- 5. clashes shown by list, advice that works


class OtherDwa(Weighting):
    """Another plugin's dwa."""


def test_a_clash_shows_in_list_with_both_plugins_and_advice_that_fits_a_built_in(use):
    use(oops("register_weightings", "dwa", OtherDwa))
    out = invoke("list", "weightings").output
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("dwa")]
    assert [row[:2] for row in rows] == [["dwa", "[clash]"], ["dwa", "[clash]"]]
    assert rows[0][-1] == "hydranet.plugins.weighting.dwa" and rows[1][-1] == "oops"
    note = next(line for line in out.splitlines() if line.strip().startswith("[clash] weighting 'dwa'"))
    assert "so no spec can use the name until one of them is left out" in note
    assert ("A built-in plugin cannot be left out, so uninstall plugin 'oops' (pip uninstall hydranet-oops), or "
            "leave it out with HYDRANET_PLUGINS") in note
    assert "leave one out" not in note
    both = invoke("list", "weightings", "dwa").output
    assert both.startswith("weighting 'dwa' [clash]: weighting 'dwa' is registered more than once")
    assert "plugin:       oops  (hydranet-oops 0.0.1)" in both and "Another plugin's dwa." in both


def test_a_task_clash_shows_in_list_tasks(use):
    use(oops("register_tasks", "age", BinaryTask, params=BinaryParams))
    out = invoke("list", "tasks").output
    assert re.search(r"age \[clash\] .* hydranet.tasks.utkface", out)
    assert re.search(r"age \[clash\] .* oops", out)  # a kind (it needs a label), listed among the kinds
    assert "[clash] task 'age' is registered more than once" in out


# ---------------------------------------------------------------- 6. a weighting without weights()


class NoWeights(Weighting):
    def combine(self, losses):
        return losses.sum()


def test_a_weighting_without_weights_says_which_method_to_write(tmp_path):
    components = oops("register_weightings", "noweights", NoWeights)
    raw = {"backbone": {"name": "tiny", "width": 8}, "image_size": 16, "tasks": ["age", "gender"],
           "data": {"name": "synthetic", "root": None, "count": 40, "size": 16, "seed": 0},
           "weighting": "noweights", "train": {"epochs": 1, "batch_size": 16, "device": "cpu"}}
    with pytest.raises(TrainingError) as caught:
        hydranet.train(load_spec(raw, components=components), out_dir=tmp_path / "run", components=components,
                       progress=False, echo=False)
    message = str(caught.value)
    assert ("the weights() of weighting 'noweights' from plugin 'oops' (hydranet-oops 0.0.1) raised "
            "NotImplementedError: NoWeights does not implement weights(): return the (K,) weights") in message
    assert ": ." not in message


def test_an_exception_without_words_is_named_without_an_empty_colon():
    def quiet():
        raise ValueError()

    with pytest.raises(TrainingError) as caught:
        PluginCall("the head of", Provenance("task 't'"), "")(quiet)
    assert re.fullmatch(r"the head of task 't' raised ValueError\. Raised at \S+:\d+ in quiet\.", str(caught.value))


def test_a_hook_that_raises_names_its_line():
    def register_tasks(self, register):
        raise RuntimeError("needs a GPU")

    pm = make_plugin_manager(entry_points=False)
    pm.add_plugin(type("P", (), {"register_tasks": hydranet.hookimpl(register_tasks)})(), "gpu_only",
                  distribution="hydranet-gpu", version="1", builtin=False)
    (error,) = load_components(pm).pm.load_errors()
    line = register_tasks.__code__.co_firstlineno + 1
    assert f"register_tasks raised RuntimeError: needs a GPU (at tests/{HERE}:{line} in register_tasks)" in error


@pytest.mark.parametrize("code", ["0", "'usage: foo'"])
def test_a_plugin_that_calls_sys_exit_at_import_is_a_load_error_not_the_end_of_hydranet(tmp_path, monkeypatch, use,
                                                                                        code):
    package = tmp_path / "hydranet-oops"
    (package / "src" / "hydranet_oops").mkdir(parents=True)
    (package / "pyproject.toml").write_text(OOPS_PYPROJECT)
    (package / "src" / "hydranet_oops" / "__init__.py").write_text("")
    (package / "src" / "hydranet_oops" / "plugin.py").write_text(f"import sys\nsys.exit({code})\n")
    install_as_if_pip(package, tmp_path / "site", monkeypatch)
    try:
        (error,) = use(load_components(make_plugin_manager())).pm.load_errors()
        shown = invoke("plugins")
    finally:
        sys.modules.pop("hydranet_oops.plugin", None)
        sys.modules.pop("hydranet_oops", None)
    assert f"failed to import 'hydranet_oops.plugin': sys.exit({code}), which would end hydranet" in error
    assert shown.exit_code == 1 and "oops  (hydranet-oops 0.0.1)\n    ERROR: failed to import" in shown.output


def test_a_register_hook_that_calls_sys_exit_leaves_its_plugin_out():
    def leave(register):
        sys.exit(3)

    pm = make_plugin_manager(entry_points=False)
    pm.add_plugin(type("Plugin", (), {"register_tasks": hydranet.hookimpl(leave)})(), "oops",
                  distribution="hydranet-oops", version="0.0.1", builtin=False)
    components = load_components(pm)
    (error,) = components.pm.load_errors()
    assert "register_tasks raised sys.exit(3), which would end hydranet" in error
    assert "age" in components.tasks.names()  # the built-ins still load


def test_a_factory_out_of_memory_blames_the_sizes_in_the_spec_not_the_plugins_code():
    from hydranet.core.errors import ComponentError
    from hydranet.core.plugin_calls import PluginCall, Provenance

    def build_huge():
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 720000000000 bytes. Error code 12 (Cannot allocate memory)")

    who = Provenance("backbone 'tiny'", "plugin 'hydranet.plugins.backbones' (built-in)")
    with pytest.raises(ComponentError) as caught:
        PluginCall("building", who, "Fix its factory (build_tiny), or leave it out of the spec", ComponentError)(
            build_huge)
    assert str(caught.value) == (
        "building backbone 'tiny' from plugin 'hydranet.plugins.backbones' (built-in) ran out of memory (it asked "
        "for 670.6 GiB at once). The spec asks for more than this machine has: make the component smaller in its "
        "params (a backbone's width, a head's hidden size) or lower train.batch_size")


def test_a_plugins_own_words_about_memory_are_not_taken_for_the_allocator():
    from hydranet.core.errors import ComponentError
    from hydranet.core.plugin_calls import PluginCall, Provenance

    def build():
        raise RuntimeError("cache out of memory budget: raise cache_mb")

    with pytest.raises(ComponentError, match="raised RuntimeError: cache out of memory budget") as caught:
        PluginCall("building", Provenance("backbone 'mine'"), "Fix its factory", ComponentError)(build)
    assert "The spec asks for more" not in str(caught.value)
