"""``fwn`` (forced weight normalization, Karras et al., CVPR 2024): the trajectory against an EDM2
``MPConv``-style loop written directly, in float64, on conv, linear and transposed-convolution layers; the
effective and the stored filters on the unit sphere after steps; a tangent gradient; zero filters;
``check``; the state_dict round trip; and the contrast with ``wn`` (``g`` frozen), whose ``‖v‖`` grows."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from oblique.methods import OptimizerConfig, get_method
from oblique.methods.base import training_step


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 5, 3, bias=False)  # (5, 18) wide
        self.stem = nn.Conv1d(1, 6, 3, bias=False)  # (6, 3) tall
        self.up = nn.ConvTranspose2d(3, 4, 2, bias=False)  # filters along dim 1: (4, 12)
        self.fc = nn.Linear(6, 4, bias=False)  # (4, 6)

    def forward(self, x2, x1, xt, xf):
        out = torch.tanh(self.conv(x2)).sum((2, 3)) @ torch.arange(5.0, dtype=x2.dtype)
        out = out + torch.tanh(self.stem(x1)).sum((1, 2)) + torch.tanh(self.up(xt)).square().sum((1, 2, 3))
        return (out + torch.tanh(self.fc(xf)).sum(1) * 0.5).sum()


def _inputs(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    shapes = ((3, 2, 6, 6), (3, 1, 8), (3, 3, 4, 4), (3, 6))
    return [torch.randn(*s, generator=g, dtype=dtype) for s in shapes]


def _model(seed=0, dtype=torch.float64) -> _Net:
    torch.manual_seed(seed)
    return _Net().to(dtype)


# --------------------------------------------------------------------------- EDM2, written directly
def _normalize(w: torch.Tensor, dims) -> torch.Tensor:
    """Every output filter (the entries of ``w`` over ``dims``) divided by its norm (EDM2's normalize, norm 1
    where EDM2's has RMS 1 and divides by √fan_in afterwards: the same effective weight, no ε)."""
    return w / torch.linalg.vector_norm(w, dim=dims, keepdim=True)


def _edm2_loop(model: _Net, xs, steps: int, lr: float, gain: float = 1.0):
    """Forced weight normalization the way MPConv does it: the stored weights forced onto the sphere, then
    the forward pass with normalize(w)·gain; plain SGD on the stored weights."""
    v = {k: getattr(model, k).weight.detach().clone() for k in ("conv", "stem", "up", "fc")}
    dims = {"conv": (1, 2, 3), "stem": (1, 2), "up": (0, 2, 3), "fc": (1,)}
    for _ in range(steps):
        for k in v:  # self.weight.copy_(normalize(w)) in the training-mode forward
            v[k] = _normalize(v[k], dims[k]).requires_grad_()
        w = {k: _normalize(v[k], dims[k]) * gain for k in v}
        x2, x1, xt, xf = xs
        out = torch.tanh(F.conv2d(x2, w["conv"])).sum((2, 3)) @ torch.arange(5.0, dtype=x2.dtype)
        out = out + torch.tanh(F.conv1d(x1, w["stem"])).sum((1, 2))
        out = out + torch.tanh(F.conv_transpose2d(xt, w["up"])).square().sum((1, 2, 3))
        loss = (out + torch.tanh(F.linear(xf, w["fc"])).sum(1) * 0.5).sum()
        grads = torch.autograd.grad(loss, [v[k] for k in v])
        v = {k: (v[k] - lr * g).detach() for k, g in zip(v, grads, strict=True)}
    # the next training forward's copy, and what it computes with
    v = {k: _normalize(v[k], dims[k]) for k in v}
    return v, {k: _normalize(v[k], dims[k]) * gain for k in v}


def _stored(layer: nn.Module) -> torch.Tensor:
    """The stored ``v`` of a layer: the parametrization's ``original``, or the (fused) weight itself."""
    return layer.parametrizations.weight.original if hasattr(layer, "parametrizations") else layer.weight


def _trained(steps=3, lr=0.1, dtype=torch.float64, momentum=0.0, **hp):
    model = _model(dtype=dtype)
    method = get_method("fwn", targets="conv+conv_transpose+linear", **hp)
    method.prepare(model)
    opt = method.make_optimizer(model, OptimizerConfig(lr=lr, momentum=momentum))
    xs = _inputs(dtype)
    for step in range(1, steps + 1):
        training_step(method, model, opt, model(*xs), step)
    return method, model


@pytest.mark.parametrize("impl", ["fused", "parametrize"])
def test_trajectory_is_edm2_forced_weight_normalization(impl):
    for gain in (1.0, 0.7) if impl == "parametrize" else (1.0,):
        stored, effective = _edm2_loop(_model(), _inputs(), steps=3, lr=0.1, gain=gain)
        method, model = _trained(gain=gain, impl=impl)
        for k in stored:
            layer = getattr(model, k)
            torch.testing.assert_close(_stored(layer), stored[k], rtol=0, atol=1e-12)
            torch.testing.assert_close(layer.weight, effective[k], rtol=0, atol=1e-12)
        assert method.promise() == ("oblique" if gain == 1.0 else "")


def test_fused_and_parametrized_take_the_same_trajectory():
    """20 steps of SGD with Nesterov momentum, float64: the fused form's weights are the parametrization's."""
    _, fused = _trained(steps=20, lr=0.1, momentum=0.9, impl="fused")
    _, reference = _trained(steps=20, lr=0.1, momentum=0.9, impl="parametrize")
    for k in ("conv", "stem", "up", "fc"):
        a, b = getattr(fused, k), getattr(reference, k)
        torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=1e-12, msg=k)
        torch.testing.assert_close(_stored(a), _stored(b), rtol=0, atol=1e-12, msg=k)


def test_a_gain_other_than_one_needs_the_parametrization():
    with pytest.raises(ValueError, match="gain 0.7 needs impl=parametrize"):
        get_method("fwn", gain=0.7)


@pytest.mark.parametrize("impl", ["fused", "parametrize"])
def test_effective_and_stored_filters_stay_unit_norm_in_float32(impl):
    method, model = _trained(steps=8, lr=0.5, dtype=torch.float32, impl=impl)
    for name, f in method.effective_filters(model).items():
        torch.testing.assert_close(f.norm(dim=1), torch.ones(len(f)), rtol=0, atol=1e-6, msg=name)
    for t, v in zip(method.target_modules(model), method.target_weights(model), strict=True):
        torch.testing.assert_close(t.filters(v).norm(dim=1), torch.ones(len(t.filters(v))), rtol=0, atol=1e-6)
    ok, why = method.check(model)
    assert ok and "on the oblique manifold" in why


@pytest.mark.parametrize("impl", ["fused", "parametrize"])
def test_the_gradient_is_tangent_and_wn_lets_the_norm_grow(impl):
    """fwn's gradient (what the optimizer steps with) is orthogonal to every stored filter; wn (g frozen)
    computes the same forward but its ‖v‖ grows step by step (the effective learning-rate decay fwn
    prevents)."""
    model = _model()
    method = get_method("fwn", targets="conv+conv_transpose+linear", impl=impl)
    method.prepare(model)
    model(*_inputs()).backward()
    method.before_step(model)
    for t, v in zip(method.target_modules(model), method.target_weights(model), strict=True):
        radial = (t.filters(v) * t.filters(v.grad)).sum(1)
        assert radial.abs().max() < 1e-12 and v.grad.abs().max() > 1e-3
    wn = get_method("wn", targets="conv+conv_transpose+linear", g="frozen")
    wmodel = wn.prepare(_model())
    with torch.no_grad():  # the same start: unit directions
        for t, v in zip(wn.target_modules(wmodel), wn.target_weights(wmodel), strict=True):
            v.copy_(t.layout.weight(t.filters(v) / t.filters(v).norm(dim=1, keepdim=True), v.shape))
    opt = wn.make_optimizer(wmodel, OptimizerConfig(lr=0.1, momentum=0.0))
    for step in range(1, 4):
        training_step(wn, wmodel, opt, wmodel(*_inputs()), step)
    grown = [
        t.filters(v).norm(dim=1).max().item()
        for t, v in zip(wn.target_modules(wmodel), wn.target_weights(wmodel), strict=True)
    ]
    assert max(grown) > 1 + 1e-3
    fmethod, fmodel = _trained(impl=impl)
    for t, v in zip(fmethod.target_modules(fmodel), fmethod.target_weights(fmodel), strict=True):
        torch.testing.assert_close(t.filters(v).norm(dim=1), torch.ones(len(t.filters(v)), dtype=v.dtype))


@pytest.mark.parametrize("impl", ["fused", "parametrize"])
def test_a_zero_filter_stays_zero_with_zero_gradient(impl):
    model = _model()
    method = get_method("fwn", targets="conv+conv_transpose+linear", impl=impl)
    method.prepare(model)
    with torch.no_grad():
        _stored(model.conv)[2].zero_()
        _stored(model.up)[:, 1].zero_()  # output filter 1 of the transposed conv
    opt = method.make_optimizer(model, OptimizerConfig(lr=0.1))
    for step in range(1, 4):
        training_step(method, model, opt, model(*_inputs()), step)
        assert all(torch.isfinite(p).all() and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.conv.weight[2].abs().max() == 0 and _stored(model.conv)[2].abs().max() == 0
    assert model.up.weight[:, 1].abs().max() == 0
    norms = model.conv.weight.detach().flatten(1).norm(dim=1)
    torch.testing.assert_close(norms[[0, 1, 3, 4]], torch.ones(4, dtype=norms.dtype))
    ok, why = method.check(model)
    assert not ok and "off the oblique manifold" in why  # the truth: a zero filter is at distance 1


def test_state_dict_round_trip_and_assignment_through_right_inverse():
    method, model = _trained(impl="parametrize")
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    assert "conv.parametrizations.weight.original" in model.state_dict()
    fresh = get_method("fwn", targets="conv+conv_transpose+linear", impl="parametrize").prepare(
        _model(seed=5)
    )
    xs = _inputs()
    assert not torch.allclose(fresh(*xs), model(*xs))
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(fresh(*xs), model(*xs), rtol=0, atol=1e-12)
    # module.weight = W stores W's directions: the effective weight is W normalized, the stored one too
    w = torch.randn(5, 2, 3, 3, dtype=torch.float64) * 3
    fresh.conv.weight = w
    unit = w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(fresh.conv.weight, unit, rtol=0, atol=1e-12)
    torch.testing.assert_close(fresh.conv.parametrizations.weight.original, unit, rtol=0, atol=1e-12)


@pytest.mark.parametrize("impl", ["fused", "parametrize"])
def test_prepare_projects_once_and_keeps_the_function_of_unit_filters(impl):
    model = _model()
    with torch.no_grad():
        w = model.conv.weight.clone()
    method = get_method("fwn", targets="conv+conv_transpose+linear", impl=impl)
    method.prepare(model)
    v = _stored(model.conv)
    torch.testing.assert_close(v.flatten(1).norm(dim=1), torch.ones(5, dtype=v.dtype))
    torch.testing.assert_close(v, w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1), rtol=0, atol=1e-15)
    assert method.analytic_flops(model) > 0 and method.check(model)[0]
