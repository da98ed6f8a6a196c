"""Weight normalization: every filter written as a length times a direction, ``w_i = g_i · v_i / ‖v_i‖``.

Salimans & Kingma, "Weight Normalization: A Simple Reparameterization to Accelerate Training of Deep Neural
Networks", NeurIPS 2016 (arXiv 1602.07868), eq. 2.

Implemented with ``torch.nn.utils.parametrizations.weight_norm(module, "weight", dim=0)``: one ``g`` per
filter (output channel), the norm taken over the *whole filter* ``F_i = W[i].reshape(-1)`` — never per kernel
row. ``module.weight`` is then the effective weight; the trainable tensors are
``module.parametrizations.weight.original0`` (``g``, shape ``(C_out, 1, …)``) and ``original1`` (``v``).
On a layer whose filters lie along another dimension (:mod:`oblique.layers`: a transposed convolution with
one group, ``transformers``' ``Conv1D``) torch's parametrization is used with that ``dim``; where a filter
is not all the entries of one index (a transposed convolution with groups) :class:`LayoutWeightNorm` does the
same through the layout, with ``g`` of shape ``(n, 1)`` and the same names ``original0``/``original1``.

With ``g="frozen"`` every ``g_i`` is set to 1 and not trained: the effective weight is ``v_i / ‖v_i‖``, so it
lies *exactly* on the oblique manifold (a hard constraint by reparametrization).

Differences from the authors' code: no data-dependent initialization (``g`` starts at ``‖v‖``, so the
network computes what it computed before :meth:`WeightNorm.prepare`, as torch does); the old hook-based
``torch.nn.utils.weight_norm`` is never used (deprecated, breaks DDP). A filter with ``v_i = 0`` has no
direction and gives NaN, as in torch; a freshly initialized layer has none.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from oblique.layers import Layout
from oblique.methods.base import Hyper, Method, full_precision

__all__ = ["LayoutWeightNorm", "WeightNorm"]


class LayoutWeightNorm(nn.Module):
    """Parametrization ``(g, v) → layout.weight(g_i · F_i(v)/‖F_i(v)‖)``: weight normalization of the filters
    a :class:`~oblique.layers.Layout` reads (``g``: ``(n, 1)``; ``v``: the weight's shape)."""

    def __init__(self, layout: Layout):
        super().__init__()
        self.layout = layout

    def forward(self, g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with full_precision():
            f = self.layout.filters(v)  # (n, p)
            return self.layout.weight(f * (g / torch.linalg.vector_norm(f, dim=1, keepdim=True)), v.shape)

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.linalg.vector_norm(self.layout.filters(weight), dim=1, keepdim=True), weight


class WeightNorm(Method):
    """``wn``: ``w_i = g_i · v_i / ‖v_i‖`` per filter (dim 0), through torch's parametrization."""

    name = "wn"
    kind = "reparam"
    manifold = "oblique"
    summary = "weight normalization w_i = g_i·v_i/‖v_i‖ per filter (g frozen at 1: exactly oblique)"
    paper = "Salimans & Kingma, NeurIPS 2016"
    replaces_weights = True
    aims_at = "oblique with `g=frozen` (else each filter at its gain's norm)"
    formula = "wᵢ = gᵢ·vᵢ/‖vᵢ‖"
    differences = (
        "torch's parametrization (dim 0: whole filter), not the deprecated hook; `g=frozen` puts "
        "the weight exactly on the oblique manifold; no data-dependent init"
    )
    color, marker, linestyle = "#117733", "D", (0, (1, 1))
    cost_note = "per-filter norm and scale of v (forward + backward)"
    hyperparameters = (
        Hyper(
            "g",
            "learnable",
            "learnable: g_i trained (Salimans & Kingma); frozen: g_i = 1, the weight lies on the oblique manifold",
            choices=("learnable", "frozen"),
        ),
    )

    def prepare(self, model: nn.Module) -> nn.Module:
        for t in self.target_modules(model):
            if t.layout.filter_dim is not None:
                weight_norm(t.module, t.param, dim=t.layout.filter_dim)
            else:
                parametrize.register_parametrization(t.module, t.param, LayoutWeightNorm(t.layout))
            if self.hp["g"] == "frozen":
                g = t.parametrizations.original0  # (C_out, 1, …)
                with torch.no_grad():
                    g.fill_(1.0)
                g.requires_grad_(False)
        return model

    def promise(self) -> str:
        """``"oblique"`` with ``g=frozen`` (every filter ``v_i/‖v_i‖``); nothing exact with a learnable ``g``."""
        return "oblique" if self.hp["g"] == "frozen" else ""

    def target_weights(self, model: nn.Module) -> list[torch.Tensor]:
        """The direction ``v`` of every targeted layer (``parametrizations.weight.original1``, weight-shaped).

        ``g`` (``original0``) is a per-filter scale and is returned by :meth:`target_scales`.
        """
        return [t.parametrizations.original1 for t in self.target_modules(model)]

    def target_scales(self, model: nn.Module) -> list[torch.Tensor]:
        """The lengths ``g`` of every targeted layer (``parametrizations.weight.original0``)."""
        return [t.parametrizations.original0 for t in self.target_modules(model)]

    def analytic_flops(self, model: nn.Module) -> float:
        # forward: row norms (2/entry) + scale (1/entry); backward of g·v/‖v‖: ≈ 5/entry
        return 8.0 * sum(v.numel() for v in self.target_weights(model))
