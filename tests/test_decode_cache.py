"""Decoding in worker processes: the same pixels and failures as inline, without the pixels crossing a pipe.

The pool's workers write their rows straight into the destination (the cache
file's memory map, or shared memory when there is no cache) and send back
only the failures. These tests check what that must preserve: byte-identical
pixels, the same failures in the same order, zero rows for unreadable files,
a custom opener, the disk reservation; and that the parent receives far
fewer bytes from its workers than the pixels it ends up with.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hydranet.core.decode as decode
from hydranet.core.decode import Decoded, decode_images

CHUNK = 8  # small index ranges, so a few dozen files go through the pool (it needs 4 * CHUNK)
COUNT = 45  # not a multiple of CHUNK: the last range is short
SIZE = 24
#: Unreadable files at known positions: the first, one on a range boundary, one inside a range, the last.
BAD = {0: "empty", 16: "garbage", 21: "empty", COUNT - 1: "garbage"}
REASONS = {"empty": "empty file (0 bytes)", "garbage": "not an image"}

pytestmark = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                                reason="workers share the destination only when forked")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """COUNT tiny non-square noise JPEGs, with unreadable files at the BAD positions."""
    folder = tmp_path_factory.mktemp("decode-pool")
    rng = np.random.default_rng(7)
    paths = []
    for index in range(COUNT):
        path = folder / f"{index:03d}.jpg"
        if BAD.get(index) == "empty":
            path.write_bytes(b"")
        elif BAD.get(index) == "garbage":
            path.write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
        else:
            pixels = rng.integers(0, 256, (32, 28, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path, format="JPEG", quality=90)
        paths.append(str(path))
    return paths


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode, "CHUNK", CHUNK)


class PidRecordingOpener:
    """A picklable dataset-like object whose bound `open_image` notes which process opened each image."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def open_image(self, source: str) -> Image.Image:
        (self.folder / str(os.getpid())).touch()
        return Image.open(source)


def run(files: list[str], workers: int, cache_dir: Path | None, **kwargs) -> Decoded:
    return decode_images(files, SIZE, workers=workers, cache_dir=cache_dir, progress=False, **kwargs)


def check_failures(decoded: Decoded) -> None:
    """The BAD files, in index order, with their reasons, and zeros in their rows."""
    assert [index for index, _ in decoded.failures] == sorted(BAD)
    for index, reason in decoded.failures:
        assert REASONS[BAD[index]] in reason
        assert int(decoded.images[index].sum()) == 0
    good = [index for index in range(COUNT) if index not in BAD]
    assert all(decoded.images[index].float().std() > 5 for index in good)  # noise, not a zero row


@pytest.mark.parametrize("cached", [False, True], ids=["no-cache", "cache"])
def test_pool_gives_the_inline_pixels_and_failures(files, small_chunks, tmp_path, cached):
    inline = run(files, 1, tmp_path / "inline" if cached else None)
    pids = tmp_path / "pids"
    pids.mkdir()
    pooled = run(files, 2, tmp_path / "pooled" if cached else None, opener=PidRecordingOpener(pids).open_image)
    assert {int(p.name) for p in pids.iterdir()} - {os.getpid()}, "the pool's workers did not do the decoding"
    assert pooled.images.shape == (COUNT, 3, SIZE, SIZE) and pooled.images.dtype == torch.uint8
    assert torch.equal(inline.images, pooled.images)
    assert pooled.failures == inline.failures
    check_failures(pooled)
    if cached:
        again = run(files, 2, tmp_path / "pooled")
        assert again.from_cache and torch.equal(again.images, pooled.images) and again.failures == pooled.failures


def test_no_cache_result_outlives_the_pool(files, small_chunks):
    """The shared memory the workers wrote into is an ordinary tensor afterwards: writable, copyable."""
    decoded = run(files, 2, None)
    copy = decoded.images.clone()
    decoded.images[1] += 1
    assert torch.equal(decoded.images[1], copy[1] + 1) and torch.equal(decoded.images[2:], copy[2:])


def test_pixels_do_not_come_back_through_the_pipe(files, small_chunks, monkeypatch):
    """What the parent receives from its workers is a small fraction of the decoded pixels."""
    received: list[int] = []
    real_recv = multiprocessing.connection.Connection.recv

    def counting_recv(self):
        message = real_recv(self)
        received.append(len(pickle.dumps(message)))
        return message

    monkeypatch.setattr(multiprocessing.connection.Connection, "recv", counting_recv)
    decoded = run(files, 2, None)
    check_failures(decoded)
    assert received, "no messages from workers were seen: the pool was not used"
    assert sum(received) < decoded.images.numel() / 10, (sum(received), decoded.images.numel())


def test_spawned_workers_return_the_pixels_instead(files, small_chunks, monkeypatch):
    """Without fork (macOS, Windows) the workers cannot share the destination, and must still be right."""
    inline = run(files, 1, None)
    monkeypatch.setattr(decode.multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    spawned = run(files, 2, None)
    assert torch.equal(inline.images, spawned.images) and spawned.failures == inline.failures


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="no space reservation on this platform")
def test_disk_space_stays_reserved_while_decoding(files, tmp_path):
    """The file being filled keeps its full allocation: a memory map on a full disk would crash with SIGBUS."""
    cache = tmp_path / "cache"
    allocated: list[tuple[int, int]] = []

    def opener(source: str) -> Image.Image:
        for partial in cache.glob(".decoded-*.tmp"):
            stat = partial.stat()
            allocated.append((stat.st_blocks * 512, stat.st_size))
        return Image.open(source)

    run(files, 1, cache, opener=opener)
    assert allocated and all(blocks >= size == COUNT * 3 * SIZE * SIZE for blocks, size in allocated)


def test_empty_source_list(tmp_path):
    for cache_dir in (None, tmp_path / "cache"):
        decoded = run([], 2, cache_dir)
        assert decoded.images.shape == (0, 3, SIZE, SIZE) and decoded.failures == []
