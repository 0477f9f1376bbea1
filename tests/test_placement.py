"""The CUDA side of the placements, run on the CPU: pinning, transfers and events are stubbed."""

from __future__ import annotations

import pytest
import torch

from hydranet.core.batches import BatchSource, choose_placement

GIB = 2**30


def test_default_cuda_budget_is_a_share_of_free_memory(monkeypatch):
    """Memory another process holds (the background compiler, another run) is not counted as available."""

    class Properties:
        total_memory = 80 * GIB

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: Properties())
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * GIB, 80 * GIB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    cuda = torch.device("cuda")
    assert choose_placement(4 * GIB, cuda, host_budget_gb=100) == "device"  # 40% of the 10 GiB free
    assert choose_placement(5 * GIB, cuda, host_budget_gb=100) == "host"  # fits 40% of 80, not of 10
    assert choose_placement(5 * GIB, cuda, device_budget_gb=6, host_budget_gb=100) == "device"  # a set budget is as set
    assert choose_placement(200 * GIB, cuda, host_budget_gb=100) == "stream"


def test_memory_an_earlier_run_left_in_the_allocators_cache_counts_as_free(monkeypatch):
    """After a run in the same process (a sweep), torch's caching allocator holds memory no tensor uses; the
    driver reports it as taken, but this run gets it, so it must not push the images off the GPU."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * GIB, 80 * GIB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 9 * GIB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1 * GIB)
    assert choose_placement(4 * GIB, torch.device("cuda"), host_budget_gb=100) == "device"  # 40% of 2 + 8 GiB


@pytest.fixture
def fake_cuda(monkeypatch):
    """pin_memory marks a copy as pinned, a copy to cuda is a clone, events only log; everything goes to `log`."""
    log: list[tuple] = []
    pinned: set[int] = set()
    real_to, real_index_select = torch.Tensor.to, torch.index_select

    def storage(t: torch.Tensor) -> int:
        return t.untyped_storage().data_ptr()

    def pin_memory(self, *args, **kwargs):
        copy = self.clone()
        pinned.add(storage(copy))
        log.append(("pin", tuple(self.shape), storage(self)))
        return copy

    def to(self, *args, **kwargs):
        target = args[0] if args else kwargs.get("device")
        if isinstance(target, (str, torch.device)) and torch.device(target).type == "cuda":
            log.append(("copy", storage(self), storage(self) in pinned, bool(kwargs.get("non_blocking"))))
            return self.clone()
        return real_to(self, *args, **kwargs)

    def index_select(*args, out=None, **kwargs):
        if out is not None:
            log.append(("write", storage(out)))
        return real_index_select(*args, out=out, **kwargs) if out is not None else real_index_select(*args, **kwargs)

    class Event:
        count = 0

        def __init__(self, *args, **kwargs):
            self.id, Event.count = Event.count, Event.count + 1

        def record(self, stream=None):
            assert stream == ("stream", torch.device("cuda")), "recorded on the current device's stream"
            log.append(("record", self.id))

        def synchronize(self):
            log.append(("sync", self.id))

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda self, *a, **k: storage(self) in pinned)
    monkeypatch.setattr(torch.Tensor, "to", to)
    monkeypatch.setattr(torch, "index_select", index_select)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: ("stream", device))
    return log


def test_host_placement_gathers_into_reused_pinned_buffers(fake_cuda):
    images = torch.randint(0, 256, (100, 3, 8, 8), dtype=torch.uint8)
    order = torch.randperm(100)
    source = BatchSource(images, torch.device("cuda"), "host")
    got = list(source.batches(order, 6, drop_last=False))
    log = fake_cuda

    expected = [(images[order[i:i + 6]], order[i:i + 6]) for i in range(0, 100, 6)]
    assert len(got) == len(expected) == 17
    for (gi, gx), (ei, ex) in zip(got, expected):
        assert torch.equal(gi, ei) and torch.equal(gx, ex)

    pins = [entry for entry in log if entry[0] == "pin"]
    whole = images.untyped_storage().data_ptr()
    assert all(shape != tuple(images.shape) and ptr != whole for _, shape, ptr in pins), "the whole array was pinned"
    assert 0 < len(pins) <= 8, "pinned buffers are reused, not pinned per batch"
    copies = [entry for entry in log if entry[0] == "copy"]
    assert len(copies) == 2 * len(got)  # images and index, each batch
    assert all(is_pinned and non_blocking for _, _, is_pinned, non_blocking in copies)

    # A buffer is written again only after the event recorded after its last copy has been waited on.
    pending: dict[int, list[int]] = {}  # storage -> events recorded after copies from it, not yet waited on
    copied_since_record: list[int] = []
    synced: set[int] = set()
    writes = 0
    for entry in log:
        if entry[0] == "copy":
            copied_since_record.append(entry[1])
        elif entry[0] == "record":
            for ptr in copied_since_record:
                pending.setdefault(ptr, []).append(entry[1])
            copied_since_record = []
        elif entry[0] == "sync":
            synced.add(entry[1])
        elif entry[0] == "write":
            writes += 1
            assert all(event in synced for event in pending.get(entry[1], [])), "a buffer was overwritten mid-copy"
    assert writes == len(got)
    assert not copied_since_record  # every copy is followed by a recorded event
    syncs = [entry for entry in log if entry[0] == "sync"]
    assert 0 < len(syncs) < len(got)  # waits only on old copies, and not one per step


def test_host_placement_on_the_cpu_pins_nothing(fake_cuda):
    images = torch.randint(0, 256, (20, 3, 4, 4), dtype=torch.uint8)
    order = torch.randperm(20)
    got = list(BatchSource(images, torch.device("cpu"), "host").batches(order, 8, drop_last=True))
    assert [x.tolist() for _, x in got] == [order[:8].tolist(), order[8:16].tolist()]
    assert all(torch.equal(i, images[x]) for i, x in got)
    assert fake_cuda == []


def test_pinned_buffers_are_kept_across_epochs_and_made_once_per_batch_size(fake_cuda):
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    source = BatchSource(images, torch.device("cuda"), "host")
    for _ in range(3):  # three epochs of training at batch 8
        epoch = list(source.batches(torch.randperm(40), 8, drop_last=True))
        assert len(epoch) == 5
    pins_after_training = len([entry for entry in fake_cuda if entry[0] == "pin"])
    list(source.batches(torch.arange(40), 16, drop_last=False))  # evaluation at its own batch size
    list(source.batches(torch.arange(40), 16, drop_last=False))
    pins = len([entry for entry in fake_cuda if entry[0] == "pin"])
    assert pins_after_training == 6 and pins == 12  # 3 image and 3 index buffers per batch size, once each
