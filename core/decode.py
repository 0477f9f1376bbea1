"""Decode every image once into a uint8 (N, 3, S, S) tensor, cached on disk.

The article decoded each JPEG with PIL on every access, with no workers; that
loop spent its time in the decoder, not the model. Here images are decoded
once, in parallel worker processes, at the training size (JPEG draft mode lets
libjpeg decode at 1/2, 1/4 or 1/8 scale directly), and the result is saved
under a key made of the file list, their sizes and modification times and the
image size, so the next run loads it in well under a second and any changed
or added file invalidates it.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from hydranet.core.checkpoint import atomic_torch_save

DECODE_FORMAT = 1  # bump when decoding changes, so old caches stop matching
CHUNK = 64


@dataclass
class Decoded:
    """Decoded pixels plus the images that could not be read (index, reason)."""

    images: torch.Tensor
    failures: list[tuple[int, str]]
    from_cache: bool = False


def to_square_rgb(image: Image.Image, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to `size`, as (3, size, size) uint8."""
    if image.format == "JPEG":
        image.draft("RGB", (size, size))  # let libjpeg scale down while decoding
    image = ImageOps.exif_transpose(image)
    if image.mode != "RGB":
        image = image.convert("RGBA").convert("RGB") if image.mode in ("P", "LA") else image.convert("RGB")
    image = ImageOps.fit(image, (size, size), method=Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()


_opener: Callable[[str], Image.Image] | None = None
_size = 0


def _init_worker(opener: Callable[[str], Image.Image], size: int, worker_process: bool = True) -> None:
    global _opener, _size
    _opener, _size = opener, size
    if worker_process:
        torch.set_num_threads(1)  # the pool already uses every core


def _decode_one(source: str) -> tuple[bytes | None, str]:
    """One image -> raw bytes, or None and the reason it failed."""
    assert _opener is not None
    try:
        with _opener(source) as image:
            return to_square_rgb(image, _size).tobytes(), ""
    except Exception as error:  # any decoder failure means "unreadable": report it, skip it
        return None, f"{type(error).__name__}: {error}".strip()


def cache_key(sources: Sequence[str], size: int) -> str:
    """Hash of what the pixels depend on: files (path, size, mtime), image size, decoder version."""
    digest = hashlib.sha256(f"hydranet-decode-v{DECODE_FORMAT} size={size}\n".encode())
    for source in sources:
        try:
            stat = os.stat(source)
            digest.update(f"{source}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{source}\0missing\n".encode())
    return digest.hexdigest()[:32]


def decode_images(
    sources: Sequence[str],
    size: int,
    opener: Callable[[str], Image.Image] = Image.open,
    *,
    workers: int | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> Decoded:
    """Decode `sources` at `size` x `size`, reusing or filling the on-disk cache."""
    cache_file = Path(cache_dir) / f"decoded-{cache_key(sources, size)}.pt" if cache_dir else None
    if cache_file is not None and cache_file.is_file():
        try:
            saved = torch.load(cache_file, map_location="cpu", weights_only=True)
            if saved["images"].shape == (len(sources), 3, size, size):
                return Decoded(saved["images"], [tuple(f) for f in saved["failures"]], from_cache=True)
        except Exception:  # a damaged cache file is only a cache miss
            pass
    images = torch.zeros((len(sources), 3, size, size), dtype=torch.uint8)
    failures: list[tuple[int, str]] = []
    flat = images.view(len(sources), -1).numpy()
    workers = workers if workers is not None else (os.cpu_count() or 1)
    bar = tqdm(total=len(sources), desc="decoding images", unit="img", disable=not progress, leave=False)
    with bar:
        for index, (raw, reason) in enumerate(_decoded_stream(sources, size, opener, workers)):
            if raw is None:
                failures.append((index, reason))
            else:
                flat[index] = np.frombuffer(raw, dtype=np.uint8)
            bar.update()
    if cache_file is not None:
        try:
            atomic_torch_save({"images": images, "failures": [list(f) for f in failures]}, cache_file)
        except OSError:
            pass  # a cache we cannot write only costs time next run
    return Decoded(images, failures)


def _decoded_stream(sources: Sequence[str], size: int, opener: Callable[[str], Image.Image], workers: int):
    """Decoded images in order: in worker processes when that pays, inline otherwise."""
    if workers <= 1 or len(sources) < 4 * CHUNK:
        _init_worker(opener, size, worker_process=False)
        yield from map(_decode_one, sources)
        return
    methods = multiprocessing.get_all_start_methods()
    # fork starts in milliseconds; the workers only run PIL and numpy, never torch ops.
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(opener, size)) as pool:
        yield from pool.imap(_decode_one, sources, chunksize=CHUNK)
