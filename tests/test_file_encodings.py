"""Text files as Windows and macOS tools write them: a spec, a label CSV, a --files-from list, and the cache variable.

Each test is a file as a user brought it (Notepad's "UTF-8 with BOM", Excel's
"Unicode Text", PowerShell 5's `dir > list.txt`, a cp1252 export, a `.env`
file's unexpanded `$HOME`), read through the command or dataset that reads it:
it either reads as meant, or the message says what the file is and how to
convert it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import make_image
from hydranet.core.cli import cli
from hydranet.core.errors import DataError
from test_csv_reading import read

TOML_SPEC = 'tasks = ["age"]\ndata = "synthetic"\n'
YAML_SPEC = "tasks: [age]\ndata: synthetic\n"


def invoke(*args: str | Path, input: bytes | str | None = None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def said(result) -> str:
    return " ".join(result.output.split())


# ------------------------------------------------------------------ spec files


@pytest.mark.parametrize("suffix, text", [(".toml", TOML_SPEC), (".yaml", YAML_SPEC)])
def test_a_spec_saved_as_utf8_with_bom_validates(tmp_path: Path, suffix: str, text: str) -> None:
    """TOML said "invalid TOML: Invalid statement (at line 1, column 1)" for Notepad's "UTF-8 with BOM"."""
    spec = tmp_path / f"my{suffix}"
    spec.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    result = invoke("spec", "validate", spec)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{spec}: ok"


@pytest.mark.parametrize("encoding, bom", [("utf-16-le", "FF FE"), ("utf-16-be", "FE FF")])
def test_a_utf16_spec_is_called_utf16_and_converted_from_it(tmp_path: Path, encoding: str, bom: str) -> None:
    """It said "not a text file (byte 0 is not UTF-8)"."""
    spec = tmp_path / "my.toml"
    spec.write_bytes("\ufeff".encode(encoding) + TOML_SPEC.encode(encoding))
    result = invoke("spec", "validate", spec)
    assert result.exit_code == 1
    assert (f"the spec file is UTF-16 text (it starts with the bytes {bom}, UTF-16's byte-order mark), not UTF-8; "
            "save it as UTF-8 (an editor's Save As or encoding menu: 'UTF-8'), or convert it "
            "(iconv -f utf-16 -t utf-8)") in said(result)
    assert "not a text file" not in said(result)


def test_a_cp1252_spec_names_the_line_column_and_character(tmp_path: Path) -> None:
    """It said "not a text file (byte 117 is not UTF-8)" for a spec with a comment written in Latin-1."""
    spec = tmp_path / "my.yaml"
    spec.write_bytes(f"# Josés spec\n{YAML_SPEC}".encode("cp1252"))
    result = invoke("spec", "validate", spec)
    assert result.exit_code == 1
    assert ("the spec file is not UTF-8 text (line 1, column 6: the byte b'\\xe9' ('é' in Latin-1/cp1252): "
            "invalid continuation byte); save it as UTF-8 (an editor's Save As or encoding menu: 'UTF-8'), or "
            "convert it (iconv -f cp1252 -t utf-8)") in said(result)


def test_binary_bytes_are_still_no_text_file(tmp_path: Path) -> None:
    spec = tmp_path / "my.yaml"
    spec.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    result = invoke("spec", "validate", spec)
    assert result.exit_code == 1
    assert ("the spec file is not a text file (byte 0 is not UTF-8, and byte 8 is b'\\x00', a control character "
            "no text holds); is it the right file?") in said(result)


# ------------------------------------------------------------------ the label CSV


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    make_image(root / "a.jpg", 8)
    return root


def test_a_utf16_csv_is_called_utf16_not_cp1252(photos: Path) -> None:
    """Excel's "Unicode Text" was advised `iconv -f cp1252 -t utf-8`, which turns it into garbage."""
    with pytest.raises(DataError) as error:
        read(photos, "\ufefffile\tage\r\na.jpg\t30\r\n".encode("utf-16-le"))
    assert str(error.value) == (f"{photos / 'labels.csv'} is UTF-16 text (it starts with the bytes FF FE, UTF-16's "
                                "byte-order mark), not UTF-8; save it as a UTF-8 CSV (Excel: Save As, 'CSV UTF-8'), "
                                "or convert it (iconv -f utf-16 -t utf-8)")


def test_excels_separator_line_gives_the_separator_and_line_numbers_count_it(photos: Path) -> None:
    """It said "has no 'file' column (its columns: sep=, )"."""
    dataset, records = read(photos, b"sep=;\r\nfile;age;note\r\na.jpg;30;x,y\r\nmissing.jpg;40;z\r\n")
    assert records == {"a.jpg": {"age": "30", "note": "x,y"}}  # ';' separates, the ',' is in a cell
    assert [where for where, _ in dataset.problems] == [f"{photos / 'labels.csv'}:4"]  # the file's own line 4


# ------------------------------------------------------------------ predict --files-from


@pytest.mark.parametrize("encoding, bom", [("utf-16-le", "FF FE"), ("utf-16-be", "FE FF")])
def test_a_utf16_list_is_called_utf16(tmp_path: Path, encoding: str, bom: str) -> None:
    """PowerShell 5's `dir -Name > list.txt`: it said "cannot read it ('utf-8' codec can't decode byte 0xff ...)"."""
    listing = tmp_path / "list.txt"
    listing.write_bytes("\ufeffa.jpg\r\nb.jpg\r\n".encode(encoding))
    result = invoke("predict", tmp_path / "best.pt", "--files-from", listing)
    assert result.exit_code == 1
    assert (f"--files-from {listing} is UTF-16 text (it starts with the bytes {bom}, UTF-16's byte-order mark), not "
            "UTF-8; save it as UTF-8 (PowerShell: ... | Out-File -Encoding utf8 FILE), or convert it "
            "(iconv -f utf-16 -t utf-8)") in said(result)
    assert "codec" not in said(result)


def test_a_cp1252_list_names_the_line_column_and_character(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_bytes("a.jpg\r\nJosé.jpg\r\n".encode("cp1252"))
    result = invoke("predict", tmp_path / "best.pt", "--files-from", "-", input=listing.read_bytes())
    assert result.exit_code == 1
    assert ("--files-from stdin is not UTF-8 text (line 2, column 4: the byte b'\\xe9' ('é' in Latin-1/cp1252): "
            "invalid continuation byte); save it as UTF-8 (PowerShell: ... | Out-File -Encoding utf8 FILE), or "
            "convert it (iconv -f cp1252 -t utf-8)") in said(result)


def test_listed_backslash_and_nul_separated_paths_are_found(tmp_path: Path) -> None:
    """`sub dir\\photo.JPG` was "not found", though the label CSV reads `\\` as `/`; `find -print0`'s list was one
    "line 1" with its NUL characters shown. Only the path that is truly missing is refused now."""
    make_image(tmp_path / "sub dir" / "photo.JPG", 8)
    make_image(tmp_path / "b.jpg", 8)
    listing = tmp_path / "list.txt"
    listing.write_text("sub dir\\photo.JPG\r\ngone.jpg\r\n", encoding="utf-8")
    result = invoke("predict", tmp_path / "best.pt", "--files-from", listing)
    assert result.exit_code == 1
    assert (f"--files-from {listing}: 1 listed path not found: line 2: {tmp_path / 'gone.jpg'} "
            "List files and folders that exist, one a line.") in said(result)
    listing.write_bytes(b"./b.jpg\x00./sub dir/photo.JPG\x00./gone.jpg\x00")
    result = invoke("predict", tmp_path / "best.pt", "--files-from", listing)
    assert result.exit_code == 1
    assert (f"--files-from {listing}: 1 listed path not found: entry 3: {tmp_path / 'gone.jpg'} "
            "List files and folders that exist, one a line.") in said(result)
    assert "\x00" not in result.output


def test_predict_reads_a_nul_separated_list_from_stdin(checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    make_image(tmp_path / "sub dir" / "photo.JPG", 16)
    make_image(tmp_path / "b.jpg", 16)
    monkeypatch.chdir(tmp_path)
    result = invoke("predict", checkpoint, "--files-from", "-", "--json", input=b"b.jpg\x00sub dir\\photo.JPG\x00")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["file"] for row in rows] == ["b.jpg", "sub dir/photo.JPG"]
    assert not any("error" in row for row in rows)


# ------------------------------------------------------------------ the cache folder


def test_a_relative_xdg_cache_home_is_ignored(tmp_path: Path, monkeypatch) -> None:
    """The XDG spec: a relative XDG_CACHE_HOME is to be ignored; it put the cache below the current folder."""
    monkeypatch.delenv("HYDRANET_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", "$HOME/.cache")
    monkeypatch.chdir(tmp_path)
    result = invoke("cache", "list")
    assert result.exit_code == 0, result.output
    assert f"cache folder: {tmp_path / 'home' / '.cache' / 'hydranet'} " in result.output


def test_a_relative_hydranet_cache_is_made_absolute_and_warned_about_once(tmp_path: Path, monkeypatch) -> None:
    """A `.env` file's literal `$HOME/hc` put a cache in each folder hydranet ran from, without a word."""
    monkeypatch.setenv("HYDRANET_CACHE", "$HOME/hc")
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = invoke("cache", "list"), invoke("cache", "list")
    assert first.exit_code == 0 and second.exit_code == 0, first.output
    assert f"cache folder: {tmp_path / '$HOME' / 'hc'} " in first.output
    assert [str(warning.message) for warning in caught] == [
        f"HYDRANET_CACHE='$HOME/hc' is a relative path, so the cache went to {tmp_path / '$HOME' / 'hc'}, below the "
        "current folder, where `hydranet cache list` run from another folder does not look; it holds '$HOME', which "
        "no shell expanded (a .env file or a quoted value keeps it as written): write the folder out"]


def test_a_plainly_relative_hydranet_cache_is_told_to_be_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HYDRANET_CACHE", "hc")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning) as caught:
        result = invoke("cache", "list")
    assert f"cache folder: {tmp_path / 'hc'} " in result.output
    assert str(caught[0].message).endswith(f"went to {tmp_path / 'hc'}, below the current folder, where `hydranet "
                                           "cache list` run from another folder does not look; set it to an "
                                           "absolute path")


def test_the_command_line_shows_hydranet_s_own_warnings_as_warning_lines(tmp_path: Path) -> None:
    """Not Python's 'FILE:LINE: UserWarning: ...' and a line of source (pytest captures warnings: a real process)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HYDRANET_CACHE": "hc"}
    done = subprocess.run([sys.executable, "-c", "from hydranet.core.cli import main; main()", "cache", "list"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("warning: HYDRANET_CACHE='hc' is a relative path")
    assert "UserWarning" not in done.stderr


@pytest.mark.parametrize("root, why", [
    ("faces\\part1", "(it is written with '\\', which is no path separator here, and faces/part1 exists: write it "
                     "with '/')"),
    ("$DATA/faces", "(it holds '$DATA', which nothing expanded: a spec is not read by a shell, so write the path "
                    "out)"),
    ("elsewhere", "in {cwd} (the current folder: a relative path counts from there)"),
])
def test_a_data_root_that_is_not_there_says_what_may_have_made_it(tmp_path: Path, monkeypatch, root, why) -> None:
    """It said only "does not exist": a Windows path, a .env's variable and a folder counted from elsewhere alike."""
    (tmp_path / "faces" / "part1").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "demo", "--set", f"data={{name: utkface, root: '{root}'}}", "--no-progress")
    assert result.exit_code == 1
    assert f"UTKFace folder {root} does not exist {why.format(cwd=tmp_path)}; download UTKFace" in result.output
