"""olm: W = (ZcZcᵀ + εI)^(-1/2) Zc by eigendecomposition, with a backward stable at repeated eigenvalues."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from oblique.geometry import drift, filter_matrix
from oblique.methods import get_method
from oblique.methods.olm import inv_sqrt_psd, olm_orthogonalize


@pytest.mark.parametrize(
    "factory", [lambda: nn.Conv2d(3, 4, 3), lambda: nn.Conv1d(8, 16, 3), lambda: nn.Linear(40, 6)]
)
def test_rows_orthonormal_on_wide_layers_float64(factory):
    torch.manual_seed(0)
    method = get_method("olm", targets="conv+linear")
    model = method.prepare(nn.Sequential(factory().double()))
    d = drift(model[0].weight / math.sqrt(2))
    assert d["offdiag_dev"] <= 1e-6 and d["ddiag_dev"] <= 1e-6


def test_equals_the_defining_equation():
    torch.manual_seed(0)
    method = get_method("olm", eps=0.0, scale=1.0)
    conv = nn.Conv1d(3, 4, 3).double()
    z = filter_matrix(conv.weight.detach().clone())  # (4, 9)
    model = method.prepare(nn.Sequential(conv))
    zc = z - z.mean(1, keepdim=True)
    lam, u = torch.linalg.eigh(zc @ zc.T)
    want = u @ torch.diag(lam.rsqrt()) @ u.T @ zc
    torch.testing.assert_close(filter_matrix(model[0].weight), want)


def test_tall_and_one_column_layers():
    torch.manual_seed(0)
    method = get_method("olm", scale=1.0, targets="conv+linear")
    model = method.prepare(nn.Sequential(nn.Conv1d(1, 4, 1), nn.Linear(3, 7, bias=False)).double())
    w1 = filter_matrix(model[0].weight)  # (4, 1): never centred, each filter ±1
    torch.testing.assert_close(w1.abs(), torch.ones(4, 1, dtype=torch.float64))
    w2 = model[1].weight  # (7, 3), centred: groups of ≤ 2 rows
    assert method.parametrizations(model)[1].sizes == [2, 2, 2, 1]
    # the tolerance is ε's effect (relative 1e-7) on the worst-conditioned group
    torch.testing.assert_close(w2.norm(dim=1), torch.ones(7, dtype=torch.float64), rtol=0, atol=1e-5)
    for g in w2[:6].split(2):
        torch.testing.assert_close(g @ g.T, torch.eye(2, dtype=torch.float64), rtol=0, atol=1e-5)


def test_float32_in_float32_out_computed_in_float64():
    torch.manual_seed(0)
    model = get_method("olm").prepare(nn.Sequential(nn.Conv2d(3, 4, 3)))
    w = model[0].weight
    assert w.dtype == torch.float32
    assert drift(w / math.sqrt(2))["offdiag_dev"] <= 1e-6


def test_inv_sqrt_backward_is_finite_and_exact_at_repeated_eigenvalues():
    """S = I has one eigenvalue m times: eigh's autograd breaks there (Note [inverse square root backward])."""
    a = torch.zeros(1, 3, 3, dtype=torch.float64, requires_grad=True)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: inv_sqrt_psd(eye + x + x.mT), (a,))
    b = torch.randn(
        1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True
    )
    assert torch.autograd.gradcheck(
        lambda x: inv_sqrt_psd(x @ x.mT + 0.5 * torch.eye(4, dtype=x.dtype)), (b,)
    )


@pytest.mark.parametrize("shape", [(3, 2, 2), (5, 1, 3)])  # wide (3, 4) and tall (5, 3)
def test_gradcheck_through_the_parametrization(shape):
    torch.manual_seed(0)
    method = get_method("olm", learn_scale=True)
    model = method.prepare(nn.Sequential(nn.Conv1d(shape[1], shape[0], shape[2]).double()))
    par = model[0].parametrizations.weight[0]
    z = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(par, (z,))


@pytest.mark.parametrize("shape", [(2, 3, 7), (1, 4, 4)])  # two wide groups; a square group (m = p)
def test_gradcheck_of_the_whole_map_with_row_scale(shape):
    """The hand-written backward (through S^{-1/2}, the ε term and γ) against finite differences, in float64
    (Note [OLM precision])."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(*shape, dtype=torch.float64, generator=g)
    z = (z - z.mean(-1, keepdim=True)).requires_grad_()
    gamma = (1 + torch.rand(shape[0], shape[1], 1, dtype=torch.float64, generator=g)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: olm_orthogonalize(a, eps=1e-2, row_scale=b), (z, gamma))
