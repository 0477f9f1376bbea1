"""Exported models compute what the PyTorch model computes, in every format, at any batch size.

Each format is loaded back with its own runtime (onnxruntime, torch.jit.load,
torch.export.load), never through hydranet, so the files are shown to stand
alone; the reference is `TrainedModel.predict_tensor` on the same pixels.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import pytest
import torch

from hydranet.core import atomic
from hydranet.core import export as export_module
from hydranet.core.errors import CheckpointError, HydranetError
from hydranet.core.export import ExportError, export_checkpoint
from hydranet.core.exported_files import read_manifest
from hydranet.core.inference import TrainedModel

TASKS = ["age", "gender", "ethnicity"]
WIDTHS = {"age": 1, "gender": 1, "ethnicity": 5}


@pytest.fixture(scope="module")
def trained(checkpoint) -> TrainedModel:
    return TrainedModel.from_checkpoint(checkpoint)


def run_onnx(path: Path, images: torch.Tensor) -> dict[str, torch.Tensor]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    shape = session.get_inputs()[0].shape
    assert isinstance(shape[0], str) and shape[1:] == [3, 16, 16], shape  # a named, dynamic batch dimension
    names = [o.name for o in session.get_outputs()]
    assert names == TASKS
    return dict(zip(names, (torch.from_numpy(v) for v in session.run(names, {"images": images.numpy()}))))


def run_torchscript(path: Path, images: torch.Tensor) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path))
    return dict(zip(TASKS, module(images)))


def run_exported(path: Path, images: torch.Tensor) -> dict[str, torch.Tensor]:
    return dict(zip(TASKS, torch.export.load(str(path)).module()(images)))


RUNNERS = {"onnx": run_onnx, "torchscript": run_torchscript, "exported": run_exported}
needs_onnx = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="pip install 'hydranet[export]'")


@pytest.mark.parametrize("fmt", [pytest.param("onnx", marks=needs_onnx), "torchscript", "exported"])
def test_exported_outputs_match_pytorch_at_any_batch_size(fmt, checkpoint, trained, tmp_path):
    out = tmp_path / f"model{export_module.SUFFIX[fmt]}"
    result = export_checkpoint(checkpoint, out, fmt, check=False)  # the test is the check here
    assert result.path == out and out.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # one file: no external data, no temp left
    generator = torch.Generator().manual_seed(1)
    for batch in (1, 5):  # neither is the batch size traced with (2)
        pixels = torch.randint(0, 256, (batch, 3, 16, 16), dtype=torch.uint8, generator=generator)
        expected = trained.predict_tensor(pixels)
        got = RUNNERS[fmt](out, pixels.float() / 255)
        assert list(got) == TASKS
        for task in TASKS:
            assert got[task].shape == (batch, WIDTHS[task])
            torch.testing.assert_close(got[task], expected[task], rtol=1e-4, atol=1e-5)
    manifest = read_manifest(out)
    assert manifest["input"]["shape"] == ["N", 3, 16, 16] and manifest["input"]["range"] == [0.0, 1.0]
    assert [o["name"] for o in manifest["outputs"]] == TASKS
    by_name = {o["name"]: o for o in manifest["outputs"]}
    assert by_name["age"]["unit"] == "years"
    assert by_name["ethnicity"]["class_names"] == ["White", "Black", "Asian", "Indian", "Others"]
    assert "P(female)" in by_name["gender"]["meaning"]


@needs_onnx
def test_torch_2_4_writes_onnx_through_the_torchscript_based_exporter(checkpoint, trained, tmp_path, monkeypatch):
    # torch 2.4's torch.onnx.export has no dynamic_shapes: the older exporter must write the same file.
    monkeypatch.setattr(export_module, "_dynamo_onnx_exporter", lambda: False)
    out = tmp_path / "model.onnx"
    result = export_checkpoint(checkpoint, out, "onnx", opset=18, check=True)
    assert result.max_difference is not None and sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    pixels = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    got, expected = run_onnx(out, pixels.float() / 255), trained.predict_tensor(pixels)
    assert list(got) == TASKS
    for task in TASKS:
        torch.testing.assert_close(got[task], expected[task], rtol=1e-4, atol=1e-5)
    assert [o["name"] for o in read_manifest(out)["outputs"]] == TASKS
    import onnx
    assert onnx.load(str(out)).opset_import[0].version == 18


def test_default_path_sits_next_to_the_checkpoint_and_the_check_runs(checkpoint):
    result = export_checkpoint(checkpoint, fmt="torchscript")
    try:
        assert result.path == checkpoint.with_name("best.ts.pt")
        assert result.max_difference is not None and result.max_difference < 1e-4
    finally:
        result.path.unlink()


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs onnxruntime")
def test_onnx_opset_is_the_one_asked_for(checkpoint, tmp_path):
    import onnx

    out = export_checkpoint(checkpoint, tmp_path / "m.onnx", "onnx", opset=20, check=False).path
    assert {o.domain: o.version for o in onnx.load(str(out)).opset_import}[""] == 20


def test_a_missing_or_corrupt_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*missing.pt"):
        export_checkpoint(tmp_path / "missing.pt", fmt="torchscript")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*bad.pt"):
        export_checkpoint(tmp_path / "bad.pt", fmt="torchscript")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt"]


def test_missing_onnx_packages_say_what_to_install(checkpoint, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(ExportError, match=r"onnxscript.*pip install 'hydranet\[export\]'"):
        export_checkpoint(checkpoint, tmp_path / "m.onnx", "onnx")
    assert not any(tmp_path.iterdir())


def test_a_failed_export_leaves_no_file_and_keeps_an_old_one(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "model.pt2"
    out.write_bytes(b"the previous export")

    def broken(*args):
        raise RuntimeError("unsupported operator aten::frobnicate\nmore detail")

    monkeypatch.setitem(export_module._WRITERS, "exported", broken)
    with pytest.raises(ExportError, match="exporting .*best.pt to exported failed: RuntimeError: unsupported "
                                          "operator aten::frobnicate.*try --format torchscript"):
        export_checkpoint(checkpoint, out, "exported", force=True)  # not an export: replaced only when forced
    assert out.read_bytes() == b"the previous export" and sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2"]


def test_an_export_that_disagrees_with_pytorch_is_not_kept(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "load_exported",
                        lambda path, fmt: lambda images: tuple(torch.zeros(images.shape[0], w) for w in WIDTHS.values()))
    with pytest.raises(ExportError, match="output 'age' differs from PyTorch's by up to"):
        export_checkpoint(checkpoint, tmp_path / "m.ts.pt", "torchscript")
    assert not any(tmp_path.iterdir())


def test_bad_arguments_are_clear_errors(checkpoint, tmp_path):
    with pytest.raises(ExportError, match="--opset applies to ONNX only"):
        export_checkpoint(checkpoint, tmp_path / "m.ts.pt", "torchscript", opset=18)
    with pytest.raises(ExportError, match="opset 12 is too old"):
        export_checkpoint(checkpoint, tmp_path / "m.onnx", "onnx", opset=12)
    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        export_checkpoint(checkpoint, tmp_path / "m", "tflite")  # type: ignore[arg-type]
    assert issubclass(ExportError, HydranetError)
    with pytest.raises(ExportError, match="cannot tell the format of .*model.bin"):
        read_manifest(tmp_path / "model.bin")


def test_atomic_text_writes_replace_whole_files(tmp_path):
    target = tmp_path / "out" / "p.json"
    atomic.atomic_write_text(target, json.dumps([1]))
    atomic.atomic_write_text(target, json.dumps([2]))
    assert json.loads(target.read_text()) == [2] and [p.name for p in target.parent.iterdir()] == ["p.json"]
    with pytest.raises(ZeroDivisionError), atomic.atomic_file(target) as tmp:
        tmp.write_text("half")
        1 / 0
    assert json.loads(target.read_text()) == [2] and [p.name for p in target.parent.iterdir()] == ["p.json"]


def test_an_output_folder_that_cannot_be_made_is_a_clear_error(tmp_path):
    blocker = tmp_path / "small.yaml"
    blocker.write_text("a file, not a folder\n")
    for target in (blocker / "p.json", blocker / "sub" / "p.json"):
        with pytest.raises(atomic.OutputError, match=f"cannot write to the output folder {target.parent}: "
                                                     f"(it|.*small.yaml) is a file, not a folder"):
            atomic.atomic_write_text(target, "[]")
    with pytest.raises(atomic.OutputError, match="Choose another with --out FILE"):
        atomic.writable_folder(blocker / "p.json", hint="Choose another with --out FILE.")
    assert isinstance(atomic.OutputError("x"), (HydranetError, OSError))  # callers catching OSError still do
    assert blocker.read_text() == "a file, not a folder\n" and sorted(p.name for p in tmp_path.iterdir()) == \
        ["small.yaml"]
    made = atomic.writable_folder(tmp_path / "new" / "deeper" / "p.json")
    assert made == tmp_path / "new" / "deeper" and not any(made.iterdir())  # the probe file is gone


def test_export_checks_its_output_folder_before_exporting(checkpoint, tmp_path, monkeypatch):
    def never(*args):
        raise AssertionError("exported although the file cannot be written")

    monkeypatch.setitem(export_module._WRITERS, "torchscript", never)
    (tmp_path / "small.yaml").write_text("")
    with pytest.raises(HydranetError, match="output folder .*small.yaml: it is a file, not a folder. "
                                            "Choose another output file"):
        export_checkpoint(checkpoint, tmp_path / "small.yaml" / "m.ts.pt", "torchscript")


@pytest.mark.parametrize("name, fmt", [("model.ts.pt", "torchscript"), ("model.pt2", "exported")])
def test_the_format_follows_the_out_file_s_ending_when_none_is_given(checkpoint, tmp_path, name, fmt):
    """`--out model.pt2` alone wrote ONNX into model.pt2, and only warned that the ending did not fit."""
    from click.testing import CliRunner

    from hydranet.core.cli import cli

    result = CliRunner().invoke(cli, ["export", str(checkpoint), "--out", str(tmp_path / name), "--no-check"])
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / name} ({fmt}," in result.output and "warning" not in result.output
