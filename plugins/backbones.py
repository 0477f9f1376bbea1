"""Built-in backbones: torchvision classifiers with their classifier removed, and a tiny CNN.

Every backbone maps images (N, 3, H, W) to pooled features (N, out_features);
the heads sit on those features, so a torchvision model's own classifier is
replaced by `nn.Identity` and its global-pooled vector is what comes out.

Weights never download. Training machines are often offline, and a silent
download in the middle of building a model hides where weights came from, so
`pretrained: true` reads torchvision's file from the local torch hub cache
(where `torch.hub` would have put it) and, when it is absent, says exactly
which file to fetch and where to put it.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from hydranet.core.errors import HydranetError
from hydranet.core.hookspecs import hookimpl
from hydranet.core.interfaces import Backbone
from hydranet.core.paths import existing_file

#: How many missing / unexpected keys an error message lists before "...".
KEYS_SHOWN = 5


# ---------------------------------------------------------------- torchvision


@dataclass(frozen=True)
class TorchvisionModel:
    """How to turn one torchvision classifier into a backbone: which attribute is its classifier.

    The classifier attribute is all that differs between the models we wrap:
    it is what gets replaced by `nn.Identity`, and its keys are the ones a
    weights file may carry but the backbone no longer has.
    """

    name: str
    classifier: str

    def build(self) -> nn.Module:
        """The torchvision model, randomly initialised (torchvision is never asked for weights)."""
        import torchvision  # here, not at the top: it takes ~1.5 s to import, which every command would pay

        return torchvision.models.get_model(self.name, weights=None)

    def default_weights_url(self) -> str:
        """Where torchvision's DEFAULT ImageNet weights for this model are published."""
        import torchvision

        return torchvision.models.get_model_weights(self.name).DEFAULT.url

    def hub_cache_path(self) -> Path:
        """Where `torch.hub` keeps that file once downloaded: the only place `pretrained` looks."""
        return Path(torch.hub.get_dir()) / "checkpoints" / self.default_weights_url().rsplit("/", 1)[-1]


TORCHVISION_MODELS: dict[str, TorchvisionModel] = {
    model.name: model
    for model in (
        TorchvisionModel("resnet18", classifier="fc"),
        TorchvisionModel("resnet34", classifier="fc"),
        TorchvisionModel("resnet50", classifier="fc"),
        TorchvisionModel("mobilenet_v3_small", classifier="classifier"),
        TorchvisionModel("efficientnet_b0", classifier="classifier"),
    )
}


class TorchvisionParams(BaseModel):
    """Where a torchvision backbone's initial weights come from: random, torchvision's, or a file."""

    model_config = ConfigDict(extra="forbid")

    pretrained: bool = Field(
        False,
        description="Start from torchvision's DEFAULT ImageNet weights, read from the local torch hub cache "
        "($TORCH_HOME/hub/checkpoints); nothing is downloaded.",
    )
    weights: str | None = Field(
        None,
        description="Path of a state dict (.pth) to start from; classifier keys (fc.*, classifier.*) are ignored.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> TorchvisionParams:
        if self.pretrained and self.weights is not None:
            raise ValueError("set either `pretrained: true` or `weights: FILE`, not both")
        return self


class TorchvisionBackbone(Backbone):
    """A torchvision classifier whose classifier is `nn.Identity`, so it returns pooled features."""

    def __init__(self, model: TorchvisionModel):
        super().__init__()
        net = model.build()
        self.out_features = _in_features(getattr(net, model.classifier))
        setattr(net, model.classifier, nn.Identity())
        self.net = net

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


def _in_features(classifier: nn.Module) -> int:
    """Width of the features a classifier reads: that of its first Linear layer.

    Read from the model rather than written in the table, so the table cannot
    disagree with torchvision.
    """
    for module in classifier.modules():
        if isinstance(module, nn.Linear):
            return module.in_features
    raise TypeError(f"no nn.Linear in classifier {type(classifier).__name__}")


def torchvision_factory(model: TorchvisionModel) -> Callable[[TorchvisionParams], TorchvisionBackbone]:
    """The registered factory for one table entry: build, then load the chosen weights."""

    def build(params: TorchvisionParams) -> TorchvisionBackbone:
        weights = chosen_weights(model, params)  # before building: a missing file fails at once
        backbone = TorchvisionBackbone(model)
        if weights is not None:
            state, source = weights
            load_weights(backbone.net, state, source, ignore=(f"{model.classifier}.",))
            backbone.starting_weights = source  # the run logs it: where a trained model's weights began
        return backbone

    build.__doc__ = f"torchvision {model.name} without its classifier."
    return build


def chosen_weights(model: TorchvisionModel, params: TorchvisionParams) -> tuple[Mapping[str, Tensor], str] | None:
    """The state dict that `params` asks for, and words naming where it came from; None = random init."""
    if params.pretrained:
        path = model.hub_cache_path()
        if not path.is_file():
            raise HydranetError(missing_pretrained_message(model, path))
        source = f"torchvision's pretrained {model.name} weights ({path})"
    elif params.weights is not None:
        path = existing_file(params.weights, "backbone weights file", "set `backbone.weights` to an existing state "
                                                                        "dict (.pth), or remove it to start from "
                                                                        "random weights")
        source = f"backbone weights file {path}"
    else:
        return None
    return read_state_dict(path, source), source


def missing_pretrained_message(model: TorchvisionModel, path: Path) -> str:
    """Why `pretrained: true` failed and the three ways out, with the exact URL and path."""
    url = model.default_weights_url()
    return (
        f"backbone '{model.name}': pretrained weights not found at {path} (hydranet never downloads). Either\n"
        f"  - download {url} on a machine with network access and copy it to {path}\n"
        f"    (or point TORCH_HOME at a folder whose hub/checkpoints/ holds it), or\n"
        f"  - set `backbone.weights: /path/file.pth` to a state dict you already have, or\n"
        f"  - set `backbone.pretrained: false` to start from random weights."
    )


def read_state_dict(path: Path, source: str) -> Mapping[str, Tensor]:
    """Read a state dict safely (`weights_only`: a weights file must not run code)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated download, pickle with code, not a torch file...
        if isinstance(error, pickle.UnpicklingError) and "Unsupported global" in str(error):  # a class, not garbage
            raise HydranetError(f"{source} holds pickled Python objects, not only tensors (a whole model saved "
                                "with torch.save(model)?), and hydranet reads weights without running a file's "
                                "code; save its state dict instead: torch.save(model.state_dict(), path)") from None
        first = (str(error).splitlines() or [type(error).__name__])[0].rstrip(". ")
        raise HydranetError(f"could not read {source} ({first}); it may be truncated or not a torch file: fetch "
                            "or save it again") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise HydranetError(f"{source} does not hold a state dict (tensors by name) but {_what_it_holds(state)}")
    return state


def _what_it_holds(state: object) -> str:
    """What a weights file that is no state dict holds, and what to do: a hydranet checkpoint is init_from's; a
    mapping with the state dict under a key (`model`, `state_dict`) says which key to save."""
    if not isinstance(state, Mapping):
        return f"a {type(state).__name__}; save one with torch.save(model.state_dict(), path)"
    if state.get("format") == "hydranet-checkpoint":
        return ("a hydranet checkpoint: to start from a run's weights, give it as init_from (which loads the "
                "backbone and the heads that fit) instead of backbone.weights")
    nested = [key for key, value in state.items() if isinstance(value, Mapping) and value
              and all(isinstance(v, Tensor) for v in value.values())]
    keys = ", ".join(repr(key) for key in list(state)[:6]) + (", ..." if len(state) > 6 else "")
    hint = (f"; its {nested[0]!r} looks like the state dict: save that, torch.save(saved[{nested[0]!r}], path)"
            if nested else "; save one with torch.save(model.state_dict(), path)")
    return f"a mapping of {keys}{hint}"


def load_weights(module: nn.Module, state: Mapping[str, Tensor], source: str, ignore: tuple[str, ...] = ()) -> None:
    """Load `state` into `module`, requiring every key to match except those under `ignore`.

    A partial load would silently train from half-random weights, so any
    missing or unexpected key is an error; keys under `ignore` (the removed
    classifier) are expected in files saved from a full classifier.
    """
    kept = {k: v for k, v in state.items() if not k.startswith(ignore)}
    try:
        result = module.load_state_dict(kept, strict=False)
    except RuntimeError as error:  # shape mismatches raise even when strict=False
        raise HydranetError(f"{source} does not fit this backbone: {error}") from None
    if result.missing_keys or result.unexpected_keys:
        raise HydranetError(f"{source} does not fit this backbone: "
                            f"{_key_summary('missing', result.missing_keys)}"
                            f"{_key_summary('unexpected', result.unexpected_keys)}"
                            f"{_prefix_hint(kept, result.missing_keys)}"
                            "is it a state dict of the same architecture?")


def _key_summary(label: str, keys: list[str]) -> str:
    if not keys:
        return ""
    more = f", ... ({len(keys)} in all)" if len(keys) > KEYS_SHOWN else ""
    return f"{label} keys {', '.join(keys[:KEYS_SHOWN])}{more}; "


def _prefix_hint(given: Mapping[str, Any], missing: list[str]) -> str:
    """Point out a wrapper prefix (`module.`, `backbone.net.`) when that is all that differs."""
    if not missing:
        return ""
    for key in given:
        if key.endswith("." + missing[0]):
            return f"the file's keys look prefixed with '{key[: -len(missing[0])]}' (strip it before saving); "
    return ""


# ---------------------------------------------------------------- tiny CNN


class TinyParams(BaseModel):
    """The tiny CNN's knobs: its width and its normalisation."""

    model_config = ConfigDict(extra="forbid")

    width: int = Field(32, ge=4, description="Channels of the first stage; features = 4 x width.")
    norm: Literal["batch", "group"] = Field(
        "batch", description="batch: BatchNorm (statistics of each process's batch); group: GroupNorm, which "
                             "depends on no other image, so several processes train exactly as one.")


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1, norm: str = "batch") -> nn.Sequential:
    """3x3 convolution, normalisation, ReLU (no conv bias: the normalisation makes it redundant)."""
    layer = nn.BatchNorm2d(out_channels) if norm == "batch" else nn.GroupNorm(min(8, out_channels), out_channels)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        layer,
        nn.ReLU(inplace=True),
    )


class TinyCNN(Backbone):
    """A small CNN that trains in seconds on a laptop CPU at 32-64 px: for demos and tests.

    A stem at full resolution, then two stride-2 stages that double the width
    (w -> 2w -> 4w), then global average pooling: the pooling makes it accept
    any image size, and the features are 4w wide.
    """

    def __init__(self, width: int = 32, norm: str = "batch"):
        super().__init__()
        self.out_features = 4 * width
        self.features = nn.Sequential(
            conv_bn_relu(3, width, norm=norm),
            conv_bn_relu(width, 2 * width, stride=2, norm=norm),
            conv_bn_relu(2 * width, 2 * width, norm=norm),
            conv_bn_relu(2 * width, 4 * width, stride=2, norm=norm),
            conv_bn_relu(4 * width, 4 * width, norm=norm),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.features(images)


def build_tiny(params: TinyParams) -> TinyCNN:
    return TinyCNN(params.width, params.norm)


# ---------------------------------------------------------------- registration


@hookimpl
def register_backbones(register: Callable[..., None]) -> None:
    for model in TORCHVISION_MODELS.values():
        register(model.name, torchvision_factory(model), params=TorchvisionParams,
                 description=f"torchvision {model.name}, classifier removed (pooled features; "
                             "pretrained: true reads the local torch hub cache)")
    register("tiny", build_tiny, params=TinyParams,
             description="small 5-layer CNN for CPU demos and tests (4 x width features)")
