"""What `auto` chooses on a CUDA GPU, checked on the CPU by standing in for the GPU's answers.

CI has no GPU, so these are the only tests of the choices the main path runs with.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from hydranet.core import device as device_module
from hydranet.core.device import native_bf16, pick_device, resolve_settings
from hydranet.core.errors import HydranetError
from hydranet.tasks.kinds import RegressionParams, RegressionTask


@pytest.fixture
def on_cuda(monkeypatch):
    """resolve_settings sees a CUDA device whose bf16 support the test sets (native by default)."""
    monkeypatch.setattr(device_module, "pick_device", lambda name, option="train.device": torch.device("cuda"))
    answer = {"bf16": True}
    monkeypatch.setattr(device_module, "native_bf16", lambda dev: answer["bf16"])
    return answer


def test_auto_on_cuda_turns_every_fast_switch_on(on_cuda):
    settings = resolve_settings("auto", "auto", "auto", "auto", cudnn_benchmark=True)
    assert (settings.bf16, settings.compile, settings.channels_last) == (True, True, True)
    # hydranet records the whole step; the compiler then compiles without graphs of its own
    assert (settings.compile_mode, settings.graphs, settings.cuda_graphs) == ("default", "step", False)
    assert settings.cudnn_benchmark is True


def test_auto_records_the_compilers_graphs_where_the_whole_step_cannot_be_recorded(on_cuda):
    settings = resolve_settings("auto", "auto", "auto", "auto", whole_step=False)
    assert (settings.compile_mode, settings.graphs, settings.cuda_graphs) == ("reduce-overhead", "compiler", True)


@pytest.mark.parametrize("compile, compile_mode, cuda_graphs, expected", [
    ("auto", "reduce-overhead", "auto", ("reduce-overhead", "compiler")),  # a mode that records graphs is kept
    ("auto", "default", "auto", ("default", "off")),                      # and one that does not
    ("auto", "max-autotune", "step", ("max-autotune-no-cudagraphs", "step")),
    (False, "auto", "auto", ("reduce-overhead", "off")),  # uncompiled: no graphs unless asked (the mode goes unused)
    (False, "auto", "step", ("default", "step")),
])
def test_auto_chooses_the_recorded_step_only_when_nothing_else_was_asked(on_cuda, compile, compile_mode, cuda_graphs,
                                                                         expected):
    settings = resolve_settings("auto", "auto", compile, "auto", compile_mode=compile_mode, cuda_graphs=cuda_graphs)
    assert (settings.compile_mode, settings.graphs) == expected


def test_auto_on_a_cpu_records_nothing():
    settings = resolve_settings("cpu", "auto", "auto", "auto")
    assert (settings.compile, settings.compile_mode, settings.graphs) == (False, "default", "off")


def test_auto_on_cuda_respects_off_switches_and_determinism(on_cuda):
    on_cuda["bf16"] = False  # a pre-Ampere GPU: bf16 would only be emulated
    settings = resolve_settings("auto", "auto", "auto", "auto", cuda_graphs="off", cudnn_benchmark=True,
                                deterministic=True)
    assert settings.bf16 is False
    assert (settings.compile_mode, settings.graphs) == ("default", "off")
    assert settings.cudnn_benchmark is False  # benchmark picks kernels by timing: not reproducible
    assert resolve_settings("auto", "auto", "auto", "auto", cuda_graphs="step").graphs == "step"


@pytest.mark.parametrize("major, native", [(7, False), (8, True), (9, True)])
def test_bf16_counts_only_where_the_gpu_has_it_natively(monkeypatch, major, native):
    asked = []

    def properties(device):
        asked.append(device)
        return SimpleNamespace(major=major)

    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    assert native_bf16(torch.device("cuda", 1)) is native
    assert asked == [torch.device("cuda", 1)]  # the run's GPU, not whichever is current


def test_a_gpu_index_past_the_last_gpu_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(HydranetError) as error:
        pick_device("cuda:2", option="--device")
    assert str(error.value) == ("--device: cuda:2 was asked for but this machine has 2 CUDA GPUs (cuda:0 to cuda:1); "
                                "use --device cuda for the first, or one of those")


def test_regression_predictions_stay_float32_under_bf16_autocast():
    """bf16 has 8 bits of mantissa: ages near 100 in bf16 come in steps of half a year."""
    task = RegressionTask("age", RegressionParams(label="age"))
    task.fit_targets(torch.tensor([1.0, 30.0, 60.0, 116.0]))
    torch.manual_seed(0)
    head = task.build_head(16)
    layers, rescale = head
    features = torch.randn(64, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        standardised = layers(features)
        prediction = head(features)
    assert standardised.dtype == torch.bfloat16  # the layers do run in bf16
    assert prediction.dtype == torch.float32
    torch.testing.assert_close(prediction, standardised.float() * task.std + task.mean, rtol=0, atol=0)


def test_a_run_on_a_second_gpu_makes_it_the_current_device_and_a_cpu_run_touches_none():
    """Events, streams and graphs made without a device go to the current one: cuda:0 unless set."""
    from hydranet.core.device import on_device

    context = on_device(torch.device("cuda", 1))
    assert isinstance(context, torch.cuda.device) and context.idx == 1
    with on_device(torch.device("cpu")):
        pass
