"""`hydranet eval` says what its metrics cover: how many images it scored, and what the data lost before that.

Training prints a data report (skipped entries, unreadable images, invalid
labels) before its first epoch. Evaluation used to score the rest in
silence, so metrics on a subset read as metrics on all the data.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from hydranet.core.cli import cli


def messy_copy(faces: Path, folder: Path) -> Path:
    """12 good faces, one broken image with a good name, one bad name, one label no task accepts."""
    folder.mkdir()
    for source in sorted(faces.glob("*.jpg"))[:12]:
        shutil.copy(source, folder / source.name)
    (folder / "30_0_1_20170116000000099.jpg.chip.jpg").write_bytes(b"not a jpeg")
    shutil.copy(next(faces.glob("*.jpg")), folder / "no_labels_here.jpg")
    shutil.copy(next(faces.glob("*.jpg")), folder / "200_5_9_20170116000000098.jpg.chip.jpg")  # every label invalid
    return folder


def eval_cli(*args) -> "object":
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_eval_says_how_many_images_it_scored_and_what_was_left_out(checkpoint: Path, faces: Path,
                                                                    tmp_path: Path) -> None:
    folder = messy_copy(faces, tmp_path / "messy")
    text = eval_cli("eval", checkpoint, "--data", folder, "--split", "all", "--device", "cpu").stdout
    assert ("data: 12 images evaluated (all splits of 12 usable images); 3 of the 15 images listed were left "
            "out: 1 entry of dataset 'utkface' skipped; 1 unreadable image skipped; 1 sample with no valid label "
            "for any task skipped") in text
    assert "  1 unreadable image skipped:" in text
    assert "30_0_1_20170116000000099.jpg.chip.jpg: not an image" in text
    assert f"{folder / 'no_labels_here.jpg'}: file name does not match" in text
    assert "1 invalid 'age' label for task 'age' (treated as missing)" in text
    assert "all 3 tasks" not in text and "12 images; baseline" in text

    result = eval_cli("eval", checkpoint, "--data", folder, "--split", "all", "--json", "--device", "cpu")
    data = json.loads(result.stdout)["data"]
    assert (data["evaluated"], data["usable"], data["listed"]) == (12, 12, 15)
    assert data["summary"].startswith("data: 12 images evaluated")
    problems = {p["problem"]: p for p in data["problems"]}
    unreadable = problems["1 unreadable image skipped"]
    assert unreadable["outcome"] == "skipped" and unreadable["items"][0]["source"].endswith("99.jpg.chip.jpg")
    assert "1 unreadable image skipped:" in data["report"]
    assert "3 of the 15 images listed were left out" in result.stderr  # seen on a terminal, stdout stays JSON


def test_eval_of_clean_data_says_nothing_was_left_out(checkpoint: Path, faces: Path) -> None:
    text = eval_cli("eval", checkpoint, "--device", "cpu").stdout
    assert "data: 60 images evaluated (the validation split of 240 usable images); nothing was left out" in text
