"""`hydranet plot` on what users found wrong: a legend cut at both sides of a narrow figure, Nash-MTL's weights
flattening every other line, a seed-only sweep's name. Run folders are written by hand, as test_plot.py writes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy
from click.testing import CliRunner
from PIL import Image

from hydranet.core.cli import cli
from hydranet.core.plot import plot_runs
from test_plot import epoch_row, write_run

WEIGHTINGS = ("cagrad", "dwa", "famo", "nashmtl", "pcgrad", "sum", "uncertainty")


def sweep(root: Path, weightings: tuple[str, ...] = WEIGHTINGS, nash_weights: bool = True) -> Path:
    """`--sweep weighting=... --sweep train.seed=0,1` over 2 tasks; Nash-MTL's weights 20 to 38, the others' about 1."""
    for i, weighting in enumerate(weightings):
        for seed in (0, 1):
            rows = [epoch_row(epoch, 0.1 * i + 0.05 * seed) for epoch in (1, 2, 3)]
            if weighting == "nashmtl" and nash_weights:
                for row in rows:
                    row["weight.age"], row["weight.gender"] = 20 + 5 * row["epoch"] + seed, 30 + row["epoch"] + seed
            write_run(root / f"weighting={weighting},train.seed={seed}", rows, weighting=weighting, seed=seed)
    return root


def plot(*args) -> str:
    result = CliRunner().invoke(cli, ["plot", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_long_legend_under_a_narrow_figure_is_not_cut_at_its_sides(tmp_path):
    runs = sweep(tmp_path / "w")
    plot(runs)
    for chart in ("weights.png", "metrics.png", "losses.png"):
        pixels = numpy.asarray(Image.open(runs / chart).convert("L"))
        # nothing dark at the image's left and right edges: every legend entry ("weighting=uncertainty (mean of 2
        # seeds)") is whole, where 3 columns under 2 panels ran off both sides
        assert pixels[:, :3].min() > 200 and pixels[:, -3:].min() > 200, chart


def test_weights_spanning_more_than_10x_are_drawn_on_a_log_scale_and_said_so(tmp_path):
    output = plot(sweep(tmp_path / "w"))
    assert "note: weights.png: age weight is drawn on a log scale, its values spanning more than 10x" in output
    assert "note: weights.png: gender weight is drawn on a log scale" in output
    assert "log scale" not in plot(sweep(tmp_path / "v", ("sum", "dwa"), nash_weights=False))


def test_a_seed_only_sweep_is_drawn_under_its_folders_name(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path / "stl" / f"train.seed={seed}", [epoch_row(epoch, 1 + seed) for epoch in (1, 2)],
                  seed=seed)
    drawn = plot_runs([tmp_path / "stl", sweep(tmp_path / "w", ("uncertainty",))], tmp_path / "charts")
    labels = [line.label for line in drawn.charts["weights.png"]["weight.age"]]
    assert labels == ["stl (mean of 2 seeds)", "weighting=uncertainty (mean of 2 seeds)"]
