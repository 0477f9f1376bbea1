"""An observer plugin: every run's losses, metrics, weights and learning rate in TensorBoard.

hydranet calls `run_started` once a run is set up, `epoch_finished` after each
epoch's row is written to metrics.csv, and `run_finished` however the run ends.
This plugin writes TensorBoard event files into the run folder
(RUN/tensorboard/), so `tensorboard --logdir runs` shows every run side by side.

Observers run in the training process between epochs, so they must be quick:
SummaryWriter queues its events and writes them from a thread of its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydranet

#: run folder -> its writer: one module observes every run of the process (a sweep, a notebook)
writers: dict[Path, Any] = {}


def summary_writer(log_dir: Path, purge_step: int | None) -> Any:
    """A SummaryWriter, imported only when a run starts: `hydranet -h` stays fast, and the error says what to do."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise RuntimeError("the TensorBoard observer needs the tensorboard package: pip install tensorboard "
                           "(or leave this plugin out with HYDRANET_PLUGINS)") from error
    # a resumed run repeats the epoch it stopped in: purge_step drops that epoch's events from the first try
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


@hydranet.hookimpl
def run_started(run: hydranet.RunInfo) -> None:
    writer = summary_writer(run.run_dir / "tensorboard", run.resumed_from)
    writer.add_text("spec", "```json\n" + json.dumps(run.spec, indent=2) + "\n```")  # TEXT tab
    writers[run.run_dir] = writer


@hydranet.hookimpl
def epoch_finished(run: hydranet.RunInfo, epoch: int, metrics: Mapping[str, float]) -> None:
    writer = writers[run.run_dir]
    for name, value in metrics.items():
        # "train_loss.age" -> "train_loss/age": TensorBoard groups the charts by what comes before the "/"
        writer.add_scalar(name.replace(".", "/", 1), value, global_step=epoch)


@hydranet.hookimpl
def run_finished(run: hydranet.RunInfo, status: str, message: str | None) -> None:
    writer = writers.pop(run.run_dir)
    writer.add_text("status", status + (f": {message}" if message else ""))
    writer.close()  # flushes the queue: everything is on disk when the run returns
