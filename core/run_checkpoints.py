"""A run's checkpoints from the training side: what last.pt and best.pt hold, writing them, and restoring.

Split out of the engine so that the train loop does not also spell out the
checkpoint's contents; `checkpoint.py` is the other side (the format, safe
loading, using a trained model). The `RunCheckpoints` methods are the
`Trainer`'s own (a mixin), called at the same points of the loop as before.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hydranet.core.augment import IMAGENET_MEAN, IMAGENET_STD
from hydranet.core.capture import portable_optimizer_state
from hydranet.core import checkpoint as checkpoint_module
from hydranet.core.checkpoint import FORMAT, FORMAT_VERSION, component_provenance, for_use, origin
from hydranet.core.checkpoint_checks import BASELINES
from hydranet.core.errors import CheckpointError, RunFolderError
from hydranet.core.evaluation import constants_for_checkpoint
from hydranet.core.resume import (Progress, capture_generators, process_states, rank_generator_states,
                                  restore_generators)
from hydranet.core.step import TrainStep
from hydranet.core.values import is_whole_number
from hydranet.core.wording import english_list, plural
from hydranet.core.write_failures import refused_by_system, write_failed


class RunCheckpoints:
    """The `Trainer`'s checkpoints: saved after each epoch and on a stop request, restored on resume."""

    def _restore(self, state: Mapping[str, Any]) -> None:
        """Put the freshly built run back where the checkpoint left it."""
        self._load_into("model", self.model, state)
        self._load_into("weighting", self.weighting, state)
        self._load_into("optimizer", self.optimizer, state)
        if self.scheduler is not None and state.get("scheduler"):
            self._load_into("scheduler", self.scheduler, state)
        self.progress_state = Progress.from_dict(state["progress"])
        self.order_generator.set_state(self.progress_state.epoch_order_state)
        states, unsaved = rank_generator_states(self.progress_state, self.dist.rank, self.dist.world_size)
        restore_generators(states, self.augment.generator, self.weighting, epoch=self.progress_state.epoch,
                           step=self.progress_state.step, log=self.run_folder.log, unsaved=unsaved)
        completed = self.progress_state.epoch - 1
        self.run_folder.truncate_metrics(completed)
        self._restore_timings()
        self._check_same_data(state.get(DATA_FINGERPRINT))
        missing = self.run_folder.missing_epochs(completed)
        if missing:
            self.run_folder.log(
                f"warning: {self.run_folder.metrics_csv} has no {epoch_ranges(missing)} of the "
                f"{plural(completed, 'epoch')} in last.pt (rows deleted, or the file removed); they cannot be "
                "recovered, so the resumed run's rows follow without them and the run's history has that gap")
        self.saved_at = (self.progress_state.epoch, self.progress_state.step)
        if self.dist.is_main and self.progress_state.best_epoch >= 1:
            self._bring_best_up_to_date(state)
        self.run_folder.log(f"resumed from {self.run_folder.last_checkpoint}: epoch {self.progress_state.epoch}, "
                            f"step {self.progress_state.step} of {self.steps_per_epoch}")

    def data_fingerprint(self) -> dict[str, Any]:
        """What the run's data was: usable images, the split's sizes and a hash of each part's images (last.pt's
        `data_fingerprint`), so a resume can tell the data changed (a labels.csv row deleted redraws the split)."""
        if getattr(self, "_fingerprint", None) is None:
            data = self.data
            parts = {"train": data.train_index, "val": data.val_index, "test": data.test_index}
            digest = hashlib.sha256()
            for name, index in parts.items():
                digest.update(f"{name}\0".encode())
                for source in sorted(data.sources[i] for i in index.tolist()):
                    digest.update(source.encode("utf-8", "surrogateescape") + b"\0")
            sizes = {name: int(index.numel()) for name, index in parts.items()}
            self._fingerprint = {"usable": int(data.usable), **sizes, "sha256": digest.hexdigest()}
        return self._fingerprint

    def _check_same_data(self, saved: Any) -> None:
        """Warn when the data differ from those last.pt was trained on (an older last.pt records none: no check).

        Not refused: a run that lost one corrupt image should go on. But its
        validation images are others now, so the epochs' validation metrics
        before and after are not comparable, nor is best.pt's choice of epoch
        across them; the warning says so, and how to start clean.
        """
        if not isinstance(saved, Mapping) or "sha256" not in saved:
            return
        now = self.data_fingerprint()
        if saved.get("sha256") == now["sha256"]:
            return

        def counts(of: Mapping[str, Any]) -> str:
            test = f" / {of.get('test')} test" if of.get("test") else ""
            return f"{of.get('usable')} usable images, {of.get('train')} train / {of.get('val')} validation{test}"

        change = (f"{counts(now)} now, {counts(saved)} when last.pt was saved" if any(
            saved.get(key) != now[key] for key in ("usable", "train", "val", "test")) else
            f"the same counts ({counts(now)}) but other images in the split")
        path = self.run_folder.last_checkpoint
        self.run_folder.log(
            f"warning: the run's data changed since it started ({change}), so the split was drawn again and "
            f"validation images may have moved into training: validation metrics before and after this resume are "
            f"not comparable, nor is best.pt's choice of epoch across them. The run goes on; for a clean "
            f"comparison, start a new run from its weights with init_from: {path}")

    def _restore_timings(self) -> None:
        """The finished epochs' seconds, so summary.json's timings cover the whole run, not only this session.

        From last.pt; one written before it stored them has metrics.csv's
        train_seconds and val_seconds columns (an epoch resumed mid-way then
        counted only its steps after the stop there), read by each row's epoch:
        an epoch whose row was lost is None there, not the next epoch's figures.
        """
        progress = self.progress_state
        if progress.epoch_train_seconds is not None:
            train, val = list(progress.epoch_train_seconds), list(progress.epoch_val_seconds or [])
        else:
            rows = {_epoch_of(row): row for row in self.run_folder.metrics_rows()}
            epochs = range(1, progress.epoch)  # the finished ones
            train, val = ([rows.get(epoch, {}).get(key) if isinstance(rows.get(epoch, {}).get(key), float) else None
                           for epoch in epochs] for key in ("train_seconds", "val_seconds"))
        self.timings["epoch_train_seconds"], self.timings["epoch_val_seconds"] = train, val

    def _load_into(self, key: str, target: Any, state: Mapping[str, Any]) -> None:
        """`target.load_state_dict(state[key])`; a state that does not fit the rebuilt run names the file and key.

        `resume.resume_checkpoint` checked what can be checked before the run was
        built; whether the states fit its model and optimizer shows only here.
        """
        try:
            target.load_state_dict(state[key])
        except (torch.cuda.OutOfMemoryError, MemoryError):
            raise
        except Exception as error:
            from hydranet.core.model_loading import state_dict_mismatch

            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            why = (":\n" + state_dict_mismatch(error) + "\n" if key in ("model", "weighting")
                   and isinstance(error, RuntimeError) else f" ({first}); ")
            path = self.run_folder.last_checkpoint
            if key == "model" and isinstance(error, RuntimeError):
                raise CheckpointError(f"{path}: model does not fit the run its spec describes{why}"
                                      f"{self._model_way_out(state)}") from None
            raise CheckpointError(f"{path}: {key} does not fit the run its spec describes{why}the file was edited "
                                  f"or damaged: resume from an undamaged copy of it, or start a new run from its "
                                  f"weights with init_from: {path}") from None

    def _model_way_out(self, state: Mapping[str, Any]) -> str:
        """What to do when last.pt's weights do not fit the model its own spec builds here.

        The spec a run resumes with is the one last.pt stores, so its weights
        and the rebuilt model differ only when that spec was edited in the file
        or a plugin now builds the model otherwise (another version). Resuming
        from a copy of the same file would fail the same way, and so would
        init_from where the backbone differs: it loads the backbone and only
        the heads that still fit. So the advice depends on which parts differ.
        When every tensor has the name and shape the model expects (a tensor
        stored in another layout, say), no part can be named: the message
        says only what is known, that the weights do not load into it.
        """
        from hydranet import __version__

        path = self.run_folder.last_checkpoint
        misfits = _misfit_parts(self.model.state_dict(), state["model"])
        written_by = state.get("hydranet_version")
        version = (f" (it was written by hydranet {written_by}; this is {__version__})"
                   if isinstance(written_by, str) and written_by != __version__ else "")
        builders = f"backbone '{self.spec.backbone.entry.name}', tasks {', '.join(t.name for t in self.tasks)}"
        if not misfits:
            return (f"these weights do not fit the model the spec stored in {path} builds here, though every tensor "
                    f"has the name and shape it expects (the error above says why): the file was edited or "
                    f"damaged, or a plugin that builds the model ({builders}) changed since the run "
                    f"trained{version}. Resume from an undamaged copy of it, or put back the plugins the run "
                    f"trained with and resume again, or start a new run without --resume")
        new_run = (f"with init_from: {path}, which loads the backbone and the heads that still fit "
                   f"({english_list(misfits)} {'starts' if len(misfits) == 1 else 'start'} afresh)"
                   if "backbone" not in misfits else
                   "from scratch (init_from cannot load these weights either: the backbone differs)")
        differ = f"{english_list(misfits)} {'differs' if len(misfits) == 1 else 'differ'}"
        return (f"these weights were trained as another model than the spec stored in {path} builds here "
                f"({differ}): that spec was edited, or a plugin that builds the model ({builders}) changed since the "
                f"run trained{version}. Resuming continues these weights, so it needs the model they were trained "
                f"as: put back the spec or the plugins the run trained with and resume again, or start a new run "
                f"without --resume, {new_run}")

    def _save_interrupted(self, epoch: int, done: int, train_step: TrainStep) -> None:
        """Save the epoch in progress (its step and running sums) to last.pt, then stop as the signal asked.

        The checkpoint names the last finished epoch, with the progress beyond
        it, so a resume continues at the step after `done`.
        """
        progress = self.progress_state
        progress.epoch, progress.step = epoch, done
        if self.epoch_timed:  # the seconds of the steps done so far, this session's and any before a resume
            progress.seconds = (progress.seconds or 0.0) + time.perf_counter() - self.epoch_started
        progress.loss_sums, progress.first_bad = train_step.loss_sums.tolist(), train_step.first_bad.tolist()
        progress.weight_sums, progress.labelled_steps = (train_step.weight_sums.tolist(),
                                                         train_step.labelled_steps.tolist())
        self._gather_generators()
        if self.dist.is_main:
            self._write_checkpoint(self.checkpoint_state(epoch - 1, {}), self.run_folder.last_checkpoint)
        self.saved_at = (epoch, done)
        self._stop(f"at epoch {epoch}, step {done}")

    def _save(self, epoch: int, row: Mapping[str, Any], *, best: bool) -> None:
        """After an epoch: last.pt to resume from, then best.pt (weights for use) when the epoch improved.

        In that order, a run killed between the two writes (SIGKILL, a power
        cut) loses nothing: its last.pt says epoch N was the best and holds
        epoch N's weights, which are all best.pt would have held, so resuming
        writes best.pt from it (`_bring_best_up_to_date`). The other order left
        a best.pt of an epoch that last.pt did not have, which replaced the
        real best epoch's weights for good when the retrained epoch came out
        worse. Rank 0 alone writes: every rank holds the same model.
        """
        self._gather_generators()
        if not self.dist.is_main:
            return
        state = self.checkpoint_state(epoch, row)
        self._write_checkpoint(state, self.run_folder.last_checkpoint)
        if best:  # for using the model: resuming continues from last.pt
            self._write_checkpoint(for_use(state), self.run_folder.best_checkpoint)

    def _bring_best_up_to_date(self, saved: Mapping[str, Any]) -> None:
        """On resume: write best.pt again from last.pt (`saved`) when it does not hold the best epoch, and that
        epoch is last.pt's (the run was killed between the two writes of `_save`, or best.pt was deleted).

        Otherwise a best.pt not of the best epoch is only logged: a later epoch
        that improves replaces it, and the test split is not scored with it
        (`_best_weights_in_best_pt`).
        """
        from hydranet.core.checkpoint import read_checkpoint

        best_epoch, best = self.progress_state.best_epoch, self.run_folder.best_checkpoint
        try:
            epoch = read_checkpoint(best).get("epoch") if best.is_file() else None
        except CheckpointError:
            epoch = None
        held = int(epoch) if is_whole_number(epoch) else None  # one without an epoch is damaged, not "epoch -1"
        if held == best_epoch:
            return
        was = "missing" if held is None and not best.is_file() else (
            "damaged" if held is None else f"stale (epoch {held})")
        if int(saved.get("epoch", -1)) == best_epoch:
            self._write_checkpoint(for_use(saved), best)
            self.run_folder.log(f"{best} was {was}; wrote it again from last.pt, which holds epoch {best_epoch}, "
                                "the best")
        else:
            self.run_folder.log(f"warning: {best} is {was}, not epoch {best_epoch}, the best; those weights are "
                                "lost, so best.pt is not the best epoch's until a later epoch improves on it")

    def _write_checkpoint(self, state: Mapping[str, Any], path: Path) -> None:
        """`atomic_torch_save`; a write the system refuses (a full disk, a quota, a read-only or failing disk) is a
        RunFolderError naming the file and why, saying the previous checkpoint is intact and how to go on."""
        try:
            checkpoint_module.atomic_torch_save(state, path)
        except OSError as error:
            if not refused_by_system(error):
                raise
            raise RunFolderError(checkpoint_write_failed(path, error, self.run_folder.path, self.option)) from None

    def _gather_generators(self) -> None:
        """Every rank's own generator states into the progress rank 0 saves (none in one process).

        Each rank draws dropout and the like for its own rows, from its own
        generators (its GPU's above all), so each must resume from its own
        states, not rank 0's. A collective: every rank calls it at every save.
        """
        self.progress_state.process_generators = (
            self.dist.gather_objects(process_states(capture_generators(self.augment.generator, self.weighting)))
            if self.dist.active else [])

    def checkpoint_state(self, epoch: int, row: Mapping[str, Any]) -> dict[str, Any]:
        """Everything last.pt holds: plain data and tensors only, so it loads with `weights_only=True`."""
        from hydranet import __version__

        pm = self.components.pm
        tasks = [{"name": task.name, "kind": resolved.component.entry.name, **origin(resolved.component.entry, pm)}
                 for resolved, task in zip(self.spec.tasks, self.tasks)]
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "hydranet_version": __version__,
            "epoch": epoch,
            "started_in": self.started_in,
            "spec": self.spec.to_dict(),
            "tasks": tasks,
            "components": component_provenance(self.spec, pm),
            "task_state": {task.name: task.state_dict() for task in self.tasks},
            BASELINES: constants_for_checkpoint(self.baseline_outputs),
            "model": self.model.state_dict(),
            "weighting": self.weighting.state_dict(),
            "optimizer": portable_optimizer_state(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "metrics": {k: v for k, v in row.items()},
            "progress": {**self.progress_state.to_dict(),
                         "generators": capture_generators(self.augment.generator, self.weighting)},
            DATA_FINGERPRINT: self.data_fingerprint(),
            "preprocess": {"image_size": self.spec.spec.image_size, "mean": list(IMAGENET_MEAN),
                           "std": list(IMAGENET_STD)},
        }


#: last.pt's record of the data it was trained on (`RunCheckpoints.data_fingerprint`)
DATA_FINGERPRINT = "data_fingerprint"

def checkpoint_write_failed(path: Path, error: OSError, run_dir: Path, option: str = "--set") -> str:
    """Why writing checkpoint `path` failed, that the previous one is intact, and how to go on."""
    kept = (f"the previous {path.name} is intact (a checkpoint is written to a temporary file and renamed into "
            f"place only once whole)" if path.is_file() else f"no {path.name} was written")
    return write_failed(f"checkpoint {path}", error, run_dir, option, kept)


def _epoch_of(row: Mapping[str, Any]) -> int | None:
    """A metrics.csv row's epoch as an int (it is read as a float); None for a row without a readable one."""
    try:
        return int(float(row["epoch"]))
    except (KeyError, TypeError, ValueError):
        return None


def epoch_ranges(epochs: list[int]) -> str:
    """"row for epoch 3", "rows for epochs 1-3 and 7": sorted epochs, runs of them as ranges."""
    spans: list[list[int]] = []
    for epoch in epochs:
        if spans and epoch == spans[-1][1] + 1:
            spans[-1][1] = epoch
        else:
            spans.append([epoch, epoch])
    words = [f"{first}" if first == last else f"{first}-{last}" for first, last in spans]
    return f"row for epoch {words[0]}" if len(epochs) == 1 else f"rows for epochs {english_list(words)}"


def _misfit_parts(own: Mapping[str, torch.Tensor], saved: Mapping[str, Any]) -> list[str]:
    """The model's parts ("backbone", "head 'age'") whose tensors differ from the saved ones in name or shape."""
    def part(key: str) -> str:
        words = key.split(".")
        return f"head '{words[1]}'" if words[0] == "heads" and len(words) > 2 else words[0]

    shapes: dict[str, dict[str, set]] = {}
    for side, tensors in (("own", own), ("saved", saved)):
        for key, tensor in tensors.items():
            shapes.setdefault(part(key), {"own": set(), "saved": set()})[side].add(
                (key, tuple(getattr(tensor, "shape", ()))))
    return [name for name, sides in shapes.items() if sides["own"] != sides["saved"]]
