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

import dataclasses
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import Tensor
from tqdm import tqdm

from hydranet.core.augment import IMAGENET_MEAN, IMAGENET_STD, DeviceAugment
from hydranet.core.batches import BatchSource, choose_placement
from hydranet.core import background_compile, capture
from hydranet.core.background_compile import BackgroundCompile, CompileJob
from hydranet.core.capture import (CapturedStep, MirroredScheduler, capture_blockers, learning_rates_as_tensors,
                                   portable_optimizer_state)
from hydranet.core.checkpoint import (FORMAT, FORMAT_VERSION, atomic_torch_save, component_provenance, for_use,
                                      origin)
from hydranet.core.data import PreparedData, prepare_data
from hydranet.core.decode import decode_images
from hydranet.core.device import RunSettings, fused_if_supported, resolve_settings
from hydranet.core.distributed import Distributed
from hydranet.core.evaluation import EvalResult, baseline_metrics, evaluate
from hydranet.core.forward import check_heads, compile_static, make_forward_losses, model_for_settings
from hydranet.core.heartbeat import Heartbeat
from hydranet.core.interrupts import StoppedAtOnce, interrupt_requests
from hydranet.core.errors import (CheckpointError, DataError, HydranetError, TrainingError,
                                  TrainingInterrupted)
from hydranet.core.overrides import override_list
from hydranet.core.interfaces import StepContext, Task, Weighting
from hydranet.core.paths import MissingPathError, cache_dir
from hydranet.core.plugins import Components, default_components
from hydranet.core.resume import (Progress, capture_generators, missing_on_resume, restore_generators,
                                  resume_checkpoint)
from hydranet.core.run import RunFolder, SilentRunFolder, check_not_in_use, default_run_dir, resume_command
from hydranet.core.spec import ResolvedSpec, load_spec
from hydranet.core.step import TrainStep
from hydranet.core.surgery import init_from_problem, load_initial_weights, parameter_groups
from hydranet.core.wording import english_list, plural


@dataclass
class RunResult:
    """What `train` returns: where it wrote, and the figures it measured."""

    run_dir: Path
    history: list[dict[str, Any]]
    final: EvalResult
    baselines: dict[str, dict[str, float]]
    best_epoch: int
    settings: RunSettings
    notes: list[str] = field(default_factory=list)
    #: data_seconds, decode_seconds, cache_hit, placement, train_images (per epoch), first_step_seconds,
    #: epoch_train_seconds (list), epoch_val_seconds (list); synchronised with the device
    timings: dict[str, Any] = field(default_factory=dict)
    #: False on the other ranks of a distributed run: only rank 0 reports (and wrote the run folder).
    is_main: bool = True


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


def run_plan(plan: "RunPlan", *, components: Components | None = None, progress: bool | None = None,
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


@dataclass
class RunPlan:
    """What a `train` call will run: the resolved spec, the run folder, and the state it resumes from."""

    spec: ResolvedSpec
    out_dir: str | Path | None
    resume_state: Mapping[str, Any] | None = None
    #: how the caller names overrides, as `plan_run` was told: messages (how to resume) use the caller's words
    option: str = "overrides"


def resume_conflict(resume_option: str, resume: str | Path, given: Mapping[str, Any]) -> str | None:
    """Why continuing the run in `resume` cannot also take what `given` names (None: it gives nothing).

    `given` maps the caller's names for a spec, overrides and a run folder
    (the CLI's SPEC, --set, --out; the Python API's spec, overrides, out_dir)
    to what was passed; a resumed run takes all three from its checkpoint.
    """
    extra = [name for name, value in given.items() if value]
    if not extra:
        return None
    weights = Path(resume) if Path(resume).is_file() else Path(resume) / "last.pt"
    return (f"{resume_option} continues a run exactly as it was saved (its spec, settings and run folder); "
            f"give no {english_list(extra, 'or')} with it. To train with other settings, start a new run from "
            f"its weights with init_from: {weights}")


def plan_run(spec: ResolvedSpec | str | Path | Mapping[str, Any] | None = None, *,
             overrides: str | Iterable[str] = (), out_dir: str | Path | None = None, resume: str | Path | None = None,
             components: Components | None = None, option: str = "overrides") -> RunPlan:
    """Resolve what `train` would run, and refuse what cannot run, before any data or model is loaded.

    The `--nproc` launcher calls it too, so that a mistake is reported once, before the processes start.
    Problems name the overrides as `option`: the Python argument, or the CLI's `--set`.
    """
    overrides = override_list(overrides, option)
    if resume is None and out_dir is not None:
        _check_folder_free(Path(out_dir))
    if resume is None:
        if isinstance(spec, ResolvedSpec):  # overrides apply to what it resolved from, then it resolves again
            resolved = load_spec(spec.to_dict(), overrides, components, option=option) if overrides else spec
        else:
            resolved = load_spec("demo" if spec is None else spec, overrides, components, option=option)
        return RunPlan(resolved, out_dir, option=option)
    problem = resume_conflict("resume", resume, {"spec": spec is not None, "overrides": overrides,
                                                 "out_dir": out_dir is not None})
    if problem:
        raise HydranetError(problem)
    given = Path(resume)  # RUN or RUN/last.pt (a run in its first epoch has none yet)
    _check_folder_free(given.parent if given.is_file() or given.name == "last.pt" else given)
    checkpoint, state = resume_checkpoint(resume)
    resolved = load_spec(state["spec"], components=components)
    epochs = resolved.spec.train.epochs
    if int(state["progress"].get("epoch", 1)) > epochs:  # say so before loading the data and the model
        raise TrainingError(f"nothing left to train: the run in {checkpoint.parent} already finished its "
                            f"{plural(epochs, 'epoch')}; to train it further, start a new run from its weights "
                            f"with init_from: {checkpoint.parent / 'best.pt'}")
    return RunPlan(resolved, checkpoint.parent, state, option=option)


def _check_folder_free(folder: Path) -> None:
    """Refuse a run folder another run is writing, before any data or model loads.

    In the process that plans the run: a single one, or the `--nproc`
    launcher, before torchrun starts. Inside a torchrun launch rank 0 takes
    the folder's lock itself and tells the other ranks when it cannot.
    """
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        check_not_in_use(folder)


def load_prepared_data(spec: ResolvedSpec, tasks: Sequence[Task], progress: bool) -> PreparedData:
    """The dataset a spec names, listed, labelled, decoded (through the cache) and split."""
    data = spec.spec.data
    dataset = spec.data.build()
    cache = cache_dir() / "decoded" if data.cache else None
    return prepare_data(
        dataset,
        spec.data.entry.name,
        tasks,
        val_fraction=data.val_fraction,
        split_seed=data.split_seed,
        strict=data.strict,
        decode=lambda sources: decode_images(sources, spec.spec.image_size, dataset.open_image,
                                             workers=data.workers, cache_dir=cache, progress=progress),
    )


def batch_source(spec: ResolvedSpec, data: PreparedData, settings: RunSettings) -> BatchSource:
    """Place the decoded images as the spec's `data.placement` (auto: by size) says."""
    section = spec.spec.data
    placement = choose_placement(data.images.numel(), settings.device, section.placement, section.device_memory_gb)
    return BatchSource(data.images, settings.device, placement, workers=min(8, os.cpu_count() or 1))


class Trainer:
    """One training run of a resolved spec."""

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
        #: (epoch, step) a resume from last.pt continues at; None while this run has no checkpoint
        self.saved_at: tuple[int, int] | None = None
        self.spec = spec
        self.components = components or default_components()
        self.cfg = spec.spec.train
        self.dist = Distributed.from_environment(self.cfg.device)
        self.progress = progress and self.dist.is_main
        self.settings = self._resolve_settings(self.cfg.cuda_graphs)
        self.run_folder = self._open_run_folder(out_dir, echo)
        # without a bar (no terminal: a log file, nohup, a batch job), a line now and then shows the run is alive
        self.heartbeat = Heartbeat(self.run_folder.log) if not self.progress and self.dist.is_main else None
        self.timings: dict[str, Any] = {"epoch_train_seconds": [], "epoch_val_seconds": []}
        self.skipped_steps = 0
        self.background: BackgroundCompile | None = None  # the child compiling into the caches, while it runs
        self.cudnn_benchmark_before = torch.backends.cudnn.benchmark  # a process-wide switch: put back after the run

    # ------------------------------------------------------------ setup

    def _resolve_settings(self, cuda_graphs: str) -> RunSettings:
        """The train section's switches for this process's device, with `cuda_graphs` as given."""
        cfg = self.cfg
        settings = resolve_settings(cfg.device, cfg.precision, cfg.compile, cfg.channels_last, cfg.compile_mode,
                                    cuda_graphs, cfg.cudnn_benchmark, cfg.deterministic)
        return dataclasses.replace(settings, device=self.dist.device(settings.device))

    def _open_run_folder(self, out_dir: str | Path | None, echo: bool) -> RunFolder:
        """The run folder; in a distributed run rank 0 creates and checks it and the others get its path."""
        path = Path(out_dir) if out_dir is not None else default_run_dir(self.spec.source)
        fresh = self.resume_state is None
        if not self.dist.active:
            return RunFolder(path, echo=echo, fresh=fresh, option=self.option)
        folder, problem = None, None
        if self.dist.is_main:
            try:
                folder = RunFolder(path, echo=echo, fresh=fresh, option=self.option)
            except HydranetError as error:
                problem = str(error)
        shared_path, problem = self.dist.broadcast_object((str(path), problem))
        if problem:
            raise HydranetError(problem)
        return folder or SilentRunFolder(shared_path)

    def _setup(self) -> None:
        cfg, log, settings = self.cfg, self.run_folder.log, self.settings
        torch.manual_seed(cfg.seed)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        fresh_init = self.spec.spec.init_from if self.resume_state is None else None  # a resume has its weights
        problem = init_from_problem(fresh_init)
        if problem:
            raise CheckpointError(problem)
        self.run_folder.write_text("spec.yaml", self.spec.to_yaml())
        self.tasks = self.spec.build_tasks()
        started = time.perf_counter()
        try:
            with self.dist.main_first():  # rank 0 decodes into the cache, the others then read it
                data = load_prepared_data(self.spec, self.tasks, self.progress)
        except MissingPathError as missing:
            if self.resume_state is None:
                raise
            raise DataError(missing_on_resume(missing, self.run_folder.path, self.started_in)) from None
        self.started_in = self.started_in or os.getcwd()  # the data was found from here
        self.source = batch_source(self.spec, data, settings)
        self.timings.update(data_seconds=time.perf_counter() - started, placement=self.source.placement,
                            decode_seconds=data.decoded.seconds if data.decoded else math.nan,
                            cache_hit=bool(data.decoded and data.decoded.from_cache))
        for line in data.notes:
            log(line)
        log(f"data: {data.usable} images at {self.spec.spec.image_size}px, "
            f"{data.train_index.numel()} train / {data.val_index.numel()} validation; "
            f"{'cache hit' if self.timings['cache_hit'] else 'decoded'} in {self.timings['decode_seconds']:.1f}s; "
            f"images on {self.source.placement}")
        train_targets = data.targets[data.train_index]
        for k, task in enumerate(self.tasks):
            task.fit_targets(train_targets[:, k])
        self.eval_index = data.val_index if data.val_index.numel() else data.train_index
        if not data.val_index.numel():
            log("no validation split (data.val_fraction is 0, or too few images): "
                "the metrics and the best checkpoint are measured on the training set")
        self.baselines = baseline_metrics(self.tasks, train_targets, data.targets[self.eval_index])
        self.data = data
        self.targets = data.targets.to(settings.device)

        model = model_for_settings(self.spec, self.tasks, settings)
        if fresh_init:
            load_initial_weights(model, self.tasks, fresh_init, log)
        if self.spec.spec.freeze:
            log(f"frozen: {', '.join(self.spec.spec.freeze)}")
        check_heads(model, self.tasks, self.spec, self.components)
        self.model = model
        self.weighting: Weighting = self.spec.build_weighting(self.tasks).to(settings.device)
        settings = self._settle_graphs()
        self.dist.broadcast_module(model)  # the same seed builds the same model; this makes sure of it
        self.dist.broadcast_module(self.weighting)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.shared_parameters = model.shared_parameters()
        self.head_parameters = model.head_parameters()
        self.last_shared_parameters = model.last_shared_parameters()
        self.optimizer = self._optimizer()
        self.batch_size = self._fit_batch_size(data.train_index.numel())
        self.local_rows = self.dist.local_rows(self.batch_size)
        self.steps_per_epoch = data.train_index.numel() // self.batch_size
        self.timings["train_images"] = self.steps_per_epoch * self.batch_size  # the ragged tail is dropped
        self.scheduler: Any = self._build_scheduler(self.optimizer) if cfg.scheduler != "none" else None
        aug = self.spec.spec.augment
        self.augment = DeviceAugment(settings.device, flip=aug.flip, translate=aug.translate,
                                     color_jitter=aug.color_jitter, seed=cfg.seed + 1,
                                     channels_last=settings.channels_last)
        self.order_generator = torch.Generator().manual_seed(cfg.seed)
        tasks = self.tasks

        n_params = sum(p.numel() for p in model.parameters())
        log(f"model: {self.spec.backbone.entry.name} backbone + {len(self.tasks)} heads "
            f"({', '.join(t.name for t in self.tasks)}), {n_params / 1e6:.2f}M parameters; "
            f"weighting {self.spec.weighting.entry.name}; {settings.describe()}")
        self.background = self._start_background_compile() if settings.compile else None
        forward_losses = self._build_forward(compile=settings.compile and self.background is None)
        self.train_step = TrainStep(forward_losses, self.weighting, self.optimizer, self._step_context,
                                    num_tasks=len(tasks), device=settings.device,
                                    share_losses=self.dist.share_losses,
                                    sum_gradients=lambda: self.dist.sum_gradients(self.trainable))
        self.step_fn: Callable[[Tensor, Tensor], None] = self.train_step
        if settings.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        self.timings["setup_seconds"] = time.perf_counter() - self.started  # the first step's own share is the rest

    def _fit_batch_size(self, train_images: int) -> int:
        """The global batch: train.batch_size, cut to the training set when that is smaller (and said so)."""
        asked, processes = self.cfg.batch_size, self.dist.world_size
        if asked <= train_images:
            self.dist.check_batch_size(asked)
            return asked
        if train_images < processes:
            raise TrainingError(f"only {plural(train_images, 'training image')} for {processes} processes, and "
                                "each process needs at least one per step; use fewer processes or more images")
        used = train_images // processes * processes  # whole shares only
        shares = f", a multiple of the {processes} processes" if processes > 1 else ""
        self.run_folder.log(f"train.batch_size = {asked} is more than the {plural(train_images, 'training image')}"
                            f": using {used}{shares} (one step per epoch)")
        return used

    def _build_forward(self, *, compile: bool) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor | None]]:
        """Set the evaluation forward, compiled or not, and return the training step's forward-and-losses.

        Called once at setup, and again at the background compile's switch.
        """
        self.forward = compile_static(self.model, self.settings) if compile else self.model
        return make_forward_losses(self.model, self.tasks, self.settings, self.weighting.needs_features,
                                   compile=compile)

    @property
    def _eval_batch(self) -> int:
        """The evaluation batch: the spec's, else twice the training batch, and no more rows than there are."""
        return min(self.cfg.eval_batch_size or 2 * self.cfg.batch_size,
                   max(1, self.dist.local_index(self.eval_index).numel()))

    def _start_background_compile(self) -> BackgroundCompile | None:
        """Start the child that compiles into the caches (train.compile_in_background); None: compile here."""
        if not self.cfg.compile_in_background:
            return None
        reasons = background_compile.blockers(processes=self.dist.world_size, graphs=self.settings.graphs,
                                              deterministic=self.cfg.deterministic)
        job = CompileJob(self.spec.to_dict(), [task.state_dict() for task in self.tasks],
                         {**dataclasses.asdict(self.settings), "device": str(self.settings.device)},
                         train_batch=self.batch_size // self.dist.world_size, eval_batch=self._eval_batch)
        log_path = self.run_folder.path / "compile.log"
        try:
            started = None if reasons else BackgroundCompile(job, log_path)
        except (TypeError, ValueError) as error:  # the job file is JSON: plain values only
            reasons.append(f"a task's fitted state is not plain values ({error})")
        except OSError as error:
            self.run_folder.log(f"warning: could not start the background compiler ({error}); "
                                "the first step compiles instead")
            return None
        if started is None:
            self.run_folder.log(f"train.compile_in_background is not possible here ({'; '.join(reasons)}); "
                                "the first step compiles instead")
            return None
        self.run_folder.log(f"compiling the model in a background process (its log: {log_path.name}); "
                            "training starts uncompiled and switches to the compiled model when it is done")
        return started

    def _switch_to_compiled(self, epoch: int, step: int) -> None:
        """The background compile has ended: compile here (from its cache, or cold if it failed) and go on."""
        background, self.background = self.background, None
        assert background is not None
        failure = background.failure()
        background.stop()
        if failure:
            self.run_folder.log(f"warning: the background compile failed ({failure}); compiling here instead, "
                                "so this step waits for a cold compile")
        else:
            self.run_folder.log(f"the background compile finished after {background.seconds:.1f}s; "
                                f"the compiled model takes over at epoch {epoch}, step {step + 1}")
        self.train_step.forward_losses = self._build_forward(compile=True)
        self.timings["compiled_from"] = {"epoch": epoch, "step": step + 1, "background_seconds": background.seconds,
                                         "failed": bool(failure)}

    def _stop_background_compile(self) -> None:
        if self.background is not None:
            self.background.stop()
            self.run_folder.log("the run ended before the background compile did; it was stopped")
            self.background = None

    @property
    def _first_step_note(self) -> str:
        """What makes the first step slow, said before it starts (empty when nothing does)."""
        settings = self.settings
        if self.background is not None:
            return ""
        work = []
        if settings.compile:
            work.append(f"compiles the model (torch.compile, mode {settings.compile_mode})")
        if settings.graphs != "off":
            work.append("records CUDA graphs" + (" of the whole step" if settings.graphs == "step" else ""))
        if not work:
            return ""
        cached = "; later runs reuse the compiler's on-disk cache" if settings.compile else ""
        return f"the first step {' and '.join(work)}, so it takes longer{cached}"

    def _settle_graphs(self) -> RunSettings:
        """Keep `cuda_graphs: step` only where the whole step can be recorded; else say why and fall back."""
        settings, cfg = self.settings, self.cfg
        if settings.graphs == "step":
            blockers = capture_blockers(settings.device, self.weighting, processes=self.dist.world_size,
                                        on_nonfinite=cfg.on_nonfinite, placement=self.source.placement)
            if blockers:
                self.settings = settings = self._resolve_settings("auto")
                self.run_folder.log(f"train.cuda_graphs: step is not possible here ({'; '.join(blockers)}); "
                                    f"running {settings.describe()}")
        return settings

    def _build_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.steps_per_epoch * self.cfg.epochs)

    def _record_steps(self) -> None:
        """Switch to the recorded step (train.cuda_graphs: step), once the run's state is final.

        After a resume the optimizer and scheduler hold the checkpoint's
        state, so this comes after `_restore`: learning rates become device
        tensors the graph reads, and the scheduler writes into them.
        """
        backend = capture.graph_backend(self.settings.device)
        if self.settings.graphs != "step" or backend is None:
            return
        learning_rates_as_tensors(self.optimizer, self.settings.device)
        if self.scheduler is not None:
            self.scheduler = MirroredScheduler(self.optimizer, self._build_scheduler, self.scheduler.state_dict())

        def fallback(reason: str) -> None:
            self.run_folder.log(f"warning: recording the training step as a CUDA graph failed ({reason}); "
                                "training on without it")

        self.step_fn = CapturedStep(self.train_step, [self.model, self.weighting], backend, self.settings.device,
                                    on_fallback=fallback)

    def _step_context(self, features: Tensor | None) -> StepContext:
        return StepContext(features, self.shared_parameters, self.head_parameters, self.last_shared_parameters,
                           all_reduce=self.dist.all_reduce, world_size=self.dist.world_size)

    def _optimizer(self) -> torch.optim.Optimizer:
        cfg = self.cfg
        groups = parameter_groups(self.model, cfg.lr, cfg.weight_decay, cfg.backbone_lr, cfg.head_lr)
        weighting_params = [p for p in self.weighting.parameters() if p.requires_grad]
        if weighting_params:  # learned loss weights must not be pulled towards zero
            groups.append({"params": weighting_params, "lr": cfg.lr, "weight_decay": 0.0, "name": "weighting"})
        if not groups:
            raise TrainingError("nothing to train: every part is frozen and the weighting learns nothing; "
                                "remove a part from `freeze`")
        if cfg.optimizer == "sgd":
            return fused_if_supported(torch.optim.SGD, groups, lr=cfg.lr, momentum=cfg.momentum)
        return fused_if_supported(torch.optim.AdamW, groups, lr=cfg.lr)

    # ------------------------------------------------------------ loop

    def run(self) -> RunResult:
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
            with interrupt_requests(self):
                try:
                    return self._loop()
                except KeyboardInterrupt as stop:
                    if isinstance(stop, StoppedAtOnce):
                        raise
                    raise self._stopped_at_once() from None
        finally:
            self._stop_background_compile()
            torch.backends.cudnn.benchmark = self.cudnn_benchmark_before
            self.run_folder.close()  # its lock: another run may write the folder now
            self.dist.close()

    def _restore(self, state: Mapping[str, Any]) -> None:
        """Put the freshly built run back where the checkpoint left it."""
        self.model.load_state_dict(state["model"])
        self.weighting.load_state_dict(state["weighting"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        self.progress_state = Progress.from_dict(state["progress"])
        self.order_generator.set_state(self.progress_state.epoch_order_state)
        restore_generators(self.progress_state.generators, self.augment.generator, self.weighting,
                           epoch=self.progress_state.epoch, step=self.progress_state.step, log=self.run_folder.log)
        completed = self.progress_state.epoch - 1
        self.run_folder.truncate_metrics(completed)
        self.saved_at = (self.progress_state.epoch, self.progress_state.step)
        self.run_folder.log(f"resumed from {self.run_folder.last_checkpoint}: epoch {self.progress_state.epoch}, "
                            f"step {self.progress_state.step} of {self.steps_per_epoch}")

    def _loop(self) -> RunResult:
        cfg, log, progress = self.cfg, self.run_folder.log, self.progress_state
        history: list[dict[str, Any]] = self.run_folder.metrics_rows()
        final: EvalResult | None = None
        for epoch in range(progress.epoch, cfg.epochs + 1):
            self.epoch_running = epoch
            progress.epoch_order_state = self.order_generator.get_state()  # to draw this order again on resume
            order = self.data.train_index[torch.randperm(self.data.train_index.numel(),
                                                         generator=self.order_generator)]
            started = time.perf_counter()
            train_losses, weights_used = self._train_epoch(epoch, order)
            train_seconds = time.perf_counter() - started
            self.weighting.epoch_end(torch.tensor(train_losses, device=self.settings.device))
            started = time.perf_counter()
            self.model.eval()
            self.validating = True
            self.dist.average_buffers(self.model)  # batch-norm statistics: one model on every rank
            final = evaluate(self.forward, self.tasks, self.source, self.targets,
                             self.dist.local_index(self.eval_index), self.augment, self.settings, self._eval_batch,
                             pad=self.settings.compile, all_reduce=self.dist.all_reduce if self.dist.active else None)
            val_seconds = time.perf_counter() - started
            self.timings["epoch_train_seconds"].append(train_seconds)
            self.timings["epoch_val_seconds"].append(val_seconds)
            row = self._row(epoch, train_seconds, val_seconds, train_losses, weights_used, final)
            history.append(row)
            self.run_folder.append_metrics(row)
            improved = final.total_loss < progress.best_loss
            if improved:
                progress.best_loss, progress.best_epoch = final.total_loss, epoch
            progress.epoch, progress.step, progress.loss_sums, progress.first_bad = epoch + 1, 0, [], []
            progress.weight_sums, progress.skipped = [], 0
            progress.epoch_order_state = self.order_generator.get_state()
            self._save(epoch, row, best=improved)
            self.saved_at = (progress.epoch, progress.step)
            log(self._epoch_line(epoch, row, final))
            nonfinite = final.nonfinite_tasks()
            if nonfinite:
                log(f"warning: epoch {epoch}'s validation loss is not finite for "
                    f"{english_list([repr(t) for t in nonfinite])}, so it cannot be the best epoch "
                    "(best.pt keeps the last one that was); a learning rate too high for the data is the usual "
                    "cause (train.lr)")
            self.validating = False
            if epoch < cfg.epochs and self._stop_agreed():  # a request during validation: the epoch is saved
                self._stop(f"after epoch {epoch} and its validation")
        if final is None:
            raise TrainingError(f"nothing left to train: the run already finished its {plural(cfg.epochs, 'epoch')}")
        if progress.best_epoch == 0:
            log(f"no epoch had a finite validation loss, so no best.pt was written; {self.run_folder.last_checkpoint} "
                "holds the last epoch's weights")
        if self.dist.active:
            gap = self.dist.divergence(self.model, self.weighting)
            log(f"{self.dist.world_size} processes ({self.dist.backend}): parameters identical on every rank"
                if gap == 0 else f"warning: the {self.dist.world_size} processes' parameters differ by up to "
                                 f"{gap:.3g} (rank 0's were saved)")
        result = RunResult(self.run_folder.path, history, final, self.baselines, progress.best_epoch, self.settings,
                           self.data.notes, self.timings, is_main=self.dist.is_main)
        self.run_folder.write_json("summary.json", {
            "best_epoch": progress.best_epoch,
            "final": final.metrics,
            "final_losses": final.losses,
            "higher_is_better": final.higher_is_better,  # how to rank the metrics without the task plugins
            "baselines": self.baselines,
            "settings": self.settings.describe(),
            "timings": self.timings,
        })
        return result

    def _train_epoch(self, epoch: int, order: Tensor) -> tuple[list[float], list[float]]:
        """Train one epoch (or what is left of it); its mean per-task losses and the mean weights applied."""
        cfg, tasks, settings, progress = self.cfg, self.tasks, self.settings, self.progress_state
        self.model.train()
        k = len(tasks)
        first_step = progress.step
        step_fn, train_step = self.step_fn, self.train_step
        train_step.start_epoch(progress.loss_sums, progress.first_bad, first_step, progress.weight_sums)
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
                losses, features = train_step.forward(x, y)
                updated = bool(torch.isfinite(losses.detach()).all())
                if updated:
                    train_step.update(losses, features)
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
            if switching:  # the first compiled step: a compile from the cache, and CUDA graphs recorded
                if settings.device.type == "cuda":
                    torch.cuda.synchronize(settings.device)
                self.timings["compiled_from"]["first_step_seconds"] = time.perf_counter() - switch_started
                self.run_folder.log(f"first compiled step done in {time.perf_counter() - switch_started:.1f}s")
            done = step + 1
            if done % cfg.log_every == 0 or done == self.steps_per_epoch:
                host = self._epoch_means(train_step, done - skipped)
                self._stop_if_nonfinite(epoch, host[k:2 * k])
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
        return host[:k], host[2 * k:]

    @staticmethod
    def _epoch_means(train_step: TrainStep, steps: int) -> list[float]:
        """Mean losses, first non-finite steps, mean weights over the `steps` steps trained (nan for none).

        One host read of the step's running sums. Skipped steps add nothing to
        the sums, so they are not counted in `steps` either.
        """
        return torch.cat([train_step.loss_sums / steps, train_step.first_bad.float(),
                          train_step.weight_sums / steps]).tolist()

    def _local_order(self, order: Tensor) -> Tensor:
        """This rank's rows of each global batch in `order`, batch after batch (all of it in one process)."""
        if not self.dist.active:
            return order
        steps = order.numel() // self.batch_size
        return order[:steps * self.batch_size].view(steps, self.batch_size)[:, self.local_rows].reshape(-1)

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

    def _save_interrupted(self, epoch: int, done: int, train_step: TrainStep) -> None:
        progress = self.progress_state
        progress.epoch, progress.step = epoch, done
        progress.loss_sums, progress.first_bad = train_step.loss_sums.tolist(), train_step.first_bad.tolist()
        progress.weight_sums = train_step.weight_sums.tolist()
        if self.dist.is_main:
            atomic_torch_save(self.checkpoint_state(epoch - 1, {}), self.run_folder.last_checkpoint)
        self.saved_at = (epoch, done)
        self._stop(f"at epoch {epoch}, step {done}")

    def _stop(self, where: str) -> None:
        """Stop for the signal received, once progress is saved: say so (once) and how to continue."""
        name = signal.Signals(self.stop_signal).name if self.stop_signal else "a signal"
        message = (f"stopped by {name} {where}; progress saved in {self.run_folder.last_checkpoint}. "
                   f"Continue with: {resume_command(self.run_folder.path, self.option)}")
        self.run_folder.log(message)  # train.log, and the console on rank 0: the CLI does not repeat it
        raise TrainingInterrupted(message, self.stop_signal or signal.SIGINT)

    def _stopped_at_once(self) -> StoppedAtOnce:
        """A second Ctrl-C ended the run without saving: say what is kept and how to go on from it."""
        during = f"epoch {self.epoch_running}" + ("'s validation" if self.validating else "")
        if self.saved_at is None:
            kept = ("No checkpoint had been written yet, so there is nothing to resume; "
                    "start the run again to train it.")
        else:
            epoch, step = self.saved_at
            at = f"the end of epoch {epoch - 1}" if step == 0 else f"epoch {epoch}, step {step}"
            kept = (f"Kept: {self.run_folder.last_checkpoint}, saved at {at}. "
                    f"Continue from there with: {resume_command(self.run_folder.path, self.option)}")
        message = f"stopped at once by a second Ctrl-C during {during}, without saving its progress. {kept}"
        self.run_folder.log(message)  # the CLI does not repeat it either
        return StoppedAtOnce(message)

    def _stop_if_nonfinite(self, epoch: int, first_bad: Sequence[float]) -> None:
        bad = sorted((int(step), task.name) for task, step in zip(self.tasks, first_bad) if step >= 0)
        if not bad:
            return
        first_step = bad[0][0]
        names = [f"'{name}'" for step, name in bad if step == first_step]
        culprits = f"task{'s' if len(names) > 1 else ''} {english_list(names)}"
        whose = "those tasks'" if len(names) > 1 else "that task's"
        followers = [f"'{name}' (step {step})" for step, name in bad if step != first_step]
        after = f", then {english_list(followers)} once the weights were damaged" if followers else ""
        self._stop_nonfinite(epoch, f"non-finite loss for {culprits} at epoch {epoch}, step {first_step}{after}",
                             whose)

    def _stop_nonfinite(self, epoch: int, problem: str, whose: str) -> NoReturn:
        """Stop for non-finite losses: say what went wrong, which checkpoint is kept and what to try."""
        keep = (f"The last good checkpoint is {self.run_folder.last_checkpoint} (epoch {epoch - 1})."
                if epoch > 1 else "No checkpoint was written yet.")
        message = (f"{problem}. Training stopped. {keep} Try a lower train.lr, check {whose} labels, "
                   "or use another weighting.")
        self.run_folder.log(message, console=False)  # train.log; the error reaches the console, once
        raise TrainingError(message)

    # ------------------------------------------------------------ records

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
            metrics = " ".join(f"{m} {v:.3f}" for m, v in evaluation.metrics[task.name].items())
            parts.append(f"{task.name}: loss {row[f'train_loss.{task.name}']:.3f} | val {metrics}")
        seconds = row["train_seconds"] + row["val_seconds"]
        return f"epoch {epoch}/{self.cfg.epochs} ({seconds:.1f}s)  " + "; ".join(parts)

    def _save(self, epoch: int, row: Mapping[str, Any], *, best: bool) -> None:
        if not self.dist.is_main:
            return
        state = self.checkpoint_state(epoch, row)
        atomic_torch_save(state, self.run_folder.last_checkpoint)
        if best:  # for using the model: resuming continues from last.pt
            atomic_torch_save(for_use(state), self.run_folder.best_checkpoint)

    def checkpoint_state(self, epoch: int, row: Mapping[str, Any]) -> dict[str, Any]:
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
            "model": self.model.state_dict(),
            "weighting": self.weighting.state_dict(),
            "optimizer": portable_optimizer_state(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "metrics": {k: v for k, v in row.items()},
            "progress": {**self.progress_state.to_dict(),
                         "generators": capture_generators(self.augment.generator, self.weighting)},
            "preprocess": {"image_size": self.spec.spec.image_size, "mean": list(IMAGENET_MEAN),
                           "std": list(IMAGENET_STD)},
        }
