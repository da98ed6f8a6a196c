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

which is finite and exact at repeated eigenvalues (``K_ii = −½ λ_i^{-3/2}``, the derivative). ``S``, its
eigendecomposition and ``S^{-1/2}`` are computed in float64 (``float64`` hyperparameter), the products with
``Zc`` in the weight's dtype (Note [OLM precision]).

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

from oblique.methods._grouping import BATCHED_HYPER, GROUP_HYPERS, GroupedOrthogonal, GroupedReparamMethod
from oblique.methods.base import CostTarget, Hyper

__all__ = ["OLM", "OLMParametrization", "inv_sqrt_psd", "olm_orthogonalize"]


def _eigh(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh`` of a batch of small symmetric matrices, on the CPU with one thread.

    Note [eigh threads]: LAPACK's symmetric eigensolver (MKL here) run with several threads on small
    matrices spends most of its time synchronizing them: measured on this project's 2-core machine, a
    batch of 35 matrices of 64 × 64 in float64 took 9 ms of CPU time with one thread and 50 ms with two
    (wall time 9–17 ms against 27–75 ms, the machine busy or not), and torch loops over a batch one matrix
    at a time anyway. So on the CPU the call runs with one intra-op thread, restored right after
    (``torch.set_num_threads``: a process-wide setting, so another Python thread's torch ops in that window
    run single-threaded too). A thread pool over the batch's matrices would use the other cores, but
    threads that outlive the call make a later ``fork`` (DataLoader workers) unsafe; not done. Nor does a
    split across threads started and joined in the call pay: alone, ResNet-110's batches took 11 ms in two
    Python threads against 16–18 ms in one, but inside OLM's forward, right after the batched products,
    the split eigh took 23 ms against 19 ms (torch's OpenMP threads still spin on the cores after a
    parallel product), and OLM's forward and backward 76–80 ms against 63 ms.
    """
    if torch.compiler.is_compiling():  # a traced graph holds no thread setting
        return torch.linalg.eigh(s)  # (Note [compiled orthogonalization] in oblique.methods._grouping)
    threads = torch.get_num_threads()
    if s.device.type != "cpu" or threads == 1:
        return torch.linalg.eigh(s)
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigh(s)
    finally:
        torch.set_num_threads(threads)


def _divided_difference_backward(u: torch.Tensor, root: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``∂L/∂S`` of ``S^{-1/2}`` from ``∂L/∂S^{-1/2}`` (``grad``), with ``S = U diag(root²) Uᵀ``: Note [inverse
    square root backward], symmetrized (S is symmetric). All ``(k, m, m)``."""
    ri, rj = root.unsqueeze(-1), root.unsqueeze(-2)  # (k, m, 1), (k, 1, m)
    k = -1.0 / (ri * rj * (ri + rj))  # divided differences of λ^{-1/2}, (k, m, m)
    g = u @ (k * (u.mT @ grad @ u)) @ u.mT
    return 0.5 * (g + g.mT)


class _InvSqrtPSD(torch.autograd.Function):
    """``S ↦ S^{-1/2}`` for a batch of symmetric positive-definite ``(k, m, m)``; stable backward."""

    @staticmethod
    def forward(ctx, s: torch.Tensor) -> torch.Tensor:
        lam, u = _eigh(s)  # (k, m), (k, m, m); Note [eigh threads]
        root = lam.clamp_min(torch.finfo(s.dtype).tiny).sqrt()  # √λ, (k, m)
        ctx.save_for_backward(u, root)
        return (u / root.unsqueeze(-2)) @ u.mT  # U Λ^{-1/2} Uᵀ

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        u, root = ctx.saved_tensors
        return _divided_difference_backward(u, root, grad)


def inv_sqrt_psd(s: torch.Tensor) -> torch.Tensor:
    """``S^{-1/2}`` of a batch of symmetric positive-definite matrices ``(k, m, m)``.

    Backward by the Daleckii–Krein formula (Note [inverse square root backward]): exact and finite at
    repeated eigenvalues.

    >>> inv_sqrt_psd(torch.tensor([[[4.0, 0.0], [0.0, 0.25]]], dtype=torch.float64))
    tensor([[[0.5000, 0.0000],
             [0.0000, 2.0000]]], dtype=torch.float64)
    """
    return _InvSqrtPSD.apply(s)


class _OLM(torch.autograd.Function):
    """``(Zc, γ) ↦ diag(γ)·(ZcZcᵀ + ε·tr/m·I)^{-1/2}·Zc`` for a batch ``(k, m, p)``, in one function.

    Note [OLM precision]: the Gram matrix ``S = ZcZcᵀ``, its eigendecomposition and ``S^{-1/2}`` are computed in
    ``dtype`` (float64 by default): the conditioning of the group is met there, and an error ``δS`` in ``S``
    becomes an error ``S^{-1/2} δS S^{-1/2}`` in ``WWᵀ`` — ``cond(S)`` times the rounding of ``S``. The products
    with ``Zc`` (``W = diag(γ)S^{-1/2}·Zc`` forward; ``Ḡ Zcᵀ``, ``S^{-1/2}ᵀ Ḡ`` and the Gram's ``2·∂S·Zc`` backward)
    run in the weight's dtype: their rounding reaches ``WWᵀ`` without that factor. Measured on float32
    groups of ResNet-110's shapes (``cond(S)`` 4 to 1300): the rows of ``W`` are orthonormal to 1e-8–4e-8
    (``offdiag_dev``) and unit to 1e-7 (``norm_dev_max``), float32's rounding, against 2e-9 and 8e-9 with
    the product in float64 too — at two fifths of the float64 work. For a float64 weight every part is
    float64.
    """

    @staticmethod
    def forward(ctx, zc: torch.Tensor, gamma: torch.Tensor | None, eps: float, dtype: torch.dtype):
        z = zc.to(dtype)  # (k, m, p)
        s = z @ z.mT  # (k, m, m)
        m = s.shape[-1]
        mean_eig = s.diagonal(dim1=-2, dim2=-1).sum(-1).div(m).clamp_min(torch.finfo(dtype).tiny)  # (k,)
        s.diagonal(dim1=-2, dim2=-1).add_((eps * mean_eig).unsqueeze(-1))  # S + ε·tr/m·I
        lam, u = _eigh(s)  # (k, m), (k, m, m); Note [eigh threads]
        root = lam.clamp_min(torch.finfo(dtype).tiny).sqrt()  # √λ, (k, m)
        inv_root = (u / root.unsqueeze(-2)) @ u.mT  # S^{-1/2}, (k, m, m)
        scaled = inv_root if gamma is None else inv_root * gamma.to(dtype)  # diag(γ)·S^{-1/2}
        scaled = scaled.to(zc.dtype)
        ctx.save_for_backward(zc, gamma, u, root, inv_root, scaled)
        ctx.eps = eps
        return scaled @ zc  # W, (k, m, p), in the weight's dtype (Note [OLM precision])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        zc, gamma, u, root, inv_root, scaled = ctx.saved_tensors
        dtype, m = u.dtype, u.shape[-1]
        grad = grad.to(zc.dtype)
        d_scaled = (grad @ zc.mT).to(dtype)  # ∂L/∂(diag(γ)S^{-1/2}) = Ḡ Zcᵀ, (k, m, m)
        d_zc = scaled.mT @ grad  # through W's right factor, (k, m, p)
        d_gamma = None
        if gamma is not None:
            if ctx.needs_input_grad[1]:
                d_gamma = (d_scaled * inv_root).sum(-1, keepdim=True).to(gamma.dtype)  # (k, m, 1)
            d_scaled = d_scaled * gamma.to(dtype)  # ∂L/∂S^{-1/2}
        d_s = _divided_difference_backward(u, root, d_scaled)  # ∂L/∂(S + ε·tr/m·I)
        trace = d_s.diagonal(dim1=-2, dim2=-1).sum(-1, keepdim=True)  # (k, 1)
        d_s.diagonal(dim1=-2, dim2=-1).add_((ctx.eps / m) * trace)  # ∂L/∂S, through the ε·tr(S)/m·I term
        d_zc.baddbmm_(d_s.to(zc.dtype), zc, alpha=2.0)  # + (∂S + ∂Sᵀ)·Zc, ∂S symmetric
        return d_zc, d_gamma, None, None


def olm_orthogonalize(
    zc: torch.Tensor, eps: float = 1e-7, float64: bool = True, row_scale: torch.Tensor | None = None
) -> torch.Tensor:
    """``W = (Zc Zcᵀ + ε·tr/m·I)^{-1/2} Zc`` for a batch of (centred) groups ``(k, m, p)``, each row
    multiplied by ``row_scale`` (``(k, m, 1)``) when given (applied to the ``m × m`` factor). With ``float64``,
    ``S`` and ``S^{-1/2}`` are computed in float64 (Note [OLM precision]).

    .. math:: W = (Z_c Z_c^T + \\epsilon I)^{-1/2} Z_c

    >>> z = torch.tensor([[[3.0, 1.0, 0.0], [0.0, 1.0, 2.0]]], dtype=torch.float64)
    >>> w = olm_orthogonalize(z, eps=0.0)
    >>> torch.allclose(w @ w.mT, torch.eye(2, dtype=torch.float64))
    True
    """
    return _OLM.apply(zc, row_scale, eps, torch.float64 if float64 else zc.dtype)


class OLMParametrization(GroupedOrthogonal):
    """``weight ↦ γ ⊙ (ZcZcᵀ + εI)^{-1/2} Zc`` per group (see the module docstring).

    Args:
        shape: the weight's shape.
        eps: relative regularization of ``S``.
        float64: compute ``S``, its eigendecomposition and ``S^{-1/2}`` in float64 (Note [OLM precision]).
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
    paper = "Huang et al., AAAI 2018"
    aims_at = "Stiefel within each group, times γ"
    formula = "W = γ·(ZcZcᵀ + εI)^(-1/2) Zc"
    differences = (
        "γ = √2 like upstream's PyTorch `OWN_Conv2d`; the original Torch7 OLM applies no scale "
        "(unit-norm rows: `--hp scale=1`); Torch7 caps groups at C_in·k·k (a centred group that "
        "size is singular but for ε), ours at C_in·k·k − 1; S = ZcZcᵀ and its eigendecomposition "
        "in float64 (the products with Zc in the weight's dtype), with a backward that stays "
        "finite at repeated eigenvalues, where upstream PyTorch backpropagates through an SVD; "
        "relative ε (Torch7 1e-8 absolute, PyTorch none); batched across layers as `oni`"
    )
    color, marker, linestyle = "#999933", "*", (0, (1, 2, 4, 2))
    cost_target = CostTarget.batched(overhead_pct=15.0)
    cost_note = "eigendecomposition of ZcZcᵀ per group (≈ 11m³) + Gram and product (4m²p); batched={batched}"
    hyperparameters = (
        *GROUP_HYPERS,
        Hyper("eps", 1e-7, "ε, relative to the mean eigenvalue of ZcZcᵀ, added to its diagonal", minimum=0.0),
        Hyper(
            "float64",
            True,
            "S = ZcZcᵀ, its eigendecomposition and S^(-1/2) in float64 (Note [OLM precision])",
        ),
        BATCHED_HYPER,
    )

    def build(self, weight: torch.Tensor, **groups) -> OLMParametrization:
        return OLMParametrization(
            weight.shape,
            eps=self.hp["eps"],
            float64=self.hp["float64"],
            group_size=self.hp["group_size"],
            scale=self.hp["scale"],
            learn_scale=self.hp["learn_scale"],
            **{"center": self.hp["center"], **groups},
        )

    def group_flops(self, m: int, p: int) -> float:
        # S (2m²p), eigh (≈ 9m³ with vectors), U Λ^{-1/2} Uᵀ (2m³), W = S^{-1/2} Zc (2m²p)
        return 4.0 * m * m * p + 11.0 * m**3
