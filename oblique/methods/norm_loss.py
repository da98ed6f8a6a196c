"""Norm Loss: a soft pull of every filter toward unit norm, i.e. toward the oblique manifold.

Georgiou, Schmitt, Chen, Bäck, Lew, "Norm Loss: An efficient yet effective regularization method for deep
neural networks", ICPR 2020 (arXiv 2103.06583).

For the filter matrix ``F`` of every targeted weight (one row per filter):

- eq. 1: ``L_nl = Σ_i (1 − ‖F_i‖)²``, summed over filters, then over targeted layers;
- eq. 2: ``L_total = L_target + λ_nl · L_nl``;
- eq. 6: ``∂L_nl/∂w = 2 w (1 − 1/‖F_i‖)`` for every entry ``w`` of filter ``i``.

Two forms, picked by the ``form`` hyperparameter, give the same training trajectory (tested to 1e-8 in
float64 over 20 SGD steps):

- ``"autograd"``: :func:`norm_loss` is added to the loss and differentiated by autograd.
- ``"closed"`` (default): eq. 6 is added straight to ``.grad`` after ``backward``, for all targeted weights
  at once with multi-tensor ops and no autograd graph (:func:`add_norm_loss_grad_`).

Note [zero filter]: a filter with ``‖F_i‖ = 0`` contributes ``(1 − 0)² = 1`` to the loss and a gradient of
*zero* in both forms (eq. 6's ``1/‖F_i‖`` is replaced by ``1/max(‖F_i‖, ε)``, and the autograd form uses
the same clamped norm in its backward). A dead filter stays dead, as it would under any first-order
method; no NaN ever enters the weights.

Differences from the authors' code: the targeted layers are explicit (``targets``: conv, or conv and
linear; biases and normalization parameters are never touched), and the closed form is fused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from oblique.geometry import EPS, filter_matrix, targeted_modules
from oblique.methods.base import Hyper, Method

__all__ = ["NormLoss", "add_norm_loss_grad_", "norm_loss"]


class _ClampedRowNorm(torch.autograd.Function):
    """Row norms of a filter matrix whose backward uses ``max(‖F_i‖, ε)``: zero gradient at a zero row."""

    @staticmethod
    def forward(ctx, f: torch.Tensor) -> torch.Tensor:
        r = torch.linalg.vector_norm(f, dim=1)  # (n,)
        ctx.save_for_backward(f, r)
        return r

    @staticmethod
    def backward(ctx, grad_r: torch.Tensor) -> torch.Tensor:
        f, r = ctx.saved_tensors
        return f * (grad_r / r.clamp_min(EPS)).unsqueeze(1)  # (n, p)


def _weights(model_or_weights: nn.Module | Iterable[torch.Tensor], targets: str) -> list[torch.Tensor]:
    if isinstance(model_or_weights, nn.Module):
        return [m.weight for _, m in targeted_modules(model_or_weights, targets)]
    return list(model_or_weights)


def norm_loss(model_or_weights: nn.Module | Iterable[torch.Tensor], targets: str = "conv") -> torch.Tensor:
    """Norm Loss, eq. 1: ``Σ_layers Σ_i (1 − ‖F_i‖)²``; differentiable by autograd (eq. 6).

    .. math:: L_{nl} = \\sum_{l} \\sum_{i} \\left(1 - \\lVert F^{(l)}_i \\rVert_2\\right)^2

    Args:
        model_or_weights: a model (its targeted layers' weights are used) or an iterable of weights.
        targets: ``"conv"`` or ``"conv+linear"``, when a model is given.

    Returns:
        A scalar tensor (not multiplied by any strength).

    >>> norm_loss([torch.tensor([[3.0, 4.0], [0.6, 0.8]])])
    tensor(16.)
    """
    ws = _weights(model_or_weights, targets)
    if not ws:
        return torch.zeros(())
    terms = [(1 - _ClampedRowNorm.apply(filter_matrix(w))).square().sum() for w in ws]
    return torch.stack(terms).sum()


@torch.no_grad()
def add_norm_loss_grad_(weights: Sequence[torch.Tensor], strength: float) -> float:
    """Add ``strength · ∂L_nl/∂w`` (eq. 6) to every weight's ``.grad`` in place; return ``L_nl``.

    .. math:: \\frac{\\partial L_{nl}}{\\partial w} = 2 w \\left(1 - \\frac{1}{\\lVert F_i \\rVert}\\right)

    A weight without a gradient gets one (zeros plus the Norm Loss term). No autograd graph is built.

    Args:
        weights: the targeted weights (leaf tensors).
        strength: λ_nl.

    Returns:
        The value of eq. 1 over ``weights`` (without the strength), as a float.
    """
    if not weights:
        return 0.0
    for w in weights:
        if w.grad is None:
            w.grad = torch.zeros_like(w)
    fs = [filter_matrix(w) for w in weights]  # views (C_out, p)
    norms = [torch.linalg.vector_norm(f, dim=1, keepdim=True) for f in fs]  # (C_out, 1) each
    loss = torch.stack([(1 - r).square().sum() for r in norms]).sum().item()
    # coefficient per filter: 2λ(1 − 1/max(r, ε))   (eq. 6)
    inv = torch._foreach_reciprocal(torch._foreach_clamp_min(norms, EPS))
    coef = torch._foreach_mul(torch._foreach_sub(inv, 1.0), -2.0 * strength)
    grads = [filter_matrix(w.grad) for w in weights]
    torch._foreach_addcmul_(grads, fs, coef)
    return loss


class NormLoss(Method):
    """Norm Loss (``nl``): eq. 1 times the strength, added to the loss (eq. 2)."""

    name = "nl"
    kind = "soft"
    summary = "Norm Loss: λ·Σ_i (1 − ‖F_i‖)², a soft pull of every filter toward unit norm"
    paper = "Georgiou et al., ICPR 2020 (arXiv 2103.06583)"
    default_strength = 1e-2
    uses_strength = True
    hyperparameters = (
        Hyper(
            "form",
            "closed",
            "closed: eq. 6 added to .grad with multi-tensor ops; autograd: eq. 1 added to the loss",
            choices=("closed", "autograd"),
        ),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: value of eq. 1 at the last step where it was computed (for logging)
        self.last_value: float | None = None

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        if self.hp["form"] != "autograd" or self.strength == 0:
            return None
        value = norm_loss(self.target_weights(model))
        self.last_value = value.item()
        return self.strength * value

    def before_step(self, model: nn.Module) -> None:
        if self.hp["form"] == "closed" and self.strength > 0:
            self.last_value = add_norm_loss_grad_(self.target_weights(model), self.strength)

    def analytic_flops(self, model: nn.Module) -> float:
        # row norms (2 flops/entry) + gradient axpy (2 flops/entry) + per-filter scalars
        p = sum(w.numel() for w in self.target_weights(model))
        return 4.0 * p
