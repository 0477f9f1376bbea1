"""A backbone plugin: torchvision's ShuffleNet V2 models as hydranet backbones.

A backbone maps images (N, 3, H, W) to flat features (N, out_features) and
says how wide they are; every head is built for that width. Wrapping a
torchvision classifier means replacing its classifier with `nn.Identity`, so
its pooled features come out. One hook call may register several names. Use
it in a spec: `backbone: {name: shufflenet_v2_x0_5}`.
"""

from __future__ import annotations

from typing import Any

import torchvision
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

import hydranet

MODELS = ("shufflenet_v2_x0_5", "shufflenet_v2_x1_0")


class ShuffleNetParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the pooled features.")


class ShuffleNet(hydranet.Backbone):
    """torchvision ShuffleNet V2 without its classifier: global-pooled features."""

    def __init__(self, model: str, params: ShuffleNetParams):
        super().__init__()
        net = torchvision.models.get_model(model, weights=None)  # random init: nothing is downloaded
        self.out_features = net.fc.in_features  # read from the model, so it cannot disagree with it
        net.fc = nn.Identity()
        self.net = net
        self.dropout = nn.Dropout(params.dropout)

    def forward(self, images: Tensor) -> Tensor:
        return self.dropout(self.net(images))


def factory(model: str):
    """The registered factory for one model name: `factory(params) -> Backbone`."""

    def build(params: ShuffleNetParams) -> ShuffleNet:
        return ShuffleNet(model, params)

    return build


@hydranet.hookimpl
def register_backbones(register: Any) -> None:
    for model in MODELS:
        register(model, factory(model), params=ShuffleNetParams,
                 description=f"torchvision {model}, classifier removed (random init)")
