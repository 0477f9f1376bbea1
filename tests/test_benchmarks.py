"""The speed benchmark runs end to end, and its baseline keeps the article's faults.

The benchmark's ratios are only meaningful if the baseline really behaves as
the article's loop: a backbone pass per head and 3-field names dropped. Timed
figures are never asserted (they depend on the machine), only their presence.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import article_loop  # noqa: E402  (lives in benchmarks/, which is not a package)


def test_speed_script_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    command = [sys.executable, str(BENCHMARKS / "speed.py"), "--count", "64", "--size", "16",
               "--image-size-on-disk", "32", "--batch-size", "16", "--epochs", "1", "--backbone", "tiny",
               "--device", "cpu", "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    kinds = {loop["kind"]: loop for loop in report["loops"]}
    assert set(kinds) == {"article", "hydranet"}
    for loop in kinds.values():
        assert "error" not in loop, loop.get("error")
        assert loop["seconds_per_epoch"] > 0
        assert loop["images_per_second"] > 0
        assert loop["first_step_seconds"] > 0
        assert loop["ratio_vs_article"] > 0
    assert kinds["article"]["images_per_epoch"] > 0 and kinds["hydranet"]["images_per_epoch"] > 0
    hydra = kinds["hydranet"]  # the cold start is split: setup (data, model), then the first step itself
    assert hydra["data_seconds"] < hydra["setup_seconds"] < hydra["first_step_seconds"]
    parts = hydra["setup_parts"]  # and the setup split again: where a slow start went
    assert list(parts) == ["before_data", "data", "model", "step"] and min(parts.values()) >= 0
    assert parts["data"] == hydra["data_seconds"]
    assert sum(parts.values()) == pytest.approx(hydra["setup_seconds"], abs=0.05)
    assert "setup " in done.stdout and "(before_data " in done.stdout and "first step " in done.stdout
    assert "| loop |" in done.stdout and "hydranet" in done.stdout
    # one epoch has no epochs after the first to take the median of: the header says what s/epoch is then
    assert "1 epoch on cpu; s/epoch = the one epoch's, compilation and warm-up included" in done.stdout


def test_speed_script_names_a_mistyped_backbone_without_a_traceback(tmp_path: Path) -> None:
    command = [sys.executable, str(BENCHMARKS / "speed.py"), "--count", "8", "--size", "16", "--epochs", "1",
               "--backbone", "tinyy", "--device", "cpu", "--skip-baseline", "--root", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: unknown backbone 'tinyy'; did you mean 'tiny'?")
    assert "Traceback" not in done.stderr


def test_article_model_runs_the_backbone_once_per_head() -> None:
    model = article_loop.ArticleHydraNet(article_loop.build_backbone("tiny"))
    calls = []
    model.net.register_forward_hook(lambda module, inputs, output: calls.append(output.shape))
    age, gender, ethnicity = model(torch.randn(2, 3, 16, 16))
    assert len(calls) == 3  # the article's fault, reproduced: 3x the backbone compute
    assert age.shape == (2, 1) and gender.shape == (2, 1) and ethnicity.shape == (2, 5)


def test_article_dataset_drops_three_field_names(tmp_path: Path) -> None:
    names = ["30_0_3_20170117145159065.jpg.chip.jpg", "39_1_20170116174525125.jpg.chip.jpg",
             "8_1_2_20170109150557335.jpg.chip.jpg"]
    for name in names:
        Image.new("RGB", (40, 40), (200, 120, 90)).save(tmp_path / name)
    dataset = article_loop.ArticleUTKFace(article_loop.list_images(tmp_path), size=16)
    assert len(dataset) == 2
    assert sorted(dataset.ages) == [8, 30] and sorted(dataset.races) == [2, 3]
    sample = dataset[0]
    assert sample["image"].shape == (3, 16, 16) and sample["image"].dtype == torch.float32
    assert sample["image"].min() < 0  # ImageNet-normalised, not raw [0, 1]


def test_article_loop_extrapolates_a_limited_epoch(faces: Path) -> None:
    limit = 1
    figures = article_loop.run_article_loop(faces, size=16, batch_size=32, epochs=1, device="cpu",
                                            limit=limit, backbone="tiny")
    assert figures["extrapolated"] and figures["timed_steps_per_epoch"] == limit
    assert figures["steps_per_epoch"] > limit
    assert figures["epoch_seconds"][0] > 0 and figures["first_step_seconds"] > 0
    assert figures["dropped_names"] >= 0


def test_speed_variants_take_train_keys() -> None:
    """`--compile-modes` words: a torch.compile mode, off, or train keys such as the recorded step."""
    import speed

    assert speed.compile_settings("auto") == {}
    assert speed.compile_settings("off") == {"compile": False}
    assert speed.compile_settings("reduce-overhead") == {"compile": True, "compile_mode": "reduce-overhead"}
    assert speed.compile_settings("cuda_graphs=step+compile=false+cudnn_benchmark=true") == {
        "cuda_graphs": "step", "compile": False, "cudnn_benchmark": True}
    assert speed.compile_settings("cuda_graphs=off") == {"cuda_graphs": "off"}


def test_decode_benchmark_compares_both_loops_on_a_folder(faces: Path) -> None:
    done = subprocess.run([sys.executable, str(BENCHMARKS / "decode.py"), "--root", str(faces), "--size", "16",
                           "--workers", "2", "--repeat", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(list(faces.glob('*.jpg')))} images from {faces}" in done.stdout
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith(("memory", "cache"))]
    assert len(rows) == 2 and all(float(row[-1].rstrip("x")) > 0 for row in rows)


def test_setup_profile_splits_the_start_and_stops_before_the_first_step(faces: Path, tmp_path: Path) -> None:
    report = tmp_path / "setup.txt"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "profile_setup.py"), "--root", str(faces), "--size", "16",
                           "--batch-size", "32", "--backbone", "tiny", "--device", "cpu", "--rows", "5",
                           "--out", str(report)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HYDRANET_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stdout + done.stderr
    first = report.read_text().splitlines()[0]
    assert first.startswith("setup ") and "(before_data " in first and ", step " in first
    assert "device cpu" in first and "decode cache miss" in first  # a fresh cache folder
    assert "--- by cumulative" in done.stdout and "run_setup.py" in done.stdout  # the profile is of the setup
    assert "epoch 1" not in done.stdout + done.stderr  # the run stopped before training


def test_capture_check_compares_the_default_with_no_graphs_per_variant(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(BENCHMARKS / "capture_check.py"), "--epochs", "1", "--variants",
                           "dropout"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HYDRANET_CACHE": str(tmp_path / "cache"), "HYDRANET_PLUGINS": ""})
    assert done.returncode == 0, done.stdout + done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("| dropout |"))
    default, off = (float(cell) for cell in row.split("|")[2:4])
    assert default == off  # on a CPU both are the same unrecorded path
    assert row.rstrip().endswith("| nothing recorded |")
    wrong = subprocess.run([sys.executable, str(BENCHMARKS / "capture_check.py"), "--variants", "demo,nope"],
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "unknown variants ['nope']" in wrong.stderr
