"""What an exported file takes, and how a user outside hydranet prepares it.

- Every format refuses a batch of the wrong shape or dtype (a TorchScript
  trace used to take any and return normal-looking outputs), also when
  loaded where hydranet is not installed.
- The docs' copy-paste `preprocess()` (docs/guides/using-models.md) gives
  the pixels hydranet gives, for every kind of image hydranet reads.
- An output name that does not end as the format's files do is warned about.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from hydranet.core import export as export_module
from hydranet.core.cli import cli
from hydranet.core.decode import decode_images
from hydranet.core.export import ExportError, ExportResult, check_images, check_target, export_checkpoint
from hydranet.core.exported_files import read_manifest
from hydranet.core.inference import TrainedModel

SIZE = 16  # the conftest checkpoint's image size
GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guides" / "using-models.md"
needs_onnx = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="pip install 'hydranet[export]'")
#: What a user may wrongly hand over: another size, one channel, uint8 0-255 pixels, no batch dimension, float64.
WRONG = {
    "32 px": lambda: torch.rand(1, 3, 32, 32),
    "1 channel": lambda: torch.rand(1, 1, SIZE, SIZE),
    "uint8": lambda: torch.randint(0, 256, (1, 3, SIZE, SIZE), dtype=torch.uint8),
    "no batch dimension": lambda: torch.rand(3, SIZE, SIZE),
    "float64": lambda: torch.rand(2, 3, SIZE, SIZE, dtype=torch.float64),
}


#: what an export says when its torch cannot keep the dtype check in a .pt2 with a free batch size (torch 2.4)
NO_DTYPE_CHECK = "cannot keep a dtype check in a torch.export file"


@pytest.fixture(scope="module")
def exported_results(checkpoint, tmp_path_factory) -> dict[str, ExportResult]:
    """The conftest checkpoint in each format whose packages are installed, checked against PyTorch."""
    folder = tmp_path_factory.mktemp("exports")
    formats = ["torchscript", "exported"] + (["onnx"] if importlib.util.find_spec("onnxruntime") else [])
    return {fmt: export_checkpoint(checkpoint, folder / f"m{export_module.SUFFIX[fmt]}", fmt) for fmt in formats}


@pytest.fixture(scope="module")
def exports(exported_results) -> dict[str, Path]:
    return {fmt: result.path for fmt, result in exported_results.items()}


def load_plain(path: Path, fmt: str):
    """The file loaded with its own runtime, as a deployment would: no hydranet in between."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda images: session.run(None, {"images": images.numpy()})
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path))
    return torch.export.load(str(path)).module()


# ---------------------------------------------------------------- input checks


@pytest.mark.parametrize("fmt", [pytest.param("onnx", marks=needs_onnx), "torchscript", "exported"])
@pytest.mark.parametrize("wrong", list(WRONG))
def test_every_format_refuses_a_wrong_shape_or_dtype(fmt, wrong, exports, exported_results):
    run = load_plain(exports[fmt], fmt)
    assert len(run(torch.rand(4, 3, SIZE, SIZE))) == 3  # a right batch, of a size not traced with, runs
    if wrong == "uint8" and any(NO_DTYPE_CHECK in w for w in exported_results[fmt].warnings):
        assert fmt == "exported" and NO_DTYPE_CHECK in exported_results[fmt].manifest["input"]["note"]
        return  # this torch's .pt2 checks the shape only, as the export said and its manifest says
    with pytest.raises(Exception) as refused:
        run(WRONG[wrong]())
    if fmt == "torchscript":  # ours; the other runtimes word their own
        assert f"this model expects images as (N, 3, {SIZE}, {SIZE}) float32 RGB in [0, 1], got" in str(refused.value)


def test_the_torchscript_check_says_what_was_given_and_what_is_expected():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        scripted = torch.jit.script(check_images)  # the function the TorchScript file carries, compiled as there
    for images, given in [(torch.rand(2, 3, 32, 32), "got float32 of shape (2, 3, 32, 32);"),
                          (torch.rand(1, 1, 8, 8), "got float32 of shape (1, 1, 8, 8);"),
                          (torch.zeros(3, 8, 8, dtype=torch.uint8),
                           "got uint8 of shape (3, 8, 8) (divide 0-255 pixels by 255);"),
                          (torch.zeros(1, 3, 8, 8, dtype=torch.complex64), "got another dtype of shape (1, 3, 8, 8);")]:
        with pytest.raises(ValueError, match=re.escape(given)) as eager:
            check_images(images, 8)
        assert str(eager.value).startswith("this model expects images as (N, 3, 8, 8) float32 RGB in [0, 1], ")
        with pytest.raises(Exception) as compiled:
            scripted(images, 8)
        assert str(eager.value) in str(compiled.value)  # the same words, in Python and in TorchScript
    check_images(torch.rand(5, 3, 8, 8), 8)
    with pytest.raises(ValueError) as shown:
        check_images(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), 32)
    assert f"ValueError: {shown.value}\n" in GUIDE.read_text(encoding="utf-8")  # the guide quotes it as it is


def test_a_torchscript_file_checks_its_input_where_hydranet_is_not_installed(exports):
    program = textwrap.dedent(f"""
        import sys, warnings
        sys.modules["hydranet"] = None  # importing it fails: the file must stand alone
        import torch
        warnings.simplefilter("ignore", FutureWarning)
        model = torch.jit.load({str(exports['torchscript'])!r})
        print([tuple(o.shape) for o in model(torch.rand(4, 3, {SIZE}, {SIZE}))])
        try:
            model(torch.randint(0, 256, (1, 3, {SIZE}, {SIZE}), dtype=torch.uint8))
        except Exception as error:
            print(str(error).strip().splitlines()[-1])
    """)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "[(4, 1), (4, 1), (4, 5)]"
    assert f"expects images as (N, 3, {SIZE}, {SIZE}) float32 RGB in [0, 1], got uint8" in done.stdout


def test_the_manifest_says_how_to_decode_and_that_the_range_is_not_checked(exports):
    spec = read_manifest(exports["torchscript"])["input"]
    assert "shifted right 8 bits" in spec["decode"] and "over opaque black (0, 0, 0)" in spec["decode"]
    assert "ImageOps.fit" in spec["resize"] and "the range is not" in spec["note"]


# ---------------------------------------------------------------- output names


def test_an_output_named_as_another_format_gets_a_warning(checkpoint, tmp_path):
    result = CliRunner().invoke(cli, ["export", str(checkpoint), "--format", "torchscript", "--no-check",
                                      "--out", str(tmp_path / "weird.onnx")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (f"warning: {tmp_path / 'weird.onnx'} holds a TorchScript model, but its name ends in .onnx, the ending "
            "of ONNX files") in result.output
    assert "TorchScript files end in .ts.pt: rename it weird.ts.pt" in result.output
    odd = export_checkpoint(checkpoint, tmp_path / "model.bin", "exported", check=False)
    assert [w for w in odd.warnings if NO_DTYPE_CHECK not in w] == [f"{tmp_path / 'model.bin'} holds a torch.export model, but its name does not end in "
                            ".pt2, the usual ending of torch.export files: tools that go by the name cannot tell "
                            "its format (hydranet's read_manifest then needs fmt='exported')"]
    assert export_checkpoint(checkpoint, tmp_path / "model.ts.pt", "torchscript", check=False).warnings == []


def test_a_refused_output_file_is_named_with_the_right_article(checkpoint, tmp_path):
    notes = tmp_path / "notes.onnx"
    notes.write_text("mine\n")
    with pytest.raises(ExportError, match="notes.onnx exists and is not an onnx file hydranet exported"):
        check_target(checkpoint, notes, "onnx")
    with pytest.raises(ExportError, match="is not an exported file hydranet exported"):
        check_target(checkpoint, notes, "exported")
    with pytest.raises(ExportError, match="is not a torchscript file hydranet exported"):
        check_target(checkpoint, notes, "torchscript")


# ---------------------------------------------------------------- the docs' preprocess()


def docs_preprocess():
    """The guide's `preprocess()`, executed from its code block, after checking it imports only PIL and numpy."""
    blocks = re.findall(r"^```python\n(.*?)^```", GUIDE.read_text(encoding="utf-8"), flags=re.S | re.M)
    found = [block for block in blocks if "def preprocess(" in block]
    assert len(found) == 1, "docs/guides/using-models.md should show one preprocess() to copy"
    tree = ast.parse(found[0])
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"numpy", "PIL"}
    namespace: dict = {}
    exec(compile(tree, str(GUIDE), "exec"), namespace)
    return namespace["preprocess"]


def image_files(folder: Path) -> dict[str, Path]:
    """One file per kind of image hydranet reads, non-square and larger than SIZE (so cropped and resized)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, rng.integers(0, 256, (72, 96), dtype=np.uint8)])
    rgba[:20, :, 3] = 0  # fully transparent rows over bright colours: dropping alpha would show them
    base = Image.fromarray(rgb)
    palette = base.quantize(16)
    palette.info["transparency"] = 3
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: rotated 90 degrees
    images = {
        "rgb.png": (base, {}), "rgb.jpg": (base, {}), "rotated.jpg": (base, {"exif": exif}),
        "cmyk.jpg": (base.convert("CMYK"), {}), "gray.png": (base.convert("L"), {}),
        "bilevel.png": (base.convert("1"), {}), "palette.png": (base.quantize(16), {}),
        "palette-transparent.png": (palette, {}), "rgba.png": (Image.fromarray(rgba), {}),
        "la.png": (Image.fromarray(rgba).convert("LA"), {}),
        "16bit.png": (Image.fromarray(rng.integers(0, 65536, (72, 96)).astype(np.uint16)), {}),  # mode I;16
        "32bit.tif": (Image.fromarray(rng.integers(-1000, 70000, (72, 96)).astype(np.int32)), {}),  # mode I
        "float.tif": (Image.fromarray(rng.random((72, 96)).astype(np.float32)), {}),  # mode F in [0, 1]
    }
    paths = {}
    for name, (image, options) in images.items():
        image.save(folder / name, **options)
        paths[name] = folder / name
    with Image.open(paths["16bit.png"]) as deep, Image.open(paths["32bit.tif"]) as wide:
        assert (deep.mode, wide.mode) == ("I;16", "I")  # the modes the guide promises to handle
    return paths


def test_the_docs_preprocess_gives_hydranets_pixels_for_every_kind_of_image(checkpoint, tmp_path):
    """Exact equality, not a tolerance: the recipe performs hydranet's own steps (draft, EXIF, mode
    conversion, crop, bilinear resize) with the same PIL calls, so any difference is a missing step,
    and one that touches few pixels (a transparent corner) could hide under a tolerance.

    The reference is training's decode of the files (`decode_images`): the pixels the model learnt from.
    """
    preprocess = docs_preprocess()
    trained = TrainedModel.from_checkpoint(checkpoint)
    files = image_files(tmp_path)
    trained_on = decode_images([str(p) for p in files.values()], SIZE, workers=1, progress=False)
    assert not trained_on.failures
    for (name, path), training in zip(files.items(), trained_on.images):
        recipe = preprocess(path, SIZE)
        assert recipe.dtype == np.float32 and recipe.shape == (1, 3, SIZE, SIZE), name
        np.testing.assert_array_equal(recipe, training.numpy()[None].astype(np.float32) / 255, err_msg=name)
        if not name.endswith(".jpg"):  # JPEG draft decoding is training's; see core/decode.py to_square_rgb
            np.testing.assert_array_equal(trained.preprocess(path).numpy(), training.numpy(), err_msg=name)
    for name in ("rgba.png", "16bit.png", "32bit.tif"):  # what the old recipe, .convert("RGB") alone, got wrong
        with Image.open(files[name]) as image:
            naive = np.asarray(image.convert("RGB").resize((SIZE, SIZE)), dtype=np.float32) / 255
        assert not np.allclose(naive.transpose(2, 0, 1)[None], preprocess(files[name], SIZE), atol=0.1), name


def test_where_torch_cannot_keep_the_dtype_check_the_pt2_is_written_without_it_and_says_so(checkpoint, tmp_path,
                                                                                          monkeypatch):
    """torch 2.4's export fixes the batch size by the dtype assert ("batch was inferred to be a constant"): the
    file is then written without the assert, still taking any batch size, and the export and manifest say so."""
    real_export = torch.export.export

    def export_as_torch_2_4(module, args, **kwargs):
        if module.assert_dtype:
            raise RuntimeError("Constraints violated (batch)! batch was inferred to be a constant (2)")
        return real_export(module, args, **kwargs)

    monkeypatch.setattr(torch.export, "export", export_as_torch_2_4)
    result = export_checkpoint(checkpoint, tmp_path / "m.pt2", "exported")
    assert [w for w in result.warnings if NO_DTYPE_CHECK in w] and NO_DTYPE_CHECK in result.manifest["input"]["note"]
    assert NO_DTYPE_CHECK in read_manifest(result.path)["input"]["note"]
    run = load_plain(result.path, "exported")
    assert len(run(torch.rand(5, 3, SIZE, SIZE))) == 3
    with pytest.raises(Exception):
        run(torch.rand(1, 1, SIZE, SIZE))  # the shape is still checked
