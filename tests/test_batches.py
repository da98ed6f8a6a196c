"""The order a run sees its data (oblique/batches.py): ``fixed`` is the stored order every epoch (the MNIST-1D
notebooks' slices where the batch divides the set), draws nothing from the generator, resumes mid-epoch,
and splits a global batch over ranks; ``shuffle`` is the default; a bad order is one line."""

from __future__ import annotations

import pytest
import torch

from oblique.batches import ORDERS, Batches
from oblique.config import ConfigError, RunConfig
from oblique.data import TensorData


def _data(n: int) -> TensorData:
    return TensorData(torch.arange(float(n))[:, None], torch.arange(n))  # label = the sample's index


def _labels(batches: Batches, epoch: int, skip: int = 0) -> list[list[int]]:
    return [y.tolist() for _, y in batches.epoch(epoch, skip)]


def _upstream_slice(step: int, batch: int, n: int) -> list[int]:
    """The samples of step ``step`` of the MNIST-1D notebooks' loop: ``x[(t·B) mod n : (t·B) mod n + B]``."""
    start = (step * batch) % n
    return list(range(n))[start : start + batch]


@pytest.mark.parametrize("drop_last", [True, False])
def test_fixed_is_upstreams_slice_at_every_step_when_the_batch_divides_the_set(drop_last):
    n, bs, epochs = 40, 10, 3
    fixed = Batches(_data(n), bs, generator=torch.Generator(), drop_last=drop_last, order="fixed")
    steps = [b for e in range(epochs) for b in _labels(fixed, e)]
    assert steps == [_upstream_slice(t, bs, n) for t in range(epochs * n // bs)]


def test_fixed_starts_every_epoch_at_sample_0_where_upstream_drifts():
    fixed = Batches(_data(10), 4, generator=torch.Generator(), drop_last=False, order="fixed")
    epoch = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # the short last batch kept
    assert _labels(fixed, 0) == _labels(fixed, 1) == epoch
    assert _upstream_slice(3, 4, 10) == [2, 3, 4, 5]  # upstream's fourth step: not at sample 0
    dropped = Batches(_data(10), 4, generator=torch.Generator(), drop_last=True, order="fixed")
    assert _labels(dropped, 0) == _labels(dropped, 5) == epoch[:2] and len(dropped) == 2


def test_fixed_draws_nothing_and_resumes_mid_epoch():
    g = torch.Generator().manual_seed(3)
    before = g.get_state()
    fixed = Batches(_data(12), 4, generator=g, drop_last=True, order="fixed")
    first = [_labels(fixed, e) for e in range(2)]
    assert torch.equal(g.get_state(), before)  # the run's data-order generator is left as it was
    state = fixed.state_dict()  # stopped in epoch 1
    again = Batches(_data(12), 4, generator=torch.Generator().manual_seed(3), drop_last=True, order="fixed")
    again.load_state_dict(state)
    assert _labels(again, 1, skip=2) == first[1][2:] and _labels(again, 2) == first[0]


def test_shuffle_is_the_default_and_draws_a_new_permutation_every_epoch():
    assert ORDERS[0] == "shuffle" and RunConfig().batch_order == "shuffle"
    shuffled = Batches(_data(40), 10, generator=torch.Generator().manual_seed(0), drop_last=True)
    assert shuffled.order == "shuffle"
    a, b = _labels(shuffled, 0), _labels(shuffled, 1)
    assert a != b and sorted(sum(a, [])) == sorted(sum(b, [])) == list(range(40))


@pytest.mark.parametrize("order", ORDERS)
def test_every_rank_takes_its_share_of_the_global_batch_in_either_order(order):
    def ranks(world):
        out = []
        for rank in range(world):
            g = torch.Generator().manual_seed(5)
            b = Batches(_data(24), 8, generator=g, drop_last=True, rank=rank, world=world, order=order)
            out.append([_labels(b, e) for e in range(2)])
        return out

    (alone,), pair = ranks(1), ranks(2)
    joined = [[r0 + r1 for r0, r1 in zip(*epochs, strict=True)] for epochs in zip(*pair, strict=True)]
    assert joined == alone


def test_a_bad_order_is_refused_naming_its_setting():
    with pytest.raises(ValueError, match="order must be one of shuffle, fixed; got 'random'"):
        Batches(_data(4), 2, generator=torch.Generator(), drop_last=True, order="random")
    with pytest.raises(ConfigError, match="batch_order") as e:
        RunConfig(batch_order="random").resolved().validate()
    assert e.value.settings == ("batch_order",)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fixed_on_the_device_cuts_the_stored_order_there():
    data = _data(40).to("cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    fixed = Batches(data, 10, generator=g, drop_last=True, order="fixed")
    batches = list(fixed.epoch(0))
    assert all(y.device.type == "cuda" for _, y in batches)
    assert [y.tolist() for _, y in batches] == [_upstream_slice(t, 10, 40) for t in range(4)]
