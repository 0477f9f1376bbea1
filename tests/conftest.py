"""Shared fixtures: an isolated cache folder, fresh plugin components, a tiny synthetic UTKFace folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Never touch the user's ~/.cache during tests; every test session gets its own.
    if "HYDRANET_CACHE" not in os.environ:
        import tempfile

        os.environ["HYDRANET_CACHE"] = tempfile.mkdtemp(prefix="hydranet-test-cache-")


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
