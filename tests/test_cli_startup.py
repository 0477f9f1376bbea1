"""`hydranet --help`, `hydranet CMD --help` and the command list import no torch (core/plugin_commands.py).

Each check runs in a fresh interpreter, since this one has imported torch long
ago. Behaviour, not timing: what must stay out of `sys.modules`, and what the
commands still are.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hydranet.core.plugin_commands import COMMAND_PLUGINS
from hydranet.core.plugins import BUILTIN_PLUGINS, make_plugin_manager


def run_python(code: str, site: Path | None = None, **env: str) -> str:
    """Run `code` in a fresh interpreter (HYDRANET_PLUGINS as given, else built-ins only); return its stdout."""
    environ = {**os.environ, "HYDRANET_PLUGINS": "", **env}
    if site is not None:
        environ["PYTHONPATH"] = os.pathsep.join([str(site), environ.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=environ,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_help_of_hydranet_and_of_each_command_imports_no_torch():
    out = run_python("""
        import sys
        from click.testing import CliRunner
        from hydranet.core.cli import cli

        runner = CliRunner()
        listing = runner.invoke(cli, ["--help"], catch_exceptions=False).output
        names = cli.list_commands(None)
        for name in names:
            result = runner.invoke(cli, [name, "--help"], catch_exceptions=False)
            assert result.exit_code == 0 and "Usage: " in result.output, (name, result.output)
        runner.invoke(cli, ["spec", "validate", "--help"], catch_exceptions=False)
        heavy = sorted(m for m in ("torch", "torchvision", "numpy", "PIL") if m in sys.modules)
        print(" ".join(names))
        print("heavy:", heavy)
        print(listing)
    """)
    names, heavy, listing = out.split("\n", 2)
    assert heavy == "heavy: []"
    assert {"train", "list", "plugins", "eval", "predict", "new-plugin", "synth"} <= set(names.split())
    assert "  synth       Draw a UTKFace-style folder of synthetic faces into OUT." in listing


def test_command_plugins_names_every_built_in_plugin_that_adds_commands():
    pm = make_plugin_manager(entry_points=False)
    adding = {impl.plugin_name for impl in pm.hook.register_commands.get_hookimpls()}
    assert set(COMMAND_PLUGINS) == adding
    assert set(COMMAND_PLUGINS) <= set(BUILTIN_PLUGINS)


def test_the_light_built_in_command_plugins_import_no_torch():
    out = run_python(f"""
        import importlib, sys
        for name in {list(COMMAND_PLUGINS)!r}:
            importlib.import_module(name)
        print("torch" in sys.modules)
    """)
    assert out.strip() == "False"


THIRD_PARTY = {
    "hn_start_ok": """
        import click
        import hydranet

        @hydranet.hookimpl
        def register_commands(cli):
            @cli.command("hello")
            def hello():
                '''Say hello from a plugin.'''
                click.echo("hello from a plugin")

            @cli.command("synth")
            def synth():
                '''A third-party synth, in place of the built-in one.'''
                click.echo("third-party synth")
    """,
    "hn_start_left_out": """
        import hydranet

        @hydranet.hookimpl
        def register_tasks(register):
            raise RuntimeError("tasks broke")

        @hydranet.hookimpl
        def register_commands(cli):
            @cli.command("unlisted")
            def unlisted():
                '''Left out with its plugin.'''
    """,
    "hn_start_bad_commands": """
        import hydranet

        @hydranet.hookimpl
        def register_commands(cli):
            raise RuntimeError("commands broke")
    """,
}


@pytest.fixture
def site(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    for module, source in THIRD_PARTY.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / "hn_start-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hn-start\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[hydranet]\n" + "".join(f"{m[9:]} = {m}\n" for m in THIRD_PARTY))
    return site


def test_third_party_commands_are_listed_as_when_every_plugin_loads(site):
    out = run_python("""
        import sys
        from click.testing import CliRunner
        from hydranet.core.cli import cli

        runner = CliRunner()
        print(runner.invoke(cli, ["--help"], catch_exceptions=False).output, end="@@")
        print("torch" in sys.modules, end="@@")
        print(runner.invoke(cli, ["synth"], catch_exceptions=False).output.strip(), end="@@")
        from hydranet.core.plugins import default_components
        print(" | ".join(default_components().pm.load_errors()))
    """, site=site, HYDRANET_PLUGINS="ok,left_out,bad_commands")
    listing, torch_loaded, synth, errors = out.split("@@")
    assert "  hello       Say hello from a plugin." in listing
    assert "  synth       A third-party synth, in place of the built-in one." in listing  # entry points come last
    assert "unlisted" not in listing  # its plugin is left out, as `hydranet plugins` says
    assert torch_loaded == "False"
    assert synth == "third-party synth"
    # the components every command reads record what the plugins' commands did, as `hydranet plugins` shows them
    assert "plugin 'left_out' (hn-start 1.0): register_tasks raised RuntimeError: tasks broke" in errors
    assert "plugin 'bad_commands' (hn-start 1.0): register_commands raised RuntimeError: commands broke" in errors


def test_the_components_every_command_reads_record_each_plugins_commands():
    out = run_python("""
        from hydranet.core.cli import cli
        from hydranet.core.plugins import default_components

        cli.list_commands(None)  # the light listing adds the commands first
        info = default_components().pm.info
        print(info["hydranet.plugins.scaffold"].components.get("commands"),
              info["hydranet.plugins.synth_command"].components.get("commands"))
    """)
    assert out.split() == ["['new-plugin']", "['synth']"]
