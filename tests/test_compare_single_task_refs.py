"""`hydranet compare RUNS --ref TASK=RUN ...`: Δm against a reference per task (single-task baselines), as the
multi-task literature reports it.

Run folders are written by hand (test_plot.py's `write_run`, test_compare_findings.py's `row` and `sweep`), so no
test trains; every Δm below is worked out by hand from the values written.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import hydranet.core.compare as compare_module
from hydranet.core.cli import cli
from test_compare_findings import DIRECTIONS, row, sweep
from test_plot import write_run


def invoke(*args):
    return CliRunner().invoke(cli, ["compare", *map(str, args)])


def compare(*args) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.output


def single_task(folder: Path, task: str, value: float, seed: int = 0) -> Path:
    """A run trained on `task` alone (its one metric `value`): a single-task baseline."""
    metric = next(iter(DIRECTIONS[task]))
    return write_run(folder, [{"epoch": 1, f"val.{task}.{metric}": value}], seed=seed,
                     directions={task: DIRECTIONS[task]})


@pytest.fixture
def stl(tmp_path) -> dict[str, Path]:
    """One reference per task: age MAE 8; gender accuracy 0.5 from a run of age and gender (whose age MAE, 100,
    must not be taken); ethnicity accuracy 0.5."""
    both = {"age": DIRECTIONS["age"], "gender": DIRECTIONS["gender"]}
    return {"age": single_task(tmp_path / "stl_age", "age", 8),
            "gender": write_run(tmp_path / "stl_gender", [{"epoch": 1, "val.age.mae": 100, "val.gender.accuracy": 0.5}],
                                directions=both),
            "ethnicity": single_task(tmp_path / "stl_eth", "ethnicity", 0.5)}


def refs(stl: dict[str, Path]) -> list[str]:
    return [part for task, path in stl.items() for part in ("--ref", f"{task}={path}")]


def test_delta_m_against_a_reference_per_task(tmp_path, stl):
    run = write_run(tmp_path / "w", [row(1, 10, 0.8, 0.6)], directions=DIRECTIONS)
    # by hand: age -(10 - 8)/8 = -25%, gender (0.8 - 0.5)/0.5 = +60%, ethnicity (0.6 - 0.5)/0.5 = +20%;
    # (-25 + 60 + 20)/3 = +18.33 (with stl_gender's age, 100, the age term would be +90%)
    table = compare(run, *refs(stl))
    assert f"references: age: {stl['age']}, gender: {stl['gender']}, ethnicity: {stl['ethnicity']}" in table
    line = next(line for line in table.splitlines() if line.startswith("w "))
    assert line.rstrip().endswith("+18.33") and "(ref)" not in table
    assert f"age is measured against {stl['age']}: age.mae 8.0000" in table
    assert f"gender is measured against {stl['gender']}: gender.accuracy 0.5000" in table

    report = json.loads(compare(run, *refs(stl), "--json"))
    assert report["reference"] is None and report["differs_from"] == str(run)
    assert [(r["task"], r["runs"], r["metrics"]) for r in report["references"]] == [
        ("age", [str(stl["age"])], {"mae": 8}), ("gender", [str(stl["gender"])], {"accuracy": 0.5}),
        ("ethnicity", [str(stl["ethnicity"])], {"accuracy": 0.5})]
    assert report["runs"][0]["delta_m"] == pytest.approx(55 / 3)

    result = CliRunner().invoke(cli, ["compare", str(run), *refs(stl), "--csv"])
    lines = [line for line in result.stdout.splitlines()]
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    assert [(r["run"], r["reference_for"]) for r in rows] == [
        (str(run), ""), (str(stl["age"]), "age"), (str(stl["gender"]), "gender"), (str(stl["ethnicity"]), "ethnicity")]
    assert float(rows[0]["delta_m_percent"]) == pytest.approx(55 / 3)
    assert (rows[2]["age.mae"], rows[2]["gender.accuracy"], rows[2]["delta_m_percent"]) == ("", "0.5", "")


def test_a_reference_of_several_seeds_is_taken_at_its_means(tmp_path, stl):
    for seed, age in ((0, 8), (1, 12)):  # mean 10
        single_task(tmp_path / "stl_ages" / f"train.seed={seed}", "age", age, seed=seed)
    w = sweep(tmp_path / "w", {"sum": [(9, 0.6, 0.5), (11, 0.6, 0.5)]}, epochs=1)
    given = {**stl, "age": tmp_path / "stl_ages"}
    # by hand, each seed against the references (age 10, the mean; gender 0.5; ethnicity 0.5):
    # seed 0: (+10% + 20% + 0)/3 = 10, seed 1: (-10% + 20% + 0)/3 = 3.33: the row shows +6.67 ± 4.71
    table = compare(w, *refs(given))
    assert f"age: {tmp_path / 'stl_ages'} (seeds 0, 1)" in table
    assert "+6.67 ± 4.71" in table
    assert f"age is measured against {tmp_path / 'stl_ages'} (seeds 0, 1), at the mean of its 2 runs: " \
           "age.mae 10.0000" in table
    report = json.loads(compare(w, *refs(given), "--json"))
    age = report["references"][0]
    assert (age["n"], age["seeds"], age["metrics"]) == (2, [0, 1], {"mae": 10})
    assert report["groups"][0]["delta_m"] == pytest.approx(20 / 3)  # on the means: (0 + 20% + 0)/3
    groups = list(csv.DictReader(io.StringIO(CliRunner().invoke(cli, ["compare", str(w), *refs(given),
                                                                       "--csv"]).stdout)))
    assert [(g["n"], g["reference_for"], g["age.mae.mean"]) for g in groups] == [
        ("2", "", "10"), ("2", "age", "10"), ("1", "gender", ""), ("1", "ethnicity", "")]


def test_a_task_without_a_reference_is_an_error_naming_it_and_the_references_given(tmp_path, stl):
    run = write_run(tmp_path / "w", [row(1, 10, 0.8, 0.6)], directions=DIRECTIONS)
    result = invoke(run, "--ref", f"age={stl['age']}", "--ref", f"gender={stl['gender']}")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "no reference for the task ethnicity" in result.output
    assert f"given: --ref age={stl['age']}, gender={stl['gender']}" in result.output
    assert "add --ref ethnicity=RUN" in result.output
    # a reference that does not have its task
    result = invoke(run, *refs({**stl, "ethnicity": stl["age"]}))
    assert result.exit_code == 1
    assert f"the reference for ethnicity, {stl['age']}, has no task 'ethnicity' (its tasks: age)" in result.output


def test_a_plain_reference_and_references_per_task_cannot_be_mixed(tmp_path, stl):
    run = write_run(tmp_path / "w", [row(1, 10, 0.8, 0.6)], directions=DIRECTIONS)
    result = invoke(run, "--ref", run, *refs(stl))
    assert result.exit_code == 2 and "cannot be mixed" in result.output


def test_a_plain_reference_is_as_before(tmp_path, monkeypatch):
    w = sweep(tmp_path / "w", {"sum": [(10, 0.5, 0.4)], "uncertainty": [(8, 0.55, 0.4)]}, epochs=1)
    monkeypatch.chdir(w)  # a sweep's run, named as in its folder: `weighting=sum,...` is a folder, not age=...
    table = compare("weighting=uncertainty,train.seed=0", "weighting=sum,train.seed=0",
                    "--ref", "weighting=sum,train.seed=0")
    assert "; reference: weighting=sum,train.seed=0\n" in table and "references" not in table
    # by hand: age -(8 - 10)/10 = +20%, gender +10%, ethnicity 0: +10.00
    assert "+10.00" in table and "0 (ref)" in table
    assert "delta_m%: the mean relative change against weighting=sum,train.seed=0," in table
    report = json.loads(compare(*w.iterdir(), "--ref", w / "weighting=sum,train.seed=0", "--json"))
    assert report["reference"] == str(w / "weighting=sum,train.seed=0") and "references" not in report


def test_references_per_task_from_python(tmp_path, stl):
    run = write_run(tmp_path / "w", [row(1, 10, 0.8, 0.6)], directions=DIRECTIONS)
    comparison = compare_module.compare(run, ref=stl)
    assert comparison.delta_m[run] == pytest.approx(55 / 3)
    assert "against age: " in repr(comparison) and "w +18.33%" in repr(comparison)


def test_the_notes_on_a_reference_zero_and_other_data_are_said_per_task(tmp_path, stl):
    run = write_run(tmp_path / "w", [row(1, 10, 0.8, 0.6)], directions=DIRECTIONS)
    zero = single_task(tmp_path / "stl_eth0", "ethnicity", 0.0)
    spec = stl["gender"] / "spec.yaml"
    spec.write_text(spec.read_text() + "data:\n  split_seed: 3\n")
    (run / "spec.yaml").write_text((run / "spec.yaml").read_text() + "data:\n  split_seed: 0\n")
    table = compare(run, *refs({**stl, "ethnicity": zero}))
    assert f"left out of delta_m, its task's reference value being 0: ethnicity.accuracy ({zero})" in table
    assert ("stl_gender (gender's reference) read other data than the first run, w: data.split_seed differs "
            "(0 in w, 3 in stl_gender (gender's reference)): they validate on other images") in table
    # by hand, ethnicity left out: (-25% + 60%)/2 = +17.50
    assert next(line for line in table.splitlines() if line.startswith("w ")).rstrip().endswith("+17.50")


def test_a_reference_for_a_task_no_run_has_is_an_error(tmp_path, stl):
    run = write_run(tmp_path / "w", [row(1, 10, 0.8, 0.6)], directions=DIRECTIONS)
    result = invoke(run, *refs(stl), "--ref", "weighting=sum,train.seed=9")  # a run folder that is not there
    assert result.exit_code == 1
    assert "no compared run has a task 'weighting'" in result.output and "no folder has that name" in result.output


def test_a_reference_for_a_task_not_every_run_has_is_said_to_be_unused(tmp_path, stl):
    """stl_age is compared too: gender is left out of the comparison, and so is its reference, with a word."""
    run = write_run(tmp_path / "w", [row(1, 10, 0.8, 0.6)], directions=DIRECTIONS)
    table = compare(run, stl["age"], "--ref", f"age={stl['age']}", "--ref", f"gender={stl['gender']}")
    assert f"the reference for gender (--ref gender={stl['gender']}) is not used: no gender metric is " \
           "compared, as not every run has one" in " ".join(table.split())
