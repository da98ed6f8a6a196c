"""Weight decay as a coupled L2 penalty on the targeted weights: ``λ·Σ‖w‖²`` (the paper's baseline).

Its gradient is ``2λw``: compare Norm Loss's ``2λw(1 − 1/‖F_i‖)`` (eq. 6). Unlike an optimizer's
``weight_decay``, it acts on the targeted weights only (never biases or normalization parameters), so that
every method in a comparison regularizes the same tensors. Note that ``torch.optim.SGD(weight_decay=λ')``
adds ``λ'w``: ``λ' = 2λ`` gives the same trajectory.
"""

from __future__ import annotations

import torch
from torch import nn

from oblique.methods.base import Method

__all__ = ["WeightDecay", "weight_decay_penalty"]


def weight_decay_penalty(weights) -> torch.Tensor:
    """``Σ_l ‖W_l‖²_F`` over ``weights`` (not multiplied by any strength).

    .. math:: L_{wd} = \\sum_l \\lVert W^{(l)} \\rVert_F^2

    >>> weight_decay_penalty([torch.tensor([[3.0, 4.0]])])
    tensor(25.)
    """
    ws = list(weights)
    if not ws:
        return torch.zeros(())
    return torch.stack([w.square().sum() for w in ws]).sum()


class WeightDecay(Method):
    """``wd``: coupled L2 weight decay ``λ·Σ‖w‖²`` on the targeted weights."""

    name = "wd"
    kind = "soft"
    summary = "L2 weight decay λ·Σ‖w‖² on the targeted weights (coupled, through the loss)"
    paper = "Krogh & Hertz 1991; the Norm Loss paper's baseline"
    aims_at = "zero (no manifold)"
    formula = "λ·Σ‖W‖²_F (gradient 2λw)"
    differences = (
        "acts on the targeted weights only, never biases or BN (an optimizer's `weight_decay` "
        "hits everything)"
    )
    color, marker, linestyle = "#cc6677", "s", "-."
    cost_note = "λΣ‖w‖² and its autograd backward"
    default_strength = 5e-4
    uses_strength = True

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        if self.strength == 0:
            return None
        return self.strength * weight_decay_penalty(self.target_weights(model))

    def analytic_flops(self, model: nn.Module) -> float:
        # square-and-sum forward (2/entry) + backward 2λw (2/entry)
        return 4.0 * sum(w.numel() for w in self.target_weights(model))
