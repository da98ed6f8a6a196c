"""ONI: Orthogonalization by Newton's Iteration, as a reparametrization of every targeted weight.

Huang, Liu, Zhu, Liu, Shao, "Controllable Orthogonalization in Training DNNs", CVPR 2020 (arXiv
2004.00917), Algorithm 1. For a group of ``m`` filters ``Z`` (``m × p``, rows of the filter matrix
``W.reshape(C_out, -1)``):

.. math::

    Z_c = Z - \\tfrac{1}{p} Z \\mathbf{1}\\mathbf{1}^T,\\quad
    S = Z_c Z_c^T + \\epsilon I,\\quad
    B_0 = I,\\quad B_{t+1} = \\tfrac{3}{2} B_t - \\tfrac{1}{2} B_t^3 \\frac{S}{\\lVert S \\rVert_F},\\quad
    W = \\frac{B_T Z_c}{\\sqrt{\\lVert S \\rVert_F}}

Note [coupled Newton iteration]: written as above (upstream's ``B³Ŝ`` form) the iteration is unstable
in floating point — rounding makes ``B_t`` stop commuting with ``Ŝ`` and the error grows with every step on
an ill-conditioned group (measured: a centred ``2 × 3`` group reaches ``1e284`` by ``T = 20``). Here it runs
as the coupled Newton–Schulz iteration (Higham, *Functions of Matrices*, 2008, eq. 6.35),
``T_t = (3I − B_t Y_t)/2``, ``Y_{t+1} = Y_t T_t``, ``B_{t+1} = T_t B_t`` from ``Y_0 = Ŝ``, ``B_0 = I``: in exact
arithmetic ``Y_t = Ŝ B_t`` and the iterates ``B_t`` are the paper's, at the same cost (three ``m × m``
products per step), but rounding errors do not grow.

``B_T → (S/‖S‖_F)^{-1/2}``, so ``W → S^{-1/2} Z_c`` (orthonormal rows) as ``T`` grows; ``T`` controls how
orthogonal the weight is (the paper's point). The effective weight is ``γ_i · W_i`` with ``γ = √2`` (upstream
``NScale``; learnable with ``learn_scale``). ``module.weight`` is the effective weight
(``torch.nn.utils.parametrize``); the trainable tensor is ``module.parametrizations.weight.original``.

Differences from the authors' code:

- Tall groups (more filters than entries per filter, e.g. a stem conv or a 1×1 shortcut that widens):
  upstream switches to a column variant (``ONINorm_colum``) that orthonormalizes *columns*, so filters are
  no longer unit norm, and DESIGN.md records it as numerically broken. Here such a layer is split into
  groups none taller than wide (Note [tall groups] in :mod:`oblique.methods._grouping`); each group gets
  orthonormal rows.
- The coupled form of the iteration (Note [coupled Newton iteration]): same iterates, stable.
- ``group_size`` (filters per group) instead of upstream's number of groups, and groups need not divide
  ``C_out`` (sizes differ by at most one).
- ``ε`` is relative: ``ε · tr(S)/m`` is added, so ``W`` is invariant to the scale of ``Z`` (upstream adds an
  absolute ``1e-5``).
"""

from __future__ import annotations

import torch

from oblique.methods._grouping import GROUP_HYPERS, GroupedOrthogonal, GroupedReparamMethod, regularized_gram
from oblique.methods.base import Hyper

__all__ = ["ONI", "ONIParametrization", "newton_orthogonalize"]


def newton_orthogonalize(zc: torch.Tensor, iters: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """ONI's Newton iteration on a batch of (centred) groups ``(k, m, p)``; returns ``≈ S^{-1/2} Zc``.

    Run in the coupled, numerically stable form (Note [coupled Newton iteration]).

    .. math:: B_{t+1} = \\tfrac{3}{2} B_t - \\tfrac{1}{2} B_t^3 \\hat S,\\quad W = B_T Z_c / \\sqrt{\\lVert S\\rVert_F}

    >>> z = torch.tensor([[[3.0, 1.0, 0.0], [0.0, 1.0, 2.0]]], dtype=torch.float64)
    >>> w = newton_orthogonalize(z, iters=30, eps=0.0)
    >>> torch.allclose(w @ w.mT, torch.eye(2, dtype=torch.float64))
    True
    """
    s = regularized_gram(zc, eps)  # (k, m, m)
    norm = torch.linalg.matrix_norm(s).clamp_min(torch.finfo(s.dtype).tiny)[:, None, None]  # (k, 1, 1)
    s_hat = s / norm  # eigenvalues in (0, 1]: the iteration converges
    eye = torch.eye(s.shape[-1], dtype=s.dtype, device=s.device)
    # Note [coupled Newton iteration]: Y_t = Ŝ·B_t carried alongside B_t; same iterates, stable rounding
    y, b = s_hat, eye.expand_as(s)
    for _ in range(iters):
        t = 1.5 * eye - 0.5 * (b @ y)  # (3I − B_t Y_t)/2, (k, m, m)
        y, b = y @ t, t @ b
    return (b @ zc) / norm.sqrt()  # (k, m, p)


class ONIParametrization(GroupedOrthogonal):
    """``weight ↦ γ ⊙ ONI_T(centre(Z))`` per group (see the module docstring).

    Args:
        shape: the weight's shape.
        iters: Newton iterations ``T``.
        eps: relative regularization of ``S``.
        **kw: ``group_size``, ``center``, ``scale``, ``learn_scale`` (:class:`GroupedOrthogonal`).
    """

    def __init__(self, shape: torch.Size, iters: int = 5, eps: float = 1e-7, **kw):
        super().__init__(shape, **kw)
        self.iters = iters
        self.eps = eps

    def orthogonalize(self, zc: torch.Tensor) -> torch.Tensor:
        return newton_orthogonalize(zc, self.iters, self.eps)


class ONI(GroupedReparamMethod):
    """``oni``: every targeted weight reparametrized by ONI (T Newton iterations, groups, scale γ)."""

    name = "oni"
    summary = "ONI: W = γ·B_T·Zc/√‖S‖_F, B_{t+1} = 1.5B_t − 0.5B_t³S/‖S‖_F → (ZcZcᵀ)^(-1/2)Zc, per group"
    paper = "Huang et al., CVPR 2020 (arXiv 2004.00917)"
    cost_note = "{iters} Newton iterations per group (6T·m³) + Gram and product (4m²p)"
    hyperparameters = (
        Hyper("iters", 5, "Newton iterations T (upstream 5; 2 for ResNet-50 with BN)", minimum=1),
        *GROUP_HYPERS,
        Hyper("eps", 1e-7, "ε, relative to the mean eigenvalue of ZcZcᵀ, added to its diagonal", minimum=0.0),
    )

    def build(self, weight: torch.Tensor) -> ONIParametrization:
        return ONIParametrization(
            weight.shape,
            iters=self.hp["iters"],
            eps=self.hp["eps"],
            group_size=self.hp["group_size"],
            center=self.hp["center"],
            scale=self.hp["scale"],
            learn_scale=self.hp["learn_scale"],
        )

    def group_flops(self, m: int, p: int) -> float:
        # S = ZcZcᵀ (2m²p), T·(B³: 4m³, B³S: 2m³), B_T·Zc (2m²p)
        return 4.0 * m * m * p + 6.0 * self.hp["iters"] * m**3
