"""Spec files as a user writes them: YAML and TOML, errors with paths and suggestions, --set overrides."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from hydranet.core.errors import SpecError
from hydranet.core.spec import Spec, apply_overrides, load_spec
from hydranet.core.spec_files import builtin_spec_names
from hydranet.core.spec_schema import spec_schema

BASE = {
    "backbone": {"name": "tiny", "width": 8},
    "tasks": ["age", "gender", "ethnicity"],
    "data": {"name": "utkface", "root": "data/UTKFace"},
}


def load(raw, *overrides, components=None, option="--set"):
    return load_spec(raw, overrides, components=components, option=option)


def problems(raw, *overrides, components=None, option="--set") -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        load(raw, *overrides, components=components, option=option)
    return dict(caught.value.problems)


def test_minimal_spec_fills_defaults(components):
    spec = load(BASE, components=components)
    assert spec.task_names == ["age", "gender", "ethnicity"]
    assert spec.weighting.entry.name == "sum"
    assert spec.spec.train.epochs == 10 and spec.spec.image_size == 64
    assert spec.backbone.params.width == 8
    assert spec.data.params.root == "data/UTKFace"


def test_new_task_from_a_kind_without_code(components):
    raw = {**BASE, "tasks": ["age", {"name": "smiling", "kind": "binary", "label": "smile",
                                     "class_names": ["no", "yes"]}]}
    spec = load(raw, components=components)
    smiling = spec.build_tasks()[1]
    assert smiling.name == "smiling" and smiling.label == "smile"
    assert smiling.parse_label({"smile": "yes"}) == 1 and smiling.parse_label({"smile": "maybe"}) is None


def test_all_errors_are_collected_with_paths_and_suggestions(components):
    raw = {
        "backbone": {"name": "resnet19"},
        "tasks": ["age", {"name": "hair", "kind": "multiclass", "label": "hair", "params": {"num_clases": 3}}],
        "data": {"name": "utkface"},
        "weighting": {"name": "dwa", "temprature": 2},
        "train": {"epochs": "many", "bach_size": 3},
    }
    found = problems(raw, components=components)
    assert "did you mean 'num_classes'?" in found["tasks[1].params.num_clases"]
    assert "did you mean 'batch_size'?" in found["train.bach_size"]
    assert "integer" in found["train.epochs"]
    # the component errors are in the same report as the shape errors, and stay when those are fixed
    for found in (found, problems({**raw, "train": {"epochs": 2}}, components=components)):
        assert "did you mean 'resnet18'?" in found["backbone.name"]
        assert "did you mean 'num_classes'?" in found["tasks[1].params.num_clases"]
        assert "did you mean 'temperature'?" in found["weighting.temprature"]
        assert found["data.root"] == ("required field missing. Folder of UTKFace images (e.g. data/UTKFace); labels "
                                      "are read from the file names.")


def test_names_in_freeze_and_head_lr_are_checked_beside_shape_problems(components):
    """QA: a bad backbone_lr hid the freeze and head_lr names until it was fixed."""
    raw = {**BASE, "tasks": ["age", "gender"], "weighting": "dwaa", "freeze": ["backbon", "gendr", 3],
           "train": {"backbone_lr": "x", "head_lr": {"agee": 0.1}}}
    found = problems(raw, components=components)
    assert set(found) == {"train.backbone_lr", "weighting.name", "freeze[0]", "freeze[1]", "freeze[2]",
                          "train.head_lr.agee"}
    assert "did you mean 'backbone'?" in found["freeze[0]"] and "did you mean 'gender'?" in found["freeze[1]"]
    assert found["train.head_lr.agee"] == "not a task of this spec; did you mean 'age'? tasks: age, gender"
    # without every task's name, the task names cannot be checked against them
    found = problems({**raw, "tasks": ["age", {"kind": "binary"}]}, components=components)
    assert "tasks[1].name" in found and not {"freeze[1]", "train.head_lr.agee"} & set(found)


def test_a_dataset_s_params_are_checked_beside_a_bad_shared_key(components):
    found = problems({**BASE, "data": {"name": "utkface", "val_fraction": 2, "rot": "x"}}, components=components)
    assert set(found) == {"data.val_fraction", "data.root", "data.rot"}
    assert "did you mean 'root'?" in found["data.rot"]


def test_unknown_task_and_section(components):
    found = problems({**BASE, "tasks": ["agee"], "taks": []}, components=components)
    assert "did you mean 'tasks'?" in found["taks"]
    found = problems({**BASE, "tasks": ["agee"]}, components=components)
    assert "unknown task 'agee'; did you mean 'age'?" in found["tasks[0].name"]


def test_a_name_in_the_wrong_case_gets_its_real_spelling(components):
    found = problems({**BASE, "weighting": "DWA", "tasks": ["Age"], "backbone": "Tiny"}, components=components)
    assert found["weighting.name"].startswith("unknown weighting 'DWA'; did you mean 'dwa'?")
    assert found["tasks[0].name"].startswith("unknown task 'Age'; did you mean 'age'?")
    assert "did you mean 'tiny'?" in found["backbone.name"]


def test_unknown_kind_lists_only_the_kinds(components):
    """`kind` names a family (binary, ...) to build a new task from; the ready tasks (age, ...) are not kinds."""
    found = problems({**BASE, "tasks": [{"name": "smiling", "kind": "binar", "label": "smile"}]},
                     components=components)
    message = found["tasks[0].kind"]
    assert message.startswith("unknown task kind 'binar'; did you mean 'binary'? known kinds: binary, multiclass, "
                              "regression")
    assert "age" not in message.split("known kinds: ")[1].split(" (")[0]
    assert "did you mean 'age'?" in problems({**BASE, "tasks": [{"name": "a2", "kind": "agee"}]},
                                             components=components)["tasks[0].kind"]
    # a ready task can still serve as a kind, with its presets
    assert load({**BASE, "tasks": [{"name": "age2", "kind": "age"}]}, components=components).task_names == ["age2"]


def test_unknown_task_name_says_how_to_make_a_new_task(components):
    message = problems({**BASE, "tasks": ["smiling"]}, components=components)["tasks[0].name"]
    assert message.startswith("unknown task 'smiling'; known tasks: age, ethnicity, gender;")
    assert "{name: smiling, kind: binary, label: <field>} (kinds: binary, multiclass, regression)" in message


def test_duplicate_task_names_and_bad_names_rejected(components):
    assert "appears more than once" in problems({**BASE, "tasks": ["age", "age"]}, components=components)["tasks"]
    found = problems({**BASE, "tasks": [{"name": "my.task", "kind": "age"}]}, components=components)
    assert "letters, digits" in found["tasks[0].name"]


def test_params_inline_and_nested_clash(components):
    raw = {**BASE, "tasks": [{"name": "age", "hidden": 8, "params": {"hidden": 16}}]}
    assert "both inline and under params" in problems(raw, components=components)["tasks[0].params.hidden"]


def test_static_weights_name_an_unknown_task(components):
    raw = {**BASE, "weighting": {"name": "static", "weights": {"agee": 2}}}
    found = problems(raw, components=components)
    (path, message), = found.items()
    assert path == "weighting.weights.agee" and "did you mean 'age'?" in message


def test_yaml_and_toml_files_give_the_same_spec(tmp_path, components):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(BASE))
    toml_text = 'tasks = ["age", "gender", "ethnicity"]\n[backbone]\nname = "tiny"\nwidth = 8\n' \
                '[data]\nname = "utkface"\nroot = "data/UTKFace"\n'
    (tmp_path / "a.toml").write_text(toml_text)
    assert load(tmp_path / "a.yaml", components=components).to_dict() == load(
        tmp_path / "a.toml", components=components).to_dict()


@pytest.mark.parametrize("content, expected", [
    ("", "the spec is empty"),
    ("- just\n- a list\n", "must be a mapping"),
    ("tasks: [age\n", "invalid YAML at line"),
    ("tasks: !!python/object/apply:os.system ['echo hi']\n", "invalid YAML"),
])
def test_malformed_files_name_the_file(tmp_path, content, expected, components):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(SpecError) as caught:
        load(path, components=components)
    assert expected in str(caught.value) and str(path) in str(caught.value)


@pytest.mark.parametrize("content, path, expected", [
    # PyYAML keeps the last of two equal keys without a word
    ("tasks: [age]\ndata: synthetic\ndata: {name: utkface, root: x}\n", "data",
     "given twice (lines 2 and 3); YAML would silently keep only the last: keep one"),
    ("tasks: [age]\ndata: synthetic\ntrain:\n  epochs: 2\n  lr: 0.1\n  epochs: 3\n", "train.epochs",
     "given twice (lines 4 and 6)"),
    # a missing ':' turns a section into one string
    ("tasks: [age]\ndata: synthetic\ntrain:\n  epochs 5\n", "train", "is a ':' missing after 'epochs'?"),
    # a '- ' item indented differently joins the lines above into one name
    ("tasks:\n - age\n  - gender\ndata: synthetic\n", "tasks[0].name",
     "YAML read several lines as this one name: are the list's '- ' items indented alike?"),
    ("tasks:\n\t- age\ndata: synthetic\n", "", "YAML indents with spaces, not tabs"),
    ("tasks: [age]\ndata: synthetic\ntrain:\n  epochs: 5\n   lr: 0.1\n", "",
     "mapping values are not allowed here; usually a line indented differently"),
    ("tasks: [age, gender\ndata: synthetic\n", "", "a list [...] or mapping {...} is not closed"),
    # two equal keys on one line: the columns tell them apart
    ("tasks: [age]\ndata: synthetic\n\ntrain: {epochs: 3, epochs: 4}\n", "train.epochs",
     "given twice (line 4, columns 9 and 20); YAML would silently keep only the last: keep one"),
])
def test_common_yaml_slips_are_explained(tmp_path, content, path, expected, components):
    spec = tmp_path / "slip.yaml"
    spec.write_text(content)
    with pytest.raises(SpecError) as caught:
        load(spec, components=components)
    assert caught.value.source == str(spec)
    assert expected in dict(caught.value.problems)[path]


def test_yaml_anchors_and_merge_keys_are_not_duplicates(tmp_path, components):
    spec = tmp_path / "anchors.yaml"
    spec.write_text("tasks: [age]\ndata: synthetic\ntrain: {epochs: 2}\n"
                    "weighting: &w {name: dwa}\nbackbone: {<<: *w, name: tiny, width: 8}\n")
    assert load(spec, components=components).spec.train.epochs == 2
    spec.write_text("tasks: [age]\ndata: synthetic\nweighting: {<<: {name: dwa}, temperature: 3}\n")
    assert load(spec, components=components).weighting.params.temperature == 3


def test_binary_garbage_and_missing_file(tmp_path, components):
    path = tmp_path / "garbage.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(SpecError, match="not a text file"):
        load(path, components=components)
    with pytest.raises(SpecError, match="spec file not found"):
        load(tmp_path / "nope.yaml", components=components)


def test_a_folder_given_as_the_spec_names_its_spec_files(tmp_path, components):
    with pytest.raises(SpecError) as caught:
        load(tmp_path, components=components)
    assert dict(caught.value.problems)[""] == (f"{tmp_path} is a folder, not a spec file, and holds no .yaml, .yml "
                                               "or .toml file; pass a spec file")
    for name in ("b.toml", "a.yaml", "notes.txt"):
        (tmp_path / name).write_text("")
    with pytest.raises(SpecError) as caught:
        load(tmp_path, components=components)
    assert dict(caught.value.problems)[""] == (f"{tmp_path} is a folder, not a spec file; pass one of the spec "
                                               f"files in it: {tmp_path / 'a.yaml'}, {tmp_path / 'b.toml'}")


def test_an_empty_section_says_it_is_empty(tmp_path, components):
    path = tmp_path / "empty.yaml"
    path.write_text("tasks: [age]\ndata: synthetic\ntrain:\naugment:\n")
    with pytest.raises(SpecError) as caught:
        load(path, components=components)
    found = dict(caught.value.problems)
    assert found["train"] == ("is empty (nothing is indented under it); remove the line to use the defaults, "
                              "or indent its fields under it")
    assert set(found) == {"train", "augment"}
    path.write_text("tasks: [age]\ndata:\n")
    found = problems(path, components=components)
    assert found["data"].startswith("is empty (nothing is indented under it), but it is required. The dataset:")
    assert found["data"].endswith("Datasets: folder, synthetic, utkface.")


def test_overrides_set_nested_values_and_promote_names(components):
    spec = load(BASE, "train.epochs=3", "weighting=dwa", "weighting.temperature=4",
                "tasks[1].hidden=16", "data.val_fraction=0.2", components=components)
    assert spec.spec.train.epochs == 3
    assert spec.weighting.entry.name == "dwa" and spec.weighting.params.temperature == 4
    assert spec.tasks[1].component.params.hidden == 16
    assert spec.spec.data.val_fraction == 0.2


def test_bad_overrides_are_reported(components):
    with pytest.raises(SpecError) as caught:
        apply_overrides(BASE, ["no-equals-sign", "tasks[9].label=x"])
    found = dict(caught.value.problems)
    assert "is not of the form KEY=VALUE" in found["--set"]
    assert "out of range" in found["--set tasks[9].label"]


def test_a_set_value_that_is_not_yaml_is_one_line_with_a_hint():
    with pytest.raises(SpecError) as caught:
        apply_overrides(BASE, ["train.epochs=[1"])
    assert dict(caught.value.problems)["--set train.epochs"] == (
        "the value is invalid YAML at column 3 of '[1': expected ',' or ']', but got '<stream end>'; "
        "a list [...] or mapping {...} is not closed, or two of its items lack a ',' between them")


def test_a_set_list_index_that_is_not_a_number_says_so():
    with pytest.raises(SpecError) as caught:
        apply_overrides(BASE, ["tasks[x]=1", "tasks.y.label=z", "tasks[4]=age"])
    found = dict(caught.value.problems)
    assert found["--set tasks[x]"] == ("cannot set this path: 'x' is not an index; tasks is a list, so this needs "
                                       "a number: 0 to 2, or 3 to add an item")
    assert found["--set tasks.y.label"].endswith("'y' is not an index; tasks is a list, so this needs a number: 0 to 2")
    assert found["--set tasks[4]"] == ("cannot set this path: list index 4 out of range: the list has 3 items "
                                       "(0 to 2, or 3 to add an item)")


def test_resolved_spec_round_trips(components):
    spec = load({**BASE, "weighting": {"name": "dwa"}}, components=components)
    again = load(spec.to_dict(), components=components)
    assert again.to_dict() == spec.to_dict()
    assert spec.to_dict()["weighting"] == {"name": "dwa", "temperature": 2.0}


def test_builtin_specs_validate(components):
    assert {"demo", "utkface"} <= set(builtin_spec_names())
    for name in builtin_spec_names():
        load(name, components=components)
    for path in Path(__file__).parent.parent.joinpath("specs").glob("*.yaml"):
        load(path, components=components)


def test_schema_is_json_and_describes_sections():
    schema = spec_schema()
    json.dumps(schema)
    assert {"backbone", "tasks", "data", "weighting", "train"} <= set(schema["properties"])
    assert "tasks" in schema["required"]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] and schema["description"]
    from click.testing import CliRunner
    from hydranet.core.cli import cli

    result = CliRunner().invoke(cli, ["spec", "schema"])
    assert result.exit_code == 0 and json.loads(result.output) == schema


def test_schema_lists_the_names_registered_when_printed_and_says_what_it_leaves_to_validate(components):
    import jsonschema
    schema = spec_schema(components)
    assert "registered when this schema was printed" in schema["description"]
    assert "a task named twice" in schema["description"] and "parameters" in schema["description"]
    weighting = schema["allOf"][0]["properties"]["weighting"]
    registered = components.weightings
    assert weighting["then"]["enum"] == sorted(name for entry in registered for name in (entry.name, *entry.aliases))
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors({**BASE, "weighting": "dwaa"}))
    assert [(e.json_path, e.message.split(" is not")[0]) for e in errors] == [("$.weighting", "'dwaa'")]
    # the shape alone, whatever is installed
    shape = spec_schema(names=False)
    assert "allOf" not in shape and "registered when" not in shape["description"]
    assert not list(jsonschema.Draft202012Validator(shape).iter_errors({**BASE, "weighting": "dwaa"}))


def test_the_schema_of_class_names_takes_numbers_and_booleans_as_the_loader_does(components):
    """`class_names: [0, 1]` loads (the names "0", "1"), and `[false, true]` too ("false", "true"), but the schema
    said strings only, so editors flagged them."""
    import jsonschema
    from click.testing import CliRunner
    from hydranet.core.cli import cli

    for loaded in ([0, 1], [False, True]):
        task = {"name": "smile", "kind": "binary", "label": "smile", "class_names": loaded}
        spec = load_spec({**BASE, "tasks": [task]}, components=components)  # the loader takes it
        assert spec.build_tasks()[0].class_names == [str(name).lower() for name in loaded]
        shape = spec_schema(components)
        assert not list(jsonschema.Draft202012Validator(shape).iter_errors({**BASE, "tasks": [task]}))
    with_names = [e for e in components.tasks if e.params is not None and "class_names" in e.params.model_fields]
    assert {"binary", "multiclass", "gender", "ethnicity"} <= {e.name for e in with_names}
    for entry in with_names:  # each task's parameters, as `hydranet list tasks NAME` and the reference show them
        schema = entry.params.model_json_schema()
        names = {"type": "object", "properties": {"class_names": schema["properties"]["class_names"]}}
        for good in ([0, 1], [0.5, 2], ["no", "yes"], ["cat", 3], [False, True], None):
            assert not list(jsonschema.Draft202012Validator(names).iter_errors({"class_names": good})), (entry, good)
        for bad in ([[0], [1]], [{"a": 1}], "no,yes"):
            assert list(jsonschema.Draft202012Validator(names).iter_errors({"class_names": bad})), (entry, bad)
    listed = CliRunner().invoke(cli, ["list", "tasks", "binary"])
    assert re.search(r"class_names +list of \(string \| number \| boolean\) \| null", listed.output)


ROOT = Path(__file__).parent.parent


def doc_spec_examples() -> list[tuple[str, dict]]:
    """Every spec the project ships or shows: specs/, docs/examples/, and the docs' YAML snippets with a spec
    section (completed into a whole spec, as tests/test_docs.py does), read as the loader reads them."""
    from hydranet.core import yaml12
    from hydranet.core.spec_files import read_spec_file

    files = sorted(p for folder in (ROOT / "specs", ROOT / "docs" / "examples") for p in folder.iterdir()
                   if p.suffix in (".yaml", ".yml", ".toml"))
    found = [(str(p.relative_to(ROOT)), read_spec_file(p)) for p in files]
    base = {"tasks": ["age"], "data": {"name": "utkface", "root": "data/UTKFace"}}
    for page in sorted((ROOT / "docs").rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        for number, block in enumerate(re.findall(r"^```yaml\n(.*?)^```", text, flags=re.S | re.M)):
            raw = yaml12.load(block)
            if isinstance(raw, dict) and set(raw) & set(Spec.model_fields) and "on purpose" not in block:
                found.append((f"{page.relative_to(ROOT)}[{number}]", {**base, **raw}))
    return found


def test_schema_accepts_every_shipped_and_documented_spec(components):
    """Editors validate with `hydranet spec schema`: the short forms the loader accepts must pass it.

    The docs' snippets name components of plugins shown on their pages, so they are checked against the
    shape alone (names=False); the built-in specs against the built-in components' names too.
    """
    import jsonschema
    validator = jsonschema.Draft202012Validator(spec_schema(components))
    jsonschema.Draft202012Validator.check_schema(validator.schema)
    shape = jsonschema.Draft202012Validator(spec_schema(names=False))
    jsonschema.Draft202012Validator.check_schema(shape.schema)
    examples = doc_spec_examples()
    names = [where for where, _ in examples]
    assert "specs/demo.yaml" in names and "docs/examples/plugins_spec.yaml" in names and len(examples) >= 10
    failures = [f"{where}: {error.json_path}: {error.message}" for where, raw in examples
                for error in (validator if where.startswith("specs/") else shape).iter_errors(raw)]
    assert not failures, "\n".join(failures)
    # and every short form the loader's validators take
    short = {"backbone": "tiny", "tasks": ["age", {"name": "smiling", "kind": "binary", "label": "smile"}],
             "data": "synthetic", "weighting": "dwa", "augment": {"flip": "off"},
             "train": {"cuda_graphs": False, "compile": "no", "deterministic": "Yes", "channels_last": 1}}
    assert not list(validator.iter_errors(short))
    load(short, components=components)


@pytest.mark.parametrize("mistake", [
    {"trian": {"epochs": 2}},                       # unknown top-level key
    {"tasks": "age"},                               # a task list must be a list
    {"tasks": []},                                  # at least one task
    {"tasks": ["1age"]},                            # not a usable task name
    {"tasks": [5]},                                 # a task is a name or a mapping
    {"data": None},                                 # data is required
    {"backbone": ["tiny"]},                         # a section is a name or a mapping
    {"image_size": "big"},                          # wrong type
    {"image_size": 4},                              # out of range
    {"train": {"epochs": "many"}},                  # wrong type inside a section
    {"train": {"bach_size": 3}},                    # unknown key inside a closed section
    {"train": {"cuda_graphs": True}},               # only false is a short form of a choice
    {"augment": {"flip": "maybe"}},                 # not a boolean word
    {"weighting": {"temperature": 2, "name": 3}},   # a name is a string
    # names no plugin registered (QA: these passed the schema)
    {"weighting": "dwaa"},
    {"weighting": {"name": "dwaa"}},
    {"backbone": "Tiny"},
    {"data": {"name": "utk", "root": "x"}},
    {"tasks": ["agee"]},
    {"tasks": ["binary"]},                          # a kind needs its label: not usable by name alone
    {"tasks": [{"name": "agee", "hidden": 8}]},
    {"tasks": [{"name": "smiling", "kind": "binry", "label": "smile"}]},
])
def test_schema_rejects_what_the_loader_rejects(mistake, components):
    import jsonschema
    raw = {**BASE, **mistake}
    raw = {k: v for k, v in raw.items() if v is not None}
    assert list(jsonschema.Draft202012Validator(spec_schema(components)).iter_errors(raw)), mistake
    with pytest.raises(SpecError):
        load(raw, components=components)


def test_freeze_and_head_lr_must_name_parts_of_this_spec(components):
    found = problems({**BASE, "freeze": ["backbne", "ethnicty"], "train": {"head_lr": {"agee": 0.1}}},
                     components=components)
    assert "did you mean 'backbone'?" in found["freeze[0]"]
    assert "did you mean 'ethnicity'?" in found["freeze[1]"]
    assert "did you mean 'age'?" in found["train.head_lr.agee"]
    spec = load({**BASE, "freeze": ["backbone", "age"], "init_from": "runs/x/best.pt"}, components=components)
    assert spec.to_dict()["freeze"] == ["backbone", "age"] and spec.to_dict()["init_from"] == "runs/x/best.pt"


def test_yes_no_on_off_are_words_in_specs_and_overrides(tmp_path, components):
    """YAML 1.2's booleans: `[no, yes]` stays two class names and `off` a choice; boolean fields still read them."""
    path = tmp_path / "spec.yaml"
    path.write_text(
        "tasks:\n"
        "  - age\n"
        "  - {name: smiling, kind: binary, label: gender, class_names: [no, yes]}\n"
        "data: {name: synthetic}\n"
        "augment: {flip: no}\n"
        "train: {compile: off, cuda_graphs: off, deterministic: yes}\n")
    spec = load_spec(path, components=components)
    smiling = spec.build_tasks()[1]
    assert smiling.class_names == ["no", "yes"]
    train = spec.spec.train
    assert (train.compile, train.cuda_graphs, train.deterministic, spec.spec.augment.flip) == (False, "off", True, False)
    again = load_spec(tmp_path / "spec.yaml", ["tasks[1].class_names=[off, on]", "train.compile=on"],
                      components=components)
    assert again.build_tasks()[1].class_names == ["off", "on"] and again.spec.train.compile is True
    # what hydranet writes (a run folder's spec.yaml) reads back to the same spec
    reread = tmp_path / "written.yaml"
    reread.write_text(spec.to_yaml())
    assert load_spec(reread, components=components).to_dict() == spec.to_dict()


def test_misspelt_data_keys_suggest_the_shared_fields_too(components):
    """`data` holds the dataset's params and the keys every dataset shares; both are valid, both are suggested."""
    found = problems({**BASE, "data": {"name": "utkface", "root": "x", "stirct": True, "val_fractoin": 0.5}},
                     components=components)
    assert found["data.stirct"].startswith("unknown field; did you mean 'strict'?")
    assert found["data.val_fractoin"].startswith("unknown field; did you mean 'val_fraction'?")
    listed = found["data.stirct"].split("valid fields: ")[1].split(", ")
    assert {"root", "val_fraction", "split_seed", "strict", "cache", "placement", "workers",
            "device_memory_gb"} <= set(listed)
    found = problems({**BASE, "data": {"name": "folder", "root": "x", "cahce": False}}, components=components)
    assert "did you mean 'cache'?" in found["data.cahce"]
    assert {"root", "csv", "file_column", "cache"} <= set(found["data.cahce"].split("valid fields: ")[1].split(", "))
    # an inline task key: the task section's own keys are valid there too
    found = problems({**BASE, "tasks": [{"name": "a", "kind": "regression", "parms": {"label": "age"}}]},
                     components=components)
    assert "did you mean 'params'?" in found["tasks[0].parms"]


def test_a_dataset_without_parameters_still_suggests_the_shared_data_keys():
    """A dataset plugin that registers no params model: a misspelt shared key is a typo, not a parameter."""
    import hydranet
    from hydranet.core.plugins import load_components, make_plugin_manager

    class Plain:
        @hydranet.hookimpl
        def register_datasets(self, register):
            register("plain", lambda: None, description="A dataset with no parameters.")

    pm = make_plugin_manager(entry_points=False)
    pm.add_plugin(Plain(), "plain", distribution="plain", version="0", builtin=False)
    components = load_components(pm)
    found = problems({**BASE, "data": {"name": "plain", "stirct": True, "val_fractoin": 0.2, "colour": "red"}},
                     components=components)
    assert found["data.stirct"].startswith("unknown field; did you mean 'strict'? dataset 'plain' takes no "
                                           "parameters; valid fields: ")
    assert "did you mean 'val_fraction'?" in found["data.val_fractoin"]
    assert {"name", "val_fraction", "strict", "cache", "workers"} <= set(found["data.colour"].split("valid fields: ")[1]
                                                                          .split(", "))
    assert "did you mean" not in found["data.colour"]
    assert "did you mean 'train.batch_size'?" in problems({**BASE, "data": {"name": "plain", "batchsize": 3}},
                                                          components=components)["data.batchsize"]
    assert load({**BASE, "data": {"name": "plain", "strict": True}}, components=components).spec.data.strict


def test_a_key_in_the_wrong_section_is_suggested_where_it_belongs(components):
    found = problems({**BASE, "epochs": 3, "data": {"name": "synthetic", "batchsize": 8},
                      "train": {"val_fraction": 0.2, "flip": False}, "augment": {"lr": 0.1}}, components=components)
    assert found["epochs"].startswith("unknown field; did you mean 'train.epochs'? (it belongs in the train section)")
    assert "did you mean 'train.batch_size'?" in found["data.batchsize"]  # not the dataset's own 'size'
    assert "did you mean 'data.val_fraction'?" in found["train.val_fraction"]
    assert "did you mean 'augment.flip'?" in found["train.flip"]
    assert "did you mean 'train.lr'?" in found["augment.lr"]
    # a closer key in its own section still wins
    assert "did you mean 'batch_size'?" in problems({**BASE, "train": {"bach_size": 3}},
                                                    components=components)["train.bach_size"]
    assert "did you mean 'sum'" not in problems({**BASE, "weighting": {"name": "sum", "temperature": 2}},
                                                components=components)["weighting.temperature"]


def test_an_unknown_section_made_by_set_names_the_override(components):
    found = problems(BASE, "trian.epochs=3", components=components)
    assert "did you mean 'train'?" in found["trian (from --set trian.epochs=3)"]


def test_yaml_1_2_floats_are_floats_in_specs_and_overrides(tmp_path, components):
    """PyYAML (YAML 1.1) reads `1e-3` as a string, which an editor checking the JSON Schema flags; YAML 1.2 does not."""
    from hydranet.core import yaml12
    from hydranet.core.spec_files import read_spec_file

    text = ("tasks: [age]\n"
            "data: {name: synthetic, val_fraction: .25}\n"
            "train: {lr: 1e-3, backbone_lr: 1E-4, head_lr: {age: +1.0e-2}, weight_decay: 5e-5, epochs: 3}\n")
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    raw = read_spec_file(path)
    train = raw["train"]
    assert (train["lr"], train["backbone_lr"], train["weight_decay"]) == (0.001, 1e-4, 5e-5)
    assert train["head_lr"] == {"age": 0.01}
    assert type(train["lr"]) is float and raw["data"]["val_fraction"] == 0.25
    assert train["epochs"] == 3 and type(train["epochs"]) is int  # integers stay integers
    import jsonschema
    validator = jsonschema.Draft202012Validator(spec_schema())
    assert not list(validator.iter_errors(raw))
    assert list(validator.iter_errors(yaml.safe_load(text)))  # what YAML 1.1 made of it: '1e-3' is not a number
    assert load_spec(path, ["train.lr=2E-3"], components=components).spec.train.lr == 0.002
    # the rest of YAML 1.2's core schema floats; ints, and strings that only look numeric, unchanged
    inf = float("inf")
    assert yaml12.load("[.5, -1.5e+3, 1e3, .inf, -.Inf, 1.]") == [0.5, -1500.0, 1000.0, inf, -inf, 1.0]
    nan, *others = yaml12.load("[.NaN, 5, -5, 0, '1e-3', 1e, e5, 1.2.3, inf]")
    assert nan != nan and others == [5, -5, 0, "1e-3", "1e", "e5", "1.2.3", "inf"]
    assert [type(value) for value in others[:3]] == [int, int, int]


def test_yaml_1_2_integers_have_no_leading_zero_octal_or_underscores():
    from hydranet.core import yaml12

    assert yaml12.load("[012, 0o12, 0x1F, -7, +7, 0]") == [12, 10, 31, -7, 7, 0]  # YAML 1.1: 012 is octal 10
    assert yaml12.load("[1_000, 1:30, 0b11]") == ["1_000", "1:30", "0b11"]  # YAML 1.1 numbers, 1.2 strings
    assert yaml12.load("!!int '0b11'") == 3


def test_gpu_as_a_device_is_told_the_names_torch_uses(components):
    found = problems({**BASE, "train": {"device": "gpu:1"}}, components=components)
    assert found["train.device"].startswith("'gpu:1' is not a device; an NVIDIA GPU is 'cuda:1'")
    assert "'mps'" in found["train.device"]


def test_a_union_field_is_one_problem_with_a_plain_path(components):
    """pydantic tags each union member in the path (`head_lr.'dict[str,float]'.age`); a user sees the field."""
    found = problems({**BASE, "train": {"head_lr": {"age": "fast"}, "compile": "maybe", "channels_last": [1]}},
                     components=components)
    assert set(found) == {"train.head_lr.age", "train.compile", "train.channels_last"}
    assert "(got 'fast')" in found["train.head_lr.age"]
    assert found["train.compile"] == "should be 'auto' or a boolean (true/false, yes/no, on/off) (got 'maybe')"
    assert found["train.channels_last"].startswith("should be 'auto' or a boolean")
    assert problems({**BASE, "train": {"head_lr": "x"}}, components=components) == {
        "train.head_lr": "should be a number or a mapping (got 'x')"}


def test_fixed_choices_suggest_the_closest_in_any_case_and_list_the_choices(components):
    found = problems({**BASE, "train": {"optimizer": "AdamW", "precision": "BF16", "scheduler": "cosin",
                                        "compile": "Auto", "device": "cuad"},
                      "data": {"name": "utkface", "root": "x", "placement": "hots"}}, components=components)
    assert found["train.optimizer"] == "'AdamW' is not a choice; did you mean 'adamw'? choices: adamw, sgd"
    assert found["train.precision"] == "'BF16' is not a choice; did you mean 'bf16'? choices: auto, bf16, fp32"
    assert found["train.scheduler"] == "'cosin' is not a choice; did you mean 'cosine'? choices: none, cosine"
    assert found["data.placement"].startswith("'hots' is not a choice; did you mean 'host'? choices: auto, device,")
    assert found["train.compile"].endswith("(got 'Auto'); did you mean 'auto'?")  # a union: 'auto' or a boolean
    assert found["train.device"] == ("'cuad' is not a device; did you mean 'cuda'? "
                                     "devices: auto, cpu, cuda, cuda:N, mps")
    assert "did you mean 'adamw'?" in problems(BASE, "train.optimizer=adamm", components=components)[
        "train.optimizer (from --set train.optimizer=adamm)"]
    assert problems(BASE, "train.optimizer=5", components=components) == {
        "train.optimizer (from --set train.optimizer=5)": "5 is not a choice; choices: adamw, sgd"}
    assert "did you mean 'cuda'?" in problems(BASE, "train.device=CUDA", components=components)[
        "train.device (from --set train.device=CUDA)"]
    # a plugin's fixed-choice parameter gets the same message, and a device need only be one torch can parse
    found = problems({**BASE, "weighting": {"name": "mgda", "normalization": "L2"}}, components=components)
    assert found["weighting.normalization"] == "'L2' is not a choice; did you mean 'l2'? choices: none, l2"
    for device in ("auto", "cpu", "cuda", "cuda:1", "mps", "meta"):
        assert load(BASE, f"train.device={device}", components=components).spec.train.device == device


def test_wrong_shapes_say_what_is_expected(components):
    found = problems({**BASE, "tasks": "age", "augment": 5, "backbone": 5}, components=components)
    assert found["tasks"] == ("should be a list of tasks, one name or mapping each (`tasks: [age, gender]`); "
                              "got 'age'")
    assert found["augment"] == "should be a mapping of fields (got 5)"  # augment has no name to give
    assert found["backbone"] == "should be a name or a mapping of fields (got 5)"
    assert problems({**BASE, "tasks": []}, components=components)["tasks"] == "needs at least one task (`tasks: [age]`)"
    found = problems({**BASE, "weighting": {"name": "static", "weights": [1, 2]}}, components=components)
    assert found["weighting.weights"] == "should be a mapping (got [1, 2])"
    assert "Input should be" not in str(found) and "dictionary" not in str(found)


def test_a_missing_field_says_what_it_is(components):
    found = problems({"tasks": ["age", {"name": "smiling", "kind": "binary"}]}, components=components)
    assert found["data"].startswith("required field missing. The dataset: its name, or a mapping")
    assert found["data"].endswith("Datasets: folder, synthetic, utkface.")
    assert found["tasks[1].label"].startswith("required field missing. Record field holding this task's label")
    assert problems({**BASE, "data": {"root": "x"}}, components=components)["data.name"].endswith(
        "Datasets: folder, synthetic, utkface.")


def test_a_malformed_set_names_the_spec_it_was_applied_to(tmp_path, components):
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(BASE))
    with pytest.raises(SpecError) as caught:
        load(path, "tasks[5].label=x", "image_size", components=components)
    assert caught.value.source == str(path)
    assert str(caught.value).startswith(f"2 problems in {path}:")


def test_regression_min_must_be_below_max(components):
    raw = {**BASE, "tasks": [{"name": "a", "kind": "regression", "label": "age", "min": 50, "max": 5}]}
    message = problems(raw, components=components)["tasks[0].min"]
    assert "min (50) must be below max (5)" in message
    found = problems(BASE, "tasks[0].min=150", components=components)  # the age task's max is 120
    assert "min (150) must be below max (120)" in found["tasks[0].min (from --set tasks[0].min=150)"]
    assert load(BASE, "tasks[0].min=150", "tasks[0].max=200", components=components)  # a valid range


def test_problems_from_set_name_the_override_not_the_file(tmp_path, components):
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump({**BASE, "train": {"bach_size": 4}}))
    with pytest.raises(SpecError) as caught:
        load(path, "train.epoch=2", "weighting=dwaa", "data.stirct=true", components=components)
    found = dict(caught.value.problems)
    assert "did you mean 'epochs'?" in found["train.epoch (from --set train.epoch=2)"]
    assert "did you mean 'batch_size'?" in found["train.bach_size"]  # the file's own mistake stays the file's
    assert "did you mean 'dwa'?" in found["weighting.name (from --set weighting=dwaa)"]
    # and in the component pass, once the shape is fine
    with pytest.raises(SpecError) as caught:
        load(BASE, "data.stirct=true", "tasks[1].hiden=3", components=components)
    found = dict(caught.value.problems)
    assert "did you mean 'strict'?" in found["data.stirct (from --set data.stirct=true)"]
    assert "did you mean 'hidden'?" in found["tasks[1].hiden (from --set tasks[1].hiden=3)"]


def test_messages_carry_no_pydantic_labels_or_class_names(components):
    with pytest.raises(SpecError) as caught:
        load_spec({"tasks": [5, {"name": "1x", "kind": "binary", "label": "gender"}],
                   "data": {"name": "utkface", "root": "x"}}, components=components)
    found = dict(caught.value.problems)
    assert found["tasks[0]"] == "should be a name or a mapping of fields (got 5)"
    assert found["tasks[1].name"].startswith("task name '1x' must start with a letter")
    assert "Value error" not in str(caught.value) and "TaskSection" not in str(caught.value)


def test_wrong_scalar_types_say_what_is_expected_in_plain_words(components):
    found = problems(BASE, "train.backbone_lr=x", "train.epochs=2.5", "image_size=[1]", components=components)
    assert found["train.backbone_lr (from --set train.backbone_lr=x)"] == "should be a number (got 'x')"
    assert found["train.epochs (from --set train.epochs=2.5)"] == "should be an integer (got 2.5)"
    assert found["image_size (from --set image_size=[1])"] == "should be an integer (got [1])"


def test_renaming_a_component_by_override_says_its_old_parameters_were_kept(components):
    """The demo's dataset is synthetic: --set data.name=utkface keeps count/size, which look like typos otherwise."""
    raw = {**BASE, "data": {"name": "synthetic", "count": 100, "size": 32}}
    found = problems(raw, "data.name=utkface", "data.root=x", components=components)
    assert set(found) == {"data.count", "data.size"}
    assert found["data.count"] == ("'synthetic' takes this parameter, 'utkface' does not: --set renamed the spec's "
                                   "data from 'synthetic' to 'utkface' and kept its other keys; replace the whole "
                                   "section instead, as in --set 'data={name: utkface, ...}'")
    from_python = problems(raw, "data.name=utkface", "data.root=x", components=components, option="overrides")
    assert "overrides renamed the spec's data" in from_python["data.size"]
    assert from_python["data.size"].endswith("as in the override 'data={name: utkface, ...}'")
    # a typo of the new dataset's own key, with no rename, is still a typo
    assert "did you mean 'root'?" in problems({**BASE, "data": {"name": "utkface", "rot": "x"}},
                                              components=components)["data.rot"]
    # a whole section given by the override, as advised: its keys are its own, not kept from the spec
    whole = problems(raw, "data={name: utkface, root: x, count: 5}", components=components)
    assert list(whole) == ["data.count (from --set data={name: utkface, root: x, count: 5})"], whole
    assert next(iter(whole.values())).startswith("unknown field; valid fields: ")


@pytest.mark.parametrize("override, path", [
    ("train.epochs=true", "train.epochs"),
    ("train.batch_size=false", "train.batch_size"),
    ("train.lr=true", "train.lr"),
    ("train.eval_batch_size=true", "train.eval_batch_size"),
    ("image_size=true", "image_size"),
    ("data.val_fraction=true", "data.val_fraction"),
    ("augment.translate=true", "augment.translate"),
    # a plugin's params model is pydantic's too: `width: true` would build a backbone of width 1
    ("weighting={name: dwa, temperature: true}", "weighting.temperature"),
    ("backbone.width=true", "backbone.width"),
    ("tasks[0].dropout=false", "tasks[0].dropout"),
    ("tasks[0].hidden=true", "tasks[0].hidden"),
])
def test_true_or_false_is_no_number(components, override, path):
    # pydantic's lax mode would read `epochs: true` as 1 epoch; a typo must not train
    found = problems(BASE, override, components=components)
    given = "true" if "true" in override else "false"
    assert found == {f"{path} (from --set {override})": f"expected a number, not {given}"}


def test_a_bool_field_still_takes_a_bool(components):
    assert load(BASE, "augment.flip=false", components=components).spec.augment.flip is False


@pytest.mark.parametrize("task, path, expected", [
    ({"name": "age", "min": float("nan")}, "tasks[0].min", "finite number"),
    ({"name": "age", "max": float("inf")}, "tasks[0].max", "finite number"),
    ({"name": "ethnicity", "num_classes": 1}, "tasks[0].num_classes", "should be at least 2 (got 1)"),
    ({"name": "ethnicity", "num_classes": None, "class_names": ["only"]}, "tasks[0].class_names",
     "needs at least 2 classes, got 1"),
    ({"name": "gender", "class_names": ["Male", "male"]}, "tasks[0].class_names",
     "class names 'Male' and 'male' are the same name"),
    ({"name": "hair", "kind": "multiclass", "label": "hair", "class_names": ["a", " "]}, "tasks[0].class_names",
     "a class name is empty"),
])
def test_task_params_a_preset_task_keeps_its_kinds_constraints(components, task, path, expected):
    # `age`, `gender` and `ethnicity` are presets of the kinds: a new default must not drop a kind's bounds
    found = problems({**BASE, "tasks": [task]}, components=components)
    assert path in found and expected in found[path], found


def test_a_class_name_with_spaces_around_it_reads_its_labels(components):
    # the labels are stripped before matching, and the names count as distinct stripped: so must their lookup
    spec = load({**BASE, "tasks": [{"name": "smiling", "kind": "binary", "label": "smile",
                                    "class_names": [" no", "Yes "]}]}, components=components)
    smiling = spec.build_tasks()[0]
    assert [smiling.parse_label({"smile": raw}) for raw in ("yes", " no ", "Yes ", "1")] == [1, 0, 1, 1]


def test_an_empty_init_from_is_refused_not_read_as_the_current_folder(components):
    found = problems(BASE, "init_from=''", components=components)
    assert found == {"init_from (from --set init_from='')": "is empty; give a run's best.pt or last.pt, or leave "
                                                           "init_from out to start afresh"}
    assert load(BASE, "init_from=null", components=components).spec.init_from is None


def test_a_params_model_that_allows_any_key_still_refuses_a_bool_for_a_number(components):
    from pydantic import BaseModel, ConfigDict

    from hydranet.core.registry import strict_params

    class Loose(BaseModel):
        model_config = ConfigDict(extra="allow")
        power: float = 1.0
        on: bool = False

    assert strict_params(Loose, {"power": 2, "on": True, "anything": 3}).power == 2.0
    with pytest.raises(Exception, match="expected a number, not true"):
        strict_params(Loose, {"power": True})


def test_params_written_under_their_field_name_read_back_when_the_alias_has_choices():
    # a run's spec.yaml writes each parameter under its field name; resume and eval read that spec back
    from pydantic import AliasChoices, BaseModel, Field

    from hydranet.core.registry import strict_params

    class Choices(BaseModel):
        rate: float = Field(1.0, validation_alias=AliasChoices("lr", "learning_rate"))

    written = strict_params(Choices, {"learning_rate": 0.5}).model_dump(mode="json")
    assert written == {"rate": 0.5}
    assert strict_params(Choices, written).rate == 0.5
    with pytest.raises(Exception, match="Extra inputs are not permitted"):
        strict_params(Choices, {"rates": 0.5})


def test_a_spec_that_is_a_broken_link_says_so(tmp_path, components):
    import os

    os.symlink(tmp_path / "moved.yaml", tmp_path / "spec.yaml")
    with pytest.raises(SpecError) as caught:
        load(str(tmp_path / "spec.yaml"), components=components)
    assert (f"is a broken symbolic link (to {tmp_path / 'moved.yaml'}, which does not exist); point it at the spec "
            "file, or pass the spec file") in str(caught.value)
