"""Augmentation and normalisation on the device, a whole batch at a time.

Batches are index gathers from the decoded uint8 tensor; this module turns
them into normalised float images with random flips, shifts and colour jitter
drawn from one seeded generator on the same device, so a step needs neither
the CPU nor a host-device copy, and a run is reproducible under its seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Share:
    """Which rows of the whole batch one call augments: `count` rows from `start`, of `total`.

    In a distributed run each process holds `count` rows of a batch of
    `total`; every random number is drawn for all `total` rows and this
    share's slice is kept, so a sample gets the same augmentation whatever the
    number of processes.
    """

    start: int
    count: int
    total: int

    def draw(self, draw_all: Callable[[int], Tensor]) -> Tensor:
        """`draw_all(total)` (random numbers for the whole batch, first dimension), this share's rows."""
        drawn = draw_all(self.total)
        return drawn if self.count == self.total else drawn[self.start:self.start + self.count]


class DeviceAugment:
    """uint8 (N, 3, S, S) -> normalised float, augmented when training."""

    def __init__(
        self,
        device: torch.device,
        *,
        flip: bool = True,
        translate: float = 0.0,
        color_jitter: float = 0.0,
        seed: int = 0,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        channels_last: bool = False,
    ):
        self.flip, self.translate, self.color_jitter = flip, translate, color_jitter
        self.channels_last = channels_last
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
        # x/255 then (x - mean)/std folded into one multiply-add
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -torch.tensor(mean, device=device).view(1, 3, 1, 1) / std_t
        # luma weights for saturation jitter, on the device once (a tensor built per step is a host-device copy)
        self.gray_weights = torch.tensor([0.299, 0.587, 0.114], device=device).view(1, 3, 1, 1)

    def normalize(self, images: Tensor) -> Tensor:
        out = torch.addcmul(self.shift, images.float(), self.scale)
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out

    def __call__(self, images: Tensor, train: bool = True, share: tuple[int, int] | None = None) -> Tensor:
        """`share` = (first row, rows in the whole batch) when `images` are one process's rows of a
        larger batch (see `Share`)."""
        if train:
            images = self.augment(images, share)
        return self.normalize(images)

    def augment(self, images: Tensor, share: tuple[int, int] | None = None) -> Tensor:
        """Random flip, shift and colour jitter; stays uint8 when only geometry changes."""
        n = images.shape[0]
        rows = Share(share[0], n, share[1]) if share else Share(0, n, n)
        if self.flip:
            flipped = self._uniform(rows, images.device) < 0.5
            images = torch.where(flipped.view(n, 1, 1, 1), images.flip(3), images)
        if self.translate > 0:
            images = self._shift(images, rows)
        if self.color_jitter > 0:
            images = self._jitter(images.float(), rows).round().clamp(0, 255).to(torch.uint8)
        return images

    def _uniform(self, rows: Share, device: torch.device) -> Tensor:
        return rows.draw(lambda total: torch.rand(total, device=device, generator=self.generator))

    def _shift(self, images: Tensor, rows: Share) -> Tensor:
        """Per-sample shift of up to `translate` of the size; edges repeat (no padded copy)."""
        n, channels, height, width = images.shape
        pad_y, pad_x = max(1, round(self.translate * height)), max(1, round(self.translate * width))
        device = images.device

        def offsets(pad: int) -> Tensor:
            return rows.draw(lambda total: torch.randint(-pad, pad + 1, (total, 1), device=device,
                                                         generator=self.generator))

        off_y, off_x = offsets(pad_y), offsets(pad_x)
        y = (off_y + torch.arange(height, device=device)).clamp(0, height - 1).view(n, 1, height, 1)
        x = (off_x + torch.arange(width, device=device)).clamp(0, width - 1).view(n, 1, 1, width)
        batch = torch.arange(n, device=device).view(n, 1, 1, 1)
        chan = torch.arange(channels, device=device).view(1, channels, 1, 1)
        return images[batch, chan, y, x]

    def _jitter(self, images: Tensor, rows: Share) -> Tensor:
        """Brightness, contrast and saturation, each scaled by a factor in [1 - j, 1 + j]."""
        n = images.shape[0]
        device = images.device

        def factor() -> Tensor:
            return (1 + self.color_jitter * (2 * self._uniform(rows, device) - 1)).view(n, 1, 1, 1)

        images = images * factor()
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = (images - mean) * factor() + mean
        gray = (images * self.gray_weights).sum(1, keepdim=True)
        return (images - gray) * factor() + gray
