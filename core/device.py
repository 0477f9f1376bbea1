"""Choosing the device, the precision and the fast-path switches for a run.

"auto" means the fastest choice known to be correct on that device: bf16
autocast, channels_last and torch.compile on CUDA; plain fp32 elsewhere (bf16
on CPU is slower than fp32 for these convolutions, and compile's start-up cost
does not pay for a CPU demo).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch

from hydranet.core.errors import HydranetError, InputError, did_you_mean, shown
from hydranet.core.wording import plural


#: what a device may be named, for the messages: `cuda:N` as the help says it (N picks one of several GPUs)
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
#: the names among them that a misspelt device is matched against (`cuda:N` is a form, not a name to suggest)
DEVICE_NAMES = tuple(choice for choice in DEVICE_CHOICES if not choice.endswith(":N"))


def device_name_problem(name: str) -> str | None:
    """Why `name` is not a device torch can parse, or None; 'gpu' is told the names torch uses for GPUs.

    Whether the device is present is another question, asked when a run starts.
    """
    if name == "auto":
        return None
    try:
        torch.device(name)
        return None
    except RuntimeError:
        pass
    kind, _, index = name.partition(":")
    if kind.strip().lower() == "gpu":
        return (f"'{name}' is not a device; an NVIDIA GPU is 'cuda{':' + index if index else ''}' "
                "(the N of 'cuda:N' picks one of several), an Apple GPU 'mps'")
    return f"{shown(name)} is not a device;{did_you_mean(name, DEVICE_NAMES)} devices: {', '.join(DEVICE_CHOICES)}"


def pick_device(name: str = "auto", option: str = "train.device") -> torch.device:
    """cuda, then mps, then cpu for "auto"; otherwise the named device, checked.

    `option` is what the user set, for the messages: the spec key (the
    default), a command-line option such as `--device`, or a function's
    argument such as `device`. A device refused for an option or argument
    raises `InputError`, the Python API's error for an argument it cannot use.
    """
    use = f"{option} " if option.startswith("-") else f"{option}="
    # a function's argument or a command-line option is the caller's input (InputError, a HydranetError);
    # a spec key keeps the plain HydranetError the spec's run reports
    spec_key = "." in option and not option.startswith("-")  # train.device
    refused = HydranetError if spec_key else InputError
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    problem = device_name_problem(name)
    if problem:
        raise refused(f"{option}: {problem}")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise refused(f"{option}: cuda was asked for but this torch sees no CUDA GPU; use {use}auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise refused(f"{option}: {device} was asked for but this machine has {plural(count, 'CUDA GPU')} "
                      f"(cuda:0 to cuda:{count - 1}); use {use}cuda for the first, or one of those")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise refused(f"{option}: mps was asked for but is not available here; use {use}auto or cpu")
    return device


#: torch.compile modes that record CUDA graphs themselves (cudagraph trees), and their graph-free twins.
GRAPH_MODES = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}
GraphsChoice = Literal["off", "compiler", "step"]


@dataclass(frozen=True)
class RunSettings:
    """The resolved fast-path switches of one run.

    `graphs` says who records CUDA graphs: nobody ("off"), torch.compile's
    cudagraph trees around the model's forward and backward ("compiler"), or
    hydranet around the whole step, optimizer and bookkeeping included
    ("step", see `hydranet.core.capture`).
    """

    device: torch.device
    bf16: bool
    compile: bool
    channels_last: bool
    compile_mode: str = "default"
    graphs: GraphsChoice = "off"
    cudnn_benchmark: bool = False

    @property
    def cuda_graphs(self) -> bool:
        """True when torch.compile records CUDA graphs (each step must then be marked)."""
        return self.graphs == "compiler"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.bf16:
            # Autocast's cast-weight cache would keep tensors from outside a captured graph alive in it.
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                                  cache_enabled=self.graphs != "step")
        return contextlib.nullcontext()

    def describe(self) -> str:
        graphs = {"off": "", "compiler": "", "step": ", CUDA graph per step"}[self.graphs]
        return (f"device {self.device}, {'bf16 autocast' if self.bf16 else 'fp32'}, "
                f"compile {self.compile_mode if self.compile else 'off'}{graphs}, "
                f"channels_last {'on' if self.channels_last else 'off'}")


def resolve_settings(device: str, precision: str, compile: bool | str, channels_last: bool | str,
                     compile_mode: str = "auto", cuda_graphs: str = "auto",
                     cudnn_benchmark: bool = False, deterministic: bool = False,
                     whole_step: bool = True) -> RunSettings:
    """The switches a spec's `train` section asks for, with every "auto" decided for the device.

    `whole_step=False` keeps `cuda_graphs: auto` from choosing the recorded
    step: for a run that cannot record it (its weighting, several processes,
    a background compile), auto then means the compiler's graphs.
    """
    dev = pick_device(device)
    cuda = dev.type == "cuda"
    if precision == "auto":
        bf16 = cuda and native_bf16(dev)
    else:
        bf16 = precision == "bf16"
    compiling = cuda if compile == "auto" else bool(compile)
    mode, graphs = _graphs_and_mode(cuda, compiling, compile_mode, cuda_graphs, whole_step)
    return RunSettings(
        device=dev,
        bf16=bf16,
        compile=compiling,
        channels_last=cuda if channels_last == "auto" else bool(channels_last),
        compile_mode=mode,
        graphs=graphs,
        cudnn_benchmark=cuda and cudnn_benchmark and not deterministic,
    )


def on_device(device: torch.device) -> contextlib.AbstractContextManager:
    """Make `device` the current CUDA device while a run trains on it (`cuda:1` in one process); else nothing.

    Events, streams and CUDA graphs made without a device go to the current
    device, which is cuda:0 unless someone set it: a run on cuda:1 would
    record its pinned-copy events and its graphs on another GPU's stream (and
    open a context there). torchrun workers set theirs already.
    """
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def native_bf16(device: torch.device) -> bool:
    """Whether this CUDA GPU computes in bf16 natively (Ampere, compute capability 8.0, or later; any ROCm GPU).

    Not `torch.cuda.is_bf16_supported()`: by default it also says yes where
    bf16 is only emulated (slower than fp32, and cuDNN has no bf16
    convolutions there), and it asks about the current device, not this one.
    """
    return bool(torch.version.hip) or torch.cuda.get_device_properties(device).major >= 8


def _graphs_and_mode(cuda: bool, compiling: bool, compile_mode: str, cuda_graphs: str,
                     whole_step: bool = True) -> tuple[str, GraphsChoice]:
    """The torch.compile mode and the CUDA-graph owner, from the two spec fields that both touch graphs.

    On CUDA with both fields auto and the model compiled, the recorded step
    wins (uncompiled, auto records nothing, as before): on an H200 it
    trained resnet18 at 32 px in 0.084 s/epoch against 0.15 to 0.19 s with
    the compiler's graphs, to the same metrics, and started 9 s sooner
    (`docs/guides/performance.md`).
    """
    if cuda_graphs == "auto" and compile_mode == "auto" and cuda and compiling and whole_step:
        cuda_graphs = "step"
    if cuda_graphs == "step":
        # hydranet records the step itself; a compile mode that records graphs too would nest them
        return GRAPH_MODES.get(compile_mode, "default" if compile_mode == "auto" else compile_mode), "step"
    if compile_mode == "auto":
        compile_mode = "reduce-overhead" if cuda and cuda_graphs != "off" else "default"
    graphs_by_mode: GraphsChoice = "compiler" if compiling and compile_mode in GRAPH_MODES else "off"
    if cuda_graphs == "compiler" and graphs_by_mode != "compiler":
        raise HydranetError(f"train.cuda_graphs: compiler needs train.compile on and train.compile_mode "
                            f"reduce-overhead or max-autotune (got compile_mode {compile_mode}); "
                            "use cuda_graphs: auto, or step")
    if cuda_graphs == "off" and graphs_by_mode == "compiler":
        raise HydranetError(f"train.cuda_graphs: off contradicts train.compile_mode {compile_mode}, which records "
                            f"CUDA graphs; use compile_mode {GRAPH_MODES[compile_mode]} (the same without graphs)")
    return compile_mode, graphs_by_mode


def fused_if_supported(optimizer_class: type[torch.optim.Optimizer], groups: list[dict], **options) -> torch.optim.Optimizer:
    """The optimizer with its fused kernel where torch has one for the parameters' device, else the plain one.

    Fused kernels read and write each weight once per step instead of once per
    operation. That matters on CPUs too, where the optimizer is memory-bound:
    for resnet18 on 2 cores a fused AdamW step takes about a third of the
    plain one, and fused SGD with momentum about half. Which devices have
    which fused kernels changes between torch releases, so ask torch rather
    than keep a table. The constructor writes its defaults into the group
    dicts it is given, so each try gets copies.
    """
    try:
        return optimizer_class([dict(group) for group in groups], fused=True, **options)
    except RuntimeError:  # no fused kernel for this device or dtype in this torch
        return optimizer_class([dict(group) for group in groups], **options)
