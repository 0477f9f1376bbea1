"""Everything a run needs to continue exactly where it stopped, beyond the weights.

A checkpoint's `progress` records the epoch and step reached, the state of
every random generator (batch order, augmentation, torch's global RNG, any
generator a weighting owns), the running sums of the epoch in progress and
the best validation loss so far. Restoring it after rebuilding the run from
its spec makes the continued run take the same steps, with the same batches
and the same random draws, as a run that was never interrupted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hydranet.core.checkpoint import read_checkpoint
from hydranet.core.errors import CheckpointError
from hydranet.core.paths import MissingPathError


@dataclass
class Progress:
    """Where a run stands: `step` steps of `epoch` are done (step 0: the epoch has not started)."""

    epoch: int = 1
    step: int = 0
    epoch_order_state: torch.Tensor | None = None
    generators: dict[str, torch.Tensor] = field(default_factory=dict)
    loss_sums: list[float] = field(default_factory=list)
    weight_sums: list[float] = field(default_factory=list)
    first_bad: list[int] = field(default_factory=list)
    #: steps of `epoch` skipped for a non-finite loss (train.on_nonfinite: skip): not in the sums' means
    skipped: int = 0
    best_loss: float = float("inf")
    best_epoch: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "epoch_order_state": self.epoch_order_state,
                "generators": self.generators, "loss_sums": self.loss_sums,
                "weight_sums": self.weight_sums, "first_bad": self.first_bad, "skipped": self.skipped,
                "best_loss": self.best_loss, "best_epoch": self.best_epoch}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Progress":
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


def module_generators(module: nn.Module) -> dict[str, torch.Generator]:
    """torch.Generator attributes of a module (e.g. a weighting's private random stream)."""
    return {name: value for name, value in vars(module).items() if isinstance(value, torch.Generator)}


def capture_generators(augment: torch.Generator, weighting: nn.Module) -> dict[str, torch.Tensor]:
    states = {"augment": augment.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda:{index}"] = state
    for name, generator in module_generators(weighting).items():
        states[f"weighting.{name}"] = generator.get_state()
    return states


def restore_generators(states: Mapping[str, torch.Tensor], augment: torch.Generator, weighting: nn.Module) -> None:
    augment.set_state(states["augment"])
    torch.set_rng_state(states["torch"])
    for key, state in states.items():
        if key.startswith("cuda:") and torch.cuda.is_available():
            index = int(key.split(":")[1])
            if index < torch.cuda.device_count():
                torch.cuda.set_rng_state(state, index)
    owned = module_generators(weighting)
    for key, state in states.items():
        if key.startswith("weighting.") and key[len("weighting."):] in owned:
            owned[key[len("weighting."):]].set_state(state)


def resume_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint to continue a run from: RUN_DIR/last.pt.

    A run continues in its own folder, from its own last.pt, so RUN_DIR is
    that folder; `RUN_DIR/last.pt` itself is taken as RUN_DIR. Any other
    checkpoint file is refused: resuming from an earlier best.pt would train
    epochs again and overwrite the run's later metrics and its last.pt, and a
    loose copy has no run folder to continue. Its weights can start a new run
    (`init_from`).
    """
    path = Path(run_dir)
    if path.is_file():
        if path.name != "last.pt":
            raise CheckpointError(not_a_run_folder(path))
        path = path.parent
    checkpoint = path / "last.pt"
    hint = "Pass the run folder of an earlier `hydranet train` (it holds last.pt)."
    if not path.exists():
        raise CheckpointError(f"nothing to resume: {path} does not exist. {hint}")
    if not checkpoint.is_file():
        raise CheckpointError(f"nothing to resume in {path}: {checkpoint.name} not found. {hint}")
    data = read_checkpoint(checkpoint)
    if "progress" not in data:
        raise CheckpointError(f"{checkpoint} has no training progress (written by an older hydranet); "
                              "it can be evaluated or used for prediction, not resumed")
    return checkpoint, data


def not_a_run_folder(file: Path) -> str:
    """Why a checkpoint file other than a run's last.pt cannot be resumed, and what to pass instead."""
    run = file.parent
    folder = f" To continue the run in {run}, pass that folder." if (run / "last.pt").is_file() else ""
    return (f"resume takes a run folder (it continues from the folder's last.pt and writes there), not the "
            f"checkpoint file {file}.{folder} To start a new run from that checkpoint's weights, put "
            f"init_from: {file} in a spec.")


def missing_on_resume(missing: MissingPathError, run_dir: Path, started_in: str | None) -> str:
    """A dataset path a resumed run does not find, and the way out: not --set, since the spec cannot change.

    `started_in` is the folder the run started in (a checkpoint's `started_in`;
    None for one written before it was recorded): a relative path in the
    spec counts from there.
    """
    said = f"{missing.what} {missing.path} {missing.state}"
    keeps = "a resumed run keeps the spec it started with (--set cannot change it)"
    new_run = f"or start a new run from its weights with init_from: {run_dir / 'last.pt'} and another data.root"
    here = Path.cwd()
    if missing.path.is_absolute():
        return f"{said}; {keeps}: put the data back there, {new_run}"
    if started_in is None:
        return (f"{said} in {here}; {keeps}, and its relative paths count from the folder the run started in: "
                f"resume from that folder, {new_run}")
    if Path(started_in) != here:
        return (f"{said} in {here}; {keeps}, and its relative paths count from the folder the run started in, "
                f"{started_in}: resume from there (cd {started_in} && hydranet train --resume "
                f"{run_dir.resolve()}), {new_run}")
    return f"{said} in {here}, where the run started; {keeps}: put the data back there, {new_run}"
