"""`hydranet train SPEC --sweep KEY=V1,V2`: every combination trained in turn, continued on rerun, compared at the end.

The runs are the tiny spec of conftest for one epoch (a second or two each);
the values are parsed by the same function as --set's.
"""

from __future__ import annotations

import csv
import re
import signal
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import hydranet
from conftest import tiny_spec
from hydranet.core.cli import cli
from hydranet.core.sweep import Axis, combinations, parse_sweeps, SweepProblem
from hydranet.core.sweep_naming import folder_name


def train(*args, code: int = 0):
    result = CliRunner().invoke(cli, ["train", *map(str, args), "--no-progress"], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


@pytest.fixture
def spec_file(faces, tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_spec(faces, epochs=1)))
    return path


@pytest.fixture(scope="module")
def swept(faces, tmp_path_factory) -> tuple[Path, Path, str]:
    """A finished 2 x 2 sweep (weighting sum, dwa by seed 0, 1): its spec file, its folder and its output."""
    root = tmp_path_factory.mktemp("sweep")
    spec = root / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(faces, epochs=1)))
    out = root / "w"
    output = train(spec, "--sweep", "weighting=sum,dwa", "--sweep", "train.seed=0,1", "--out", out).output
    return spec, out, output


NAMES = ["weighting=sum,train.seed=0", "weighting=sum,train.seed=1", "weighting=dwa,train.seed=0",
         "weighting=dwa,train.seed=1"]


# ------------------------------------------------------------------ the values, without training


def test_values_are_read_as_set_reads_them_and_a_comma_goes_in_the_list_form():
    axes = parse_sweeps(["weighting=sum, dwa", "train.lr=1e-3,0.01"])
    assert axes == [Axis("weighting", ("sum", "dwa")), Axis("train.lr", ("1e-3", "0.01"))]
    listed = parse_sweeps(["weighting=[sum, {name: static, weights: {age: 2}}, 'off']"])
    assert listed[0].values == ("sum", "{name: static, weights: {age: 2}}", "'off'")  # 'off' stays a word
    with pytest.raises(SweepProblem) as error:
        parse_sweeps(["weighting={name: static, weights: {age: 2}}", "train.seed=0,,1", "train.seed=2",
                      "nokey"])
    message = str(error.value)
    assert "--sweep weighting={name: static, weights: {age: 2}}: the value is invalid YAML" in message
    assert "a value holding a comma is written in the list form: --sweep 'KEY=[v1, {a: 1, b: 2}]'" in message
    assert "--sweep train.seed=0,,1: an empty value" in message
    assert "--sweep train.seed: swept twice; give all its values in one --sweep train.seed=V1,V2" in message
    assert "--sweep nokey: not of the form KEY=V1,V2,..." in message
    with pytest.raises(SweepProblem, match="train.seed=1,2,1: 1 listed twice; each value once"):
        parse_sweeps(["train.seed=1,2,1"])


def test_every_combination_in_order_the_last_varying_fastest_with_safe_folder_names():
    combos = combinations([Axis("weighting", ("sum", "dwa")), Axis("train.seed", ("0", "1", "2"))])
    assert [c.number for c in combos] == [1, 2, 3, 4, 5, 6]
    assert [c.label for c in combos][:4] == ["weighting=sum, train.seed=0", "weighting=sum, train.seed=1",
                                             "weighting=sum, train.seed=2", "weighting=dwa, train.seed=0"]
    assert combos[3].folder == "weighting=dwa,train.seed=0"
    odd = folder_name([("weighting", "{name: static, weights: {age: 2}}"), ("data.root", "a/b c")])
    assert odd.startswith("weighting=static(weights.age=2),data.root=a_b_c-") and "/" not in odd
    assert odd != folder_name([("weighting", "{name: static, weights: {age: 3}}"), ("data.root", "a/b c")])
    assert len(folder_name([("data.root", "x" * 500)])) < 120


# ------------------------------------------------------------------ a real sweep


def test_a_sweep_trains_every_combination_in_its_folder_and_writes_the_comparison(swept):
    _, out, output = swept
    heads = [line for line in output.splitlines() if re.match(r"run \d/4: ", line)]
    assert heads == [f"run {n}/4: {label}" for n, label in enumerate(
        ["weighting=sum, train.seed=0", "weighting=sum, train.seed=1", "weighting=dwa, train.seed=0",
         "weighting=dwa, train.seed=1"], start=1)]
    assert sorted(p.name for p in out.iterdir()) == sorted([*NAMES, "compare.csv"])
    for name in NAMES:
        saved = yaml.safe_load((out / name / "spec.yaml").read_text())
        weighting, seed = name.split(",")
        assert (saved["weighting"]["name"], saved["train"]["seed"]) == (weighting[10:], int(seed[11:]))
        assert (out / name / "summary.json").is_file()
    rows = list(csv.DictReader(open(out / "compare.csv")))
    assert [row["group"] for row in rows] == ["weighting=sum", "weighting=dwa"]  # the seeds grouped
    assert [row["n"] for row in rows] == ["2", "2"]
    assert f"wrote {out / 'compare.csv'}" in output


def test_the_same_command_again_skips_the_finished_runs(swept):
    spec, out, _ = swept
    output = train(spec, "--sweep", "weighting=sum,dwa", "--sweep", "train.seed=0,1", "--out", out).output
    for n, name in enumerate(NAMES, start=1):
        assert f": finished already in {out / name}, skipped" in output
    assert "epoch 1/1" not in output and "reference: weighting=sum" in output


def test_a_folder_holding_a_run_of_another_spec_is_refused_with_what_to_do(swept):
    spec, out, _ = swept
    result = train(spec, "--set", "train.lr=0.01", "--sweep", "weighting=sum", "--sweep", "train.seed=0,1",
                   "--out", out, code=1)
    assert "2 of the sweep's 2 runs cannot start, so none was started" in result.output
    assert (f"run 1/2 (weighting=sum, train.seed=0): {out / NAMES[0]} holds a run of another spec than this sweep "
            "asks for (train.lr=0.003 there, 0.01 now)") in result.output
    assert "Move or delete that folder, or give the sweep another --out" in result.output


def test_every_bad_combination_is_named_before_any_run_starts(spec_file, tmp_path):
    out = tmp_path / "bad"
    result = train(spec_file, "--sweep", "weighting=sum,dwx", "--sweep", "train.seed=0,1", "--sweep",
                   "train.epochs=1,0", "--out", out, code=1)
    assert "6 of the sweep's 8 runs cannot start, so none was started" in result.output
    assert ("run 3/8 (weighting=sum, train.seed=1, train.epochs=0) and run 7/8 (weighting=dwx, train.seed=1, "
            "train.epochs=0)") not in result.output  # each message once, with all the runs it concerns
    assert "weighting.name (from --sweep weighting=dwx): unknown weighting 'dwx'; did you mean 'dwa'?" in result.output
    assert "train.epochs (from --sweep train.epochs=0)" in result.output
    assert "run 2/8 (weighting=sum, train.seed=0, train.epochs=0)" in result.output
    assert not out.exists()
    result = train(spec_file, "--set", "train.seed=3", "--sweep", "train.seed=0,1", code=2)  # a usage error
    assert "--set train.seed=3 is also swept by --sweep; give its values in --sweep only" in result.output
    assert "give no --sweep with it" in train("--resume", tmp_path, "--sweep", "train.seed=0,1", code=2).output


def test_a_failing_run_is_reported_and_the_sweep_goes_on_with_a_nonzero_exit(spec_file, tmp_path):
    out = tmp_path / "lr"
    result = train(spec_file, "--sweep", "train.lr=1e30,0.003", "--out", out, code=1)
    assert "run 1/2 failed: non-finite loss" in result.output
    assert "run 2/2 done: best epoch 1" in result.output
    assert "1 of the sweep's 2 runs failed:\n  run 1/2 (train.lr=1e30): non-finite loss" in result.output
    rows = list(csv.DictReader(open(out / "compare.csv")))
    assert [row["run"] for row in rows] == [str(out / "train.lr=0.003")]
    # the same command again resumes the failed run (it does not train it anew): a swept value at fault fails again
    assert "resumes each failed one from its last.pt" in result.output
    assert "leave that value out of the sweep" in result.output


def test_a_sweep_whose_runs_all_fail_says_so(spec_file, tmp_path):
    result = train(spec_file, "--set", "train.lr=1e30", "--sweep", "train.seed=0,1", "--out", tmp_path / "nan",
                   code=1)
    assert "nothing to compare: every run of the sweep failed" in result.output
    assert "2 of the sweep's 2 runs failed" in result.output and not (tmp_path / "nan" / "compare.csv").exists()


def test_a_run_folder_or_a_file_is_refused_as_the_sweep_folder(spec_file, tmp_path):
    run = tmp_path / "one"
    train(spec_file, "--out", run)
    result = train(spec_file, "--sweep", "train.seed=0,1", "--out", run, code=1)
    assert f"{run} is a run folder (it holds spec.yaml), not a sweep folder" in result.output
    assert "Give the sweep a new folder" in result.output
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == []  # no run trained inside the run folder
    (tmp_path / "file").write_text("x")
    with pytest.raises(SweepProblem, match="is a file; give the sweep a folder"):
        hydranet.sweep(spec_file, {"train.seed": [0, 1]}, out_dir=tmp_path / "file", echo=False)


def test_ctrl_c_stops_after_the_run_saves_and_the_same_command_resumes_it(spec_file, tmp_path, monkeypatch):
    from hydranet.core.engine import Trainer

    def stop_in_seed_one(self) -> bool:  # as if Ctrl-C came during the second run's first step
        if self.cfg.seed == 1:
            self.stop_signal = signal.SIGINT
        return self.stop_signal is not None

    monkeypatch.setattr(Trainer, "_stop_agreed", stop_in_seed_one)
    out = tmp_path / "seeds"
    args = [spec_file, "--set", "train.epochs=2", "--sweep", "train.seed=0,1", "--out", out]
    result = train(*args, code=130)
    assert "run 1/2 done" in result.output and "run 2/2: train.seed=1" in result.output
    assert (f"sweep stopped at run 2/2. To continue it (this run, then the rest), run hydranet train {spec_file} "
            f"--set train.epochs=2 --sweep train.seed=0,1 --out {out}; a --resume of this run alone would not "
            "train the rest, nor compare them") in result.output
    assert (out / "train.seed=1" / "last.pt").is_file() and not (out / "train.seed=1" / "summary.json").exists()
    monkeypatch.undo()
    result = train(*args)
    assert f"run 1/2: train.seed=0: finished already in {out / 'train.seed=0'}, skipped" in result.output
    assert "run 2/2: train.seed=1 (resuming its stopped run from its last.pt)" in result.output
    assert [int(r["epoch"]) for r in csv.DictReader(open(out / "train.seed=1" / "metrics.csv"))][-1] == 2


def test_the_python_api(faces, tmp_path, components):
    result = hydranet.sweep(tiny_spec(faces, epochs=1), {"train.seed": [0, 1]}, out_dir=tmp_path / "py",
                            components=components, progress=False, echo=False)
    assert result.outcomes == {1: "trained", 2: "trained"} and not result.failures
    assert sorted(p.name for p in (tmp_path / "py").iterdir()) == ["compare.csv", "train.seed=0", "train.seed=1"]
    assert [group.n for group in result.comparison.groups] == [2]


def test_a_rerun_in_another_order_compares_in_its_own_order_not_the_old_compare_csv(swept, tmp_path):
    """The sweep's first run is its reference, as documented, even where an earlier compare.csv lists another first."""
    import shutil

    spec, out, _ = swept
    copy = tmp_path / "w"
    shutil.copytree(out, copy)
    output = train(spec, "--sweep", "weighting=dwa,sum", "--sweep", "train.seed=0,1", "--out", copy).output
    assert "reference: weighting=dwa" in output
    rows = list(csv.DictReader(open(copy / "compare.csv")))
    assert [row["group"] for row in rows] == ["weighting=dwa", "weighting=sum"]


def test_ctrl_c_while_a_run_sets_up_says_how_to_continue_the_sweep(spec_file, tmp_path, monkeypatch):
    """Before a run's loop (its data decoding, its model) Ctrl-C is a plain KeyboardInterrupt: the earlier runs are
    kept all the same, and the sweep says how to continue it."""
    from hydranet.core.engine import Trainer

    setup = Trainer._setup

    def ctrl_c_in_seed_one(self):
        if self.cfg.seed == 1:
            raise KeyboardInterrupt
        return setup(self)

    monkeypatch.setattr(Trainer, "_setup", ctrl_c_in_seed_one)
    out = tmp_path / "seeds"
    result = train(spec_file, "--sweep", "train.seed=0,1", "--out", out, code=130)
    assert "run 1/2 done" in result.output
    assert "sweep stopped at run 2/2. To continue it (this run, then the rest), run hydranet train" in result.output
    assert (out / "train.seed=0" / "summary.json").is_file()


def test_a_run_is_freed_before_the_next_one_sets_up(spec_file, tmp_path, monkeypatch):
    """A finished run's trainer (its model, optimizer, images: GPU memory on the main path) is held by reference
    cycles, which only the cyclic collector frees: the sweep frees it before the next run measures free memory
    and places its images, so that two runs' worth is never held at once."""
    import gc
    import weakref

    from hydranet.core.engine import Trainer

    setup, earlier, alive = Trainer._setup, [], []

    def setup_after_checking(self):
        alive.extend(ref() is not None for ref in earlier)
        earlier.append(weakref.ref(self))
        return setup(self)

    monkeypatch.setattr(Trainer, "_setup", setup_after_checking)
    enabled = gc.isenabled()
    gc.disable()  # as when the collector has not come round yet
    try:
        hydranet.sweep(spec_file, {"train.seed": [0, 1]}, out_dir=tmp_path / "freed", progress=False, echo=False)
    finally:
        if enabled:
            gc.enable()
    assert alive == [False]


def test_any_error_of_a_run_is_a_failed_run_not_the_end_of_the_sweep(spec_file, tmp_path, monkeypatch):
    # a plugin's own ValueError, say, raised while the run sets up
    from hydranet.core.engine import Trainer

    setup = Trainer._setup

    def fails_for_seed_zero(self):
        if self.cfg.seed == 0:
            raise ValueError("a plugin's own mistake")
        return setup(self)

    monkeypatch.setattr(Trainer, "_setup", fails_for_seed_zero)
    result = train(spec_file, "--sweep", "train.seed=0,1", "--out", tmp_path / "seeds", code=1)
    assert "run 1/2 failed: ValueError: a plugin's own mistake" in result.output
    assert "run 2/2 done" in result.output



def test_a_run_another_sweep_finished_after_planning_is_skipped_not_trained_again(faces, tmp_path, components):
    # Two sweeps into one folder: each looks at a run's folder again just before training it.
    from hydranet.core.sweep import axes_from_mapping, plan_sweep, run_sweep

    out = tmp_path / "shared"
    plan = plan_sweep(tiny_spec(faces, epochs=1), axes_from_mapping({"train.seed": [0, 1]}), out_dir=out,
                      components=components)
    hydranet.sweep(tiny_spec(faces, epochs=1), {"train.seed": [1]}, out_dir=out, components=components,
                   progress=False, echo=False)  # the other sweep trains seed 1 meanwhile
    finished_at = (out / "train.seed=1" / "summary.json").stat().st_mtime_ns
    result = run_sweep(plan, components=components, progress=False, echo=False)
    assert result.outcomes == {1: "trained", 2: "skipped"}
    assert (out / "train.seed=1" / "summary.json").stat().st_mtime_ns == finished_at


def test_a_sweep_reads_each_run_once_for_compare_csv_and_compare_test_csv(faces, tmp_path, components, monkeypatch):
    from hydranet.core import compare

    spec = tiny_spec(faces, epochs=1)
    spec["data"]["test_fraction"] = 0.2
    out = tmp_path / "tested"
    hydranet.sweep(spec, {"train.seed": [0, 1]}, out_dir=out, components=components, progress=False, echo=False)
    reads: list[str] = []
    read_metrics, read_summary = compare.read_metrics, compare._read_summary
    monkeypatch.setattr(compare, "read_metrics", lambda path: reads.append(str(path)) or read_metrics(path))
    monkeypatch.setattr(compare, "_read_summary", lambda path: reads.append(str(path)) or read_summary(path))
    # again: both runs skipped, so what reads them is the two comparisons alone
    result = hydranet.sweep(spec, {"train.seed": [0, 1]}, out_dir=out, components=components, progress=False,
                            echo=False)
    assert result.outcomes == {1: "skipped", 2: "skipped"}
    runs = [out / "train.seed=0", out / "train.seed=1"]
    assert sorted(reads) == sorted([*(str(run / "metrics.csv") for run in runs), *map(str, runs)])  # once each
    assert result.test_csv == out / "compare-test.csv" and result.test_comparison.split == "test"
    [group] = result.test_comparison.groups
    for run, record in zip(runs, group.runs):
        test = yaml.safe_load((run / "summary.json").read_text())["test"]
        assert record.metrics["age"]["mae"] == pytest.approx(test["age"]["mae"])
        assert record.metrics != next(r for r in result.comparison.runs if r.path == run).metrics  # not val's


def test_the_test_comparison_leaves_out_a_run_without_test_metrics_with_a_note(faces, tmp_path, components):
    from hydranet.core.compare import RunProblem, on_test_split, read_runs

    spec = tiny_spec(faces, epochs=1)
    spec["data"]["test_fraction"] = 0.2
    hydranet.sweep(spec, {"train.seed": [0, 1]}, out_dir=tmp_path / "w", components=components, progress=False,
                   echo=False)
    summary = tmp_path / "w" / "train.seed=0" / "summary.json"
    summary.write_text(summary.read_text().replace('"test"', '"untested"'))
    records, _, _ = read_runs([tmp_path / "w"], components=components, as_given=True)
    tested, reference, notes = on_test_split(records)
    assert [r.path.name for r in tested] == ["train.seed=1"] and reference is tested[0]
    assert notes == [f"skipped: {tmp_path / 'w' / 'train.seed=0'} has no test metrics: its spec has no test split "
                     "(data.test_fraction is 0); compare it with --split val, or train it again with "
                     "data.test_fraction > 0"]
    with pytest.raises(RunProblem, match="has no test metrics"):
        on_test_split(records[:1])
