"""Links in a folder given to `hydranet predict` that lead nowhere: each gets a row that says why.

A folder of photos synced from elsewhere often holds links whose targets
moved, and now and then two links that point at each other; leaving them out
without a word would lose an image from the results unnoticed.
"""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner

from conftest import make_image
from hydranet.core.cli import cli
from hydranet.core.paths import dead_link


def test_predict_on_a_folder_gives_dead_links_their_own_rows(checkpoint, tmp_path):
    images = tmp_path / "images"
    make_image(images / "a.jpg")
    os.symlink(tmp_path / "moved.jpg", images / "broken.jpg")
    os.symlink("loop2.jpg", images / "loop1.jpg")
    os.symlink("loop1.jpg", images / "loop2.jpg")
    result = CliRunner().invoke(cli, ["predict", str(checkpoint), str(images), "--csv", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = {Path(line.split(",")[0]).name: line for line in result.output.splitlines() if ".jpg," in line}
    assert set(rows) == {"a.jpg", "broken.jpg", "loop1.jpg", "loop2.jpg"}
    assert f"broken symbolic link (to {tmp_path / 'moved.jpg'}, which does not exist)" in rows["broken.jpg"]
    assert "symbolic link loop (to loop2.jpg, which leads back to a link already followed)" in rows["loop1.jpg"]
    assert "error" not in rows["a.jpg"].split(",")[-1] and rows["a.jpg"].rstrip().endswith(",")


def test_dead_link_tells_a_working_link_file_and_folder_apart(tmp_path):
    image = make_image(tmp_path / "a.jpg")
    os.symlink(image, tmp_path / "works.jpg")
    assert dead_link(tmp_path / "works.jpg") is None and dead_link(image) is None and dead_link(tmp_path) is None
    assert dead_link(tmp_path / "nothing.jpg") is None
