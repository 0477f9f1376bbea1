"""Bad and unusual images: unreadable ones are skipped, counted and listed; readable ones convert right.

Each kind is tried twice: directly through `decode_images`, and through the
real path (a UTKFace-format folder, `hydranet.train` and `load_prepared_data`),
where the skipped files must show up in the run's train.log and `data.strict`
must make them fatal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hydranet
from conftest import tiny_spec
from hydranet.core.data import SHOW_PROBLEMS
from hydranet.core.decode import BACKGROUND, decode_images
from hydranet.core.engine import load_prepared_data
from hydranet.core.errors import DataError
from hydranet.core.spec import load_spec

SIZE = 16  # tiny_spec's image_size
BOMB_LIMIT = 3000  # Image.MAX_IMAGE_PIXELS during the tests; Pillow refuses images over twice this

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


# --- files ---------------------------------------------------------------------------------------

def noise_jpeg(path: Path, size: int = 48, seed: int = 0) -> Path:
    """A real JPEG with detail in every block, so that half of it is really missing data."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)
    return path


def zero_byte(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def truncated_jpeg(path: Path) -> Path:
    noise_jpeg(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def text_as_jpeg(path: Path) -> Path:
    path.write_text("age,gender\n30,0\nthis is a CSV someone renamed to .jpg\n")
    return path


def huge_png(path: Path) -> Path:
    """100x100 = 10,000 pixels: over twice BOMB_LIMIT, so Pillow calls it a decompression bomb."""
    Image.new("RGB", (100, 100), (10, 20, 30)).save(path, format="PNG")
    return path


def gray_jpeg(path: Path) -> Path:
    Image.new("L", (32, 32), 77).save(path, format="JPEG", quality=95)
    return path


def cmyk_jpeg(path: Path) -> Path:
    Image.new("RGB", (32, 32), (200, 100, 50)).convert("CMYK").save(path, format="JPEG", quality=95)
    return path


SIXTEEN_BIT = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (32, 1))  # a horizontal ramp over the full range


def sixteen_bit_png(path: Path) -> Path:
    image = Image.fromarray(SIXTEEN_BIT)
    assert image.mode == "I;16"
    image.save(path, format="PNG")
    return path


def rgba_png(path: Path) -> Path:
    """Left half opaque red; right half fully transparent, hiding green."""
    image = Image.new("RGBA", (32, 32), (*GREEN, 0))
    image.paste((*RED, 255), (0, 0, 16, 32))
    image.save(path, format="PNG")
    return path


def palette_png(path: Path) -> Path:
    """Palette index 0 (green) is the transparent colour; the left half uses index 1 (red)."""
    image = Image.new("P", (32, 32), 0)
    image.putpalette([*GREEN, *RED] + [0] * (256 * 3 - 6))
    image.paste(1, (0, 0, 16, 32))
    image.save(path, format="PNG", transparency=0)
    return path


def exif_rotated_jpeg(path: Path) -> Path:
    """Stored landscape (left red, right blue) with EXIF orientation 6: shown portrait, red on top."""
    image = Image.new("RGB", (64, 32), RED)
    image.paste(BLUE, (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return path


UNREADABLE = {  # kind -> (writer, words the reported reason must contain)
    "zero_byte": (zero_byte, "empty file (0 bytes)"),
    "truncated": (truncated_jpeg, "truncated"),
    "not_an_image": (text_as_jpeg, "not an image"),
    "huge": (huge_png, "decompression bomb"),
}
READABLE = {
    "gray": gray_jpeg,
    "cmyk": cmyk_jpeg,
    "sixteen_bit": sixteen_bit_png,
    "rgba": rgba_png,
    "palette": palette_png,
    "exif": exif_rotated_jpeg,
}
SUFFIX = {"huge": ".png", "sixteen_bit": ".png", "rgba": ".png", "palette": ".png"}


def close(pixel, expected, tolerance: int = 12) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, expected))


def check_converted(kind: str, image: np.ndarray | torch.Tensor) -> None:
    """`image` is (3, SIZE, SIZE) uint8; assert it shows what the source file shows."""
    image = np.asarray(image)
    assert image.shape == (3, SIZE, SIZE) and image.dtype == np.uint8
    left, right = image[:, SIZE // 2, 2], image[:, SIZE // 2, SIZE - 3]
    if kind == "gray":
        assert close(image[:, 8, 8], (77, 77, 77), 3)
    elif kind == "cmyk":
        assert close(image[:, 8, 8], (200, 100, 50))
    elif kind == "sixteen_bit":
        # scaled to 8 bits (the high byte), not clipped: clipping turns all but the darkest pixels white
        assert abs(image.mean() - SIXTEEN_BIT.mean() / 256) < 2.0
        assert image[0, 8, 0] < 20 and image[0, 8, -1] > 235
        assert np.all(np.diff(image[0, 8].astype(int)) >= 0)  # the ramp survives, monotonic
    elif kind in ("rgba", "palette"):
        assert close(left, RED), left
        assert close(right, BACKGROUND), f"transparent pixels must be composited onto {BACKGROUND}, got {right}"
    elif kind == "exif":
        top, bottom = image[:, 2], image[:, SIZE - 3]
        for column in (3, SIZE - 4):  # upright: red above blue across the whole width
            assert close(top[:, column], RED), top[:, column]
            assert close(bottom[:, column], BLUE), bottom[:, column]
    else:  # pragma: no cover
        raise AssertionError(kind)


@pytest.fixture
def bomb_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink Pillow's decompression-bomb limit so a 100x100 image counts as huge.

    Fewer than 256 images decode inline (no worker processes), so the patch applies.
    """
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", BOMB_LIMIT)


# --- directly through decode_images --------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_unreadable_image_is_reported_not_raised(kind: str, tmp_path: Path, bomb_limit) -> None:
    writer, reason = UNREADABLE[kind]
    good = noise_jpeg(tmp_path / "good_before.jpg"), noise_jpeg(tmp_path / "good_after.jpg", seed=1)
    bad = writer(tmp_path / f"bad{SUFFIX.get(kind, '.jpg')}")
    decoded = decode_images([str(good[0]), str(bad), str(good[1])], SIZE, progress=False)
    assert [index for index, _ in decoded.failures] == [1]
    assert reason in decoded.failures[0][1]
    assert str(bad) not in decoded.failures[0][1]  # the log line names the file; the reason need not repeat it
    for index in (0, 2):  # its neighbours still decode
        assert decoded.images[index].float().std() > 5  # noise, not the zeros of a skipped row


@pytest.mark.parametrize("kind", sorted(READABLE))
def test_readable_image_modes_convert_correctly(kind: str, tmp_path: Path) -> None:
    path = READABLE[kind](tmp_path / f"img{SUFFIX.get(kind, '.jpg')}")
    decoded = decode_images([str(path)], SIZE, progress=False)
    assert decoded.failures == []
    check_converted(kind, decoded.images[0])


def test_semi_transparent_pixels_are_blended_onto_the_background(tmp_path: Path) -> None:
    path = tmp_path / "half.png"
    Image.new("RGBA", (32, 32), (0, 0, 255, 128)).save(path)
    pixel = decode_images([str(path)], SIZE, progress=False).images[0][:, 8, 8].tolist()
    assert close(pixel, (0, 0, 128), 3)


def test_a_cached_failure_is_still_reported(tmp_path: Path) -> None:
    """The decode cache stores failures too: a second run must not forget the bad file."""
    files = [str(noise_jpeg(tmp_path / "a.jpg")), str(zero_byte(tmp_path / "b.jpg"))]
    first = decode_images(files, SIZE, cache_dir=tmp_path / "cache", progress=False)
    again = decode_images(files, SIZE, cache_dir=tmp_path / "cache", progress=False)
    assert again.from_cache and again.failures == first.failures == [(1, "empty file (0 bytes)")]


# --- through the real path: a UTKFace folder, train.log, strict mode ------------------------------

def utk_name(index: int, age: int = 30, gender: int = 0, race: int = 1) -> str:
    return f"{age}_{gender}_{race}_{20170116000000000 + index}.jpg.chip.jpg"


def write_folder(root: Path, good: int = 16) -> dict[str, Path]:
    """`good` plain faces plus one file of every bad and unusual kind, all with valid UTKFace names."""
    root.mkdir(parents=True)
    for i in range(good):
        noise_jpeg(root / utk_name(i, age=20 + i, gender=i % 2, race=i % 5), size=32, seed=i)
    files = {}
    for i, (kind, writer) in enumerate([*((k, w) for k, (w, _) in UNREADABLE.items()), *READABLE.items()]):
        name = utk_name(100 + i, age=40 + i, gender=i % 2, race=i % 5)
        files[kind] = writer(root / (name[: -len(".jpg")] + SUFFIX.get(kind, ".jpg")))
    return files


def test_training_skips_unreadable_images_and_lists_them_in_train_log(tmp_path: Path, components, bomb_limit) -> None:
    files = write_folder(tmp_path / "utk")
    spec = load_spec(tiny_spec(tmp_path / "utk", epochs=1), components=components)
    result = hydranet.train(spec, out_dir=tmp_path / "run", components=components, progress=False, echo=False)

    log = (tmp_path / "run" / "train.log").read_text()
    assert f"{len(UNREADABLE)} unreadable images skipped:" in log
    for kind, (_, reason) in UNREADABLE.items():
        line = next((line for line in log.splitlines() if files[kind].name in line), None)
        assert line is not None, f"{kind} file not listed in train.log"
        assert reason in line
    usable = 16 + len(READABLE)
    assert f"data: {usable} images" in log
    assert len(result.history) == 1  # and training ran to the end

    data = load_prepared_data(spec, spec.build_tasks(), progress=False)
    assert data.usable == usable
    used = set(torch.cat([data.train_index, data.val_index]).tolist())
    for kind, path in files.items():
        index = data.sources.index(str(path))
        assert (index in used) == (kind in READABLE), kind
        if kind in READABLE:
            check_converted(kind, data.images[index])


def test_strict_mode_makes_an_unreadable_image_fatal_naming_it(tmp_path: Path, components) -> None:
    root = tmp_path / "utk"
    root.mkdir()
    for i in range(6):
        noise_jpeg(root / utk_name(i), size=32, seed=i)
    bad = truncated_jpeg(root / utk_name(50))
    raw = tiny_spec(root, epochs=1)
    raw["data"]["strict"] = True
    spec = load_spec(raw, components=components)
    with pytest.raises(DataError) as caught:
        hydranet.train(spec, out_dir=tmp_path / "run", components=components, progress=False, echo=False)
    message = str(caught.value)
    assert bad.name in message and "truncated" in message
    assert "strict" in message  # and the way out
    assert not (tmp_path / "run" / "last.pt").exists()


def test_only_the_first_few_unreadable_images_are_listed(tmp_path: Path, components) -> None:
    root = tmp_path / "utk"
    root.mkdir()
    for i in range(4):
        noise_jpeg(root / utk_name(i), size=32, seed=i)
    bad = [zero_byte(root / utk_name(10 + i)) for i in range(SHOW_PROBLEMS + 3)]
    spec = load_spec(tiny_spec(root), components=components)
    notes = load_prepared_data(spec, spec.build_tasks(), progress=False).notes
    text = "\n".join(notes)
    assert f"{len(bad)} unreadable images skipped:" in text
    assert sum(path.name in text for path in bad) == SHOW_PROBLEMS
    assert "... and 3 more" in text



def test_a_jpeg_cut_inside_its_header_is_reported_as_truncated(tmp_path: Path) -> None:
    """Pillow says "Truncated File Read" (capital T) when the cut falls in a header segment, not the pixels."""
    path = tmp_path / "50_0_1_20170109150557335.jpg.chip.jpg"
    pixels = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", icc_profile=b"\0" * 4000)  # a large header, like a camera's
    path.write_bytes(path.read_bytes()[:2000])
    (failure,) = decode_images([str(path)], SIZE, progress=False).failures
    assert failure[1].startswith("truncated or damaged file:"), failure


@pytest.mark.parametrize("value, expected", [(0.5, 128), (1.0, 255), (200.0, 200), (-3.0, 0), (float("nan"), 0)])
def test_a_float_tiff_is_scaled_not_clipped_to_black(tmp_path: Path, value: float, expected: int) -> None:
    """Mode F (32-bit float TIFFs): Pillow's own conversion clipped [0, 1] to black, so every such image
    trained as a black square without a word."""
    path = tmp_path / "float.tif"
    Image.fromarray(np.full((20, 20), value, np.float32)).save(path)
    decoded = decode_images([str(path)], SIZE, progress=False)
    assert decoded.failures == []
    assert decoded.images[0].unique().tolist() == [expected]
