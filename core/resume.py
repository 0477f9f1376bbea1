"""Everything a run needs to continue exactly where it stopped, beyond the weights.

A checkpoint's `progress` records the epoch and step reached, the state of
every random generator (batch order, augmentation, torch's global RNG, any
generator a weighting owns), the running sums of the epoch in progress and
the best epoch's monitored value (train.monitor) and how many epochs since have
not improved on it (train.patience). Restoring it after rebuilding the run from
its spec makes the continued run take the same steps, with the same batches
and the same random draws, as a run that was never interrupted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hydranet.core.checkpoint import check_plugins_available, read_checkpoint
from hydranet.core.checkpoint_checks import check_for_resume
from hydranet.core.errors import CheckpointError, TrainingError
from hydranet.core.paths import MissingPathError
from hydranet.core import plugins
from hydranet.core.plugins import Components
from hydranet.core.spec import ResolvedSpec, load_spec
from hydranet.core.spec_models import LOSS_MONITOR, monitor_words
from hydranet.core.wording import english_list, plural


@dataclass
class Progress:
    """Where a run stands: `step` steps of `epoch` are done (step 0: the epoch has not started)."""

    epoch: int = 1
    step: int = 0
    epoch_order_state: torch.Tensor | None = None
    #: rank 0's generator states (every generator; the only states of a one-process run)
    generators: dict[str, torch.Tensor] = field(default_factory=dict)
    #: with several processes, each rank's own generators' states, in rank order (see `process_states`)
    process_generators: list[dict[str, torch.Tensor]] = field(default_factory=list)
    loss_sums: list[float] = field(default_factory=list)
    #: each task's steps of `epoch` whose batch had a label for it: what its mean loss divides `loss_sums` by (empty:
    #: a checkpoint older than this field, or at an epoch's start; `TrainStep.start_epoch` counts every step then)
    labelled_steps: list[int] = field(default_factory=list)
    weight_sums: list[float] = field(default_factory=list)
    first_bad: list[int] = field(default_factory=list)
    #: steps of `epoch` skipped for a non-finite loss (train.on_nonfinite: skip): not in the sums' means
    skipped: int = 0
    #: the best epoch's total validation loss (infinite before one): what picks the best epoch with train.monitor
    #: loss, the default, and the only choice before train.monitor existed
    best_loss: float = float("inf")
    best_epoch: int = 0
    #: the best epoch's train.monitor value (None before one); `from_dict` reads an older checkpoint's best_loss
    best_value: float | None = None
    #: epochs in a row, up to the last finished one, whose monitored value did not improve (train.patience)
    epochs_without_improvement: int = 0
    #: the run stopped early after its last finished epoch (train.patience): it has nothing left to train
    stopped_early: bool = False
    #: training seconds already spent on `epoch`'s first `step` steps (a stop mid-epoch saves them); None: none
    #: were, or a checkpoint older than this field, which did not time them
    seconds: float | None = None
    #: the finished epochs' training and validation seconds (summary.json's timings), restored on resume; None: a
    #: checkpoint older than these fields (metrics.csv's train_seconds and val_seconds columns stand in)
    epoch_train_seconds: list[float | None] | None = None
    epoch_val_seconds: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's `progress`; a one-process run's has no `process_generators`, as before they existed."""
        data = {"epoch": self.epoch, "step": self.step, "epoch_order_state": self.epoch_order_state,
                "generators": self.generators, "loss_sums": self.loss_sums, "labelled_steps": self.labelled_steps,
                "weight_sums": self.weight_sums, "first_bad": self.first_bad, "skipped": self.skipped,
                "best_loss": self.best_loss, "best_epoch": self.best_epoch, "best_value": self.best_value,
                "epochs_without_improvement": self.epochs_without_improvement, "stopped_early": self.stopped_early,
                "seconds": self.seconds,
                "epoch_train_seconds": self.epoch_train_seconds, "epoch_val_seconds": self.epoch_val_seconds}
        if self.process_generators:
            data["process_generators"] = self.process_generators
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Progress":
        """The progress a checkpoint saved. One older than train.monitor kept only best_loss, the best epoch's
        total validation loss, which is what its run monitored (its spec has no train.monitor: loss)."""
        progress = cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})
        if "best_value" not in data and progress.best_epoch >= 1:
            progress.best_value = float(progress.best_loss)
        return progress


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


def is_per_process(key: str) -> bool:
    """Whether a generator (a `capture_generators` key) is each rank's own: torch's CPU one and the GPUs'.

    A rank draws dropout and the like for its own rows from these, so their
    states differ between ranks (each rank's GPU generator most of all). The
    others (augmentation, a weighting's) draw for the global batch, alike on
    every rank, and fit a run with any number of processes.
    """
    return key == "torch" or key.startswith("cuda:")


def process_states(states: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The per-process part of `capture_generators`' states (see `is_per_process`)."""
    return {key: state for key, state in states.items() if is_per_process(key)}


def rank_generator_states(progress: Progress, rank: int, world_size: int) -> tuple[dict[str, torch.Tensor], str | None]:
    """The generator states rank `rank` of `world_size` restores, and why its own are not among them (or None).

    A checkpoint holds rank 0's states (`generators`) and, from several
    processes, every rank's own (`process_generators`). With as many processes
    as wrote it, each rank takes its own. With another number (or a checkpoint
    from before `process_generators`, which holds one process's states)
    no rank's own states are this rank's: only the shared generators are
    restored, and the per-process ones are reseeded (see `restore_generators`).
    """
    saved = progress.process_generators
    writers = len(saved) or 1
    if writers == world_size:
        return {**progress.generators, **(saved[rank] if saved else {})}, None
    shared = {key: state for key, state in progress.generators.items() if not is_per_process(key)}
    return shared, (f"the checkpoint holds the random states of {plural(writers, 'process', 'processes')}, "
                    f"not those of each of this run's {world_size}")


def restore_generators(states: Mapping[str, torch.Tensor], augment: torch.Generator, weighting: nn.Module, *,
                       epoch: int, step: int, log: Callable[[str], None], unsaved: str | None = None) -> None:
    """Put every random generator back in the state `capture_generators` saved.

    A run resumed on another kind of device than it was saved on (`device:
    auto` on a GPU box after a CPU one, or the reverse) holds generators whose
    saved states do not fit (a CUDA generator's state is 16 bytes, a CPU one's
    5056); a GPU without a saved state (the run was saved with fewer GPUs) has
    none to take; with `unsaved` (why: a checkpoint from another number of
    processes, `rank_generator_states`) this process's own generators (torch's
    CPU one and the GPUs') have none. Such a generator is reseeded from its
    own seed (the run's) and the position the run continues at (`epoch`,
    `step`), so the continued run is still reproducible, and `log` (the run's,
    which writes on rank 0 only) gets one line saying its random draws are not
    those of an uninterrupted run.
    """
    run_seed = torch.initial_seed()  # before set_rng_state puts back the saved run's
    augment_fits = _restore_or_reseed(augment, states["augment"], epoch, step)
    fits = [augment_fits]
    if unsaved is None:
        fits.append(_restore_or_reseed(torch.default_generator, states["torch"], epoch, step))  # a CPU state: fits
    else:
        _reseed(torch.default_generator, epoch, step)
    owned = module_generators(weighting)
    weighting_fits = []
    for key, state in states.items():
        name = key[len("weighting."):]
        if key.startswith("weighting.") and name in owned:
            weighting_fits.append(_restore_or_reseed(owned[name], state, epoch, step))
    fits += weighting_fits
    changes = [] if all(fits) else [f"the checkpoint was saved on another kind of device than this run's "
                                    f"{augment.device.type}"]
    changes += [unsaved] if unsaved else []
    cuda_states = states if unsaved is None else {}  # with `unsaved`, every GPU's generator is reseeded
    cuda_changes, cuda_reseeded = _restore_cuda(cuda_states, augment, run_seed, epoch, step, reseed=bool(changes))
    changes += cuda_changes
    if changes:
        # the draws of the generators reseeded, by cause: another number of processes reseeds only each process's
        # own (torch's and the GPUs': dropout); another kind of device those whose saved state does not fit it
        draws = (["augmentation"] if not augment_fits else []) + (
            ["dropout"] if unsaved or cuda_reseeded else []) + (
            ["weightings"] if not all(weighting_fits) else [])
        log(f"resumed at epoch {epoch}, step {step} with random generators reseeded from the run's seed, "
            f"since {' and '.join(changes)}: the continued run is reproducible, but its random draws "
            f"({', '.join(draws) or 'dropout'}) differ from an uninterrupted run's")


_MASK64 = (1 << 64) - 1


def resume_seed(seed: int, epoch: int, step: int, stream: int = 0) -> int:
    """SplitMix64 of (seed, epoch, step, stream): the seed of a generator whose saved state could not be restored."""
    z = seed & _MASK64
    for part in (epoch, step, stream):
        z = (z + (part + 1) * 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
    return z & ((1 << 63) - 1)


def _restore_or_reseed(generator: torch.Generator, state: torch.Tensor, epoch: int, step: int) -> bool:
    """Set `generator` to `state`, True; or, when the state is another kind of device's, reseed it and False."""
    if state.dtype == torch.uint8 and state.numel() == generator.get_state().numel():
        generator.set_state(state)
        return True
    _reseed(generator, epoch, step)
    return False


def _reseed(generator: torch.Generator, epoch: int, step: int) -> None:
    """Seed `generator` from its own seed and the position the run continues at: reproducible, position-dependent."""
    generator.manual_seed(resume_seed(generator.initial_seed(), epoch, step))


def _restore_cuda(states: Mapping[str, torch.Tensor], augment: torch.Generator, run_seed: int,
                  epoch: int, step: int, *, reseed: bool) -> tuple[list[str], bool]:
    """Put back the saved GPUs' random states; reseed a GPU that has none. Says why when the run's own GPU had none
    (the list), and whether a GPU's generator this run draws from (dropout) was reseeded.

    A GPU without a saved state is reseeded when the checkpoint came from a GPU
    run (with fewer GPUs) or from another kind of device (`reseed`), and only
    once CUDA is initialised (a run that has not touched it does not draw there).
    """
    saved = {int(key.split(":")[1]): state for key, state in states.items() if key.startswith("cuda:")}
    if not torch.cuda.is_available():
        return [], False
    count = torch.cuda.device_count()
    for index, state in saved.items():
        if index < count:
            torch.cuda.set_rng_state(state, index)
    missing = [index for index in range(count) if index not in saved]
    if not missing or not (saved or reseed) or not torch.cuda.is_initialized():
        return [], False
    for index in missing:
        torch.cuda.default_generators[index].manual_seed(resume_seed(run_seed, epoch, step, stream=index + 1))
    if not saved or augment.device.type != "cuda":  # another kind of device: said already; or no GPU in use
        return [], augment.device.type == "cuda"  # reseeded GPUs this process draws from (none on the CPU)
    in_use = {augment.device.index if augment.device.index is not None else torch.cuda.current_device()}
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every rank of the launch: rank 0 speaks for them
        in_use.update(range(int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    unsaved = sorted(in_use.intersection(missing))
    if not unsaved:
        return [], False  # the GPUs reseeded are none this run draws from
    return [f"the checkpoint holds the random states of {plural(len(saved), 'GPU')}, none for "
            f"{english_list(f'cuda:{index}' for index in unsaved)} (this machine has {count})"], True


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
    best = path / "best.pt"
    unreadable = ("It cannot be resumed from (best.pt cannot either: it keeps no training progress); start a new "
                  f"run from the best epoch's weights with init_from: {best}" if best.is_file() else
                  "It cannot be resumed from; put back an undamaged copy of it, or start the run again")
    data = read_checkpoint(checkpoint, unreadable=unreadable)
    if "progress" not in data:
        raise CheckpointError(f"{checkpoint} has no training progress (it is a copy of a best.pt, which keeps "
                              "only what using the model needs, or was written by an older hydranet); it can be "
                              "evaluated, used for prediction or as init_from, not resumed")
    check_for_resume(checkpoint, data)
    stopped = stopped_early(checkpoint, data)
    if stopped:
        raise TrainingError(stopped)
    return checkpoint, data


def stopped_early(checkpoint: Path, data: Mapping[str, Any]) -> str | None:
    """"nothing left to train: ..." for a run that stopped early (train.patience) and wrote summary.json; None
    for any other. Such a run is finished, as one that trained its last epoch is: resuming it would train the
    epochs its patience chose not to. Without summary.json (killed after last.pt's last write) it is resumed,
    which trains nothing and writes what is missing, as for a run killed after its last epoch."""
    progress = data.get("progress") or {}
    if not progress.get("stopped_early") or not (checkpoint.parent / "summary.json").is_file():
        return None
    train = (data.get("spec") or {}).get("train") or {}
    epoch, best = int(progress.get("epoch", 1)) - 1, int(progress.get("best_epoch", 0))
    monitor = monitor_words(train.get("monitor", LOSS_MONITOR))
    patience = train.get("patience") or 0
    return (f"nothing left to train: the run in {checkpoint.parent} stopped early after epoch {epoch} of "
            f"{train.get('epochs', epoch)}, as its {monitor} had not improved for {plural(patience, 'epoch')} "
            f"(train.patience; its best epoch is {best}); to train it further, start a new run from its last "
            f"weights with init_from: {checkpoint} (or from its best epoch's, {checkpoint.parent / 'best.pt'})")


def resumed_spec(checkpoint: Path, data: Mapping[str, Any], components: Components | None = None) -> ResolvedSpec:
    """The spec a run continues with, resolved with `components` (default: the installed plugins).

    A task, backbone, dataset or weighting whose plugin is not available here is named as eval and export name it
    (`checkpoint.check_plugins_available`): with the plugin the checkpoint records and how to get it back (install
    it, add it to HYDRANET_PLUGINS, pass an inline plugin as components=), not as a spec's unknown name, since a
    resumed run's spec cannot change.
    """
    components = components if components is not None else plugins.default_components()
    check_plugins_available(checkpoint, data, components, subject=f"resuming the run in {checkpoint.parent}")
    return load_spec(data["spec"], components=components)


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
