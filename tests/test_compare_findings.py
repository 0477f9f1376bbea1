"""`hydranet compare` on what users found wrong: the note on a reference's zeros in a grouped view, a metrics.csv
that lost a row, a seed-only sweep's group name; and LibMTL's weighting names in a spec.

Run folders are written by hand (spec.yaml, metrics.csv, summary.json: all that compare reads), as test_plot.py
writes them, so no test trains.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from hydranet.core.cli import cli
from test_plot import write_run

DIRECTIONS = {"age": {"mae": False}, "gender": {"accuracy": True}, "ethnicity": {"accuracy": True}}


def row(epoch: int, age: float, gender: float, ethnicity: float) -> dict[str, float]:
    return {"epoch": epoch, "val.age.mae": age, "val.gender.accuracy": gender, "val.ethnicity.accuracy": ethnicity}


def sweep(root: Path, values: dict[str, list[tuple[float, float, float]]], epochs: int = 3) -> Path:
    """`--sweep weighting=... --sweep train.seed=0,1 --out root` as it leaves its runs: `values` per weighting, one
    (age, gender, ethnicity) per seed, the same at every epoch."""
    for weighting, seeds in values.items():
        for seed, metrics in enumerate(seeds):
            write_run(root / f"weighting={weighting},train.seed={seed}",
                      [row(e, *metrics) for e in range(1, epochs + 1)], weighting=weighting, seed=seed,
                      directions=DIRECTIONS)
    return root


def seed_sweep(root: Path) -> Path:
    """`--sweep train.seed=0,1 --out root`: runs named by their seed alone (of 2 epochs, where `sweep`'s have 3,
    which sets them apart)."""
    for seed in (0, 1):
        write_run(root / f"train.seed={seed}", [row(e, 12, 0.5, 0.3) for e in (1, 2)], seed=seed,
                  directions=DIRECTIONS)
    return root


def compare(*args) -> str:
    result = CliRunner().invoke(cli, ["compare", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


# ---------------------------------------------------------------- a zero in the reference


def test_a_zero_in_one_run_of_the_reference_group_is_not_said_to_leave_a_metric_out(tmp_path):
    # ethnicity.accuracy is 0 in the reference group's seed 0 only: its mean, 0.25, is what every delta_m shown
    # (on the means, and each run's behind the ±) is against, so nothing is left out
    runs = sweep(tmp_path / "w", {"sum": [(10, 0.5, 0.0), (11, 0.6, 0.5)], "uncertainty": [(9, 0.55, 0.3),
                                                                                          (9.5, 0.6, 0.4)]})
    grouped = compare(runs)
    assert "0.2500 ± 0.3536" in grouped  # the reference group's mean, as the table shows it
    assert "left out of delta_m" not in grouped
    # per run, against the reference run (seed 0), it is left out, and said so
    assert "left out of delta_m, the reference's value being 0: ethnicity.accuracy" in compare(runs, "--no-group")


def test_a_zero_mean_of_the_reference_group_is_said_as_its_mean(tmp_path):
    runs = sweep(tmp_path / "w", {"sum": [(10, 0.5, 0.0), (11, 0.6, 0.0)],
                                  "uncertainty": [(9, 0.55, 0.3), (9, 0.6, 0.4)]})
    assert "left out of delta_m, the reference group's mean being 0: ethnicity.accuracy" in compare(runs)


# ---------------------------------------------------------------- a lost row of metrics.csv


def test_a_run_whose_metrics_csv_lost_a_row_shows_the_epoch_missing_and_a_note_naming_it(tmp_path):
    runs = sweep(tmp_path / "w", {"sum": [(10, 0.5, 0.3)], "uncertainty": [(9, 0.55, 0.3)]})
    lost = runs / "weighting=sum,train.seed=0"
    csv = lost / "metrics.csv"
    csv.write_text("".join(line for line in csv.read_text().splitlines(keepends=True) if not line.startswith("2,")))

    table = compare(lost, runs / "weighting=uncertainty,train.seed=0")
    assert "3/3 (epoch 2 missing)" in table
    assert "weighting=sum,train.seed=0: its metrics.csv has no row for epoch 2" in table
    assert "3/3  " in table  # the run that lost nothing is as before
    report = json.loads(compare(lost, runs / "weighting=uncertainty,train.seed=0", "--json"))
    first, second = report["runs"]
    assert (first["epochs_done"], first["epochs_missing"]) == (3, [2])  # epochs_done: still its last epoch
    assert (second["epochs_done"], second["epochs_missing"]) == (3, [])


def test_two_adjacent_lost_rows_are_said_as_two_epochs_not_a_list_in_one_word(tmp_path):
    runs = sweep(tmp_path / "w", {"sum": [(10, 0.5, 0.3)], "uncertainty": [(9, 0.55, 0.3)]}, epochs=4)
    lost = runs / "weighting=sum,train.seed=0"
    csv = lost / "metrics.csv"
    csv.write_text("".join(line for line in csv.read_text().splitlines(keepends=True)
                           if not line.startswith(("2,", "3,"))))
    table = compare(lost, runs / "weighting=uncertainty,train.seed=0")
    assert "4/4 (epochs 2 and 3 missing)" in table
    assert "its metrics.csv has no row for epochs 2 and 3 (lost or deleted)" in table


# ---------------------------------------------------------------- a seed-only sweep's name


def test_a_seed_only_sweep_is_named_by_its_folder_and_seeds(tmp_path):
    stl = seed_sweep(tmp_path / "stl")
    w = sweep(tmp_path / "w", {"sum": [(10, 0.5, 0.3), (11, 0.6, 0.5)], "uncertainty": [(9, 0.55, 0.3), (9, 0.6, 0.4)]})
    table = compare(stl, w, "--ref", stl / "train.seed=0")
    assert "other seed" not in table
    assert "reference: stl (seeds 0, 1)" in table
    rows = [line.split("  ")[0] for line in table.splitlines()[4:7]]
    assert rows == ["stl (seeds 0, 1)", "weighting=sum", "weighting=uncertainty"]  # a sweep's names stay as they were
    report = json.loads(compare(stl, w, "--ref", stl / "train.seed=0", "--json"))
    assert [g["name"] for g in report["groups"]] == ["stl (seeds 0, 1)", "weighting=sum", "weighting=uncertainty"]


def test_seed_only_sweeps_in_folders_of_the_same_name_are_named_by_their_weighting(tmp_path):
    for parent, weighting, age in (("x", "sum", 10), ("y", "uncertainty", 9)):
        for seed in (0, 1):
            write_run(tmp_path / parent / "stl" / f"train.seed={seed}", [row(1, age + seed, 0.5, 0.3)],
                      weighting=weighting, seed=seed, directions=DIRECTIONS)
    table = compare(tmp_path / "x" / "stl", tmp_path / "y" / "stl")
    assert "reference: sum (seeds 0, 1)" in table and "\nuncertainty (seeds 0, 1) " in table


def test_other_seed_groups_keep_their_names(tmp_path):
    loose = [write_run(tmp_path / name, [row(1, 10 + seed, 0.5, 0.3)], seed=seed, directions=DIRECTIONS)
             for name, seed in (("a", 0), ("b", 1))]
    assert "reference: a and 1 other seed" in compare(*loose)


# ---------------------------------------------------------------- other libraries' weighting names


def test_libmtl_names_of_built_in_weightings_are_aliases(tmp_path):
    for given, name in (("ew", "sum"), ("uw", "uncertainty"), ("nash_mtl", "nashmtl"), ("aligned_mtl", "aligned"),
                        ("db_mtl", "dbmtl"), ("imtlg", "imtl")):
        result = CliRunner().invoke(cli, ["spec", "show", "demo", "--set", f"weighting={given}"])
        assert result.exit_code == 0, result.output
        assert f"weighting:\n  name: {name}\n" in result.output
    listed = CliRunner().invoke(cli, ["list", "weightings", "ew"])
    assert listed.exit_code == 0 and "weighting 'sum'" in listed.output and "aliases:      ew, equal" in listed.output
