"""Inputs hydranet cannot read or write: an unwritable cache folder, folders and files the user may not read,
file names that are not UTF-8, and decode-cache headers edited by hand.

Tests run as root here, and root reads and writes whatever the mode bits say;
so a folder that may not be read or written is simulated by the one OS call
raising PermissionError, or, independently of the user, by a file where a
folder is expected.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from conftest import make_image, tiny_spec
from hydranet.core import decode
from hydranet.core.cli import cli
from hydranet.core.decode import cache_key, decode_images
from hydranet.core.errors import DataError, SpecError
from hydranet.plugins.datasets.utkface import UTKFaceDataset

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


# --- 2. file names that are not UTF-8 ---------------------------------------------------------------------------

#: A UTKFace name whose date is followed by a Latin-1 byte: the parser keeps its 17 date digits, so it is valid.
LATIN1_VALID = os.fsdecode(b"30_0_1_20170116174525125\xe9.jpg.chip.jpg")
#: Here the date ends at the Latin-1 byte, after 4 digits: too short for a date, so the name is malformed.
LATIN1_SHORT_DATE = os.fsdecode(b"30_0_1_2017\xe9.jpg.chip.jpg")
LATIN1_PLAIN = os.fsdecode(b"caf\xe9.jpg")


@pytest.fixture
def small_faces(faces: Path, tmp_path: Path) -> Path:
    """A copy of 40 of the session's faces, to add odd files to."""
    root = tmp_path / "utk"
    root.mkdir()
    for path in sorted(faces.glob("*.jpg"))[:40]:
        shutil.copy2(path, root / path.name)
    return root


def test_the_cache_key_of_a_non_utf8_name_is_stable_and_its_own(tmp_path):
    odd = str(tmp_path / LATIN1_PLAIN)
    assert cache_key([odd], 16) == cache_key([odd], 16)
    assert cache_key([odd], 16) != cache_key([str(tmp_path / "caf\xe9.jpg")], 16)  # é as UTF-8 is another file
    plain = str(tmp_path / "a.jpg")  # a UTF-8 name keeps the key it always had
    expected = f"hydranet-decode-v{decode.DECODE_FORMAT} size=16\n{plain}\0missing\n"
    assert cache_key([plain], 16) == hashlib.sha256(expected.encode()).hexdigest()[:32]


def test_non_utf8_names_are_trained_on_or_listed_escaped(small_faces, tmp_path, components):
    from hydranet.core.data_report import full_report_path
    from hydranet.core.run_setup import load_prepared_data
    from hydranet.core.spec import load_spec

    jpeg = sorted(small_faces.glob("*.jpg"))[0]
    for name in (LATIN1_VALID, LATIN1_SHORT_DATE, LATIN1_PLAIN):
        shutil.copy2(jpeg, small_faces / name)
    for i in range(5):  # more than the report shows, so the full list is written too
        shutil.copy2(jpeg, small_faces / os.fsdecode(b"bad%d\xe9.jpg" % i))
    spec = load_spec(tiny_spec(small_faces), components=components)
    for _ in range(2):  # decoded, then from the cache: the key of the odd names is stable
        data = load_prepared_data(spec, spec.build_tasks(), progress=False)
    assert data.decoded.from_cache
    assert str(small_faces / LATIN1_VALID) in [data.sources[int(i)] for i in data.train_index.tolist()
                                               + data.val_index.tolist()]
    text = "\n".join(data.notes)
    text.encode("utf-8")  # printable and writable as it is
    assert "7 entries of dataset 'utkface' skipped" in text
    assert "30_0_1_2017\\xe9.jpg.chip.jpg: file name does not match" in text and "bad0\\xe9.jpg" in text
    full = full_report_path(spec.data.build(), "utkface").read_text(encoding="utf-8")
    assert "bad4\\xe9.jpg: file name does not match" in full and "caf\\xe9.jpg: file name does not match" in full


def test_non_utf8_names_train_from_the_command_line(small_faces, tmp_path):
    jpeg = sorted(small_faces.glob("*.jpg"))[0]
    shutil.copy2(jpeg, small_faces / LATIN1_VALID)
    shutil.copy2(jpeg, small_faces / LATIN1_PLAIN)
    result = train(str(spec_file(tmp_path, small_faces)), "--out", str(tmp_path / "run"))
    no_traceback(result)
    assert result.exit_code == 0, result.output
    assert "1 entry of dataset 'utkface' skipped" in result.output and "caf\\xe9.jpg" in result.output


# --- 3. data folders that cannot be listed ----------------------------------------------------------------------

@pytest.fixture
def parts(faces: Path, tmp_path: Path) -> Path:
    """part1/ and part2/ of 30 faces each, as the in-the-wild download unpacks."""
    root = tmp_path / "wild"
    for k, part in enumerate(("part1", "part2")):
        (root / part).mkdir(parents=True)
        for path in sorted(faces.glob("*.jpg"))[30 * k:30 * (k + 1)]:
            shutil.copy2(path, root / part / path.name)
    return root


def test_a_subfolder_that_cannot_be_listed_is_reported(parts, monkeypatch, components):
    from hydranet.core.run_setup import load_prepared_data
    from hydranet.core.spec import load_spec

    deny(monkeypatch, os, "scandir", lambda path: Path(path) == parts / "part2")
    dataset = UTKFaceDataset(parts)
    assert len(dataset.samples()) == 30
    assert dataset.problems == [(str(parts / "part2"), "cannot list this folder (permission denied), "
                                                        "so the images in it are left out")]
    spec = load_spec(tiny_spec(parts), components=components)
    data = load_prepared_data(spec, spec.build_tasks(), progress=False)
    assert "1 entry of dataset 'utkface' skipped:" in data.notes
    assert f"  {parts / 'part2'}: cannot list this folder (permission denied), so the images in it are left out" \
        in data.notes


def test_a_subfolder_that_cannot_be_listed_stops_a_strict_run(parts, monkeypatch, tmp_path):
    deny(monkeypatch, os, "scandir", lambda path: Path(path) == parts / "part2")
    result = train(str(spec_file(tmp_path, parts, strict=True)), "--out", str(tmp_path / "run"))
    no_traceback(result)
    assert result.exit_code == 1, result.output
    assert "data.strict is true" in result.output and f"{parts / 'part2'}: cannot list this folder" in result.output


@pytest.mark.parametrize("recursive", [True, False])
def test_a_root_that_cannot_be_listed_says_permission_denied(parts, monkeypatch, recursive):
    deny(monkeypatch, os, "scandir", lambda path: Path(path) == parts)
    monkeypatch.setattr(Path, "iterdir", lambda self: (_ for _ in ()).throw(permission_denied(self)))
    with pytest.raises(DataError) as raised:
        UTKFaceDataset(parts, recursive=recursive).samples()
    message = str(raised.value)
    assert f"cannot list UTKFace folder {parts}: permission denied" in message, message
    assert "no .jpg" not in message


def test_a_root_whose_only_subfolder_cannot_be_listed_says_so(tmp_path, monkeypatch):
    make_image(tmp_path / "root" / "locked" / "30_0_1_20170116174525125.jpg")
    deny(monkeypatch, os, "scandir", lambda path: Path(path) == tmp_path / "root" / "locked")
    with pytest.raises(DataError) as raised:
        UTKFaceDataset(tmp_path / "root").samples()
    assert f"{tmp_path / 'root' / 'locked'} could not be listed (permission denied)" in str(raised.value)


# --- 4. an unreadable spec file or label CSV --------------------------------------------------------------------

def test_an_unreadable_spec_file_names_it_and_the_reason(faces, tmp_path, monkeypatch):
    spec = spec_file(tmp_path, faces)
    deny(monkeypatch, Path, "read_bytes", lambda path: Path(path) == spec)
    result = train(str(spec), "--out", str(tmp_path / "run"))
    no_traceback(result)
    assert result.exit_code == 1, result.output
    assert f"cannot read spec file {spec}" in result.output, result.output
    assert "permission denied" in result.output.lower(), result.output


def test_a_device_file_is_not_a_spec_file():
    result = train("/dev/null")
    no_traceback(result)
    assert result.exit_code == 1 and "/dev/null is not a regular file" in result.output, result.output
    assert "not found" not in result.output


def test_read_spec_file_refuses_a_device_and_an_unreadable_file(tmp_path, monkeypatch):
    from hydranet.core.spec_files import read_spec_file

    with pytest.raises(SpecError, match="is not a regular file"):
        read_spec_file("/dev/null")
    spec = tmp_path / "s.yaml"
    spec.write_text("tasks: [age]\n")
    deny(monkeypatch, Path, "read_bytes", lambda path: Path(path) == spec)
    with pytest.raises(SpecError, match="permission denied"):
        read_spec_file(spec)


def test_an_unreadable_label_csv_names_it_and_the_reason(tmp_path, monkeypatch):
    import builtins

    from hydranet.plugins.datasets.folder import FolderDataset

    make_image(tmp_path / "people" / "a.jpg")
    table = tmp_path / "people" / "labels.csv"
    table.write_text("file,age\na.jpg,30\n")
    deny(monkeypatch, builtins, "open", lambda path: Path(path) == table)
    with pytest.raises(DataError) as raised:
        FolderDataset(tmp_path / "people").samples()
    assert str(raised.value).startswith(f"cannot read label CSV {table}: permission denied"), raised.value


# --- 5. decode-cache headers edited by hand ---------------------------------------------------------------------

@pytest.mark.parametrize("failures", ["x", [[9999, "x"]], [[-1, "x"]], [["0", "x"]], [[0]], [[0, 1]], None, 5,
                                      [[True, "x"]], [[0.5, "x"]]])
def test_a_malformed_failure_list_in_a_cache_header_is_a_miss(faces, tmp_path, failures):
    sources = [str(p) for p in sorted(faces.glob("*.jpg"))[:6]]
    cache = tmp_path / "cache"
    first = decode_images(sources, 16, workers=1, cache_dir=cache, progress=False)
    (header,) = cache.glob("decoded-*.json")
    meta = json.loads(header.read_text())
    header.write_text(json.dumps({**meta, "failures": failures}))
    again = decode_images(sources, 16, workers=1, cache_dir=cache, progress=False)
    assert not again.from_cache and again.failures == [] and torch.equal(again.images, first.images)
    assert json.loads(header.read_text())["failures"] == []  # rewritten whole
    assert decode_images(sources, 16, workers=1, cache_dir=cache, progress=False).from_cache


@pytest.mark.parametrize("meta", [[], "x", {"shape": "abc", "failures": []}, {"failures": []}])
def test_a_cache_header_that_is_no_mapping_or_lacks_a_shape_is_a_miss(faces, tmp_path, meta):
    sources = [str(p) for p in sorted(faces.glob("*.jpg"))[:6]]
    cache = tmp_path / "cache"
    decode_images(sources, 16, workers=1, cache_dir=cache, progress=False)
    (header,) = cache.glob("decoded-*.json")
    header.write_text(json.dumps(meta))
    assert not decode_images(sources, 16, workers=1, cache_dir=cache, progress=False).from_cache
    assert decode_images(sources, 16, workers=1, cache_dir=cache, progress=False).from_cache


def test_training_over_a_hand_edited_cache_header_decodes_again(faces, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    spec = spec_file(tmp_path, faces)
    assert train(str(spec), "--out", str(tmp_path / "run1"), env={"HYDRANET_CACHE": str(cache)}).exit_code == 0
    (header,) = (cache / "decoded").glob("decoded-*.json")
    header.write_text(json.dumps({**json.loads(header.read_text()), "failures": [[9999, "x"]]}))
    result = train(str(spec), "--out", str(tmp_path / "run2"), env={"HYDRANET_CACHE": str(cache)})
    no_traceback(result)
    assert result.exit_code == 0, result.output
    assert "unreadable" not in result.output
