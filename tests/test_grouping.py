"""Groups of filters for oni/olm (Note [tall groups]) and the batched computation across layers (Note
[batched across layers]): when it computes, what it hands out, and that training, evaluation, copies and
DistributedDataParallel see ordinary parameters."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
from torch import nn

from oblique.methods import OptimizerConfig, get_method
from oblique.methods._grouping import BatchedOrthogonalization, group_sizes


@pytest.mark.parametrize(
    ("n", "p", "group_size", "center", "want"),
    [
        (4, 27, 0, True, [4]),  # wide: one group
        (16, 3, 0, True, [2] * 8),  # stem conv (16, 1, 3): centred rows live in R^2
        (16, 3, 0, False, [3, 3, 3, 3, 2, 2]),  # not centred: ≤ 3 rows
        (32, 16, 0, True, [11, 11, 10]),  # widening 1×1 shortcut (32, 16, 1)
        (10, 64, 4, True, [4, 3, 3]),  # requested groups need not divide n
        (8, 64, 2, True, [2, 2, 2, 2]),
        (5, 1, 0, True, [1] * 5),  # p = 1: never centred, one filter per group
        (3, 3, 0, True, [2, 1]),
    ],
)
def test_group_sizes(n, p, group_size, center, want):
    sizes = group_sizes(n, p, group_size, center)
    assert sizes == want
    limit = p - 1 if (center and p > 1) else p
    assert sum(sizes) == n and max(sizes) <= limit and max(sizes) - min(sizes) <= 1


class _Net(nn.Module):
    """Four convolutions of two shapes and a tall linear layer; ``use`` picks the layers a forward uses."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv1d(4, 6, 3, bias=False) for _ in range(3)] + [nn.Conv1d(2, 6, 3)])
        self.fc = nn.Linear(3, 7)

    def forward(self, x: torch.Tensor, use: tuple[int, ...] = (0, 1, 2, 3, 4)) -> torch.Tensor:
        out = x.new_zeros(())
        for i in use:
            if i < 3:
                out = out + torch.tanh(self.convs[i](x)).square().sum()
            elif i == 3:
                out = out + torch.tanh(self.convs[3](x[:, :2])).square().sum()
            else:
                out = out + torch.tanh(self.fc(x[:, :3, 0])).square().sum()
        return out


def _prepared(name: str = "oni", batched: bool = True, seed: int = 0) -> tuple:
    torch.manual_seed(seed)
    method = get_method(name, targets="conv+linear", batched=batched)
    return method, method.prepare(_Net().double())


def _x() -> torch.Tensor:
    return torch.randn(3, 4, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def _count_computations(monkeypatch) -> list[int]:
    calls = [0]
    real = BatchedOrthogonalization._compute

    def counting(self, inference):
        calls[0] += 1
        return real(self, inference)

    monkeypatch.setattr(BatchedOrthogonalization, "_compute", counting)
    return calls


def test_one_computation_per_forward_and_one_per_evaluation(monkeypatch):
    method, model = _prepared()
    calls = _count_computations(monkeypatch)
    x = _x()
    model(x).backward()
    assert calls[0] == 1, "a training forward computes every layer's weight once"
    model(x).backward()
    assert calls[0] == 2, "the next forward computes again"
    with torch.no_grad():
        first = [m.weight for m in model.convs]
        for _ in range(3):
            model(x)
        method.effective_weights(model)
    assert calls[0] == 3, "an evaluation computes once and reuses while the weights are unchanged"
    with torch.no_grad():
        assert all(a is m.weight for a, m in zip(first, model.convs, strict=True))
    opt = method.make_optimizer(model, OptimizerConfig(lr=0.1))
    model(x).backward()
    opt.step()  # in-place update: the evaluation cache is stale
    with torch.no_grad():
        after = model.convs[0].weight
    assert calls[0] == 5 and not torch.equal(after, first[0])
    with torch.inference_mode():
        model(x)
    assert calls[0] == 6, "inference mode has its own computation"


def test_same_gradients_as_per_layer_in_awkward_uses():
    """Gradient accumulation over two forwards, a layer used twice, and a layer that a forward skips and
    the next uses (its weight must not come from a computation whose graph a backward already freed)."""
    uses = [(0, 1, 2, 3, 4), (0, 0, 1), (2, 3), (1, 4)]
    grads = []
    for batched in (True, False):
        method, model = _prepared(batched=batched)
        opt = method.make_optimizer(model, OptimizerConfig(lr=0.1))
        x = _x()
        out = []
        for use in uses:
            opt.zero_grad()
            model(x, use).backward()
            model(x, use[:1]).backward()  # accumulate a second forward's gradient
            out.append([p.grad.clone() if p.grad is not None else None for p in model.parameters()])
            opt.step()
        grads.append(out)
    for step_b, step_p in zip(*grads, strict=True):
        for gb, gp in zip(step_b, step_p, strict=True):
            assert (gb is None) == (gp is None)
            if gb is not None:
                torch.testing.assert_close(gb, gp, rtol=0, atol=1e-12)


def test_copies_get_their_own_plan_and_nothing_is_saved():
    method, model = _prepared()
    model(_x()).backward()
    plan = model.convs[0].parametrizations.weight[0].shared
    twin = copy.deepcopy(model)
    tplan = twin.convs[0].parametrizations.weight[0].shared
    assert isinstance(tplan, BatchedOrthogonalization) and tplan is not plan
    assert all(m.parametrizations.weight[0].shared is tplan for m in [*twin.convs, twin.fc])
    assert [pl.original for pl in tplan.lists] == [p for p in method.target_weights(twin)]
    torch.testing.assert_close(twin(_x()), model(_x()), rtol=0, atol=0)
    _, fresh = _prepared(batched=False)
    assert list(model.state_dict()) == list(fresh.state_dict())  # no parameter, no buffer of its own


def test_a_write_through_data_needs_invalidate():
    """``.data`` bypasses the version counter (Note [batched across layers]): invalidate() is the way."""
    _, model = _prepared()
    with torch.no_grad():
        before = model.convs[0].weight.clone()
    model.convs[0].parametrizations.weight.original.data.mul_(-1.0)
    with torch.no_grad():
        assert torch.equal(model.convs[0].weight, before)  # not seen
    model.convs[0].parametrizations.weight[0].shared.invalidate()
    with torch.no_grad():
        torch.testing.assert_close(model.convs[0].weight, -before, rtol=0, atol=1e-12)


def test_weights_follow_load_state_dict_and_device_moves():
    method, model = _prepared(seed=0)
    _, other = _prepared(seed=1)
    with torch.no_grad():
        before = model.convs[0].weight.clone()
    model.load_state_dict(other.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model.convs[0].weight, other.convs[0].weight, rtol=0, atol=1e-12)
        assert not torch.allclose(model.convs[0].weight, before)
    model.float()  # new storage and dtype: computed again, in float32
    with torch.no_grad():
        assert model.convs[0].weight.dtype == torch.float32
    model(_x().float()).backward()


def test_ddp_wrap_of_a_prepared_model(tmp_path):
    """Prepared before wrapping (docs/DESIGN.md, "Scale-out"): one DistributedDataParallel step (one process,
    gloo) gives the same gradients and the same update as the unwrapped model."""
    if not dist.is_available():  # pragma: no cover - torch built without distributed
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        results = []
        for wrap in (True, False):
            method, model = _prepared()
            opt = method.make_optimizer(model, OptimizerConfig(lr=0.1))
            net = nn.parallel.DistributedDataParallel(model) if wrap else model
            for _ in range(2):
                opt.zero_grad()
                net(_x()).backward()
                opt.step()
            results.append([p.detach().clone() for p in model.parameters()])
        for a, b in zip(*results, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    finally:
        dist.destroy_process_group()
