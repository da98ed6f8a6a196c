"""OLM: orthogonal weight normalization by the inverse square root of the Gram matrix (eigendecomposition).

Huang, Liu, Lang, Yu, Wang, Li, "Orthogonal Weight Normalization: Solution to Optimization over Multiple
Dependent Stiefel Manifolds in Deep Neural Networks", AAAI 2018 (arXiv 1709.06079), eq. 5 (the OLM of
their "Orthogonal Linear Module"). For a group of ``m`` filters ``Z`` (``m × p``):

.. math::

    Z_c = Z - \\tfrac{1}{p} Z \\mathbf{1}\\mathbf{1}^T,\\quad
    S = Z_c Z_c^T + \\epsilon \\tfrac{\\operatorname{tr} S}{m} I = U \\Lambda U^T,\\quad
    W = U \\Lambda^{-1/2} U^T Z_c

so ``W Wᵀ = S^{-1/2} Zc Zcᵀ S^{-1/2} = I`` up to ``ε``: the rows of ``W`` are orthonormal. The effective
weight is ``γ_i · W_i`` (γ = √2 by default, as ``oni``). ``module.weight`` is the effective weight
(``torch.nn.utils.parametrize``); the trainable tensor is ``module.parametrizations.weight.original``.

Note [inverse square root backward]: autograd through ``torch.linalg.eigh`` divides by ``λ_i − λ_j`` and
is unstable (inf/NaN) when two eigenvalues (nearly) coincide. :func:`inv_sqrt_psd` has its own backward,
the Daleckii–Krein formula ``∂L/∂S = U (K ∘ Uᵀ Ḡ U) Uᵀ`` with the divided difference of ``λ^{-1/2}``
written in closed form,

.. math:: K_{ij} = \\frac{\\lambda_i^{-1/2} - \\lambda_j^{-1/2}}{\\lambda_i - \\lambda_j}
          = \\frac{-1}{\\sqrt{\\lambda_i}\\sqrt{\\lambda_j}(\\sqrt{\\lambda_i} + \\sqrt{\\lambda_j})},

which is finite and exact at repeated eigenvalues (``K_ii = −½ λ_i^{-3/2}``, the derivative). The whole
map is computed in float64 and cast back to the weight's dtype (``float64`` hyperparameter).

With ``batched=True`` (the default) all targeted layers are computed together, one batched
eigendecomposition per group shape (Note [batched across layers] in :mod:`oblique.methods._grouping`);
``batched=False`` computes layer by layer (the reference; both give the same weights and gradients).

What upstream does, and where this differs:

- Scale. The original Torch7 code (github.com/huangleiBuaa/OthogonalWN, ``Spatial_Weight_DBN_Row``,
  ``Linear_Weight_DBN_Row_Group``) applies *no* output scale: its ``W`` has unit-norm rows (it whitens
  ``Σ = ZcZcᵀ/p + εI`` and multiplies by ``√(1/p)``). The later PyTorch ``OWN_Conv2d`` (same repository and
  the ONI repository) multiplies by ``NScale = 1.414``. Here ``γ = √2`` by default, as ``oni`` (``--hp
  scale=1`` gives the Torch7 weights up to ``ε``).
- Groups. Torch7: ``m_perGroup`` filters per group (64 in the CIFAR scripts), capped at ``p`` (the
  filter length), consecutive groups with the remainder last; a centred group of ``p`` rows has rank
  ``p − 1``, so its ``Σ`` is singular but for ``ε``. PyTorch ``OWN_Conv2d``: ``norm_groups`` groups that must
  divide ``C_out``, no cap, no ``ε``. Here ``group_size`` (0: one group), capped at ``p − 1`` when centring,
  sizes differing by at most one (Note [tall groups] in :mod:`oblique.methods._grouping`).
- ``S^{-1/2}``: Torch7 by SVD with a hand-written backward; PyTorch by ``svd`` with autograd (the unstable
  backward above). Here ``eigh`` with the Daleckii–Krein backward, in float64.
- ``ε``: Torch7 adds an absolute ``1e-8`` (conv) or ``1e-7`` (linear) to ``Σ``; PyTorch none. Here
  ``ε · tr(S)/m``, so ``W`` does not depend on the scale of ``Z``.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from oblique.methods._grouping import (
    BATCHED_HYPER,
    GROUP_HYPERS,
    GroupedOrthogonal,
    GroupedReparamMethod,
    regularized_gram,
)
from oblique.methods.base import Hyper

__all__ = ["OLM", "OLMParametrization", "inv_sqrt_psd", "olm_orthogonalize"]


class _InvSqrtPSD(torch.autograd.Function):
    """``S ↦ S^{-1/2}`` for a batch of symmetric positive-definite ``(k, m, m)``; stable backward."""

    @staticmethod
    def forward(ctx, s: torch.Tensor) -> torch.Tensor:
        lam, u = torch.linalg.eigh(s)  # (k, m), (k, m, m)
        root = lam.clamp_min(torch.finfo(s.dtype).tiny).sqrt()  # √λ, (k, m)
        ctx.save_for_backward(u, root)
        return (u / root.unsqueeze(-2)) @ u.mT  # U Λ^{-1/2} Uᵀ

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        u, root = ctx.saved_tensors
        ri, rj = root.unsqueeze(-1), root.unsqueeze(-2)  # (k, m, 1), (k, 1, m)
        k = -1.0 / (ri * rj * (ri + rj))  # divided differences of λ^{-1/2}, (k, m, m)
        inner = u.mT @ grad @ u
        g = u @ (k * inner) @ u.mT
        return 0.5 * (g + g.mT)  # S is symmetric: the symmetric part is its gradient


def inv_sqrt_psd(s: torch.Tensor) -> torch.Tensor:
    """``S^{-1/2}`` of a batch of symmetric positive-definite matrices ``(k, m, m)``.

    Backward by the Daleckii–Krein formula (Note [inverse square root backward]): exact and finite at
    repeated eigenvalues.

    >>> inv_sqrt_psd(torch.tensor([[[4.0, 0.0], [0.0, 0.25]]], dtype=torch.float64))
    tensor([[[0.5000, 0.0000],
             [0.0000, 2.0000]]], dtype=torch.float64)
    """
    return _InvSqrtPSD.apply(s)


def olm_orthogonalize(
    zc: torch.Tensor, eps: float = 1e-7, float64: bool = True, row_scale: torch.Tensor | None = None
) -> torch.Tensor:
    """``W = (Zc Zcᵀ + ε·tr/m·I)^{-1/2} Zc`` for a batch of (centred) groups ``(k, m, p)``, each row
    multiplied by ``row_scale`` (``(k, m, 1)``) when given (applied to the ``m × m`` factor).

    .. math:: W = (Z_c Z_c^T + \\epsilon I)^{-1/2} Z_c

    >>> z = torch.tensor([[[3.0, 1.0, 0.0], [0.0, 1.0, 2.0]]], dtype=torch.float64)
    >>> w = olm_orthogonalize(z, eps=0.0)
    >>> torch.allclose(w @ w.mT, torch.eye(2, dtype=torch.float64))
    True
    """
    z = zc.to(torch.float64) if float64 else zc
    s = regularized_gram(z, eps)  # (k, m, m)
    root = inv_sqrt_psd(s)  # S^{-1/2}, (k, m, m)
    if row_scale is not None:
        root = root * row_scale.to(root.dtype)  # diag(γ)·S^{-1/2}
    return (root @ z).to(zc.dtype)  # (k, m, p)


class OLMParametrization(GroupedOrthogonal):
    """``weight ↦ γ ⊙ (ZcZcᵀ + εI)^{-1/2} Zc`` per group (see the module docstring).

    Args:
        shape: the weight's shape.
        eps: relative regularization of ``S``.
        float64: compute the group maps in float64.
        **kw: ``group_size``, ``center``, ``scale``, ``learn_scale`` (:class:`GroupedOrthogonal`).
    """

    def __init__(self, shape: torch.Size, eps: float = 1e-7, float64: bool = True, **kw):
        super().__init__(shape, **kw)
        self.eps = eps
        self.float64 = float64

    def orthogonalize(self, zc: torch.Tensor, row_scale: torch.Tensor | None = None) -> torch.Tensor:
        return olm_orthogonalize(zc, self.eps, self.float64, row_scale)


class OLM(GroupedReparamMethod):
    """``olm``: every targeted weight reparametrized as ``γ ⊙ (ZcZcᵀ + εI)^{-1/2} Zc`` per group."""

    name = "olm"
    summary = "orthogonal weight normalization W = γ·(ZcZcᵀ + εI)^(-1/2)·Zc per group, by eigendecomposition"
    paper = "Huang et al., AAAI 2018 (arXiv 1709.06079)"
    cost_note = "eigendecomposition of ZcZcᵀ per group (≈ 11m³) + Gram and product (4m²p); batched={batched}"
    hyperparameters = (
        *GROUP_HYPERS,
        Hyper("eps", 1e-7, "ε, relative to the mean eigenvalue of ZcZcᵀ, added to its diagonal", minimum=0.0),
        Hyper("float64", True, "compute S, its eigendecomposition and W in float64, cast back"),
        BATCHED_HYPER,
    )

    def build(self, weight: torch.Tensor) -> OLMParametrization:
        return OLMParametrization(
            weight.shape,
            eps=self.hp["eps"],
            float64=self.hp["float64"],
            group_size=self.hp["group_size"],
            center=self.hp["center"],
            scale=self.hp["scale"],
            learn_scale=self.hp["learn_scale"],
        )

    def group_flops(self, m: int, p: int) -> float:
        # S (2m²p), eigh (≈ 9m³ with vectors), U Λ^{-1/2} Uᵀ (2m³), W = S^{-1/2} Zc (2m²p)
        return 4.0 * m * m * p + 11.0 * m**3
