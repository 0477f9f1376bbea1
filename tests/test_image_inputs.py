"""What `predict` and `preprocess` take as one image, and what `hydranet predict DIR` reads in a folder.

Findings of a user walkthrough: a caller's PIL image was shrunk by predict
(JPEG draft mode on the caller's object), an io.BytesIO was iterated as a list
of byte strings, a uint16 array got a hint about [0, 1] floats, and a folder's
.gif and `.hidden.jpg` got no row without a word.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hydranet
from hydranet import InputError
from hydranet.core.decode import decode_file, decode_images, to_square_rgb
from hydranet.core.image_input import (HIDDEN_FILE, IN_HIDDEN_FOLDER, OTHER_FORMAT, RESOURCE_FORK, Skipped,
                                       find_image_files, image_items)
from hydranet.core.inference import TrainedModel

S = 16  # tiny_spec's image_size
BIG = (400, 300)  # over twice S, so libjpeg's draft mode would decode it at reduced scale


@pytest.fixture(scope="module")
def model(checkpoint) -> TrainedModel:
    return hydranet.load(checkpoint)


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JPEG with detail in every block: decoded at reduced scale, its pixels differ from a full decode."""
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    pixels = np.random.default_rng(0).integers(0, 256, (BIG[1], BIG[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)
    return path


# --- a caller's PIL image ----------------------------------------------------------------------

def test_predict_and_preprocess_leave_a_callers_pil_image_as_it_was(model, big_jpeg):
    with Image.open(big_jpeg) as image:
        model.predict(image)
        model.predict([image])
        model.preprocess(image)
        assert (image.size, image.mode) == (BIG, "RGB")
        assert np.asarray(image).shape == (BIG[1], BIG[0], 3)


def test_a_callers_pil_image_gives_the_same_prediction_loaded_or_not(model, big_jpeg):
    with Image.open(big_jpeg) as lazy, Image.open(big_jpeg) as loaded:
        loaded.load()
        assert torch.equal(model.preprocess(lazy), model.preprocess(loaded))
        assert model.predict(lazy) == model.predict(loaded)


def test_only_an_image_hydranet_opened_is_drafted_and_training_decodes_as_before(big_jpeg):
    """Training's decode (and so its cache) keeps draft mode: `decode_file` is that decode, for paths and bytes."""
    trained = decode_images([str(big_jpeg)], S, progress=False).images[0].numpy()
    with Image.open(big_jpeg) as opened:
        opened.draft("RGB", (S, S))
        drafted = to_square_rgb(opened, S)  # the pixels training's decode has always given
    np.testing.assert_array_equal(trained, drafted)
    np.testing.assert_array_equal(decode_file(big_jpeg, S), trained)
    with Image.open(big_jpeg) as caller:
        assert not np.array_equal(to_square_rgb(caller, S), trained)  # not drafted: full decode, then resized
        assert caller.size == BIG


# --- file objects ------------------------------------------------------------------------------

def test_a_binary_file_object_is_one_image_not_a_list(big_jpeg):
    data = io.BytesIO(big_jpeg.read_bytes())
    assert image_items(data) == [data]
    with open(big_jpeg, "rb") as handle:
        assert image_items([handle, str(big_jpeg)]) == [handle, str(big_jpeg)]


def test_a_file_object_decodes_as_its_file_does_and_stays_open(big_jpeg):
    data = io.BytesIO(big_jpeg.read_bytes())
    data.seek(100)  # read from its start wherever it stands, as PIL's Image.open does
    np.testing.assert_array_equal(decode_file(data, S), decode_file(big_jpeg, S))
    assert not data.closed


def test_a_text_mode_file_and_raw_bytes_are_refused_with_the_way_out(big_jpeg):
    with open(big_jpeg, encoding="latin-1") as text:
        with pytest.raises(InputError, match=r"text mode, which cannot hold an image: open it in binary mode, "
                                             r"open\(path, 'rb'\)"):
            image_items(text)
        with pytest.raises(InputError, match=r"images\[1\]: .*text mode"):
            image_items([str(big_jpeg), text])
    with pytest.raises(InputError, match=r"images\[0\] is bytes .*pass io.BytesIO\(data\)"):
        image_items([big_jpeg.read_bytes()])


# --- 16-bit arrays and tensors -----------------------------------------------------------------

SIXTEEN_BIT = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (32, 1))  # a horizontal ramp over the full range


def test_a_uint16_array_or_tensor_reads_as_the_16_bit_file_does(model, tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(SIXTEEN_BIT).save(path)
    with Image.open(path) as image:
        assert image.mode == "I;16"
    from_file = model.preprocess(path)
    assert torch.equal(model.preprocess(SIXTEEN_BIT), from_file)
    assert torch.equal(model.preprocess(torch.from_numpy(SIXTEEN_BIT)), from_file)
    assert torch.equal(model.preprocess(torch.from_numpy(SIXTEEN_BIT)[None]), from_file)
    assert model.predict(SIXTEEN_BIT) == model.predict(str(path))


def test_a_uint16_colour_image_keeps_its_high_byte(model):
    colour = np.stack([SIXTEEN_BIT, SIXTEEN_BIT[:, ::-1], np.full_like(SIXTEEN_BIT, 40000)], axis=-1)
    expected = model.preprocess((colour >> 8).astype(np.uint8))
    assert torch.equal(model.preprocess(colour), expected)
    assert torch.equal(model.preprocess(torch.from_numpy(colour).permute(2, 0, 1)), expected)


@pytest.mark.parametrize("image, expected", [
    (np.zeros((8, 8, 3), np.int32), r"numpy int32 array .* must be uint8 \(0-255\) or uint16 \(0-65535, read as its "
                                    r"high byte.*\.round\(\)\.astype\('uint8'\)"),
    (torch.zeros(3, 8, 8, dtype=torch.int64), r"torch.int64 tensor .* must be uint8 \(0-255\) or uint16 .* or a "
                                              r"float in \[0, 1\].*\.round\(\)\.to\(torch.uint8\)"),
])
def test_other_integer_images_are_refused_naming_uint16(model, image, expected):
    with pytest.raises(InputError, match=expected):
        model.predict(image)


# --- four channels -----------------------------------------------------------------------------

def test_messages_say_four_channels_are_rgba(model):
    with pytest.raises(InputError, match=r"4 \(RGBA, composited onto black\)"):
        model.predict(object())
    with pytest.raises(InputError, match=r"C 1, 3 or 4 \(gray, RGB, RGBA\)"):
        model.predict(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(InputError, match=r"C 1, 3 or 4 \(gray, RGB, RGBA\)"):
        model.predict(torch.zeros(2, 4, 5, dtype=torch.uint8))


# --- folders -----------------------------------------------------------------------------------

def _tree(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith((".jpg", ".png", ".gif")) and not Path(name).name.startswith("._"):
            Image.new("RGB", (8, 8), (120, 80, 60)).save(path)
        else:
            path.write_bytes(b"not an image")


def test_a_folder_search_records_the_image_like_files_it_leaves_out(tmp_path):
    _tree(tmp_path, "a.jpg", "sub/b.png", "c.gif", ".hidden.jpg", "._a.jpg", ".git/x.png", ".thumbnails/t.jpg",
          "notes.txt", ".DS_Store", ".git/HEAD")
    found = find_image_files(tmp_path)
    assert found.files == [tmp_path / "a.jpg", tmp_path / "sub/b.png"]
    assert sorted(found.skipped, key=lambda s: str(s.path)) == [
        Skipped(tmp_path / "._a.jpg", RESOURCE_FORK), Skipped(tmp_path / ".git/x.png", IN_HIDDEN_FOLDER),
        Skipped(tmp_path / ".hidden.jpg", HIDDEN_FILE), Skipped(tmp_path / ".thumbnails/t.jpg", IN_HIDDEN_FOLDER),
        Skipped(tmp_path / "c.gif", OTHER_FORMAT)]
    note = found.note()
    assert note.startswith("skipped 5 files in the folders given that look like images (the search reads .jpg, ")
    assert "name a file to read it anyway" in note
    assert f"  1 hidden (the name starts with a dot), as training's datasets skip them; rename one to include " \
           f"it: {tmp_path / '.hidden.jpg'}" in note.splitlines()
    assert f"  1 {OTHER_FORMAT}: {tmp_path / 'c.gif'}" in note.splitlines()
    assert f"  2 {IN_HIDDEN_FOLDER}: {tmp_path / '.git/x.png'}, {tmp_path / '.thumbnails/t.jpg'}" in note.splitlines()


def test_the_note_shows_a_few_files_per_reason_and_counts_the_rest(tmp_path):
    _tree(tmp_path, "a.jpg", *(f"{i}.gif" for i in range(5)))
    assert find_image_files(tmp_path).note(shown=2).splitlines()[1] == (
        f"  5 {OTHER_FORMAT}: {tmp_path / '0.gif'}, {tmp_path / '1.gif'}, ... and 3 more")


def test_nothing_skipped_gives_no_note_and_a_named_file_is_always_read(tmp_path):
    _tree(tmp_path, "a.jpg", "c.gif", ".hidden.jpg", "notes.txt")
    assert find_image_files(tmp_path / "a.jpg").note() == ""
    named = [tmp_path / "c.gif", tmp_path / ".hidden.jpg"]
    assert find_image_files(named).files == named and find_image_files(named).skipped == []


def test_a_folder_of_only_skipped_images_says_what_it_skipped(tmp_path, model):
    _tree(tmp_path, "c.gif", ".d.jpg")
    with pytest.raises(InputError, match=r"(?s)no image files found in: .*looked for .jpg.*\nskipped 2 files.*c.gif"):
        model.predict_files(tmp_path)
    assert model.predict([tmp_path / "c.gif"])  # a .gif predicts when named


def test_predict_files_warns_about_what_it_skipped_in_a_folder(tmp_path, model):
    """The Python API said nothing of a folder's .gif and .hidden.jpg, while `hydranet predict` names them."""
    _tree(tmp_path, "a.jpg", "c.gif", ".hidden.jpg")
    with pytest.warns(UserWarning, match=r"^skipped 2 files in the folders given that look like images") as caught:
        rows = model.predict_files(tmp_path)
    assert [row["file"] for row in rows] == [str(tmp_path / "a.jpg")]
    assert [str(w.message) for w in caught] == [find_image_files(tmp_path).note()]
    assert caught[0].filename == __file__  # stacklevel: the caller's line, not hydranet's


def test_predict_files_is_silent_when_nothing_is_skipped(tmp_path, model):
    import warnings

    _tree(tmp_path, "a.jpg", "notes.txt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict_files([tmp_path, tmp_path / "a.jpg"])


# --- with core/inference.py and core/cli_model.py taking them (proposed with these) --------------

def test_a_file_is_decoded_as_training_decoded_it(model, big_jpeg):
    trained = decode_images([str(big_jpeg)], S, progress=False).images[0]
    assert torch.equal(model.preprocess(big_jpeg), trained)


def test_predict_takes_a_binary_file_object_as_its_file(model, big_jpeg):
    data = io.BytesIO(big_jpeg.read_bytes())
    assert torch.equal(model.preprocess(data), model.preprocess(big_jpeg))
    with open(big_jpeg, "rb") as handle:
        assert model.predict(handle) == model.predict([data]) == model.predict(str(big_jpeg))
    with pytest.raises(InputError, match=r"cannot read an image from BytesIO .*: not an image, or a format Pillow "
                                         r"cannot read"):
        model.predict(io.BytesIO(b"not an image"))


def test_hydranet_predict_says_what_it_skipped_in_a_folder(checkpoint, tmp_path):
    from click.testing import CliRunner

    from hydranet.core.cli import cli

    _tree(tmp_path / "photos", "a.jpg", "c.gif", ".hidden.jpg")
    result = CliRunner().invoke(cli, ["predict", str(checkpoint), str(tmp_path / "photos"), "--csv"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 2  # the header and a.jpg
    assert "skipped 2 files in the folders given that look like images" in result.stderr
    assert f"{tmp_path / 'photos' / 'c.gif'}" in result.stderr
