"""One benched method: its own prepared model, optimizer and batch, and its isolated parts.

Every method gets an :class:`Entry` of its own (:func:`prepare_entry`): a fresh copy of the model (same
seed, same initialization), prepared by the method, the method's optimizer, and the shared synthetic
batch. :meth:`Entry.step` times one full training step (:func:`oblique.methods.base.training_step` after
the forward pass) and keeps the samples.

The isolated parts are repeatable callables, timed outside the step:

- :func:`reparam_fn`: a reparametrization's forward and backward alone (every targeted ``module.weight``
  computed from its parameters and back-propagated with a unit gradient);
- :func:`plain_sgd_fn`: a Riemannian method's optimizer step, and a ``torch.optim.SGD`` step (same
  momentum, Nesterov) on tensors of the same shapes to subtract from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from oblique.clock import Clock
from oblique.methods import OptimizerConfig, get_method
from oblique.methods.base import Method, StepMarks, training_step
from oblique.models import get_model, input_shape

__all__ = ["Entry", "build_model", "plain_sgd_fn", "prepare_entry", "reparam_fn"]


class Entry:
    """One method with its own prepared model, optimizer and batch, and the step times measured so far.

    Attributes:
        step_ms: the whole step, per timed step (ms).
        reg_ms: the regularizer inside the step — penalty and its backward, ``before_step``, ``after_step``.
        opt_ms: ``optimizer.step()``.
    """

    def __init__(
        self,
        name: str,
        method: Method,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        x: torch.Tensor | None,
        y: torch.Tensor | None,
    ):
        self.name, self.method, self.model, self.opt, self.x, self.y = name, method, model, opt, x, y
        self.step_no = 0
        self.step_ms: list[float] = []
        self.reg_ms: list[float] = []
        self.opt_ms: list[float] = []

    def run_step(self, clock: Callable[[], Any] = time.perf_counter) -> StepMarks:
        """One training step on the batch, not recorded: forward, loss, then :func:`training_step`."""
        self.step_no += 1
        loss = F.cross_entropy(self.model(self.x), self.y)
        return training_step(self.method, self.model, self.opt, loss, self.step_no, clock=clock)

    def step(self, clock: Clock) -> None:
        """One training step, timed with ``clock``; appends to :attr:`step_ms`, :attr:`reg_ms`, :attr:`opt_ms`."""
        t0 = clock.mark()
        marks = self.run_step(clock=clock.mark)
        clock.sync()
        self.step_ms.append(clock.ms(t0, marks.after_step_done))
        self.reg_ms.append(marks.regularizer_ms(clock.ms))
        self.opt_ms.append(clock.ms(marks.regularizer_done, marks.step_done))

    def clear(self) -> None:
        """Forget the times measured so far (after the warm-up rounds)."""
        for samples in (self.step_ms, self.reg_ms, self.opt_ms):
            samples.clear()


def build_model(model_name: str, num_classes: int, seed: int, device: torch.device) -> nn.Module:
    """A fresh ``model_name``, initialized from ``seed``, on ``device``."""
    torch.manual_seed(seed)
    return get_model(model_name, num_classes=num_classes, in_channels=input_shape(model_name)[0]).to(device)


def prepare_entry(
    name: str,
    model_name: str,
    num_classes: int,
    seed: int,
    device: torch.device,
    x: torch.Tensor | None,
    y: torch.Tensor | None,
    lr: float,
    hp: dict[str, Any] | None = None,
) -> Entry:
    """Method ``name`` (hyperparameters ``hp``) on its own fresh model, with its optimizer (``lr``, SGD
    momentum 0.9, Nesterov) and the batch ``x``, ``y``.

    Raises:
        oblique.models.ModelDependencyError: the model needs a package that is not installed.
        ValueError, RuntimeError, NotImplementedError: the method cannot act on this model.
    """
    method = get_method(name, **(hp or {}))
    model = method.prepare(build_model(model_name, num_classes, seed, device))
    model.train()
    opt = method.make_optimizer(model, OptimizerConfig(lr=lr, momentum=0.9, nesterov=True))
    return Entry(name, method, model, opt, x, y)


def reparam_fn(entry: Entry) -> Callable[[], None] | None:
    """The parametrization's forward + backward alone (every targeted weight, unit output gradient);
    ``None`` when no targeted weight is computed (the method does not parametrize)."""
    found = entry.method.target_modules(entry.model)
    with torch.enable_grad():
        probe = [t.weight for t in found]
    if not any(w.grad_fn is not None for w in probe):
        return None
    ones = [torch.ones_like(w) for w in probe]

    def run() -> None:
        with torch.enable_grad():
            ws = [t.weight for t in found]
            pairs = [(w, g) for w, g in zip(ws, ones, strict=True) if w.grad_fn is not None]
            torch.autograd.backward([w for w, _ in pairs], grad_tensors=[g for _, g in pairs])

    return run


def plain_sgd_fn(entry: Entry) -> tuple[Callable[[], None], Callable[[], None]]:
    """(the method's optimizer step, a torch SGD step on tensors of the same shapes), both repeatable."""
    params = [p for g in entry.opt.param_groups for p in g["params"]]
    clones = [
        torch.zeros_like(p, memory_format=torch.contiguous_format).normal_().requires_grad_() for p in params
    ]
    for c in clones:
        c.grad = torch.randn_like(c) * 1e-3
    for p in params:
        if p.grad is None:
            p.grad = torch.randn_like(p) * 1e-3
    sgd = torch.optim.SGD(clones, lr=1e-3, momentum=0.9, nesterov=True)
    return entry.opt.step, sgd.step
