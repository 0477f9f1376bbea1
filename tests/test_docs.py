"""The docs stay true to the code.

- The generated reference pages (CLI, spec, components, weightings) and the
  example code embedded in the pages are current (`docs/generate.py --check`).
- Every hook is documented and exercised by a test; every built-in component
  is named in the docs; every shipped spec and every spec snippet validates.
- The example plugins in docs/examples/ register, build and train.
- The site's navigation and every relative link resolve (and `mkdocs build
  --strict` passes where mkdocs is installed).
- Every command answers `-h` and shows an example.
"""

from __future__ import annotations

import csv
import importlib.util
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import click
import pytest
import torch
import yaml
from click.testing import CliRunner

from conftest import tiny_spec
from hydranet.core import hookspecs
from hydranet.core.cli import cli
from hydranet.core.engine import train
from hydranet.core.errors import SpecError
from hydranet.core.plugins import load_components, make_plugin_manager
from hydranet.core.spec import load_spec, spec_schema

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("register_"))
EXAMPLE_PLUGINS = {  # module -> what it registers
    "task_plugin": {"tasks": ["decade"]},
    "weighting_plugin": {"weightings": ["ramp"]},
    "backbone_plugin": {"backbones": ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0"]},
    "dataset_plugin": {"datasets": ["jsonl"]},
    "command_plugin": {},
}
#: Commands whose help has no "Example" section yet (core/cli.py). The list may only shrink:
#: a new command without an example fails the test below, and so does one here that gained one.
KNOWN_WITHOUT_EXAMPLES: set[str] = set()


def load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generate():
    return load_module("hydranet_docs_generate", DOCS / "generate.py")


@pytest.fixture(scope="module")
def examples():
    """The docs' example plugin modules, imported from their files."""
    modules = {name: load_module(f"hydranet_docs_example_{name}", EXAMPLES / f"{name}.py") for name in EXAMPLE_PLUGINS}
    yield modules
    for name in EXAMPLE_PLUGINS:
        sys.modules.pop(f"hydranet_docs_example_{name}", None)


@pytest.fixture(scope="module")
def example_components(examples):
    """Built-ins plus every docs example plugin, on a fresh manager."""
    pm = make_plugin_manager(entry_points=False)
    for name, module in examples.items():
        pm.add_plugin(module, name, distribution="hydranet-docs-examples", version="0", builtin=False)
    return load_components(pm)


def markdown_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def docs_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in markdown_pages())


def without_code(text: str) -> str:
    """Markdown with fenced code blocks blanked out (links and headings inside code do not count)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


# ---------------------------------------------------------------- generated pages


def test_generated_pages_and_embedded_examples_are_up_to_date(generate):
    stale = generate.stale_pages()
    assert not stale, "docs out of date; run  python docs/generate.py\n" + "\n".join(stale.values())
    assert {p.relative_to(DOCS).as_posix() for p in generate.expected_pages()} >= {
        "reference/cli.md", "reference/spec.md", "reference/components.md", "reference/weightings.md"}


def test_check_mode_exits_1_on_a_stale_page_and_a_rewrite_fixes_it(generate, tmp_path, monkeypatch, capsys):
    import shutil

    copy = tmp_path / "docs"
    shutil.copytree(DOCS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(generate, "DOCS", copy)
    assert generate.main(["--check"]) == 0
    # a hand edit of a generated page, and an embedded example that drifted from its file
    cli_page = copy / "reference" / "cli.md"
    cli_page.write_text(cli_page.read_text().replace("Train the model a SPEC describes", "Train something"))
    task_page = copy / "plugins" / "task.md"
    task_page.write_text(task_page.read_text().replace("DECADES = 10", "DECADES = 12"))
    capsys.readouterr()
    assert generate.main(["--check"]) == 1
    report = capsys.readouterr()
    assert "-  Train something" in report.out and "+  Train the model a SPEC describes" in report.out
    assert "-DECADES = 12" in report.out and "+DECADES = 10" in report.out
    assert "2 docs page(s) out of date" in report.err
    assert generate.main([]) == 0 and generate.main(["--check"]) == 0
    assert "DECADES = 10" in task_page.read_text()


def test_check_runs_as_a_script():
    run = subprocess.run([sys.executable, str(DOCS / "generate.py"), "--check"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "up to date" in run.stdout


def test_every_example_file_is_shown_on_a_page_verbatim():
    pages = {p: p.read_text(encoding="utf-8") for p in markdown_pages()}
    for example in sorted(EXAMPLES.iterdir()):
        if example.suffix not in (".py", ".yaml"):
            continue
        marker = f"<!-- embed: examples/{example.name} -->\n"
        holders = [p for p, text in pages.items() if marker in text]
        assert holders, f"{example.name} is not embedded in any page"
        for page in holders:
            block = pages[page].split(marker, 1)[1].split("<!-- /embed -->", 1)[0]
            body = block.split("\n", 1)[1].rsplit("```", 1)[0]
            assert body == example.read_text(encoding="utf-8").rstrip() + "\n", (page, example)


def test_cli_reference_has_every_command_and_option(generate):
    text = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    group = generate.reference_cli_group()
    root = click.Context(group, info_name="hydranet")
    commands = generate.walk_commands(group, root)
    paths = [ctx.command_path for _, ctx in commands]
    assert {"hydranet train", "hydranet spec validate", "hydranet spec schema", "hydranet synth",
            "hydranet new-plugin"} <= set(paths)
    for command, ctx in commands:
        section = text.split(f"\n## {ctx.command_path}\n", 1)[1].split("\n## ", 1)[0]
        assert f"Usage: {ctx.command_path}" in section
        assert (command.help or "").strip().splitlines()[0] in section
        for param in command.params:
            for option in param.opts if isinstance(param, click.Option) else ():
                assert option in section, (ctx.command_path, option)
    assert "_HYDRANET_COMPLETE=bash_source hydranet" in text


def test_spec_reference_has_every_section_and_field():
    text = (DOCS / "reference" / "spec.md").read_text(encoding="utf-8")
    schema = spec_schema()
    for field in schema["properties"]:
        assert f"| `{field}` |" in text.split("\n## ", 2)[1], field
    for name, definition in schema["$defs"].items():
        section = text.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        for field in definition["properties"]:
            assert f"| `{field}` |" in section, (name, field)


# ---------------------------------------------------------------- meta: hooks, components, specs


def test_every_hookspec_is_documented_and_exercised_by_a_test(components):
    pm = components.pm
    assert HOOKS == sorted(name for name in dir(pm.hook) if name.startswith("register_"))
    plugin_docs = (DOCS / "plugins" / "index.md").read_text(encoding="utf-8")
    other_tests = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("test_*.py")
                            if p.name != Path(__file__).name)
    for hook in HOOKS:
        assert f"`{hook}(" in plugin_docs, f"{hook} is not in docs/plugins/index.md's table of hooks"
        assert re.search(rf"\b{hook}\b", other_tests), f"no test other than {Path(__file__).name} mentions {hook}"
        assert getattr(pm.hook, hook).get_hookimpls(), f"no built-in plugin implements {hook}"
    # and every hook has an example page whose code implements it
    implemented = "\n".join(p.read_text(encoding="utf-8") for p in EXAMPLES.glob("*_plugin.py"))
    for hook in HOOKS:
        assert f"def {hook}(" in implemented, hook


def test_every_builtin_component_is_named_in_the_docs(components):
    text = docs_text()
    guide = (DOCS / "guides" / "weighting.md").read_text(encoding="utf-8")
    for kind in ("tasks", "backbones", "weightings", "datasets"):
        for name in components.registry(kind).names():
            assert f"`{name}`" in text, f"{kind[:-1]} '{name}' appears nowhere in docs/"
    for name in components.weightings.names():
        # the hand-written guide, not only the generated reference, says when to choose it
        assert re.search(rf"^\| `{name}` \| .+ \| .+ \| .{{40,}} \|$", guide, re.M), \
            f"weighting '{name}' has no 'when to choose it' row in docs/guides/weighting.md"


@pytest.mark.parametrize("path", sorted(p for p in (ROOT / "specs").iterdir() if p.suffix in (".yaml", ".yml", ".toml")),
                         ids=lambda p: p.name)
def test_every_shipped_spec_validates(path):
    spec = load_spec(path)
    assert spec.task_names


def test_example_specs_validate_with_the_example_plugins(example_components):
    specs = sorted(EXAMPLES.glob("*.y*ml"))
    assert specs
    for path in specs:
        spec = load_spec(path, components=example_components)
        assert spec.task_names, path
    with pytest.raises(SpecError):  # and they need those plugins
        load_spec(specs[0], components=load_components(make_plugin_manager(entry_points=False)))


def spec_snippets() -> list[tuple[str, dict, str, str]]:
    """(where, spec, block, page text) for every ```yaml block in the docs with a spec section at its top level.

    The spec is the block completed into a whole spec (a snippet may show only `weighting:`).
    """
    base = {"tasks": ["age", "gender", "ethnicity"], "data": {"name": "utkface", "root": "data/UTKFace"}}
    sections = {"backbone", "tasks", "data", "weighting", "train", "augment", "image_size"}
    found = []
    for page in markdown_pages():
        text = page.read_text(encoding="utf-8")
        for number, block in enumerate(re.findall(r"^```yaml\n(.*?)^```", text, flags=re.S | re.M)):
            raw = yaml.safe_load(block)
            if isinstance(raw, dict) and set(raw) & sections:
                found.append((f"{page.relative_to(DOCS)}[{number}]", {**base, **raw}, block, text))
    return found


def test_every_spec_snippet_in_the_docs_validates(examples, tmp_path):
    """With the docs' example plugins and the tutorial's `senior` plugin, as `hydranet new-plugin` writes it."""
    from hydranet.plugins.scaffold import write_plugin

    tutorial = write_plugin("senior", "task", tmp_path)
    pm = make_plugin_manager(entry_points=False)
    for name, module in examples.items():
        pm.add_plugin(module, name, distribution="docs", version="0", builtin=False)
    senior = load_module("hydranet_docs_tutorial_senior", tutorial / "src" / "hydranet_senior" / "plugin.py")
    pm.add_plugin(senior, "senior", distribution="hydranet-senior", version="0.1.0", builtin=False)
    components = load_components(pm)
    sys.modules.pop("hydranet_docs_tutorial_senior")
    snippets = [s for s in spec_snippets() if "on purpose" not in s[2]]
    assert len(snippets) >= 10 and any(where.startswith("tutorial.md") for where, *_ in snippets)
    problems = []
    for where, raw, _, _ in snippets:
        try:
            load_spec(raw, components=components)
        except SpecError as error:
            problems.append(f"{where}: {error}")
    assert not problems, "\n".join(problems)


def test_spec_snippets_with_mistakes_fail_exactly_as_the_docs_show(components, tmp_path, monkeypatch):
    """A snippet marked "on purpose" is wrong on purpose: each line of its real error is on the page."""
    wrong = [s for s in spec_snippets() if "on purpose" in s[2]]
    assert wrong
    monkeypatch.chdir(tmp_path)
    for where, _, block, text in wrong:
        name = re.match(r"# (\S+\.ya?ml)", block)[1]
        (tmp_path / name).write_text(block, encoding="utf-8")
        with pytest.raises(SpecError) as caught:
            load_spec(name, components=components)
        for line in str(caught.value).splitlines():
            assert line in text, (where, line)


# ---------------------------------------------------------------- the example plugins work


def test_example_plugins_register_what_the_docs_say(examples):
    pm = make_plugin_manager(entry_points=False)
    for name, module in examples.items():
        assert pm.add_plugin(module, name, distribution="docs", version="0", builtin=False), pm.load_errors()
    load_components(pm)
    assert pm.load_errors() == []
    for name, expected in EXAMPLE_PLUGINS.items():
        assert pm.info[name].components == expected, name


def test_example_task_decade(example_components):
    entry = example_components.tasks.get("decade")
    task = entry.factory("decade", entry.validate_params({}))
    assert [task.parse_label({"age": a}) for a in ("0", "9.9", "10", "34", "89", "90", "116")] == [0, 0, 1, 3, 8, 9, 9]
    assert [task.parse_label(r) for r in ({}, {"age": "old"}, {"age": "-1"}, {"age": "nan"})] == [None] * 4
    head = task.build_head(16)
    output = head(torch.randn(4, 16))
    assert output.shape == (4, 10)
    target = torch.tensor([3.0, 1.0, float("nan"), 9.0])
    keep = torch.tensor([0, 1, 3])
    assert torch.allclose(task.loss(output, target), torch.nn.functional.cross_entropy(output[keep], target[keep].long()))
    metrics = task.metrics()
    logits = torch.full((3, 10), -5.0)
    logits[0, 3] = logits[1, 3] = logits[2, 9] = 5.0  # exact, one decade off, exact
    for metric in metrics.values():
        metric.update(logits, torch.tensor([3.0, 2.0, 9.0]), torch.tensor([True, True, True]))
    assert float(metrics["accuracy"].compute()) == pytest.approx(2 / 3)
    assert float(metrics["within_one"].compute()) == pytest.approx(1.0)
    assert [row["class"] for row in task.decode(logits)] == ["30-39", "30-39", "90+"]
    baseline = task.trivial_output(torch.tensor([2.0, 2.0, 5.0, float("nan")]))
    assert int(baseline.argmax()) == 2


def test_example_weighting_ramp(example_components):
    tasks = [example_components.tasks.get(n).factory(n, example_components.tasks.get(n).validate_params({}))
             for n in ("age", "gender", "ethnicity")]
    entry = example_components.weightings.get("ramp")
    ramp = entry.factory(tasks, entry.validate_params({"tasks": ["ethnicity"], "epochs": 3}))
    seen = []
    for _ in range(5):
        seen.append(ramp.weights().tolist())
        ramp.epoch_end(torch.ones(3))
    assert seen == [[1, 1, 0.25], [1, 1, 0.5], [1, 1, 0.75], [1, 1, 1], [1, 1, 1]]  # as the docs page says
    losses = torch.tensor([1.0, 2.0, 4.0])
    assert float(ramp.combine(losses)) == pytest.approx(7.0)
    assert set(ramp.state_dict()) == {"epochs_seen"}  # the schedule survives a checkpoint, the config does not
    meta = entry.factory(tasks, entry.validate_params({})).to("meta")  # no host reads: works without data
    assert meta.combine(torch.ones(3, device="meta")).shape == ()
    raw = {**tiny_spec(Path("x")), "weighting": {"name": "ramp", "tasks": ["ethnicty"]}}
    with pytest.raises(SpecError) as caught:
        load_spec(raw, components=example_components)
    assert caught.value.problems == [("weighting.tasks", "unknown task 'ethnicty'; did you mean 'ethnicity'? "
                                                         "tasks of this spec: age, gender, ethnicity")]


def test_example_backbone_shufflenet(example_components):
    entry = example_components.backbones.get("shufflenet_v2_x0_5")
    backbone = entry.factory(entry.validate_params({"dropout": 0.1}))
    assert backbone.out_features == 1024
    assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, 1024)
    assert backbone(torch.randn(2, 3, 48, 48)).shape == (2, 1024)


def write_jsonl(folder: Path, faces: Path, count: int = 120) -> list[Path]:
    """A jsonl dataset over the faces fixture: labels from the UTKFace names, plus two bad lines."""
    import json

    from hydranet.plugins.datasets.utkface import parse_utkface_name

    images = sorted(p for p in faces.iterdir() if p.name.endswith(".jpg"))[:count]
    lines = [json.dumps({"image": str(p), **(parse_utkface_name(p.name) or {}), "smile": i % 2 == 0})
             for i, p in enumerate(images)]
    lines[3:3] = ["{not json", json.dumps({"image": "missing.jpg", "age": 3})]
    (folder / "labels.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return images


def test_example_dataset_jsonl(example_components, faces, tmp_path):
    images = write_jsonl(tmp_path, faces, count=10)
    entry = example_components.datasets.get("jsonl")
    dataset = entry.factory(entry.validate_params({"root": str(tmp_path)}))
    samples = dataset.samples()
    assert [Path(s.source) for s in samples] == images
    assert samples[0].record["smile"] == "1" and samples[1].record["smile"] == "0"
    assert samples[0].record["age"] == images[0].name.split("_")[0]
    assert [(Path(where).name, reason) for where, reason in dataset.problems] == [
        ("labels.jsonl:4", "not JSON: Expecting property name enclosed in double quotes"),
        ("labels.jsonl:5", "no image file under key 'image'")]
    dataset.samples()
    assert len(dataset.problems) == 2  # listing twice reports once
    from hydranet.core.errors import DataError

    with pytest.raises(DataError, match="labels.jsonl not found"):
        entry.factory(entry.validate_params({"root": str(tmp_path / "nowhere")})).samples()


def test_example_command_labels(examples, faces, tmp_path):
    pm = make_plugin_manager(entry_points=False)
    pm.add_plugin(examples["command_plugin"], "labels", distribution="docs", version="0", builtin=False)
    group = click.Group()
    load_components(pm).add_commands(group)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(faces)))
    result = CliRunner().invoke(group, ["labels", str(spec)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    total = sum(1 for p in faces.iterdir() if p.name.endswith(".jpg"))
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()[2:]}
    assert rows["age"] == ["age", "age", str(total), "0"]
    assert rows["ethnicity"][1] == "race" and int(rows["ethnicity"][2]) + int(rows["ethnicity"][3]) == total
    assert "Examples:" in CliRunner().invoke(group, ["labels", "--help"]).output


def test_example_plugins_train_together(example_components, faces, tmp_path):
    """The four example components in one short run: jsonl data, shufflenet, decade, ramp."""
    write_jsonl(tmp_path, faces)
    raw = tiny_spec(faces, epochs=2)
    raw.update(backbone={"name": "shufflenet_v2_x0_5"}, tasks=["age", "gender", "decade"],
               data={"name": "jsonl", "root": str(tmp_path), "val_fraction": 0.25},
               weighting={"name": "ramp", "tasks": ["decade"], "epochs": 1})
    out = tmp_path / "run"
    train(load_spec(raw, components=example_components), out_dir=out, components=example_components,
          progress=False, echo=False)
    rows = list(csv.DictReader(open(out / "metrics.csv", encoding="utf-8")))
    assert [float(r["weight.decade"]) for r in rows] == [0.5, 1.0]
    assert all(0 <= float(r["val.decade.within_one"]) <= 1 for r in rows)
    log = (out / "train.log").read_text()
    assert "2 entries of dataset 'jsonl' skipped" in log and "labels.jsonl:4: not JSON" in log


# ---------------------------------------------------------------- the site: nav and links


def slugify(text: str) -> str:
    """Python-Markdown's toc slug (what mkdocs uses for heading anchors)."""
    text = re.sub(r"`|\*\*|\*", "", text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6} (.+)$", without_code(page.read_text(encoding="utf-8")), re.M):
        explicit = re.search(r"\{#([\w-]+)\}\s*$", heading)
        if explicit:
            found.add(explicit[1])
            continue
        slug = slugify(heading)
        found.add(slug if slug not in seen else f"{slug}_{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return found


def nav_pages(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return []


def test_every_nav_page_exists_and_every_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config["docs_dir"] == "docs" and config["strict"] is True
    pages = nav_pages(config["nav"])
    assert len(pages) == len(set(pages))
    for page in pages:
        assert (DOCS / page).is_file(), f"mkdocs.yml nav names {page}, which does not exist"
    assert {p.relative_to(DOCS).as_posix() for p in markdown_pages()} == set(pages)


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for page in markdown_pages():
        for target in re.findall(r"\]\(([^)\s]+)\)", without_code(page.read_text(encoding="utf-8"))):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, fragment = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.is_file() or not linked.is_relative_to(DOCS):
                broken.append(f"{page.relative_to(DOCS)}: {target} (no such file under docs/)")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                broken.append(f"{page.relative_to(DOCS)}: {target} (no heading with that anchor)")
    assert not broken, "\n".join(broken)


def test_link_checker_catches_what_it_should(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# Top\n## Packaging: the entry point\n## hydranet spec validate\n### task `age` {#task-age}\n"
                    "## Top\n```bash\n# not a heading\n```\n")
    assert anchors(page) == {"top", "packaging-the-entry-point", "hydranet-spec-validate", "task-age", "top_1"}


def test_mkdocs_build_strict_where_mkdocs_is_installed(tmp_path):
    """mkdocs is not a test dependency (pip install -e '.[docs]'); the two tests above cover its checks."""
    if importlib.util.find_spec("mkdocs") is None:
        return
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
                          "-d", str(tmp_path / "site")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()


# ---------------------------------------------------------------- the command line: -h, examples, version


def all_commands() -> list[tuple[click.Command, click.Context]]:
    """Every command and subcommand of the real `hydranet` group, plugin commands included."""
    found = []

    def walk(command, ctx):
        found.append((command, ctx))
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), click.Context(command.get_command(ctx, name), info_name=name,
                                                                   parent=ctx))

    walk(cli, click.Context(cli, info_name="hydranet", **cli.context_settings))
    return found


def test_every_command_answers_dash_h():
    commands = all_commands()
    assert len(commands) >= 12
    for _, ctx in commands:
        args = ctx.command_path.split()[1:]
        result = CliRunner().invoke(cli, [*args, "-h"], prog_name="hydranet", catch_exceptions=False)
        assert result.exit_code == 0, (ctx.command_path, result.output)
        assert f"Usage: {ctx.command_path}" in result.output and "-h, --help" in result.output


def test_every_command_has_an_example_in_its_help():
    lacking = {ctx.command_path for command, ctx in all_commands()
               if not re.search(r"^\s*(Examples?|Quick start):", command.get_help(ctx), re.M)}
    new = sorted(lacking - KNOWN_WITHOUT_EXAMPLES)
    assert not new, f"commands whose help has no 'Example:' section: {', '.join(new)}"
    fixed = sorted(KNOWN_WITHOUT_EXAMPLES - lacking)
    assert not fixed, f"these now have examples; remove them from KNOWN_WITHOUT_EXAMPLES: {', '.join(fixed)}"


def test_version_and_shell_completion():
    import hydranet

    result = CliRunner().invoke(cli, ["--version"], prog_name="hydranet")
    assert result.exit_code == 0 and result.output == f"hydranet, version {hydranet.__version__}\n"
    script = CliRunner().invoke(cli, [], prog_name="hydranet", env={"_HYDRANET_COMPLETE": "bash_source"})
    assert script.exit_code == 0 and "_hydranet_completion()" in script.output
    completed = CliRunner().invoke(cli, [], prog_name="hydranet", env={
        "_HYDRANET_COMPLETE": "bash_complete", "COMP_WORDS": "hydranet new-p", "COMP_CWORD": "1"})
    assert completed.output.split() == ["plain,new-plugin"]


def test_the_tutorials_edits_apply_to_what_new_plugin_writes(tmp_path):
    """Every `-` line of the tutorial's diffs is in the scaffolded `senior` package, and the edited plugin runs."""
    from hydranet.plugins.scaffold import write_plugin

    package = write_plugin("senior", "task", tmp_path)
    plugin = package / "src" / "hydranet_senior" / "plugin.py"
    text = plugin.read_text(encoding="utf-8")
    diffs = re.findall(r"```diff\n(.*?)```", (DOCS / "tutorial.md").read_text(encoding="utf-8"), re.S)
    assert len(diffs) >= 2
    for diff in diffs:
        removed = [line[1:] for line in diff.splitlines() if line.startswith("-")]
        added = [line[1:] for line in diff.splitlines() if line.startswith("+")]
        for line in removed:
            assert line in text, f"the tutorial removes a line new-plugin does not write:\n{line}"
        text = text.replace("\n".join(removed), "\n".join(added))
    plugin.write_text(text, encoding="utf-8")
    edited = load_module("hydranet_docs_tutorial_edited", plugin)
    sys.modules.pop("hydranet_docs_tutorial_edited")
    task = edited.SeniorTask("senior", edited.SeniorParams())
    assert task.threshold == 60.0 and task.class_names == ["younger", "senior"]
    assert [row["class"] for row in task.decode(torch.tensor([[3.0], [-3.0]]))] == ["senior", "younger"]
