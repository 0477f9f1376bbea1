"""The shape of a spec file: pydantic models of its sections (the loader's first pass).

Component sections (backbone, data, weighting, each task) take a registered
name and that component's parameters; the parameters are checked in the
second pass (`hydranet.core.spec.resolve`), against the model the component's
plugin registered. Every field's description is the user's documentation:
`docs/reference/spec.md` and the JSON Schema are generated from them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from hydranet.core.errors import closest_name
from hydranet.core.registry import takes_numbers_not_bools


class SpecSection(BaseModel):
    """A spec section: `true` or `false` is no number, whatever pydantic's lax mode would make of it."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and takes_numbers_not_bools(field.annotation):
            raise ValueError(f"expected a number, not {str(value).lower()}")
        return value


class Component(SpecSection):
    """A named component; keys other than `name` are that component's parameters."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="Registered name (see `hydranet list`).")

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class BackboneSection(Component):
    name: str = Field("resnet18", description="Backbone name (see `hydranet list backbones`).")


class WeightingSection(Component):
    name: str = Field("sum", description="Weighting name (see `hydranet list weightings`).")


class DataSection(Component):
    """Dataset name and parameters, plus the keys every dataset shares."""

    name: str = Field(description="Dataset name (see `hydranet list datasets`).")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Share of samples held out for validation; 0: no "
                                                             "validation split, the metrics and the best checkpoint "
                                                             "are then measured on the training set.")
    test_fraction: float = Field(0.0, ge=0, lt=1, description="Share of samples held out as a test split: never "
                                                               "trained on, never used to choose the best epoch, "
                                                               "scored once with the best epoch's weights at the end "
                                                               "(summary.json's `test`). 0: no test split. Report "
                                                               "these numbers; the validation ones chose the model.")
    split_seed: int = Field(0, description="Seed of the train/validation/test split (independent of the training "
                                           "seed).")
    strict: bool = Field(False, description="Stop before training, with the list of what is wrong, when images "
                                            "are unreadable or entries or labels malformed, instead of skipping "
                                            "them.")
    cache: bool = Field(True, description="Keep decoded images in the on-disk cache for the next run.")
    workers: int | None = Field(None, ge=0, description="Decoding processes; default: one per CPU core.")
    placement: Literal["auto", "device", "host", "stream"] = Field(
        "auto", description="Where decoded images live: on the device, in host memory, or streamed from "
                            "the cache file by DataLoader workers; auto picks the first that fits.")
    device_memory_gb: float | None = Field(None, gt=0, description="Budget for images on the device; "
                                                                   "default: 40% of the GPU's free memory.")

    @model_validator(mode="after")
    def _room_for_training(self) -> "DataSection":
        """Validation and test together must leave images to train on."""
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"val_fraction ({self.val_fraction:g}) + test_fraction ({self.test_fraction:g}) is "
                             f"{self.val_fraction + self.test_fraction:g}; together they must be less than 1, to "
                             "leave images to train on: lower one of them")
        return self


TASK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


class TaskSection(SpecSection):
    """One task: a registered task (`age`) or a new task from a kind (`{name: smiling, kind: binary, ...}`)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="The task's name: its head, loss and metrics are reported under it.",
                      json_schema_extra={"pattern": f"^{TASK_NAME.pattern}$"})
    kind: str | None = Field(None, description="Registered task or kind to build it from; default: `name`.")
    params: dict[str, Any] = Field(default_factory=dict, description="Parameters (may also be given inline).")

    @field_validator("name")
    @classmethod
    def _usable_name(cls, name: str) -> str:
        """Task names become module keys, CSV columns and output names: keep them plain."""
        if not TASK_NAME.fullmatch(name):
            joined = ("; YAML read several lines as this one name: are the list's '- ' items indented alike?"
                      if re.search(r"\s-\s", name) else "")
            raise ValueError(f"task name '{name}' must start with a letter and contain only letters, digits, "
                             f"'_' or '-'{joined}")
        return name


class AugmentSection(SpecSection):
    model_config = ConfigDict(extra="forbid")

    flip: bool = Field(True, description="Random horizontal flip.")
    translate: float = Field(0.1, ge=0, lt=0.5, description="Random shift, as a fraction of the image size.")
    color_jitter: float = Field(0.0, ge=0, lt=1, description="Random brightness/contrast/saturation strength.")


#: a learning rate: more than 0 (0 would train nothing, a negative rate would climb the loss)
PositiveRate = Annotated[float, Field(gt=0)]

#: train.monitor's default: the total validation loss picks the best epoch
LOSS_MONITOR = "loss"


def monitor_words(monitor: str) -> str:
    """"validation loss" or "validation gender.accuracy": what picks the best epoch, in the run's messages."""
    return f"validation {monitor}"


class TrainSection(SpecSection):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=1, description="Passes over the training split.")
    batch_size: int = Field(64, ge=1, description="Images per step (over all processes). The last, partial batch "
                                                  "of each epoch is dropped; a batch size larger than the training "
                                                  "split is cut to it.")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="adamw (AdamW, weight decay decoupled), or sgd "
                                                                    "(with train.momentum).")
    lr: float = Field(1e-3, gt=0, description="Learning rate (the peak, before the scheduler lowers it); the "
                                              "backbone and heads use it unless backbone_lr or head_lr say "
                                              "otherwise, and a weighting's own parameters always do.")
    backbone_lr: float | None = Field(None, gt=0, description="Learning rate of the backbone; default: lr.")
    head_lr: float | dict[str, PositiveRate] | None = Field(
        None, description="Learning rate of the heads, or per task ({age: 1e-2}; a task left out trains at lr); "
                          "default: lr. Each rate must be greater than 0.")
    weight_decay: float = Field(1e-4, ge=0, description="Weight decay of the backbone and heads (not of a "
                                                        "weighting's own parameters).")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum, for optimizer sgd only (adamw ignores it; "
                                                         "the article's 0.09 was a typo for 0.9).")
    scheduler: Literal["none", "cosine"] = Field(
        "cosine", description="How the learning rate changes after the warmup, once per step: none (constant), "
                              "or cosine (from lr down to 0 at the last step of the last epoch).")
    warmup_epochs: float = Field(
        0.0, ge=0, description="Epochs of linear warmup before the scheduler (fractions allowed, counted in steps): "
                               "the learning rate rises linearly from lr/W at the first step to lr at the W-th "
                               "(W = warmup_epochs x steps per epoch, rounded), then follows the scheduler (cosine "
                               "anneals over the remaining steps). 0: no warmup.")
    seed: int = Field(0, description="Seed of the model's initial weights, the batch order and the augmentation "
                                     "(the split has its own, data.split_seed).")
    device: str = Field("auto", description="auto (cuda, then mps, then cpu), or a torch device string.")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 autocast on a CUDA GPU with native bf16 (Ampere or later), fp32 elsewhere.")
    compile: Literal["auto"] | bool = Field("auto",
                                           description="torch.compile the model and losses; auto: on for CUDA.")
    compile_mode: Literal["auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "auto", description="torch.compile mode; auto: default on CUDA, where hydranet records the whole step as "
                            "one CUDA graph (reduce-overhead where it cannot), and default elsewhere.")
    compile_in_background: bool = Field(
        False, description="Start training at once, uncompiled, while a child process compiles the same model "
                           "into the compiler's on-disk cache; switch to the compiled model when it is done (a "
                           "pause of seconds instead of a cold compile before the first step). How many steps run "
                           "uncompiled depends on timing, so runs do not repeat bit for bit. Not with "
                           "deterministic, cuda_graphs step, or several processes.")
    cuda_graphs: Literal["auto", "off", "compiler", "step"] = Field(
        "auto", description="Who records CUDA graphs: compiler (torch.compile's reduce-overhead mode records the "
                            "forward and backward), step (hydranet records the whole step, optimizer included, and "
                            "replays it once per step; for weightings that allow it, in one process), or off; "
                            "auto: step on CUDA for a compiled model with compile_mode auto, where the run allows it; "
                            "else as compile_mode says (nothing when not compiled).")
    cudnn_benchmark: bool = Field(
        False, description="Let cuDNN time its convolution algorithms for each shape on the first step and keep "
                            "the fastest (costs start-up time; ignored with deterministic).")
    channels_last: Literal["auto"] | bool = Field("auto", description="channels_last memory format; auto: on for CUDA.")
    log_every: int = Field(50, ge=1, description="Steps between progress-bar loss updates (each one syncs).")
    eval_batch_size: int | None = Field(None, ge=1, description="Validation batch size; default: 2 x batch_size.")
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="A NaN/inf loss stops the run (keeping the last good checkpoint), or skips that "
                            "batch and counts it (costs one host sync per step).")
    deterministic: bool = Field(False, description="Use deterministic algorithms only (slower on GPU); "
                                                   "makes runs and resumed runs repeat bit for bit.")
    monitor: str = Field(
        LOSS_MONITOR, description="What picks the best epoch (best.pt, summary.json's best_epoch, the weights the "
                                  "test split scores) and what train.patience watches: loss (the total validation "
                                  "loss, whose scale depends on the weighting), TASK.loss (one task's validation "
                                  "loss), or TASK.METRIC, a validation metric as metrics.csv's val.TASK.METRIC "
                                  "columns name it (age.mae, gender.accuracy), better higher or lower as the metric "
                                  "says (summary.json's higher_is_better). An epoch whose value is not finite is "
                                  "never the best.")
    patience: int | None = Field(
        None, ge=1, description="Stop early after this many epochs in a row whose train.monitor value did not "
                                "improve on the best epoch's; the run is then finished (summary.json's "
                                "stopped_early), as after its last epoch. null: train every epoch.")

    @field_validator("head_lr")
    @classmethod
    def _a_positive_rate(cls, rate: float | dict[str, float] | None) -> float | dict[str, float] | None:
        """One rate for every head must be more than 0, as backbone_lr (a mapping's rates are checked by type)."""
        if isinstance(rate, float | int) and rate <= 0:
            raise ValueError(f"should be greater than 0 (got {rate:g}): 0 would train nothing and a negative rate "
                             "climbs the loss; leave head_lr out for lr, or freeze the heads")
        return rate

    @field_validator("monitor")
    @classmethod
    def _a_monitor(cls, monitor: str) -> str:
        """Its shape here; whether it names a task and metric of the spec is `Spec`'s and the run's to check."""
        task, dot, metric = monitor.partition(".")
        if monitor != LOSS_MONITOR and not (dot and task and metric):
            raise ValueError(f"should be '{LOSS_MONITOR}' (the total validation loss) or TASK.METRIC, a task's "
                             f"validation metric such as age.mae or gender.accuracy (got {monitor!r})")
        return monitor

    @field_validator("cuda_graphs", mode="before")
    @classmethod
    def _off_is_a_word(cls, value: Any) -> Any:
        """YAML reads a bare `off` (in a spec or a --set) as false; here it means the choice "off"."""
        return "off" if value is False else value

    @field_validator("device")
    @classmethod
    def _a_device(cls, device: str) -> str:
        """A device torch can parse (it need not be present: that is checked when a run starts)."""
        from hydranet.core.device import device_name_problem  # torch: not for readers of saved specs (compare)

        problem = device_name_problem(device)
        if problem:
            raise ValueError(problem)
        return device


COMPONENT_SECTIONS = ("backbone", "weighting", "data")


def monitor_problem(monitor: str, tasks: Mapping[str, Sequence[str] | None]) -> str | None:
    """Why `train.monitor` names no validation figure of these tasks, with a did-you-mean; None when it does.

    `tasks` maps each task's name to its metric names, or to None where they
    are not known yet (a spec's first pass has not built the tasks): then only
    the task is checked, and the run checks the metric before it trains.
    `TASK.loss` (one task's validation loss) is a figure of every task. A
    name as metrics.csv's columns spell it (`val.age.mae`, `val_loss.age`)
    is answered with the name to give.
    """
    if monitor == LOSS_MONITOR:
        return None
    task, _, metric = monitor.partition(".")
    known = [f"{name}.{each}" for name, metrics in tasks.items() if metrics is not None
             for each in [*metrics, TASK_LOSS]]
    choices = f"'{LOSS_MONITOR}' or " + (", ".join(known) if known else
                                         f"TASK.METRIC or TASK.loss of tasks {', '.join(tasks)}")
    if task not in tasks:
        column = _as_csv_column(monitor, tasks)
        near = column or (closest_name(monitor, known) if known else closest_name(task, tasks))
        if near and not known and not column:  # the metric is not known yet: suggest the task, the metric as given
            near = f"{near}.{metric}"
        hint = f" did you mean '{near}'?" if near else ""
        columns = " (train.monitor names TASK.METRIC, without metrics.csv's column prefix)" if column else ""
        return f"'{task}' is not a task of this spec;{hint}{columns} give {choices}"
    metrics = tasks[task]
    if metrics is None or metric in metrics or metric == TASK_LOSS:
        return None
    near = closest_name(metric, [*metrics, TASK_LOSS])
    hint = f" did you mean '{task}.{near}'?" if near else ""
    return f"task '{task}' has no validation metric '{metric}';{hint} give {choices}"


#: `TASK.loss` in train.monitor: that task's validation loss (a metric of the same name, if a task has one, wins)
TASK_LOSS = "loss"


def _as_csv_column(monitor: str, tasks: Mapping[str, object]) -> str | None:
    """`val.age.mae` -> `age.mae`, `val_loss.age` -> `age.loss`: the monitor a metrics.csv column name means."""
    prefix, _, rest = monitor.partition(".")
    if prefix == "val" and rest.partition(".")[0] in tasks:
        return rest
    if prefix == "val_loss" and rest in tasks:
        return f"{rest}.{TASK_LOSS}"
    return None


class Spec(SpecSection):
    """The shape of a spec file (first pass)."""

    model_config = ConfigDict(extra="forbid")

    backbone: BackboneSection = Field(default_factory=BackboneSection, description=(
        "The shared feature extractor: its name, or a mapping of its name and parameters "
        "(`{name: tiny, width: 32}`)."))
    image_size: int = Field(64, ge=8, le=1024, description="Training image size in pixels (square).")
    tasks: list[TaskSection] = Field(min_length=1, description=(
        "The tasks, one head each: a registered task's name (`age`), or a mapping "
        "(`{name: smiling, kind: binary, label: smile}`)."))
    data: DataSection = Field(description=(
        "The dataset: its name, or a mapping of its name, its parameters and the keys every dataset shares "
        "(`{name: utkface, root: data/UTKFace, val_fraction: 0.1}`)."))
    weighting: WeightingSection = Field(default_factory=WeightingSection, description=(
        "How the task losses become one update: its name, or a mapping of its name and parameters "
        "(`{name: dwa, temperature: 2.0}`)."))
    augment: AugmentSection = Field(default_factory=AugmentSection, description="Random changes to training images.")
    train: TrainSection = Field(default_factory=TrainSection, description=(
        "Epochs, batch size, optimizer, learning rates, device, precision and compilation."))
    init_from: str | None = Field(None, description="Start from this checkpoint: its backbone, and the heads of "
                                                    "tasks it shares with this spec; other tasks get new heads.")
    freeze: list[str] = Field(default_factory=list, description="Parts that do not train: 'backbone' and/or "
                                                               "task names (no gradient, fixed batch-norm statistics).")

    @model_validator(mode="before")
    @classmethod
    def _names_as_components(cls, raw: Any) -> Any:
        """Accept `weighting: dwa` for `weighting: {name: dwa}`, and `- age` for `- {name: age}`."""
        if not isinstance(raw, Mapping):
            return raw
        raw = dict(raw)
        for key in COMPONENT_SECTIONS:
            if isinstance(raw.get(key), str):
                raw[key] = {"name": raw[key]}
        if isinstance(raw.get("tasks"), list):
            raw["tasks"] = [{"name": t} if isinstance(t, str) else t for t in raw["tasks"]]
        return raw

    @field_validator("init_from")
    @classmethod
    def _a_path(cls, path: str | None) -> str | None:
        """An empty path would name the folder hydranet runs in; leave init_from out (or null) for none."""
        if path is not None and not path.strip():
            raise ValueError("is empty; give a run's best.pt or last.pt, or leave init_from out to start afresh")
        return path

    @model_validator(mode="after")
    def _monitor_names_a_task(self) -> "Spec":
        """train.monitor's task must be one of the spec's (its metric is checked once the tasks are built)."""
        problem = monitor_problem(self.train.monitor, {task.name: None for task in self.tasks})
        if problem:
            raise ValidationError.from_exception_data("Spec", [InitErrorDetails(
                type=PydanticCustomError("value_error", "{problem}", {"problem": problem}),
                loc=("train", "monitor"), input=self.train.monitor)])
        return self

    @field_validator("tasks")
    @classmethod
    def _unique_task_names(cls, tasks: list[TaskSection]) -> list[TaskSection]:
        seen: set[str] = set()
        for task in tasks:
            if task.name in seen:
                raise ValueError(f"task '{task.name}' appears more than once; give each task its own name")
            seen.add(task.name)
        return tasks


def with_section_defaults(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A saved spec (a run's spec.yaml) with this version's defaults for keys its data, train and augment
    sections lack: a key added since the run was written (data.test_fraction) then reads as the default it
    trained with, not as a difference from a newer run (`compare`, a sweep continuing its folder)."""
    out = dict(raw)
    for key, model in (("data", DataSection), ("train", TrainSection), ("augment", AugmentSection)):
        section = out.get(key)
        if isinstance(section, Mapping):
            missing = {name: field.get_default(call_default_factory=True)
                       for name, field in model.model_fields.items() if name not in section and not field.is_required()}
            out[key] = {**section, **missing}
    return out
