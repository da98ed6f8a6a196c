"""oni: Newton's iteration towards (ZcZcᵀ)^(-1/2)Zc, groups, scale; checked in float64 against the equations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from oblique.geometry import drift, filter_matrix
from oblique.methods import get_method
from oblique.methods.olm import olm_orthogonalize
from oblique.methods.oni import newton_orthogonalize


def _wide_centred(n: int, p: int, seed: int = 0) -> torch.Tensor:
    z = torch.randn(1, n, p, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return z - z.mean(-1, keepdim=True)  # (1, n, p), n ≪ p: well conditioned


def _frob_dev(w: torch.Tensor) -> float:
    return torch.linalg.matrix_norm(w @ w.mT - torch.eye(w.shape[-2], dtype=w.dtype)).item()


@pytest.mark.parametrize(("n", "p"), [(8, 64), (4, 27), (16, 48)])
def test_deviation_falls_with_T_and_is_small_at_5(n, p):
    zc = _wide_centred(n, p)
    runs = [newton_orthogonalize(zc, iters=t) for t in range(1, 6)]
    ddiag = [drift(w[0])["ddiag_dev"] for w in runs]
    frob = [_frob_dev(w[0]) for w in runs]
    # each eigenvalue x of WWᵀ follows x ← x(3 − x)²/4, rising monotonically to 1 from (0, 1]
    assert all(a > b for a, b in zip(ddiag, ddiag[1:], strict=False))
    assert all(a > b for a, b in zip(frob, frob[1:], strict=False))
    last = drift(runs[-1][0])
    assert last["offdiag_dev"] <= 0.05 and last["ddiag_dev"] <= 0.05


def test_converges_to_the_exact_inverse_square_root():
    """Large T reaches OLM's eigendecomposition result; the coupled form does not blow up (Note [coupled
    Newton iteration]: upstream's B³Ŝ form reaches 1e284 on an ill-conditioned group by T = 20)."""
    zc = _wide_centred(6, 20)
    torch.testing.assert_close(newton_orthogonalize(zc, iters=40, eps=0.0), olm_orthogonalize(zc, eps=0.0))
    z = torch.tensor([[[-0.5516, -0.3824, -0.2380], [0.0214, 0.2282, 0.3464]]], dtype=torch.float64)
    zc = z - z.mean(-1, keepdim=True)  # cond(ZcZcᵀ) ≈ 3e4
    w = newton_orthogonalize(zc, iters=60, eps=0.0)
    torch.testing.assert_close(w, olm_orthogonalize(zc, eps=0.0), rtol=0, atol=1e-9)


def test_effective_weight_over_scale_on_a_wide_conv():
    torch.manual_seed(0)
    method = get_method("oni", iters=5)
    model = method.prepare(nn.Sequential(nn.Conv2d(3, 4, 3).double()))  # (4, 27)
    w = model[0].weight / math.sqrt(2)
    d = drift(w)
    assert d["offdiag_dev"] <= 0.05 and d["ddiag_dev"] <= 0.05
    # rows centred: orthogonal to the all-ones vector
    torch.testing.assert_close(
        filter_matrix(w).sum(1), torch.zeros(4, dtype=torch.float64), rtol=0, atol=1e-12
    )


def test_tall_layer_is_split_into_orthonormal_groups():
    torch.manual_seed(0)
    method = get_method("oni", iters=30, scale=1.0)
    model = method.prepare(nn.Sequential(nn.Conv1d(1, 6, 3, bias=False).double()))  # (6, 3): groups of 2
    f = filter_matrix(model[0].weight)
    assert method.parametrizations(model)[0].sizes == [2, 2, 2]
    # the tolerance is ε's effect (relative 1e-7) on the worst group, cond(S) ≈ 1e2 here
    torch.testing.assert_close(f.norm(dim=1), torch.ones(6, dtype=torch.float64), rtol=0, atol=1e-4)
    for g in f.split(2):
        torch.testing.assert_close(g @ g.T, torch.eye(2, dtype=torch.float64), rtol=0, atol=1e-4)


@pytest.mark.parametrize("shape", [(3, 2, 2), (5, 1, 3)])  # wide (3, 4) and tall (5, 3)
def test_gradcheck(shape):
    torch.manual_seed(0)
    method = get_method("oni", iters=3, learn_scale=True)
    model = method.prepare(nn.Sequential(nn.Conv1d(shape[1], shape[0], shape[2]).double()))
    par = model[0].parametrizations.weight[0]
    z = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(par, (z,))


def test_learnable_scale_is_a_trained_parameter_and_saved():
    method = get_method("oni", learn_scale=True, scale=2.0)
    model = method.prepare(nn.Sequential(nn.Conv1d(2, 3, 3)))
    keys = set(model.state_dict())
    assert "0.parametrizations.weight.original" in keys and "0.parametrizations.weight.0.scale" in keys
    scale = method.parametrizations(model)[0].scale
    assert isinstance(scale, nn.Parameter) and any(p is scale for p in model.parameters())
    model[0].weight.sum().backward()
    assert scale.grad is not None
    torch.testing.assert_close(
        filter_matrix(model[0].weight).norm(dim=1), torch.full((3,), 2.0), atol=0.1, rtol=0
    )


def test_float32_weight_stays_float32_and_flops_grow_with_T():
    model = nn.Sequential(nn.Conv1d(4, 8, 3))
    m5, m10 = get_method("oni"), get_method("oni", iters=10)
    assert m5.prepare(model)[0].weight.dtype == torch.float32
    assert m10.analytic_flops(m10.prepare(nn.Sequential(nn.Conv1d(4, 8, 3)))) > m5.analytic_flops(model) > 0
