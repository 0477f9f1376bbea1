"""HydraNet: the backbone runs once per batch; every head reads the same features.

The article's model called the backbone once per head (three times the
compute); here `forward` computes features once and hands them to each head,
and returns outputs keyed by task name so nothing depends on head order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from hydranet.core.interfaces import Task


class HydraNet(nn.Module):
    """One shared backbone, one head per task, outputs by task name."""

    def __init__(self, backbone: nn.Module, heads: Mapping[str, nn.Module]):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(dict(heads))
        #: parts ("backbone" or task names) that stay in eval mode: frozen batch-norm statistics
        self.frozen: set[str] = set()

    def train(self, mode: bool = True) -> "HydraNet":
        super().train(mode)
        for name in self.frozen:
            (self.backbone if name == "backbone" else self.heads[name]).eval()
        return self

    @property
    def task_names(self) -> list[str]:
        return list(self.heads.keys())

    def features(self, images: Tensor) -> Tensor:
        """The shared representation, (N, F)."""
        return self.backbone(images)

    def heads_forward(self, features: Tensor) -> dict[str, Tensor]:
        """Every head on the same features (gradient-based weightings call this directly)."""
        return {name: head(features) for name, head in self.heads.items()}

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return self.heads_forward(self.features(images))

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.heads.parameters() if p.requires_grad]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """Parameters of the backbone's last module that has any (GradNorm's "last shared layer")."""
        last: list[nn.Parameter] = []
        for module in self.backbone.modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if own:
                last = own
        return last


def build_model(backbone: nn.Module, tasks: Sequence[Task]) -> HydraNet:
    """Compose a HydraNet from a backbone (with `out_features`) and the tasks' heads."""
    in_features = int(getattr(backbone, "out_features"))
    return HydraNet(backbone, {task.name: task.build_head(in_features) for task in tasks})
