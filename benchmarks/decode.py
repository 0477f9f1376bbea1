"""Decode time: pixels written in place by the workers vs pixels sent back to the parent through a pipe.

    python benchmarks/decode.py --count 2000 --size 128 --workers 16

Writes (or reuses) synthetic 200x200 UTKFace-format JPEGs, then decodes them
with `hydranet.core.decode.decode_images` twice per round: once as it is (the
workers write their rows into the shared destination and return only the
failures) and once with its decode loop swapped for the old one (each worker
returns every image's pixels as bytes through `pool.imap` and the parent
copies them in). Everything around the loop (cache key, space reservation,
header) is the same code in both, so the difference is the loop. Each is
timed into memory (no cache) and into a fresh cache folder; the best of
--repeat rounds is printed, with old / new.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import hydranet.core.decode as decode

_opener: Callable[[str], Image.Image] | None = None
_size = 0


def _old_init(opener: Callable[[str], Image.Image], size: int) -> None:
    """The old worker initializer: the opener and size as globals, one torch thread."""
    global _opener, _size
    _opener, _size = opener, size
    torch.set_num_threads(1)


def _old_decode_one(source: str) -> tuple[bytes | None, str]:
    """The old task: one image -> its pixels as bytes (sent back whole), or None and the reason."""
    assert _opener is not None
    try:
        with _opener(source) as image:
            return decode.to_square_rgb(image, _size, draft=True).tobytes(), ""
    except Exception as error:  # as the old loop: any failure means unreadable
        return None, decode.unreadable_reason(error)


def old_decode_into(pixels: np.ndarray, sources: Sequence[str], size: int, opener: Callable[[str], Image.Image],
                    workers: int, progress: bool) -> list[tuple[int, str]]:
    """The old loop, pool path only: bytes per image through `imap`, copied into `pixels` by the parent."""
    flat = pixels.reshape(len(sources), 3 * size * size)
    failures: list[tuple[int, str]] = []
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with context.Pool(workers, initializer=_old_init, initargs=(opener, size)) as pool:
        for index, (raw, reason) in enumerate(pool.imap(_old_decode_one, sources, chunksize=decode.CHUNK)):
            if raw is None:
                failures.append((index, reason))
            else:
                flat[index] = np.frombuffer(raw, dtype=np.uint8)
    return failures


@contextlib.contextmanager
def old_loop() -> Iterator[None]:
    """Run `decode_images` with the old decode loop in place of the current one."""
    current = decode._decode_into
    decode._decode_into = old_decode_into
    try:
        yield
    finally:
        decode._decode_into = current


def timed(sources: Sequence[str], size: int, workers: int, cached: bool, old: bool) -> tuple[float, torch.Tensor]:
    """Seconds for one cold decode (a fresh cache folder when `cached`), and the pixels, to check they agree."""
    with tempfile.TemporaryDirectory() as folder, (old_loop() if old else contextlib.nullcontext()):
        started = time.perf_counter()
        decoded = decode.decode_images(sources, size, workers=workers, cache_dir=Path(folder) if cached else None,
                                       progress=False)
        seconds = time.perf_counter() - started
        assert not decoded.from_cache
        return seconds, decoded.images.clone()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="images to decode")
    parser.add_argument("--size", type=int, default=128, help="decoded image side in pixels")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decode processes")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best of each is printed")
    parser.add_argument("--root", default=None, help="decode the JPEGs in this folder instead of synthetic ones")
    args = parser.parse_args()
    if args.workers <= 1 or args.count < 4 * decode.CHUNK:
        parser.error(f"the pool needs --workers >= 2 and --count >= {4 * decode.CHUNK}; below that both decode inline")

    from hydranet.plugins.datasets.synthetic import default_root, write_synthetic

    root = (Path(args.root) if args.root else
            write_synthetic(default_root(args.count, 200, 0), args.count, 200, 0, progress=False))
    sources = [str(path) for path in sorted(root.glob("*.jpg"))]
    print(f"{len(sources)} images from {root}, {args.size} px, {args.workers} workers, {os.cpu_count()} cores, "
          f"best of {args.repeat}")
    print(f"{'destination':<12} {'old s':>8} {'new s':>8} {'old/new':>8}")
    for cached in (False, True):
        best = {True: float("inf"), False: float("inf")}
        for round_ in range(args.repeat):
            pixels = {}
            for old in ((True, False) if round_ % 2 == 0 else (False, True)):  # alternate who goes first
                seconds, pixels[old] = timed(sources, args.size, args.workers, cached, old)
                best[old] = min(best[old], seconds)
            assert torch.equal(pixels[True], pixels[False]), "the two loops decoded different pixels"
        name = "cache file" if cached else "memory"
        print(f"{name:<12} {best[True]:>8.3f} {best[False]:>8.3f} {best[True] / best[False]:>7.2f}x")


if __name__ == "__main__":
    main()
