"""The decode cache keeps one entry per data folder and image size, and `hydranet cache` lists and clears it.

Every change to the data (a file added, removed, re-saved) gives a new cache
key, and used to leave a whole stale copy of the decoded images behind.
Writing an entry now removes the ones it supersedes, except those used in
the last 15 minutes, which a running process may be reading or writing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from hydranet.core import decode_cache
from hydranet.core.cli import cli
from hydranet.core.decode import decode_images

SIZE = 8
HOUR_AGO = time.time() - 3600


def draw(folder: Path, count: int = 4, seed: int = 0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        path = folder / f"{index}.png"
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def headers(cache: Path) -> list[str]:
    return sorted(path.name for path in cache.glob("decoded-*.json"))


def age(cache: Path, when: float = HOUR_AGO) -> None:
    """Make every entry in `cache` look last used at `when` (as if its run ended long ago)."""
    for path in cache.glob("decoded-*"):
        os.utime(path, (when, when))


def test_a_new_entry_removes_the_entry_it_supersedes(tmp_path: Path) -> None:
    cache, data = tmp_path / "cache", tmp_path / "data"
    sources = draw(data)
    first = decode_images(sources, SIZE, cache_dir=cache, progress=False, workers=1)
    old = headers(cache)
    age(cache)
    sources += draw(data / "more", count=1, seed=1)  # a file added: a new key for the same folder
    decode_images(sources, SIZE, cache_dir=cache, progress=False, workers=1)
    assert len(headers(cache)) == 1 and headers(cache) != old
    assert len(list(cache.glob("decoded-*.u8"))) == 1
    assert first.images.sum() > 0  # a run that mapped the old entry still reads it after removal (POSIX)


def test_entries_in_use_of_other_folders_or_sizes_are_kept(tmp_path: Path) -> None:
    cache, data = tmp_path / "cache", tmp_path / "data"
    sources = draw(data)
    decode_images(sources, SIZE, cache_dir=cache, progress=False, workers=1)  # just used: may be in use
    decode_images(sources, SIZE * 2, cache_dir=cache, progress=False, workers=1)  # another size
    decode_images(draw(tmp_path / "other"), SIZE, cache_dir=cache, progress=False, workers=1)  # another folder
    Path(sources[0]).write_bytes(Path(sources[1]).read_bytes())  # changed: a new key, superseding the first
    decode_images(sources, SIZE, cache_dir=cache, progress=False, workers=1)
    assert len(headers(cache)) == 4  # the superseded one was used moments ago, so it stays


def test_a_cache_hit_marks_the_entry_used(tmp_path: Path) -> None:
    cache, data = tmp_path / "cache", tmp_path / "data"
    sources = draw(data)
    decode_images(sources, SIZE, cache_dir=cache, progress=False, workers=1)
    age(cache)
    assert decode_images(sources, SIZE, cache_dir=cache, progress=False, workers=1).from_cache
    entry, = decode_cache.entries(cache)
    assert decode_cache.in_use(entry.last_used)
    assert entry.root == str(data) and entry.image_size == SIZE and entry.images == 4


def test_only_old_unfinished_decodes_are_removed(tmp_path: Path) -> None:
    cache, data = tmp_path / "cache", tmp_path / "data"
    cache.mkdir()
    killed, running = cache / ".decoded-aaaa.x1.tmp", cache / ".decoded-bbbb.x2.tmp"
    killed.write_bytes(b"0" * 100)
    running.write_bytes(b"0" * 100)
    os.utime(killed, (time.time() - 2 * 86400,) * 2)
    decode_images(draw(data), SIZE, cache_dir=cache, progress=False, workers=1)
    assert not killed.exists() and running.exists()


def test_an_interrupted_decode_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hydranet.core.decode as decode

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(decode, "_decode_into", interrupted)
    with pytest.raises(KeyboardInterrupt):
        decode_images(draw(tmp_path / "data"), SIZE, cache_dir=tmp_path / "cache", progress=False, workers=1)
    assert list((tmp_path / "cache").iterdir()) == []


def test_cache_list_and_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRANET_CACHE", str(tmp_path / "home-cache"))
    cache = tmp_path / "home-cache" / "decoded"
    data = tmp_path / "data"
    decode_images(draw(data), SIZE, cache_dir=cache, progress=False, workers=1)
    age(cache)
    decode_images(draw(tmp_path / "other"), SIZE * 2, cache_dir=cache, progress=False, workers=1)  # in use
    (tmp_path / "home-cache" / "data-reports").mkdir()
    report = tmp_path / "home-cache" / "data-reports" / "utkface-0123456789ab.txt"
    report.write_text("1 unreadable image skipped:\n")
    os.utime(report, (HOUR_AGO, HOUR_AGO))
    runner = CliRunner()
    listing = runner.invoke(cli, ["cache", "list"])
    assert listing.exit_code == 0, listing.output
    assert f"cache folder: {tmp_path / 'home-cache'}" in listing.output
    assert "decoded images (2 entries):" in listing.output
    assert str(data) in listing.output and "1 hour ago" in listing.output and "in use" in listing.output
    assert "data-problem lists: 1 item" in listing.output
    cleared = runner.invoke(cli, ["cache", "clear"])
    assert cleared.exit_code == 0, cleared.output
    assert "removed 1 decoded-image entry and 1 other item" in cleared.output
    assert "kept 1 item used in the last 15 minutes" in cleared.output
    entry, = decode_cache.entries(cache)
    assert entry.root == str(tmp_path / "other") and not report.exists()
    assert torch.is_tensor(decode_images(draw(data), SIZE, cache_dir=cache, progress=False, workers=1).images)


def test_cache_list_says_an_entry_in_use_is_superseded_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both entries were used moments ago: the replaced one says so, though `clear` keeps it until it is idle."""
    monkeypatch.setenv("HYDRANET_CACHE", str(tmp_path / "home-cache"))
    cache = tmp_path / "home-cache" / "decoded"
    files = draw(tmp_path / "data")
    decode_images(files, SIZE, cache_dir=cache, progress=False, workers=1)
    os.utime(files[0], (HOUR_AGO, HOUR_AGO))  # a changed file: a new entry for the same folder and size
    decode_images(files, SIZE, cache_dir=cache, progress=False, workers=1)
    listing = CliRunner().invoke(cli, ["cache", "list"])
    assert listing.exit_code == 0, listing.output
    assert listing.output.count("superseded, in use") == 1 and "decoded images (2 entries):" in listing.output
