"""Parseval networks: a plain optimizer step, then every filter matrix pulled back toward the Stiefel manifold.

Cissé, Bojanowski, Grave, Dauphin, Usunier, "Parseval Networks: Improving Robustness to Adversarial
Examples", ICML 2017 (arXiv 1704.08847), sec. 4.1 ("orthonormality constraints"). After each SGD update,
the weight matrix ``W`` of every layer takes one step of the retraction

.. math:: W \\leftarrow (1 + \\beta) W - \\beta\\, W W^T W,

one gradient step of size ``β`` on ``(1/4)‖WᵀW − I‖²_F``: it keeps ``W`` close to a Parseval tight frame
(singular values 1) without the cost of an optimization on the Stiefel manifold. Here ``W`` is the
filter matrix ``F = t.filters(W)`` (``n × p``, one row per filter, read through the layer's layout), and
the update is applied as written, ``F ← (1 + β)F − β F FᵀF``, whatever the shape.

Note [singular values under the retraction]: with ``F = U Σ Vᵀ`` the update is ``U (Σ + β(Σ − Σ³)) Vᵀ``:
the singular vectors are kept and every singular value moves by ``σ ← σ + βσ(1 − σ²)``, toward 1 from either
side (for ``0 < σ < √((1 + β)/β)``; ``σ = 0`` stays 0, so a zero filter of a wide layer stays zero). So it
drives a wide ``F`` (``n ≤ p``) toward orthonormal rows, ``FFᵀ = I`` — every filter of unit norm, on the
oblique manifold too — and a tall one (``n > p``, which cannot have orthonormal rows) toward orthonormal
columns, ``FᵀF = I`` (its filters then have norms whose squares sum to ``p``, not ``n``): the Stiefel
manifold of the project's definition (:data:`oblique.methods.base.MANIFOLDS`). Near ``σ = 1`` the error
``e = σ − 1`` shrinks by the factor ``1 − 2β`` per application: at the paper's ``β = 3·10⁻⁴`` about
``6·10⁻⁴`` of it per step. The retraction never *puts* the weights on the manifold; it only keeps the drift
an SGD step causes small, so the method promises nothing exact and ``check`` reports the drift.

``F FᵀF`` is computed from the smaller Gram matrix — ``(FFᵀ)F`` when wide, ``F(FᵀF)`` when tall, the same
matrix — at ``4·min(n,p)²·max(n,p)`` flops for the two products.

``retraction="polar"`` replaces the step by the exact projection onto the Stiefel manifold, the polar
factor ``U Vᵀ`` of the SVD (the nearest matrix with orthonormal rows, or columns when tall, in the Frobenius
norm; the retraction's fixed point). It is computed as ``(FFᵀ)^{-1/2} F`` (``F (FᵀF)^{-1/2}`` when tall)
from the eigendecomposition of the smaller Gram matrix (Note [eigh threads] in :mod:`oblique.methods.olm`):
on ResNet-110's shapes on the CPU about 10 ms a step where a batched SVD takes 50 ms. Eigenvalues below the
numerical rank's threshold (``λ ≤ λ_max · max(n,p) · ε``) are left out, so a rank-deficient ``F`` is mapped
to the nearest partial isometry of the same rank: a zero filter stays zero (as Note [zero filter] in
:mod:`oblique.geometry` keeps it) instead of taking an arbitrary direction. Forming the Gram matrix squares
the condition number, harmless after a step (``F`` is within a step of orthonormal); the projection at
:meth:`~Parseval.prepare`, from an arbitrary initialization, computes in float64.

Note [Parseval at prepare]: with ``init="polar"`` (the default) :meth:`~Parseval.prepare` puts every filter
matrix exactly on the Stiefel manifold once, whatever ``retraction`` is, so training *starts* on it (as
``pbwn`` starts on the oblique manifold); the retraction then only has to undo each step's drift. With
``init="keep"`` the initialization is kept: at ``β = 3·10⁻⁴`` a Kaiming-initialized ResNet layer (singular
values about 0.9–1.9) would take thousands of steps to approach the manifold, and the drift records show it.

Note [batched by shape] (as in :mod:`oblique.methods.soft_orthogonality`): with ``batched=True`` (the
default) the filter matrices of one shape (and dtype, device) are stacked into one ``(L, n, p)`` tensor, the
update is one chain of batched products (one batched eigendecomposition for ``polar``), and the results are
written back with one multi-tensor copy; nothing waits for the device. ``batched=False`` updates layer by
layer (the reference; the same values, tested in float64).

Differences from upstream (the paper; no code was released with it):

- **Which rows.** The paper notes that the update may be applied to a random subset of the rows of each
  matrix when the matrices are large, to save computation. Here it is applied to the whole filter matrix at
  every step (``every`` thins it in time instead): batched by shape, the full update is a small part of a
  training step, and a random subset would make the trajectory depend on a random stream the checkpoint
  would have to carry.
- **β.** The default is ``β = 3·10⁻⁴``, the value commonly used with the paper's recipe; it is a
  hyperparameter (``beta``, at most 0.5, where the iteration stops being monotone near 1).
- **Convolutions.** The paper's Parseval convolutions also rescale the unfolded kernel (a factor
  ``1/√k`` for a ``k × k`` kernel, so that the layer's Lipschitz constant, not only the filter matrix's
  spectral norm, is bounded) and its networks constrain the aggregation of residual branches to convex
  combinations. Neither is done here: this method constrains the filter matrix ``F`` as every other method
  of the toolkit does, so that its drift and cost compare with theirs; the architecture is left as it is.
- **Initialization.** Projected onto the Stiefel manifold once at ``prepare`` (Note [Parseval at prepare]).
- **Tall layers.** The update is applied as written to a tall ``F`` as well; it drives its columns, not
  its rows, to orthonormality (Note [singular values under the retraction]), so its filters leave unit
  norm (``oni``, ``olm`` and ``stiefel-rsgd`` split a tall layer into groups of orthonormal rows instead).
  A grouped convolution, and an attention layer's packed q/k/v, is one filter matrix here, as the paper's
  layers are (``so`` and ``srip`` do the same).
- **The polar variant in float32** computes in the weights' dtype: a filter whose singular direction is
  below about ``√(max(n, p)·ε)`` of the layer's largest singular value (about 1 % for a 64 × 576 layer) is
  treated as rank-deficient and left near zero. It does not arise from unit-norm filters, which ``prepare``
  starts from (``init=keep`` and near-zero filters aside).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from oblique.geometry import worst_gram_deviation
from oblique.layers import Target
from oblique.methods._grouping import BATCHED_HYPER
from oblique.methods.base import CostTarget, Hyper, Method
from oblique.methods.olm import _eigh

__all__ = ["Parseval", "parseval_retraction", "polar_factor"]


def parseval_retraction(f: torch.Tensor, beta: float) -> torch.Tensor:
    """One step of the Parseval retraction ``(1 + β)F − β F FᵀF`` on a batch ``(L, n, p)`` (or one ``(n, p)``),
    from the smaller Gram matrix (out of place).

    >>> parseval_retraction(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), 0.1)  # σ ← σ + 0.1·σ(1 − σ²)
    tensor([[1.4000, 0.0000],
            [0.0000, 1.0000]])
    """
    one = f.dim() == 2
    f = f.unsqueeze(0) if one else f  # (L, n, p)
    if f.shape[-2] <= f.shape[-1]:  # wide: (FFᵀ)F, the Gram (L, n, n)
        out = torch.baddbmm(f, f @ f.mT, f, beta=1.0 + beta, alpha=-beta)
    else:  # tall: F(FᵀF), the Gram (L, p, p)
        out = torch.baddbmm(f, f, f.mT @ f, beta=1.0 + beta, alpha=-beta)
    return out.squeeze(0) if one else out


def polar_factor(f: torch.Tensor) -> torch.Tensor:
    """The polar factor ``U Vᵀ`` of every matrix of a batch ``(L, n, p)`` (or one ``(n, p)``): orthonormal
    rows when wide, orthonormal columns when tall; a rank-deficient matrix gives the partial isometry of its
    numerical rank (a zero row stays zero). Computed as ``(FFᵀ)^{+1/2} F`` (``F (FᵀF)^{+1/2}`` when tall) from
    the eigendecomposition of the smaller Gram matrix, in ``f``'s dtype.

    >>> polar_factor(torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.5, 0.0]], dtype=torch.float64))
    tensor([[1., 0., 0.],
            [0., 1., 0.]], dtype=torch.float64)
    """
    one = f.dim() == 2
    f = f.unsqueeze(0) if one else f  # (L, n, p)
    n, p = f.shape[-2:]
    wide = n <= p
    gram = f @ f.mT if wide else f.mT @ f  # (L, m, m), m = min(n, p)
    lam, q = _eigh(gram)  # ascending eigenvalues (L, m), eigenvectors (L, m, m)
    tol = lam[..., -1:].clamp_min(0) * (max(n, p) * torch.finfo(f.dtype).eps)  # the numerical rank's cut
    keep = lam > tol
    inv_root = torch.where(keep, lam.clamp_min(torch.finfo(f.dtype).tiny).rsqrt(), torch.zeros_like(lam))
    s = (q * inv_root.unsqueeze(-2)) @ q.mT  # G^{+1/2}, (L, m, m)
    out = s @ f if wide else f @ s
    return out.squeeze(0) if one else out


@torch.no_grad()
def _update_(
    targets: Sequence[Target],
    fn: Callable[[torch.Tensor], torch.Tensor],
    batched: bool,
    dtype: torch.dtype | None = None,
) -> None:
    """Replace every target's filter matrix ``F`` by ``fn(F)`` (``fn`` maps a batch ``(L, n, p)``), in place,
    through each layer's layout: per shape, dtype and device one stacked call when ``batched`` (Note
    [batched by shape]), else one call per layer. ``dtype``: compute in it (the float64 projection at
    prepare), the result cast back."""
    classes: dict[tuple, list[Target]] = {}
    for t in targets:
        w = t.weight
        key = (tuple(t.filters(w).shape), w.dtype, w.device) if batched else (id(t),)
        classes.setdefault(key, []).append(t)
    for members in classes.values():
        ws = [t.weight for t in members]
        f = torch.stack([t.filters(w) for t, w in zip(members, ws, strict=True)])  # (L, n, p), a copy
        out = fn(f if dtype is None else f.to(dtype)).to(f.dtype)
        new = [t.layout.weight(o, w.shape) for t, w, o in zip(members, ws, out.unbind(0), strict=True)]
        torch._foreach_copy_(ws, new)  # in place: the optimizer's tensors stay the ones trained


class Parseval(Method):
    """``parseval``: after every ``every``-th step, ``F ← (1 + β)F − β F FᵀF`` for every targeted filter matrix
    (or its exact polar factor, ``retraction="polar"``), batched by shape."""

    name = "parseval"
    kind = "projection"
    manifold = "stiefel"
    summary = (
        "Parseval networks: SGD step, then F ← (1+β)F − βFFᵀF per layer (retraction=polar: exactly onto St)"
    )
    paper = "Cissé et al., ICML 2017"
    aims_at = (
        "Stiefel (FFᵀ = I wide, FᵀF = I tall), approximately: each step's drift shrunk by 2β "
        "(`retraction=polar`: exactly after each step)"
    )
    formula = "SGD step, then F ← (1+β)F − β·FFᵀF"
    differences = (
        "whole filter matrix every step (no row sampling), batched by shape; no kernel rescaling or convex "
        "residual aggregation; projected onto St once at prepare; `retraction=polar`: exact polar factor UVᵀ"
    )
    color, marker, linestyle = "#ee7733", "p", (0, (6, 1, 1, 1, 1, 1, 1, 1))
    cost_note = "Parseval step after every {every} step(s): Gram and one product per shape (4·m²·M)"
    cost_target = CostTarget("overhead", overhead_pct=5.0)
    hyperparameters = (
        Hyper(
            "retraction",
            "parseval",
            "parseval: one step F ← (1+β)F − βFFᵀF (the paper); polar: the exact projection onto the Stiefel "
            "manifold, the polar factor UVᵀ",
            choices=("parseval", "polar"),
        ),
        Hyper("beta", 3e-4, "the retraction's step β (parseval; at most 0.5)", minimum=0.0, maximum=0.5),
        Hyper("every", 1, "retract after every k-th optimizer step (1: every step, the paper)", minimum=1),
        Hyper(
            "init",
            "polar",
            "polar: project onto the Stiefel manifold once at prepare; keep: start from the initialization",
            choices=("polar", "keep"),
        ),
        BATCHED_HYPER,
    )

    def prepare(self, model: nn.Module) -> nn.Module:
        if self.hp["init"] == "polar":  # Note [Parseval at prepare]: float64, from any initialization
            _update_(self.target_modules(model), polar_factor, self.hp["batched"], dtype=torch.float64)
        return model

    def _retract(self) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.hp["retraction"] == "polar":
            return polar_factor
        beta = self.hp["beta"]
        return lambda f: parseval_retraction(f, beta)

    def after_step(self, model: nn.Module, step: int) -> None:
        if step % self.hp["every"] == 0:
            _update_(self.target_modules(model), self._retract(), self.hp["batched"])

    def describe_cost(self) -> str:
        """Where the cost goes, for the retraction in use (``oblique bench``'s last column)."""
        if self.hp["retraction"] == "polar":
            return (
                f"polar factor after every {self.hp['every']} step(s): Gram, eigh and one product per shape"
            )
        return super().describe_cost()

    def promise(self) -> str:
        """``"orthogonal"`` with ``retraction=polar`` (every filter matrix exactly on the Stiefel manifold after
        each step); nothing exact with the Parseval retraction, which only shrinks the drift."""
        return "orthogonal" if self.hp["retraction"] == "polar" else ""

    def check(self, model: nn.Module) -> tuple[bool, str]:
        """With ``retraction=polar``: whether every effective filter matrix is on the Stiefel manifold now,
        ``max |FFᵀ − I|`` (``FᵀF`` when tall) within ``1000·ε`` of the dtype (1.2e-4 for float32), as ONI's
        and OLM's check (scale 1). With the Parseval retraction: ``(True, the drift)``."""
        if self.promise() != "orthogonal":
            return super().check(model)
        filters = self.effective_filters(model)
        tol = max((1000 * torch.finfo(f.dtype).eps for f in filters.values()), default=0.0)
        with torch.no_grad():
            worst, where = worst_gram_deviation(filters.items())
        if not math.isfinite(worst):
            return False, f"{self.name}: {where} has non-finite weights"
        if not where:
            return False, f"{self.name}: no targeted layer"
        ok = worst <= tol
        return ok, (
            f"{self.name}: {'on' if ok else 'off'} the Stiefel manifold: max |FFᵀ − I| (FᵀF when tall) = "
            f"{worst:.1e} at {where} (tolerance {tol:.1e})"
        )

    def analytic_flops(self, model: nn.Module) -> float:
        total = 0.0
        for t in self.target_modules(model):
            n, p = t.filters().shape
            m, big = min(n, p), max(n, p)
            if self.hp["retraction"] == "polar":  # Gram, eigh (≈ 9m³), G^{-1/2} (2m³), product
                total += 4.0 * m * m * big + 11.0 * m**3
            else:  # Gram, product, scale and add
                total += 4.0 * m * m * big + 2.0 * n * p
        return total / self.hp["every"]
