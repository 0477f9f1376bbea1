"""`hydranet list` as a plugin author reads it: a parameter's type as the reference pages write it, and clashes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from click.testing import CliRunner
from pydantic import BaseModel, Field

import hydranet
from hydranet.core.cli import cli
from hydranet.core.params_listing import params_rows
from hydranet.core.plugins import load_components, make_plugin_manager
from hydranet.tasks.kinds import BinaryParams, BinaryTask, MulticlassParams, MulticlassTask

DOCS = Path(__file__).resolve().parent.parent / "docs"


class GridParams(BaseModel):
    sizes: list[int] = Field(default=[1], min_length=1, description="at least one")
    mode: Literal["mean", "sum"] = "mean"
    rate: float | None = Field(default=None, gt=0)


def with_plugin(*plugins: tuple[str, object]):
    pm = make_plugin_manager(entry_points=False)
    for name, plugin in plugins:
        pm.add_plugin(plugin, name, distribution=f"hydranet-{name}", version="0.1", builtin=False)
    return load_components(pm)


def test_a_list_parameter_says_how_many_items_it_needs(use):
    class Grid:
        @hydranet.hookimpl
        def register_backbones(self, register):
            register("grid", lambda params: None, params=GridParams, description="a grid")

    use(with_plugin(("grid", Grid())))
    out = CliRunner().invoke(cli, ["list", "backbones", "grid"]).output
    row = next(line for line in out.splitlines() if line.strip().startswith("sizes"))
    assert "list of integer (at least 1 item)" in row  # as the spec reference says `minItems`


def test_the_listing_and_the_reference_pages_word_a_type_alike():
    """One `schema_type` serves both: the Markdown is the plain text with code spans and escaped bars."""
    spec = importlib.util.spec_from_file_location("hydranet_docs_generate_listing", DOCS / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    table = generate.fields_table(GridParams.model_json_schema(), defs_link=None).splitlines()[2:]
    markdown = {line.split(" | ")[0].strip("| `"): line.split(" | ")[1] for line in table}
    plain = {key: kind for key, kind, _, _ in params_rows(GridParams)}
    assert plain == {"sizes": "list of integer (at least 1 item)", "mode": '"mean" | "sum"',
                     "rate": "number (> 0) | null"}
    assert {key: text.replace("`", "").replace("\\|", "|") for key, text in markdown.items()} == plain


def test_a_clashing_ready_task_is_marked_in_the_table_but_named_bare_in_the_examples(use):
    def plugin(factory, params):
        class Plugin:
            @hydranet.hookimpl
            def register_tasks(self, register):
                register("aaa", factory, params=params)

        return Plugin()

    class Ready(BinaryParams):
        label: str = "a"

    use(with_plugin(("one", plugin(BinaryTask, Ready)), ("two", plugin(MulticlassTask, MulticlassParams))))
    out = CliRunner().invoke(cli, ["list", "tasks"]).output
    assert "ready tasks: name one in a spec, as in `tasks: [aaa]`" in out
    assert "a ready task serves as a kind too, with its presets: `{name: NAME, kind: aaa, label: FIELD}`" in out
    assert [line.split()[:2] for line in out.splitlines() if line.strip().startswith("aaa")] == [
        ["aaa", "[clash]"], ["aaa", "[clash]"]]


def test_a_list_of_a_union_is_bracketed_so_it_does_not_read_as_a_union_of_lists():
    """class_names takes strings or numbers, or no list at all: `list of (string | number | boolean) | null`, not `list of
    string | number | null`, which reads as if a plain number were a value."""
    from hydranet.tasks.kinds import MulticlassParams

    kinds = {key: kind for key, kind, _, _ in params_rows(MulticlassParams)}
    assert kinds["class_names"] == "list of (string | number | boolean) | null"
