"""The command line as a user drives it: train, list, plugins, spec (eval, predict, export: test_cli_model.py;
compare: test_compare.py)."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import tiny_spec
from hydranet.core.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, ok: bool = True):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def trained(faces, tmp_path_factory):
    """One CLI training run."""
    folder = tmp_path_factory.mktemp("cli")
    spec_file = folder / "tiny.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec(faces)))
    out = folder / "run"
    result = run("train", str(spec_file), "--out", str(out), "--set", "train.epochs=2", "--no-progress")
    return out, result.output


def test_train_writes_a_complete_run_folder(trained):
    out, output = trained
    for name in ("spec.yaml", "metrics.csv", "train.log", "summary.json", "last.pt", "best.pt"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for task in ("age", "gender", "ethnicity"):
        assert f"weight.{task}" in rows[0] and f"val_loss.{task}" in rows[0]
    assert {"val.age.mae", "val.gender.accuracy", "val.ethnicity.accuracy", "val.ethnicity.macro_f1"} <= set(rows[0])
    # the per-task table at the end, with the baseline column
    assert "beats baseline" in output and "ethnicity  macro_f1" in output
    resolved = yaml.safe_load((out / "spec.yaml").read_text())
    assert resolved["train"]["epochs"] == 2 and resolved["weighting"] == {"name": "sum"}


def test_a_batch_larger_than_the_training_set_is_cut_and_said_so(faces, tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_spec(faces, epochs=1)))
    result = run("train", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "run"),
                 "--set", "train.batch_size=1000", "--no-progress")
    said = re.search(r"train.batch_size = 1000 is more than the (\d+) training images: using (\d+) "
                     r"\(one step per epoch\)", result.output)
    assert said and said[1] == said[2], result.output
    assert said[0] in (tmp_path / "run" / "train.log").read_text()


def test_utkface_spec_trains_on_a_synth_folder(tmp_path):
    data = tmp_path / "faces"
    assert "wrote" in run("synth", str(data), "--count", "120", "--size", "32").output.lower()
    out = tmp_path / "run"
    result = run("train", str(ROOT / "specs" / "utkface.yaml"), "--set", f"data.root={data}", "--out", str(out),
                 "--set", "image_size=32", "--set", "train.epochs=1", "--set", "train.batch_size=32",
                 "--set", "train.device=cpu", "--no-progress")
    assert "ethnicity" in result.output
    row = next(csv.DictReader(open(out / "metrics.csv")))
    assert all(float(row[f"train_loss.{t}"]) > 0 for t in ("age", "gender", "ethnicity"))


def test_list_and_plugins():
    listing = run("list").output
    for name in ("tasks:", "age", "binary", "backbones:", "resnet18", "tiny", "weightings:", "dwa",
                 "uncertainty", "datasets:", "utkface", "synthetic", "folder"):
        assert name in listing
    only = run("list", "weightings").output
    assert "dwa" in only and "resnet18" not in only
    plugins = run("plugins").output
    assert "hydranet.tasks.utkface  (built-in)" in plugins and "tasks: age, gender, ethnicity" in plugins


def test_list_shows_the_observers_hydranet_plugins_shows(monkeypatch):
    """An observer registers no component: `hydranet list` has a section of its own for the plugins that observe."""
    import types

    import hydranet
    from hydranet.core import plugins

    watcher = types.ModuleType("watcher")
    watcher.run_finished = hydranet.hookimpl(lambda run, status: None)
    pm = plugins.make_plugin_manager(entry_points=False)
    pm.add_plugin(watcher, "watcher", distribution="hydranet-watcher", version="0.2", builtin=False)
    monkeypatch.setattr(plugins, "default_components", lambda: plugins.load_components(pm))
    lines = run("list").output.splitlines()
    at = lines.index("observers: installed plugins that watch every run (no spec names them)")
    assert lines[at + 1].split() == ["plugin", "observes", "from"]
    assert lines[at + 3].split() == ["watcher", "run_finished", "hydranet-watcher", "0.2"]
    assert run("list", "observers").output.splitlines()[3].split()[:2] == ["watcher", "run_finished"]
    monkeypatch.setattr(plugins, "default_components",
                        lambda: plugins.load_components(plugins.make_plugin_manager(entry_points=False)))
    assert "none loaded (`hydranet new-plugin NAME --kind observer` writes one)" in run("list", "observers").output


def test_list_tasks_tells_task_kinds_from_ready_tasks():
    lines = run("list", "tasks").output.splitlines()
    ready = lines.index("  ready tasks: name one in a spec, as in `tasks: [age]`")
    kinds = lines.index("  task kinds: need parameters; make a task from a record field, as in "
                        "`{name: NAME, kind: binary, label: FIELD}`")
    assert ready < kinds

    def names(block: list[str]) -> list[str]:
        return [line.split()[0] for line in block if line.startswith("    ") and not line.strip().startswith("-")]

    assert names(lines[ready + 1:kinds]) == ["name", "age", "ethnicity", "gender"]
    kind_rows = [line.split()[:2] for line in lines[kinds + 1:] if line.startswith("    ")]
    assert kind_rows[0] == ["name", "needs"]
    assert kind_rows[2:] == [["binary", "label"], ["multiclass", "label"], ["regression", "label"]]
    assert "  a ready task serves as a kind too, with its presets: `{name: NAME, kind: age, label: FIELD}`" in lines


def test_spec_commands(tmp_path):
    assert "backbone:" in run("spec", "show", "demo", "--set", "weighting=dwa").output
    assert "temperature: 2.0" in run("spec", "show", "demo", "--set", "weighting=dwa").output
    schema = json.loads(run("spec", "schema").output)
    assert "tasks" in schema["properties"]
    assert run("spec", "validate", str(ROOT / "specs" / "demo.yaml")).output.strip().endswith("ok")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"tasks": ["agee"], "data": {"name": "utkface", "root": "x"}, "train": {"epoch": 1}}))
    result = run("spec", "validate", str(bad), ok=False)
    assert result.exit_code == 1
    assert "tasks[0].name: unknown task 'agee'; did you mean 'age'?" in result.output
    assert "train.epoch: unknown field; did you mean 'epochs'?" in result.output


def test_user_errors_are_messages_not_tracebacks(tmp_path):
    result = run("train", str(tmp_path / "missing.yaml"), ok=False)
    assert result.exit_code == 1 and "spec file not found" in result.output and "Traceback" not in result.output
    result = run("eval", str(tmp_path / "nope.pt"), ok=False)
    assert result.exit_code == 1 and "checkpoint not found" in result.output
    (tmp_path / "fake.pt").write_bytes(b"garbage")
    result = run("predict", str(tmp_path / "fake.pt"), str(tmp_path), ok=False)
    assert result.exit_code == 1 and "cannot read checkpoint" in result.output and "fake.pt" in result.output


def test_version_and_help():
    import hydranet

    assert hydranet.__version__ in run("--version").output
    for command in ("train", "eval", "predict", "list", "plugins", "spec", "synth"):
        assert "Usage:" in run(command, "-h").output


def test_tables_line_up_without_trailing_spaces():
    from hydranet.core.report import format_table

    table = format_table(["task", "beats baseline"], [["age", "yes"], ["ethnicity", "no"]])
    assert table.splitlines() == ["task       beats baseline", "---------  --------------",
                                  "age        yes", "ethnicity  no"]


#: Starts hydranet the way `python -m hydranet` ({entry} = run_module) or the console script ({entry} = script)
#: does, with Ctrl-C arriving while torch is still importing (its first second or two).
CTRL_C_WHILE_IMPORTING = """
import runpy, sys

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise KeyboardInterrupt

sys.meta_path.insert(0, CtrlC())
sys.argv = ["hydranet", "list", "tasks"]  # loads the plugins, and so torch (--version does not)
if "{entry}" == "run_module":
    runpy.run_module("hydranet", run_name="__main__", alter_sys=True)
else:  # what pip's console script for `hydranet` does
    from importlib.metadata import entry_points
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "hydranet"]
    sys.exit(script.load()())
"""


@pytest.mark.parametrize("entry", ["run_module", "script"])
def test_ctrl_c_while_hydranet_starts_exits_130_without_a_traceback(entry):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", CTRL_C_WHILE_IMPORTING.format(entry=entry)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 130, result.stderr
    assert result.stderr == "\nstopped by Ctrl-C\n"


def test_the_readme_s_spec_validate_example_is_what_validate_prints(tmp_path, monkeypatch):
    """The README's example output, with its typos put into its example spec; '...' ends a line it shortens."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### A task declared in a spec, no code"):]
    spec = section[section.index("```yaml\n") + 8:section.index("```", section.index("```yaml\n") + 8)]
    shown = section[section.index("$ hydranet spec validate my.yaml\n"):].split("\n```")[0].splitlines()[1:]
    assert "(`dwaa` for `dwa`, `class_name` for `class_names`)" in section
    typos = spec.replace("name: dwa,", "name: dwaa,").replace("class_names:", "class_name:")
    assert typos.count("dwaa") == 1 and typos.count("class_name:") == 1
    monkeypatch.chdir(tmp_path)
    Path("my.yaml").write_text(typos)
    printed = run("spec", "validate", "my.yaml", ok=False).output.splitlines()
    assert len(printed) == len(shown), printed
    for want, got in zip(shown, printed):
        assert got.startswith(want[:-3]) if want.endswith("...") else got == want, (want, got)


def test_the_suite_ignores_plugins_installed_in_the_environment(tmp_path):
    """After the tutorial's `pip install -e hydranet-senior`, `pytest` failed: `hydranet list tasks` showed task
    'senior' too. conftest allows the built-in plugins only (HYDRANET_PLUGINS=''), whatever is installed."""
    site = tmp_path / "site"
    info = site / "hydranet_senior-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hydranet-senior\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[hydranet]\nsenior = hn_installed_senior\n")
    (site / "hn_installed_senior.py").write_text(
        "import hydranet\nfrom hydranet.tasks.kinds import BinaryParams, BinaryTask\n\n\n@hydranet.hookimpl\n"
        "def register_tasks(register):\n    register('senior', BinaryTask, params=BinaryParams)\n")
    env = {k: v for k, v in os.environ.items() if k != "HYDRANET_PLUGINS"}  # a user's shell: not set
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    assert "senior" in subprocess.run([sys.executable, "-m", "hydranet", "list", "tasks"], env=env,
                                      capture_output=True, text=True, timeout=120).stdout  # it is installed
    test = "tests/test_cli.py::test_list_tasks_tells_task_kinds_from_ready_tasks"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_command_line_imports_without_torch():
    # torch takes seconds to import; `hydranet --version` and, once plugins load lazily, help need none of it
    import subprocess
    import sys

    code = "import sys, hydranet.core.cli; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_the_command_list_fits_an_80_column_terminal_without_cutting_a_summary():
    # click cuts a command's first docstring sentence to fit, ending it with "..."; each command gives its own
    # short summary instead
    result = CliRunner().invoke(cli, ["--help"], terminal_width=80)
    commands = result.output.split("Commands:\n", 1)[1].splitlines()
    assert len(commands) >= 12 and not [line for line in commands if line.rstrip().endswith("...")], result.output
