"""Choosing the device, the precision and the fast-path switches for a run.

"auto" means the fastest choice known to be correct on that device: bf16
autocast, channels_last and torch.compile on CUDA; plain fp32 elsewhere (bf16
on CPU is slower than fp32 for these convolutions, and compile's start-up cost
does not pay for a CPU demo).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from hydranet.core.errors import HydranetError


def pick_device(name: str = "auto") -> torch.device:
    """cuda, then mps, then cpu for "auto"; otherwise the named device, checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise HydranetError(f"train.device: '{name}' is not a device ({error}); use auto, cpu, cuda, cuda:1 or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HydranetError("train.device: cuda was asked for but this torch sees no CUDA GPU; use train.device=auto or cpu")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise HydranetError("train.device: mps was asked for but is not available here; use train.device=auto or cpu")
    return device


@dataclass(frozen=True)
class RunSettings:
    """The resolved fast-path switches of one run."""

    device: torch.device
    bf16: bool
    compile: bool
    channels_last: bool
    compile_mode: str = "default"

    @property
    def cuda_graphs(self) -> bool:
        return self.compile and self.compile_mode == "reduce-overhead"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def describe(self) -> str:
        return (f"device {self.device}, {'bf16 autocast' if self.bf16 else 'fp32'}, "
                f"compile {self.compile_mode if self.compile else 'off'}, channels_last {'on' if self.channels_last else 'off'}")


def resolve_settings(device: str, precision: str, compile: bool | str, channels_last: bool | str,
                     compile_mode: str = "auto") -> RunSettings:
    dev = pick_device(device)
    cuda = dev.type == "cuda"
    if precision == "auto":
        bf16 = cuda and torch.cuda.is_bf16_supported()
    else:
        bf16 = precision == "bf16"
    return RunSettings(
        device=dev,
        bf16=bf16,
        compile=cuda if compile == "auto" else bool(compile),
        channels_last=cuda if channels_last == "auto" else bool(channels_last),
        compile_mode=("reduce-overhead" if cuda else "default") if compile_mode == "auto" else compile_mode,
    )
