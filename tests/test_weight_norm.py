"""wn: torch's weight_norm parametrization per filter (dim 0); frozen g is exactly the oblique manifold."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from oblique.geometry import filter_matrix
from oblique.methods import OptimizerConfig, get_method


@pytest.mark.parametrize(
    "factory", [lambda: nn.Conv1d(3, 4, 3), lambda: nn.Conv2d(2, 6, 2), lambda: nn.Linear(3, 5)]
)
def test_frozen_g_unit_filters_after_every_step_float32(factory):
    torch.manual_seed(0)
    method = get_method("wn", targets="conv+linear", g="frozen")
    model = method.prepare(nn.Sequential(factory()))
    (g,) = method.target_scales(model)
    assert not g.requires_grad and torch.equal(g, torch.ones_like(g))
    opt = method.make_optimizer(model, OptimizerConfig(lr=0.5))
    assert all(p is not g for group in opt.param_groups for p in group["params"])
    x = torch.randn(4, *{3: (3, 6), 4: (2, 4, 4), 2: (3,)}[model[0].weight.dim()])
    for _ in range(5):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
        norms = filter_matrix(model[0].weight).norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-5)


def test_learnable_g_keeps_the_function_and_is_per_filter():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3)
    w0 = conv.weight.detach().clone()
    method = get_method("wn")
    model = method.prepare(nn.Sequential(conv))
    torch.testing.assert_close(model[0].weight, w0)  # g starts at ‖v‖
    (g,), (v,) = method.target_scales(model), method.target_weights(model)
    assert g.shape == (3, 1, 1, 1) and g.requires_grad and v.shape == w0.shape
    torch.testing.assert_close(g.flatten(), filter_matrix(w0).norm(dim=1))


def test_gradcheck_through_the_parametrization():
    torch.manual_seed(0)
    method = get_method("wn")
    model = method.prepare(nn.Sequential(nn.Conv1d(2, 3, 3).double()))
    par = model[0].parametrizations.weight[0]
    g = torch.rand(3, 1, 1, dtype=torch.float64, requires_grad=True)
    v = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(par, (g, v))
