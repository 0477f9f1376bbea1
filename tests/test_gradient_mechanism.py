"""The shared mechanism of gradient-based weightings: per-task Jacobians and where the direction goes."""

from __future__ import annotations

import pytest
import torch

import hydranet
from conftest import tiny_model_and_batch, tiny_spec, with_weighting
from hydranet.core.forward import task_losses
from hydranet.core.interfaces import StepContext
from hydranet.core.spec import load_spec
from hydranet.core.weighting import GradientWeighting, per_task_gradients


class SumOfGradients(GradientWeighting):
    """Aggregating by plain summation must reproduce the `sum` weighting's gradients exactly."""

    def aggregate(self, jacobian):
        return jacobian.sum(dim=0)


def gradients(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def run_step(model, tasks, images, targets, weighting):
    model.zero_grad(set_to_none=True)
    features = model.features(images)
    losses = task_losses(tasks, model.heads_forward(features), targets)
    context = StepContext(features, model.shared_parameters(), model.head_parameters(), model.last_shared_parameters())
    weighting.backward(losses, context)
    return gradients(model)


@pytest.mark.parametrize("space", ["features", "params"])
def test_summing_aggregator_equals_plain_sum(components, space):
    model, tasks, images, targets = tiny_model_and_batch(components)
    model.train()
    reference_weighting = components.weightings.get("sum").factory(tasks)
    expected = run_step(model, tasks, images, targets, reference_weighting)
    got = run_step(model, tasks, images, targets, SumOfGradients(tasks, grad_space=space))
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.allclose(expected[name], got[name], rtol=1e-4, atol=1e-6), name


def test_batched_and_looped_jacobians_agree(components):
    model, tasks, images, targets = tiny_model_and_batch(components)
    features = model.features(images)
    losses = task_losses(tasks, model.heads_forward(features), targets)
    batched = per_task_gradients(losses, [features], batched=True)
    looped = per_task_gradients(losses, [features], batched=False)
    assert batched.shape == (3, features.numel())
    assert torch.allclose(batched, looped, atol=1e-6)


def test_heads_only_receive_their_own_task_gradient(components):
    model, tasks, images, targets = tiny_model_and_batch(components)

    class OnlyAge(GradientWeighting):
        def aggregate(self, jacobian):
            return jacobian[0]

    got = run_step(model, tasks, images, targets, OnlyAge(tasks))
    reference = run_step(model, tasks, images, targets, components.weightings.get("sum").factory(tasks))
    for name in got:
        if name.startswith("heads."):
            assert torch.allclose(got[name], reference[name], atol=1e-6)  # heads: unchanged by the aggregation
    backbone = [n for n in got if n.startswith("backbone.")]
    assert any(not torch.allclose(got[n], reference[n]) for n in backbone)


def test_gradient_weighting_trains_through_the_engine(faces, tmp_path):
    components = with_weighting("sum_of_gradients", SumOfGradients)
    result = {}
    for name in ("sum", "sum_of_gradients"):
        raw = tiny_spec(faces, epochs=2)
        raw["weighting"] = name
        raw["augment"] = {"flip": False, "translate": 0.0}
        run = hydranet.train(load_spec(raw, components=components), out_dir=tmp_path / name,
                             components=components, progress=False, echo=False)
        result[name] = run.history[-1]
    for key, value in result["sum"].items():
        if key.startswith(("train_loss", "val_loss")):
            assert result["sum_of_gradients"][key] == pytest.approx(value, rel=1e-3), key


def eigh_root(gram):
    """The reference: R = V sqrt(Lambda) from LAPACK's eigendecomposition, in float64."""
    values, vectors = torch.linalg.eigh(gram.double())
    return vectors * values.clamp_min(0).sqrt()


def canonical_columns(root):
    """R's columns in order of their norms (the square roots of the eigenvalues), each signed so its largest
    entry is positive: an eigendecomposition fixes R only up to that order and sign."""
    root = root.double()[:, root.double().norm(dim=0).argsort()]
    signs = torch.sign(root.gather(0, root.abs().argmax(dim=0, keepdim=True)))
    return root * signs


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_gram_root_matches_the_eigh_based_root(k):
    from hydranet.core import weighting

    jacobian = torch.randn(k, 50, generator=torch.Generator().manual_seed(k))
    spd = jacobian @ jacobian.T  # float32 and symmetric positive definite, as the all-reduced Gram matrix is
    root = weighting.gram_root(spd)
    assert root.dtype == torch.float32 and root.shape == (k, k)
    torch.testing.assert_close(root.double() @ root.double().T, spd.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(canonical_columns(root), canonical_columns(eigh_root(spd)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("where", ["diagonal", "upper", "lower"])
def test_gram_root_of_a_non_finite_gram_matrix_is_nan_not_an_error(where):
    # linalg.eigh raises on NaN ("failed to converge") and reads one triangle only, so an inf in the other
    # would pass unseen; the step must go on to the run's loss check, which names the task
    from hydranet.core.weighting import gram_root

    gram = torch.eye(3) * 2.0
    row, column = {"diagonal": (1, 1), "upper": (0, 2), "lower": (2, 0)}[where]
    for bad in (torch.nan, torch.inf):
        broken = gram.clone()
        broken[row, column] = bad
        root = gram_root(broken)
        assert root.shape == (3, 3) and torch.isnan(root).all()


def test_gram_root_of_a_singular_gram_matrix():
    from hydranet.core.weighting import gram_root

    jacobian = torch.randn(2, 30, generator=torch.Generator().manual_seed(0))
    jacobian = torch.cat([jacobian, jacobian[:1] + jacobian[1:], torch.zeros(1, 30)])  # rank 2 of 4
    gram = jacobian @ jacobian.T
    root = gram_root(gram)
    assert torch.isfinite(root).all()
    torch.testing.assert_close(root.double() @ root.double().T, gram.double(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(root.double() @ root.double().T, eigh_root(gram) @ eigh_root(gram).T,
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_symmetric_eigh_is_eigh_of_the_symmetrised_matrix(dtype):
    """Exactly `linalg.eigh((A + A^T) / 2)` (batched too), and NaN of the input's dtype for a non-finite matrix."""
    from hydranet.core.eigen import symmetric_eigh

    jacobian = torch.randn(2, 4, 30, dtype=dtype, generator=torch.Generator().manual_seed(0))
    gram = jacobian @ jacobian.mT
    gram[..., 0, -1] += 1e-3  # a hair asymmetric, as rounding leaves J J^T
    expected = torch.linalg.eigh((gram + gram.mT) / 2)
    values, vectors = symmetric_eigh(gram)
    assert torch.equal(values, expected.eigenvalues) and torch.equal(vectors, expected.eigenvectors)
    for bad in (torch.nan, torch.inf, -torch.inf):
        broken = gram.clone()
        broken[1, 0, 2] = bad  # one triangle of one matrix of the batch: eigh alone would read past it or raise
        values, vectors = symmetric_eigh(broken)
        assert values.dtype == vectors.dtype == dtype and values.shape == (2, 4) and vectors.shape == (2, 4, 4)
        assert torch.isnan(values).all() and torch.isnan(vectors).all()
