"""Projection-based weight normalization: a plain optimizer step, then every filter back to unit norm.

Huang, Liu, Lang, Yu, Wang, Li, "Projection Based Weight Normalization for Deep Neural Networks"
(arXiv 1710.02338, 2017), Algorithm 1: after each SGD update of ``W``, every filter (row of the filter matrix
``F = W.reshape(C_out, -1)``) is projected onto the unit sphere,

.. math:: F_i \\leftarrow F_i / \\lVert F_i \\rVert,

so the weights stay on the oblique manifold ``ddiag(FFᵀ) = I`` (projected, not retracted, gradient descent).

The projection is :func:`oblique.geometry.project_oblique_` (in place, no ``.data`` reassignment). It runs
once in :meth:`~PBWN.prepare`, so training *starts* on the manifold, and after every ``every``-th step.

Differences from the authors' code: the projection acts on the whole filter, for conv and (with
``targets="conv+linear"``) linear layers alike, and may be thinned to every k steps (``every``; 1, the
paper's setting, by default). The optimizer's momentum buffer is left unprojected, as in the paper. A zero
filter stays zero (Note [zero filter] in :mod:`oblique.geometry`).
"""

from __future__ import annotations

from torch import nn

from oblique.geometry import project_oblique_
from oblique.methods.base import Hyper, Method

__all__ = ["PBWN"]


class PBWN(Method):
    """``pbwn``: project every targeted filter onto the unit sphere after every ``every``-th step."""

    name = "pbwn"
    kind = "projection"
    manifold = "oblique"
    promises = "oblique"
    summary = "projection-based WN: SGD step, then F_i ← F_i/‖F_i‖ for every filter (every k steps)"
    paper = "Huang et al., arXiv 1710.02338"
    aims_at = "oblique, exactly after each projection"
    formula = "SGD step, then Fᵢ ← Fᵢ/‖Fᵢ‖"
    differences = "projection per whole filter, also once at prepare; optionally every k steps"
    color, marker, linestyle = "#882255", "P", (0, (3, 1, 1, 1, 1, 1))
    cost_note = "per-filter norms and division after the step"
    hyperparameters = (
        Hyper("every", 1, "project after every k-th optimizer step (1: every step, the paper)", minimum=1),
    )

    def prepare(self, model: nn.Module) -> nn.Module:
        project_oblique_(self.target_modules(model))
        return model

    def after_step(self, model: nn.Module, step: int) -> None:
        if step % self.hp["every"] == 0:
            project_oblique_(self.target_modules(model))

    def analytic_flops(self, model: nn.Module) -> float:
        # row norms (2/entry) + division (1/entry), once every `every` steps
        return 3.0 * sum(w.numel() for w in self.target_weights(model)) / self.hp["every"]
