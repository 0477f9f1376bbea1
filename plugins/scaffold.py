"""`hydranet new-plugin NAME`: write a pip-installable plugin package to start from.

A plugin author's first hour goes on packaging, not on the task: which entry
point group, which module, how to test that hydranet finds it. This command
writes all of that once, with a small component of the chosen kind that
already works (it trains, or for an observer, watches a run; and its own
test passes), so the author only edits the part that is theirs. It is a built-in plugin itself: its command arrives
through the same `register_commands` hook a third party would use.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path
from string import Template
from typing import Any

import click

from hydranet.core.option_types import KindChoice
from hydranet.core.errors import HydranetError
from hydranet.core.hookspecs import hookimpl
# the rule register() holds every component name to: valid as a distribution, module and entry point name too
from hydranet.core.registry import NAME

#: kinds whose plugin registers a component (a spec names it); the others watch runs
COMPONENT_KINDS = ("task", "weighting", "backbone", "dataset")
KINDS = (*COMPONENT_KINDS, "observer")
#: kind -> (registry attribute, hook the plugin implements); an observer registers no component: what
#: `hydranet plugins` lists for it ("observes") and the first of its hooks
KIND_HOOKS = {
    "task": ("tasks", "register_tasks"),
    "weighting": ("weightings", "register_weightings"),
    "backbone": ("backbones", "register_backbones"),
    "dataset": ("datasets", "register_datasets"),
    "observer": ("observes", "run_started"),
}
MAX_NAME = 40


class ScaffoldError(HydranetError):
    """A plugin name or output folder that `new-plugin` refuses."""


def check_name(name: str, taken: Collection[str] = (), kind: str = "task") -> str:
    """The component / module form of NAME (`age-bands` -> `age_bands`), or a ScaffoldError saying why not."""
    hint = "use lowercase letters and digits, starting with a letter, with single '-' or '_' between words " \
           "(e.g. smile, age-bands)"
    if not NAME.fullmatch(name) or len(name) > MAX_NAME:
        too_long = f" and at most {MAX_NAME} characters" if len(name) > MAX_NAME else ""
        raise ScaffoldError(f"'{name}' is not a valid plugin name: {hint}{too_long}")
    module = name.replace("-", "_")
    if module == "hydranet" or module.startswith("hydranet_"):
        bare = module.removeprefix("hydranet_").replace("_", "-") or "NAME"
        raise ScaffoldError(f"'{name}': leave out the 'hydranet-' prefix, the package is named hydranet-NAME "
                            f"anyway (hydranet new-plugin {bare})")
    if module in taken:
        if isinstance(taken, Mapping) and taken[module]:  # hydranet's own: nothing to uninstall
            what = (f"'{module}' is hydranet's built-in {kind} (see hydranet list {KIND_HOOKS[kind][0]} {module})"
                    if kind in COMPONENT_KINDS else f"'{module}' is one of hydranet's built-in plugins")
            raise ScaffoldError(f"{what}; a plugin of that name would clash with it. Pick another name, "
                                f"e.g. hydranet new-plugin my-{name}")
        what = (f"a {kind} named '{module}' is already registered (see hydranet list {KIND_HOOKS[kind][0]})"
                if kind in COMPONENT_KINDS else f"a plugin named '{module}' is already loaded (see hydranet plugins)")
        raise ScaffoldError(f"{what}; pick another name, or the two would clash. "
                            f"If it is an earlier plugin of yours, pip uninstall hydranet-{name} first")
    return module


def class_name(module: str) -> str:
    return "".join(part.capitalize() for part in module.split("_"))


def plugin_files(name: str, kind: str) -> dict[str, str]:
    """Relative path -> text of every file of the package for plugin NAME of KIND (NAME already checked)."""
    if kind not in KINDS:
        raise ScaffoldError(f"unknown kind '{kind}'; choose one of {', '.join(KINDS)}")
    module = name.replace("-", "_")
    component = kind in COMPONENT_KINDS
    values = {"name": module, "dist": module.replace("_", "-"), "Class": class_name(module), "kind": kind,
              "registry": KIND_HOOKS[kind][0], "hook": KIND_HOOKS[kind][1]}
    listed = f"hydranet plugins           # lists: {module}  (hydranet-{values['dist']} 0.1.0)"
    values["listed"] = (f"{listed}\nhydranet list {values['registry']}    # a row for {module}, from plugin {module}"
                        if component else f"{listed}, which observes: run_started, epoch_finished, run_finished")
    values["what"] = (f"registers the **{module}** {kind}" if component
                      else f"adds **{module}**, an observer that watches every training run")
    fill = lambda text: Template(text).substitute(values)  # noqa: E731 - a tiny local helper
    package = f"src/hydranet_{module}"
    return {
        "pyproject.toml": fill(PYPROJECT),
        "README.md": fill(README + README_USE[kind]),
        "spec.yaml": fill(SPECS[kind]),
        f"{package}/__init__.py": fill(INIT),
        f"{package}/plugin.py": fill(PLUGINS[kind]),
        "tests/test_plugin.py": fill(TEST_HEAD + (TEST_COMPONENT if component else "") + TESTS[kind]),
    }


def taken_names(kind: str) -> dict[str, bool]:
    """Names a new plugin of `kind` must not take: its kind's registered components, or (an observer) the plugins;
    each with whether a built-in plugin holds it (hydranet's own: it cannot be uninstalled)."""
    from hydranet.core.plugins import default_components

    components = default_components()

    def builtin(plugin: str) -> bool:
        info = components.pm.info.get(plugin)
        return bool(info is not None and info.builtin)

    if kind in COMPONENT_KINDS:
        registry = components.registry(KIND_HOOKS[kind][0])
        ours = {name for entry in registry if builtin(entry.plugin) for name in (entry.name, *entry.aliases)}
        return {name: name in ours for name in registry.names()}
    return {name.replace("-", "_"): builtin(name) for name in components.pm.info}


def write_plugin(name: str, kind: str = "task", out: str | Path = ".", taken: Collection[str] = ()) -> Path:
    """Write `hydranet-NAME/` under OUT and return its path; an existing folder is never touched."""
    module = check_name(name, taken, kind)
    out = Path(out)
    target = out / f"hydranet-{module.replace('_', '-')}"
    if target.exists():
        raise ScaffoldError(f"{target} already exists; nothing was written. Pick another name or --out "
                            "folder, or move that folder away first")
    files = plugin_files(module, kind)
    out.mkdir(parents=True, exist_ok=True)
    # Written into a temporary folder beside the target and renamed at the end, so a failure
    # (disk full, permissions) never leaves half a package behind.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=out))
    try:
        for relative, text in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


@click.command("new-plugin", short_help="Write a pip-installable plugin package, hydranet-NAME/.")
@click.argument("name")
@click.option("--kind", type=KindChoice(KINDS), default="task", show_default=True,
              help="What the plugin registers; an observer watches training runs instead.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Folder to write hydranet-NAME/ into.")
def new_plugin_command(name: str, kind: str, out_dir: str) -> None:
    """Write a pip-installable plugin package, hydranet-NAME/, to start from.

    It holds a pyproject.toml with the `hydranet` entry point, a working
    component of the chosen kind in src/hydranet_NAME/plugin.py (an
    observer: hooks that write each run's epochs to a JSON-lines file), a
    spec that uses it (for an observer, a short run for it to watch), a
    README and a test that passes. An existing folder
    is never overwritten.

    \b
    Examples:
      hydranet new-plugin smile
      hydranet new-plugin age-bands --kind task --out plugins/
      hydranet new-plugin balanced --kind weighting
      hydranet new-plugin jsonlog --kind observer
      cd hydranet-smile && pip install -e '.[test]' && pytest && hydranet train spec.yaml
    """
    target = write_plugin(name, kind, out_dir, taken_names(kind))
    uses = "uses it" if kind in COMPONENT_KINDS else "it observes"
    article = "an" if kind[0] in "aeiou" else "a"  # "an observer plugin"
    click.echo(f"wrote {target}/ ({article} {kind} plugin named '{name.replace('-', '_')}'). Next:\n"
               f"  cd {target}\n"
               f"  pip install -e '.[test]'    # hydranet now finds it: hydranet plugins\n"
               f"  pytest                      # its own test\n"
               f"  hydranet train spec.yaml    # a short run that {uses}")


@hookimpl
def register_commands(cli: Any) -> None:
    cli.add_command(new_plugin_command)


# ---------------------------------------------------------------- templates ($name, $dist, $Class, $kind)

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "hydranet-$dist"
version = "0.1.0"
description = "A hydranet plugin: the $name $kind."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["hydranet"]

[project.optional-dependencies]
test = ["pytest>=7"]

# The line that makes hydranet find this plugin: entry-point group `hydranet`,
# plugin name `$name`, value = the module holding the @hydranet.hookimpl functions.
[project.entry-points.hydranet]
$name = "hydranet_$name.plugin"

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

INIT = '''\
"""hydranet-$dist: a hydranet plugin (see plugin.py)."""

__version__ = "0.1.0"
'''

README = '''\
# hydranet-$dist

A hydranet plugin that $what
(`src/hydranet_$name/plugin.py`). Written by `hydranet new-plugin`.

## Install and test

```bash
pip install -e '.[test]'   # with hydranet already installed in this environment
$listed
pytest                     # tests/test_plugin.py
```

hydranet finds the plugin through its entry point; nothing needs importing:

```toml
[project.entry-points.hydranet]
$name = "hydranet_$name.plugin"
```

`HYDRANET_PLUGINS=$name` loads only this third-party plugin;
`HYDRANET_PLUGINS=` (empty) loads built-ins only.
'''

README_USE = {
    "task": '''
## Use it

```bash
hydranet train spec.yaml   # age, gender and $name on synthetic faces, under a minute on a CPU
```

In any spec: `tasks: [age, {name: $name, threshold: 40}]`. The task reads the
record field named by `label` (default `age`: a UTKFace file-name field, or a
CSV column with the `folder` dataset) and predicts whether it is at least
`threshold`. Edit `parse_label`, `out_features`, `per_sample_loss`, `metrics`
and `decode` in `plugin.py` to make it your task.
''',
    "weighting": '''
## Use it

```bash
hydranet train spec.yaml   # the three demo tasks weighted by $name
```

In any spec: `weighting: {name: $name, momentum: 0.9}`. The weights in force
are logged per epoch in the run's `metrics.csv` (`weight.<task>`). Edit
`multipliers` and `combine` in `plugin.py` to make it your weighting.
''',
    "backbone": '''
## Use it

```bash
hydranet train spec.yaml   # the demo tasks on the $name backbone
```

In any spec: `backbone: {name: $name, width: 16}`. A backbone maps images
(N, 3, H, W) to features (N, out_features); the heads are built for
`out_features`. Edit the layers in `plugin.py` to make it yours.
''',
    "dataset": '''
## Use it

Put images in one subfolder per class (`data/$name/cat/1.jpg`,
`data/$name/dog/2.jpg`, ...); the subfolder name becomes the record field
`class`, which a task reads with `label: class`:

```bash
hydranet train spec.yaml --set data.root=data/$name
```

Edit `class_names` in `spec.yaml` to your subfolder names, and `samples` in
`plugin.py` to read your own layout.
''',
    "observer": '''
## Use it

Installed, the observer watches every run; nothing in a spec names it:

```bash
hydranet train spec.yaml   # then: cat runs/*/$name.jsonl
```

Each run folder gets `$name.jsonl`: a JSON line when the run starts (its
tasks, epochs, device, the epoch a resumed run continues at), one per epoch
(the numbers of that epoch's `metrics.csv` row) and one when it ends (status
`finished`, `interrupted`, `nonfinite` or `failed`, and the message). Edit
the three hooks in `plugin.py` to send them to your tracker instead. Keep
them quick, or hand slow work to a thread: they run between epochs.
`HYDRANET_PLUGINS` without `$name` turns it off.
''',
}

SPECS = {
    "task": '''\
# hydranet train spec.yaml
backbone: {name: tiny, width: 32}
image_size: 32
tasks:
  - age
  - gender
  - {name: $name, label: age, threshold: 30}   # this plugin's task
data: {name: synthetic, count: 2000, size: 64}
weighting: sum
train: {epochs: 5, batch_size: 64, lr: 3.0e-3}
''',
    "weighting": '''\
# hydranet train spec.yaml
backbone: {name: tiny, width: 32}
image_size: 32
tasks: [age, gender, ethnicity]
data: {name: synthetic, count: 2000, size: 64}
weighting: {name: $name, momentum: 0.9}       # this plugin's weighting
train: {epochs: 5, batch_size: 64, lr: 3.0e-3}
''',
    "backbone": '''\
# hydranet train spec.yaml
backbone: {name: $name, width: 16}            # this plugin's backbone
image_size: 32
tasks: [age, gender, ethnicity]
data: {name: synthetic, count: 2000, size: 64}
weighting: sum
train: {epochs: 5, batch_size: 64, lr: 3.0e-3}
''',
    "dataset": '''\
# hydranet train spec.yaml --set data.root=FOLDER   (FOLDER/<class>/<image>.jpg)
backbone: {name: tiny, width: 32}
image_size: 32
tasks:
  - {name: category, kind: multiclass, label: class, class_names: [cat, dog]}   # your subfolder names
data: {name: $name, root: data/$name}         # this plugin's dataset
train: {epochs: 5, batch_size: 64, lr: 3.0e-3}
''',
    "observer": '''\
# hydranet train spec.yaml   (any spec: an installed observer watches every run)
backbone: {name: tiny, width: 32}
image_size: 32
tasks: [age, gender, ethnicity]
data: {name: synthetic, count: 2000, size: 64}
train: {epochs: 3, batch_size: 64, lr: 3.0e-3}
''',
}

PLUGINS = {
    "task": '''\
"""The `$name` task: a hydranet task plugin.

hydranet finds this module through the entry point in pyproject.toml and calls
`register_tasks` with a `register` callback. A task is a head, a label parser,
a loss, metrics and a decoder; hydranet brings the rest (the shared backbone,
masking of missing labels, the training loop, checkpoints, the per-task table).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

import hydranet
from hydranet.core.metrics import Accuracy


class ${Class}Params(BaseModel):
    """What a spec may set: `{name: $name, label: age, threshold: 30}`."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error with a did-you-mean

    label: str = Field("age", description="Record field holding the raw value (UTKFace name field or CSV column).")
    threshold: float = Field(30.0, description="Values at or above this are the positive class.")
    hidden: int | None = Field(None, gt=0, description="Hidden width of the head; default: the feature width.")


class ${Class}Task(hydranet.Task):
    """Is the label field at or above a threshold? (binary: BCE with logits, accuracy)"""

    problem = "classification"  # tells likelihood-based weightings (uncertainty) which loss form to use

    def __init__(self, name: str, params: ${Class}Params):
        super().__init__(name, params.label, hidden=params.hidden)
        self.threshold = params.threshold
        self.class_names = ["no", "yes"]  # label 0, label 1: names the rows of `hydranet eval`'s confusion matrix

    @property
    def out_features(self) -> int:
        return 1  # one logit; the head is Linear -> ReLU -> Linear(out_features)

    def parse_label(self, record: Mapping[str, str]) -> float | None:
        try:
            value = float(record[self.label])
        except (KeyError, ValueError):
            return None  # missing or unreadable: masked out of this task only
        return float(value >= self.threshold) if math.isfinite(value) else None

    def per_sample_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(output[:, 0], target, reduction="none")

    def metrics(self) -> dict[str, hydranet.Metric]:
        return {"accuracy": Accuracy()}  # accumulates on the device; the first metric is the headline

    def decode(self, output: Tensor) -> list[dict[str, Any]]:
        positive = torch.sigmoid(output.detach().float()[:, 0]).tolist()
        return [{"class": self.class_names[p >= 0.5], "probability": round(max(p, 1 - p), 4)} for p in positive]

    def trivial_output(self, targets: Tensor) -> Tensor:
        """The best constant prediction (the majority class): the baseline column of the final table."""
        labelled = targets[~torch.isnan(targets)]
        majority_positive = labelled.numel() > 0 and float(labelled.mean()) >= 0.5
        return torch.tensor([10.0 if majority_positive else -10.0])


@hydranet.hookimpl
def register_tasks(register: Any) -> None:
    register("$name", ${Class}Task, params=${Class}Params)  # description: the class docstring's first line
''',
    "weighting": '''\
"""The `$name` weighting: a hydranet weighting plugin.

hydranet finds this module through the entry point in pyproject.toml and calls
`register_weightings`. A weighting turns the per-task losses of each step into
the one loss to backpropagate; its buffers and parameters are saved in
checkpoints and its `weights()` are logged every epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

import hydranet
from hydranet.core.weighting import WeightedSum


class ${Class}Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    momentum: float = Field(0.9, ge=0, lt=1, description="How slowly each task's running loss scale follows its losses.")


class $Class(WeightedSum):
    """Weights 1 / running mean of each task's loss, scaled to sum to K: every task on the same scale."""

    description = "Weights 1 / running mean of each task's loss, summing to K."
    reference = "Write your reference here."

    def __init__(self, tasks: Sequence[hydranet.Task], params: ${Class}Params | None = None):
        super().__init__(tasks)
        self.momentum = (params or ${Class}Params()).momentum
        self.register_buffer("scale", torch.ones(self.num_tasks))  # saved in checkpoints, moved with the model

    def multipliers(self) -> Tensor:
        inverse = 1.0 / self.scale.clamp_min(1e-8)
        return self.num_tasks * inverse / inverse.sum()

    def combine(self, losses: Tensor) -> Tensor:
        total = super().combine(losses)  # checks the shape, then sum_i m_i * L_i
        # Tensor operations only (no .item(), no `if` on a tensor): the GPU never waits for the CPU.
        # A task with no labelled row in this batch has loss exactly 0 and keeps its scale.
        fresh = losses.detach().float()
        moved = self.momentum * self.scale + (1 - self.momentum) * fresh
        self.scale.copy_(torch.where(fresh > 0, moved, self.scale))
        return total


@hydranet.hookimpl
def register_weightings(register: Any) -> None:
    register("$name", $Class, params=${Class}Params, description=$Class.description)
''',
    "backbone": '''\
"""The `$name` backbone: a hydranet backbone plugin.

hydranet finds this module through the entry point in pyproject.toml and calls
`register_backbones`. A backbone maps images (N, 3, H, W) to flat features
(N, out_features); it runs once per batch and every task's head reads its output.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

import hydranet


class ${Class}Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    width: int = Field(16, ge=1, description="Channels of the first block; the features are 4 x width wide.")


def block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 stride-2 convolution, batch norm, ReLU: halves the resolution."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class ${Class}Backbone(hydranet.Backbone):
    """Three stride-2 conv blocks and global average pooling (any image size)."""

    def __init__(self, params: ${Class}Params):
        super().__init__()
        width = params.width
        self.out_features = 4 * width  # the heads are built for this width
        self.layers = nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 4 * width),
                                    nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images)


@hydranet.hookimpl
def register_backbones(register: Any) -> None:
    register("$name", ${Class}Backbone, params=${Class}Params)
''',
    "dataset": '''\
"""The `$name` dataset: a hydranet dataset plugin.

hydranet finds this module through the entry point in pyproject.toml and calls
`register_datasets`. A dataset lists samples: an image source plus a record of
raw label fields (strings). Tasks read the fields they need (`label: class`),
so one dataset serves any set of tasks. hydranet decodes each image once and
caches it; the dataset only says where the images are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

import hydranet
from hydranet.core.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class ${Class}Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str = Field(description="Folder with one subfolder per class; a subfolder's images are of that class.")
    field: str = Field("class", description="Record field that receives the subfolder name (a task's `label`).")


class ${Class}Dataset(hydranet.Dataset):
    """Images in ROOT/<class>/: the subfolder's name is the label."""

    def __init__(self, params: ${Class}Params):
        self.root = Path(params.root)
        self.field = params.field

    def samples(self) -> list[hydranet.Sample]:
        if not self.root.is_dir():
            raise DataError(f"{self.root} is not a folder; set data.root to a folder with one subfolder per class")
        self.problems.clear()  # listing twice must not report every problem twice
        samples = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for path in sorted(folder.iterdir()):
                if path.name.startswith("."):
                    continue
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    samples.append(hydranet.Sample(str(path), {self.field: folder.name}))
                else:
                    self.report_problem(str(path), "not a .jpg, .jpeg or .png file")  # listed, skipped
        return samples


@hydranet.hookimpl
def register_datasets(register: Any) -> None:
    register("$name", ${Class}Dataset, params=${Class}Params)
''',
    "observer": '''\
"""The `$name` observer: a hydranet plugin that watches training runs.

hydranet finds this module through the entry point in pyproject.toml and calls
its hooks in every training run (in rank 0's process of a distributed run):
`run_started` once the run is set up, `epoch_finished` after each epoch's row
is written to metrics.csv (and the epoch saved), `run_finished` however the run
ends. This one appends each as a JSON line to `$name.jsonl` in the run folder;
change the three hooks to send them to your tracker.

The hooks run in the training process between epochs: keep them quick, and
hand slow work (uploads, network calls) to a thread. What one raises is logged
as a warning naming this plugin and the hook, which is then not called again
in that run; the run itself goes on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import hydranet

FILE_NAME = "$name.jsonl"


def append(run: hydranet.RunInfo, event: str, **fields: Any) -> None:
    """One JSON line for `event`, written at once: a run that crashes keeps every line before the crash."""
    line = json.dumps({"event": event, "run": run.name, **fields})
    with open(run.run_dir / FILE_NAME, "a", encoding="utf-8") as handle:
        handle.write(line + "\\n")


@hydranet.hookimpl
def run_started(run: hydranet.RunInfo) -> None:
    append(run, "run_started", tasks=list(run.tasks), epochs=run.epochs, device=run.device,
           world_size=run.world_size, resumed_from=run.resumed_from, hydranet=run.version)


@hydranet.hookimpl
def epoch_finished(run: hydranet.RunInfo, epoch: int, metrics: Mapping[str, float]) -> None:
    append(run, "epoch_finished", epoch=epoch, metrics=dict(metrics))  # metrics.csv's row for the epoch


@hydranet.hookimpl
def run_finished(run: hydranet.RunInfo, status: str, message: str | None) -> None:
    append(run, "run_finished", status=status, message=message)  # finished, interrupted, nonfinite or failed
''',
}

TEST_HEAD = '''\
"""Tests of the $name plugin: pip install -e '.[test]' && pytest"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hydranet.core.plugins import load_components, make_plugin_manager
from hydranet.core.spec import load_spec

PLUGIN = "$name"
SPEC = Path(__file__).resolve().parent.parent / "spec.yaml"


@pytest.fixture(scope="module")
def components():
    """hydranet's built-ins plus this plugin, found through its entry point as when installed."""
    pm = make_plugin_manager(allow={PLUGIN})
    assert PLUGIN in pm.info, "entry point not found: install the package first (pip install -e .)"
    assert pm.load_errors() == []
    return load_components(pm)


def test_the_example_spec_validates(components):
    spec = load_spec(SPEC, components=components)
    assert spec.to_dict()  # every name resolved, every parameter validated

'''

TEST_COMPONENT = '''
def test_the_entry_point_registers_the_$kind(components):
    assert components.$registry.get("$name").plugin == PLUGIN


def build(components, *args, **params):
    entry = components.$registry.get("$name")
    return entry.factory(*args, entry.validate_params(params))

'''

TESTS = {
    "task": '''
def test_parse_label_reads_the_field_and_treats_bad_values_as_missing(components):
    task = build(components, "$name", threshold=30)
    assert [task.parse_label({"age": v}) for v in ("29", "30", "75.5")] == [0.0, 1.0, 1.0]
    assert task.parse_label({}) is None and task.parse_label({"age": "old"}) is None


def test_loss_ignores_rows_without_a_label_and_the_head_fits(components):
    task = build(components, "$name")
    head = task.build_head(8)
    output = head(torch.randn(3, 8))
    assert output.shape == (3, task.out_features)
    target = torch.tensor([1.0, 0.0, float("nan")])
    loss = task.loss(output, target)
    assert torch.isfinite(loss)
    assert torch.allclose(loss, task.loss(output[:2], target[:2]))
    assert [row["class"] for row in task.decode(torch.tensor([[3.0], [-3.0]]))] == ["yes", "no"]
''',
    "weighting": '''
def test_combine_is_a_weighted_sum_whose_weights_sum_to_k(components):
    tasks = [components.tasks.get(n).factory(n, components.tasks.get(n).validate_params({})) for n in ("age", "gender")]
    weighting = build(components, tasks, momentum=0.5)
    losses = torch.tensor([4.0, 1.0], requires_grad=True)
    total = weighting.combine(losses)
    assert torch.isfinite(total)
    weighting.combine(losses)  # the running scales have now moved towards 4 and 1
    weights = weighting.weights()
    assert torch.isclose(weights.sum(), torch.tensor(2.0)) and weights[0] < weights[1]
    state = weighting.state_dict()  # what a checkpoint saves
    restored = build(components, tasks, momentum=0.5)
    restored.load_state_dict(state)
    assert torch.equal(restored.weights(), weights)
''',
    "backbone": '''
def test_features_have_the_declared_width(components):
    backbone = build(components, width=4)
    features = backbone(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, backbone.out_features) == (2, 16)
    assert backbone(torch.randn(2, 3, 48, 48)).shape == (2, 16)  # any image size
''',
    "dataset": '''
def test_samples_take_their_label_from_the_subfolder(components, tmp_path):
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / label / "1.jpg")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    dataset = build(components, root=str(tmp_path))
    samples = dataset.samples()
    assert [(Path(s.source).parent.name, dict(s.record)) for s in samples] == [
        ("cat", {"class": "cat"}), ("dog", {"class": "dog"})]
    assert [Path(source).name for source, _ in dataset.problems] == ["notes.txt"]
''',
    "observer": '''
def events(run_dir: Path) -> list[dict]:
    import json

    from hydranet_$name.plugin import FILE_NAME

    return [json.loads(line) for line in (run_dir / FILE_NAME).read_text(encoding="utf-8").splitlines()]


def test_the_entry_point_adds_the_observer_hooks(components):
    observes = components.pm.info[PLUGIN].components["observes"]
    assert observes == ["run_started", "epoch_finished", "run_finished"]  # what `hydranet plugins` lists


def test_each_hook_appends_one_json_line(tmp_path):
    import hydranet
    from hydranet_$name import plugin

    run = hydranet.RunInfo(run_dir=tmp_path, spec={}, tasks=("age",), epochs=1)
    plugin.run_started(run)
    plugin.epoch_finished(run, 1, {"train_loss.age": 0.5, "lr": 0.001})
    plugin.run_finished(run, "interrupted", "stopped by SIGINT")
    lines = events(tmp_path)
    assert [line["event"] for line in lines] == ["run_started", "epoch_finished", "run_finished"]
    assert lines[1]["metrics"] == {"train_loss.age": 0.5, "lr": 0.001}
    assert (lines[2]["status"], lines[2]["message"]) == ("interrupted", "stopped by SIGINT")


def test_a_short_run_is_observed_with_the_numbers_of_metrics_csv(components, tmp_path):
    import csv

    import hydranet

    small = ["data.count=64", "data.size=16", "image_size=16", "train.epochs=2", "train.batch_size=16",
             "train.device=cpu"]
    result = hydranet.train(load_spec(SPEC, small, components=components), out_dir=tmp_path / "run",
                            components=components, progress=False, echo=False)
    lines = events(result.run_dir)
    assert [(line["event"], line.get("epoch")) for line in lines] == [
        ("run_started", None), ("epoch_finished", 1), ("epoch_finished", 2), ("run_finished", None)]
    assert lines[-1]["status"] == "finished" and lines[0]["tasks"] == ["age", "gender", "ethnicity"]
    rows = list(csv.DictReader(open(result.run_dir / "metrics.csv", encoding="utf-8")))
    for line, row in zip(lines[1:3], rows):
        assert line["metrics"]["val_loss.age"] == pytest.approx(float(row["val_loss.age"]), rel=1e-6)
    assert "warning" not in (result.run_dir / "train.log").read_text(encoding="utf-8")
''',
}
