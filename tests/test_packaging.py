"""The layout promises of docs/architecture.md: every package installed, imports pointing down, a small public API."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import hydranet

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
SOURCE_FOLDERS = ("hydranet", "core", "plugins", "tasks", "specs")


def import_name(folder: Path) -> str:
    """Map a source folder to its import name through [tool.setuptools.package-dir]."""
    relative = folder.relative_to(ROOT).parts
    for package, directory in sorted(SETUPTOOLS["package-dir"].items(), key=lambda kv: -len(kv[1])):
        prefix = tuple(Path(directory).parts)
        if relative[:len(prefix)] == prefix:
            return ".".join([package, *relative[len(prefix):]])
    raise AssertionError(f"{folder} is not under any package-dir mapping")


def test_every_folder_with_an_init_is_a_listed_package():
    folders = [p.parent for top in SOURCE_FOLDERS for p in (ROOT / top).rglob("__init__.py")]
    assert folders, "no packages found"
    listed = set(SETUPTOOLS["packages"])
    missing = {import_name(folder) for folder in folders} - listed
    assert not missing, f"add these to [tool.setuptools] packages: {sorted(missing)}"
    stale = {name for name in listed if not (ROOT / SETUPTOOLS["package-dir"].get(name, "")).exists()}
    assert not stale


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_never_imports_tasks_or_plugins():
    offenders = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (ROOT / "core").rglob("*.py")
        for name in imported_modules(path)
        if name.startswith(("hydranet.tasks", "hydranet.plugins"))
    }
    assert not offenders


def test_tasks_and_plugins_import_only_core_or_each_other_downwards():
    for top in ("tasks", "plugins"):
        for path in (ROOT / top).rglob("*.py"):
            for name in imported_modules(path):
                assert not name.startswith(("hydranet.core.engine", "hydranet.core.cli")), (
                    f"{path.relative_to(ROOT)} imports {name}: plugins use contracts, not the engine")


def test_public_api_is_one_screen():
    assert set(hydranet.__all__) >= {"hookimpl", "Task", "Weighting", "Backbone", "load_spec", "train", "__version__"}
    assert callable(hydranet.train) and callable(hydranet.load_spec) and callable(hydranet.load)
    assert hydranet.__version__ == PYPROJECT["project"]["version"]
    assert len(hydranet.__all__) <= 24, "the public API grew past one screen; does it all belong in `hydranet`?"


def test_the_errors_users_catch_are_importable_from_hydranet():
    """Every hydranet error a user's page names (troubleshooting.md's `DataError`) is `hydranet.<name>`.

    Plugin authors' pages (docs/plugins, docs/examples) name the errors a
    plugin raises (ComponentError), imported from hydranet.core.errors; the
    public face exports only what callers of train, load and load_spec catch.
    """
    import re

    from hydranet.core import errors

    pages = [p for p in (ROOT / "docs").rglob("*.md") if p.relative_to(ROOT / "docs").parts[0] not in
             ("plugins", "examples")] + [ROOT / "README.md"]
    named = {name for page in pages for name in re.findall(r"\b([A-Z]\w+(?:Error|Interrupted))\b", page.read_text())
             if isinstance(getattr(errors, name, None), type)}
    assert {"DataError", "CheckpointError"} <= named  # the scan finds what troubleshooting.md names
    exported = {name for name in hydranet.__all__ if isinstance(getattr(hydranet, name), type)
                and issubclass(getattr(hydranet, name), BaseException)}
    assert named <= exported, f"named in the docs but not importable from hydranet: {sorted(named - exported)}"
    assert exported >= {"HydranetError", "SpecError", "InputError", "DataError", "CheckpointError", "TrainingError",
                        "TrainingInterrupted"}
    assert all(issubclass(getattr(hydranet, name), errors.HydranetError) for name in exported)


def test_requirements_the_gpu_machine_also_satisfies():
    assert PYPROJECT["project"]["requires-python"] == ">=3.10"
    deps = " ".join(PYPROJECT["project"]["dependencies"])
    assert "torch>=2.4" in deps and "torchvision>=0.19" in deps
