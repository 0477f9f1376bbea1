"""Shared fixtures: an isolated cache folder, fresh plugin components, a tiny synthetic UTKFace folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


_OWN_CACHE: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    # Never touch the user's ~/.cache during tests; every test session gets its own.
    global _OWN_CACHE
    if "HYDRANET_CACHE" not in os.environ:
        import tempfile

        _OWN_CACHE = tempfile.mkdtemp(prefix="hydranet-test-cache-")
        os.environ["HYDRANET_CACHE"] = _OWN_CACHE
    # Built-in plugins only: the tests expect hydranet's own tasks, backbones and weightings, not those of
    # plugins installed in the environment (the tutorial's pip install adds task 'senior'). Subprocesses
    # (`hydranet ...`, torchrun) inherit it. Tests that install a plugin (install_as_if_pip) allow it by name,
    # and those that test the variable itself set or delete it with monkeypatch.
    os.environ["HYDRANET_PLUGINS"] = ""


def pytest_unconfigure(config: pytest.Config) -> None:
    # The session's own cache folder goes with it, so repeated runs do not fill the disk.
    if _OWN_CACHE is not None:
        import shutil

        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture
def components():
    """Built-in plugins only, on a fresh manager (no entry points)."""
    from hydranet.core.plugins import load_components, make_plugin_manager

    return load_components(make_plugin_manager(entry_points=False))


@pytest.fixture(scope="session")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic UTKFace-format folder (written once per test session)."""
    from hydranet.plugins.datasets.synthetic import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("faces") / "utk", count=240, size=32, seed=3, progress=False)


@pytest.fixture(scope="session")
def checkpoint(faces, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """best.pt of a one-epoch tiny run on the built-in plugins, trained once per test session.

    Tests that use it must not change it; writing files beside it is fine.
    """
    import hydranet
    from hydranet.core.plugins import load_components, make_plugin_manager
    from hydranet.core.spec import load_spec

    components = load_components(make_plugin_manager(entry_points=False))
    out = tmp_path_factory.mktemp("one-epoch") / "run"
    hydranet.train(load_spec(tiny_spec(faces, epochs=1), components=components), out_dir=out,
                   components=components, progress=False, echo=False)
    return out / "best.pt"


def with_inline_plugin(hook: str, *args, plugin: str = "test-plugin", distribution: str = "test", version: str = "0",
                       **kwargs):
    """The built-in components plus one inline plugin, as a user's package would add it, whose `hook`
    registers one component: `register(*args, **kwargs)`."""
    import hydranet
    from hydranet.core.plugins import load_components, make_plugin_manager

    def register_one(self, register):
        register(*args, **kwargs)

    pm = make_plugin_manager(entry_points=False)
    pm.add_plugin(type("Plugin", (), {hook: hydranet.hookimpl(register_one)})(), plugin,
                  distribution=distribution, version=version, builtin=False)
    return load_components(pm)


def with_task_kind(kind: str, task_class: type, params: type, *, plugin: str = "test-task", distribution: str = "test",
                   version: str = "0"):
    """The built-in components plus one task kind, registered by an inline plugin."""
    return with_inline_plugin("register_tasks", kind, task_class, params=params, plugin=plugin,
                              distribution=distribution, version=version)


def with_weighting(name: str, strategy: type, plugin: str = "test-weighting"):
    """The built-in components plus one weighting, registered by an inline plugin."""
    return with_inline_plugin("register_weightings", name, strategy, plugin=plugin)


#: the data section of a model trained on drawn faces (the synthetic dataset), as the demo is
DRAWN_DATA = {"name": "synthetic", "root": None, "count": 40, "size": 32, "seed": 0}


def trained_on(checkpoint: Path, path: Path, **data) -> Path:
    """A copy of `checkpoint` at `path`, as if trained on other data: only its stored data section differs."""
    import torch

    saved = torch.load(checkpoint, weights_only=True)
    if data.get("name", "utkface") != "utkface":  # the checkpoint trained on utkface, which stores its own option
        saved["spec"]["data"].pop("recursive", None)  # (other datasets do not take it); `root` is left to the tests
    saved["spec"]["data"].update(data)
    torch.save(saved, path)
    return path


def make_tasks(components, *names: str) -> list:
    """Real task objects with their default parameters, built as a spec would build them."""
    return [components.tasks.get(n).factory(n, components.tasks.get(n).validate_params({})) for n in names]


def tiny_model_and_batch(components, seed: int = 0) -> tuple:
    """A width-4 tiny backbone with the three UTKFace heads, six 16 px images and their targets.

    One ethnicity label is missing (NaN), so every weighting's tests also see a
    task whose loss is masked to fewer rows than the others.
    """
    import torch
    from hydranet.core.model import build_model

    torch.manual_seed(seed)
    tasks = make_tasks(components, "age", "gender", "ethnicity")
    entry = components.backbones.get("tiny")
    model = build_model(entry.factory(entry.validate_params({"width": 4})), tasks)
    images = torch.randn(6, 3, 16, 16)
    targets = torch.tensor([[30.0, 0, 1], [40, 1, 2], [50, 0, float("nan")], [20, 1, 0], [60, 0, 4], [35, 1, 3]])
    return model, tasks, images, targets


def tiny_spec(root: Path, **train) -> dict:
    """A spec small enough to train in a few seconds on 2 CPU cores."""
    return {
        "backbone": {"name": "tiny", "width": 8},
        "image_size": 16,
        "tasks": ["age", "gender", "ethnicity"],
        "data": {"name": "utkface", "root": str(root), "val_fraction": 0.25},
        "weighting": "sum",
        "train": {"epochs": 2, "batch_size": 32, "lr": 3e-3, "device": "cpu", **train},
    }


def labelled_images(root: Path, header: str, cells: list[str]) -> Path:
    """A `folder` dataset in `root` (made here): images 0.jpg, 1.jpg, ... of noise, and labels.csv with `header`
    and, for image i, the row `i.jpg,<cells[i]>`. Returns `root`."""
    from test_bad_images import noise_jpeg

    root.mkdir(parents=True, exist_ok=True)
    for i in range(len(cells)):
        noise_jpeg(root / f"{i}.jpg", size=16, seed=i)
    (root / "labels.csv").write_text("\n".join([header, *(f"{i}.jpg,{row}" for i, row in enumerate(cells))]) + "\n")
    return root


def make_image(path: Path, size: int = 16) -> Path:
    """A plain `size` px square image at `path` (its parent folders made), in the format its suffix names."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (120, 80, 60)).save(path)
    return path


def install_as_if_pip(package: "Path", site: "Path", monkeypatch: pytest.MonkeyPatch) -> dict:
    """Make a plugin package (src/ layout) importable and discoverable as pip would; return its [project] table.

    Writes a .dist-info with the package's `hydranet` entry points under `site`
    and puts `site` and the package's src/ on sys.path, which is all that
    entry-point discovery reads, without a slow real `pip install`.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    project = tomllib.loads((package / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n", encoding="utf-8")
    lines = ["[hydranet]"] + [f"{name} = {value}" for name, value in project["entry-points"]["hydranet"].items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # allowed by name, beside those already allowed: other plugins installed in the environment stay out
    allowed = {n.strip() for n in os.environ.get("HYDRANET_PLUGINS", "").split(",") if n.strip()}
    monkeypatch.setenv("HYDRANET_PLUGINS", ",".join(sorted(allowed | set(project["entry-points"]["hydranet"]))))
    monkeypatch.syspath_prepend(str(package / "src"))
    monkeypatch.syspath_prepend(str(site))
    return project


def train_from_the_cli(raw: dict, components, tmp_path, monkeypatch):
    """`hydranet train SPEC` with `components` as the installed plugins."""
    import yaml
    from click.testing import CliRunner

    from hydranet.core.cli import cli

    for module in ("hydranet.core.spec", "hydranet.core.engine"):
        monkeypatch.setattr(f"{module}.default_components", lambda: components)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return CliRunner().invoke(cli, ["train", str(path), "--out", str(tmp_path / "run"), "--no-progress"])


@pytest.fixture
def use(monkeypatch):
    """Make the CLI (and the spec loader it calls) use the given components instead of the installed ones."""

    def use(components):
        for module in ("hydranet.core.plugins", "hydranet.core.spec", "hydranet.core.spec_schema"):
            monkeypatch.setattr(f"{module}.default_components", lambda: components)
        return components

    return use
