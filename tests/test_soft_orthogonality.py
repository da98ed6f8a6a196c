"""so and srip: values and gradients against the defining equations in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from oblique.methods import get_method
from oblique.methods.soft_orthogonality import so_penalty, spectral_deviation

SHAPES = [(4, 2, 3), (7, 3), (3, 10), (6, 1, 2, 2)]  # wide conv1d, tall, wide, tall conv2d


def _weight(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, dtype=torch.float64, generator=g).mul(0.5).requires_grad_()


@pytest.mark.parametrize("shape", SHAPES)
def test_so_is_the_paper_quantity_from_the_smaller_gram(shape):
    w = _weight(shape)
    f = w.reshape(shape[0], -1)
    direct = (f @ f.T - torch.eye(shape[0], dtype=f.dtype)).square().sum()
    value = so_penalty([w])
    torch.testing.assert_close(value, direct)
    (grad,) = torch.autograd.grad(value, w)
    want = 4 * (f @ f.T @ f - f)  # ∂‖FFᵀ − I‖²/∂F
    torch.testing.assert_close(grad.reshape_as(f), want.detach())


@pytest.mark.parametrize("shape", SHAPES)
def test_srip_is_the_top_singular_value_of_the_smaller_gram(shape):
    w = _weight(shape)
    f = w.reshape(shape[0], -1)
    n, p = f.shape
    gram = f @ f.T if n <= p else f.T @ f
    mu = torch.linalg.eigvalsh(gram - torch.eye(min(n, p), dtype=f.dtype))
    want = mu.abs().max()
    sigma, v = spectral_deviation(w, iters=200, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sigma, want)
    (grad,) = torch.autograd.grad(sigma, w)
    (want_grad,) = torch.autograd.grad(want, w)
    torch.testing.assert_close(grad, want_grad, rtol=1e-6, atol=1e-8)
    assert v.shape == (min(n, p),) and abs(v.norm().item() - 1) < 1e-12


def test_srip_tall_would_be_stuck_at_one_with_the_larger_gram():
    f = _weight((7, 3)).detach() * 0.1  # tiny: FᵀF − I ≈ −I
    big = torch.linalg.eigvalsh(f @ f.T - torch.eye(7, dtype=f.dtype)).abs().max()
    sigma, _ = spectral_deviation(f, iters=100)
    assert abs(big.item() - 1.0) < 1e-12 and sigma < big


def test_persistent_vector_converges_across_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 5, 3).double())
    f = model[0].weight.detach().reshape(5, -1)
    want = torch.linalg.eigvalsh(f @ f.T - torch.eye(5, dtype=f.dtype)).abs().max()
    method = get_method("srip", strength=1.0, iters=1, persistent=True)
    for _ in range(60):
        value = method.penalty(model)
    torch.testing.assert_close(value, want, rtol=1e-6, atol=0)


def test_method_penalties_are_strength_times_the_functions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Flatten(), nn.Linear(3, 4)).double()
    so = get_method("so", strength=0.1, targets="conv+linear")
    torch.testing.assert_close(so.penalty(model), 0.1 * so_penalty([model[0].weight, model[2].weight]))
    assert get_method("so", strength=0).penalty(model) is None
    srip = get_method("srip", strength=0.1, iters=100, persistent=False)
    f = model[0].weight.detach().reshape(3, -1)
    want = torch.linalg.eigvalsh(f @ f.T - torch.eye(3, dtype=f.dtype)).abs().max()
    torch.testing.assert_close(srip.penalty(model), 0.1 * want)


class _NoHostSync(torch.utils._python_dispatch.TorchDispatchMode):
    """Fails on any read of a tensor's value by the host (``.item()``, ``if tensor``, ``float(tensor)``)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default):
            raise AssertionError(f"the step path reads a tensor on the host: {func}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("name", ["srip", "so"])
def test_penalty_and_backward_never_wait_for_the_device(name, batched):
    """No data-dependent branch on the host in the step path (Note [batched by shape]), including at
    σ = 0 (an exactly orthogonal layer) where the power iteration keeps its vector."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 3, 3), nn.Conv1d(3, 3, 1, bias=False), nn.Conv1d(4, 3, 3)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(3, dtype=torch.float64).view(3, 3, 1))  # G = I: σ = 0
    method = get_method(name, batched=batched)
    for _ in range(2):
        with _NoHostSync():
            pen = method.penalty(model)
            pen.backward()
    assert torch.isfinite(pen) and all(
        torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None
    )
    torch.testing.assert_close(model[1].weight.grad, torch.zeros_like(model[1].weight.grad))
    if name == "srip":
        assert all(
            torch.isfinite(v).all() and abs(v.norm().item() - 1) < 1e-12
            for v in method.state_dict()["vectors"].values()
        )


def test_batched_srip_matches_the_per_layer_vectors_and_draws():
    """Same random starts (drawn in model order from the method's generator), same vectors after."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(4, 5, 3), nn.Conv1d(5, 5, 3), nn.Conv1d(5, 5, 3), nn.Flatten(), nn.Linear(5, 9)
    )
    model = model.double()
    methods = [get_method("srip", targets="conv+linear", batched=b) for b in (True, False)]
    for _ in range(3):
        values = [m.penalty(model) for m in methods]
        torch.testing.assert_close(values[0], values[1], rtol=0, atol=1e-12)
    batched, per_layer = (m.state_dict()["vectors"] for m in methods)
    assert list(batched) == list(per_layer) == ["0", "1", "2", "4"]
    for k in batched:
        torch.testing.assert_close(batched[k], per_layer[k], rtol=0, atol=1e-12)
