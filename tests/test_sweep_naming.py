"""How a sweep names its run folders: scalars as written, mappings readably, and older names still found.

`--sweep 'weighting=[sum, {name: static, weights: {age: 2}}]'` named its
second folder `weighting=_name_static,_weights_age_2-<hash>`; it is now
`weighting=static(weights.age=2)-<hash>`, and a sweep continued over a folder
of the older names skips and resumes its runs there instead of training them
again beside them.
"""

from __future__ import annotations

import re

import pytest
import yaml
from click.testing import CliRunner

from conftest import tiny_spec
from hydranet.core.cli import cli
from hydranet.core.sweep import Combination, SweepProblem, _refuse_another_sweep, parse_sweeps
from hydranet.core.sweep_naming import MAX_NAME, folder_name

STATIC = "{name: static, weights: {age: 2}}"
#: characters a folder name must not hold on Linux, macOS or Windows (or that a shell globs), and spaces
UNSAFE = re.compile(r"[/\\:*?\"'<>|\[\]{} ]")


def test_a_mapping_value_is_named_by_its_name_and_its_other_keys_dotted_with_the_hash_kept():
    name = folder_name([("weighting", STATIC)])
    assert re.fullmatch(r"weighting=static\(weights\.age=2\)-[0-9a-f]{8}", name), name
    two = folder_name([("weighting", "{name: static, weights: {age: 2, gender: 1}}"), ("train.seed", "0")])
    assert two.startswith("weighting=static(weights.age=2,weights.gender=1),train.seed=0-")
    # the hash is of the exact values, as before: one older name and the new one share it
    assert name[-8:] == folder_name([("weighting", STATIC)], readable=False)[-8:]
    assert name != folder_name([("weighting", "{name: static, weights: {age: 3}}")])
    assert folder_name([("weighting", STATIC)]) == name  # stable
    # {name: static} is not the value static: another folder
    assert folder_name([("weighting", "{name: static}")]) != folder_name([("weighting", "static")])
    assert folder_name([("tasks", "[age, {name: gender, x: [1, 2]}]")]).startswith("tasks=(age,gender(x=(1,2)))-")


def test_every_name_is_safe_on_every_file_system_and_short():
    nasty = '{name: "a/b", path: "C:\\\\x*?<>|", quote: "it\'s", list: [1, "two words"]}'
    for settings in ([("weighting", nasty)], [("data.root", 'a/b c "d"')], [("weighting", "{}")],
                     [("weighting", "{name: static, weights: {" + ", ".join(f"t{i}: {i}" for i in range(60)) + "}}")]):
        name = folder_name(settings)
        assert not UNSAFE.search(name), name
        assert len(name) <= MAX_NAME + 9 and not name.endswith((".", " "))


def test_a_scalar_value_is_named_as_before():
    # what older sweeps named their folders: found again on a rerun
    assert folder_name([("weighting", "dwa"), ("train.seed", "1")]) == "weighting=dwa,train.seed=1"
    assert folder_name([("train.lr", "1e-3")]) == "train.lr=1e-3"
    for settings in ([("data.root", "a/b c")], [("data.root", "x(1)")], [("data.root", "x" * 500)]):
        assert folder_name(settings) == folder_name(settings, readable=False)
    assert folder_name([("data.root", "x(1)")]).startswith("data.root=x_1-")  # parentheses only in mappings


def test_a_folder_of_a_readable_name_is_the_same_sweeps_not_another(tmp_path):
    name = folder_name([("weighting", "{name: static, weights: {age: 2, gender: 1}}"), ("train.seed", "0")])
    (tmp_path / name).mkdir()
    (tmp_path / name / "spec.yaml").write_text("{}")
    _refuse_another_sweep(tmp_path, parse_sweeps(["weighting=sum", "train.seed=0"]), "--sweep")  # no refusal
    with pytest.raises(SweepProblem, match="holds the runs of another sweep"):
        _refuse_another_sweep(tmp_path, parse_sweeps(["weighting=sum"]), "--sweep")


def test_a_sweep_continued_over_a_folder_of_older_names_skips_its_runs_there(faces, tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(faces, epochs=1)))
    out = tmp_path / "w"
    args = ["train", str(spec), "--sweep", f"weighting=[sum, {STATIC}]", "--out", str(out), "--no-progress"]
    first = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    new = out / folder_name([("weighting", STATIC)])
    assert new.is_dir() and "static(weights.age=2)" in new.name
    # the folder as a sweep before the readable names left it
    old = out / folder_name([("weighting", STATIC)], readable=False)
    assert old.name.startswith("weighting=_name_static,_weights_age_2-")
    new.rename(old)
    again = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert f"run 2/2: weighting={STATIC}: finished already in {old}, skipped" in again.output
    assert not new.exists() and "epoch 1/1" not in again.output
    assert sorted(p.name for p in out.iterdir()) == sorted(["compare.csv", "weighting=sum", old.name])


def test_the_older_name_is_taken_only_where_the_readable_one_is_not_there(tmp_path):
    """So a stopped run under an older name resumes there (the same lookup as the skip above)."""
    from hydranet.core.sweep_naming import run_folder

    combo = Combination(1, (("weighting", STATIC),))
    assert run_folder(tmp_path, combo) == tmp_path / combo.folder  # nothing there: the readable name
    old = tmp_path / folder_name(combo.settings, readable=False)
    old.mkdir()
    assert run_folder(tmp_path, combo) == old
    (tmp_path / combo.folder).mkdir()  # both: the readable name wins
    assert run_folder(tmp_path, combo) == tmp_path / combo.folder
