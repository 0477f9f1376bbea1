"""How a run stops early: on a signal (saved, then stopped), at once (a second Ctrl-C), at a non-finite loss,
on an error, or when its monitored value stopped improving (train.patience), and what it says in each case.

Split out of the engine so that the train loop does not also word every way
it can end. The `RunStops` methods are the `Trainer`'s own (a mixin, as
`RunCheckpoints` is), called at the same points of the loop as before.
"""

from __future__ import annotations

import math
import signal
import traceback
from collections.abc import Sequence
from typing import NoReturn

from hydranet.core.errors import HydranetError, RunFolderError, TrainingError, TrainingInterrupted
from hydranet.core.evaluation import EvalResult
from hydranet.core.interrupts import StoppedAtOnce
from hydranet.core.observers import outcome
from hydranet.core.plugin_calls import provenance
from hydranet.core.run import FAILURE_LINE, resume_command
from hydranet.core.spec_models import LOSS_MONITOR, TASK_LOSS, monitor_words
from hydranet.core.wording import english_list, plural


def monitored(evaluation: EvalResult, monitor: str) -> tuple[float, bool]:
    """An epoch's train.monitor value (its total validation loss, or one task's validation metric) and whether
    higher is better (as the metric declares it; a loss is better lower)."""
    if monitor == LOSS_MONITOR:
        return evaluation.total_loss, False
    task, _, metric = monitor.partition(".")
    if metric == TASK_LOSS and metric not in evaluation.metrics[task]:  # the task's loss (a metric so named wins)
        return float(evaluation.losses[task]), False
    return float(evaluation.metrics[task][metric]), bool(evaluation.higher_is_better.get(task, {}).get(metric))


class RunStops:
    """The `Trainer`'s ways of ending before its last epoch, each saying what is kept and how to go on."""

    def _track_best(self, epoch: int, evaluation: EvalResult) -> bool:
        """Whether `epoch` is the best so far by train.monitor, recorded in the progress last.pt saves, with the
        count of epochs in a row that were not (train.patience). A value that is not finite never improves."""
        progress = self.progress_state
        value, higher = monitored(evaluation, self.cfg.monitor)
        best = progress.best_value
        improved = math.isfinite(value) and (best is None or (value > best if higher else value < best))
        if improved:
            progress.best_value, progress.best_loss, progress.best_epoch = value, evaluation.total_loss, epoch
            progress.epochs_without_improvement = 0
        else:
            progress.epochs_without_improvement += 1
        return improved

    def _patience_spent(self, epoch: int) -> bool:
        """Whether the run stops early after `epoch` (recorded in the progress last.pt saves): train.patience
        epochs in a row did not improve, and epochs are left (after the last one the run ends anyway)."""
        patience, progress = self.cfg.patience, self.progress_state
        progress.stopped_early = (patience is not None and epoch < self.cfg.epochs
                                  and progress.epochs_without_improvement >= patience)
        return progress.stopped_early

    def _stopped_early_line(self, epoch: int) -> str:
        """train.log's line for a run that stops early: the epoch, what it monitored, its best epoch and value."""
        progress, watched = self.progress_state, monitor_words(self.cfg.monitor)
        best = (f"the best epoch is {progress.best_epoch} ({self.cfg.monitor} {progress.best_value:.4g}), whose "
                f"weights best.pt holds" if progress.best_epoch >= 1 else f"no epoch had a finite {watched}")
        return (f"stopped early after epoch {epoch} of {self.cfg.epochs}: the {watched} did not improve for "
                f"{plural(progress.epochs_without_improvement, 'epoch')} in a row (train.patience "
                f"{self.cfg.patience}); {best}")

    def _stop_requested(self, done: int) -> bool:
        """Whether to save and stop after step `done`.

        One process stops after the step in which the signal came. The ranks of
        a distributed run must stop after the same step, so they agree at each
        log interval (one tiny all-reduce there, where the host syncs anyway).
        """
        if self.dist.active and done % self.cfg.log_every and done != self.steps_per_epoch:
            return False
        return self._stop_agreed()

    def _stop_agreed(self) -> bool:
        """Whether a stop was requested, in this process or (agreed by every rank) in any of a distributed run."""
        if not self.dist.active:
            return self.stop_signal is not None
        return self.dist.any(self.stop_signal is not None, self.settings.device)

    def _stop(self, where: str) -> None:
        """Stop for the signal received, once progress is saved: say so (once) and how to continue."""
        name = signal.Signals(self.stop_signal).name if self.stop_signal else "a signal"
        message = (f"stopped by {name} {where}; progress saved in {self.run_folder.last_checkpoint}. "
                   f"Continue with: {resume_command(self.run_folder.path, self.option, self.dist.world_size)}")
        self.run_folder.log(message)  # train.log, and the console on rank 0: the CLI does not repeat it
        raise TrainingInterrupted(message, self.stop_signal or signal.SIGINT)

    def _stopped_at_once(self, how: str) -> StoppedAtOnce:
        """A KeyboardInterrupt ended the run without saving: say `how` (a second Ctrl-C, or one that code the run
        called raised: a notebook's, an observer's, a signal.alarm handler's), what is kept and how to go on."""
        during = f"epoch {self.epoch_running}" + ("'s validation" if self.validating else "")
        if self.saved_at is None:
            kept = ("No checkpoint had been written yet, so there is nothing to resume; "
                    "start the run again to train it.")
        else:
            kept = (f"Kept: {self.run_folder.last_checkpoint}, saved at {self._saved_point()}. "
                    "Continue from there with: "
                    f"{resume_command(self.run_folder.path, self.option, self.dist.world_size)}")
        message = f"{how} during {during}, without saving its progress. {kept}"
        self.run_folder.log(message)  # the CLI does not repeat it either
        return StoppedAtOnce(message)

    def _stop_if_nonfinite(self, epoch: int, first_bad: Sequence[float], first_bad_weights: float = -1,
                           first_bad_combined: float = -1) -> None:
        """Stop at a non-finite loss, blaming the weighting when it went wrong first, while every loss was finite.

        Non-finite weights are blamed once the update is damaged (a loss, or
        the combined loss, goes bad); only logged, they would harm nothing. A
        non-finite combined loss has put non-finite gradients into the update
        (the model's weights are damaged from that step on), so it stops the
        run even before a task's loss shows it. The weights are named first: a
        weighted sum of non-finite weights is the combined loss that broke.
        """
        bad = sorted((int(step), task.name) for task, step in zip(self.tasks, first_bad) if step >= 0)
        first_step = bad[0][0] if bad else math.inf
        damaged_from = min(first_step, first_bad_combined if first_bad_combined >= 0 else math.inf)
        who = provenance(self.weighting, "weighting")
        since = f"; the losses were non-finite from step {first_step} on" if bad else ""
        damaged = damaged_from < math.inf
        if damaged and 0 <= first_bad_weights <= damaged_from:  # the weighting broke the update, not the data
            self._stop_nonfinite(epoch, f"{who} returned non-finite weights at epoch {epoch}, step "
                                        f"{int(first_bad_weights)}, while every loss was finite{since}", "",
                                 advice="Fix the weighting (its weights must stay finite), or use another weighting.")
        if 0 <= first_bad_combined <= first_step:
            self._stop_nonfinite(epoch, f"{who} returned a non-finite combined loss at epoch {epoch}, step "
                                        f"{int(first_bad_combined)}, while every loss was finite{since}", "",
                                 advice="Fix the weighting (its combine, or the loss its backward returns, must stay "
                                        "finite), or use another weighting.")
        if not bad:
            return
        names = [f"'{name}'" for step, name in bad if step == first_step]
        culprits = f"task{'s' if len(names) > 1 else ''} {english_list(names)}"
        whose = "those tasks'" if len(names) > 1 else "that task's"
        followers = [f"'{name}' (step {step})" for step, name in bad if step != first_step]
        after = f", then {english_list(followers)} once the weights were damaged" if followers else ""
        self._stop_nonfinite(epoch, f"non-finite loss for {culprits} at epoch {epoch}, step {first_step}{after}",
                             whose)

    def _saved_point(self) -> str:
        """Where last.pt was saved: "the end of epoch 2" or "epoch 3, step 40" (`saved_at` is set)."""
        assert self.saved_at is not None
        epoch, step = self.saved_at
        return f"the end of epoch {epoch - 1}" if step == 0 else f"epoch {epoch}, step {step}"

    def _log_failure(self, error: Exception) -> None:
        """Say in train.log why a set-up run ended, so its folder explains itself (`hydranet compare`, a reader).

        A stop (Ctrl-C) and a non-finite loss have logged their own lines; a folder
        that setup removed has no log. An error hydranet worded is logged as shown;
        any other (a bug, in a plugin or here) with its traceback, which the console's
        one-line message leaves out. A train.log that cannot be written (a full
        disk, often the very error) is left as it is: the run's own error is what
        the user must see, not one raised while noting it.
        """
        status, message = outcome(error, self.observers.nonfinite)
        if status != "failed" or not (self.run_folder.path / "train.log").is_file():
            return
        saved = "no checkpoint written" if self.saved_at is None else f"last.pt saved at {self._saved_point()}"
        try:
            self.run_folder.log(f"{FAILURE_LINE}({saved}): {message}", console=False)
            if not isinstance(error, HydranetError):
                self.run_folder.log("".join(traceback.format_exception(error)).rstrip(), console=False)
        except (OSError, RunFolderError):  # a train.log the disk refuses (`RunFolder.log`)
            pass

    def _stop_nonfinite(self, epoch: int, problem: str, whose: str, advice: str = "") -> NoReturn:
        """Stop for non-finite losses: say what went wrong, which checkpoint is kept and what to try."""
        keep = (f"The last good checkpoint is {self.run_folder.last_checkpoint} (epoch {epoch - 1})."
                if epoch > 1 else "No checkpoint was written yet.")
        advice = advice or f"Try a lower train.lr, check {whose} labels, or use another weighting."
        message = f"{problem}. Training stopped. {keep} {advice}"
        self.run_folder.log(message, console=False)  # train.log; the error reaches the console, once
        self.observers.nonfinite = True  # run_finished's status: "nonfinite", not "failed"
        raise TrainingError(message)
