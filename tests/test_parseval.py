"""``parseval`` (Cissé et al., ICML 2017): the retraction and the polar projection against their defining
equations in float64 on every layout (rows, transposed convolutions, ``Conv1D`` columns; tall and wide),
batched equal to per layer, the constraint over steps, zero filters, ``check`` and ``prepare``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from oblique.methods import OptimizerConfig, get_method
from oblique.methods.base import training_step
from oblique.methods.parseval import parseval_retraction, polar_factor

transformers = pytest.importorskip("transformers")  # the dev extra installs it
Conv1D = transformers.pytorch_utils.Conv1D


def _filters(layer: nn.Module) -> torch.Tensor:
    """The true output filters (n, p), indexed as torch documents each layer (not through oblique.layers)."""
    w = layer.weight.detach()
    if isinstance(layer, nn.ConvTranspose2d):  # (C_in, C_out/g, k, k), groups 1: output j is w[:, j]
        return torch.stack([w[:, j].flatten() for j in range(w.shape[1])])
    if isinstance(layer, Conv1D):  # (in, out): output j is column j
        return w.T.clone()
    return w.reshape(w.shape[0], -1).clone()


class _Net(nn.Module):
    """One layer of every layout, tall and wide filter matrices (shapes in the comments: (n, p))."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(
            [
                nn.Conv2d(3, 4, 3),  # (4, 27) wide
                nn.Conv2d(1, 6, 2),  # (6, 4) tall
                nn.Conv2d(3, 4, 3),  # (4, 27) wide, same shape as the first: batched together
                nn.Linear(8, 3),  # (3, 8) wide
                nn.Linear(3, 7),  # (7, 3) tall
                nn.ConvTranspose2d(6, 4, 2),  # (4, 24) wide
                nn.ConvTranspose2d(1, 5, 2),  # (5, 4) tall
                Conv1D(3, 8),  # (3, 8) wide, columns
            ]
        )
        self.inputs = [(2, 3, 5, 5), (2, 1, 5, 5), (2, 3, 5, 5), (2, 8), (2, 3), (2, 6, 3, 3), (2, 1, 3, 3)]
        self.inputs.append((2, 8))

    def forward(self, xs):
        return sum(
            torch.tanh(layer(x)).sum() * (i + 1)
            for i, (layer, x) in enumerate(zip(self.layers, xs, strict=True))
        )


def _model(seed: int = 0, dtype=torch.float64) -> _Net:
    torch.manual_seed(seed)
    return _Net().to(dtype)


def _inputs(model: _Net, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(*s, generator=g, dtype=dtype) for s in model.inputs]


def _direct_retraction(f: torch.Tensor, beta: float) -> torch.Tensor:
    """The paper's update, literally: W ← (1 + β)W − β W WᵀW."""
    return (1 + beta) * f - beta * f @ f.T @ f


def _direct_polar(f: torch.Tensor) -> torch.Tensor:
    u, _, vh = torch.linalg.svd(f, full_matrices=False)
    return u @ vh


def test_retraction_is_the_papers_update_on_every_layout():
    model = _model()
    method = get_method("parseval", targets="all", beta=0.1, init="keep")
    method.prepare(model)
    before = [_filters(layer) for layer in model.layers]
    assert [tuple(f.shape) for f in before] == [
        (4, 27),
        (6, 4),
        (4, 27),
        (3, 8),
        (7, 3),
        (4, 24),
        (5, 4),
        (3, 8),
    ]
    torch.testing.assert_close([_filters(layer) for layer in model.layers], before, rtol=0, atol=0)  # keep
    method.after_step(model, 1)
    for layer, f in zip(model.layers, before, strict=True):
        torch.testing.assert_close(_filters(layer), _direct_retraction(f, 0.1), rtol=0, atol=1e-12)


def test_polar_is_the_svd_polar_factor_on_every_layout():
    model = _model()
    before = [_filters(layer) for layer in model.layers]
    method = get_method("parseval", targets="all", retraction="polar")
    method.prepare(model)  # init=polar: projected at prepare
    for layer, f in zip(model.layers, before, strict=True):
        torch.testing.assert_close(_filters(layer), _direct_polar(f), rtol=0, atol=1e-12)
    ok, why = method.check(model)
    assert ok, why


@pytest.mark.parametrize("retraction", ["parseval", "polar"])
def test_batched_equals_per_layer(retraction):
    pairs = []
    for batched in (True, False):
        model = _model()
        method = get_method("parseval", targets="all", retraction=retraction, beta=0.01, batched=batched)
        pairs.append((method, method.prepare(model), None))
    pairs = [(m, model, m.make_optimizer(model, OptimizerConfig(lr=0.01))) for m, model, _ in pairs]
    xs = _inputs(pairs[0][1])
    for step in range(1, 4):
        for m, model, opt in pairs:
            training_step(m, model, opt, model(xs), step)
        for a, b in zip(pairs[0][1].parameters(), pairs[1][1].parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def _stiefel_dev(f: torch.Tensor) -> float:
    g = f @ f.T if f.shape[0] <= f.shape[1] else f.T @ f
    return (g - torch.eye(len(g), dtype=g.dtype)).norm().item()


def test_polar_keeps_every_layer_on_the_stiefel_manifold_while_training():
    model = _model(dtype=torch.float32)
    method = get_method("parseval", targets="all", retraction="polar")
    method.prepare(model)
    opt = method.make_optimizer(model, OptimizerConfig(lr=0.05))
    xs = _inputs(model, torch.float32)
    for step in range(1, 6):
        training_step(method, model, opt, model(xs), step)
        for layer in model.layers:  # orthonormal rows when wide, orthonormal columns when tall
            f = _filters(layer).double()
            assert _stiefel_dev(f) < 1e-5
            if f.shape[0] <= f.shape[1]:  # wide: on the oblique manifold too
                torch.testing.assert_close(
                    f.norm(dim=1), torch.ones(len(f), dtype=f.dtype), rtol=0, atol=1e-5
                )
        ok, why = method.check(model)
        assert ok, why


def test_retraction_drives_a_near_orthogonal_start_to_the_manifold():
    """From a perturbed orthonormal start every application shrinks ‖FFᵀ − I‖ (FᵀF when tall), by about
    1 − 2β near the manifold (Note [singular values under the retraction])."""
    g = torch.Generator().manual_seed(0)
    for n, p in ((16, 144), (12, 5)):
        f = _direct_polar(torch.randn(n, p, generator=g, dtype=torch.float64))
        f = f + 0.002 * torch.randn(n, p, generator=g, dtype=torch.float64)  # σ within about 0.03 of 1
        for beta in (3e-4, 0.1):
            x, devs = f.clone(), [_stiefel_dev(f)]
            for _ in range(200):
                x = parseval_retraction(x, beta)
                devs.append(_stiefel_dev(x))
            assert all(b < a for a, b in zip(devs, devs[1:], strict=False) if a > 1e-13), (n, p, beta)
            rate = (devs[-1] / devs[-2]) if beta == 3e-4 else None
            if rate is not None:
                assert rate == pytest.approx(1 - 2 * beta, abs=2e-5)
        x = f.clone()
        for _ in range(200):
            x = parseval_retraction(x, 0.1)
        assert _stiefel_dev(x) < 1e-10  # β = 0.1: converged


def test_the_retraction_alone_is_not_exact_and_check_says_so():
    model = _model(dtype=torch.float32)
    method = get_method("parseval", targets="all")
    method.prepare(model)  # init=polar: on the manifold at the start
    assert method.promise() == "" and get_method("parseval", retraction="polar").promise() == "orthogonal"
    assert max(_stiefel_dev(_filters(layer).double()) for layer in model.layers) < 1e-5
    opt = method.make_optimizer(model, OptimizerConfig(lr=0.05))
    xs = _inputs(model, torch.float32)
    for step in range(1, 4):
        training_step(method, model, opt, model(xs), step)
    assert max(_stiefel_dev(_filters(layer).double()) for layer in model.layers) > 1e-3  # drifted
    ok, why = method.check(model)
    assert ok and "promises no exact constraint" in why


def test_check_of_polar_fails_off_the_manifold_and_on_non_finite_weights():
    model = _model(dtype=torch.float32)
    method = get_method("parseval", targets="all", retraction="polar")
    method.prepare(model)
    assert method.check(model)[0]
    with torch.no_grad():
        model.layers[3].weight.mul_(1.01)
    ok, why = method.check(model)
    assert not ok and "off the Stiefel manifold" in why and "layers.3" in why
    with torch.no_grad():
        model.layers[3].weight[0, 0] = float("nan")
    ok, why = method.check(model)
    assert not ok and "non-finite" in why


@pytest.mark.parametrize("retraction", ["parseval", "polar"])
def test_zero_filters_stay_zero_and_finite(retraction):
    model = _model()
    with torch.no_grad():
        model.layers[0].weight[1].zero_()  # wide
        model.layers[4].weight[2].zero_()  # tall
    method = get_method("parseval", targets="all", retraction=retraction, beta=0.1)
    method.prepare(model)
    for _ in range(3):
        method.after_step(model, 1)
    for layer in model.layers:
        assert torch.isfinite(layer.weight).all()
    assert model.layers[0].weight[1].abs().max() < 1e-12 and model.layers[4].weight[2].abs().max() < 1e-12
    if retraction == "polar":  # the other filters of the wide layer: orthonormal
        f = torch.cat([_filters(model.layers[0])[:1], _filters(model.layers[0])[2:]])
        assert _stiefel_dev(f) < 1e-12


def test_polar_factor_of_a_zero_matrix_is_zero():
    assert torch.equal(polar_factor(torch.zeros(2, 3, 5)), torch.zeros(2, 3, 5))
    assert torch.equal(parseval_retraction(torch.zeros(3, 5), 3e-4), torch.zeros(3, 5))


def test_every_thins_the_retraction_and_flops_follow():
    model = _model()
    method = get_method("parseval", targets="all", beta=0.1, every=2, init="keep")
    method.prepare(model)
    before = [p.detach().clone() for p in model.parameters()]
    method.after_step(model, 1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    method.after_step(model, 2)
    assert not torch.equal(before[0], model.layers[0].weight)
    every1 = get_method("parseval", targets="all").analytic_flops(model)
    assert method.analytic_flops(model) == pytest.approx(every1 / 2) and every1 > 0
