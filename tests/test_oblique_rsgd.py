"""oblique-rsgd: the filter matrix as a geoopt.Sphere parameter, Riemannian SGD/Adam, the two geoopt fixes."""

from __future__ import annotations

import io

import geoopt
import pytest
import torch
from torch import nn

from oblique.geometry import filter_matrix
from oblique.methods import OptimizerConfig, get_method
from oblique.methods.oblique_rsgd import FilterView, project_rows_safe

LAYERS = {
    "conv1d": lambda: nn.Conv1d(3, 5, 3),
    "conv2d": lambda: nn.Conv2d(2, 6, (2, 3), bias=False),
    "linear": lambda: nn.Linear(4, 6),
}


def _model(key: str, dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(LAYERS[key]()).to(dtype)


def _input(key: str, dtype=torch.float32) -> torch.Tensor:
    shape = {"conv1d": (4, 3, 6), "conv2d": (4, 2, 4, 5), "linear": (4, 4)}[key]
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=dtype)


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
@pytest.mark.parametrize("key", list(LAYERS))
def test_unit_filters_after_every_step_float32(key, opt_name):
    method = get_method("oblique-rsgd", targets="conv+linear")
    model = method.prepare(_model(key))
    (z,) = method.target_weights(model)
    assert isinstance(z, geoopt.ManifoldParameter) and z.shape == filter_matrix(model[0].weight).shape
    opt = method.make_optimizer(model, OptimizerConfig(name=opt_name, lr=0.1 if opt_name == "sgd" else 0.01))
    x = _input(key)
    for _ in range(10):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
        norms = filter_matrix(model[0].weight).norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-5)


def test_one_sgd_step_is_the_riemannian_formula():
    """No momentum: x ← (x − η(g − ⟨x,g⟩x)) / ‖·‖ row by row (float64)."""
    method = get_method("oblique-rsgd", targets="conv+linear")
    model = method.prepare(_model("conv2d", torch.float64))
    (z,) = method.target_weights(model)
    x0 = z.detach().clone()
    opt = method.make_optimizer(model, OptimizerConfig(lr=0.3, momentum=0.0, nesterov=False))
    model(_input("conv2d", torch.float64)).sin().sum().backward()
    g = z.grad.clone()
    opt.step()
    rg = g - (g * x0).sum(1, keepdim=True) * x0
    want = x0 - 0.3 * rg
    want = want / want.norm(dim=1, keepdim=True)
    torch.testing.assert_close(z.detach(), want, rtol=0, atol=1e-12)


def test_first_momentum_step_matches_torch_sgd_on_euclidean_parameters():
    """geoopt seeds momentum with the raw gradient ((1 + m)× torch's first step); ours starts at zero."""
    method = get_method("oblique-rsgd", targets="conv")
    torch.manual_seed(0)
    model = method.prepare(nn.Sequential(nn.Conv1d(2, 3, 3), nn.Flatten(), nn.Linear(12, 2)).double())
    ref = [p.detach().clone().requires_grad_() for p in model[2].parameters()]
    cfg = OptimizerConfig(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)
    opt = method.make_optimizer(model, cfg)
    torch_opt = torch.optim.SGD(ref, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)
    x = torch.randn(5, 2, 6, dtype=torch.float64)
    for _ in range(3):
        opt.zero_grad()
        torch_opt.zero_grad()
        out = model(x).sum()
        out.backward()
        for r, p in zip(ref, model[2].parameters(), strict=True):
            r.grad = p.grad.clone()
        opt.step()
        torch_opt.step()
        for r, p in zip(ref, model[2].parameters(), strict=True):
            torch.testing.assert_close(p.detach(), r.detach(), rtol=0, atol=1e-12)


def test_optimizer_groups_weight_decay_only_off_the_sphere():
    method = get_method("oblique-rsgd")
    model = method.prepare(nn.Sequential(nn.Conv1d(2, 3, 3), nn.Flatten(), nn.Linear(12, 2)))
    opt = method.make_optimizer(model, OptimizerConfig(weight_decay=5e-4))
    sphere, rest = opt.param_groups
    assert sphere["weight_decay"] == 0 and rest["weight_decay"] == 5e-4
    assert all(isinstance(p, geoopt.ManifoldParameter) for p in sphere["params"])
    assert len(rest["params"]) == 3  # conv bias, linear weight and bias
    with pytest.raises(ValueError, match="sgd, adam; got 'lbfgs'"):
        method.make_optimizer(model, OptimizerConfig(name="lbfgs"))


def test_zero_filter_gets_a_unit_direction_not_nan():
    f = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    out = project_rows_safe(f)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(out[0], torch.tensor([0.6, 0.8, 0.0]))
    conv = nn.Conv1d(1, 2, 3, bias=False)
    with torch.no_grad():
        conv.weight[1].zero_()
    method = get_method("oblique-rsgd")
    model = method.prepare(nn.Sequential(conv))
    assert torch.isfinite(model[0].weight).all()
    torch.testing.assert_close(filter_matrix(model[0].weight).norm(dim=1), torch.ones(2))


def test_adam_state_dict_survives_orphaned_state():
    """geoopt issue 226: state keyed by a tensor in no parameter group made state_dict() raise KeyError."""
    method = get_method("oblique-rsgd")
    model = method.prepare(nn.Sequential(nn.Conv1d(2, 3, 3)))
    opt = method.make_optimizer(model, OptimizerConfig(name="adam", lr=1e-2))
    model(torch.randn(2, 2, 5)).sum().backward()
    opt.step()
    orphan = torch.zeros(3)
    opt.state[orphan] = {"step": 1}
    plain = geoopt.optim.RiemannianAdam(opt.param_groups)
    plain.state = opt.state
    with pytest.raises(KeyError):
        plain.state_dict()  # the upstream failure, reproduced
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)  # ours: no crash at checkpoint time
    buf.seek(0)
    state = torch.load(buf, weights_only=False)
    assert len(state["state"]) == 2  # the conv filter matrix and its bias
    assert orphan in opt.state  # the live optimizer is left as it was


def test_filter_view_round_trip_and_gradcheck():
    view = FilterView(torch.Size((4, 2, 3, 3)))
    w = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    assert torch.equal(view(view.right_inverse(w)), w)
    f = torch.randn(4, 18, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(view, (f,))


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_optimizer_checkpoint_resumes_exactly(opt_name):
    """model + optimizer state saved, loaded into a fresh prepared model and optimizer: the next step agrees."""

    def fresh(seed):
        torch.manual_seed(seed)
        method = get_method("oblique-rsgd", targets="conv+linear")
        model = method.prepare(nn.Sequential(nn.Conv1d(2, 3, 3), nn.Flatten(), nn.Linear(9, 2)).double())
        return model, method.make_optimizer(model, OptimizerConfig(name=opt_name, lr=0.05, weight_decay=1e-3))

    x = torch.randn(4, 2, 5, dtype=torch.float64)
    model, opt = fresh(0)
    for _ in range(3):
        opt.zero_grad()
        model(x).sin().sum().backward()
        opt.step()
    bufs = io.BytesIO(), io.BytesIO()
    torch.save(model.state_dict(), bufs[0])
    torch.save(opt.state_dict(), bufs[1])
    model2, opt2 = fresh(1)
    for b in bufs:
        b.seek(0)
    model2.load_state_dict(torch.load(bufs[0], weights_only=True))
    opt2.load_state_dict(torch.load(bufs[1], weights_only=True))
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        m(x).sin().sum().backward()
        o.step()
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
