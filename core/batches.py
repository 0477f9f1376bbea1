"""Where the decoded images live during training, and how batches reach the device.

Three placements, chosen by size (`data.placement: auto`):

- device: the whole uint8 tensor on the training device; a batch is an index
  gather there, with no host work and no copy per step (the fast path);
- host: left in host memory as decoded, not pinned; a batch is gathered on
  the host straight into one of a few reusable pinned buffers and copied
  asynchronously from there (for data that fits in RAM but not in the device
  budget). Pinning the whole array would not help: a gather from pinned
  memory is a new, unpinned tensor, and each process would hold a pinned copy
  of up to half the RAM;
- stream: left in the memory-mapped cache file and read by DataLoader workers,
  which gather and pin batches ahead of the step (for data larger than memory).

Every placement yields the same (uint8 images on the device, indices on the
device) pairs for the same order, so results do not depend on placement.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

Placement = Literal["device", "host", "stream"]


def host_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume plenty
        return 1 << 40


def device_memory_bytes(device: torch.device) -> int:
    """Memory free on a GPU now (what other processes, such as the background compiler, hold is not);
    the host's RAM for any other device.

    Free includes what this process's caching allocator holds but no tensor uses: after an earlier run
    in the process (a sweep, a notebook) the driver counts that memory as taken, though this run gets it.
    That run's tensors may still be held by reference cycles the collector has not reached: collect first
    (once per run, so its cost does not matter).
    """
    if device.type == "cuda":
        gc.collect()
        cached_unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return torch.cuda.mem_get_info(device)[0] + max(0, cached_unused)
    return host_memory_bytes()


def placement_budgets(device: torch.device, device_budget_gb: float | None = None,
                      host_budget_gb: float | None = None) -> tuple[float, float]:
    """The bytes the decoded images may take on `device` and in host memory: a set budget as set.

    Default budgets: 40% of the GPU's free memory when the data is placed (the
    model, activations and the optimizer need the rest; memory other processes
    hold at that moment is not counted, but the background compiler starts
    later), half of the host's RAM.
    """
    device_budget = device_budget_gb * 2**30 if device_budget_gb is not None else 0.4 * device_memory_bytes(device)
    host_budget = host_budget_gb * 2**30 if host_budget_gb is not None else 0.5 * host_memory_bytes()
    return device_budget, host_budget


def choose_placement(nbytes: int, device: torch.device, requested: str = "auto",
                     device_budget_gb: float | None = None, host_budget_gb: float | None = None, *,
                     least: Callable[[Sequence[float]], Sequence[float]] | None = None) -> Placement:
    """`requested` if not auto; else device when it fits the device budget, then host, then stream.

    The budgets are `placement_budgets`'. Under torchrun each rank measures its
    own GPU and host, so ranks could place differently: only speed would
    differ, but runs would not repeat and the logs (rank 0's) would not tell.
    `least` (`Distributed.least`: each budget at its smallest over the ranks)
    makes every rank decide from the tightest budget, so all place alike. It is
    called on every rank or none, since `requested` comes from the same spec.
    """
    if requested != "auto":
        return requested  # type: ignore[return-value]
    budgets = placement_budgets(device, device_budget_gb, host_budget_gb)
    device_budget, host_budget = least(budgets) if least is not None else budgets
    if device.type != "cuda":
        # On the CPU "device" and "host" are the same memory; the memory map pages in on demand.
        return "device" if nbytes <= host_budget else "stream"
    if nbytes <= device_budget:
        return "device"
    return "host" if nbytes <= host_budget else "stream"


def placement_words(placement: str, cached: bool = True) -> str:
    """The data line's words for a placement (`images on device`, ...), as a reader of train.log would say it."""
    if placement == "host":
        return "images in host memory (copied to the device a batch at a time)"
    if placement == "stream":
        return ("images streamed from the cache file by DataLoader workers" if cached else
                "images streamed from a memory map by DataLoader workers")
    return f"images on {placement}"


class _GatherBatches(TorchDataset):
    """Each item is a whole batch: the worker gathers its rows from the memory map."""

    def __init__(self, images: Tensor, batches: list[Tensor]):
        self.images, self.batches = images, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        index = self.batches[i]
        return self.images[index], index


class _PinnedBuffers:
    """A few pinned host buffers, used in turn to gather batches into and copy them to the GPU from.

    A buffer's copy is asynchronous, so before a buffer is written again the
    host waits for the event recorded after its last copy: a copy `count`
    batches old, not the current step's. Each buffer keeps one event,
    recorded again after each of its copies (not a new event per batch).
    """

    count = 3

    def __init__(self, images: Tensor, index: Tensor, batch_size: int):
        self.images = [torch.empty((batch_size, *images.shape[1:]), dtype=images.dtype).pin_memory()
                       for _ in range(self.count)]
        self.index = [torch.empty(batch_size, dtype=index.dtype).pin_memory() for _ in range(self.count)]
        self.copied = [torch.cuda.Event() for _ in range(self.count)]
        self.recorded = [False] * self.count  # a buffer not yet copied from has nothing to wait for
        self.turn = 0

    def to_device(self, images: Tensor, index: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
        """`images[index]` and `index` on `device`, by way of the next buffer."""
        turn, n = self.turn, index.numel()
        self.turn = (turn + 1) % self.count
        if self.recorded[turn]:
            self.copied[turn].synchronize()  # the buffer's previous copy has finished
        image_buffer, index_buffer = self.images[turn][:n], self.index[turn][:n]
        torch.index_select(images, 0, index, out=image_buffer)
        index_buffer.copy_(index)
        on_device = image_buffer.to(device, non_blocking=True), index_buffer.to(device, non_blocking=True)
        self.copied[turn].record(torch.cuda.current_stream(device))  # the stream the copies went to
        self.recorded[turn] = True
        return on_device


class BatchSource:
    """Yields (uint8 images, index) on the device for a given order of sample indices."""

    def __init__(self, images: Tensor, device: torch.device, placement: Placement, workers: int = 4):
        self.device, self.placement, self.workers = device, placement, workers
        self.images = images.to(device) if placement == "device" else images
        #: pinned buffers by batch size, kept for the whole run: training and evaluation each need one set,
        #: and pinned memory is slow to allocate (torch's pinned cache would also round new sets up)
        self.pinned: dict[int, _PinnedBuffers] = {}

    def batches(self, order: Tensor, batch_size: int, *, drop_last: bool) -> Iterator[tuple[Tensor, Tensor]]:
        """Consecutive slices of `order` (CPU indices); a ragged tail is dropped or kept."""
        stop = (order.numel() // batch_size) * batch_size if drop_last else order.numel()
        if self.placement == "device":
            order = order.to(self.device, non_blocking=True)
            for start in range(0, stop, batch_size):
                index = order[start:min(start + batch_size, stop)]
                yield self.images[index], index
            return
        slices = [order[start:min(start + batch_size, stop)] for start in range(0, stop, batch_size)]
        if self.placement == "host":
            if self.device.type == "cuda":
                if batch_size not in self.pinned:
                    self.pinned[batch_size] = _PinnedBuffers(self.images, order, batch_size)
                buffers = self.pinned[batch_size]
                for index in slices:
                    yield buffers.to_device(self.images, index, self.device)
            else:
                for index in slices:
                    yield self.images[index], index
            return
        loader = DataLoader(_GatherBatches(self.images, slices), batch_size=None, shuffle=False,
                            num_workers=self.workers, pin_memory=self.device.type == "cuda",
                            prefetch_factor=4 if self.workers else None)
        for images, index in loader:
            yield self._to_device(images, index)

    def _to_device(self, images: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        if self.device.type == "cuda" and not images.is_pinned():
            images = images.pin_memory()
        return images.to(self.device, non_blocking=True), index.to(self.device, non_blocking=True)
