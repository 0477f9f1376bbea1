"""Gradients that a weighting writes into `.grad` keep their parameter's memory layout.

Fused optimizers (AdamW, SGD) walk a parameter and its gradient as raw memory,
so they need the same strides on both; with channels_last conv weights (the
default on CUDA) a contiguous gradient raises there and, on CPU, silently pairs
gradient elements with the wrong weights.
"""

from __future__ import annotations

import torch

import hydranet
from conftest import tiny_model_and_batch, tiny_spec
from hydranet.core.forward import task_losses
from hydranet.core.interfaces import StepContext
from hydranet.core.weighting import GradientWeighting


def named(name: str):
    """assert_close's message with the parameter's name in front."""
    return lambda message: f"{name}: {message}"


class SumOfGradients(GradientWeighting):
    def aggregate(self, jacobian):
        return jacobian.sum(dim=0)


def step_in_params_space(components, channels_last: bool, fused: bool) -> tuple[dict, dict]:
    """One params-space weighting step and one AdamW step; the parameters after it, and their gradients' layouts."""
    model, tasks, images, targets = tiny_model_and_batch(components)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        assert any(p.dim() == 4 and not p.is_contiguous() for p in model.parameters()), "no channels_last weight"
    model.train()
    features = model.features(images)
    losses = task_losses(tasks, model.heads_forward(features), targets)
    context = StepContext(features, model.shared_parameters(), model.head_parameters(), model.last_shared_parameters())
    SumOfGradients(tasks, grad_space="params").backward(losses, context)
    layouts = {name: (p.grad.stride(), p.stride()) for name, p in model.named_parameters() if p.grad is not None}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=fused)
    optimizer.step()
    return {name: p.detach().contiguous() for name, p in model.named_parameters()}, layouts


def test_params_space_gradients_work_with_channels_last_and_a_fused_optimizer(components):
    expected, _ = step_in_params_space(components, channels_last=False, fused=False)
    got, layouts = step_in_params_space(components, channels_last=True, fused=True)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=named(name))
    for name, (grad_stride, param_stride) in layouts.items():
        assert grad_stride == param_stride, name


def test_accumulating_into_an_existing_gradient_keeps_its_layout():
    from hydranet.core.weighting import _accumulate_grads

    conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    weight = conv.weight
    flat = torch.arange(weight.numel() + conv.bias.numel(), dtype=torch.float32)
    _accumulate_grads([weight, conv.bias], flat)
    assert weight.grad.stride() == weight.stride()
    torch.testing.assert_close(weight.grad, flat[:weight.numel()].view(weight.shape))
    _accumulate_grads([weight, conv.bias], flat)
    assert weight.grad.stride() == weight.stride()
    torch.testing.assert_close(weight.grad, 2 * flat[:weight.numel()].view(weight.shape))
    torch.testing.assert_close(conv.bias.grad, 2 * flat[weight.numel():])


def test_pcgrad_trains_the_same_with_and_without_channels_last(faces, tmp_path):
    # the engine picks fused AdamW where torch has it (CPU too), as a CUDA run does
    weights = {}
    for channels_last in (False, True):
        raw = tiny_spec(faces, epochs=1, channels_last=channels_last)
        raw["weighting"] = {"name": "pcgrad", "seed": 1}
        raw["augment"] = {"flip": False, "translate": 0.0}
        run = hydranet.train(raw, out_dir=tmp_path / f"cl{channels_last}", progress=False, echo=False)
        weights[channels_last] = torch.load(run.run_dir / "last.pt", weights_only=True)["model"]
    for name, value in weights[False].items():
        if value.is_floating_point():
            torch.testing.assert_close(weights[True][name], value, rtol=1e-4, atol=1e-5, msg=named(name))
