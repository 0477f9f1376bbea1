"""What the command line says: usage mistakes exit 2, its words agree with themselves, and hints say what was meant."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from click.testing import CliRunner

from hydranet.core.cli import cli
from hydranet.core.errors import SpecError


def invoke(*args: str, code: int, env: dict | None = None) -> str:
    result = CliRunner().invoke(cli, [str(arg) for arg in args], env=env, prog_name="hydranet")
    assert result.exit_code == code, result.output
    return result.output


# ------------------------------------------------------------------ exit codes


@pytest.mark.parametrize("command", [["train"], ["spec", "show"], ["spec", "validate", "demo"]])
def test_a_set_without_a_value_is_a_usage_error(command):
    output = invoke(*command, "--set", "train.epochs", code=2)
    assert "--set: 'train.epochs' is not of the form KEY=VALUE (e.g. train.epochs=5)" in output
    assert "key.path=value" not in output


def test_evals_set_without_a_value_gives_a_data_key_as_its_example():
    output = invoke("eval", "x.pt", "--set", "data.val_fraction", code=2)
    assert "--set: 'data.val_fraction' is not of the form KEY=VALUE (e.g. data.val_fraction=0.2)" in output
    assert "train.epochs" not in output  # eval's --set overrides the data only


def test_a_set_without_a_value_in_python_is_still_a_spec_problem():
    from hydranet.core.spec import load_spec

    with pytest.raises(SpecError, match="'train.epochs' is not of the form KEY=VALUE"):
        load_spec("demo", ["train.epochs"])


def test_a_sweep_without_values_is_a_usage_error():
    output = invoke("train", "--sweep", "weighting", code=2)
    assert "--sweep weighting: not of the form KEY=V1,V2,..." in output


def test_a_key_both_set_and_swept_is_a_usage_error():
    output = invoke("train", "--set", "train.seed=5", "--sweep", "train.seed=0,1", code=2)
    assert "--set train.seed=5 is also swept by --sweep; give its values in --sweep only" in output


def test_a_problem_in_a_set_value_stays_a_spec_problem():
    output = invoke("spec", "show", "--set", "train.epochs=x", code=1)
    assert "train.epochs (from --set train.epochs=x): should be an integer" in output


# ------------------------------------------------------------------ wording


@pytest.mark.parametrize("override, words", [
    ("train.epochs=-1", "train.epochs (from --set train.epochs=-1): should be at least 1 (got -1)"),
    ("image_size=2000", "image_size (from --set image_size=2000): should be at most 1024 (got 2000)"),
    ("data.val_fraction=1", "data.val_fraction (from --set data.val_fraction=1): should be less than 1"),
    ("data.device_memory_gb=0", "data.device_memory_gb (from --set data.device_memory_gb=0): should be greater "
                                "than 0"),
])
def test_bound_errors_are_worded_as_type_errors_are(override, words):
    output = invoke("spec", "show", "--set", override, code=1)
    assert words in output
    assert "Input should be" not in output


def test_a_plugin_that_is_not_installed_says_so(monkeypatch):
    from hydranet.core import plugins

    monkeypatch.setenv("HYDRANET_PLUGINS", "nonexist")
    monkeypatch.setattr(plugins, "default_components", lambda: plugins.load_components(plugins.make_plugin_manager()))
    output = invoke("plugins", code=1)
    assert "nonexist  (not installed)" in output
    assert "(? ?)" not in output
    assert "1 plugin problem;" in output and "problem(s)" not in output


def test_a_plugin_is_called_built_in_alike_everywhere():
    listed = invoke("list", "weightings", "dwa", code=0)
    assert "plugin:       hydranet.plugins.weighting.dwa  (built-in)" in listed
    assert "plugin 'hydranet" not in listed
    from hydranet.core.registry import describe_plugin
    assert describe_plugin("hydranet.plugins.weighting.dwa", builtin=True).endswith("(built-in)")  # in messages
    assert "hydranet.plugins.weighting.dwa  (built-in)" in invoke("plugins", code=0)


@pytest.mark.parametrize("items, words", [(1, "(a run may be using it); run this again once no hydranet is running "
                                               "to remove it"),
                                          (2, "(a run may be using them)")])
def test_cache_clear_agrees_in_number(tmp_path, monkeypatch, items, words):
    monkeypatch.setenv("HYDRANET_CACHE", str(tmp_path / "cache"))
    reports = tmp_path / "cache" / "data-reports"
    reports.mkdir(parents=True)
    for number in range(items):
        (reports / f"utkface-01234567890{number}.txt").write_text("1 unreadable image skipped:\n")
    output = invoke("cache", "clear", code=0)
    assert f"kept {items} item" in output and words in output


def test_large_seed_bounds_read_as_powers_of_two_and_still_hold():
    from hydranet.core.spec import load_spec

    listed = invoke("list", "weightings", "pcgrad", code=0)
    assert "integer (>= 0, <= 2**63-1)" in listed and "9223372036854775808" not in listed
    assert load_spec("demo", ["weighting=pcgrad", f"weighting.seed={2**63 - 1}"]).weighting.params.seed == 2**63 - 1
    with pytest.raises(SpecError, match=r"should be at most 2\*\*63-1 \(got 9223372036854775808\)"):
        load_spec("demo", ["weighting=pcgrad", f"weighting.seed={2**63}"])


@pytest.mark.parametrize("name", ["pcgrad", "rlw", "mgda", "cagrad"])
def test_parameter_descriptions_say_weighting_not_strategy(name):
    listed = invoke("list", "weightings", name, code=0)
    assert "strategy" not in listed.split("parameters:")[1]


def test_set_form_is_worded_as_the_help_writes_it():
    assert "KEY=VALUE" in invoke("train", "--help", code=0)
    assert "KEY=VALUE" in invoke("train", "--set", "train.epochs", code=2)


def test_spec_show_help_says_it_shows_the_demo_without_a_source():
    assert "left out, the built-in demo" in " ".join(invoke("spec", "show", "--help", code=0).split())


def test_new_plugin_named_like_a_built_in_says_so(tmp_path):
    output = invoke("new-plugin", "age", "--out", tmp_path, code=1)
    assert "'age' is hydranet's built-in task" in output
    assert "pip uninstall" not in output
    assert "hydranet new-plugin my-age" in output
    assert not list(tmp_path.iterdir())


def test_whole_number_options_have_a_readable_metavar_and_error():
    help_text = invoke("train", "--help", code=0)
    assert "INTEGER RANGE" not in help_text and "--nproc N" in help_text
    output = invoke("train", "--nproc", "abc", code=2)
    assert "'abc' is not an integer" in output and "integer range" not in output
    assert "0 is not in the range x>=1" in invoke("train", "--nproc", "0", code=2)


def test_plot_and_compare_write_their_runs_alike():
    assert "Usage: hydranet plot [OPTIONS] RUNS..." in invoke("plot", "--help", code=0)
    assert "Usage: hydranet compare [OPTIONS] RUNS..." in invoke("compare", "--help", code=0)


# ------------------------------------------------------------------ hints


def test_list_takes_the_singular():
    assert invoke("list", "weighting", code=0) == invoke("list", "weightings", code=0)
    assert "weighting 'dwa'" in invoke("list", "weighting", "dwa", code=0)


def test_list_of_a_component_name_says_its_kind():
    output = invoke("list", "dwa", code=2)
    assert "dwa is a weighting: hydranet list weightings dwa" in output
    assert "is a" not in invoke("list", "nonesuch", code=2)


def test_new_plugin_kind_takes_the_plural(tmp_path):
    output = invoke("new-plugin", "balanced", "--kind", "weightings", "--out", tmp_path, code=0)
    assert "a weighting plugin named 'balanced'" in output


def test_an_option_of_hydranet_after_the_command_says_where_it_goes():
    output = invoke("train", "--traceback", "x", code=2)
    assert "No such option '--traceback'" in output
    assert "hydranet --traceback train ..." in output
    assert "hydranet --traceback spec show ..." in invoke("spec", "show", "--traceback", code=2)
    assert "goes before" not in invoke("train", "--trace", code=2)


@pytest.mark.parametrize("option, key", [("--root", "data.root"), ("--csv", "data.csv")])
def test_a_dataset_parameter_given_as_an_option_points_to_set(option, key):
    output = invoke("train", option, "faces", code=2)
    assert f"--set {key}=faces" in output
    assert "--nproc" not in output


def test_overrides_joined_by_a_space_get_the_hint_commas_get():
    output = invoke("spec", "show", "--set", "train.epochs=1 train.lr=0.1", code=1)
    assert "one --set per override: --set train.epochs=1 --set train.lr=0.1" in output


# ------------------------------------------------------------------ plots


def test_a_one_epoch_run_is_plotted_with_whole_epoch_ticks(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from hydranet.core import plot

    run = tmp_path / "run"
    run.mkdir()
    with open(run / "metrics.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "train_loss.age", "val_loss.age", "val.age.mae", "weight.age"])
        writer.writerow([1, 0.5, 0.6, 3.0, 1.0])
    figures = []
    saved = plot._save

    def recording(figure, path: Path) -> Path:
        written = saved(figure, path)
        figures.append(figure)
        return written

    monkeypatch.setattr(plot, "_save", recording)
    assert len(plot.plot_run(run)) == 3
    for figure in figures:
        for ax in figure.axes:
            if ax.get_visible() and ax.get_xlabel() == "epoch":
                assert list(ax.get_xticks()) == [1.0]
                low, high = ax.get_xlim()
                assert low < 1 < high
