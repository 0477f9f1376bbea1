"""`hydranet new-plugin`: the package it writes installs, finds its entry point, passes its own test and trains.

Each generated package is loaded the way an installed one is: its `src/` goes
on sys.path and a `.dist-info` folder built from what its pyproject.toml
declares goes beside it, which is all importlib.metadata reads (as in
tests/test_example_plugin.py). Its own test then runs in a child pytest with
the same two folders on PYTHONPATH, exactly as a plugin author would run it.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from conftest import install_as_if_pip, tiny_spec
from hydranet.core.cli import cli
from hydranet.core.engine import train
from hydranet.core.plugins import BUILTIN_PLUGINS, load_components, make_plugin_manager
from hydranet.core.spec import load_spec
from hydranet.plugins import scaffold
from hydranet.plugins.scaffold import KIND_HOOKS, KINDS, ScaffoldError, check_name, write_plugin

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
FILES = {"pyproject.toml", "README.md", "spec.yaml", "tests/test_plugin.py"}
#: The hook each kind's generated plugin implements, and the registry it fills: the generated
#: packages exercise these hooks through real entry points.
HOOK_OF_KIND = {"task": "register_tasks", "weighting": "register_weightings", "backbone": "register_backbones",
                "dataset": "register_datasets", "observer": "run_started"}


def new_plugin(*args: str):
    return CliRunner().invoke(cli, ["new-plugin", *args], prog_name="hydranet", catch_exceptions=False)


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def install(package: Path, site: Path, monkeypatch) -> dict:
    """Make `package` importable and discoverable as if pip-installed; return its [project] table."""
    return install_as_if_pip(package, site, monkeypatch)


@pytest.fixture
def forget_generated_modules():
    yield
    for name in [m for m in sys.modules if m.startswith("hydranet_scaf")]:
        del sys.modules[name]


# ---------------------------------------------------------------- the command and its refusals


def test_new_plugin_is_a_builtin_plugin_command():
    assert "hydranet.plugins.scaffold" in BUILTIN_PLUGINS
    pm = make_plugin_manager(entry_points=False)
    assert "hydranet.plugins.scaffold" in [impl.plugin_name for impl in pm.hook.register_commands.get_hookimpls()]
    help_text = new_plugin("-h").output
    assert "Usage: hydranet new-plugin [OPTIONS] NAME" in help_text and "Examples:" in help_text
    assert "task|weighting|backbone|dataset|observer" in help_text


@pytest.mark.parametrize("name", ["", "Smile", "1smile", "smile face", "smile!", "a--b", "a_", "_a", "é",
                                  "x" * 41])
def test_a_bad_name_is_refused_with_the_rule_and_nothing_is_written(tmp_path, name):
    result = new_plugin(name, "--out", str(tmp_path))
    assert result.exit_code == 1
    assert f"'{name}' is not a valid plugin name" in result.output
    assert "lowercase letters and digits" in result.output and "e.g. smile, age-bands" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_name_with_the_hydranet_prefix_gets_the_command_without_it(tmp_path):
    result = new_plugin("hydranet-smile", "--out", str(tmp_path))
    assert result.exit_code == 1 and "(hydranet new-plugin smile)" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_name_a_builtin_component_has_is_refused_for_that_kind_only(tmp_path):
    result = new_plugin("age", "--out", str(tmp_path))  # task 'age' is built in
    assert result.exit_code == 1 and "'age' is hydranet's built-in task" in result.output
    result = new_plugin("dwa", "--kind", "weighting", "--out", str(tmp_path))
    assert result.exit_code == 1 and "'dwa' is hydranet's built-in weighting" in result.output
    assert list(tmp_path.iterdir()) == []
    assert new_plugin("age", "--kind", "backbone", "--out", str(tmp_path)).exit_code == 0  # no backbone 'age'


def test_an_unknown_kind_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["new-plugin", "smile", "--kind", "loss", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "'loss' is not one of 'task', 'weighting', 'backbone', 'dataset', 'observer'" in result.output


@pytest.mark.parametrize("name, module, folder", [
    ("smile", "smile", "hydranet-smile"),
    ("age-bands", "age_bands", "hydranet-age-bands"),
    ("age_bands", "age_bands", "hydranet-age-bands"),
    ("v2", "v2", "hydranet-v2"),
])
def test_names_map_to_one_distribution_module_and_component(tmp_path, name, module, folder):
    assert check_name(name) == module
    target = write_plugin(name, "task", tmp_path)
    assert target == tmp_path / folder
    project = tomllib.loads((target / "pyproject.toml").read_text())["project"]
    assert project["name"] == folder and project["entry-points"]["hydranet"] == {module: f"hydranet_{module}.plugin"}
    assert (target / "src" / f"hydranet_{module}" / "plugin.py").is_file()
    assert f'register("{module}",' in (target / "src" / f"hydranet_{module}" / "plugin.py").read_text()


def test_an_existing_folder_is_never_touched(tmp_path):
    existing = tmp_path / "hydranet-smile"
    existing.mkdir()
    (existing / "mine.txt").write_text("my work")
    result = new_plugin("smile", "--out", str(tmp_path))
    assert result.exit_code == 1
    assert f"{existing} already exists; nothing was written" in result.output
    assert files_under(existing) == {"mine.txt"} and (existing / "mine.txt").read_text() == "my work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hydranet-smile"]
    with pytest.raises(ScaffoldError, match="already exists"):
        write_plugin("smile", "weighting", tmp_path)


def test_a_failed_write_leaves_no_half_package(tmp_path, monkeypatch):
    written = []
    real_write = Path.write_text

    def failing_write(self, *args, **kwargs):
        if written:
            raise OSError(28, "No space left on device")
        written.append(self)
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", failing_write)
    with pytest.raises(OSError, match="No space left"):
        write_plugin("smile", "task", tmp_path)
    assert written and list(tmp_path.iterdir()) == []  # neither the package nor its staging folder


# ---------------------------------------------------------------- each kind: install, own test, use


@pytest.mark.parametrize("kind", KINDS)
def test_generated_package_installs_passes_its_own_test_and_resolves(kind, tmp_path, monkeypatch,
                                                                     forget_generated_modules):
    name = f"scaf-{kind}"
    module = name.replace("-", "_")
    result = new_plugin(name, "--kind", kind, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    package = tmp_path / f"hydranet-{name}"
    assert f"wrote {package}/" in result.output and "pip install -e '.[test]'" in result.output
    assert files_under(package) == FILES | {f"src/hydranet_{module}/__init__.py", f"src/hydranet_{module}/plugin.py"}

    project = install(package, tmp_path / "site", monkeypatch)
    assert project["name"] == f"hydranet-{name}" and project["dependencies"] == ["hydranet"]
    assert project["entry-points"]["hydranet"] == {module: f"hydranet_{module}.plugin"}

    # found through the entry point, with its distribution and version, and nothing else
    pm = make_plugin_manager(allow={module})
    assert pm.load_errors() == []
    info = pm.info[module]
    assert (info.distribution, info.version, info.builtin) == (f"hydranet-{name}", "0.1.0", False)
    registry, hook = KIND_HOOKS[kind]
    assert hook == HOOK_OF_KIND[kind]
    assert [impl.plugin_name for impl in getattr(pm.hook, hook).get_hookimpls()][-1] == module
    components = load_components(pm)
    if kind == "observer":  # no component: `hydranet plugins` lists the hooks it observes runs with
        assert info.components == {"observes": ["run_started", "epoch_finished", "run_finished"]}
    else:
        assert info.components == {registry: [module]}
        assert components.registry(registry).get(module).plugin == module
    assert Path(sys.modules[f"hydranet_{module}.plugin"].__file__).is_relative_to(package / "src")

    # the spec it ships resolves with it
    spec = load_spec(package / "spec.yaml", components=components)
    assert (module in yaml.safe_dump(spec.to_dict())) == (kind != "observer")  # an observer watches any spec

    # its README tells how to install, test and use it
    readme = (package / "README.md").read_text()
    assert f"hydranet-{name}" in readme and "pip install -e '.[test]'" in readme and "spec.yaml" in readme

    # its own test passes, run as its author would, against the "installed" package
    env = {k: v for k, v in os.environ.items() if k != "HYDRANET_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "site"), str(package / "src")])
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=package,
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert " passed" in run.stdout and "failed" not in run.stdout and "error" not in run.stdout.lower()


def test_generated_test_fails_when_the_plugin_is_not_installed(tmp_path):
    """The generated test really checks discovery: without the .dist-info it must not pass."""
    package = write_plugin("scaf-absent", "backbone", tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "HYDRANET_PLUGINS"}
    env["PYTHONPATH"] = str(package / "src")  # importable, but no entry point
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=package,
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "install the package first" in run.stdout


def test_generated_task_trains_and_predicts_through_its_entry_point(tmp_path, faces, monkeypatch,
                                                                    forget_generated_modules):
    from hydranet.core.inference import TrainedModel

    package = write_plugin("scaf-train", "task", tmp_path)
    install(package, tmp_path / "site", monkeypatch)
    components = load_components(make_plugin_manager(allow={"scaf_train"}))
    raw = tiny_spec(faces, epochs=1)
    raw["tasks"] = ["age", {"name": "over30", "kind": "scaf_train", "threshold": 30}]
    out = tmp_path / "run"
    result = train(load_spec(raw, components=components), out_dir=out, components=components, progress=False,
                   echo=False)

    rows = list(csv.DictReader(open(out / "metrics.csv", encoding="utf-8")))
    assert [r["epoch"] for r in rows] == ["1"]
    assert 0.0 <= float(rows[0]["val.over30.accuracy"]) <= 1.0
    assert torch.isfinite(torch.tensor(float(rows[0]["train_loss.over30"])))
    assert "over30" in result.baselines  # trivial_output gave the baseline column
    checkpoint = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    task = next(t for t in checkpoint["tasks"] if t["name"] == "over30")
    assert (task["plugin"], task["distribution"]) == ("scaf_train", "hydranet-scaf-train")
    model = TrainedModel.from_checkpoint(out / "best.pt", components=components)
    prediction = model.predict(next(p for p in faces.iterdir() if p.name.endswith(".jpg")))[0]
    assert prediction["over30"]["class"] in {"yes", "no"} and 0.5 <= prediction["over30"]["probability"] <= 1
    assert model.evaluate(components=components).details["over30"]["classes"] == ["no", "yes"]  # eval's matrix rows


def test_generated_package_builds_a_wheel_with_the_entry_point(tmp_path):
    """pip's own build of the package: the wheel carries the module and the `hydranet` entry point."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed here, so the package cannot be built offline")
    package = write_plugin("scaf-wheel", "weighting", tmp_path)
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "-w", str(tmp_path / "dist"), str(package)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    [wheel] = (tmp_path / "dist").glob("*.whl")
    assert wheel.name.startswith("hydranet_scaf_wheel-0.1.0-")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read("hydranet_scaf_wheel-0.1.0.dist-info/entry_points.txt").decode()
    assert {"hydranet_scaf_wheel/__init__.py", "hydranet_scaf_wheel/plugin.py"} <= names
    assert "[hydranet]\nscaf_wheel = hydranet_scaf_wheel.plugin" in entry_points


def test_templates_fill_every_placeholder():
    for kind in KINDS:
        for path, text in scaffold.plugin_files("smile", kind).items():
            assert "$" not in text, (kind, path)
            if path.endswith(".py"):
                compile(text, path, "exec")  # valid Python
            if path.endswith(".yaml"):
                assert isinstance(yaml.safe_load(text), dict)
            if path.endswith(".toml"):
                tomllib.loads(text)


def test_an_observer_takes_no_name_of_a_loaded_plugin(tmp_path, monkeypatch):
    """Its name is only the plugin's (entry point's): one a loaded plugin has would be skipped as a duplicate."""
    monkeypatch.setattr(scaffold, "taken_names", lambda kind: {"jsonlog"} if kind == "observer" else set())
    result = new_plugin("jsonlog", "--kind", "observer", "--out", str(tmp_path))
    assert result.exit_code == 1
    assert "a plugin named 'jsonlog' is already loaded (see hydranet plugins)" in result.output
    assert list(tmp_path.iterdir()) == []
    assert new_plugin("age", "--kind", "observer", "--out", str(tmp_path)).exit_code == 0  # a task's name is free
    assert "'age'" not in str(scaffold.taken_names("observer"))
