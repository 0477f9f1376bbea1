"""Decode every image once into a uint8 (N, 3, S, S) tensor, cached on disk.

The article decoded each JPEG with PIL on every access, with no workers; that
loop spent its time in the decoder, not the model. Here images are decoded
once, in parallel worker processes, at the training size (JPEG draft mode lets
libjpeg decode at 1/2, 1/4 or 1/8 scale directly).

The cache is a raw uint8 file plus a small JSON header, keyed by the file
list, their sizes and modification times and the image size: any changed or
added file gives a new key. Decoding writes straight into a memory map of the
file, so data larger than memory can be decoded, and loading is a memory map
too: the next run opens it in milliseconds and pages it in as it is read.
The header is written last, after the pixels are flushed, so an interrupted
decode never leaves a cache entry that looks complete. It records a checksum of
a sample of the pixel file (`pixel_checksum`), checked on every load, so a
pixel file overwritten or zeroed in place is decoded again rather than trained
on. The header also names
the data folder and image size: writing an entry removes the entries it
supersedes (same folder and size, other files), unless they were used in the
last 15 minutes; `core/decode_cache.py` says why that is safe, and
`hydranet cache` lists and clears the cache.

With forked workers the pixels never travel between processes. Each worker
task is a contiguous range of indices; the workers are forked after the
destination is mapped shared (the cache file's memory map, or an anonymous
shared map when there is no cache), write their rows into it themselves and
send back only the failures. Sending every image's pixels back instead (49 KB
each at 128 px) makes the one parent process, unpickling and copying them, a
bottleneck as workers are added. Where workers cannot be forked (the "spawn"
start method) they return each range's pixels as bytes and the parent copies
them in. Rows of images that fail stay zero.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from hydranet.core.atomic import atomic_write_text, remove_stale_temporaries, share, writer_tag
from hydranet.core.decode_cache import (ORPHAN_SECONDS, PARTIAL_SUFFIX, PREFIX, CacheEntry, data_folder, entry_files,
                                        partial_prefix, prune_superseded, touch)
from hydranet.core.paths import CACHE_ENV, dead_link, os_reason, printable

DECODE_FORMAT = 4  # bump when decoding changes, so old caches stop matching
CHUNK = 64
#: The pixel file's sampled checksum (`pixel_checksum`): this many blocks of SAMPLE_BLOCK bytes, evenly spaced
#: from the first block to the last. The header key names the method, so a change of sample is a new key.
SAMPLE_BLOCKS = 256
SAMPLE_BLOCK = 4096
CHECKSUM_KEY = "pixels_blake2b_sample256x4k"


@dataclass
class Decoded:
    """Decoded pixels plus the images that could not be read (index, reason).

    `warnings` are lines for the run's log: why the cache could not be written, when it could not.
    """

    images: torch.Tensor
    failures: list[tuple[int, str]]
    from_cache: bool = False
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


#: Transparent pixels are composited onto this colour. Black: a transparent
#: pixel carries no signal, and black is zero in every channel. What matters is
#: that it is fixed, so a cut-out face decodes the same whatever colour the tool
#: that wrote it left under alpha 0.
BACKGROUND = (0, 0, 0)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB, scaling rather than clipping deep images.

    - 16-bit grayscale (Pillow's I;16 modes, and mode I, which Pillow uses for
      some 16-bit files and is read as 16-bit, clipped to 0..65535) keeps its
      high byte: Pillow's own conversion clips every value above 255 to white.
    - Alpha (RGBA, LA, PA, a palette or grayscale PNG with a transparent
      colour) is composited onto `BACKGROUND`: dropping it would expose
      whatever colour the file happens to store under transparent pixels.
    - 32-bit float grayscale (mode F, from TIFFs) is read as [0, 1] when no
      value is above 1, else as 0..255: Pillow's own conversion clips [0, 1]
      to black.
    - Grayscale, bilevel, palette and CMYK images go through Pillow's
      conversion (CMYK JPEGs, Adobe-inverted ones included, decode correctly).
    """
    if image.mode.startswith("I"):  # I, I;16, I;16B, I;16L, I;16N
        image = Image.fromarray(high_byte(np.asarray(image).astype(np.int64).clip(0, 65535)), mode="L")
    elif image.mode == "F":
        image = _float_to_gray(image)
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def high_byte(pixels: np.ndarray) -> np.ndarray:
    """16-bit pixels (0..65535) as 8-bit by keeping the high byte, v >> 8: how a 16-bit image is read.

    One rule for files (`to_rgb`) and for the uint16 arrays and tensors that
    `predict` takes, so an image gives the same prediction either way.
    """
    return (pixels >> 8).astype(np.uint8)


def _float_to_gray(image: Image.Image) -> Image.Image:
    """A mode F image as 8-bit grayscale: values in [0, 1] scaled by 255, others taken as 0..255 (NaN is 0)."""
    pixels = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    scale = 255.0 if pixels.size and pixels.max() <= 1.0 else 1.0
    return Image.fromarray((pixels * scale).round().clip(0, 255).astype(np.uint8), mode="L")


def to_square_rgb(image: Image.Image, size: int, *, draft: bool = False) -> np.ndarray:
    """Centre-crop to a square and resize to `size`, as (3, size, size) uint8.

    EXIF orientation is applied first, so a phone photo stored sideways trains
    upright; any mode becomes RGB as `to_rgb` describes.

    `draft=True` lets libjpeg decode a JPEG not yet loaded at 1/2, 1/4 or 1/8
    scale (much faster for big photos, slightly different pixels). It changes
    `image` itself (`Image.draft` shrinks it in place), so it is only for an
    image hydranet opened and closes again: `decode_file` and training's
    decode. A caller's image is never drafted, so it is left as it was given,
    and it decodes the same whether it was loaded before or not.
    """
    if draft and image.format == "JPEG":
        image.draft("RGB", (size, size))
    image = to_rgb(ImageOps.exif_transpose(image))
    image = ImageOps.fit(image, (size, size), method=Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()


def decode_file(source: str | os.PathLike | BinaryIO, size: int) -> np.ndarray:
    """An image file (a path, or a binary file object such as io.BytesIO) decoded as training decodes its files.

    hydranet opens the file itself, so a JPEG may be drafted (`to_square_rgb`):
    a prediction on a file or on its bytes matches training's decode of the
    same file. A file object is read from its start and left open.
    """
    with Image.open(source) as image:
        return to_square_rgb(image, size, draft=True)


def unreadable_reason(error: Exception, source: str | os.PathLike | None = None) -> str:
    """Why an image could not be decoded, in words a user can act on (the caller names the file).

    Given the `source` path, a zero-byte file says so: Pillow calls it "not an image".
    """
    if source is not None:
        return _empty_or(source, unreadable_reason(error))
    text = str(error).strip()
    if isinstance(error, Image.DecompressionBombError):
        return (f"too large to decode safely, a possible decompression bomb "
                f"({text.split(', could be')[0].strip()}); shrink the image, or raise "
                "PIL.Image.MAX_IMAGE_PIXELS if it is genuine")
    if isinstance(error, FileNotFoundError):
        return "file not found (moved or deleted after the dataset was listed)"
    if isinstance(error, PermissionError):
        return "permission denied: the file is not readable by this user"
    if isinstance(error, UnidentifiedImageError):
        return "not an image, or a format Pillow cannot read (UnidentifiedImageError)"
    if isinstance(error, OSError) and "truncated" in text.lower():  # "image file is truncated", "Truncated File Read"
        return f"truncated or damaged file: {text}"
    return f"cannot decode: {type(error).__name__}: {text}" if text else f"cannot decode: {type(error).__name__}"


@dataclass(frozen=True)
class _Job:
    """What every decode task needs, handed to each worker once so a task is only an index range.

    `target` is the (N, 3*S*S) destination when the worker shares it with the
    parent (forked after it was mapped shared, or the inline path); None when
    the worker must return the pixels instead (spawned workers).
    """

    opener: Callable[[str], Image.Image]
    size: int
    sources: Sequence[str]
    target: np.ndarray | None


_job: _Job | None = None


def _init_worker(job: _Job | None, worker_process: bool = True) -> None:
    """Install the job in this process (None clears it, so the inline path keeps no map alive)."""
    global _job
    _job = job
    if worker_process:
        torch.set_num_threads(1)  # the pool already uses every core


def _decode_one(source: str, out: np.ndarray) -> str:
    """Decode one image into the row `out`; "" on success, else why it failed (`out` untouched)."""
    assert _job is not None
    try:
        with _job.opener(source) as image:
            pixels = to_square_rgb(image, _job.size, draft=True)  # the opener's image is this call's own
    except Exception as error:  # any decoder failure means "unreadable": report it, skip it
        return unreadable_reason(error, source)
    out[:] = pixels.reshape(-1)  # written only once closing succeeded too, so a failed row stays zero
    return ""


def _decode_span(span: tuple[int, int]) -> tuple[int, int, bytes | None, list[tuple[int, str]]]:
    """Decode sources[start:stop]: (start, stop, the pixels unless written in place, failures).

    With a shared target the rows are written where the parent reads them and
    only the failures (a few bytes) go back through the pool's pipe.
    """
    assert _job is not None
    start, stop = span
    shared = _job.target is not None
    rows = _job.target[start:stop] if shared else np.zeros((stop - start, 3 * _job.size ** 2), np.uint8)
    failures = [(index, reason) for index, row in zip(range(start, stop), rows)
                if (reason := _decode_one(_job.sources[index], row))]
    return start, stop, None if shared else rows.tobytes(), failures


def _empty_or(source: str | os.PathLike, reason: str) -> str:
    """A zero-byte file is the commonest bad image (an interrupted copy): say so plainly; a link that leads
    nowhere (its target moved, or links that point at each other) says where it points."""
    try:
        link = dead_link(source)
        if link:
            return link
        if os.path.getsize(source) == 0:
            return "empty file (0 bytes)"
    except (OSError, TypeError, ValueError):
        pass  # not a file path (a custom opener's source), or gone: keep the decoder's reason
    return reason


def cache_key(sources: Sequence[str], size: int) -> str:
    """Hash of what the pixels depend on: files (path, size, mtime), image size, decoder version.

    One line per file, hashed as one text: the same digest as hashing line by line (what keys were made
    with), without a call per file. A name that is not UTF-8 (a Latin-1 `caf\xe9.jpg`, which Python holds
    with a surrogate escape) is hashed as its bytes on disk, so its key is stable and its own; UTF-8 names
    hash as they always did.
    """
    lines = [f"hydranet-decode-v{DECODE_FORMAT} size={size}\n"]
    for source in sources:
        try:
            stat = os.stat(source)
            lines.append(f"{source}\0{stat.st_size}\0{stat.st_mtime_ns}\n")
        except OSError:
            lines.append(f"{source}\0missing\n")
    return hashlib.sha256("".join(lines).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def pixel_checksum(path: Path) -> str:
    """A checksum of a sample of the pixel file at `path`: cheap enough for every warm start.

    The file's size and SAMPLE_BLOCKS blocks of SAMPLE_BLOCK bytes (4 KiB), evenly spaced from the first block
    to the last, hashed with BLAKE2b: 1 MiB read (already in the page cache when the entry was used lately)
    whatever the size of the file, where hashing all of a 1.2 GB entry would take longer than the warm start
    it guards. A file up to 1 MiB is hashed whole.

    What it catches: a pixel file overwritten (random bytes, another program's output), zeroed (a file system
    that lost the blocks after a crash), truncated and padded back, or swapped for another entry's file of the
    same size: each changes nearly every block, so the sampled ones too. What it does not: damage confined to
    bytes it does not sample (one flipped bit outside the 256 blocks, in a 1.2 GB file 99.9% of the bytes).
    That is the price of a check that costs milliseconds; such damage changes a few pixels of one image, where
    the damage above replaces every image with noise.
    """
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        digest.update(size.to_bytes(8, "little"))
        if size <= SAMPLE_BLOCKS * SAMPLE_BLOCK:
            digest.update(handle.read())
        else:
            last = size - SAMPLE_BLOCK
            for block in range(SAMPLE_BLOCKS):
                handle.seek(last * block // (SAMPLE_BLOCKS - 1))
                digest.update(handle.read(SAMPLE_BLOCK))
    return digest.hexdigest()


def _open_pixels(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """A copy-on-write memory map of a pixel file as a uint8 tensor (no read happens yet)."""
    if int(np.prod(shape)) == 0:
        return torch.zeros(shape, dtype=torch.uint8)
    return torch.from_numpy(np.memmap(path, dtype=np.uint8, mode="c", shape=shape))


def _failures(listed: object, count: int) -> list[tuple[int, str]] | None:
    """A header's failures as (index, reason) pairs; None when they are not what `decode_images` writes.

    A header edited by hand (or by another program) may hold anything: an index
    beyond the images or a reason that is no text would fail the run later, far
    from the cause. Such an entry is a cache miss, decoded again and rewritten.
    """
    if not isinstance(listed, list):
        return None
    failures = []
    for item in listed:
        if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is int and 0 <= item[0] < count
                and isinstance(item[1], str)):
            return None
        failures.append((item[0], item[1]))
    return failures


def load_cached(cache_dir: Path, key: str, shape: tuple[int, ...], notes: list[str] | None = None) -> Decoded | None:
    """The cache entry for `key`, or None when absent, incomplete or damaged.

    A hit marks the entry as used now, so that a run on newer files does not prune it while this one starts.
    A pixel file whose sampled checksum (`pixel_checksum`) is not the one its header recorded is damaged: a
    miss, decoded again, with a line for the run's log in `notes` that names the file.

    An entry written before headers held the checksum is accepted, and its header gets the checksum now: making
    every such entry a miss would decode every user's data once more, and what the check protects against is
    damage after this point (a file overwritten or zeroed later), which the stamped checksum then catches.
    """
    header, pixels = entry_files(cache_dir, key)
    try:
        meta = json.loads(header.read_text())
        if not isinstance(meta, dict) or meta.get("shape") != list(shape):
            return None
        failures = _failures(meta.get("failures"), shape[0])
        if failures is None or pixels.stat().st_size != int(np.prod(shape)):
            return None
        checksum = pixel_checksum(pixels)
        recorded = meta.get(CHECKSUM_KEY)
        if recorded is not None and recorded != checksum:
            if notes is not None:
                notes.append(f"note: the decode cache's {printable(str(pixels))} is damaged (its pixels are not "
                             "what was written), so the images were decoded again")
            return None
        decoded = Decoded(_open_pixels(pixels, shape), failures, from_cache=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a damaged cache entry is only a cache miss
    if recorded is None:
        try:
            _write_header(header, {**meta, CHECKSUM_KEY: checksum})
        except OSError:
            pass  # a read-only cache is still a cache: it is just not checked
    touch(header)
    return decoded


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
    started = time.perf_counter()
    shape = (len(sources), 3, size, size)
    key = cache_key(sources, size)
    notes: list[str] = []
    if cache_dir is not None:
        cached = load_cached(Path(cache_dir), key, shape, notes)
        if cached is not None:
            cached.seconds = time.perf_counter() - started
            return cached
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if cache_dir is None:
        return _uncached(sources, size, opener, workers, progress, started)
    cache_dir = Path(cache_dir)
    header, pixel_file = entry_files(cache_dir, key)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # A decode of this entry killed before (SIGKILL: no `finally` ran) left its temporary, as large as the
        # entry; remove it now, unless its writer still runs (another run decoding the same data right now).
        remove_stale_temporaries(cache_dir, [f"{PREFIX}{key}", header.name], older_than=ORPHAN_SECONDS)
        fd, tmp = tempfile.mkstemp(prefix=f"{partial_prefix(key)}{writer_tag()}.", suffix=PARTIAL_SUFFIX,
                                   dir=cache_dir)
    except OSError as error:  # a read-only cache folder, or a file where it should be: decode all the same
        return _uncached(sources, size, opener, workers, progress, started,
                         [*notes, _cache_refused(cache_dir, error)])
    meta = {"format": DECODE_FORMAT, "shape": list(shape), "root": data_folder(sources), "image_size": size}
    try:
        if hasattr(os, "posix_fallocate") and len(sources):
            # Reserve the space now: a memory map on a full disk would crash with SIGBUS later.
            os.posix_fallocate(fd, 0, int(np.prod(shape)))
        os.close(fd)
        fd = -1
        # "r+", not "w+": "w+" truncates the file, which would throw the reservation away.
        pixels = np.memmap(tmp, dtype=np.uint8, mode="r+", shape=shape) if len(sources) else np.zeros(shape, np.uint8)
        failures = _decode_into(pixels, sources, size, opener, workers, progress)
        if isinstance(pixels, np.memmap):
            pixels.flush()
        del pixels
        share(tmp)  # the header's mode too (`_write_header`): 0644 under umask 022, not mkstemp's 0600
        checksum = pixel_checksum(Path(tmp))
        os.replace(tmp, pixel_file)
        _write_header(header, {**meta, "failures": [list(f) for f in failures], CHECKSUM_KEY: checksum})
    except BaseException as error:  # Ctrl-C too: a killed decode must not leave its full-size file behind
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        if not isinstance(error, OSError):
            raise
        # The disk refused (full, read-only): decode without caching instead of failing the run.
        return _uncached(sources, size, opener, workers, progress, started,
                         [*notes, _cache_refused(cache_dir, error)])
    result = load_cached(cache_dir, key, shape)
    assert result is not None  # just written, so in use: no other process removes it (decode_cache.py)
    prune_superseded(cache_dir, CacheEntry(key, header, pixel_file, meta))
    return Decoded(result.images, result.failures, from_cache=False, seconds=time.perf_counter() - started,
                   warnings=notes)


def _uncached(sources: Sequence[str], size: int, opener: Callable[[str], Image.Image], workers: int, progress: bool,
              started: float, warnings: Sequence[str] = ()) -> Decoded:
    """Decode into shared memory without the cache: none was asked for, or it could not be written (`warnings`)."""
    pixels = _shared_zeros((len(sources), 3, size, size))
    failures = _decode_into(pixels, sources, size, opener, workers, progress)
    return Decoded(torch.from_numpy(pixels), failures, seconds=time.perf_counter() - started, warnings=list(warnings))


def _cache_refused(cache_dir: Path, error: OSError) -> str:
    """The warning for a decode cache that could not be written, which says why and what to do.

    The cache only saves the next run's decoding: a cache folder that takes no
    files (read-only, full, a file where the folder should be) must not stop a
    run that can decode all the same.
    """
    return (f"warning: cannot write the decode cache in {printable(str(cache_dir))} ({os_reason(error)}), so the "
            f"images were decoded without it and the next run decodes them again; set {CACHE_ENV} to a "
            "writable folder to keep them")


def _write_header(path: Path, meta: dict) -> None:
    """Write the header atomically and durably: its presence is what marks the entry complete.

    Through `atomic_write_text`, so with the pixel file's mode (umask-derived), not mkstemp's owner-only one.
    """
    atomic_write_text(path, json.dumps(meta))


def _shared_zeros(shape: tuple[int, ...]) -> np.ndarray:
    """Zeroed uint8 memory that forked workers can write into: an anonymous shared map.

    A plain tensor would be copied on write in each forked worker, so the
    parent would never see their rows.
    """
    nbytes = int(np.prod(shape))
    if nbytes == 0:
        return np.zeros(shape, np.uint8)  # mmap refuses a zero length
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=np.uint8).reshape(shape)


def _decode_into(pixels: np.ndarray, sources: Sequence[str], size: int, opener: Callable[[str], Image.Image],
                 workers: int, progress: bool) -> list[tuple[int, str]]:
    """Decode `sources` into `pixels` (shared memory, zeroed); the failures (index, reason) in index order."""
    flat = pixels.reshape(len(sources), 3 * size * size)
    failures: list[tuple[int, str]] = []
    with tqdm(total=len(sources), desc="decoding images", unit="img", disable=not progress, leave=False) as bar:
        for start, stop, raw, failed in _decoded_spans(flat, sources, size, opener, workers):
            if raw is not None:
                flat[start:stop] = np.frombuffer(raw, dtype=np.uint8).reshape(stop - start, -1)
            failures += failed
            bar.update(stop - start)
    return sorted(failures)


def _decoded_spans(flat: np.ndarray, sources: Sequence[str], size: int, opener: Callable[[str], Image.Image],
                   workers: int) -> Iterator[tuple[int, int, bytes | None, list[tuple[int, str]]]]:
    """Decode CHUNK-image ranges as they complete: in worker processes when that pays, inline otherwise."""
    spans = [(start, min(start + CHUNK, len(sources))) for start in range(0, len(sources), CHUNK)]
    if workers <= 1 or len(sources) < 4 * CHUNK:
        _init_worker(_Job(opener, size, sources, flat), worker_process=False)
        try:
            yield from map(_decode_span, spans)
        finally:
            _init_worker(None, worker_process=False)
        return
    methods = multiprocessing.get_all_start_methods()
    # fork starts in milliseconds and shares `flat`; the workers only run PIL and numpy, never torch ops.
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    shared = context.get_start_method() == "fork"  # a spawned worker would get a private copy of `flat`
    job = _Job(opener, size, sources, flat if shared else None)
    with context.Pool(min(workers, len(spans)), initializer=_init_worker, initargs=(job,)) as pool:
        yield from pool.imap_unordered(_decode_span, spans)
