"""Norm Loss against its defining equations (eq. 1, eq. 6) in float64, and its two forms against each other."""

import math

import pytest
import torch
from torch import nn

import oblique
from oblique.methods import add_norm_loss_grad_, get_method, norm_loss
from oblique.methods.base import training_step

# weight shapes: Conv1d, Conv2d, Linear; tall (n > p) and wide (n < p) filter matrices
SHAPES = {
    "conv1d-wide": (6, 4, 3),
    "conv1d-tall": (30, 2, 3),
    "conv2d-wide": (8, 3, 3, 3),
    "conv2d-tall": (40, 2, 2, 2),
    "linear-wide": (5, 12),
    "linear-tall": (12, 5),
}


def _weights(seed: int = 0, scale: float = 0.8) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(*s, generator=g, dtype=torch.float64) * scale).requires_grad_() for s in SHAPES.values()
    ]


def _eq1(ws) -> float:
    """Eq. 1 written literally: Σ_layers Σ_i (1 − ‖F_i‖)²."""
    total = 0.0
    for w in ws:
        for row in w.detach().reshape(w.shape[0], -1).tolist():
            total += (1 - math.sqrt(sum(x * x for x in row))) ** 2
    return total


def _eq6(w: torch.Tensor) -> torch.Tensor:
    """Eq. 6: ∂L_nl/∂w = 2w(1 − 1/‖F_i‖), filter by filter."""
    f = w.detach().reshape(w.shape[0], -1)
    r = f.norm(dim=1, keepdim=True)
    return (2 * f * (1 - 1 / r)).view_as(w)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_value_is_eq1(seed):
    ws = _weights(seed)
    assert norm_loss(ws).item() == pytest.approx(_eq1(ws), rel=1e-12)
    for w in ws:  # and layer by layer
        assert norm_loss([w]).item() == pytest.approx(_eq1([w]), rel=1e-12)


@pytest.mark.parametrize("name", list(SHAPES))
def test_autograd_gradient_is_eq6(name):
    w = (torch.randn(*SHAPES[name], dtype=torch.float64) * 0.6).requires_grad_()
    norm_loss([w]).backward()
    assert torch.allclose(w.grad, _eq6(w), rtol=0, atol=1e-10)


@pytest.mark.parametrize("strength", [1e-2, 0.5])
def test_closed_form_gradient_is_eq6(strength):
    ws = _weights(3)
    for w in ws:
        w.grad = torch.ones_like(w)  # an existing gradient is added to, not replaced
    value = add_norm_loss_grad_(ws, strength)
    assert value == pytest.approx(_eq1(ws), rel=1e-12)
    for w in ws:
        assert torch.allclose(w.grad, 1 + strength * _eq6(w), rtol=0, atol=1e-10)


def test_closed_form_creates_missing_grad():
    w = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    add_norm_loss_grad_([w], 0.1)
    assert torch.allclose(w.grad, 0.1 * _eq6(w), atol=1e-12)


def test_gradcheck_float64():
    ws = [w.detach().clone().requires_grad_() for w in _weights(4)[:3]]
    assert torch.autograd.gradcheck(lambda *t: norm_loss(t), ws)


def test_zero_filter_contributes_one_and_no_gradient():
    """Value 1, gradient 0, in both forms; never NaN (Note [zero filter in Norm Loss])."""
    w = torch.randn(5, 3, 2, dtype=torch.float64)
    w[1] = 0
    w.requires_grad_()
    loss = norm_loss([w])
    assert loss.item() == pytest.approx(_eq1([w]))
    loss.backward()
    assert torch.isfinite(w.grad).all() and torch.equal(w.grad[1], torch.zeros(3, 2, dtype=torch.float64))
    w2 = w.detach().clone().requires_grad_()
    add_norm_loss_grad_([w2], 1.0)
    assert torch.isfinite(w2.grad).all()
    assert torch.allclose(w2.grad, w.grad, atol=1e-12)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(2, 6, 3),
        nn.BatchNorm1d(6),
        nn.ReLU(),
        nn.Conv1d(6, 30, 1),  # tall filter matrix (30, 6)
        nn.Flatten(),
        nn.Linear(30 * 6, 4),
    ).double()


@pytest.mark.parametrize("targets", ["conv", "conv+linear"])
def test_model_api_targets_only_weights(targets):
    m = _model()
    want = _eq1([m[0].weight, m[3].weight] + ([m[5].weight] if targets == "conv+linear" else []))
    assert oblique.norm_loss(m, targets=targets).item() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("targets", ["conv", "conv+linear"])
def test_closed_and_autograd_forms_give_same_trajectory(targets):
    """Both forms through the method interface, 20 SGD steps with momentum, weights equal to 1e-8."""
    x = torch.randn(16, 2, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.randint(4, (16,), generator=torch.Generator().manual_seed(2))
    finals = []
    for form, strength in (("closed", 0.05), ("autograd", 0.05), ("closed", 0.0)):
        model = _model()
        method = get_method("nl", strength=strength, targets=targets, form=form)
        model = method.prepare(model)
        opt = method.make_optimizer(model, oblique.methods.OptimizerConfig(lr=0.05, momentum=0.9))
        for step in range(1, 21):
            training_step(method, model, opt, nn.functional.cross_entropy(model(x), y), step)
        finals.append([p.detach().clone() for p in model.parameters()])
    closed, autograd, plain = finals
    for a, b in zip(closed, autograd, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-8)
    # and Norm Loss really acted: the weights differ from the same run without it
    assert max((a - c).abs().max().item() for a, c in zip(closed, plain, strict=True)) > 1e-3


def test_strength_validation():
    with pytest.raises(ValueError, match=">= 0"):
        get_method("nl", strength=-1)
    with pytest.raises(ValueError, match="form"):
        get_method("nl", form="fast")
    with pytest.raises(ValueError, match="no hyperparameter"):
        get_method("nl", steps=3)


def test_wd_penalty_is_l2():
    m = _model()
    method = get_method("wd", strength=0.1)
    want = 0.1 * (m[0].weight.square().sum() + m[3].weight.square().sum())
    assert torch.allclose(method.penalty(m), want)
