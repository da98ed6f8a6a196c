"""The fused closed form of Norm Loss (FusedNormLossGrad): both row-norm paths against eq. 1 and eq. 6."""

import pytest
import torch
from torch import nn

from oblique.methods import get_method, norm_loss
from oblique.methods.norm_loss import FusedNormLossGrad

SHAPES = [(6, 4, 3), (30, 2, 3), (8, 3, 3, 3), (40, 2, 2, 2), (16, 3, 3, 3), (5, 12), (12, 5), (7, 12)]


def _weights(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(*s, generator=g, dtype=dtype) * 0.7).requires_grad_() for s in SHAPES]


def _eq6(w):
    f = w.detach().reshape(w.shape[0], -1)
    return (2 * f * (1 - 1 / f.norm(dim=1, keepdim=True))).view_as(w)


@pytest.mark.parametrize("gather", [False, True])
def test_fused_matches_eq1_and_eq6(gather):
    ws = _weights(1)
    ws[2].data[3] = 0  # gradient zero, value 1 (Note [zero filter in Norm Loss])
    for w in ws:
        w.grad = torch.full_like(w, 0.5)
    plan = FusedNormLossGrad(ws, gather=gather)
    assert all(b.gather is gather for b in plan.buckets)
    value = plan(0.3)
    assert value.dim() == 0 and isinstance(value, torch.Tensor)
    assert value.item() == pytest.approx(norm_loss(ws).item(), rel=1e-12)
    for w in ws:
        assert torch.allclose(w.grad, 0.5 + 0.3 * _eq6(w).nan_to_num(0.0), rtol=0, atol=1e-10)
        assert torch.isfinite(w.grad).all()
    assert torch.equal(ws[2].grad[3], torch.full_like(ws[2].grad[3], 0.5))
    # the weights themselves are untouched (the gather buffer is scaled, not the weights)
    assert torch.equal(ws[0].detach(), _weights(1)[0].detach())


def test_mixed_dtypes_make_buckets_and_missing_grads_are_created():
    ws = _weights(2)[:3] + [w.detach().float().requires_grad_() for w in _weights(3)[3:]]
    plan = FusedNormLossGrad(ws)
    assert len(plan.buckets) == 2
    value = plan(1.0)
    assert value.item() == pytest.approx(sum(norm_loss([w.double()]).item() for w in ws), rel=1e-6)
    for w in ws:
        assert w.grad is not None and w.grad.dtype == w.dtype
        assert torch.allclose(w.grad.double(), _eq6(w.double()), atol=1e-5)


def test_method_rebuilds_after_model_to_and_value_is_lazy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8, 2))
    method = get_method("nl", strength=0.1, targets="conv+linear")
    model = method.prepare(model)
    assert method.last_value is None
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    method.before_step(model)
    first = method.fused(model)
    assert method.regularizer_value().dim() == 0  # kept as a tensor until read
    assert method.last_value == pytest.approx(norm_loss(model, targets="conv+linear").item(), rel=1e-6)
    model.double()  # new data for every parameter: the plan must not write into the old storage
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    method.before_step(model)
    assert method.fused(model) is not first
    w = model[2].weight
    assert torch.allclose(w.grad, 0.1 * _eq6(w), atol=1e-12)
    assert method.fused(model) is method.fused(model)  # reused while current


def test_add_norm_loss_grad_empty_list():
    from oblique.methods import add_norm_loss_grad_

    assert add_norm_loss_grad_([], 0.1) == 0.0


def test_non_contiguous_weights_get_the_right_gradient():
    """A channels_last conv weight has no filter-matrix view: the fused form must still follow eq. 6,
    also on a later step, after the weights changed in place."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3)).double().to(memory_format=torch.channels_last)
    w = model[0].weight
    assert not w.is_contiguous()
    method = get_method("nl", strength=1.0)
    for _ in range(2):
        w.grad = None
        method.before_step(model)
        ref = w.detach().contiguous().requires_grad_()
        norm_loss([ref]).backward()
        assert torch.allclose(w.grad, ref.grad, atol=1e-12)
        with torch.no_grad():
            w.mul_(1.5)
