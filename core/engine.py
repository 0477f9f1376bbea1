"""The train / evaluate loop.

What makes it fast (and what the article's loop got wrong): the backbone runs
once per batch; images are decoded once and kept on the device, so a batch is
an index gather plus on-device augmentation; per-task losses, metrics and the
non-finite check accumulate on the device and are read once per log interval
and once per epoch (no host synchronisation per step); bf16 autocast,
channels_last, fused optimizers and torch.compile where the device gains
from them.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from hydranet.core.background_compile import BackgroundCompile
from hydranet.core.device import on_device
from hydranet.core.distributed import Distributed
from hydranet.core.errors import CheckpointError
from hydranet.core.evaluation import EvalResult, evaluate
from hydranet.core.heartbeat import Heartbeat
from hydranet.core.interrupts import SecondCtrlC, StoppedAtOnce, interrupt_requests
from hydranet.core.observers import RunInfo, RunObservers
from hydranet.core.paths import printable
from hydranet.core.planning import RunPlan, plan_run, resume_conflict
from hydranet.core.plugin_calls import PluginCall, provenance
from hydranet.core.plugins import Components, default_components
from hydranet.core.resume import Progress
from hydranet.core.run_checkpoints import RunCheckpoints
from hydranet.core.run_result import RunResult, metrics_text
from hydranet.core.run_setup import (RunSetup, batch_source, callers_random_state, callers_torch_switches,
                                     load_prepared_data)
from hydranet.core.run_stops import RunStops, monitored
from hydranet.core.spec import ResolvedSpec
from hydranet.core.spec_models import LOSS_MONITOR, monitor_words
from hydranet.core.step import TrainStep
from hydranet.core.wording import english_list, plural

#: Where users, the CLI and the tests import them from; planning, setup and the result live in their own modules
#: (`planning.py`, `run_setup.py`, `run_checkpoints.py`, `run_result.py`).
__all__ = ["RunPlan", "RunResult", "Trainer", "batch_source", "load_prepared_data", "plan_run", "resume_conflict",
           "run_plan", "stderr_is_terminal", "train"]


def _saved_position(resume_state: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """(epoch, step) of the last.pt a run resumes from; None for a new run (read_checkpoint checked the types)."""
    if resume_state is None:
        return None
    progress = resume_state.get("progress") or {}
    return int(progress.get("epoch", 1)), int(progress.get("step", 0))


def train(
    spec: ResolvedSpec | str | Path | Mapping[str, Any] | None = None,
    *,
    overrides: str | Iterable[str] = (),
    out_dir: str | Path | None = None,
    components: Components | None = None,
    progress: bool | None = None,
    echo: bool = True,
    resume: str | Path | None = None,
) -> RunResult:
    """Train the model a spec describes (default: the built-in demo) and write a run folder; see `Trainer`.

    `overrides` change the spec as `--set` does: "KEY=VALUE" strings, one or a list.
    `progress`: progress bars on stderr; None (the default) shows them when stderr is a terminal, as the CLI
    does, so a notebook's or a script's redirected stderr gets the log lines without bars.

    With `resume=RUN_DIR`, continue that run from its last checkpoint instead,
    with the spec stored in the checkpoint; giving `spec`, `overrides` or
    `out_dir` as well is an error (the run continues exactly as it was saved).
    """
    plan = plan_run(spec, overrides=overrides, out_dir=out_dir, resume=resume, components=components)
    return run_plan(plan, components=components, progress=progress, echo=echo)


def run_plan(plan: RunPlan, *, components: Components | None = None, progress: bool | None = None,
             echo: bool = True) -> RunResult:
    """Train what `plan_run` planned (the CLI plans first, so that its problems name `--set`)."""
    if progress is None:
        progress = stderr_is_terminal()
    return Trainer(plan.spec, out_dir=plan.out_dir, components=components, progress=progress, echo=echo,
                   resume_state=plan.resume_state, option=plan.option).run()


def stderr_is_terminal() -> bool:
    """Whether progress bars have a terminal to draw on (stderr may be a file, a pipe, or an object without isatty)."""
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError, OSError):  # replaced, or closed
        return False


class Trainer(RunSetup, RunCheckpoints, RunStops):
    """One training run of a resolved spec.

    Its setup (`RunSetup`: data, model, optimizer, step) and its checkpoints
    (`RunCheckpoints`: save, restore) are mixins from their own modules; the
    loop, stopping and the per-epoch records are here.
    """

    def __init__(self, spec: ResolvedSpec, *, out_dir: str | Path | None = None,
                 components: Components | None = None, progress: bool = True, echo: bool = True,
                 resume_state: Mapping[str, Any] | None = None, option: str = "overrides"):
        self.started = time.perf_counter()
        #: how the caller names overrides ("--set": the command line), for messages in the caller's words
        self.option = option
        self.resume_state = resume_state
        #: where the run started: relative paths in its spec count from there (None: a checkpoint older than this)
        self.started_in: str | None = os.getcwd() if resume_state is None else resume_state.get("started_in")
        self.progress_state = Progress()
        self.stop_signal: int | None = None
        self.stop_requested_at = 0.0
        self.validating = False  # what a stop request waits for: the step, or the epoch's validation
        self.epoch_running = 0
        #: when the epoch in progress started in this process, and whether all its steps are timed (`_save_interrupted`)
        self.epoch_started, self.epoch_timed = 0.0, True
        #: (epoch, step) a resume from last.pt continues at; None while this run has no checkpoint (a resumed run
        #: has its last.pt from the start, which a failure or a second Ctrl-C during its setup must not deny)
        self.saved_at: tuple[int, int] | None = _saved_position(resume_state)
        self.spec = spec
        self.components = components or default_components()
        self.cfg = spec.spec.train
        self.dist = Distributed.from_environment(self.cfg.device)
        self.progress = progress and self.dist.is_main
        self.settings = self._resolve_settings()
        self.run_folder = self._open_run_folder(out_dir, echo)
        # without a bar (no terminal: a log file, nohup, a batch job), a line now and then shows the run is alive
        self.heartbeat = Heartbeat(self.run_folder.log) if not self.progress and self.dist.is_main else None
        self.timings: dict[str, Any] = {"epoch_train_seconds": [], "epoch_val_seconds": []}
        self.skipped_steps = 0
        self.background: BackgroundCompile | None = None  # the child compiling into the caches, while it runs
        self.observers = RunObservers.idle()  # the run's own, once it is set up (`_observers`)
        #: a host copy of the best epoch's weights, kept for the test split's evaluation at the end (`_keep_best_weights`)
        self.best_weights: dict[str, Tensor] | None = None

    # ------------------------------------------------------------ loop

    def run(self) -> RunResult:
        """Train; the caller's random generators and torch switches are as they were afterwards.

        (`callers_random_state`, `callers_torch_switches`: a notebook's next cell inherits neither.)
        """
        with on_device(self.settings.device), callers_random_state(), callers_torch_switches():
            return self._run()

    def _run(self) -> RunResult:
        try:
            try:
                self._setup()
            except BaseException:
                self._stop_background_compile()
                self.run_folder.remove_if_unused()  # no run happened: leave no folder that looks like one
                raise
            if self.resume_state is not None:
                self._restore(self.resume_state)
            self._record_steps()
            self.observers = self._observers()
            with self.observers.watching(), interrupt_requests(self):
                try:
                    return self._loop()
                except StoppedAtOnce:
                    raise
                except SecondCtrlC:
                    raise self._stopped_at_once("stopped at once by a second Ctrl-C") from None
                except KeyboardInterrupt as stop:  # not the user's Ctrl-C: code the run called raised it
                    raise self._stopped_at_once("interrupted (KeyboardInterrupt)") from stop
        except Exception as error:
            self._log_failure(error)
            raise
        finally:
            self._stop_background_compile()
            self._close_recorded_step()
            self.run_folder.close()  # its lock: another run may write the folder now
            self.dist.close()

    def _loop(self) -> RunResult:
        cfg, log, progress = self.cfg, self.run_folder.log, self.progress_state
        history: list[dict[str, Any]] = self.run_folder.metrics_rows()
        final: EvalResult | None = None
        # a run that stopped early (train.patience) is finished: its last.pt has no epoch left to train
        last_epoch = progress.epoch - 1 if progress.stopped_early else cfg.epochs
        for epoch in range(progress.epoch, last_epoch + 1):
            self.epoch_running = epoch
            progress.epoch_order_state = self.order_generator.get_state()  # to draw this order again on resume
            order = self.data.train_index[torch.randperm(self.data.train_index.numel(),
                                                         generator=self.order_generator)]
            started = self.epoch_started = time.perf_counter()
            seconds_before = progress.seconds
            timed = self.epoch_timed = progress.step == 0 or seconds_before is not None
            train_losses, weights_used, labelled_steps = self._train_epoch(epoch, order)
            # a resumed epoch's time is its steps' before the stop (saved in last.pt) and after it; a checkpoint
            # older than that saved none, so the epoch's time is unknown: None, left out of the per-epoch figures
            train_seconds = time.perf_counter() - started + (seconds_before or 0.0)
            PluginCall("the epoch_end of", provenance(self.weighting, "weighting"),
                       "Fix the weighting's epoch_end, or use another weighting")(
                self.weighting.epoch_end, torch.tensor(train_losses, device=self.settings.device))
            # the weighting gets 0 for a task no step of the epoch had a label for (what each of its steps' losses
            # was, and what it got before steps were counted per task); metrics.csv and the log show NaN, as
            # val_loss does for a task without a label in the validation split: there was no loss to average
            train_losses = [loss if steps else math.nan for loss, steps in zip(train_losses, labelled_steps)]
            started = time.perf_counter()
            final = self._validate()
            val_seconds = time.perf_counter() - started
            self.timings["epoch_train_seconds"].append(train_seconds if timed else None)
            self.timings["epoch_val_seconds"].append(val_seconds)
            row = self._row(epoch, train_seconds, val_seconds, train_losses, weights_used, final)
            history.append(row)
            self.run_folder.append_metrics(row)
            improved = self._track_best(epoch, final)
            if improved:
                self._keep_best_weights()
            stopping = self._patience_spent(epoch)
            progress.epoch, progress.step, progress.loss_sums, progress.first_bad = epoch + 1, 0, [], []
            progress.labelled_steps = []
            progress.weight_sums, progress.skipped, progress.seconds = [], 0, None
            progress.epoch_train_seconds = list(self.timings["epoch_train_seconds"])
            progress.epoch_val_seconds = list(self.timings["epoch_val_seconds"])
            progress.epoch_order_state = self.order_generator.get_state()
            self._save(epoch, row, best=improved)
            self.saved_at = (progress.epoch, progress.step)
            log(self._epoch_line(epoch, row, final))
            self._warn_nonfinite(epoch, final)
            if stopping:
                log(self._stopped_early_line(epoch))
            self.observers.epoch_finished(epoch, row)  # the row's own numbers, once it and last.pt are written
            self.validating = False
            if stopping:
                break
            if epoch < cfg.epochs and self._stop_agreed():  # a request during validation: the epoch is saved
                self._stop(f"after epoch {epoch} and its validation")
        completing = final is None
        if completing:  # last.pt holds every epoch, summary.json is missing (planning refuses a finished run)
            final = self._complete_trained_run()
        if progress.best_epoch == 0:
            log(f"no epoch had a finite {monitor_words(cfg.monitor)}, so no best.pt was written; "
                f"{self.run_folder.last_checkpoint} holds the last epoch's weights")
        if self.dist.active:
            gap = self.dist.divergence(self.model, self.weighting)
            log(f"{self.dist.world_size} processes ({self.dist.backend}): parameters identical on every rank"
                if gap == 0 else f"warning: the {self.dist.world_size} processes' parameters differ by up to "
                                 f"{gap:.3g} (rank 0's were saved)")
        test = self._evaluate_test(progress.best_epoch)
        noted = {printable(note) for note in self.data.notes}  # as logged: a data note that warns is there once
        notes = [*self.data.notes, *(line for line in self.run_folder.warnings if line not in noted)]
        result = RunResult(self.run_folder.path, history, final, self.baselines, progress.best_epoch, self.settings,
                           notes, self.timings, is_main=self.dist.is_main,
                           test=test.metrics if test is not None else None,
                           test_images=int(self.data.test_index.numel()),
                           val_images=int(self.data.val_index.numel()),
                           monitor=cfg.monitor, stopped_early=progress.stopped_early)
        # a run without a test split (data.test_fraction 0) writes no test keys, as before the test split existed
        held_out = ({"test_epoch": progress.best_epoch if test is not None else None, "test": result.test}
                    if self.spec.spec.data.test_fraction > 0 else {})
        self.run_folder.write_json("summary.json", {
            "best_epoch": progress.best_epoch,
            "monitor": cfg.monitor,  # what chose the best epoch: "loss" (the total validation loss) or TASK.METRIC
            "stopped_early": progress.stopped_early,  # train.patience ended the run before its last epoch
            "best": result.best,  # the metrics of the weights in best.pt; null when no epoch's loss was finite
            **held_out,  # the best epoch's weights scored once on the test split; null when there are none
            "final": final.metrics,  # the last epoch's, in last.pt
            "final_losses": final.losses,
            "higher_is_better": final.higher_is_better,  # how to rank the metrics without the task plugins
            "baselines": self.baselines,
            "settings": self.settings.describe(),
            "timings": self.timings,
            "processes": self.dist.world_size,  # --nproc: compare notes runs trained on different numbers
        })
        if completing:
            trained = (f"it stopped early after epoch {progress.epoch - 1} (train.patience)" if progress.stopped_early
                       else f"every one of its {plural(cfg.epochs, 'epoch')} was trained before")
            log(f"completed the run: {trained}, and {self.run_folder.path / 'summary.json'} is written now")
        return result

    def _complete_trained_run(self) -> EvalResult:
        """Finish a run whose last.pt holds every epoch (up to its early stop, with train.patience) but which
        stopped before its last files were written.

        A run killed after last.pt's final write (SIGKILL, a power cut) has no
        summary.json: resuming it trains nothing, but writes what is missing.
        A best.pt the kill left behind last.pt was brought up to date when the
        run was restored (`_bring_best_up_to_date`). The last epoch is
        validated again (its weights are last.pt's), for summary.json's
        `final`; the test split, if any, is scored as at the end of any run.
        """
        log, done = self.run_folder.log, self.progress_state.epoch - 1
        held = (f"the {plural(done, 'epoch')} the run trained before it stopped early (train.patience)"
                if self.progress_state.stopped_early else f"all {plural(self.cfg.epochs, 'epoch')} of the run")
        log(f"{self.run_folder.last_checkpoint} holds {held}, but the run stopped before writing summary.json: "
            "completing it (nothing is trained)")
        return self._validate()

    def _warn_nonfinite(self, epoch: int, evaluation: EvalResult) -> None:
        """Say when an epoch's validation losses, or its monitored metric, are not finite: it cannot be the best."""
        nonfinite = evaluation.nonfinite_tasks()
        monitor = self.cfg.monitor
        if nonfinite:
            best = ("so it cannot be the best epoch (best.pt keeps the last one that was); "
                    if monitor == LOSS_MONITOR else "")
            self.run_folder.log(
                f"warning: epoch {epoch}'s validation loss is not finite for "
                f"{english_list([repr(t) for t in nonfinite])}, {best}a learning rate too high for the data is the "
                "usual cause (train.lr)")
        elif monitor != LOSS_MONITOR and not math.isfinite(monitored(evaluation, monitor)[0]):
            self.run_folder.log(f"warning: epoch {epoch}'s {monitor_words(monitor)} is not finite, so it cannot be "
                                "the best epoch (best.pt keeps the last one that was)")

    def _validate(self) -> EvalResult:
        """Score the model on the validation split (the training images without one), every rank its share."""
        self.model.eval()
        self.validating = True
        self.dist.average_buffers(self.model)  # batch-norm statistics: one model on every rank
        return self._evaluate_on(self.eval_index)

    # ------------------------------------------------------------ the test split

    def _keep_best_weights(self) -> None:
        """A host copy of the weights best.pt gets, for the test split's one evaluation at the end (none without
        a test split: it costs a copy per improved epoch)."""
        if self.data.test_index.numel():
            self.best_weights = {key: value.detach().to("cpu", copy=True)
                                 for key, value in self.model.state_dict().items()}

    def _evaluate_test(self, best_epoch: int) -> EvalResult | None:
        """Score the best epoch's weights (best.pt's) once on the test split, as validation scores each epoch.

        Every rank evaluates its share of the test images and the sums are
        all-reduced, as in validation. The weights are this run's copy of the
        best epoch's; a resumed run whose best epoch came before the resume
        reads them back from best.pt. None: no test split, or no best epoch.
        """
        index, log = self.data.test_index, self.run_folder.log
        if not index.numel():
            if self.spec.spec.data.test_fraction > 0:
                log("no test metrics: the test split is empty (too few usable images for data.test_fraction)")
            return None
        if best_epoch < 1:
            log(f"no test metrics: no epoch had a finite {monitor_words(self.cfg.monitor)}, so there are no "
                "best-epoch weights to score on the test split")
            return None
        weights = self.best_weights if self.best_weights is not None else self._best_weights_in_best_pt(best_epoch)
        if weights is None:
            return None
        self.model.load_state_dict(weights)
        self.model.eval()
        result = self._evaluate_on(index)
        parts = [f"{task.name}: {metrics_text(result.metrics[task.name])}" for task in self.tasks]
        log(f"test split ({plural(index.numel(), 'image')}), scored once with the weights of epoch {best_epoch}, "
            f"the best (best.pt): " + "; ".join(parts))
        return result

    def _best_weights_in_best_pt(self, best_epoch: int) -> dict[str, Tensor] | None:
        """best.pt's weights, for a run resumed after its best epoch; None, logged, when best.pt does not hold
        that epoch (deleted, damaged, or left stale by a killed older hydranet): scoring other weights on the
        test split under the best epoch's name would pass them off as its, and a missing file must not fail a
        run whose training is done."""
        from hydranet.core.checkpoint import read_checkpoint

        best = self.run_folder.best_checkpoint
        try:
            saved = read_checkpoint(best)
        except CheckpointError as error:
            self.run_folder.log(f"warning: no test metrics: the best epoch's weights cannot be read ({error})")
            return None
        held = int(saved.get("epoch", -1))
        if held != best_epoch:
            self.run_folder.log(f"warning: no test metrics: {best} holds epoch {held}, not epoch {best_epoch}, "
                                "the best, whose weights are lost")
            return None
        return saved["model"]

    def _evaluate_on(self, index: Tensor) -> EvalResult:
        """The model's losses and metrics on the images `index`: each rank scores its share, the sums all-reduced."""
        return evaluate(self.forward, self.tasks, self.source, self.targets, self.dist.local_index(index),
                        self.augment, self.settings, self._eval_batch, pad=self.settings.compile,
                        all_reduce=self.dist.all_reduce if self.dist.active else None)

    def _train_epoch(self, epoch: int, order: Tensor) -> tuple[list[float], list[float], list[float]]:
        """Train one epoch (or what is left of it); its mean per-task losses (each over the steps that had a label
        for the task; 0 for a task none had), the mean weights applied, and each task's steps with a label."""
        cfg, tasks, settings, progress = self.cfg, self.tasks, self.settings, self.progress_state
        self.model.train()
        k = len(tasks)
        first_step = progress.step
        step_fn, train_step = self.step_fn, self.train_step
        train_step.start_epoch(progress.loss_sums, progress.first_bad, first_step, progress.weight_sums, epoch,
                               progress.labelled_steps, progress.skipped)
        if "first_step_seconds" not in self.timings and self._first_step_note:
            self.run_folder.log(self._first_step_note)  # a silent half minute would look like a hang
        batches = self.source.batches(self._local_order(order[first_step * self.batch_size:]),
                                      self.batch_size // self.dist.world_size, drop_last=True)
        share = (self.local_rows.start, self.batch_size) if self.dist.active else None
        bar = tqdm(batches, total=self.steps_per_epoch, initial=first_step, desc=f"epoch {epoch}/{cfg.epochs}",
                   unit="step", disable=not self.progress, leave=False)
        if self.heartbeat is not None:
            self.heartbeat.start_epoch(epoch, cfg.epochs, self.steps_per_epoch, first_step)
        skipped_before = skipped = progress.skipped  # this epoch's skipped steps, those before a resume too
        host: list[float] = []
        if first_step >= self.steps_per_epoch:  # stopped after the epoch's last step: only validation is left
            host = self._epoch_means(train_step, first_step - skipped)
        skip_nonfinite = cfg.on_nonfinite == "skip"
        for step, (images, index) in enumerate(bar, start=first_step):
            switching = self.background is not None and self.background.done()
            if switching:
                self._switch_to_compiled(epoch, step)
                switch_started = time.perf_counter()
            x = self.augment(images, train=True, share=share)
            y = self.targets[index]
            if settings.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            updated = True
            if skip_nonfinite:  # opt-in: one sync per step, to look at the losses before the update
                losses, features, labelled = train_step.forward(x, y)
                updated = bool(torch.isfinite(losses.detach()).all())
                if updated:
                    train_step.update(losses, features, labelled)
                else:
                    skipped += 1
                    train_step.skip()
            else:
                step_fn(x, y)
            if self.scheduler is not None and updated:  # the schedule counts updates, not batches
                self.scheduler.step()
            if "first_step_seconds" not in self.timings:
                if settings.device.type == "cuda":
                    torch.cuda.synchronize(settings.device)  # once per run, to time the start-up honestly
                self.timings["first_step_seconds"] = time.perf_counter() - self.started
                if self._first_step_note:
                    self.run_folder.log(f"first step done {self.timings['first_step_seconds']:.1f}s after the start")
                self._note_recorded_step()
            if switching:  # the first compiled step: a compile from the cache, and CUDA graphs recorded
                if settings.device.type == "cuda":
                    torch.cuda.synchronize(settings.device)
                self.timings["compiled_from"]["first_step_seconds"] = time.perf_counter() - switch_started
                self.run_folder.log(f"first compiled step done in {time.perf_counter() - switch_started:.1f}s")
            done = step + 1
            if done % cfg.log_every == 0 or done == self.steps_per_epoch:
                host = self._epoch_means(train_step, done - skipped)
                self._stop_if_nonfinite(epoch, host[k:2 * k], host[3 * k], host[3 * k + 1])
                if self.progress:
                    bar.set_postfix({t.name: f"{v:.3f}" for t, v in zip(tasks, host[:k])})
                elif self.heartbeat is not None:
                    self.heartbeat.beat(done, {t.name: v for t, v in zip(tasks, host[:k])})
            if self._stop_requested(done):
                progress.skipped = skipped
                self._save_interrupted(epoch, done, train_step)
        if skipped:
            self.skipped_steps += skipped - skipped_before
            self.run_folder.log(f"epoch {epoch}: skipped {plural(skipped, 'step')} with a non-finite loss "
                                f"({self.skipped_steps} in this run)")
        if skipped >= self.steps_per_epoch:  # no step trained: its means would be 0/0
            self._stop_nonfinite(epoch, f"every step of epoch {epoch} had a non-finite loss and was skipped "
                                        "(train.on_nonfinite: skip), so nothing was trained", "the tasks'")
        return host[:k], host[2 * k:3 * k], host[3 * k + 2:]

    @staticmethod
    def _epoch_means(train_step: TrainStep, steps: int) -> list[float]:
        """Mean losses, first non-finite steps, mean weights over the `steps` steps trained (nan for none),
        the steps of the weighting's first non-finite weights and combined loss, and each task's labelled steps.

        One host read of the step's running sums. Skipped steps add nothing to
        the sums, so they are not counted in `steps` either. A task's mean loss
        is over the steps whose batch had a label for it (0 when none had): a
        step without one adds a loss of 0 and is not counted, as validation
        averages over the labelled images. Where every batch has every label,
        that is all `steps`, and the mean is divided by `steps` as it always
        was (a GPU divides by a Python number as a product with its reciprocal,
        which can differ from a division in the last bit), so those runs'
        numbers are as before.
        """
        labelled = train_step.labelled_steps
        losses = torch.where(labelled == steps, train_step.loss_sums / steps,
                             train_step.loss_sums / labelled.clamp_min(1))
        return torch.cat([losses, train_step.first_bad.float(),
                          train_step.weight_sums / steps, train_step.first_bad_weights.float().view(1),
                          train_step.first_bad_combined.float().view(1), labelled.float()]).tolist()

    def _local_order(self, order: Tensor) -> Tensor:
        """This rank's rows of each global batch in `order`, batch after batch (all of it in one process)."""
        if not self.dist.active:
            return order
        steps = order.numel() // self.batch_size
        return order[:steps * self.batch_size].view(steps, self.batch_size)[:, self.local_rows].reshape(-1)

    # ------------------------------------------------------------ records

    def _observers(self) -> RunObservers:
        """The run observer plugins' hooks for this run: rank 0's only (one report per run, no rank waits)."""
        from hydranet import __version__

        resumed_from = None if self.resume_state is None else self.progress_state.epoch
        run = RunInfo(run_dir=self.run_folder.path, spec=self.spec.to_dict(), tasks=tuple(self.spec.task_names),
                      epochs=self.cfg.epochs, device=str(self.settings.device), world_size=self.dist.world_size,
                      rank=self.dist.rank, resumed_from=resumed_from, version=__version__)
        return RunObservers(self.components.pm if self.dist.is_main else None, run, self.run_folder.log)

    def _row(self, epoch: int, train_seconds: float, val_seconds: float, train_losses: Sequence[float],
             weights: Sequence[float], evaluation: EvalResult) -> dict[str, Any]:
        row: dict[str, Any] = {"epoch": epoch, "train_seconds": round(train_seconds, 4),
                               "val_seconds": round(val_seconds, 4), "lr": float(self.optimizer.param_groups[0]["lr"])}
        for task, value in zip(self.tasks, train_losses):
            row[f"train_loss.{task.name}"] = value
        for task in self.tasks:
            row[f"val_loss.{task.name}"] = evaluation.losses[task.name]
            for metric, value in evaluation.metrics[task.name].items():
                row[f"val.{task.name}.{metric}"] = value
        for task, value in zip(self.tasks, weights):
            row[f"weight.{task.name}"] = value
        return row

    def _epoch_line(self, epoch: int, row: Mapping[str, Any], evaluation: EvalResult) -> str:
        parts = []
        for task in self.tasks:
            parts.append(f"{task.name}: loss {row[f'train_loss.{task.name}']:.3f} | "
                         f"val {metrics_text(evaluation.metrics[task.name])}")
        seconds = row["train_seconds"] + row["val_seconds"]
        return f"epoch {epoch}/{self.cfg.epochs} ({seconds:.1f}s)  " + "; ".join(parts)
