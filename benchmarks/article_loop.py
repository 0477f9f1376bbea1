"""The article's training loop, rewritten from its description, as the speed baseline.

hydranet's speed claims are ratios against this loop, so it must behave as
the article's code does, faults included (see ../../shared/seed/): PIL opens
and resizes every image on every access in `__getitem__`; the DataLoader keeps
its defaults (no workers, no pinned memory); `forward` runs the backbone once
PER HEAD, so three backbone passes per step; fp32, no channels_last, no
compile; SGD with momentum 0.09; and `total_training_loss += loss` adds the
loss tensor itself, not its value, so every step's autograd node stays chained
to the running total until the epoch ends (backward has already freed the
saved activations, so what leaks is the graph's node chain, not whole
activations; it costs little time but is a bug we reproduce, not copy).

Only the backbone is shared with hydranet, built through hydranet's plugin
registry, so both loops run the very same backbone code and the measured
difference is the loop, not the network.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from torchvision import transforms
from tqdm import tqdm

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def list_images(root: str | Path) -> list[str]:
    """Every .jpg in `root`, sorted (the article globbed the UTKFace folder)."""
    return sorted(str(p) for p in Path(root).iterdir() if p.name.lower().endswith(".jpg"))


def split_paths(paths: Sequence[str], val_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """A seeded random train/validation split: the article trains on its train part only."""
    shuffled = list(paths)
    random.Random(seed).shuffle(shuffled)
    n_val = int(round(len(shuffled) * val_fraction))
    return shuffled[n_val:], shuffled[:n_val]


class ArticleUTKFace(TorchDataset):
    """Labels from the file name; the image decoded by PIL on every access, as the article does.

    Names that do not split into exactly four fields (the three real UTKFace
    files without a race) are dropped silently, as in the article.
    """

    def __init__(self, image_paths: Sequence[str], size: int):
        self.transform = transforms.Compose([
            transforms.Resize((size, size)),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])
        self.images: list[str] = []
        self.ages: list[int] = []
        self.genders: list[int] = []
        self.races: list[int] = []
        for path in image_paths:
            fields = os.path.basename(path).split("_")
            if len(fields) == 4:
                self.images.append(path)
                self.ages.append(int(fields[0]))
                self.genders.append(int(fields[1]))
                self.races.append(int(fields[2]))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.transform(Image.open(self.images[index]).convert("RGB"))
        return {"image": image, "age": self.ages[index], "gender": self.genders[index],
                "ethnicity": self.races[index]}


def build_backbone(name: str) -> nn.Module:
    """A hydranet-registered backbone (resnet18, tiny, ...) with default params: random weights."""
    from hydranet.core.plugins import default_components

    entry = default_components().backbones.get(name)
    return entry.factory(entry.validate_params({}))


def _head(features: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(features, features), nn.ReLU(), nn.Linear(features, outputs))


class ArticleHydraNet(nn.Module):
    """Three heads on one backbone, with the article's fault: the backbone runs once per head."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.net = backbone
        features = backbone.out_features
        self.fc1 = _head(features, 1)  # age
        self.fc2 = _head(features, 1)  # gender
        self.fc3 = _head(features, 5)  # ethnicity

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        age = self.fc1(self.net(x))
        gender = self.fc2(self.net(x))
        ethnicity = self.fc3(self.net(x))
        return age, gender, ethnicity


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer reads finished work and not just launches."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_article_loop(root: str | Path, size: int, batch_size: int, epochs: int, device: str | torch.device,
                     workers: int = 0, limit: int | None = None, *, backbone: str = "resnet18",
                     val_fraction: float = 0.1, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Train as the article does and time it.

    `limit` stops each epoch after that many steps and extrapolates the epoch
    time to the full epoch (reported as `extrapolated`): on a CPU the full
    article loop at 200 px source images is slow. Returns the per-epoch
    seconds, the images one full epoch trains on, and the seconds from the
    call to the end of the first optimizer step (listing, model build, worker
    start-up and the first batch's decoding).
    """
    started = time.perf_counter()
    device = torch.device(device)
    torch.manual_seed(seed)
    train_paths, _ = split_paths(list_images(root), val_fraction, seed)
    dataset = ArticleUTKFace(train_paths, size)
    loader = DataLoader(dataset, shuffle=True, batch_size=batch_size, num_workers=workers)
    model = ArticleHydraNet(build_backbone(backbone)).to(device=device)
    ethnicity_loss, gender_loss, age_loss, sig = nn.CrossEntropyLoss(), nn.BCELoss(), nn.L1Loss(), nn.Sigmoid()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.09)

    steps_per_epoch = len(loader)
    timed_steps = steps_per_epoch if limit is None else max(1, min(limit, steps_per_epoch))
    epoch_seconds: list[float] = []
    first_step_seconds: float | None = None
    for epoch in range(epochs):
        model.train()
        total_training_loss: Any = 0
        epoch_started = time.perf_counter()
        for step, data in enumerate(tqdm(loader, desc=f"article loop epoch {epoch + 1}/{epochs}",
                                         disable=not progress, leave=False)):
            inputs = data["image"].to(device=device)
            age_label = data["age"].to(device=device)
            gender_label = data["gender"].to(device=device)
            eth_label = data["ethnicity"].to(device=device)
            optimizer.zero_grad()
            age_output, gender_output, eth_output = model(inputs)
            loss = (ethnicity_loss(eth_output, eth_label)
                    + gender_loss(sig(gender_output), gender_label.unsqueeze(1).float())
                    + age_loss(age_output, age_label.unsqueeze(1).float()))  # L1 on the raw age, in years
            loss.backward()
            optimizer.step()
            total_training_loss += loss  # the article's fault: keeps the autograd chain (see module doc)
            if first_step_seconds is None:
                _sync(device)
                first_step_seconds = time.perf_counter() - started
            if step + 1 == timed_steps < steps_per_epoch:
                _sync(device)  # stop the clock before the early exit shuts the workers down
                elapsed = time.perf_counter() - epoch_started
                break
        else:
            _sync(device)
            elapsed = time.perf_counter() - epoch_started
        epoch_seconds.append(elapsed * steps_per_epoch / timed_steps)
        del total_training_loss
    return {
        "epoch_seconds": epoch_seconds,
        "images_per_epoch": len(dataset),
        "steps_per_epoch": steps_per_epoch,
        "timed_steps_per_epoch": timed_steps,
        "extrapolated": timed_steps < steps_per_epoch,
        "first_step_seconds": first_step_seconds if first_step_seconds is not None else math.nan,
        "dropped_names": len(train_paths) - len(dataset),
        "workers": workers,
    }
