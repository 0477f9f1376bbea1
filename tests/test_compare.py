"""`hydranet compare` as a user drives it: real tiny runs, and run folders written by hand for exact numbers.

delta_m is checked against values computed here from the runs' metrics.csv,
written out term by term: the relative change of each metric against the
reference, its sign flipped where lower is better (MAE), averaged within each
task and then over the tasks.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import statistics
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import hydranet
from conftest import tiny_spec
from hydranet.core.cli import cli
from hydranet.core.plugins import load_components, make_plugin_manager
from hydranet.core.spec import load_spec

METRICS = ("age.mae", "gender.accuracy", "ethnicity.accuracy", "ethnicity.macro_f1")


def compare(*args, ok: bool = True):
    result = CliRunner().invoke(cli, ["compare", *map(str, args)], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def compare_json(*args) -> dict:
    return json.loads(compare(*args, "--json").output)


def compare_csv(*args) -> list[dict[str, str]]:
    """The rows of `compare --csv`, less the notes it writes to stderr (which the runner's output holds too)."""
    lines = compare(*args, "--csv").output.splitlines()
    return list(csv.DictReader(line for line in lines if not line.startswith("note: ")))


@pytest.fixture(scope="module")
def runs(faces, tmp_path_factory) -> Path:
    """runs/sum and runs/uncertainty: the same tiny spec, two epochs, two weightings."""
    components = load_components(make_plugin_manager(entry_points=False))
    root = tmp_path_factory.mktemp("compare") / "runs"
    for weighting in ("sum", "uncertainty"):
        spec = {**tiny_spec(faces, epochs=2), "weighting": weighting}
        hydranet.train(load_spec(spec, components=components), out_dir=root / weighting, components=components,
                       progress=False, echo=False)
    return root


@pytest.fixture(scope="module")
def spec(runs) -> dict:
    """The resolved spec the real runs wrote, as a base for the runs made by hand."""
    return yaml.safe_load((runs / "sum" / "spec.yaml").read_text())


def csv_row(run: Path, epoch: int) -> dict[str, float]:
    """The validation metrics of one epoch, as metrics.csv holds them: {"age.mae": ..., ...}."""
    for row in csv.DictReader(open(run / "metrics.csv")):
        if int(row["epoch"]) == epoch:
            return {key[4:]: float(value) for key, value in row.items() if key.startswith("val.")}
    raise AssertionError(f"no epoch {epoch} in {run}")


def hand_delta_m(run: dict[str, float], ref: dict[str, float]) -> float:
    age = -(run["age.mae"] - ref["age.mae"]) / ref["age.mae"]  # lower is better: the sign flips
    gender = (run["gender.accuracy"] - ref["gender.accuracy"]) / ref["gender.accuracy"]
    ethnicity = ((run["ethnicity.accuracy"] - ref["ethnicity.accuracy"]) / ref["ethnicity.accuracy"]
                 + (run["ethnicity.macro_f1"] - ref["ethnicity.macro_f1"]) / ref["ethnicity.macro_f1"]) / 2
    return 100 * (age + gender + ethnicity) / 3


def make_run(folder: Path, spec: dict, epochs: list[dict[str, float]], best_epoch: int | None = None,
             directions: dict | None = None, timings: dict | None = None, **changes) -> Path:
    """A run folder written by hand: spec.yaml (`spec` with `changes`, dotted keys), metrics.csv, summary.json
    (with `timings` where given, as the engine records them: {"epoch_train_seconds": [...], ...})."""
    spec = json.loads(json.dumps(spec))
    for key, value in changes.items():
        *parents, last = key.split("__")
        target = spec
        for part in parents:
            target = target[part]
        target[last] = value
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    columns = ["epoch", *(f"val.{name}" for name in epochs[0])]
    lines = [",".join(columns)] + [",".join([str(i), *map(str, values.values())]) for i, values in
                                   enumerate(epochs, start=1)]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    summary = {"best_epoch": best_epoch or len(epochs), **({"higher_is_better": directions} if directions else {}),
               **({"timings": timings} if timings else {})}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def metrics(age: float, gender: float, accuracy: float, f1: float) -> dict[str, float]:
    return dict(zip(METRICS, (age, gender, accuracy, f1)))


# ------------------------------------------------------------------ real runs


def test_each_run_at_its_best_epoch_and_its_delta_m_against_the_first(runs):
    report = compare_json(runs / "sum", runs / "uncertainty")
    assert report["reference"] == str(runs / "sum") and report["epoch"] == "best"
    assert [(m["task"], m["metric"], m["higher_is_better"]) for m in report["compared"]] == [
        ("age", "mae", False), ("gender", "accuracy", True), ("ethnicity", "accuracy", True),
        ("ethnicity", "macro_f1", True)]
    found = {}
    for entry in report["runs"]:
        run = Path(entry["run"])
        best = json.loads((run / "summary.json").read_text())["best_epoch"]
        assert entry["best_epoch"] == entry["epoch"] == best == torch.load(run / "best.pt")["epoch"]
        assert entry["epochs_done"] == entry["epochs_planned"] == 2
        assert (entry["name"], entry["weighting"], entry["backbone"]) == (run.name, run.name, "tiny")
        expected = csv_row(run, best)
        for name in METRICS:
            task, metric = name.split(".")
            assert entry["metrics"][task][metric] == pytest.approx(expected[name], rel=1e-5)
        found[run.name] = expected, entry
    assert found["sum"][1]["delta_m"] == 0
    delta = hand_delta_m(found["uncertainty"][0], found["sum"][0])
    assert found["uncertainty"][1]["delta_m"] == pytest.approx(delta, rel=1e-6)
    assert found["uncertainty"][1]["differs"] == {}  # the weighting has its own column
    for name, (_, entry) in found.items():  # the median of the training epochs' seconds summary.json recorded
        timings = json.loads((runs / name / "summary.json").read_text())["timings"]
        assert entry["train_seconds_per_epoch"] == statistics.median(timings["epoch_train_seconds"]) > 0

    table = compare(runs / "sum", runs / "uncertainty").output
    lines = table.splitlines()
    assert lines[0] == ("validation metrics of each run at its best epoch (the lowest total validation loss: "
                        "what best.pt holds); reference: sum")
    assert lines[2].split() == ["run", "weighting", "backbone", "epochs", "best", "epoch", "train", "s/epoch",
                                *METRICS, "delta_m%"]
    assert lines[4].split()[:4] == ["sum", "sum", "tiny", "2/2"] and lines[4].endswith("0 (ref)")
    assert lines[5].split()[:4] == ["uncertainty", "uncertainty", "tiny", "2/2"]
    assert lines[5].endswith(f"{delta:+.2f}")
    assert "Lower is better for age.mae, higher for the others." in " ".join(lines[6:])
    assert all(line == line.rstrip() for line in lines)


def test_ref_sort_and_csv(runs):
    report = compare_json(runs / "sum", "--ref", runs / "uncertainty", "--epoch", "last")
    assert [Path(r["run"]).name for r in report["runs"]] == ["uncertainty", "sum"]  # --ref not in RUN: put first
    by_name = {Path(r["run"]).name: r for r in report["runs"]}
    assert by_name["uncertainty"]["delta_m"] == 0
    assert by_name["sum"]["delta_m"] == pytest.approx(
        hand_delta_m(csv_row(runs / "sum", 2), csv_row(runs / "uncertainty", 2)), rel=1e-6)

    deltas = [r["delta_m"] for r in compare_json(runs / "sum", runs / "uncertainty", "--sort")["runs"]]
    assert deltas == sorted(deltas, reverse=True)

    text = compare(runs / "uncertainty", runs / "sum", runs / "uncertainty", "--csv").output  # once each
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["run", "weighting", "backbone", "epochs_done", "epochs_planned", "best_epoch", "epoch",
                             *METRICS, "delta_m_percent", "train_seconds_per_epoch", "weighting_params"]
    assert [row["weighting"] for row in rows] == ["uncertainty", "sum"]
    assert float(rows[0]["delta_m_percent"]) == 0
    best = json.loads((runs / "sum" / "summary.json").read_text())["best_epoch"]
    expected = hand_delta_m(csv_row(runs / "sum", best), csv_row(runs / "uncertainty", 2))
    assert float(rows[1]["delta_m_percent"]) == pytest.approx(expected, rel=1e-6)  # from metrics.csv, which keeps 9 digits
    assert float(rows[1]["age.mae"]) == pytest.approx(csv_row(runs / "sum", best)["age.mae"])


def test_a_stopped_run_reads_its_best_epoch_from_best_pt(runs, tmp_path):
    stopped = tmp_path / "stopped"
    shutil.copytree(runs / "sum", stopped)
    (stopped / "summary.json").unlink()  # written only when the run finishes
    spec = yaml.safe_load((stopped / "spec.yaml").read_text())
    spec["train"]["epochs"] = 5
    (stopped / "spec.yaml").write_text(yaml.safe_dump(spec))
    report = compare_json(runs / "sum", stopped)
    entry = report["runs"][1]
    assert entry["best_epoch"] == torch.load(stopped / "best.pt")["epoch"]
    assert (entry["epochs_done"], entry["epochs_planned"]) == (2, 5)
    assert entry["delta_m"] == 0 and entry["differs"] == {"train.epochs": 5}
    seconds = [float(row["train_seconds"]) for row in csv.DictReader(open(stopped / "metrics.csv"))]
    assert entry["train_seconds_per_epoch"] == statistics.median(seconds)  # no summary.json yet: metrics.csv's
    assert any(f"stopped stopped after epoch 2 of 5; continue it with `hydranet train --resume {stopped}`" in note
               for note in report["notes"])
    assert "2/5" in compare(runs / "sum", stopped).output


# ------------------------------------------------------------------ runs written by hand: exact numbers


def test_delta_m_by_hand_mae_lower_is_better(spec, tmp_path):
    ref = make_run(tmp_path / "ref", spec, [metrics(10, 0.5, 0.4, 0.2)])
    better = make_run(tmp_path / "better", spec, [metrics(8, 0.6, 0.3, 0.3)])
    worse_age = make_run(tmp_path / "worse-age", spec, [metrics(12, 0.5, 0.4, 0.2)])
    report = compare_json(ref, better, worse_age)
    # age: -(8 - 10)/10 = +20%; gender: +20%; ethnicity: (-25% + 50%)/2 = +12.5%; mean of the three tasks
    assert [r["delta_m"] for r in report["runs"]] == pytest.approx([0, (20 + 20 + 12.5) / 3, -20 / 3])
    text = compare(ref, better, worse_age, "--sort").output
    assert [line.split()[0] for line in text.splitlines()[4:7]] == ["better", "ref", "worse-age"]
    assert "+17.50" in text and "-6.67" in text


def test_epoch_best_last_or_a_number(spec, tmp_path):
    run = make_run(tmp_path / "run", spec, [metrics(14, 0.5, 0.3, 0.1), metrics(12, 0.6, 0.4, 0.2),
                                            metrics(13, 0.55, 0.45, 0.25)], best_epoch=2)
    at = {choice: compare_json(run, "--epoch", choice)["runs"][0] for choice in ("best", "last", "1")}
    assert [(at[c]["epoch"], at[c]["metrics"]["age"]["mae"]) for c in ("best", "last", "1")] == [
        (2, 12), (3, 13), (1, 14)]
    assert all(entry["best_epoch"] == 2 for entry in at.values())
    assert "at its last epoch" in compare(run, "--epoch", "last").output
    result = compare(run, "--epoch", "4", ok=False)
    assert result.exit_code == 1 and f"{run} has no epoch 4 in its metrics.csv (it has epochs 1 to 3)" in result.output
    result = compare(run, "--epoch", "first", ok=False)
    assert result.exit_code == 2 and "'first' is not best, last or an epoch number" in result.output


def test_runs_with_other_tasks_compare_on_the_metrics_all_have(spec, tmp_path):
    ref = make_run(tmp_path / "ref", spec, [metrics(10, 0.5, 0.4, 0.2)])
    two_tasks = {**spec, "tasks": spec["tasks"][:2]}
    fewer = make_run(tmp_path / "fewer", two_tasks, [{"age.mae": 9.0, "gender.accuracy": 0.4}])
    report = compare_json(ref, fewer)
    assert [(m["task"], m["metric"]) for m in report["compared"]] == [("age", "mae"), ("gender", "accuracy")]
    assert report["runs"][1]["delta_m"] == pytest.approx((10 - 20) / 2)  # age +10%, gender -20%
    assert report["runs"][1]["differs"] == {"tasks.ethnicity": "(removed)"}
    assert ("ref: left out, as not every run has them: ethnicity.accuracy, ethnicity.macro_f1"
            in report["notes"])
    text = compare(ref, fewer).output
    assert "ethnicity.accuracy" not in text.splitlines()[2] and "tasks.ethnicity=(removed)" in text


def test_no_shared_metric_is_an_error(spec, tmp_path):
    ages = make_run(tmp_path / "ages", {**spec, "tasks": spec["tasks"][:1]}, [{"age.mae": 9.0}])
    genders = make_run(tmp_path / "genders", {**spec, "tasks": spec["tasks"][1:2]}, [{"gender.accuracy": 0.4}])
    result = compare(ages, genders, ok=False)
    assert result.exit_code == 1
    assert (f"no task metric to compare: {genders} shares none with the reference {ages} (tasks: age; "
            "theirs: gender). Compare runs of the same tasks.") in result.output


def test_what_delta_m_cannot_use_is_said(spec, tmp_path):
    ref = make_run(tmp_path / "ref", spec, [metrics(10, 0.5, 0.4, 0.0)])  # macro-F1 0: no relative change
    run = make_run(tmp_path / "run", spec, [metrics(8, float("nan"), 0.5, 0.3)])  # no gender label
    report = compare_json(ref, run)
    assert report["runs"][1]["metrics"]["gender"]["accuracy"] is None  # JSON has no NaN
    assert report["runs"][1]["delta_m"] == pytest.approx((20 + 25) / 2)  # age +20%, ethnicity accuracy +25%
    assert "left out of delta_m, the reference's value being 0: ethnicity.macro_f1" in report["notes"]
    assert ("run: no value (NaN: no labelled validation image, or the run diverged) for gender.accuracy, left out "
            "of its delta_m" in report["notes"])


def test_other_settings_are_listed_and_other_data_is_flagged(spec, tmp_path):
    ref = make_run(tmp_path / "ref", spec, [metrics(10, 0.5, 0.4, 0.2)])
    lr = make_run(tmp_path / "lr", spec, [metrics(10, 0.5, 0.4, 0.2)], train__lr=0.01, data__workers=4)
    split = make_run(tmp_path / "split", spec, [metrics(10, 0.5, 0.4, 0.2)], data__val_fraction=0.5)
    dwa = make_run(tmp_path / "dwa", spec, [metrics(10, 0.5, 0.4, 0.2)], weighting={"name": "dwa", "temperature": 2})
    report = compare_json(ref, lr, split, dwa)
    assert [r["differs"] for r in report["runs"]] == [{}, {"train.lr": 0.01}, {"data.val_fraction": 0.5}, {}]
    assert [r["weighting"] for r in report["runs"]] == ["sum", "sum", "sum", "dwa"]
    assert ("split read other data than the reference: data.val_fraction differs (0.25 in ref, 0.5 in split): they "
            "validate on other images; its metrics and delta_m may not compare like with like") in report["notes"]
    text = compare(ref, lr, split, dwa).output
    assert "differs from the reference" in text.splitlines()[2] and "train.lr=0.01" in text


def test_runs_in_folders_of_the_same_name_are_told_apart_by_path(spec, tmp_path):
    one = make_run(tmp_path / "a" / "run", spec, [metrics(10, 0.5, 0.4, 0.2)])
    two = make_run(tmp_path / "b" / "run", spec, [metrics(10, 0.5, 0.4, 0.2)])
    assert [r["name"] for r in compare_json(one, two)["runs"]] == [str(one), str(two)]


# ------------------------------------------------------------------ what cannot be compared


def test_folders_that_cannot_be_compared_are_named_with_what_to_do(runs, spec, tmp_path):
    missing = tmp_path / "nope"
    result = compare(runs / "sum", missing, runs / "sum" / "best.pt", ok=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "2 folders cannot be compared:" in result.output
    assert f"{missing}: no such folder" in result.output
    assert f"{runs / 'sum' / 'best.pt'} is a file, not a run folder; pass its folder, {runs / 'sum'}" in result.output
    assert "Leave them out, or pass --skip-bad to compare the others." in result.output

    result = compare(tmp_path, ok=False)
    assert f"{tmp_path} is not a run folder (no spec.yaml); pass folders that `hydranet train` wrote" in result.output

    started = tmp_path / "started"  # stopped before its first epoch ended: spec.yaml and a log only
    started.mkdir()
    (started / "spec.yaml").write_text(yaml.safe_dump(spec))
    result = compare(started, ok=False)
    assert f"{started} has no finished epoch yet (no metrics in metrics.csv): it is still in its first epoch" \
        in result.output
    shutil.copy(runs / "sum" / "last.pt", started / "last.pt")  # stopped by Ctrl-C mid-epoch: resumable
    assert f"continue it with `hydranet train --resume {started}`" in compare(started, ok=False).output


def test_skip_bad_leaves_them_out_with_a_note(runs, tmp_path):
    (tmp_path / "notes").mkdir()
    report = compare_json(tmp_path / "notes", runs / "sum", runs / "uncertainty", "--skip-bad")
    assert [Path(r["run"]).name for r in report["runs"]] == ["sum", "uncertainty"]
    assert report["reference"] == str(runs / "sum")  # the first run that could be read
    assert report["notes"][0].startswith(f"skipped: {tmp_path / 'notes'} is not a run folder")
    result = compare(runs / "sum", "--ref", tmp_path / "notes", "--skip-bad", ok=False)
    assert result.exit_code == 1 and "the reference (--ref) cannot be compared" in result.output
    result = compare(tmp_path / "notes", "--skip-bad", ok=False)
    assert result.exit_code == 1 and "is not a run folder" in result.output
    result = compare(runs / "sum", "--json", "--csv", ok=False)
    assert result.exit_code == 2 and "choose one of --json and --csv" in result.output


def test_a_task_whose_plugin_is_missing_is_named(spec, tmp_path):
    decade = {**spec, "tasks": [*spec["tasks"], {"name": "decade", "kind": "decade", "label": "age"}]}
    run = make_run(tmp_path / "run", decade, [{**metrics(10, 0.5, 0.4, 0.2), "decade.accuracy": 0.3}])
    result = compare(run, ok=False)
    assert result.exit_code == 1
    assert f"{run}: cannot rebuild its task 'decade' to learn whether each of its metrics is better higher or " \
           "lower (unknown task 'decade'" in result.output
    assert "install the plugin that registers 'decade' (`hydranet plugins` lists those loaded)" in result.output


def test_a_finished_run_records_its_metrics_directions_and_compares_without_its_task_plugins(runs, spec, tmp_path):
    summary = json.loads((runs / "sum" / "summary.json").read_text())
    assert summary["higher_is_better"] == {"age": {"mae": False}, "gender": {"accuracy": True},
                                           "ethnicity": {"accuracy": True, "macro_f1": True}}
    decade = {**spec, "tasks": [*spec["tasks"], {"name": "decade", "kind": "decade", "label": "age"}]}
    directions = {**summary["higher_is_better"], "decade": {"mae": False}}
    first = make_run(tmp_path / "a", decade, [{**metrics(10, 0.5, 0.4, 0.2), "decade.mae": 2.0}],
                     directions=directions)
    second = make_run(tmp_path / "b", decade, [{**metrics(10, 0.5, 0.4, 0.2), "decade.mae": 1.0}],
                      directions=directions)
    result = compare(first, second)
    assert result.exit_code == 0, result.output
    assert "decade.mae" in result.output and "+12.5" in result.output  # decade: +50%, the others 0: mean of 4


# ------------------------------------------------------------------ runs that differ only in their seed


def test_runs_that_differ_only_in_train_seed_are_one_row_mean_and_sample_std(runs, tmp_path):
    """Real runs: sum with seeds 0 and 1 against uncertainty (seed 0); numbers from each metrics.csv by hand."""
    components = load_components(make_plugin_manager(entry_points=False))
    seed1 = tmp_path / "sum-seed1"
    spec = yaml.safe_load((runs / "sum" / "spec.yaml").read_text())
    spec["train"]["seed"] = 1
    hydranet.train(load_spec(spec, components=components), out_dir=seed1, components=components, progress=False,
                   echo=False)
    members = [runs / "sum", seed1]
    values = [csv_row(run, json.loads((run / "summary.json").read_text())["best_epoch"]) for run in members]
    mean = {name: (values[0][name] + values[1][name]) / 2 for name in METRICS}
    std = {name: (((values[0][name] - mean[name]) ** 2 + (values[1][name] - mean[name]) ** 2) / (2 - 1)) ** 0.5
           for name in METRICS}  # the sample std: n - 1 = 1
    report = compare_json(runs / "sum", runs / "uncertainty", seed1)
    assert [(g["name"], g["n"], g["seeds"]) for g in report["groups"]] == [("sum and 1 other seed", 2, [0, 1]),
                                                                          ("uncertainty", 1, [0])]
    group = report["groups"][0]
    assert group["runs"] == [str(runs / "sum"), str(seed1)] and group["delta_m"] == 0
    for name in METRICS:
        task, metric = name.split(".")
        assert group["mean"][task][metric] == pytest.approx(mean[name], rel=1e-6)
        assert group["std"][task][metric] == pytest.approx(std[name], rel=1e-5)
    assert report["groups"][1]["std"]["age"]["mae"] is None  # one run: no spread
    other = csv_row(runs / "uncertainty", json.loads((runs / "uncertainty" / "summary.json").read_text())["best_epoch"])
    assert report["groups"][1]["delta_m"] == pytest.approx(hand_delta_m(other, mean), rel=1e-6)  # on the means
    assert len(report["runs"]) == 3  # the runs are all still there, each against the reference run

    lines = compare(runs / "sum", runs / "uncertainty", seed1).output.splitlines()
    assert "the runs that differ only in train.seed grouped: mean ± sample std over n runs" in lines[0]
    assert lines[2].split()[:6] == ["runs", "n", "seeds", "weighting", "backbone", "epochs"]
    assert f"{mean['age.mae']:.4f} ± {std['age.mae']:.4f}" in lines[4] and lines[4].endswith(" (ref)")
    assert lines[5].split()[:4] == ["uncertainty", "1", "0", "uncertainty"]
    assert "delta_m%: each run's mean relative change against sum and 1 other seed's means" in " ".join(lines)

    rows = list(csv.DictReader(io.StringIO(compare(runs / "sum", runs / "uncertainty", seed1, "--csv").output)))
    assert list(rows[0])[:6] == ["group", "runs", "n", "seeds", "weighting", "backbone"]
    assert list(rows[0])[6:8] == ["age.mae.mean", "age.mae.std"]
    assert list(rows[0])[-6:] == ["delta_m_percent", "delta_m_percent.mean", "delta_m_percent.std",
                                  "train_seconds_per_epoch.mean", "train_seconds_per_epoch.std", "weighting_params"]
    assert (rows[0]["n"], rows[0]["seeds"], rows[1]["n"], rows[1]["age.mae.std"]) == ("2", "0;1", "1", "")
    assert float(rows[0]["age.mae.std"]) == pytest.approx(std["age.mae"], rel=1e-5)

    apart = compare_json(runs / "sum", runs / "uncertainty", seed1, "--no-group")  # today's table
    assert "groups" not in apart and len(apart["runs"]) == 3
    text = compare(runs / "sum", runs / "uncertainty", seed1, "--no-group").output
    assert text.splitlines()[2].split()[0] == "run" and "train.seed=1" in text


def test_grouping_by_hand_the_reference_group_sort_and_what_is_not_a_seed(spec, tmp_path):
    def run(name: str, seed: int, age: float, **changes) -> Path:
        return make_run(tmp_path / name, spec, [metrics(age, 0.5, 0.4, 0.2)], train__seed=seed, **changes)

    a0, a1, a2 = run("a0", 0, 10), run("a1", 1, 12), run("a2", 2, 14)  # mean 12, sample std 2
    b0, b1 = run("b0", 0, 9, train__lr=0.01), run("b1", 1, 10, train__lr=0.01)  # mean 9.5
    report = compare_json(b0, a0, a1, a2, b1, "--ref", a1, "--sort")
    groups = {g["name"]: g for g in report["groups"]}
    assert groups["a0 and 2 other seeds"]["delta_m"] == 0  # the reference's group, whichever of its runs it is
    assert groups["a0 and 2 other seeds"]["std"]["age"]["mae"] == pytest.approx(2)
    assert groups["a0 and 2 other seeds"]["seeds"] == [0, 1, 2]
    b = groups["b0 and 1 other seed"]
    assert b["mean"]["age"]["mae"] == 9.5 and b["std"]["age"]["mae"] == pytest.approx(0.5 ** 0.5)
    assert b["delta_m"] == pytest.approx(-(9.5 - 12) / 12 * 100 / 3)  # age only differs; one task of three
    assert b["differs"] == {"train.lr": 0.01}
    assert [g["name"] for g in report["groups"]] == ["b0 and 1 other seed", "a0 and 2 other seeds"]  # --sort

    split = run("split", 3, 10, data__split_seed=5)  # other validation images: not a seed of a's
    repeat = run("repeat", 0, 11)  # the same spec and seed as a0: a repeat, not a seed
    report = compare_json(a0, a1, split, repeat)
    assert "groups" not in report  # no group of several runs is left: one row per run
    assert any("a0, a1 and repeat differ only in train.seed, but some share one" in note for note in report["notes"])
    assert "groups" not in compare_json(a0, split)  # nothing to group: the table is per run, as before


def test_the_runs_of_a_sweep_folder_are_compared_in_the_sweeps_order_against_its_reference(spec, tmp_path):
    """`compare SWEEP/*`: the shell sorts by name, so `weighting=_name_static...` would come before the sweep's
    first run, `weighting=sum`, and be the reference; the sweep's compare.csv gives the order back."""
    sweep = tmp_path / "w"
    first = make_run(sweep / "weighting=sum", spec, [metrics(10, 0.5, 0.4, 0.2)])
    other = make_run(sweep / "weighting=_name_static-1234", spec, [metrics(12, 0.5, 0.4, 0.2)])
    (sweep / "compare.csv").write_text(f"run,delta_m_percent\n{first},0\n{other},-6.7\n")
    report = compare_json(*sorted(sweep.iterdir()))  # as `hydranet compare w/*` names them
    assert report["reference"] == str(first)
    assert [entry["name"] for entry in report["runs"]] == ["weighting=sum", "weighting=_name_static-1234"]
    assert compare_json(other, first, "--ref", other)["reference"] == str(other)  # --ref still chooses
    loose = make_run(tmp_path / "elsewhere", spec, [metrics(11, 0.5, 0.4, 0.2)])
    assert compare_json(other, loose, first)["reference"] == str(other)  # runs of no one sweep: as given


def test_a_seed_group_with_a_nan_metric_has_a_nan_std_not_a_crash(spec, tmp_path):
    """statistics.stdev raises AttributeError on a NaN: a diverged seed crashed `compare` and `plot` of its group."""
    a0 = make_run(tmp_path / "a0", spec, [metrics(10, 0.5, 0.4, 0.2)], train__seed=0)
    a1 = make_run(tmp_path / "a1", spec, [metrics(float("nan"), 0.5, 0.4, 0.2)], train__seed=1)
    report = compare_json(a0, a1)
    assert report["groups"][0]["std"]["age"]["mae"] is None  # NaN, printed as null
    assert report["groups"][0]["std"]["gender"]["accuracy"] == 0
    from hydranet.core.plot import plot_runs

    pytest.importorskip("matplotlib")
    drawn = plot_runs([a0, a1], tmp_path / "charts")
    assert [p.name for p in drawn.written] == ["metrics.png"]


def test_a_groups_delta_m_as_mean_and_sample_std_over_its_seeds_by_hand(spec, tmp_path):
    a0 = make_run(tmp_path / "a0", spec, [metrics(10, 0.5, 0.4, 0.2)], train__seed=0)
    a1 = make_run(tmp_path / "a1", spec, [metrics(12, 0.5, 0.4, 0.2)], train__seed=1)
    b0 = make_run(tmp_path / "b0", spec, [metrics(8.8, 0.55, 0.4, 0.2)], train__seed=0, train__lr=0.01)
    b1 = make_run(tmp_path / "b1", spec, [metrics(11, 0.5, 0.44, 0.22)], train__seed=1, train__lr=0.01)
    # The reference is a's means: age 11, gender 0.5, ethnicity accuracy 0.4, macro-F1 0.2.
    # b0: age -(8.8 - 11)/11 = +20%, gender (0.55 - 0.5)/0.5 = +10%, ethnicity (0 + 0)/2 = 0  -> (20 + 10 + 0)/3 = 10
    # b1: age 0, gender 0, ethnicity (+10% + 10%)/2 = +10%                                    -> 10/3 = 3.3333
    # mean (10 + 10/3)/2 = 20/3 = 6.6667; sample std of two values |10 - 10/3| / sqrt(2) = (20/3)/sqrt(2) = 4.7140
    # On the means (age 9.9, gender 0.525, 0.42, 0.21): (+10% + 5% + (5% + 5%)/2)/3 = 20/3 as well: Δm is linear.
    # a0: age -(10 - 11)/11 = +9.0909%, the rest 0 -> +3.0303; a1: -3.0303; mean 0, std 6.0606/sqrt(2) = 4.2855
    report = compare_json(a0, a1, b0, b1)
    a, b = report["groups"]
    assert b["delta_m_runs"] == pytest.approx([10, 10 / 3])
    assert b["delta_m_mean"] == pytest.approx(20 / 3) and b["delta_m_std"] == pytest.approx(20 / 3 / 2 ** 0.5)
    assert b["delta_m"] == pytest.approx(20 / 3)  # on the means, as before
    assert a["delta_m_runs"] == pytest.approx([100 / 33, -100 / 33])
    assert a["delta_m"] == 0 and a["delta_m_mean"] == pytest.approx(0, abs=1e-12)
    assert a["delta_m_std"] == pytest.approx(200 / 33 / 2 ** 0.5)
    # each run's own delta_m, against the reference run a0 (unchanged): a1 -20%/3; b0 (+12% + 10%)/3; b1 (-10% + 10%)/3
    assert [r["delta_m"] for r in report["runs"]] == pytest.approx([0, -20 / 3, 22 / 3, 0], abs=1e-12)

    lines = compare(a0, a1, b0, b1).output.splitlines()
    assert lines[4].split()[0] == "a0" and "  0 ± 4.29 (ref)  " in lines[4]
    assert lines[5].split()[0] == "b0" and "+6.67 ± 4.71" in lines[5]

    rows = compare_csv(a0, a1, b0, b1)
    assert float(rows[1]["delta_m_percent"]) == pytest.approx(20 / 3)
    assert float(rows[1]["delta_m_percent.mean"]) == pytest.approx(20 / 3)
    assert float(rows[1]["delta_m_percent.std"]) == pytest.approx(20 / 3 / 2 ** 0.5)


def test_the_training_time_column_from_the_runs_timings_and_a_dash_without(spec, tmp_path):
    def timed(name: str, seed: int, seconds: list[float] | None, **changes) -> Path:
        timings = {"epoch_train_seconds": seconds, "epoch_val_seconds": [0.5] * len(seconds)} if seconds else None
        return make_run(tmp_path / name, spec, [metrics(10, 0.5, 0.4, 0.2)], timings=timings, train__seed=seed,
                        **changes)

    a0 = timed("a0", 0, [5.0, 2.0, 2.2])  # the first epoch compiles: the median, 2.2, leaves it out
    a1 = timed("a1", 1, [4.0, 2.4, 2.6])  # 2.6; a's mean 2.4, sample std sqrt(0.2^2 + 0.2^2) = 0.2828
    b0 = timed("b0", 0, None, train__lr=0.01)  # no timings recorded
    b1 = timed("b1", 1, None, train__lr=0.01)
    report = compare_json(a0, a1, b0, b1)
    assert [r["train_seconds_per_epoch"] for r in report["runs"]] == [2.2, 2.6, None, None]
    a, b = report["groups"]
    assert a["train_seconds_per_epoch_mean"] == pytest.approx(2.4)
    assert a["train_seconds_per_epoch_std"] == pytest.approx(0.08 ** 0.5)
    assert b["train_seconds_per_epoch_mean"] is None and b["train_seconds_per_epoch_std"] is None

    lines = compare(a0, a1, b0, b1).output.splitlines()
    column = lines[2].index("train s/epoch")
    assert lines[4][column:].startswith("2.40 ± 0.28 ") and lines[5][column:].startswith("- ")
    rows = compare_csv(a0, a1, b0, b1)
    assert float(rows[0]["train_seconds_per_epoch.mean"]) == pytest.approx(2.4)
    assert rows[1]["train_seconds_per_epoch.mean"] == rows[1]["train_seconds_per_epoch.std"] == ""

    lines = compare(a0, b0, "--no-group").output.splitlines()  # one row per run
    column = lines[2].index("train s/epoch")
    assert lines[4][column:].startswith("2.20 ") and lines[5][column:].startswith("- ")
    rows = compare_csv(a0, b0)
    assert [row["train_seconds_per_epoch"] for row in rows] == ["2.2", ""]


def test_seeds_stay_in_seed_order_within_a_group_whatever_the_sort(spec, tmp_path):
    # the seed-2 run is the best of its group and seed 0 the worst: sorted by their own delta_m they would read 2,1,0
    a2 = make_run(tmp_path / "a2", spec, [metrics(8, 0.5, 0.4, 0.2)], train__seed=2)
    a0 = make_run(tmp_path / "a0", spec, [metrics(12, 0.5, 0.4, 0.2)], train__seed=0)
    a1 = make_run(tmp_path / "a1", spec, [metrics(10, 0.5, 0.4, 0.2)], train__seed=1)
    b0 = make_run(tmp_path / "b0", spec, [metrics(13, 0.5, 0.4, 0.2)], train__seed=0, train__lr=0.01)
    b1 = make_run(tmp_path / "b1", spec, [metrics(9, 0.5, 0.4, 0.2)], train__seed=1, train__lr=0.01)
    for order in ([b0, b1, a2, a0, a1], [a1, b1, a0, a2, b0]):
        for sort in ([], ["--sort"]):
            report = compare_json(*order, *sort)
            groups = {g["weighting"] + str(len(g["seeds"])): g for g in report["groups"]}
            assert groups["sum3"]["seeds"] == [0, 1, 2] and groups["sum2"]["seeds"] == [0, 1]
            assert groups["sum3"]["runs"] == [str(a0), str(a1), str(a2)]
            rows = compare_csv(*order, *sort)
            assert sorted(row["seeds"] for row in rows) == ["0;1", "0;1;2"]
            assert f"{a0};{a1};{a2}" in [row["runs"] for row in rows]
            table = compare(*order, *sort).output
            assert " 0,1,2 " in table and " 0,1 " in table
    deltas = [r["delta_m"] for r in compare_json(b0, b1, a2, a0, a1, "--sort")["runs"]]
    assert deltas == sorted(deltas, reverse=True)  # the runs themselves (--json, --no-group) are sorted as before


def make_sweep(spec: dict, folder: Path) -> list[Path]:
    """A sweep folder as `--sweep weighting=sum,...,dwa` leaves it: its compare.csv lists the runs in the sweep's
    order, which is not the order of their names."""
    names = [("weighting=sum", 10.0), ("weighting=_name_static-1234", 12.0), ("weighting=dwa", 9.0)]
    runs = [make_run(folder / name, spec, [metrics(age, 0.5, 0.4, 0.2)]) for name, age in names]
    (folder / "compare.csv").write_text("run,delta_m_percent\n" + "".join(f"{run},0\n" for run in runs))
    return runs


def test_a_sweep_folder_is_compared_as_its_runs_in_the_sweeps_order(spec, tmp_path):
    runs = make_sweep(spec, tmp_path / "w")
    everything = sorted((tmp_path / "w").iterdir())  # as the shell gives `w/*`: compare.csv and names sorted
    for extra in ([], ["--sort"], ["--csv"], ["--epoch", "last"]):
        assert compare(tmp_path / "w", *extra).output == compare(*everything, *extra).output
    report = compare_json(tmp_path / "w")
    assert [Path(r["run"]) for r in report["runs"]] == runs and report["reference"] == str(runs[0])

    started = tmp_path / "w" / "weighting=gls"  # a run of the sweep that failed in its first epoch
    started.mkdir()
    (started / "spec.yaml").write_text(yaml.safe_dump(spec))
    report = compare_json(tmp_path / "w")
    assert [Path(r["run"]) for r in report["runs"]] == runs  # left out with a note, as the sweep's table does
    assert report["notes"][0].startswith(f"skipped: {started} has no finished epoch yet")

    loose = tmp_path / "loose"  # a folder of runs that no sweep wrote (no compare.csv): its runs, by name
    first, second = (make_run(loose / name, spec, [metrics(10, 0.5, 0.4, 0.2)]) for name in ("x", "y"))
    assert [Path(r["run"]) for r in compare_json(loose)["runs"]] == [first, second]


def test_ref_keeps_the_sweeps_order(spec, tmp_path):
    runs = make_sweep(spec, tmp_path / "w")
    everything = sorted((tmp_path / "w").iterdir())
    for given in (everything, [tmp_path / "w"]):
        report = compare_json(*given, "--ref", runs[1])
        assert [Path(r["run"]) for r in report["runs"]] == runs  # the sweep's order, the reference in its place
        assert report["reference"] == str(runs[1])
        assert [r["delta_m"] for r in report["runs"]][1] == 0
        lines = compare(*given, "--ref", runs[1]).output.splitlines()
        assert [line.split()[0] for line in lines[4:7]] == [run.name for run in runs]
    loose = make_run(tmp_path / "elsewhere", spec, [metrics(11, 0.5, 0.4, 0.2)])
    report = compare_json(*everything, "--ref", loose)  # a reference the RUNs do not name comes first
    assert [Path(r["run"]) for r in report["runs"]] == [loose, *runs]


def test_a_run_written_before_a_spec_key_existed_reads_as_its_default_not_as_a_difference(spec, tmp_path):
    # data.test_fraction came later: an older run's spec.yaml lacks it, and trained without a test split
    older = json.loads(json.dumps(spec))
    del older["data"]["test_fraction"]
    make_run(tmp_path / "old", older, [metrics(8.0, 0.7, 0.5, 0.4)])
    make_run(tmp_path / "new", spec, [metrics(7.0, 0.8, 0.6, 0.5)])
    made = compare_json(str(tmp_path / "old"), str(tmp_path / "new"))
    assert [run["differs"] for run in made["runs"]] == [{}, {}]
    make_run(tmp_path / "other", spec, [metrics(7.0, 0.8, 0.6, 0.5)], data__test_fraction=0.2)
    made = compare_json(str(tmp_path / "old"), str(tmp_path / "other"))
    assert made["runs"][1]["differs"] == {"data.test_fraction": 0.2}


def test_ref_naming_a_sweep_folder_asks_for_one_of_its_runs(spec, tmp_path):
    runs = make_sweep(spec, tmp_path / "w")
    result = compare(tmp_path / "w", "--ref", tmp_path / "w", ok=False)  # --ref takes one run, not a folder of them
    first = sorted(run.name for run in runs)[0]
    assert (f"the reference (--ref) cannot be compared: {tmp_path / 'w'} is not a run folder (no spec.yaml); it "
            f"holds runs (") in result.output
    assert f"name one of them, as in {tmp_path / 'w' / first}" in result.output
    assert "hydranet compare" not in result.output  # not `compare w/*`: the folder was passed as RUN already


def test_a_group_with_a_run_missing_a_metric_does_not_claim_its_mean_delta_m_is_on_the_means(spec, tmp_path):
    # b1 has no age.mae: its own delta_m is on the others, while the means' leaves age out for the whole group
    a0 = make_run(tmp_path / "a0", spec, [metrics(10, 0.5, 0.4, 0.2)], train__seed=0)
    a1 = make_run(tmp_path / "a1", spec, [metrics(12, 0.5, 0.4, 0.2)], train__seed=1)
    b0 = make_run(tmp_path / "b0", spec, [metrics(8.8, 0.55, 0.4, 0.2)], train__seed=0, train__lr=0.01)
    b1 = make_run(tmp_path / "b1", spec, [metrics(float("nan"), 0.5, 0.4, 0.2)], train__seed=1, train__lr=0.01)
    b = compare_json(a0, a1, b0, b1)["groups"][1]
    # b0: (+20% + 10% + 0)/3 = 10; b1: (0 + 0)/2 = 0 -> mean 5; on the means (gender 0.525, age left out): 5/2 = 2.5
    assert b["delta_m_runs"] == pytest.approx([10, 0]) and b["delta_m_mean"] == pytest.approx(5)
    assert b["delta_m"] == pytest.approx(2.5)
    legend = " ".join(compare(a0, a1, b0, b1).output.split())
    assert "(the mean is the delta_m of the group's means where every run has every metric)" in legend


def test_test_metrics_at_another_epoch_than_the_best_are_refused_once_with_the_ways_on(spec, tmp_path):
    run = make_run(tmp_path / "a", spec, [metrics(8.0, 0.7, 0.5, 0.4), metrics(7.0, 0.8, 0.6, 0.5)])
    result = compare(str(run), "--split", "test", "--epoch", "last", ok=False)
    assert result.exit_code == 2  # how the command was called: a usage error, as --json with --csv
    assert ("test metrics exist only for the best epoch (scored once with best.pt's weights), not epoch last: "
            "compare the test split at the best epoch, or epoch last on the validation split (--split val)"
            in " ".join(result.output.split()))


def test_runs_of_one_weighting_with_other_params_show_them_in_the_weighting_column(spec, tmp_path):
    """A sweep over `{name: static, weights: ...}`: two `static` rows are told apart by the weights that differ."""
    ref = make_run(tmp_path / "sum", spec, [metrics(10, 0.5, 0.4, 0.2)])
    weights = {"age": 1, "gender": 1, "ethnicity": 1}
    two = make_run(tmp_path / "s2", spec, [metrics(9, 0.5, 0.4, 0.2)],
                   weighting={"name": "static", "weights": {**weights, "age": 2}})
    three = make_run(tmp_path / "s3", spec, [metrics(8, 0.5, 0.4, 0.2)],
                     weighting={"name": "static", "weights": {**weights, "age": 3}})
    lines = compare(ref, two, three).output.splitlines()
    assert lines[2].split()[:2] == ["run", "weighting"]
    assert [line.split()[1] for line in lines[4:7]] == ["sum", "static(weights.age=2)", "static(weights.age=3)"]
    report = compare_json(ref, two, three)
    assert [r["weighting"] for r in report["runs"]] == ["sum", "static", "static"]  # the name, as before
    assert [r["weighting_params"] for r in report["runs"]] == [{}, {"weights.age": 2}, {"weights.age": 3}]
    rows = compare_csv(ref, two, three)
    assert [(r["weighting"], r["weighting_params"]) for r in rows] == [
        ("sum", ""), ("static", "weights.age=2"), ("static", "weights.age=3")]
    assert list(rows[0])[:3] == ["run", "weighting", "backbone"]  # the columns before keep their places
    # one static run alone: its name says it all; against another static run, the differing weight only
    lines = compare(ref, two).output.splitlines()
    assert lines[5].split()[1] == "static"
    lines = compare(two, three).output.splitlines()
    assert "static(weights.age=3)" in lines[5] and "weighting.weights.age=3" not in lines[5]  # shown once
    # seeds grouped: each group's row shows its weights
    seeded = make_run(tmp_path / "s2-seed1", spec, [metrics(9, 0.5, 0.4, 0.2)], train__seed=1,
                      weighting={"name": "static", "weights": {**weights, "age": 2}})
    groups = compare_json(ref, two, seeded, three)["groups"]
    assert [(g["weighting"], g["weighting_params"], g["n"]) for g in groups] == [
        ("sum", {}, 1), ("static", {"weights.age": 2}, 2), ("static", {"weights.age": 3}, 1)]
    table = compare(ref, two, seeded, three).output
    assert " static(weights.age=2) " in table and " static(weights.age=3) " in table


def test_sort_orders_groups_by_the_delta_m_the_table_shows_where_a_run_lacks_a_metric(spec, tmp_path):
    """The table shows a group's Δm as the mean of its runs' (± std); --sort must order by that number, which a
    run lacking a metric sets apart from the Δm on the group's means."""
    a0 = make_run(tmp_path / "a0", spec, [metrics(10, 0.5, 0.4, 0.2)], train__seed=0)
    a1 = make_run(tmp_path / "a1", spec, [metrics(10, 0.5, 0.4, 0.2)], train__seed=1)
    # b0: age +50% -> +50/3 = +16.67; b1 has no age: gender -20%, ethnicity 0 -> -10. Mean +3.33.
    # On b's means (age NaN, gender 0.45): gender -10%, ethnicity 0 -> -5.
    b0 = make_run(tmp_path / "b0", spec, [metrics(5, 0.5, 0.4, 0.2)], train__seed=0, train__lr=0.01)
    b1 = make_run(tmp_path / "b1", spec, [metrics(float("nan"), 0.4, 0.4, 0.2)], train__seed=1, train__lr=0.01)
    # c: gender -2% in both runs -> -0.67 either way
    c0 = make_run(tmp_path / "c0", spec, [metrics(10, 0.49, 0.4, 0.2)], train__seed=0, train__lr=0.02)
    c1 = make_run(tmp_path / "c1", spec, [metrics(10, 0.49, 0.4, 0.2)], train__seed=1, train__lr=0.02)
    report = compare_json(a0, a1, c0, c1, b0, b1, "--sort")
    b = next(g for g in report["groups"] if g["runs"][0] == str(b0))
    assert b["delta_m_mean"] == pytest.approx((50 / 3 - 10) / 2) and b["delta_m"] == pytest.approx(-5)
    assert [g["runs"][0] for g in report["groups"]] == [str(b0), str(a0), str(c0)]  # +3.33, 0, -0.67
    table = compare(a0, a1, c0, c1, b0, b1, "--sort").output.splitlines()
    assert [line.split()[0] for line in table[4:7]] == ["b0", "a0", "c0"]
    assert "+3.33 ± " in table[4]


def test_seeds_equal_as_numbers_are_one_seed_but_true_is_not_1(spec, tmp_path):
    one = make_run(tmp_path / "one", spec, [metrics(10, 0.5, 0.4, 0.2)], train__seed=1)
    same = make_run(tmp_path / "same", spec, [metrics(12, 0.5, 0.4, 0.2)], train__seed=1.0)
    two = make_run(tmp_path / "two", spec, [metrics(11, 0.5, 0.4, 0.2)], train__seed=2)
    report = compare_json(one, same, two)
    assert "groups" not in report  # a repeat of seed 1, not a second seed: shown apart
    assert any("one, same and two differ only in train.seed, but some share one" in n for n in report["notes"])
    true = make_run(tmp_path / "true", spec, [metrics(12, 0.5, 0.4, 0.2)], train__seed=True)
    assert [g["seeds"] for g in compare_json(one, true)["groups"]] == [[1, True]]  # true is no number: two seeds


# ------------------------------------------------------------------ hydranet.compare, the Python API


def test_hydranet_compare_is_the_commands_json_and_prints_its_table(runs):
    """What a notebook does: compare two trained runs, look at the result, print it; the same as the command's."""
    from hydranet.core.compare_output import comparison_json

    pair = [runs / "sum", runs / "uncertainty"]
    comparison = hydranet.compare(pair)
    assert isinstance(comparison, hydranet.Comparison) and "compare" in hydranet.__all__
    assert json.loads(comparison_json(comparison)) == compare_json(*pair)
    assert str(comparison) + "\n" == compare(*pair).output  # print(comparison): the command's table
    delta = comparison.delta_m[runs / "uncertainty"]
    assert repr(comparison) == (f"Comparison(2 runs, val metrics at the best epoch, against sum; "
                                f"delta_m: uncertainty {delta:+.2f}%)")

    options = dict(ref=runs / "uncertainty", epoch="last", sort=True)
    by_api = comparison_json(hydranet.compare(pair, **options))
    assert json.loads(by_api) == compare_json(*pair, "--ref", runs / "uncertainty", "--epoch", "last", "--sort")
    assert hydranet.compare(pair, epoch=1).runs[0].epoch == 1


def test_hydranet_compare_takes_a_sweep_folder_groups_seeds_and_refuses_what_the_command_refuses(spec, tmp_path):
    from hydranet.core.compare_output import comparison_json

    runs = make_sweep(spec, tmp_path / "w")
    comparison = hydranet.compare(tmp_path / "w")  # one folder alone, a sweep's: its runs in the sweep's order
    assert [run.path for run in comparison.runs] == runs
    assert json.loads(comparison_json(comparison)) == compare_json(tmp_path / "w")

    seeds = [make_run(tmp_path / "s" / f"train.seed={seed}", spec, [metrics(10 + seed, 0.5, 0.4, 0.2)],
                      train__seed=seed) for seed in (0, 1)]
    other = make_run(tmp_path / "s" / "other", spec, [metrics(12, 0.5, 0.4, 0.2)], train__lr=0.5)
    grouped = hydranet.compare([*seeds, other])
    assert [g.n for g in grouped.groups] == [2, 1]
    assert repr(grouped).startswith("Comparison(3 runs in 2 seed groups, val metrics at the best epoch, against ")
    assert hydranet.compare([*seeds, other], group=False).groups is None

    (tmp_path / "junk").mkdir()
    with pytest.raises(hydranet.HydranetError, match="cannot be compared"):
        hydranet.compare([runs[0], tmp_path / "junk", runs[1]])
    assert len(hydranet.compare([runs[0], tmp_path / "junk", runs[1]], skip_bad=True).runs) == 2
    for wrong in (dict(epoch="first"), dict(epoch=0), dict(split="train")):
        with pytest.raises(hydranet.InputError):
            hydranet.compare(runs, **wrong)
    with pytest.raises(hydranet.InputError):
        hydranet.compare([])
    with pytest.raises(hydranet.HydranetError, match="test metrics exist only for the best epoch"):
        hydranet.compare(runs, split="test", epoch="last")
