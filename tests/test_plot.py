"""`hydranet plot RUN`: charts of a real run, and clear messages when it cannot draw them."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

import hydranet
from conftest import tiny_spec
from hydranet.core.cli import cli
from hydranet.core.errors import HydranetError
from hydranet.core.plot import load_series, plot_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHARTS = ("losses.png", "metrics.png", "weights.png")
TASKS = ["age", "gender", "ethnicity"]


@pytest.fixture(scope="module")
def run_dir(faces, tmp_path_factory) -> Path:
    """A real two-epoch run; `uncertainty` so the weights actually move between epochs."""
    spec = tiny_spec(faces, epochs=2)
    spec["weighting"] = "uncertainty"
    out = tmp_path_factory.mktemp("plot") / "run"
    hydranet.train(spec, out_dir=out, progress=False, echo=False)
    return out


def assert_png(path: Path) -> None:
    assert path.is_file(), f"{path.name} was not written"
    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    with Image.open(path) as image:
        image.verify()  # a truncated or corrupt file raises here
    with Image.open(path) as image:
        width, height = image.size
    assert 300 <= width <= 4000 and 200 <= height <= 4000, (path.name, image.size)


def test_plot_writes_every_chart_as_a_valid_png(run_dir, tmp_path):
    out = tmp_path / "charts"  # does not exist yet: --out creates it
    written = plot_run(run_dir, out)
    assert sorted(p.name for p in written) == sorted(CHARTS)
    for name in CHARTS:
        assert_png(out / name)
    # One panel per task (losses) and per task metric (metrics: 4 = age mae, gender acc, ethnicity acc + F1)
    # make the grids wider than tall and taller than one row respectively.
    with Image.open(out / "losses.png") as losses, Image.open(out / "metrics.png") as metrics:
        assert losses.size[0] > 2 * losses.size[1]
        assert metrics.size[1] > losses.size[1]
    assert not list(run_dir.glob("*.png")), "--out must not write into the run folder"


def test_series_match_the_csv(run_dir):
    rows = list(csv.DictReader((run_dir / "metrics.csv").read_text(encoding="utf-8").splitlines()))
    data = load_series(run_dir)
    assert data.epochs == [1.0, 2.0]
    assert data.tasks == TASKS
    assert set(data.train_loss) == set(data.val_loss) == set(data.weights) == set(TASKS)
    assert set(data.metrics["age"]) == {"mae"} and "accuracy" in data.metrics["gender"]
    assert set(data.metrics["ethnicity"]) >= {"accuracy", "macro_f1"}
    for task in TASKS:
        assert data.weights[task] == pytest.approx([float(r[f"weight.{task}"]) for r in rows])
        assert data.train_loss[task] == pytest.approx([float(r[f"train_loss.{task}"]) for r in rows])
    # uncertainty learns its weights: after an epoch they are no longer the initial ones
    assert data.weights["age"][1] != data.weights["age"][0]


def test_cli_plot_defaults_to_the_run_folder(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    result = CliRunner().invoke(cli, ["plot", str(copy)])
    assert result.exit_code == 0, result.output
    for name in CHARTS:
        assert f"wrote {copy / name}" in result.output
        assert_png(copy / name)


def test_one_epoch_with_missing_values_still_plots(tmp_path):
    """A single point per line, a NaN validation loss (no labelled rows) and a text cell must not break drawing."""
    (tmp_path / "metrics.csv").write_text(
        "epoch,train_seconds,val_seconds,lr,train_loss.age,val_loss.age,val.age.mae,weight.age\n"
        "1,0.1,0.01,0.001,0.7,nan,15.2,-\n", encoding="utf-8")
    written = plot_run(tmp_path)
    assert [p.name for p in written] == list(CHARTS)
    for path in written:
        assert_png(path)
    assert math.isnan(load_series(tmp_path).weights["age"][0])


def test_missing_matplotlib_is_a_clear_message(run_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` sees when it is absent
    with pytest.raises(HydranetError) as caught:
        plot_run(run_dir, tmp_path)
    assert str(caught.value) == "hydranet plot needs matplotlib: pip install 'hydranet[plot]'"
    assert not list(tmp_path.iterdir()), "nothing is written without matplotlib"
    result = CliRunner().invoke(cli, ["plot", str(run_dir), "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "pip install 'hydranet[plot]'" in result.output and "Traceback" not in result.output


def test_missing_run_folder_via_cli(tmp_path):
    missing = tmp_path / "no-such-run"
    result = CliRunner().invoke(cli, ["plot", str(missing)])
    assert result.exit_code == 1
    assert "run folder not found" in result.output and str(missing) in result.output
    assert "Traceback" not in result.output and result.exception is not None
    assert not missing.exists()


def test_a_file_of_the_run_names_its_folder(run_dir):
    for name in ("best.pt", "metrics.csv"):
        result = CliRunner().invoke(cli, ["plot", str(run_dir / name)])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert f"{run_dir / name} is a file, not a run folder; pass the run folder that holds it, {run_dir}" \
               in result.output
        assert "not found" not in result.output  # the file is there


def test_folder_without_metrics_or_epochs(tmp_path):
    result = CliRunner().invoke(cli, ["plot", str(tmp_path)])
    assert result.exit_code == 1
    assert "no metrics.csv" in result.output and str(tmp_path / "metrics.csv") in result.output
    assert "Traceback" not in result.output
    (tmp_path / "metrics.csv").write_text("epoch,train_loss.age\n", encoding="utf-8")  # header only
    with pytest.raises(HydranetError, match="has no epochs yet"):
        plot_run(tmp_path)
