"""ObliqueSGD against geoopt.optim.RiemannianSGD: the same trajectory to 1e-6 in float64."""

from __future__ import annotations

import copy

import geoopt
import pytest
import torch
from torch import nn

from oblique.geometry import filter_matrix
from oblique.optim import ObliqueSGD


class _Net(nn.Module):
    """Conv weights of two filter lengths (two groups), one of them repeated, plus a linear layer."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.c3 = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 4)

    def forward(self, x, weights):
        w1, w2, w3, wfc = weights
        x = torch.relu(nn.functional.conv2d(x, w1, self.c1.bias, padding=1))
        x = torch.relu(self.bn(nn.functional.conv2d(x, w2, padding=1)))
        x = torch.relu(nn.functional.conv2d(x, w3, padding=1))
        return nn.functional.linear(x.mean(dim=(2, 3)), wfc, self.fc.bias)


def _setup(seed: int):
    """A float64 net whose conv and linear weights are sphere filter matrices (ManifoldParameters)."""
    torch.manual_seed(seed)
    net = _Net().double()
    shapes = [net.c1.weight.shape, net.c2.weight.shape, net.c3.weight.shape, net.fc.weight.shape]
    sphere = []
    for m in (net.c1, net.c2, net.c3, net.fc):
        f = filter_matrix(m.weight.detach())  # (C_out, p)
        sphere.append(geoopt.ManifoldParameter(f / f.norm(dim=1, keepdim=True), manifold=geoopt.Sphere()))
    plain = [net.c1.bias, net.bn.weight, net.bn.bias, net.fc.bias]
    x = torch.randn(5, 3, 6, 6, dtype=torch.float64)
    y = torch.randint(4, (5,))
    return net, shapes, sphere, plain, x, y


def _run(opt_cls, kw, seed=0, steps=6, wd_plain=0.0, drop_grad_at=None):
    net, shapes, sphere, plain, x, y = _setup(seed)
    groups = [{"params": sphere}, {"params": plain, "weight_decay": wd_plain}]
    opt = opt_cls(groups, **kw)
    for t in range(steps):
        opt.zero_grad(set_to_none=True)
        ws = [s.view(shape) for s, shape in zip(sphere, shapes, strict=True)]
        loss = nn.functional.cross_entropy(net(x * (1 + 0.1 * t), ws), y)
        loss.backward()
        if drop_grad_at is not None and t == drop_grad_at:
            sphere[1].grad = None  # geoopt skips a parameter without gradient
            plain[0].grad = None
        opt.step()
    return [p.detach().clone() for p in sphere + plain], opt


CASES = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.1, momentum=0.8, dampening=0.3),
    dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
    dict(lr=0.1, momentum=0.9, stabilize=2),
]


@pytest.mark.parametrize("kw", CASES, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_trajectory_matches_geoopt(kw):
    ref, _ = _run(geoopt.optim.RiemannianSGD, kw, wd_plain=1e-3)
    got, _ = _run(ObliqueSGD, kw, wd_plain=1e-3)
    for a, b in zip(ref, got, strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0)
    moved = max((a - b).abs().max().item() for a, b in zip(ref, _setup(0)[2] + _setup(0)[3], strict=True))
    assert moved > 1e-3  # the test sees real steps


def test_missing_gradient_step_matches_geoopt():
    kw = dict(lr=0.1, momentum=0.9, nesterov=True)
    ref, _ = _run(geoopt.optim.RiemannianSGD, kw, drop_grad_at=2)
    got, _ = _run(ObliqueSGD, kw, drop_grad_at=2)
    for a, b in zip(ref, got, strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0)


def test_zero_momentum_init_matches_torch_sgd_on_plain_params():
    torch.manual_seed(1)
    a = [
        torch.randn(7, 3, dtype=torch.float64, requires_grad=True),
        torch.randn(5, dtype=torch.float64, requires_grad=True),
    ]
    b = [t.detach().clone().requires_grad_() for t in a]
    oa = torch.optim.SGD(a, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)
    ob = ObliqueSGD(b, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2, momentum_init="zero")
    for t in range(5):
        for ps, o in ((a, oa), (b, ob)):
            o.zero_grad()
            sum((p.sin() * (t + 1)).sum() for p in ps).backward()
            o.step()
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(y, x, atol=1e-10, rtol=0)


def test_stays_on_manifold_float32():
    torch.manual_seed(2)
    p = geoopt.ManifoldParameter(
        torch.nn.functional.normalize(torch.randn(40, 27), dim=1), manifold=geoopt.Sphere()
    )
    opt = ObliqueSGD([p], lr=0.5, momentum=0.9, nesterov=True)
    for _ in range(20):
        p.grad = torch.randn_like(p)
        opt.step()
        assert torch.allclose(p.norm(dim=1), torch.ones(40), atol=1e-5)
        buf = opt.state[p]["momentum_buffer"]
        assert (p * buf).sum(dim=1).abs().max() < 1e-5  # the buffer is tangent at the new point


def test_state_dict_resume_is_exact():
    kw = dict(lr=0.1, momentum=0.9, nesterov=True)
    net, shapes, sphere, plain, x, y = _setup(3)

    def step(params, opt, t):
        opt.zero_grad(set_to_none=True)
        ws = [s.view(shape) for s, shape in zip(params[:4], shapes, strict=True)]
        nn.functional.cross_entropy(net(x * (1 + 0.1 * t), ws), y).backward()
        opt.step()

    opt = ObliqueSGD([{"params": sphere}, {"params": plain}], **kw)
    for t in range(3):
        step(sphere + plain, opt, t)
    saved_params = [p.detach().clone() for p in sphere + plain]
    saved_state = copy.deepcopy(opt.state_dict())
    for t in range(3, 6):
        step(sphere + plain, opt, t)
    straight = [p.detach().clone() for p in sphere + plain]
    with torch.no_grad():
        for p, s in zip(sphere + plain, saved_params, strict=True):
            p.copy_(s)
    opt2 = ObliqueSGD([{"params": sphere}, {"params": plain}], **kw)
    opt2.load_state_dict(saved_state)
    for t in range(3, 6):
        step(sphere + plain, opt2, t)
    for a, b in zip(straight, sphere + plain, strict=True):
        torch.testing.assert_close(b.detach(), a, atol=1e-12, rtol=0)


def test_invalid_arguments():
    p = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="Nesterov"):
        ObliqueSGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="momentum_init"):
        ObliqueSGD([p], lr=0.1, momentum_init="torch")
    with pytest.raises(ValueError, match="Sphere"):
        ObliqueSGD([geoopt.ManifoldParameter(torch.eye(3), manifold=geoopt.Stiefel())], lr=0.1)


@pytest.mark.parametrize("nesterov", [False, True])
def test_oblique_rsgd_fused_impl_matches_its_geoopt_impl(nesterov):
    """Through the method: impl=fused (ObliqueSGD, momentum from zero) equals impl=geoopt, conv and linear."""
    from oblique.methods import OptimizerConfig, get_method

    finals = []
    for impl in ("geoopt", "fused"):
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 16, 3)
        )
        model = model.double()
        method = get_method("oblique-rsgd", targets="conv+linear", impl=impl, stabilize=3)
        model = method.prepare(model)
        cfg = OptimizerConfig(lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=1e-3)
        opt = method.make_optimizer(model, cfg)
        assert isinstance(opt, ObliqueSGD) == (impl == "fused")
        g = torch.Generator().manual_seed(1)
        x = torch.randn(8, 3, 6, 6, dtype=torch.float64, generator=g)
        y = torch.randint(3, (8,), generator=g)
        for step in range(1, 8):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            method.after_step(model, step)
        finals.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*finals, strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0)


def test_the_fused_step_follows_its_parameters_to_float64():
    """After ``model.to(torch.float64)`` the fused step computes in float64 (its buffers gathered again, the
    momentum carried over), as the same optimizer built on the float64 model does."""
    import geoopt

    from oblique.optim import ObliqueSGD

    torch.manual_seed(0)
    x = geoopt.ManifoldParameter(
        torch.nn.functional.normalize(torch.randn(6, 5), dim=1), manifold=geoopt.Sphere()
    )
    moved = ObliqueSGD([x], lr=0.1, momentum=0.9)
    x.grad = torch.randn(6, 5)
    moved.step()
    twin = geoopt.ManifoldParameter(x.detach().double().clone(), manifold=geoopt.Sphere())
    ref = ObliqueSGD([twin], lr=0.1, momentum=0.9)
    ref.state[twin]["momentum_buffer"] = moved.state[x]["momentum_buffer"].double().clone()
    x.data = x.data.double()  # what Module.to(torch.float64) does to a parameter
    for _ in range(3):
        g = torch.randn(6, 5, dtype=torch.float64)
        x.grad, twin.grad = g.clone(), g.clone()
        moved.step()
        ref.step()
    assert x.dtype == torch.float64 and moved.state[x]["momentum_buffer"].dtype == torch.float64
    assert torch.allclose(x, twin, atol=1e-15, rtol=0)


# ---------------------------------------------------------------------------------------------- StiefelSGD
def _stiefel_setup(seed: int):
    """Stiefel parameters of three layouts — 2-D and contiguous, 3-D stored transposed (as stiefel-rsgd
    stores them), two of one shape (one fused group) — plus plain ones, in float64, and a loss over them."""
    from oblique.methods.stiefel_rsgd import orthonormalize_rows_safe

    torch.manual_seed(seed)

    def point(c, k, n, transposed):
        rows = orthonormalize_rows_safe(torch.randn(c, k, n, dtype=torch.float64))  # (c, k, n)
        x = rows.mT if transposed else rows.mT.contiguous()  # (c, n, k), orthonormal columns
        return geoopt.ManifoldParameter(x if c > 1 else x[0], manifold=geoopt.EuclideanStiefel())

    stiefel = [
        point(1, 3, 7, False),  # (7, 3), a plain 2-D geoopt point
        point(2, 4, 9, True),  # (2, 9, 4)
        point(3, 4, 9, True),  # (3, 9, 4): the same shape, gathered with the one before
        point(2, 4, 9, False),  # the same shape, contiguous: a strided gather
    ]
    plain = [torch.randn(5, dtype=torch.float64, requires_grad=True), torch.randn(3, 2, dtype=torch.float64)]
    plain[1].requires_grad_()
    targets = [torch.randn(p.shape, dtype=torch.float64) for p in stiefel + plain]

    def loss(t):
        return sum(
            ((p * (1 + 0.1 * t)).sin() - y).pow(2).sum()
            for p, y in zip(stiefel + plain, targets, strict=True)
        )

    return stiefel, plain, loss


def _stiefel_run(opt_cls, kw, steps=20, drop_grad_at=None, wd_plain=1e-3):
    stiefel, plain, loss = _stiefel_setup(0)
    opt = opt_cls([{"params": stiefel}, {"params": plain, "weight_decay": wd_plain}], **kw)
    for t in range(steps):
        opt.zero_grad(set_to_none=True)
        loss(t).backward()
        if drop_grad_at is not None and t == drop_grad_at:
            stiefel[2].grad = None
        opt.step()
    return [p.detach().clone() for p in stiefel + plain], opt


STIEFEL_CASES = [
    dict(lr=0.05),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.03, momentum=0.9, nesterov=True),
    dict(lr=0.05, momentum=0.8, dampening=0.3),
    dict(lr=0.03, momentum=0.9, nesterov=True, weight_decay=1e-2),
    dict(lr=0.05, momentum=0.9, stabilize=3),
]


@pytest.mark.parametrize("retraction", ["cholesky", "householder"])
@pytest.mark.parametrize("kw", STIEFEL_CASES, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_stiefel_trajectory_matches_geoopt(kw, retraction):
    """StiefelSGD (momentum_init egrad, geoopt's) against geoopt.optim.RiemannianSGD on EuclideanStiefel:
    20 steps to 1e-12 in float64, every point still orthonormal."""
    from oblique.optim import StiefelSGD

    ref, _ = _stiefel_run(geoopt.optim.RiemannianSGD, kw)
    got, opt = _stiefel_run(StiefelSGD, {**kw, "retraction": retraction})
    for a, b in zip(ref, got, strict=True):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=0)
    start = _stiefel_setup(0)
    moved = max((a - b.detach()).abs().max().item() for a, b in zip(ref, start[0] + start[1], strict=True))
    assert moved > 1e-2  # the test sees real steps
    for p in got[:4]:
        eye = torch.eye(p.shape[-1], dtype=p.dtype).expand(*p.shape[:-2], -1, -1)
        torch.testing.assert_close(p.mT @ p, eye, atol=1e-13, rtol=0)
    assert len([g for g in opt._plans[0] if hasattr(g, "k")]) == 2  # (7, 3) and (9, 4): two fused groups


def test_stiefel_missing_gradient_and_zero_init_match_geoopt():
    """A parameter without a gradient in one step is skipped, as geoopt does; momentum_init="zero" is the
    corrected geoopt optimizer of oblique.methods.geoopt_optim."""
    from oblique.methods.geoopt_optim import RiemannianSGD
    from oblique.optim import StiefelSGD

    kw = dict(lr=0.03, momentum=0.9, nesterov=True)
    ref, _ = _stiefel_run(geoopt.optim.RiemannianSGD, kw, drop_grad_at=2)
    got, _ = _stiefel_run(StiefelSGD, kw, drop_grad_at=2)
    for a, b in zip(ref, got, strict=True):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=0)
    ref, _ = _stiefel_run(RiemannianSGD, kw, drop_grad_at=0)
    got, _ = _stiefel_run(StiefelSGD, {**kw, "momentum_init": "zero"}, drop_grad_at=0)
    for a, b in zip(ref, got, strict=True):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=0)


def test_stiefel_state_dict_resume_is_exact_and_buffers_tangent():
    from oblique.optim import StiefelSGD

    kw = dict(lr=0.03, momentum=0.9, nesterov=True)
    stiefel, plain, loss = _stiefel_setup(3)
    params = stiefel + plain

    def step(opt, t):
        opt.zero_grad(set_to_none=True)
        loss(t).backward()
        opt.step()

    opt = StiefelSGD([{"params": stiefel}, {"params": plain}], **kw)
    for t in range(3):
        step(opt, t)
    for p in stiefel:  # the transported buffer is tangent at the new point: sym(XᵀB) = 0
        s = p.mT @ opt.state[p]["momentum_buffer"]
        assert (s + s.mT).abs().max() < 1e-13
    saved_params = [p.detach().clone() for p in params]
    saved_state = copy.deepcopy(opt.state_dict())
    for t in range(3, 6):
        step(opt, t)
    straight = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, s in zip(params, saved_params, strict=True):
            p.copy_(s)
    opt2 = StiefelSGD([{"params": stiefel}, {"params": plain}], **kw)
    opt2.load_state_dict(saved_state)
    for t in range(3, 6):
        step(opt2, t)
    for a, b in zip(straight, params, strict=True):
        assert torch.equal(b.detach(), a)
    assert opt2.workspace_tensors()  # the fused buffers are accounted for


def test_stiefel_invalid_arguments():
    from oblique.optim import StiefelSGD

    x = geoopt.ManifoldParameter(torch.eye(4, 2), manifold=geoopt.EuclideanStiefel())
    with pytest.raises(ValueError, match="retraction must be one of cholesky, householder"):
        StiefelSGD([x], lr=0.1, retraction="polar")
    for manifold in (geoopt.CanonicalStiefel(), geoopt.EuclideanStiefelExact(), geoopt.Sphere()):
        with pytest.raises(ValueError, match="EuclideanStiefel"):
            StiefelSGD([geoopt.ManifoldParameter(torch.eye(4, 2), manifold=manifold)], lr=0.1)
    with pytest.raises(ValueError, match="Nesterov"):
        StiefelSGD([x], lr=0.1, nesterov=True)


def test_stiefel_step_follows_its_parameters_to_float64():
    """After ``.data`` becomes float64 (``model.to``) the fused step computes in float64, momentum carried."""
    from oblique.optim import StiefelSGD

    torch.manual_seed(0)
    rows = torch.linalg.qr(torch.randn(6, 3, dtype=torch.float64))[0]  # (6, 3) orthonormal columns
    x = geoopt.ManifoldParameter(rows.float(), manifold=geoopt.EuclideanStiefel())
    moved = StiefelSGD([x], lr=0.05, momentum=0.9)
    x.grad = torch.randn(6, 3)
    moved.step()
    twin = geoopt.ManifoldParameter(x.detach().double().clone(), manifold=geoopt.EuclideanStiefel())
    ref = StiefelSGD([twin], lr=0.05, momentum=0.9)
    ref.state[twin]["momentum_buffer"] = moved.state[x]["momentum_buffer"].double().clone()
    x.data = x.data.double()
    for _ in range(3):
        g = torch.randn(6, 3, dtype=torch.float64)
        x.grad, twin.grad = g.clone(), g.clone()
        moved.step()
        ref.step()
    assert x.dtype == torch.float64 and moved.state[x]["momentum_buffer"].dtype == torch.float64
    assert torch.allclose(x, twin, atol=1e-15, rtol=0)
