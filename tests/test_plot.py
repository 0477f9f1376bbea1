"""`hydranet plot RUN`: charts of a real run, and clear messages when it cannot draw them."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
import yaml
from PIL import Image

import hydranet
from conftest import tiny_spec
from hydranet.core.cli import cli
from hydranet.core.errors import HydranetError
from hydranet.core.plot import BAND, load_series, plot_run, plot_runs

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


# ------------------------------------------------------------------ several runs: a sweep side by side
#
# Run folders written by hand (spec.yaml, metrics.csv, summary.json: all that compare and plot read), so the
# numbers drawn can be checked against means and sample stds worked out here.


DIRECTIONS = {"age": {"mae": False}, "gender": {"accuracy": True}}


def write_run(folder: Path, rows: list[dict[str, float]], *, weighting: str = "sum", seed: int = 0,
              directions: dict | None = None, summary: bool = True, planned: int | None = None) -> Path:
    """A run folder as `hydranet train` leaves it, by hand: its spec, one metrics.csv row per epoch, summary.json."""
    directions = directions or DIRECTIONS
    spec = {"backbone": {"name": "tiny"}, "tasks": [{"name": task} for task in directions],
            "weighting": {"name": weighting}, "train": {"epochs": planned or len(rows), "seed": seed}}
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    columns = list(rows[0]) if rows else ["epoch"]
    lines = [",".join(columns)] + [",".join(str(row[c]) for c in columns) for row in rows]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    if summary:
        (folder / "summary.json").write_text(json.dumps({"best_epoch": len(rows), "higher_is_better": directions}))
    return folder


def epoch_row(epoch: int, base: float, tasks: tuple[str, ...] = ("age", "gender")) -> dict[str, float]:
    """Every column family for `tasks`, with values that differ by run (`base`), epoch and column."""
    row: dict[str, float] = {"epoch": epoch}
    for k, task in enumerate(tasks):
        row[f"train_loss.{task}"] = base + 1.0 / epoch + k
        row[f"val_loss.{task}"] = base + 2.0 / epoch + k
        row[{"age": "val.age.mae", "gender": "val.gender.accuracy", "ethnicity": "val.ethnicity.accuracy"}[task]] = \
            base * 10 - epoch + k
        row[f"weight.{task}"] = 1 + base * epoch / 10 + k
    return row


BASES = {"sum": (0.5, 0.75, 1.5), "dwa": (0.25, 0.5, 2.0)}  # per seed 0, 1, 2


@pytest.fixture
def sweep(tmp_path) -> Path:
    """runs/w as `--sweep weighting=sum,dwa --sweep train.seed=0,1,2` leaves it: six runs, 2 epochs, compare.csv."""
    root = tmp_path / "w"
    for weighting, bases in BASES.items():
        for seed, base in enumerate(bases):
            write_run(root / f"weighting={weighting},train.seed={seed}", [epoch_row(e, base) for e in (1, 2)],
                      weighting=weighting, seed=seed)
    runs = [f"{root}/weighting={w},train.seed={s}" for w in BASES for s in range(3)]  # the sweep's order
    (root / "compare.csv").write_text("group,runs,n\n" + "".join(
        f'weighting={w},"{";".join(runs[3 * i:3 * i + 3])}",3\n' for i, w in enumerate(BASES)))
    return root


def csv_column(run: Path, column: str) -> tuple[list[float], list[float]]:
    rows = list(csv.DictReader((run / "metrics.csv").read_text(encoding="utf-8").splitlines()))
    return [float(r["epoch"]) for r in rows], [float(r[column]) for r in rows]


def sample_std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def test_a_sweep_folder_draws_each_group_of_seeds_as_its_mean_in_a_band_of_one_sample_std(sweep):
    result = CliRunner().invoke(cli, ["plot", str(sweep)])
    assert result.exit_code == 0, result.output
    for name in CHARTS:
        assert f"wrote {sweep / name}" in result.output  # a sweep folder is its charts' default home
        assert_png(sweep / name)
    # SWEEP/* now names the charts beside the runs: plot and compare pass over them as over compare.csv
    everything = sorted(map(str, sweep.iterdir()))
    assert CliRunner().invoke(cli, ["plot", *everything, "--out", str(sweep / "again")]).exit_code == 0
    result = CliRunner().invoke(cli, ["compare", *everything])
    assert result.exit_code == 0 and "weighting=sum" in result.output, result.output
    drawn = plot_runs([sweep], sweep)
    assert sorted(drawn.charts) == sorted(CHARTS) and drawn.notes == []
    assert list(drawn.charts["losses.png"]) == ["train_loss.age", "val_loss.age", "train_loss.gender",
                                                "val_loss.gender"]
    assert list(drawn.charts["metrics.png"]) == ["val.age.mae", "val.gender.accuracy"]
    assert list(drawn.charts["weights.png"]) == ["weight.age", "weight.gender"]
    for chart in drawn.charts.values():
        for column, lines in chart.items():
            # compare.csv's order (sum first), compare's group names (the seed stripped)
            assert [line.label for line in lines] == ["weighting=sum (mean of 3 seeds)",
                                                      "weighting=dwa (mean of 3 seeds)"]
            for line, weighting in zip(lines, BASES):
                members = [sweep / f"weighting={weighting},train.seed={s}" for s in range(3)]
                per_run = [csv_column(run, column)[1] for run in members]
                assert line.epochs == [1.0, 2.0] and line.n == 3
                for i in range(2):
                    at = [values[i] for values in per_run]
                    mean, std = sum(at) / 3, sample_std(at)
                    assert line.values[i] == pytest.approx(mean)
                    assert line.low[i] == pytest.approx(mean - std) and line.high[i] == pytest.approx(mean + std)
    # by hand, one number: age's validation MAE at epoch 1 of sum = 10 * base - 1 over bases 0.5, 0.75, 1.5
    mae = drawn.charts["metrics.png"]["val.age.mae"][0]
    assert mae.values[0] == pytest.approx((4 + 6.5 + 14) / 3)
    assert mae.high[0] - mae.values[0] == pytest.approx(sample_std([4, 6.5, 14]))


def test_no_group_draws_every_run_over_its_own_values(sweep, tmp_path):
    result = CliRunner().invoke(cli, ["plot", str(sweep), "--no-group", "--out", str(tmp_path / "apart")])
    assert result.exit_code == 0, result.output
    for name in CHARTS:
        assert_png(tmp_path / "apart" / name)
    assert not list(sweep.glob("*.png")), "--out must not write into the sweep folder"
    drawn = plot_runs([sweep], tmp_path / "apart", group=False)
    lines = drawn.charts["weights.png"]["weight.gender"]
    names = [f"weighting={w},train.seed={s}" for w in BASES for s in range(3)]
    assert [line.label for line in lines] == names  # each run as compare names it: its folder
    for line, name in zip(lines, names):
        assert (line.epochs, line.values) == csv_column(sweep / name, "weight.gender")
        assert line.low is None and line.high is None and line.n == 1


def test_runs_named_one_by_one_need_out_and_are_labelled_as_compare_labels_them(sweep, tmp_path):
    runs = [str(sweep / "weighting=sum,train.seed=0"), str(sweep / "weighting=dwa,train.seed=1")]
    result = CliRunner().invoke(cli, ["plot", *runs])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "2 runs given: pass --out DIR, the folder for their charts" in result.output
    assert not list(sweep.glob("*.png"))
    drawn = plot_runs(runs, tmp_path / "two")
    assert [line.label for line in drawn.charts["metrics.png"]["val.age.mae"]] == [Path(r).name for r in runs]
    same_name = [write_run(tmp_path / side / "run", [epoch_row(1, 1.0)], seed=i) for i, side in enumerate("ab")]
    drawn = plot_runs(same_name, tmp_path / "same", group=False)  # two folders named run: their paths tell them apart
    assert [line.label for line in drawn.charts["metrics.png"]["val.age.mae"]] == [str(p) for p in same_name]


def test_runs_of_other_epochs_each_over_their_own_and_a_group_over_those_all_have(tmp_path):
    """Three seeds of a 3-epoch spec: one finished, one stopped after epoch 2, one resumed, stopped after 2."""
    a = write_run(tmp_path / "a", [epoch_row(e, 1.0) for e in (1, 2, 3)], seed=0)
    b = write_run(tmp_path / "b", [epoch_row(e, 2.0) for e in (1, 2)], seed=1, planned=3)
    resumed = [epoch_row(1, 4.0), epoch_row(2, 9.0), epoch_row(2, 3.0)]  # epoch 2 again after a resume: its last row
    c = write_run(tmp_path / "c", resumed, seed=2, planned=3)
    apart = plot_runs([a, b, c], tmp_path / "apart", group=False)
    lines = apart.charts["losses.png"]["val_loss.age"]
    assert [line.epochs for line in lines] == [[1.0, 2.0, 3.0], [1.0, 2.0], [1.0, 2.0]]
    assert lines[2].values == pytest.approx([4.0 + 2.0, 3.0 + 1.0])
    grouped = plot_runs([a, b, c], tmp_path / "grouped")
    (line,) = grouped.charts["losses.png"]["val_loss.age"]
    assert line.label == "a and 2 other seeds (mean of 3 seeds)" and line.epochs == [1.0, 2.0]
    at_2 = [1.0 + 1.0, 2.0 + 1.0, 3.0 + 1.0]  # base + 2 / epoch, at epoch 2
    assert line.values[1] == pytest.approx(3.0) and line.high[1] - 3.0 == pytest.approx(sample_std(at_2))
    assert grouped.notes == ["a and 2 other seeds: its runs have 3, 2 and 2 epochs; its mean and band cover only "
                             "the 2 epochs all of them have"]


def test_runs_of_other_tasks_draw_what_they_share_and_say_what_was_left_out(tmp_path):
    three = {**DIRECTIONS, "ethnicity": {"accuracy": True}}
    full = write_run(tmp_path / "full", [epoch_row(e, 1.0, ("age", "gender", "ethnicity")) for e in (1, 2)],
                     directions=three)
    fewer = write_run(tmp_path / "fewer", [epoch_row(e, 2.0) for e in (1, 2)], weighting="dwa")
    result = CliRunner().invoke(cli, ["plot", str(full), str(fewer), "--out", str(tmp_path / "charts")])
    assert result.exit_code == 0, result.output
    assert ("note: full: not drawn, as not every run has them: ethnicity.accuracy, train_loss.ethnicity, "
            "val_loss.ethnicity, weight.ethnicity") in result.output
    drawn = plot_runs([full, fewer], tmp_path / "charts")
    assert list(drawn.charts["metrics.png"]) == ["val.age.mae", "val.gender.accuracy"]
    assert not any("ethnicity" in column for chart in drawn.charts.values() for column in chart)

    alone = write_run(tmp_path / "alone", [epoch_row(1, 1.0, ("ethnicity",))],
                      directions={"ethnicity": {"accuracy": True}})
    with pytest.raises(HydranetError, match="nothing to plot together: no task is common to all these runs"):
        plot_runs([fewer, alone], tmp_path / "none")


def test_folders_that_cannot_be_drawn_are_named_with_what_to_do(sweep, tmp_path):
    good = sweep / "weighting=sum,train.seed=0"
    empty = tmp_path / "notes"
    empty.mkdir()
    started = write_run(tmp_path / "started", [], summary=False)  # stopped before its first epoch ended
    out = tmp_path / "charts"
    result = CliRunner().invoke(cli, ["plot", str(good), str(empty), str(started), "--out", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{empty} is not a run folder (no spec.yaml); pass folders that `hydranet train` wrote" in result.output
    assert f"{started} has no finished epoch yet (no metrics in metrics.csv)" in result.output
    assert "or pass --skip-bad" in result.output and not out.exists()
    result = CliRunner().invoke(cli, ["plot", str(good), str(empty), str(started), "--out", str(out), "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert f"note: skipped: {started} has no finished epoch yet" in result.output

    # a sweep's run that failed in its first epoch is left out with a note, as the sweep's own comparison does
    write_run(sweep / "weighting=dwa,train.seed=3", [], weighting="dwa", seed=3, summary=False)
    drawn = plot_runs([sweep])
    assert any(note.startswith(f"skipped: {sweep / 'weighting=dwa,train.seed=3'} has no finished epoch")
               for note in drawn.notes)
    assert [line.n for line in drawn.charts["metrics.png"]["val.age.mae"]] == [3, 3]


def test_several_runs_without_matplotlib_is_the_same_clear_message(sweep, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = CliRunner().invoke(cli, ["plot", str(sweep)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "hydranet plot needs matplotlib: pip install 'hydranet[plot]'" in result.output
    assert not list(sweep.glob("*.png"))


def test_the_help_says_what_the_band_is():
    text = " ".join(CliRunner().invoke(cli, ["plot", "--help"]).output.split())
    assert "plot [OPTIONS] RUNS..." in text
    assert BAND.replace("1", "one") in text and "--no-group" in text and "hydranet plot runs/w" in text
