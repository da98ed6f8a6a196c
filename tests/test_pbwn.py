"""pbwn: a plain optimizer step, then every filter projected back to unit norm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from oblique.geometry import filter_matrix
from oblique.methods import OptimizerConfig, get_method


def _run(every: int, steps: int):
    torch.manual_seed(0)
    method = get_method("pbwn", targets="conv+linear", every=every)
    model = nn.Sequential(nn.Conv2d(2, 5, 3), nn.Flatten(), nn.Linear(5 * 9, 7))
    assert not torch.allclose(filter_matrix(model[0].weight).norm(dim=1), torch.ones(5))
    model = method.prepare(model)
    opt = method.make_optimizer(model, OptimizerConfig(lr=0.1))
    x = torch.randn(4, 2, 5, 5)
    r = torch.randn(4, 7)
    devs = []
    for step in range(1, steps + 1):
        opt.zero_grad()
        torch.tanh(model(x)).mul(r).sum().backward()
        opt.step()
        method.after_step(model, step)
        devs.append(
            max((filter_matrix(w).norm(dim=1) - 1).abs().max().item() for w in method.target_weights(model))
        )
    return devs


def test_prepare_projects_and_every_step_ends_on_the_manifold_float32():
    method = get_method("pbwn", targets="conv+linear")
    model = method.prepare(nn.Sequential(nn.Conv1d(3, 4, 3), nn.Flatten(), nn.Linear(4, 9)))
    for w in method.target_weights(model):
        torch.testing.assert_close(filter_matrix(w).norm(dim=1), torch.ones(w.shape[0]), rtol=0, atol=1e-6)
    assert max(_run(every=1, steps=5)) <= 1e-6


@pytest.mark.parametrize("every", [2, 3])
def test_every_k_steps(every):
    devs = _run(every=every, steps=6)
    for step, dev in enumerate(devs, start=1):
        if step % every == 0:
            assert dev <= 1e-6
        else:
            assert dev > 1e-4  # the step moved it off; no projection yet


def test_flops_scale_with_every():
    model = nn.Sequential(nn.Conv1d(3, 4, 3))
    one = get_method("pbwn").analytic_flops(model)
    assert one == 3 * 36 and get_method("pbwn", every=4).analytic_flops(model) == one / 4
