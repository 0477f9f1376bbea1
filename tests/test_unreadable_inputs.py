"""Inputs hydranet cannot read or write: an unwritable cache folder, folders and files the user may not read,
file names that are not UTF-8, and decode-cache headers edited by hand.

Tests run as root here, and root reads and writes whatever the mode bits say;
so a folder that may not be read or written is simulated by the one OS call
raising PermissionError, or, independently of the user, by a file where a
folder is expected.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import tiny_spec
from hydranet.core.cli import cli
from hydranet.core.decode import decode_images

def train(*args: str, env: dict[str, str] | None = None):
    """`hydranet train ARGS` as a user runs it: exceptions become output and an exit status, as in a terminal."""
    return CliRunner().invoke(cli, ["train", *args, "--no-progress"], env=env)


def no_traceback(result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


def permission_denied(path: str | os.PathLike) -> PermissionError:
    return PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))


def deny(monkeypatch: pytest.MonkeyPatch, owner, name: str, denied) -> None:
    """Make `owner.name(path, ...)` raise PermissionError for the paths `denied(path)` is true of."""
    real = getattr(owner, name)

    def call(path, *args, **kwargs):
        if isinstance(path, (str, os.PathLike)) and denied(path):  # os.scandir takes a descriptor too
            raise permission_denied(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(owner, name, call)


def spec_file(tmp_path: Path, data_root: Path, **data) -> Path:
    spec = tiny_spec(data_root, epochs=1)
    spec["data"].update(data)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# --- 1. an unwritable cache folder ------------------------------------------------------------------------------

def test_a_cache_folder_that_is_a_file_decodes_anyway_and_warns_once(faces, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    result = train(str(spec_file(tmp_path, faces)), "--out", str(tmp_path / "run"),
                   env={"HYDRANET_CACHE": str(blocker)})
    no_traceback(result)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "best.pt").is_file()
    warning = [line for line in result.output.splitlines() if "decode cache" in line]
    assert len(warning) == 1, result.output
    assert str(blocker / "decoded") in warning[0] and "HYDRANET_CACHE" in warning[0], warning
    assert warning[0] in (tmp_path / "run" / "train.log").read_text()


def test_a_read_only_cache_folder_decodes_anyway_and_warns(faces, tmp_path, monkeypatch):
    cache = tmp_path / "rocache"
    monkeypatch.setattr(tempfile, "mkstemp", lambda *a, **k: (_ for _ in ()).throw(permission_denied(cache)))
    decoded = decode_images([str(p) for p in sorted(faces.glob("*.jpg"))[:8]], 16, workers=1,
                            cache_dir=cache / "decoded", progress=False)
    assert decoded.images.shape == (8, 3, 16, 16) and decoded.images.sum() > 0 and not decoded.from_cache
    assert len(decoded.warnings) == 1
    assert str(cache / "decoded") in decoded.warnings[0] and "permission denied" in decoded.warnings[0].lower()
    assert "HYDRANET_CACHE" in decoded.warnings[0]


def test_the_demo_with_a_cache_folder_that_is_a_file_says_where_to_draw_the_faces(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    spec = spec_file(tmp_path, tmp_path, name="synthetic", root=None, count=40, size=32)
    result = train(str(spec), "--out", str(tmp_path / "run"), env={"HYDRANET_CACHE": str(blocker)})
    no_traceback(result)
    assert result.exit_code == 1, result.output
    assert str(blocker / "synthetic") in result.output and "HYDRANET_CACHE" in result.output, result.output
    assert "not a directory" in result.output.lower() or "not a folder" in result.output.lower()


def test_the_demo_with_a_read_only_cache_folder_says_which_folder(tmp_path, monkeypatch):
    cache = tmp_path / "rocache"
    cache.mkdir()
    monkeypatch.setattr(tempfile, "mkdtemp",
                        lambda *a, dir=None, **k: (_ for _ in ()).throw(permission_denied(dir)))
    spec = spec_file(tmp_path, tmp_path, name="synthetic", root=None, count=40, size=32)
    result = train(str(spec), "--out", str(tmp_path / "run"), env={"HYDRANET_CACHE": str(cache)})
    no_traceback(result)
    assert result.exit_code == 1, result.output
    message = result.output
    assert str(cache / "synthetic") in message and "permission denied" in message.lower(), message
    assert "HYDRANET_CACHE" in message and "data.root" in message, message


def test_synthetic_data_root_that_cannot_be_written_names_data_root(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    spec = spec_file(tmp_path, tmp_path, name="synthetic", root=str(blocker / "faces"), count=40, size=32)
    result = train(str(spec), "--out", str(tmp_path / "run"))
    no_traceback(result)
    assert result.exit_code == 1 and str(blocker) in result.output and "data.root" in result.output, result.output


@pytest.mark.parametrize("command", ["list", "clear"])
def test_cache_commands_say_the_cache_folder_is_a_file(tmp_path, command):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    result = CliRunner().invoke(cli, ["cache", command], env={"HYDRANET_CACHE": str(blocker)})
    no_traceback(result)
    assert result.exit_code == 1, result.output
    assert str(blocker) in result.output and "not a folder" in result.output and "HYDRANET_CACHE" in result.output
    assert blocker.is_file()


@pytest.mark.parametrize("command", ["list", "clear"])
def test_cache_commands_say_the_cache_folder_cannot_be_read(tmp_path, monkeypatch, command):
    cache = tmp_path / "cache"
    (cache / "decoded").mkdir(parents=True)
    deny(monkeypatch, os, "scandir", lambda path: Path(path) == cache)
    result = CliRunner().invoke(cli, ["cache", command], env={"HYDRANET_CACHE": str(cache)})
    no_traceback(result)
    assert result.exit_code == 1, result.output
    assert str(cache) in result.output and "permission denied" in result.output.lower(), result.output


def test_cache_clear_says_what_it_could_not_remove(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    report = cache / "data-reports" / ("utkface-" + "0" * 12 + ".txt")
    report.parent.mkdir(parents=True)
    report.write_text("x\n")
    old = 1_000_000_000
    os.utime(report, (old, old))
    deny(monkeypatch, Path, "unlink", lambda path: Path(path) == report)
    result = CliRunner().invoke(cli, ["cache", "clear"], env={"HYDRANET_CACHE": str(cache)})
    no_traceback(result)
    assert report.is_file()
    assert "could not remove 1 item" in result.output and "permission denied" in result.output.lower(), result.output
