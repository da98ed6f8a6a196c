"""stiefel-rsgd: groups of filters as geoopt.EuclideanStiefel parameters, trained by Riemannian SGD; the fused
optimizer (oblique.optim.StiefelSGD) against geoopt's, the defining equations, projection, checkpoints."""

from __future__ import annotations

import io

import geoopt
import pytest
import torch
from torch import nn

import oblique
from oblique.methods import MethodUseError, OptimizerConfig, get_method
from oblique.methods.base import training_step
from oblique.methods.stiefel_rsgd import StiefelView, orthonormalize_rows_safe
from oblique.optim import StiefelSGD

#: (layer, input shape): every kind, wide (n ≤ p: one group) and tall (split into groups of two sizes)
LAYERS = {
    "conv1d-wide": (lambda: nn.Conv1d(3, 5, 3), (4, 3, 7)),  # (5, 9)
    "conv1d-tall": (lambda: nn.Conv1d(2, 8, 3), (4, 2, 7)),  # (8, 6): groups 4, 4
    "conv2d-wide": (lambda: nn.Conv2d(2, 6, (2, 3), bias=False), (4, 2, 4, 5)),  # (6, 12)
    "conv2d-tall": (lambda: nn.Conv2d(1, 7, 2), (4, 1, 5, 5)),  # (7, 4): groups 4, 3
    "linear-wide": (lambda: nn.Linear(8, 3), (4, 8)),  # (3, 8)
    "linear-tall": (lambda: nn.Linear(3, 7, bias=False), (4, 3)),  # (7, 3): groups 3, 2, 2
}


def _model(key: str, seed: int = 0, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(LAYERS[key][0](), nn.Tanh(), nn.Flatten()).to(dtype)


def _data(key: str, model: nn.Module, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*LAYERS[key][1], generator=g, dtype=dtype)
    with torch.no_grad():
        y = torch.randn(model(x).shape, generator=g, dtype=dtype)
    return x, y


def _loss(model, x, y, t=0):
    return ((model(x * (1 + 0.05 * t)) - y) ** 2).mean()


def _groups(method, model) -> list[torch.Tensor]:
    """Every group's effective filters (m, p), in order."""
    (t,) = method.target_modules(model)
    (view,) = method.views(model)
    return [f.clone() for f in t.filters().detach().split(view.sizes)]


def _train(key, impl, steps, cfg, dtype=torch.float64, **hp):
    model = _model(key, dtype=dtype)
    method = get_method("stiefel-rsgd", targets="conv+linear", impl=impl, **hp)
    model = method.prepare(model)
    opt = method.make_optimizer(model, cfg)
    x, y = _data(key, model, dtype)
    for step in range(1, steps + 1):
        training_step(method, model, opt, _loss(model, x, y, step), step)
    return method, model, opt


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("key", list(LAYERS))
def test_fused_equals_geoopt_over_20_steps_float64(key, nesterov):
    """impl=fused (StiefelSGD) and impl=geoopt (geoopt's RiemannianSGD, momentum from zero): the same 20
    steps to 1e-12, conv and linear, wide and tall, with and without Nesterov; stabilize included."""
    cfg = OptimizerConfig(lr=0.2, momentum=0.9, nesterov=nesterov, weight_decay=1e-2)
    finals = []
    for impl in ("geoopt", "fused"):
        method, model, opt = _train(key, impl, 20, cfg, stabilize=7)
        assert isinstance(opt, StiefelSGD) == (impl == "fused")
        finals.append([p.detach().clone() for p in model.parameters()])
    start = [
        p.detach()
        for p in get_method("stiefel-rsgd", targets="conv+linear").prepare(_model(key)).parameters()
    ]
    assert max((a - b).abs().max().item() for a, b in zip(finals[0], start, strict=True)) > 1e-2  # real steps
    for a, b in zip(*finals, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-12)


def _gram_schmidt_rows(a: torch.Tensor) -> torch.Tensor:
    """Modified Gram–Schmidt on the rows of ``a`` (m, p): the Q of ``aᵀ = QR`` with ``diag R > 0``."""
    q = a.clone()
    for i in range(len(q)):
        for j in range(i):
            q[i] -= (q[i] @ q[j]) * q[j]
        q[i] /= q[i].norm()
    return q


@pytest.mark.parametrize("impl", ["fused", "geoopt"])
@pytest.mark.parametrize("key", ["conv2d-wide", "linear-tall"])
def test_one_step_is_the_defining_formula(key, impl):
    """No momentum, per group F (rows): R = G − sym(F Gᵀ) F (tangent: F Rᵀ + R Fᵀ = 0), then
    F ← Gram–Schmidt rows of F − ηR (the QR retraction with a positive diagonal), in float64."""
    model = _model(key)
    method = get_method("stiefel-rsgd", targets="conv+linear", impl=impl)
    model = method.prepare(model)
    opt = method.make_optimizer(model, OptimizerConfig(lr=0.3, momentum=0.0, nesterov=False))
    x, y = _data(key, model)
    before = _groups(method, model)
    _loss(model, x, y).backward()
    # the gradient of every group's filters: the Stiefel blocks' gradients (c, p, m), read as rows
    grads = [f for z in method.target_weights(model) for f in z.grad.mT.reshape(-1, *z.shape[-1:-3:-1])]
    opt.step()
    for f, g, new in zip(before, grads, _groups(method, model), strict=True):
        s = f @ g.T
        r = g - 0.5 * (s + s.T) @ f
        torch.testing.assert_close(
            f @ r.T + r @ f.T, torch.zeros(len(f), len(f), dtype=f.dtype), atol=1e-14, rtol=0
        )
        torch.testing.assert_close(new, _gram_schmidt_rows(f - 0.3 * r), rtol=0, atol=1e-12)


@pytest.mark.parametrize("key", ["conv1d-tall", "conv2d-wide", "linear-tall"])
def test_rows_orthonormal_after_training_float32(key):
    method, model, _ = _train(key, "fused", 30, OptimizerConfig(lr=0.1, momentum=0.9), dtype=torch.float32)
    for f in _groups(method, model):
        torch.testing.assert_close(f @ f.T, torch.eye(len(f)), rtol=0, atol=1e-5)
    ok, reason = method.check(model)
    assert ok, reason


def test_groups_split_as_oni():
    """Tall layers are split into groups no taller than wide exactly as ONI splits them (uncentred), grouped
    convolutions within their groups."""
    for layer in (
        nn.Conv1d(2, 8, 3),
        nn.Linear(3, 7),
        nn.Conv2d(4, 12, 1, groups=2),
        nn.Conv1d(4, 4, 3, groups=4),
    ):
        sizes = []
        for name, hp in (("oni", {"center": False}), ("stiefel-rsgd", {})):
            torch.manual_seed(0)
            model = nn.Sequential(layer)
            m = get_method(name, targets="conv+linear", **hp)
            model = m.prepare(__import__("copy").deepcopy(model))
            sizes.append(model[0].parametrizations.weight[0].sizes)
        assert sizes[0] == sizes[1], layer
    assert sizes[1] == [1, 1, 1, 1]  # depthwise: every filter its own group (the sphere)


def test_parameters_are_transposed_groups_and_the_weight_a_view():
    model = get_method("stiefel-rsgd", targets="conv+linear").prepare(_model("conv1d-tall"))
    plist = model[0].parametrizations.weight
    (z,) = [plist.original0]
    assert isinstance(z, geoopt.ManifoldParameter) and type(z.manifold) is geoopt.EuclideanStiefel
    assert z.shape == (2, 6, 4)  # two groups of 4 filters in R^6, geoopt's (n, k) with orthonormal columns
    torch.testing.assert_close(z.mT @ z, torch.eye(4, dtype=z.dtype).expand(2, 4, 4), rtol=0, atol=1e-14)
    w = model[0].weight
    assert w.untyped_storage().data_ptr() == z.untyped_storage().data_ptr()  # no copy in the forward pass
    torch.testing.assert_close(w.reshape(8, 6), z.mT.reshape(8, 6), rtol=0, atol=0)
    view = StiefelView(torch.Size((7, 2, 2)), [3, 2, 2])
    wt = torch.randn(7, 2, 2, dtype=torch.float64)
    blocks = view.right_inverse(wt)
    assert [tuple(b.shape) for b in blocks] == [(1, 4, 3), (2, 4, 2)]
    assert torch.equal(view(*blocks), wt)


def test_zero_and_rank_deficient_groups_get_orthonormal_points():
    z = torch.tensor(
        [
            [[3.0, 0.0, 0.0, 0.0], [1.0, 2.0, 0.0, 0.0]],  # full rank: its polar factor
            [[1.0, 1.0, 0.0, 0.0], [2.0, 2.0, 0.0, 0.0]],  # two parallel filters: rank 1
            [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],  # all zero
        ],
        dtype=torch.float64,
    )
    torch.manual_seed(0)
    out = orthonormalize_rows_safe(z)
    eye = torch.eye(2, dtype=torch.float64).expand(3, 2, 2)
    torch.testing.assert_close(out @ out.mT, eye, rtol=0, atol=1e-14)
    polar = geoopt.EuclideanStiefel().projx(z[0].T).T  # geoopt's projection (the polar factor)
    torch.testing.assert_close(out[0], polar, rtol=0, atol=1e-14)
    kept = out[1] @ torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64) / 2**0.5
    torch.testing.assert_close(kept.norm(), torch.tensor(1.0, dtype=torch.float64))  # its one direction kept
    torch.manual_seed(0)
    assert torch.equal(orthonormalize_rows_safe(z), out)  # torch's generator: a seeded run repeats
    conv = nn.Conv1d(1, 3, 4, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
    model = get_method("stiefel-rsgd").prepare(nn.Sequential(conv))
    f = model[0].weight.reshape(3, 4)
    assert torch.isfinite(f).all()
    torch.testing.assert_close(f @ f.T, torch.eye(3), rtol=0, atol=1e-6)


def test_check_holds_after_steps_and_fails_off_the_manifold():
    method, model, _ = _train("conv1d-tall", "fused", 3, OptimizerConfig(lr=0.1))
    ok, reason = method.check(model)
    assert ok and "orthonormal" in reason
    with torch.no_grad():
        model[0].parametrizations.weight.original0[1, :, 0].mul_(1.001)  # one filter of the second group
    ok, reason = method.check(model)
    assert not ok and "not orthonormal" in reason and "1.0e-03" in reason.replace("2.0e-03", "1.0e-03")
    with torch.no_grad():
        model[0].parametrizations.weight.original0.fill_(float("nan"))
    assert method.check(model) == (False, "stiefel-rsgd: 0 has non-finite weights")


def test_euclidean_optimizer_is_refused_at_the_first_step():
    model = _model("conv2d-wide")
    method = get_method("stiefel-rsgd", targets="conv+linear")
    model = method.prepare(model)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    x, y = _data("conv2d-wide", model)
    with pytest.raises(MethodUseError, match="off the Stiefel manifold.*AdamW"):
        training_step(method, model, opt, _loss(model, x, y), 1)


def test_optimizer_names():
    method = get_method("stiefel-rsgd", targets="conv+linear")
    model = method.prepare(_model("linear-tall", dtype=torch.float32))
    for name in ("muon", "adamw"):  # one line naming the method and the optimizer (the interface's or ours)
        with pytest.raises(
            ValueError, match=f"^[^\n]*stiefel-rsgd[^\n]*{name}|^[^\n]*{name}[^\n]*stiefel-rsgd"
        ):
            method.make_optimizer(model, OptimizerConfig(name=name))
    with pytest.raises(ValueError, match="got 'lbfgs'"):
        method.make_optimizer(model, OptimizerConfig(name="lbfgs"))
    opt = method.make_optimizer(model, OptimizerConfig(name="adam", lr=1e-2))
    assert isinstance(opt, geoopt.optim.RiemannianAdam)
    x, y = _data("linear-tall", model, torch.float32)
    for step in range(1, 4):
        training_step(method, model, opt, _loss(model, x, y), step)
    assert method.check(model)[0]
    model = method.prepare(_model("conv1d-tall", dtype=torch.float32))  # with a bias: two groups
    sgd = method.make_optimizer(model, OptimizerConfig(weight_decay=5e-4))
    stiefel, rest = sgd.param_groups
    assert stiefel["weight_decay"] == 0 and rest["weight_decay"] == 5e-4


@pytest.mark.parametrize("impl", ["fused", "geoopt"])
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_checkpoint_resumes_exactly(impl, opt_name):
    """Model and optimizer state through torch.save / weights_only load into a fresh, differently seeded
    model: the next three steps are those of the uninterrupted run, bit for bit."""
    key = "conv1d-tall"
    cfg = OptimizerConfig(name=opt_name, lr=0.05, weight_decay=1e-3)

    def fresh(seed):
        model = _model(key, seed)
        method = get_method("stiefel-rsgd", targets="conv+linear", impl=impl)
        model = method.prepare(model)
        return method, model, method.make_optimizer(model, cfg)

    method, model, opt = fresh(0)
    x, y = _data(key, model)
    for step in range(1, 4):
        training_step(method, model, opt, _loss(model, x, y, step), step)
    bufs = io.BytesIO(), io.BytesIO()
    torch.save(model.state_dict(), bufs[0])
    torch.save(opt.state_dict(), bufs[1])
    method2, model2, opt2 = fresh(1)
    for b in bufs:
        b.seek(0)
    model2.load_state_dict(torch.load(bufs[0], weights_only=True))
    opt2.load_state_dict(torch.load(bufs[1], weights_only=True))
    for step in range(4, 7):
        for m, mod, o in ((method, model, opt), (method2, model2, opt2)):
            training_step(m, mod, o, _loss(mod, x, y, step), step)
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_state_dict_round_trip_and_bake():
    method = get_method("stiefel-rsgd", targets="conv+linear")
    model = method.prepare(_model("conv2d-tall"))
    sd = model.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items() if "original" in k} == {
        "0.parametrizations.weight.original0": (1, 4, 4),
        "0.parametrizations.weight.original1": (1, 4, 3),
    }
    twin = method.prepare(_model("conv2d-tall", seed=5))
    assert not torch.equal(twin[0].weight, model[0].weight)
    twin.load_state_dict(sd)
    assert torch.equal(twin[0].weight, model[0].weight)
    x, _ = _data("conv2d-tall", model)
    out = model(x)
    baked = oblique.bake(model)
    assert sorted(baked.state_dict()) == ["0.bias", "0.weight"]
    torch.testing.assert_close(baked(x), out, rtol=0, atol=0)
