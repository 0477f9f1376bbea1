"""Which point of its run a checkpoint's weights are from: best.pt, a finished run's last.pt, or a mid-run one.

eval, predict and `TrainedModel`'s repr say it beside the weights, because a
last.pt saved when a run was interrupted scores worse than best.pt and
nothing else tells the user it is a snapshot. Read from what the checkpoint
stores (its epoch, train.epochs, last.pt's progress); nothing is loaded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from hydranet.core.values import is_whole_number
from hydranet.core.wording import plural


@dataclasses.dataclass(frozen=True)
class Stage:
    """Which point of its run a checkpoint's weights are from: what eval, predict and `repr` say beside them.

    A last.pt saved when a run was interrupted scores worse than best.pt, and
    nothing else tells a user that it is a mid-run snapshot. `kind`:
    "best" (best.pt: the best epoch by train.monitor when it was saved),
    "finished" (last.pt of a run that trained all its epochs, or that
    train.patience stopped early) or
    "unfinished" (last.pt of a run that was interrupted or is still training).
    """

    epoch: int  #: the last epoch the weights finished (0: none)
    epochs: int | None  #: the run's total, train.epochs (None: the checkpoint does not say)
    kind: str
    best_epoch: int | None = None  #: the run's best epoch so far (best.pt's); None: not recorded or none yet
    steps_into_next: int = 0  #: training steps of epoch + 1 the weights also hold (a run stopped mid-epoch)
    monitor: str = "loss"  #: what picked the best epoch (train.monitor): the total validation loss, or TASK.METRIC
    stopped_early: bool = False  #: a finished run that train.patience stopped before its last epoch

    def best_by(self) -> str:
        """"lowest validation loss", "best validation gender.accuracy": how the best epoch was picked."""
        return "lowest validation loss" if self.monitor == "loss" else f"best validation {self.monitor}"

    def of_total(self) -> str:
        """'epoch 11 of 20', or 'epoch 11' when the total is not recorded."""
        return f"epoch {self.epoch}" + (f" of {self.epochs}" if self.epochs else "")

    def short(self) -> str:
        """'epoch 3 of 20, best', 'epoch 20 of 20, finished', 'epoch 11 of 20, unfinished run': for `repr`."""
        steps = f" + {plural(self.steps_into_next, 'step')}" if self.steps_into_next else ""
        return f"{self.of_total()}{steps}, {'unfinished run' if self.kind == 'unfinished' else self.kind}"

    def summary(self) -> str:
        """One sentence for a report's header: which epoch, what kind of checkpoint, and where the best one is."""
        best = self.best_epoch
        if self.kind == "best":
            return f"{self.of_total()}, the run's best ({self.best_by()}) when this best.pt was saved"
        if self.kind == "finished":
            also = ("also its best" if best == self.epoch else f"its best epoch, {best}, is in best.pt" if best
                    else "no epoch had a finite validation loss, so there is no best.pt")
            run = "a run stopped early (train.patience)" if self.stopped_early else "a finished run"
            return f"{self.of_total()}, the last epoch of {run} ({also})"
        steps = (f" plus {plural(self.steps_into_next, 'training step')} of epoch {self.epoch + 1}"
                 if self.steps_into_next else "")
        where_best = f"; its best epoch so far, {best}, is in best.pt" if best else ""
        return (f"{self.of_total()}{steps}: a snapshot of an unfinished run (interrupted, or still training), not "
                f"its final weights{where_best}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for `hydranet eval --json`, with `summary` in words."""
        return {**dataclasses.asdict(self), "summary": self.summary()}


def checkpoint_stage(data: Mapping[str, Any]) -> Stage | None:
    """The `Stage` of a checkpoint's weights, from what it stores; None when it records no epoch.

    best.pt is last.pt's state without what resuming needs (`checkpoint.for_use`), so a
    checkpoint with no "progress" is a best.pt. last.pt's progress says
    where its run stood: its next epoch and step, and its best epoch.
    """
    epoch = data.get("epoch")
    if not is_whole_number(epoch):
        return None
    train = data.get("spec", {}).get("train") if isinstance(data.get("spec"), Mapping) else None
    epochs = train.get("epochs") if isinstance(train, Mapping) else None
    epochs = epochs if is_whole_number(epochs) else None
    monitor = train.get("monitor") if isinstance(train, Mapping) else None
    monitor = monitor if isinstance(monitor, str) and monitor else "loss"  # a checkpoint from before train.monitor
    progress = data.get("progress")
    if not isinstance(progress, Mapping):
        return Stage(epoch, epochs, "best", best_epoch=epoch, monitor=monitor)
    step = progress.get("step") if is_whole_number(progress.get("step")) else 0
    best = progress.get("best_epoch") if is_whole_number(progress.get("best_epoch")) else None
    early = progress.get("stopped_early") is True
    finished = (epochs is not None and epoch >= epochs and not step) or early
    return Stage(epoch, epochs, "finished" if finished else "unfinished", best_epoch=best or None,
                 steps_into_next=step, monitor=monitor, stopped_early=early)


__all__ = ["Stage", "checkpoint_stage"]
