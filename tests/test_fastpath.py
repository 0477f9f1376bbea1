"""The fast path: decoded-image cache, device batches and augmentation, padded evaluation, placements, compile."""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

import hydranet
from conftest import tiny_spec
from hydranet.core.augment import DeviceAugment
from hydranet.core.batches import BatchSource, choose_placement
from hydranet.core.decode import decode_images
from hydranet.core.device import fused_if_supported, resolve_settings
from hydranet.core.engine import Trainer
from hydranet.core.evaluation import evaluate
from hydranet.core.spec import load_spec


@pytest.fixture
def folder(faces, tmp_path) -> Path:
    """A private copy of a few faces that a test may modify."""
    target = tmp_path / "faces"
    target.mkdir()
    for source in sorted(faces.glob("*.jpg"))[:12]:
        shutil.copy2(source, target / source.name)
    return target


def sources(folder: Path) -> list[str]:
    return [str(p) for p in sorted(folder.glob("*.jpg"))]


def test_cache_miss_then_hit_with_identical_pixels(folder, tmp_path):
    cache = tmp_path / "cache"
    first = decode_images(sources(folder), 16, workers=1, cache_dir=cache, progress=False)
    assert not first.from_cache and first.images.shape == (12, 3, 16, 16) and first.images.dtype == torch.uint8
    second = decode_images(sources(folder), 16, workers=1, cache_dir=cache, progress=False)
    assert second.from_cache and torch.equal(first.images, second.images)
    assert not decode_images(sources(folder), 24, workers=1, cache_dir=cache, progress=False).from_cache


def test_changed_or_added_file_invalidates_the_cache(folder, tmp_path):
    cache = tmp_path / "cache"
    decode_images(sources(folder), 16, workers=1, cache_dir=cache, progress=False)
    victim = Path(sources(folder)[0])
    stat = victim.stat()
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert not decode_images(sources(folder), 16, workers=1, cache_dir=cache, progress=False).from_cache
    assert decode_images(sources(folder), 16, workers=1, cache_dir=cache, progress=False).from_cache
    shutil.copy2(victim, folder / ("1_0_0_" + "9" * 17 + ".jpg.chip.jpg"))
    assert not decode_images(sources(folder), 16, workers=1, cache_dir=cache, progress=False).from_cache


def test_damaged_cache_is_a_miss_and_unreadable_images_are_recorded(folder, tmp_path):
    cache = tmp_path / "cache"
    (folder / "2_1_1_20170101000000000.jpg.chip.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    files = sources(folder)
    first = decode_images(files, 16, workers=1, cache_dir=cache, progress=False)
    broken = files.index(str(folder / "2_1_1_20170101000000000.jpg.chip.jpg"))
    assert [i for i, _ in first.failures] == [broken]
    assert decode_images(files, 16, workers=1, cache_dir=cache, progress=False).failures == first.failures
    for header in cache.glob("*.json"):
        header.write_text("{ truncated")
    again = decode_images(files, 16, workers=1, cache_dir=cache, progress=False)
    assert not again.from_cache and torch.equal(again.images, first.images)


def test_worker_processes_decode_the_same_pixels(faces, monkeypatch):
    import hydranet.core.decode as decode

    files = [str(p) for p in sorted(faces.glob("*.jpg"))]
    monkeypatch.setattr(decode, "CHUNK", 8)  # small chunks, so these few files go through the pool
    used_pool = []
    real_context = decode.multiprocessing.get_context
    monkeypatch.setattr(decode.multiprocessing, "get_context", lambda m: used_pool.append(m) or real_context(m))
    inline = decode_images(files, 16, workers=1, cache_dir=None, progress=False)
    pooled = decode_images(files, 16, workers=2, cache_dir=None, progress=False)
    assert used_pool and torch.equal(inline.images, pooled.images)


def test_device_augmentation_keeps_shapes_and_is_reproducible():
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)

    def run(seed):
        augment = DeviceAugment(torch.device("cpu"), flip=True, translate=0.2, color_jitter=0.3, seed=seed)
        return augment(images, train=True)

    a, b, c = run(0), run(0), run(1)
    assert a.shape == (8, 3, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    plain = DeviceAugment(torch.device("cpu"), flip=False)(images, train=False)
    expected = (images.float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(plain, expected, atol=1e-5)


def test_flip_and_shift_move_pixels_as_documented():
    images = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).expand(64, 3, 4, 4).contiguous()
    flipped = DeviceAugment(torch.device("cpu"), flip=True, seed=0).augment(images)
    for row in flipped:
        assert torch.equal(row, images[0]) or torch.equal(row, images[0].flip(2))
    assert any(torch.equal(r, images[0].flip(2)) for r in flipped) and any(torch.equal(r, images[0]) for r in flipped)
    shifted = DeviceAugment(torch.device("cpu"), flip=False, translate=0.25, seed=0).augment(images)
    values = set(shifted.flatten().tolist())
    assert values <= set(range(16))  # a shift repeats edge pixels, never invents values


def test_colour_jitter_builds_no_tensor_in_a_step(monkeypatch):
    """torch.tensor in a step is a blocking host-device copy on CUDA: the jitter's constants are built once."""
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    reference = DeviceAugment(torch.device("cpu"), flip=True, translate=0.2, color_jitter=0.3, seed=0)(images)
    augment = DeviceAugment(torch.device("cpu"), flip=True, translate=0.2, color_jitter=0.3, seed=0)
    built, tensor = [], torch.tensor

    def counted(*args, **kwargs):
        built.append(args)
        return tensor(*args, **kwargs)

    monkeypatch.setattr("hydranet.core.augment.torch.tensor", counted)
    steps = [augment(images, train=True) for _ in range(3)]
    monkeypatch.undo()
    assert built == []
    assert torch.equal(steps[0], reference)  # the same augmentation as before


def test_padded_evaluation_gives_exactly_the_unpadded_metrics(faces, components):
    spec = load_spec(tiny_spec(faces), components=components)
    from hydranet.core.engine import batch_source, load_prepared_data
    from hydranet.core.forward import spec_model

    tasks = spec.build_tasks()
    data = load_prepared_data(spec, tasks, progress=False)
    for k, task in enumerate(tasks):
        task.fit_targets(data.targets[data.train_index][:, k])
    torch.manual_seed(0)
    model = spec_model(spec, tasks).eval()
    settings = resolve_settings("cpu", "fp32", False, False)
    source = batch_source(spec, data, settings)
    augment = DeviceAugment(settings.device, flip=False)
    index = data.val_index
    assert index.numel() % 7 != 0  # so the last batch of 7 is short
    plain = evaluate(model, tasks, source, data.targets, index, augment, settings, 7, pad=False)
    padded = evaluate(model, tasks, source, data.targets, index, augment, settings, 7, pad=True)
    whole = evaluate(model, tasks, source, data.targets, index, augment, settings, index.numel(), pad=False)
    assert padded.labelled == plain.labelled == whole.labelled
    for task in padded.metrics:
        assert padded.metrics[task] == pytest.approx(plain.metrics[task], rel=1e-6)
        assert padded.metrics[task] == pytest.approx(whole.metrics[task], rel=1e-5)
        assert padded.losses[task] == pytest.approx(whole.losses[task], rel=1e-5)


def test_every_placement_yields_the_same_batches():
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    order = torch.randperm(50)
    cpu = torch.device("cpu")
    expected = [(images[order[i:i + 16]], order[i:i + 16]) for i in range(0, 48, 16)]
    for placement, workers in (("device", 0), ("host", 0), ("stream", 0), ("stream", 2)):
        got = list(BatchSource(images, cpu, placement, workers=workers).batches(order, 16, drop_last=True))
        assert len(got) == 3
        for (gi, gx), (ei, ex) in zip(got, expected):
            assert torch.equal(gi, ei) and torch.equal(gx, ex), placement
    tail = list(BatchSource(images, cpu, "device").batches(order, 16, drop_last=False))
    assert [len(x) for _, x in tail] == [16, 16, 16, 2]


def test_placement_follows_the_budgets():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    gib = 2**30
    assert choose_placement(gib, cpu, "host") == "host"
    assert choose_placement(gib, cpu, host_budget_gb=2) == "device"
    assert choose_placement(3 * gib, cpu, host_budget_gb=2) == "stream"
    assert choose_placement(gib, cuda, device_budget_gb=2, host_budget_gb=4) == "device"
    assert choose_placement(3 * gib, cuda, device_budget_gb=2, host_budget_gb=4) == "host"
    assert choose_placement(5 * gib, cuda, device_budget_gb=2, host_budget_gb=4) == "stream"


def metric_rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.endswith("seconds")}
            for row in csv.DictReader(open(run_dir / "metrics.csv"))]


def test_streaming_and_cached_placements_train_to_the_same_result(faces, tmp_path, components):
    results = {}
    for placement in ("device", "stream"):
        raw = tiny_spec(faces, epochs=2)
        raw["data"]["placement"] = placement
        raw["augment"] = {"flip": False, "translate": 0.0}
        spec = load_spec(raw, components=components)
        hydranet.train(spec, out_dir=tmp_path / placement, components=components, progress=False, echo=False)
        results[placement] = metric_rows(tmp_path / placement)
    assert results["device"] == results["stream"]


def test_run_reports_timings(faces, tmp_path, components):
    spec = load_spec(tiny_spec(faces, epochs=2), components=components)
    first = hydranet.train(spec, out_dir=tmp_path / "a", components=components, progress=False, echo=False)
    second = hydranet.train(spec, out_dir=tmp_path / "b", components=components, progress=False, echo=False)
    assert second.timings["cache_hit"] is True
    for timings in (first.timings, second.timings):
        assert len(timings["epoch_train_seconds"]) == 2 and len(timings["epoch_val_seconds"]) == 2
        assert 0 < timings["data_seconds"] < timings["first_step_seconds"]
        assert timings["placement"] == "device"
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["timings"]["cache_hit"] is True


def test_compiled_path_trains(faces, tmp_path, components):
    """torch.compile on the CPU (the same code path CUDA uses, without CUDA graphs)."""
    spec = load_spec(tiny_spec(faces, epochs=1, compile=True, batch_size=60), components=components)
    started = time.perf_counter()
    result = hydranet.train(spec, out_dir=tmp_path, components=components, progress=False, echo=False)
    assert result.settings.compile and "compile default" in result.settings.describe()
    log = (tmp_path / "train.log").read_text()  # the slow first step is announced, then timed
    assert "the first step compiles the model (torch.compile, mode default)" in log
    assert log.index("the first step compiles") < log.index("first step done") < log.index("epoch 1/1")
    row = result.history[-1]
    assert all(torch.isfinite(torch.tensor(row[f"train_loss.{t}"])) for t in ("age", "gender", "ethnicity"))
    assert time.perf_counter() - started < 300


def test_every_run_of_a_session_trains_compiled(faces, tmp_path, components):
    """A sweep or a notebook trains several runs in one process; each must compile, not only the first few.

    The runs' step functions share their code, and dynamo stops compiling a code past its limit of
    recompilations (8 by default; 1 here, so that three runs show it) and runs it eagerly, silently.
    """
    import torch._dynamo.config as dynamo_config
    from torch._dynamo.utils import counters

    # the name changed in torch 2.7 (the old one is an alias); set and restored by hand, as dynamo's config
    # module cannot take monkeypatch's restore of an alias
    name = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
    before = getattr(dynamo_config, name)
    setattr(dynamo_config, name, 1)
    try:
        spec = load_spec(tiny_spec(faces, epochs=1, compile=True, batch_size=60), components=components)
        for run in range(3):
            graphs_before = counters["stats"]["unique_graphs"]
            hydranet.train(spec, out_dir=tmp_path / f"run{run}", components=components, progress=False, echo=False)
            assert counters["stats"]["unique_graphs"] > graphs_before, f"run {run + 1} of the session trained eagerly"
    finally:
        setattr(dynamo_config, name, before)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_optimizer_is_fused_on_the_cpu_where_torch_has_the_kernel(faces, tmp_path, components, optimizer):
    """Fused kernels are a third to a half of the plain optimizer step on a CPU; the run must pick them there too."""
    spec = load_spec(tiny_spec(faces, epochs=1, optimizer=optimizer), components=components)
    trainer = Trainer(spec, out_dir=tmp_path, components=components, progress=False, echo=False)
    trainer._setup()
    probe = torch.nn.Linear(2, 2)
    torch_fuses_on_cpu = True
    try:
        type(trainer.optimizer)(probe.parameters(), lr=0.1, fused=True)
    except RuntimeError:
        torch_fuses_on_cpu = False
    assert bool(trainer.optimizer.defaults.get("fused")) == torch_fuses_on_cpu


def test_fused_if_supported_falls_back_with_untouched_groups():
    """A torch without the fused kernel gets the plain optimizer, built from groups that the failed try left alone."""
    tried = []

    class NoFusedSGD(torch.optim.SGD):
        def __init__(self, params, fused=None, **options):
            tried.append(fused)
            super().__init__(params, **options)
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")

    weight = torch.nn.Parameter(torch.ones(3))
    groups = [{"params": [weight], "lr": 0.5, "name": "backbone"}]
    optimizer = fused_if_supported(NoFusedSGD, groups, lr=0.1, momentum=0.9)
    assert tried == [True, None]
    assert groups == [{"params": [weight], "lr": 0.5, "name": "backbone"}]
    assert optimizer.param_groups[0]["lr"] == 0.5 and optimizer.param_groups[0]["momentum"] == 0.9
    assert not optimizer.param_groups[0]["fused"]
