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
orthogonal the weight is (the paper's point). The effective weight is ``γ_i · W_i`` with ``γ = √2`` by default
(learnable with ``learn_scale``). ``module.weight`` is the effective weight (``torch.nn.utils.parametrize``);
the trainable tensor is ``module.parametrizations.weight.original``. With ``batched=True`` (the default) all
targeted layers are computed together, one batched iteration per group shape (Note [batched across
layers] in :mod:`oblique.methods._grouping`); ``batched=False`` computes layer by layer (the reference;
both give the same weights and gradients).

What upstream does (github.com/huangleiBuaa/ONI), and where this differs:

- Defaults per layer type. The PyTorch ``ONI_Conv2d`` uses ``T = 5`` and a fixed output scale
  ``NScale = 1.414`` (``adjustScale=False``; the ImageNet scripts make it learnable); ``ONI_Linear`` uses
  ``T = 4`` and ``NScale = 1``. Here one ``iters`` and one ``scale`` apply to every targeted layer, conv and
  linear alike (defaults ``T = 5``, ``γ = √2``, conv's): with ``--targets conv+linear`` the linear layers get
  conv's defaults, not ``ONI_Linear``'s (``--hp iters=4 --hp scale=1`` gives ``ONI_Linear``'s everywhere).
  The Torch7 CIFAR code (``Spatial_Weight_DBN_PowerIter_F2``) defaults to ``nIter = 3`` and ``N_scale = 1``
  in the module; its CIFAR script sets 5 and 1.414, with a learnable scale in the residual networks.
- Groups. PyTorch: ``norm_groups`` groups (or ``norm_channels`` filters per group) that must divide
  ``C_out``, no cap. Torch7: ``m_perGroup`` filters per group (64 in the CIFAR script), capped at
  ``min(C_out, p)``, consecutive groups with the remainder last. Here ``group_size`` (0: one group), capped
  at ``p − 1`` when centring, sizes differing by at most one (Note [tall groups]).
- Tall layers (more filters than entries per filter, e.g. a stem conv or a widening 1×1 shortcut): the
  PyTorch code switches to a column variant (``ONINorm_colum``, orthonormal *columns*: filters no longer
  unit norm; docs/DESIGN.md records it as numerically broken). Here such a layer is split into groups none
  taller than wide, each with orthonormal rows.
- The iteration: the coupled form (Note [coupled Newton iteration]), same iterates, stable.
- ``ε``: upstream PyTorch adds an absolute ``1e-5·I`` to ``S`` (Torch7 none); here ``ε · tr(S)/m`` is added, so
  ``W`` is invariant to the scale of ``Z``.

"""

from __future__ import annotations

import torch

from oblique.methods._grouping import (
    BATCHED_HYPER,
    GROUP_HYPERS,
    GroupedOrthogonal,
    GroupedReparamMethod,
    regularized_gram,
)
from oblique.methods.base import CostTarget, Hyper

__all__ = ["ONI", "ONIParametrization", "newton_orthogonalize"]


def newton_orthogonalize(
    zc: torch.Tensor, iters: int = 5, eps: float = 1e-7, row_scale: torch.Tensor | None = None
) -> torch.Tensor:
    """ONI's Newton iteration on a batch of (centred) groups ``(k, m, p)``; returns ``≈ S^{-1/2} Zc``, each
    row multiplied by ``row_scale`` (``(k, m, 1)``) when given.

    Run in the coupled, numerically stable form (Note [coupled Newton iteration]), with the products an
    identity makes skipped: ``B_1 = T_0 = (3I − Ŝ)/2`` needs none, and the last step needs no ``Y``, so ``T``
    iterations cost ``3T − 3`` products of ``m × m`` matrices. The scales (``1/√‖S‖_F`` and ``row_scale``) are
    applied to the ``m × m`` matrix ``B_T``, not to the ``m × p`` result.

    .. math:: B_{t+1} = \\tfrac{3}{2} B_t - \\tfrac{1}{2} B_t^3 \\hat S,\\quad W = B_T Z_c / \\sqrt{\\lVert S\\rVert_F}

    >>> z = torch.tensor([[[3.0, 1.0, 0.0], [0.0, 1.0, 2.0]]], dtype=torch.float64)
    >>> w = newton_orthogonalize(z, iters=30, eps=0.0)
    >>> torch.allclose(w @ w.mT, torch.eye(2, dtype=torch.float64))
    True
    """
    s = regularized_gram(zc, eps)  # (k, m, m)
    norm = torch.linalg.matrix_norm(s).clamp_min(torch.finfo(s.dtype).tiny)[:, None, None]  # (k, 1, 1)
    s_hat = s / norm  # eigenvalues in (0, 1]: the iteration converges
    eye15 = torch.eye(s.shape[-1], dtype=s.dtype, device=s.device).mul_(1.5)  # 1.5·I, (m, m)
    # Y_t = Ŝ·B_t carried alongside B_t: same iterates, stable rounding (Note [coupled Newton iteration])
    b = eye15 - 0.5 * s_hat  # B_1 = T_0 = (3I − Ŝ)/2  (B_0 = I, Y_0 = Ŝ)
    y = s_hat @ b if iters > 1 else None  # Y_1 = Y_0·T_0
    for t in range(1, iters):
        step = torch.baddbmm(eye15, b, y, alpha=-0.5)  # T_t = (3I − B_t Y_t)/2, (k, m, m)
        if t < iters - 1:
            y = y @ step  # Y_{t+1} = Y_t T_t
        b = step @ b  # B_{t+1} = T_t B_t
    coef = norm.rsqrt() if row_scale is None else row_scale * norm.rsqrt()  # (k, m or 1, 1)
    return (b * coef) @ zc  # (k, m, p)


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

    def orthogonalize(self, zc: torch.Tensor, row_scale: torch.Tensor | None = None) -> torch.Tensor:
        return newton_orthogonalize(zc, self.iters, self.eps, row_scale)


class ONI(GroupedReparamMethod):
    """``oni``: every targeted weight reparametrized by ONI (T Newton iterations, groups, scale γ)."""

    name = "oni"
    summary = "ONI: W = γ·B_T·Zc/√‖S‖_F, B_{t+1} = 1.5B_t − 0.5B_t³S/‖S‖_F → (ZcZcᵀ)^(-1/2)Zc, per group"
    paper = "Huang et al., CVPR 2020"
    aims_at = "Stiefel within each group, times γ"
    formula = "W = γ·B_T Zc/√‖S‖_F, B_{t+1} = 1.5B_t − 0.5B_t³Ŝ"
    differences = (
        "one `iters` (T = 5) and one scale (γ = √2) for every targeted layer — upstream's "
        "`ONI_Conv2d` defaults; upstream's `ONI_Linear` uses T = 4 and γ = 1, so with `--targets "
        "conv+linear` the linear layers differ from upstream (`--hp iters=4 --hp scale=1` gives "
        "its values everywhere); the numerically stable coupled Newton–Schulz form (same "
        "iterates); a group taller than wide is split into groups no taller than wide (upstream "
        "PyTorch switches such a layer to its broken column variant; upstream Torch7 caps its "
        "`m_perGroup`, 64 in its CIFAR script, at min(C_out, C_in·k·k), groups in order with the "
        "remainder last); `group_size` instead of a number of groups that must divide C_out; "
        "relative ε (upstream 1e-5 absolute, Torch7 none); all layers of one group shape in one "
        "batched computation (`batched=false`: layer by layer)"
    )
    color, marker, linestyle = "#44aa99", "X", "--"
    cost_target = CostTarget.batched(overhead_pct=15.0)
    cost_note = "{iters} Newton iterations per group (6(T−1)·m³) + Gram and product (4m²p); batched={batched}"
    hyperparameters = (
        Hyper(
            "iters", 5, "Newton iterations T (upstream 5; 2 for ResNet-50 with BN)", minimum=1, maximum=100
        ),
        *GROUP_HYPERS,
        Hyper("eps", 1e-7, "ε, relative to the mean eigenvalue of ZcZcᵀ, added to its diagonal", minimum=0.0),
        BATCHED_HYPER,
    )

    def build(self, weight: torch.Tensor, **groups) -> ONIParametrization:
        return ONIParametrization(
            weight.shape,
            iters=self.hp["iters"],
            eps=self.hp["eps"],
            group_size=self.hp["group_size"],
            scale=self.hp["scale"],
            learn_scale=self.hp["learn_scale"],
            **{"center": self.hp["center"], **groups},
        )

    def group_flops(self, m: int, p: int) -> float:
        # S = ZcZcᵀ (2m²p), 3T − 3 products of m × m matrices (2m³ each), B_T·Zc (2m²p)
        return 4.0 * m * m * p + 6.0 * (self.hp["iters"] - 1) * m**3
