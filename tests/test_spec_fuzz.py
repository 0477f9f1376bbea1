"""Property-based: however a spec is mangled, loading it raises SpecError and nothing else.

Valid specs (the demo spec, the UTKFace spec, tiny variants) are mutated (wrong
types at any path, unknown, missing and misspelt keys, bad names, deep nesting,
shared and self-referencing subtrees, which YAML writes as anchors and
aliases) and loaded both as dicts and as YAML files; garbage bytes, mangled
YAML and TOML text, empty files and alias bombs are loaded as files. Every
problem must carry a path, or, for a problem with the whole file, come with
the file's name. Bounded to a few seconds: `max_examples` is small and each
load takes milliseconds.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import tiny_spec
from hydranet.core.errors import SpecError
from hydranet.core.plugins import load_components, make_plugin_manager
from hydranet.core.spec import ResolvedSpec, load_spec
from hydranet.core.spec_files import MAX_SPEC_BYTES, MAX_SPEC_DEPTH, builtin_spec_path, read_spec_file

COMPONENTS = load_components(make_plugin_manager(entry_points=False))
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_files = itertools.count()

BASES = [
    read_spec_file(builtin_spec_path("demo")),
    read_spec_file(builtin_spec_path("utkface")),
    tiny_spec(Path("data/UTKFace")),
    {"tasks": ["age"], "data": "synthetic"},
    {"tasks": ["gender", {"name": "smiling", "kind": "binary", "label": "smile", "class_names": ["no", "yes"]},
               {"name": "hair", "kind": "multiclass", "params": {"label": "hair", "num_classes": 3}}],
     "data": {"name": "folder", "root": "imgs", "csv": "imgs/labels.csv"},
     "weighting": {"name": "static", "weights": {"gender": 1.0, "smiling": 2.0, "hair": 0.5}},
     "augment": {"flip": False}, "train": {"optimizer": "sgd", "momentum": 0.9, "compile": False}},
]
for base in BASES:  # the mutations start from specs that load
    assert isinstance(load_spec(base, components=COMPONENTS), ResolvedSpec)

DEMO_YAML = builtin_spec_path("demo").read_text()
DEMO_TOML = """\
image_size = 32
tasks = ["age", "gender", { name = "smiling", kind = "binary", label = "smile" }]
weighting = "uncertainty"

[backbone]
name = "tiny"
width = 32

[data]
name = "synthetic"
count = 2000
val_fraction = 0.15

[train]
epochs = 8
lr = 3.0e-3
"""

# --- what a mangled spec may contain --------------------------------------------------------------

BAD_NAMES = st.sampled_from(["", " ", "1age", "age gender", "a.b", "../etc/passwd", "x" * 300, "résumé", "年龄",
                             "resnet1", "gendr", "synthetc", "dwa ", "AGE", "None", "null", "-", "_", "age\n"])
# "" is left out: an empty top-level key gets an empty path (see test_an_empty_top_level_key_has_a_path)
KEYS = st.one_of(st.text(min_size=1, max_size=12), st.sampled_from(["name", "kind", "params", "label", "root", "epochs",
                                                        "num_clases", "bach_size", "tasks", "data"]),
                 st.integers(-3, 3), st.none(), st.booleans())
# No subnormal floats: some torch builds (2.4's) load a library that flushes them to zero for the whole
# process, and hypothesis then refuses to draw them. Specs gain nothing from them.
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False), st.text(max_size=20), st.binary(max_size=8),
    st.dates(), st.datetimes(), BAD_NAMES,
    st.sampled_from(["tiny", "resnet18", "age", "gender", "ethnicity", "binary", "synthetic", "utkface", "dwa",
                     "sum", "auto", "cpu", "cosine", "1e-3", "8", "true", -1, 0, 1, 7, 2**63, math.inf]),
)
JUNK = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
                    max_leaves=8)


def containers(node: Any, seen: set[int] | None = None) -> Iterator[dict | list]:
    """Every dict and list in `node` (once each, even when shared or cyclic)."""
    seen = set() if seen is None else seen
    if not isinstance(node, (dict, list)) or id(node) in seen:
        return
    seen.add(id(node))
    yield node
    for child in list(node.values() if isinstance(node, dict) else node):
        yield from containers(child, seen)


def nest(value: Any, depth: int, as_dict: bool) -> Any:
    for _ in range(depth):
        value = {"x": value} if as_dict else [value]
    return value


OPS = ["replace", "delete", "add", "rename", "bad_name", "nest", "share"]


def mutate(spec: dict, data: st.DataObject) -> None:
    """One random edit somewhere in `spec`, in place."""
    places = list(containers(spec))
    node = data.draw(st.sampled_from(places))
    keys = list(node) if isinstance(node, dict) else list(range(len(node)))
    op = data.draw(st.sampled_from(OPS))
    key = data.draw(st.sampled_from(keys)) if keys else None
    if op == "add" or key is None:
        if isinstance(node, dict):
            node[data.draw(KEYS)] = data.draw(JUNK)
        else:
            node.append(data.draw(JUNK))
    elif op == "replace":
        node[key] = data.draw(JUNK)
    elif op == "delete":
        del node[key]
    elif op == "rename" and isinstance(node, dict):
        word = str(key)
        cut = data.draw(st.integers(0, len(word)))
        node[word[:cut] + word[cut + 1:] if data.draw(st.booleans()) else word[:cut] + "_" + word[cut:]] = node.pop(key)
    elif op == "bad_name":
        if isinstance(node, dict):
            node["name"] = data.draw(BAD_NAMES)
        else:
            node[key] = data.draw(BAD_NAMES)
    elif op == "nest":
        node[key] = nest(node[key], data.draw(st.integers(1, MAX_SPEC_DEPTH + 10)), data.draw(st.booleans()))
    else:  # share: the same subtree in two places (YAML anchors/aliases), possibly containing itself
        node[key] = data.draw(st.sampled_from(places))


@st.composite
def mutated_specs(draw: Any) -> dict:
    spec = copy.deepcopy(draw(st.sampled_from(BASES)))
    data = draw(st.data())
    for _ in range(draw(st.integers(1, 4))):
        mutate(spec, data)
    return spec


# --- the property ---------------------------------------------------------------------------------

def check(source: dict | Path) -> SpecError | None:
    """Load `source`; only SpecError may escape, and every problem must say where it is."""
    started = time.perf_counter()
    try:
        load_spec(source, components=COMPONENTS)
        return None
    except SpecError as error:
        assert error.problems, "a SpecError must list its problems"
        for path, message in error.problems:
            assert isinstance(path, str) and isinstance(message, str) and message.strip()
            if not path:  # a problem with the whole file: the error must name the file
                assert isinstance(source, Path), f"a problem without a path in a dict spec: {message}"
                assert error.source == str(source) and str(source) in str(error)
        return error
    finally:
        assert time.perf_counter() - started < 5, "loading a spec must never hang"


def write(folder: Path, content: str | bytes, suffix: str) -> Path:
    path = folder / f"spec{next(_files)}{suffix}"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("specs")


@FAST
@given(mutated_specs())
def test_mutated_spec_dicts_raise_only_spec_errors_with_paths(spec: dict) -> None:
    check(spec)


@FAST
@given(mutated_specs())
def test_mutated_spec_files_raise_only_spec_errors_with_paths(folder: Path, spec: dict) -> None:
    # shared subtrees become anchors and aliases; self-containing ones become recursive aliases
    check(write(folder, yaml.safe_dump(spec, allow_unicode=True), ".yaml"))


@FAST
@given(st.binary(max_size=300), st.sampled_from([".yaml", ".yml", ".toml", ""]))
def test_garbage_bytes(folder: Path, content: bytes, suffix: str) -> None:
    check(write(folder, content, suffix))


YAML_SYNTAX = st.sampled_from(list(":-[]{}&*!|>#'\",?%@`\n\t ") + ["&a ", "*a", "!!python/object:os.system ", "<<: ",
                                                                       "!!binary ", "---\n", "...\n", "\ufeff", "\x00"])
TOML_SYNTAX = st.sampled_from(list("[]{}=\"'.,#\n ") + ["[[tasks]]\n", "[data]\n", "= 1979-05-27T07:32:00Z", "'''",
                                                        '"""', "inf", "nan", "0x1F", "\\u00", "\x00"])


@st.composite
def edited(draw: Any, text: str, syntax: st.SearchStrategy[str]) -> str:
    """`text` with a few characters deleted, replaced or inserted (mostly syntax characters)."""
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        piece = draw(st.one_of(syntax, st.text(max_size=4)))
        cut = draw(st.integers(0, 3))
        text = text[:at] + piece + text[at + cut:]
    return text


@FAST
@given(edited(DEMO_YAML, YAML_SYNTAX))
def test_mangled_yaml_text(folder: Path, text: str) -> None:
    check(write(folder, text, ".yaml"))


@FAST
@given(edited(DEMO_TOML, TOML_SYNTAX))
def test_mangled_toml_text(folder: Path, text: str) -> None:
    check(write(folder, text, ".toml"))


@FAST
@given(st.integers(2, 12), st.integers(2, 12),
       st.sampled_from(["data.extra", "tasks", "train.epochs", "backbone.width", "top", "tasks[0].params.class_names"]))
def test_yaml_alias_expansion_is_bounded(folder: Path, width: int, depth: int, where: str) -> None:
    """width ** depth values from a few lines: refused unless small, and never expanded to find out."""
    bomb = yaml_bomb(width, depth)
    placed = {"data.extra": "data: {name: utkface, root: x, extra: *top}\ntasks: [age]\n",
              "tasks": "data: {name: utkface, root: x}\ntasks: *top\n",
              "train.epochs": "data: {name: utkface, root: x}\ntasks: [age]\ntrain: {epochs: *top}\n",
              "backbone.width": "data: {name: utkface, root: x}\ntasks: [age]\nbackbone: {name: tiny, width: *top}\n",
              "top": "data: {name: utkface, root: x}\ntasks: [age]\nlaughs: *top\n",
              "tasks[0].params.class_names": "data: {name: utkface, root: x}\n"
                                             "tasks: [{name: g, kind: binary, label: g, class_names: *top}]\n"}[where]
    error = check(write(folder, bomb + placed, ".yaml"))
    assert error is not None
    if width ** depth > 100_000:
        assert "alias bomb" in str(error)


def yaml_bomb(width: int, depth: int) -> str:
    """The billion-laughs pattern: each level a list of `width` aliases to the level below; the last is `top`."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, depth):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    lines.append(f"top: &top [*l{depth - 1}]")
    return "\n".join(lines) + "\n"


# --- named cases ----------------------------------------------------------------------------------

def test_billion_laughs_is_refused_quickly_naming_the_file(folder: Path) -> None:
    path = write(folder, yaml_bomb(10, 9) + "data: {name: utkface, root: x, extra: *top}\ntasks: [age]\n", ".yaml")
    started = time.perf_counter()
    with pytest.raises(SpecError) as caught:
        load_spec(path, components=COMPONENTS)
    assert time.perf_counter() - started < 2
    assert caught.value.problems[0][0] == "" and "alias bomb" in str(caught.value) and str(path) in str(caught.value)


@pytest.mark.parametrize("text", [
    "data: &d {name: utkface, root: x, me: *d}\ntasks: [age]\n",
    "data: {name: utkface, root: x}\ntasks: &t [age, *t]\n",
    "&s {tasks: [age], data: {name: utkface, root: x}, self: *s}\n",
])
def test_recursive_alias_is_refused(folder: Path, text: str) -> None:
    error = check(write(folder, text, ".yaml"))
    assert error is not None and "alias to itself" in str(error)


def test_ordinary_anchors_still_load(folder: Path) -> None:
    text = ("tasks:\n  - {name: age, hidden: &h 16}\n  - {name: gender, hidden: *h}\n"
            "data: {name: utkface, root: x}\n"
            "train: {epochs: &n 3, batch_size: *n}\n")
    spec = load_spec(write(folder, text, ".yaml"), components=COMPONENTS)
    assert spec.spec.train.batch_size == 3 and spec.tasks[1].component.params.hidden == 16


@pytest.mark.parametrize("suffix, text", [
    (".yaml", "tasks: [age]\ndata: {name: utkface, root: x}\nx: " + "[" * 1000 + "]" * 1000 + "\n"),
    (".yaml", "tasks: [age]\ndata: {name: utkface, root: x}\nx: " + "{a: " * 1000 + "}" * 1000 + "\n"),
    (".yaml", "tasks: [age]\ndata: {name: utkface, root: x}\nx: " + "[" * 60 + "]" * 60 + "\n"),
    (".toml", "x = " + "[" * 1000 + "]" * 1000 + "\n"),
    (".toml", "x = " + "{a = " * 1000 + "}" * 1000 + "\n"),
    (".toml", "x = " + "[" * 60 + "]" * 60 + "\n"),
])
def test_deep_nesting_in_a_file_is_a_spec_error(folder: Path, suffix: str, text: str) -> None:
    error = check(write(folder, text, suffix))
    assert error is not None and "nested" in str(error)


@pytest.mark.parametrize("depth", [60, 300])
def test_deep_nesting_in_a_dict_is_a_spec_error(depth: int) -> None:
    error = check({"tasks": ["age"], "data": {"name": "utkface", "root": "x", "x": nest(1, depth, False)}})
    assert error is not None and error.problems[0][0].startswith("data")


def test_very_deep_nesting_in_a_dict_is_a_spec_error() -> None:
    error = check({"tasks": ["age"], "data": {"name": "utkface", "root": "x", "x": nest(1, 1000, False)}})
    assert error is not None


def test_an_empty_top_level_key_has_a_path() -> None:
    check({**BASES[2], "": None})


@pytest.mark.parametrize("suffix, content, words", [
    (".yaml", b"", "empty"),
    (".yaml", b"   \n\n", "empty"),
    (".yaml", b"# only a comment\n", "empty"),
    (".yaml", b"---\n...\n", "empty"),
    (".toml", b"", "tasks: required field missing"),
    (".yaml", b"\xff\xfe\x00garbage", "not a text file"),
    (".yaml", b"- age\n- gender\n", "not a list"),
    (".yaml", b"just a string", "not a str"),
    (".yaml", b"tasks: [age\n", "invalid YAML"),
    (".toml", b"tasks = [age]\n", "invalid TOML"),
    (".yaml", b"tasks: [age]\ndata: {name: utkface, root: x}\nx: !!binary aGVsbG8=\nt: 2001-12-14\n",
     "x: unknown field"),
])
def test_named_bad_files(folder: Path, suffix: str, content: bytes, words: str) -> None:
    path = write(folder, content, suffix)
    error = check(path)
    assert error is not None and words in str(error)


def test_a_python_tag_is_refused_without_running(folder: Path) -> None:
    marker = folder / "pwned"
    path = write(folder, f"!!python/object/apply:os.system ['touch {marker}']\n", ".yaml")
    error = check(path)
    assert error is not None and "invalid YAML" in str(error) and not marker.exists()


def test_an_oversized_file_is_refused_before_parsing(folder: Path) -> None:
    path = write(folder, "tasks: [age]\ndata: {name: utkface, root: x}\n" + "#" * MAX_SPEC_BYTES, ".yaml")
    error = check(path)
    assert error is not None and "byte limit" in str(error) and path.name in str(error)


def test_odd_scalar_types_in_a_dict() -> None:
    """Values YAML can produce (dates, bytes, sets) and non-string keys, at every level."""
    spec = copy.deepcopy(BASES[0])
    spec["train"]["epochs"] = datetime.date(2020, 1, 1)
    spec["data"][3] = b"\x00"
    spec[None] = {1, 2}
    spec["backbone"]["width"] = math.nan
    found = dict(check(spec).problems)  # type: ignore[union-attr]
    assert {"train.epochs", "backbone.width"} <= set(found)
    assert any(path.endswith("None") for path in found)
