"""A throwaway method, written as a new method's module is: the class declares everything the project
knows of it. ``tests/test_registry.py`` registers it (one line, in a temporary registry) and sees it in the
contract tests, a figure and the bench; its broken twin must fail the contract tests.

For the filter matrix ``F`` of every targeted weight (one row per filter):

.. math:: L = \\lambda \\sum_{\\text{layers}} \\sum_i (\\lVert F_i \\rVert^2 - 1)^2
"""

from __future__ import annotations

import torch
from torch import nn

from oblique.methods.base import CostTarget, Hyper, Method

__all__ = ["BrokenToy", "ToyPenalty"]


class ToyPenalty(Method):
    """``toy``: a soft pull of every squared filter norm toward 1; not a published method."""

    name = "toy"
    kind = "soft"
    summary = "a test's throwaway soft penalty λ·Σᵢ(‖Fᵢ‖² − 1)²"
    paper = "—"
    aims_at = "oblique, softly (squared norms)"
    formula = "λ·Σᵢ(‖Fᵢ‖² − 1)²"
    differences = "a test's throwaway: no upstream"
    color, marker, linestyle = "#cc3311", "H", (0, (4, 1, 1, 1, 1, 1, 1, 1))
    cost_target = CostTarget.batched(overhead_pct=50.0)
    cost_note = "squared filter norms and their backward; batched={batched}"
    default_strength = 1e-2
    uses_strength = True
    hyperparameters = (Hyper("batched", True, "one reduction over every layer's filters (false: per layer)"),)

    def _squared_norms(self, model: nn.Module) -> list[torch.Tensor]:
        """Every targeted layer's squared filter norms, ``(C_out,)`` each."""
        return [t.filters().pow(2).sum(dim=1) for t in self.target_modules(model)]

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        sq = self._squared_norms(model)
        if not sq:
            return None
        if self.hp["batched"]:
            return self.strength * (torch.cat(sq) - 1).pow(2).sum()  # (Σ C_out,): one reduction
        return self.strength * sum((s - 1).pow(2).sum() for s in sq)


class BrokenToy(ToyPenalty):
    """``toy`` with a bug the contract must catch: its batched form leaves out the last layer."""

    name = "toy-broken"
    color, marker, linestyle = "#009988", "8", (0, (6, 1, 1, 1))

    def _squared_norms(self, model: nn.Module) -> list[torch.Tensor]:
        sq = super()._squared_norms(model)
        return sq[:-1] if self.hp["batched"] and len(sq) > 1 else sq
