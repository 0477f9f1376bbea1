"""Setting up a run: its data, model, optimizer, scheduler and training step, built from the spec.

Split out of the engine so that `engine.py` holds the train loop alone.
`RunSetup` is a mixin of `Trainer`: its methods read and set the trainer's
attributes, as they did when they were the trainer's own. The background
compile lives here too, because its switch, mid-run, rebuilds the step's
forward the way setup first built it.

`_setup` looks `load_prepared_data` up in this module, so a test that must
see no data load patches it here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hydranet.core import background_compile, capture
from hydranet.core.augment import DeviceAugment
from hydranet.core.background_compile import BackgroundCompile, CompileJob
from hydranet.core.batches import BatchSource, choose_placement, placement_words
from hydranet.core.capture import CapturedStep, MirroredScheduler, capture_blockers, learning_rates_as_tensors
from hydranet.core.data import PreparedData, prepare_data
from hydranet.core.decode import decode_images
from hydranet.core.device import RunSettings, fused_if_supported, resolve_settings
from hydranet.core.distributed import Distributed
from hydranet.core.errors import CheckpointError, DataError, HydranetError, RunFolderError, SpecError, TrainingError
from hydranet.core.evaluation import baseline_outputs, score_baselines
from hydranet.core.forward import (batch_norm_problem, check_heads, compile_static, fresh_compiler, make_forward_losses,
                                   model_for_settings)
from hydranet.core.interfaces import StepContext, Task, Weighting
from hydranet.core.label_summary import classes_missing_from, label_summary
from hydranet.core.model_loading import resolved_without_weight_loading
from hydranet.core.paths import DECODED_CACHE, MissingPathError, cache_dir
from hydranet.core.plugin_calls import PluginCall, provenance
from hydranet.core.resume import missing_on_resume
from hydranet.core.run import RunFolder, SilentRunFolder, default_run_dir
from hydranet.core.spec import ResolvedSpec
from hydranet.core.step import TrainStep
from hydranet.core.surgery import init_from_problem, load_initial_weights, parameter_groups
from hydranet.core.wording import plural


#: the env variable CUDA reads for deterministic cuBLAS products (train.deterministic sets it for the run)
CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"
FIT_FIX = ("Fix the task's fit_targets: it sees the training labels (NaN = missing) and keeps what it learns as "
           "plain values (its state_dict); or leave the task out of the spec")


def load_prepared_data(spec: ResolvedSpec, tasks: Sequence[Task], progress: bool) -> PreparedData:
    """The dataset a spec names, listed, labelled, decoded (through the cache) and split."""
    data = spec.spec.data
    dataset = spec.data.build()
    cache = cache_dir() / DECODED_CACHE if data.cache else None
    return prepare_data(
        dataset,
        spec.data.entry.name,
        tasks,
        val_fraction=data.val_fraction,
        test_fraction=data.test_fraction,
        split_seed=data.split_seed,
        strict=data.strict,
        decode=lambda sources: decode_images(sources, spec.spec.image_size, dataset.open_image,
                                             workers=data.workers, cache_dir=cache, progress=progress),
    )


def batch_source(spec: ResolvedSpec, data: PreparedData, settings: RunSettings,
                 dist: Distributed | None = None) -> BatchSource:
    """Place the decoded images as the spec's `data.placement` (auto: by size) says.

    In a distributed run (`dist`) every rank places them alike, as the
    smallest budget of any rank allows (see `choose_placement`).
    """
    section = spec.spec.data
    placement = choose_placement(data.images.numel(), settings.device, section.placement, section.device_memory_gb,
                                 least=dist.least if dist is not None else None)
    return BatchSource(data.images, settings.device, placement, workers=min(8, os.cpu_count() or 1))


@contextlib.contextmanager
def callers_random_state() -> Iterator[None]:
    """Leave torch's process-wide random generators as the caller had them, however the run ends.

    A run seeds them (`torch.manual_seed(train.seed)`, and a resume sets the
    checkpoint's states), which would reseed the caller's own draws: a
    notebook that trains between two `torch.rand` calls must get the numbers
    it would have got without the run. The run itself is unchanged: it seeds
    at its start, so the same spec and seed train alike every time.

    The CPU generator's state is put back (its initial seed too), and the
    GPUs' states where CUDA was initialised before the run. Where it was not,
    the caller has drawn nothing there yet: the GPUs are seeded (now, or
    when CUDA starts) from the caller's CPU seed, as `torch.manual_seed` (or
    the default seed) would have. Python's `random` and numpy's global
    generators are not touched by a run, so not by this either.
    """
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        elif torch.cuda.is_available():
            torch.cuda.manual_seed_all(torch.initial_seed())  # queued until CUDA starts, as torch.manual_seed's


@contextlib.contextmanager
def callers_torch_switches() -> Iterator[None]:
    """Leave torch's process-wide algorithm switches as the caller had them, however the run ends.

    A run may turn on `torch.use_deterministic_algorithms` (with
    CUBLAS_WORKSPACE_CONFIG, which CUDA's deterministic matrix products need)
    and switch `cudnn.benchmark`; left on, a notebook's next cell would run its
    own code under the last run's settings. A setting the caller made before
    the run (an env value, deterministic algorithms, warn-only or erroring)
    is what it gets back.

    Only a switch the run changed is set back: setting one imports parts of
    torch (`use_deterministic_algorithms` imports torch._inductor), and after
    a Ctrl-C that landed inside one of torch's lazy imports that import fails
    on the half-loaded module. And a restore that fails while the run is
    already ending with an error (a Ctrl-C above all) never replaces that
    error: the run still says "stopped by Ctrl-C" and exits 130.
    """
    saved = _torch_switches()
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            _restore_torch_switches(saved)
        raise
    _restore_torch_switches(saved)


def _torch_switches() -> tuple[bool, bool, bool, str | None]:
    """(cudnn.benchmark, deterministic algorithms, warn-only, CUBLAS_WORKSPACE_CONFIG) as they are now."""
    return (torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(), os.environ.get(CUBLAS_WORKSPACE))


def _restore_torch_switches(saved: tuple[bool, bool, bool, str | None]) -> None:
    """Set back each of `saved`'s switches that differs now (`callers_torch_switches`)."""
    benchmark, deterministic, warn_only, workspace = saved
    if torch.backends.cudnn.benchmark != benchmark:
        torch.backends.cudnn.benchmark = benchmark
    if (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) != \
            (deterministic, warn_only):
        _set_deterministic(deterministic, warn_only)
    if os.environ.get(CUBLAS_WORKSPACE) != workspace:
        if workspace is None:
            os.environ.pop(CUBLAS_WORKSPACE, None)
        else:
            os.environ[CUBLAS_WORKSPACE] = workspace


def _set_deterministic(enabled: bool, warn_only: bool) -> None:
    """torch.use_deterministic_algorithms, which imports torch._inductor on its first call."""
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


class RunSetup:
    """The `Trainer`'s setup: everything built before the first step, and rebuilt at the compile switch."""

    def _resolve_settings(self, cuda_graphs: str | None = None, whole_step: bool = True) -> RunSettings:
        """The train section's switches for this process's device, with `cuda_graphs` as given (None: the spec's).

        A background compile caches the compiler's graphs for the switch, so
        with it `cuda_graphs: auto` does not choose the recorded step.
        """
        cfg = self.cfg
        settings = resolve_settings(cfg.device, cfg.precision, cfg.compile, cfg.channels_last, cfg.compile_mode,
                                    cuda_graphs or cfg.cuda_graphs, cfg.cudnn_benchmark, cfg.deterministic,
                                    whole_step=whole_step and not cfg.compile_in_background)
        return dataclasses.replace(settings, device=self.dist.device(settings.device))

    def _open_run_folder(self, out_dir: str | Path | None, echo: bool) -> RunFolder:
        """The run folder; in a distributed run rank 0 creates and checks it and the others get its path."""
        path = Path(out_dir) if out_dir is not None else default_run_dir(self.spec.source)
        fresh = self.resume_state is None

        def open_folder() -> RunFolder:
            return RunFolder(path, echo=echo, fresh=fresh, option=self.option, tasks=self.spec.task_names)

        if not self.dist.active:
            return open_folder()
        folder, problem, failure = None, None, None
        if self.dist.is_main:
            try:
                folder = open_folder()
            except Exception as error:  # any failure reaches the other ranks, which would wait in the broadcast
                failure = error
                problem = str(error) if isinstance(error, HydranetError) else f"{type(error).__name__}: {error}"
        shared_path, problem = self.dist.broadcast_object((str(path), problem))
        if failure is not None:
            raise failure
        if problem:  # rank 0 could not open the folder: the same refusal here
            raise RunFolderError(problem)
        return folder or SilentRunFolder(shared_path)

    def _setup(self) -> None:
        cfg, log, settings = self.cfg, self.run_folder.log, self.settings
        torch.manual_seed(cfg.seed)
        if cfg.deterministic:
            os.environ.setdefault(CUBLAS_WORKSPACE, ":4096:8")
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
        self.source = batch_source(self.spec, data, settings, self.dist)
        data_done = time.perf_counter()
        self.timings.update(data_seconds=data_done - started, placement=self.source.placement,
                            decode_seconds=data.decoded.seconds if data.decoded else math.nan,
                            cache_hit=bool(data.decoded and data.decoded.from_cache))
        for line in data.notes:
            log(line)
        log(f"data: {plural(data.usable, 'image')} at {self.spec.spec.image_size}px, "
            f"{data.train_index.numel()} train / {data.val_index.numel()} validation"
            f"{f' / {data.test_index.numel()} test' if data.test_index.numel() else ''}; "
            f"{'cache hit' if self.timings['cache_hit'] else 'decoded'} in {self.timings['decode_seconds']:.1f}s; "
            f"{placement_words(self.source.placement, self.spec.spec.data.cache)}")
        train_targets = data.targets[data.train_index]
        log(label_summary(self.tasks, train_targets))
        for note in classes_missing_from(self.tasks, train_targets, data.targets[data.val_index]):
            log(note)
        for k, task in enumerate(self.tasks):
            PluginCall("the fit_targets of", provenance(task, "task"), FIT_FIX)(task.fit_targets, train_targets[:, k])
        self.eval_index = data.val_index if data.val_index.numel() else data.train_index
        if not data.val_index.numel():
            log("no validation split (data.val_fraction is 0, or too few images): "
                "the metrics and the best checkpoint are measured on the training set")
        # the constants are fitted on the training labels and stored in the checkpoint: eval scores them on any data
        self.baseline_outputs = baseline_outputs(self.tasks, train_targets)
        self.baselines = score_baselines(self.tasks, self.baseline_outputs, data.targets[self.eval_index])
        self.data = data
        self.targets = data.targets.to(settings.device)

        weights_elsewhere = self.resume_state is not None or fresh_init  # last.pt's, or init_from's: no file
        model = model_for_settings(resolved_without_weight_loading(self.spec) if weights_elsewhere else self.spec,
                                   self.tasks, settings)
        starting = getattr(model.backbone, "starting_weights", None)  # a plugin's words for a file it loaded
        if isinstance(starting, str):
            log(f"backbone starts from {starting}")
        loaded_heads = load_initial_weights(model, self.tasks, fresh_init, log) if fresh_init else set()
        if self.spec.spec.freeze:
            log(f"frozen: {', '.join(self.spec.spec.freeze)}")
            self._warn_random_frozen(fresh_init, loaded_heads)
        norm_values_per_image = check_heads(model, self.tasks, self.spec)
        self.model = model
        self.weighting: Weighting = self.spec.build_weighting(self.tasks).to(settings.device)
        settings = self._settle_graphs()
        model_done = time.perf_counter()
        self.dist.broadcast_module(model)  # the same seed builds the same model; this makes sure of it
        self.dist.broadcast_module(self.weighting)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.shared_parameters = model.shared_parameters()
        self.head_parameters = model.head_parameters()
        self.last_shared_parameters = model.last_shared_parameters()
        self.optimizer = self._optimizer()
        self.batch_size = self._fit_batch_size(data.train_index.numel())
        self.local_rows = self.dist.local_rows(self.batch_size)
        problem = batch_norm_problem(norm_values_per_image, self.batch_size // self.dist.world_size,
                                     self.spec.spec.image_size)
        if problem:
            raise SpecError([("train.batch_size", problem)], self.spec.source)
        self.steps_per_epoch = data.train_index.numel() // self.batch_size
        self.timings["train_images"] = self.steps_per_epoch * self.batch_size  # the ragged tail is dropped
        self._note_dropped_images(data.train_index.numel())
        scheduled = cfg.scheduler != "none" or cfg.warmup_epochs > 0
        self.scheduler: Any = self._build_scheduler(self.optimizer) if scheduled else None
        aug = self.spec.spec.augment
        self.augment = DeviceAugment(settings.device, flip=aug.flip, translate=aug.translate,
                                     color_jitter=aug.color_jitter, seed=cfg.seed + 1,
                                     channels_last=settings.channels_last)
        self.order_generator = torch.Generator().manual_seed(cfg.seed)
        tasks = self.tasks

        n_params = sum(p.numel() for p in model.parameters())
        log(f"model: {self.spec.backbone.entry.name} backbone + {plural(len(self.tasks), 'head')} "
            f"({', '.join(t.name for t in self.tasks)}), {n_params / 1e6:.2f}M parameters; "
            f"weighting {self.spec.weighting.entry.name}; {settings.describe()}")
        if self.resume_state is None:  # said when the run starts; a resume repeats its saved spec's every key
            for line in self._idle_settings():
                log(f"warning: {line}")
        uniform = self.weighting.uniform_epochs
        if isinstance(uniform, int) and uniform >= cfg.epochs:  # a plugin's odd value only loses the warning
            name = self.spec.weighting.entry.name
            log(f"warning: weighting '{name}' weights every task 1 for its first {plural(uniform, 'epoch')}, so "
                f"this run of {plural(cfg.epochs, 'epoch')} trains exactly as weighting 'sum' would; train more "
                f"epochs (train.epochs > {uniform}) to see it adapt")
        self.background = self._start_background_compile() if settings.compile else None
        forward_losses = self._build_forward(compile=settings.compile and self.background is None)
        self.train_step = TrainStep(forward_losses, self.weighting, self.optimizer, self._step_context,
                                    num_tasks=len(tasks), device=settings.device,
                                    share_losses=self.dist.share_losses if self.dist.active else None,
                                    sum_gradients=lambda: self.dist.sum_gradients(self.trainable))
        self.step_fn: Callable[[Tensor, Tensor], None] = self.train_step
        if settings.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        done = time.perf_counter()
        self.timings["setup_seconds"] = done - self.started  # the first step's own share is the rest
        # where a slow start went, for the benchmark: the run folder and tasks, the data, the model (its imports,
        # and on a GPU the CUDA context), then the optimizer, the step and the compiler's wrappers
        self.timings["setup_parts"] = {"before_data": started - self.started, "data": data_done - started,
                                       "model": model_done - data_done, "step": done - model_done}

    def _warn_random_frozen(self, init_from: str | None, loaded_heads: set[str]) -> None:
        """A frozen part that no weights were loaded into keeps its random start, and never learns.

        Said once per part, for a new run (a resume has its weights): the backbone with no init_from and
        params that load nothing (neither `pretrained` nor `weights`; a plugin's backbone may load its own:
        hence a warning, not an error), so the heads learn from random features; a head that init_from did
        not load (no init_from, the checkpoint has no such head, or its shapes differ), so it predicts at
        random for good.
        """
        if self.resume_state is not None:
            return
        for why in self._random_frozen_parts(init_from, loaded_heads):
            self.run_folder.log(f"warning: {why}")

    def _random_frozen_parts(self, init_from: str | None, loaded_heads: set[str]) -> list[str]:
        """Why each frozen part that starts from random weights does, and what to do: the backbone, then heads."""
        frozen, parts = self.spec.spec.freeze, []
        params = self.spec.backbone.params
        if ("backbone" in frozen and not init_from and not getattr(params, "pretrained", False)
                and not getattr(params, "weights", None)):
            parts.append(f"the backbone is frozen but starts from random weights (no init_from, and backbone "
                         f"'{self.spec.backbone.entry.name}' loads none): the heads will learn from random features. "
                         "Give init_from: CKPT or backbone.pretrained: true, or leave the backbone out of freeze")
        for name in self.spec.task_names:
            if name in frozen and name not in loaded_heads:
                source = ("no init_from" if not init_from else
                          f"init_from {init_from} did not load it (see the lines above)")
                parts.append(f"head '{name}' is frozen but starts from random weights ({source}): it will predict "
                             f"at random for the whole run. Give an init_from whose '{name}' head fits this spec, or "
                             "leave it out of freeze")
        return parts

    def _idle_settings(self) -> list[str]:
        """Settings the spec gives that do nothing in this run, one line each (a typo'd intent, or a leftover)."""
        cfg, spec, settings = self.cfg, self.spec.spec, self.settings
        given, frozen, lines = cfg.model_fields_set, set(spec.freeze), []
        if "momentum" in given and cfg.optimizer != "sgd":
            lines.append(f"train.momentum ({cfg.momentum:g}) does nothing with optimizer {cfg.optimizer}: only "
                         "sgd uses it; remove it, or use optimizer: sgd")
        if cfg.backbone_lr is not None and "backbone" in frozen:
            lines.append("train.backbone_lr does nothing: the backbone is frozen (it does not train); remove one "
                         "of them")
        if isinstance(cfg.head_lr, dict):
            idle = [name for name in cfg.head_lr if name in frozen]
            if idle:
                lines.append(f"train.head_lr for {', '.join(idle)} does nothing: "
                             f"{'that head is' if len(idle) == 1 else 'those heads are'} frozen (in freeze)")
        elif cfg.head_lr is not None and all(name in frozen for name in self.spec.task_names):
            lines.append("train.head_lr does nothing: every head is frozen (in freeze); remove one of them")
        if cfg.compile_mode != "auto" and not settings.compile:
            lines.append(f"train.compile_mode ({cfg.compile_mode}) does nothing: the model is not compiled here "
                         f"(train.compile {str(cfg.compile).lower()} on {settings.device.type}); set train.compile: "
                         "true to compile, or leave compile_mode out")
        data = spec.data
        if data.device_memory_gb is not None and (settings.device.type != "cuda" or data.placement != "auto"):
            why = (f"data.placement is {data.placement}, not auto" if data.placement != "auto" else
                   f"on {settings.device.type} the images' placement is chosen by host memory")
            lines.append(f"data.device_memory_gb does nothing: it is the GPU budget for placement: auto, and {why}")
        if cfg.warmup_epochs >= cfg.epochs and cfg.warmup_epochs > 0:
            lines.append(f"train.warmup_epochs ({cfg.warmup_epochs:g}) is as long as the run "
                         f"({plural(cfg.epochs, 'epoch')}): the whole run warms up and train.scheduler "
                         f"({cfg.scheduler}) never starts; give fewer warmup epochs, or more epochs")
        if cfg.precision == "bf16" and settings.device.type == "cpu":
            lines.append("train.precision: bf16 on the CPU is usually slower than fp32 there (see "
                         "docs/guides/performance.md); precision: auto picks fp32 on a CPU")
        return lines

    def _note_dropped_images(self, train_images: int) -> None:
        """Say when the ragged last batch, dropped every epoch, is 10% or more of the training set."""
        batch, processes = self.batch_size, self.dist.world_size
        dropped = train_images % batch
        if dropped < 0.1 * train_images:
            return
        better = next((b for b in range(batch - processes, 0, -processes)
                       if train_images % b < 0.05 * train_images), None)
        left = train_images % better if better else 0
        hint = f" (train.batch_size {better} drops {left or 'none'})" if better else ""
        self.run_folder.log(f"train.batch_size = {batch} leaves {plural(dropped, 'training image')} of "
                            f"{train_images} ({dropped / train_images:.0%}) out of every epoch (the last, partial "
                            f"batch is dropped); a batch size that divides {train_images} better, or a smaller one, "
                            f"trains on them{hint}")

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
        if compile:
            fresh_compiler()
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
        """Keep the recorded step (`cuda_graphs: step`, or auto's choice on CUDA) only where the whole step can be
        recorded; else say why and fall back to the graphs of `cuda_graphs: auto` without it."""
        settings, cfg = self.settings, self.cfg
        if settings.graphs == "step":
            blockers = capture_blockers(settings.device, self.weighting, processes=self.dist.world_size,
                                        on_nonfinite=cfg.on_nonfinite, placement=self.source.placement)
            if blockers:
                self.settings = settings = self._resolve_settings("auto", whole_step=False)
                what = ("train.cuda_graphs: step is not possible here" if cfg.cuda_graphs == "step" else
                        "the whole step is not recorded as one CUDA graph here")
                self.run_folder.log(f"{what} ({'; '.join(blockers)}); running {settings.describe()}")
        return settings

    def _build_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        """The learning-rate schedule, stepped once per update (`train.scheduler`, after `train.warmup_epochs`).

        Without warmup, cosine is torch's CosineAnnealingLR, as before (runs and resumes of earlier runs repeat).
        With warmup, one LambdaLR gives each step's factor of the lr from the step count alone: linear from
        1/W to 1 over the W warmup steps, then 1 (none) or a cosine to 0 over the remaining steps. Its state
        is that count, so a resumed run continues the schedule exactly.
        """
        total = self.steps_per_epoch * self.cfg.epochs
        warmup = min(total, round(self.cfg.warmup_epochs * self.steps_per_epoch))
        if warmup == 0:
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, _WarmupFactor(warmup, total, self.cfg.scheduler))

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

    def _note_recorded_step(self) -> None:
        """After the first step: say that the step was recorded, and how closely its replay matched an eager step.

        The check's tolerance (`capture.REPLAY_COSINE`) must leave room for bf16's rounding; the log shows how much.
        """
        step = self.step_fn
        if isinstance(step, CapturedStep) and step.failed is None and step.agreement is not None:
            cosine, size = step.agreement
            self.run_folder.log(f"the training step is recorded as one CUDA graph; its first replay matched an eager "
                                f"step (update cosine {cosine:.5f}, size ratio {size:.5f})")

    def _close_recorded_step(self) -> None:
        """Free the recorded step's graph memory now that the run is over, not when the collector finds the run."""
        step = getattr(self, "step_fn", None)
        if isinstance(step, CapturedStep):
            step.close()

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


@dataclasses.dataclass(frozen=True)
class _WarmupFactor:
    """The lr factor at step `step` (from 0): a linear warmup over `warmup` steps, then `scheduler` (none: 1,
    cosine: from 1 to 0 over the `total - warmup` remaining steps). A function of the step alone (LambdaLR
    saves its plain fields, rebuilt from the spec on resume)."""

    warmup: int
    total: int
    scheduler: str

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.scheduler != "cosine" or self.total <= self.warmup:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(step - self.warmup, self.total - self.warmup)
                                     / (self.total - self.warmup)))
