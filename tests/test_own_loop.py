"""Your own training loop (README, "Your own training loop"): every method under a caller's autocast, Norm
Loss through a GradScaler, the order mistakes refused, fit for any task — and the README's block itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import oblique
from oblique.batches import Batches
from oblique.data import TensorData
from oblique.fit import fit
from oblique.methods import REGISTRY, MethodUseError, OptimizerConfig, get_method
from oblique.options import OptionError

ROOT = Path(__file__).resolve().parent.parent


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv1d(8, 8, 3, padding=1),
        nn.Flatten(),
        nn.Linear(8 * 12, 5),
    )


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 1, 12, generator=g), torch.randint(0, 5, (16,), generator=g)


def _loop(method, model, steps=5, *, scaler=None, autocast=False, optimizer=None):
    """The README's loop: prepare before this, then penalty, backward, (unscale_), before_step, step, after_step."""
    opt = optimizer or method.make_optimizer(model, OptimizerConfig(lr=0.05, momentum=0.0, nesterov=False))
    x, y = _batch()
    losses = []
    for step in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(model(x), y)
            pen = method.penalty(model)
            total = loss + pen if pen is not None else loss
        if scaler is None:
            total.backward()
            method.before_step(model)
            opt.step()
        else:
            scaler.scale(total).backward()
            scaler.unscale_(opt)
            method.before_step(model)
            scaler.step(opt)
            scaler.update()
        method.after_step(model, step)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_method_trains_under_the_callers_bf16_autocast(name):
    """five steps under torch.autocast(cpu, bf16), finite loss; ONI's, OLM's and
    WN's effective weights stay float32."""
    method = get_method(name, targets="conv+linear")
    model = method.prepare(_net())
    losses = _loop(method, model, autocast=True)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(w.dtype == torch.float32 for w in method.effective_weights(model).values())


def test_norm_loss_through_a_grad_scaler_equals_the_unscaled_loop():
    """scale 2**16, unscale_ before before_step."""
    runs = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**16)):
        method = get_method("nl", strength=0.5, targets="conv+linear")
        model = method.prepare(_net())
        _loop(method, model, scaler=scaler)
        runs.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*runs, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["nl", "so", "oni"])
def test_training_step_through_a_grad_scaler_equals_the_unscaled_step(name):
    """oblique.training_step(..., scaler=): the loss and penalty scaled, the gradients unscaled before
    before_step, the scaler steps; at 2**16 the same weights as without."""
    runs = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**16)):
        method = get_method(name, strength=0.5, targets="conv+linear")
        model = method.prepare(_net())
        opt = method.make_optimizer(model, OptimizerConfig(lr=0.05))
        x, y = _batch()
        for step in (1, 2, 3):
            oblique.training_step(method, model, opt, F.cross_entropy(model(x), y), step, scaler=scaler)
        runs.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["wn", "oblique-rsgd"])
def test_an_optimizer_built_before_prepare_is_refused_at_the_first_step(name):
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)  # holds the parameters prepare replaces
    method = get_method(name)
    model = method.prepare(model)
    with pytest.raises(
        MethodUseError,
        match="the optimizer stepped none of the parameters .* in 3 steps: build it after method.prepare",
    ):
        _loop(method, model, optimizer=opt)


def test_oblique_rsgd_with_a_euclidean_optimizer_is_refused():
    method = get_method("oblique-rsgd")
    model = method.prepare(_net())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with pytest.raises(MethodUseError, match="moved the filters off the sphere .* not a Euclidean optimizer"):
        _loop(method, model, optimizer=opt)


def test_a_hook_on_a_model_the_method_did_not_prepare_is_refused():
    model = _net()
    method = get_method("wn")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _batch()
    F.cross_entropy(model(x), y).backward()
    with pytest.raises(MethodUseError, match="this model was not prepared by wn"):
        method.before_step(model)
    opt.step()


def test_a_negative_strength_is_refused_not_read_as_off():
    method = get_method("nl")
    method.strength = 0.2  # a schedule sets it between steps
    assert method.strength == 0.2
    for bad in (-0.1, float("nan")):
        with pytest.raises(OptionError, match="strength must be a number >= 0"):
            method.strength = bad


def test_fit_takes_any_loss_and_refuses_fp16_on_the_cpu():
    """language-model logits (B, T, V) and a regression; fp16 refused."""

    class TinyLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = nn.Embedding(11, 8), nn.Linear(8, 11)

        def forward(self, ids):
            return self.head(self.emb(ids))  # (B, T, V)

    def lm_loss(logits, ids):
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))

    ids = torch.randint(0, 11, (32, 6), generator=torch.Generator().manual_seed(0))
    method = get_method("nl", targets="linear")
    model = method.prepare(TinyLM())
    opt = method.make_optimizer(model, OptimizerConfig(lr=0.1))
    batches = Batches(TensorData(ids, ids), 8, generator=torch.Generator().manual_seed(0), drop_last=False)
    state = fit(model, method, opt, batches, epochs=2, loss_fn=lm_loss)
    assert state.step == 8 and state.diverged_step is None

    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
    target = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    method = get_method("pbwn", targets="linear")
    reg = method.prepare(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1)))
    opt = method.make_optimizer(reg, OptimizerConfig(lr=0.05))
    batches = Batches(TensorData(x, target), 10, generator=torch.Generator().manual_seed(0), drop_last=False)
    before = F.mse_loss(reg(x), target).item()
    fit(reg, method, opt, batches, epochs=5, loss_fn=F.mse_loss)
    assert F.mse_loss(reg(x), target).item() < before
    with pytest.raises(ValueError, match="precision fp16 needs a CUDA GPU"):
        fit(reg, method, opt, batches, epochs=1, precision="fp16")


def test_the_readme_loop_runs_as_written(capsys):
    """the README's block, executed, so it cannot go stale."""
    text = (ROOT / "README.md").read_text()
    (block,) = re.findall(r"```python\n# your own loop\n(.*?)```", text, flags=re.S)
    exec(compile(block, "README.md (your own loop)", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("(") and "oni" in out
    assert oblique.OptimizerConfig is OptimizerConfig


def test_a_strength_schedule_is_read_at_each_step():
    seen = []
    method = get_method("nl", targets="conv+linear")
    method.strength = lambda s: 0.1 * s
    model = method.prepare(_net())
    opt = method.make_optimizer(model, OptimizerConfig(lr=0.05))
    x, y = _batch()
    for step in (1, 2, 3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        seen.append(method.strength)
        method.before_step(model)
        opt.step()
        method.after_step(model, step)
    assert seen == pytest.approx([0.1, 0.2, 0.3])
    with pytest.raises(OptionError, match="strength must be a number >= 0"):
        method.strength = lambda s: -1.0
