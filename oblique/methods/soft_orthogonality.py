"""Soft orthogonality regularizers: SO (Frobenius) and SRIP (spectral).

Bansal, Chen, Wang, "Can We Gain More from Orthogonality Regularizations in Training Deep CNNs?",
NeurIPS 2018 (arXiv 1810.09102), eqs. for SO and SRIP. For the filter matrix ``F = W.reshape(C_out, -1)``
(``n × p``, one row per filter):

- **SO**: ``λ · Σ_layers ‖F Fᵀ − I_n‖²_F``.
- **SRIP**: ``λ · Σ_layers σ_max(G − I)`` with ``G`` the smaller Gram matrix, by power iteration.

Note [smaller Gram]: ``‖FFᵀ‖_F = ‖FᵀF‖_F``, so

.. math:: \\lVert FF^T - I_n \\rVert_F^2 = \\lVert F^TF - I_p \\rVert_F^2 + (n - p).

:func:`so_penalty` returns exactly the left-hand side (the paper's quantity), computed from whichever Gram
matrix is smaller (``FFᵀ`` when wide, ``FᵀF`` plus the constant ``n − p`` when tall), at cost
``min(n,p)²·max(n,p)``. The two sides differ by a constant, so the gradient is the same either way. For a
tall layer (more filters than entries) the minimum ``n − p`` is reached when ``F`` has orthonormal
*columns*: that is as close to orthonormal rows as a tall matrix can get.

For SRIP the choice is not a constant: ``FFᵀ`` has the eigenvalues of ``FᵀF`` plus ``n − p`` zeros, so for a
tall layer ``σ_max(FFᵀ − I_n) = max(σ_max(FᵀF − I_p), 1)`` — stuck at 1 with a useless gradient. Like the
authors' code, :func:`srip_penalty` uses the smaller Gram matrix; for a wide layer it is the paper's term.

Differences from the authors' code: the targeted layers are explicit (conv, or conv and linear; never
biases or BN); the authors' SRIP returns ``σ²`` from one power step from a fresh random vector each step,
this returns ``σ`` (the paper's formula) from ``iters`` power steps (default 2) warm-started from the last
step's vector (``persistent``), and never forms ``G`` (matrix-vector products with ``F`` and ``Fᵀ``); the
authors decay λ by hand (0.1 → 1e-3 → 1e-4 → 1e-6 over the run), here λ is constant and the default is
set for the default setting (README).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from oblique.geometry import filter_matrix
from oblique.methods.base import Hyper, Method

__all__ = ["SRIP", "SoftOrthogonality", "so_penalty", "spectral_deviation", "srip_penalty"]


def _so_one(f: torch.Tensor) -> torch.Tensor:
    n, p = f.shape
    if n <= p:
        g = f @ f.T  # (n, n)
        return (g - torch.eye(n, dtype=f.dtype, device=f.device)).square().sum()
    g = f.T @ f  # (p, p)
    return (g - torch.eye(p, dtype=f.dtype, device=f.device)).square().sum() + (n - p)


def so_penalty(weights: Iterable[torch.Tensor]) -> torch.Tensor:
    """Soft orthogonality ``Σ_layers ‖F Fᵀ − I_n‖²_F``, from the smaller Gram matrix (Note [smaller Gram]).

    .. math:: L_{so} = \\sum_l \\lVert F^{(l)} F^{(l)T} - I \\rVert_F^2

    >>> so_penalty([torch.tensor([[2.0, 0.0], [0.0, 1.0]])])
    tensor(9.)
    >>> so_penalty([torch.tensor([[1.0], [0.0], [0.0]])])   # tall: ‖FFᵀ − I₃‖² = 2
    tensor(2.)
    """
    terms = [_so_one(filter_matrix(w)) for w in weights]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()


def _matvec(f: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(G − I) v`` for the smaller Gram matrix ``G`` of ``f``, without forming ``G``."""
    n, p = f.shape
    if n <= p:
        return f @ (f.T @ v) - v  # (n,)
    return f.T @ (f @ v) - v  # (p,)


def spectral_deviation(
    weight: torch.Tensor,
    v: torch.Tensor | None = None,
    iters: int = 2,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``σ_max(G − I)`` of one weight's smaller Gram matrix by ``iters`` power steps, and the final vector.

    The power steps run without autograd; the returned value ``‖(G − I) v‖`` (``v`` the unit iterate) is
    differentiable in ``weight``, so its gradient is ``∇σ`` at the estimated singular vector.

    .. math:: \\sigma_{max}(G - I) \\approx \\lVert (G - I) v_k \\rVert,\\quad v_{k+1} = (G - I) v_k / \\lVert\\cdot\\rVert

    Args:
        weight: a conv or linear weight.
        v: the starting vector (length ``min(n, p)``); random when None.
        iters: power steps (>= 1).
        generator: random source for a fresh start.

    Returns:
        ``(σ, v)``: the scalar estimate and the (detached, unit) vector to warm-start the next call.

    >>> s, _ = spectral_deviation(torch.tensor([[3.0, 0.0], [0.0, 1.0]]), iters=5)
    >>> round(s.item(), 6)
    8.0
    """
    f = filter_matrix(weight)  # (n, p)
    m = min(f.shape)
    with torch.no_grad():
        if v is None:
            v = torch.randn(m, generator=generator, dtype=torch.float64).to(f)
        fd = f.detach()
        v = v / v.norm().clamp_min(torch.finfo(f.dtype).tiny)
        for _ in range(iters):
            u = _matvec(fd, v)
            norm = u.norm()
            if norm == 0:  # G = I exactly: σ = 0 and any v will do
                break
            v = u / norm
    return _matvec(f, v).norm(), v


def srip_penalty(weights: Iterable[torch.Tensor], iters: int = 2) -> torch.Tensor:
    """SRIP ``Σ_layers σ_max(G − I)`` (fresh random start for each layer).

    .. math:: L_{srip} = \\sum_l \\sigma_{max}\\left(G^{(l)} - I\\right)
    """
    terms = [spectral_deviation(w, iters=iters)[0] for w in weights]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()


class SoftOrthogonality(Method):
    """``so``: ``λ · Σ_layers ‖F Fᵀ − I‖²_F`` added to the loss."""

    name = "so"
    kind = "soft"
    summary = "soft orthogonality λ·Σ‖FFᵀ − I‖²_F (computed on the smaller Gram matrix)"
    paper = "Bansal, Chen, Wang, NeurIPS 2018 (arXiv 1810.09102)"
    cost_note = "Gram FFᵀ − I per layer (2n²p) and its backward"
    default_strength = 1e-3
    uses_strength = True

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        if self.strength == 0:
            return None
        return self.strength * so_penalty(self.target_weights(model))

    def analytic_flops(self, model: nn.Module) -> float:
        # Gram 2·m²·M, its square-sum 2m², backward 4·m²·M  (m = min(n, p), M = max(n, p))
        total = 0.0
        for w in self.target_weights(model):
            n, p = filter_matrix(w).shape
            m, big = min(n, p), max(n, p)
            total += 6.0 * m * m * big + 2.0 * m * m
        return total


class SRIP(Method):
    """``srip``: ``λ · Σ_layers σ_max(G − I)`` by power iteration, added to the loss."""

    name = "srip"
    kind = "soft"
    summary = "spectral restricted isometry λ·Σ σ_max(FFᵀ − I) by power iteration (smaller Gram)"
    paper = "Bansal, Chen, Wang, NeurIPS 2018 (arXiv 1810.09102)"
    cost_note = "{iters} power iterations on FFᵀ − I per layer, and the backward"
    default_strength = 1e-2
    uses_strength = True
    hyperparameters = (
        Hyper("iters", 2, "power-iteration steps per training step", minimum=1),
        Hyper(
            "persistent", True, "warm-start each step from the last step's vector (else a fresh random one)"
        ),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._vectors: dict[str, torch.Tensor] = {}
        self._generator = torch.Generator().manual_seed(0)  # own random source: the global RNG is untouched

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        if self.strength == 0:
            return None
        terms = []
        for name, module in self.target_modules(model):
            v0 = self._vectors.get(name) if self.hp["persistent"] else None
            sigma, v = spectral_deviation(module.weight, v0, self.hp["iters"], self._generator)
            if self.hp["persistent"]:
                self._vectors[name] = v
            terms.append(sigma)
        if not terms:
            return None
        return self.strength * torch.stack(terms).sum()

    def analytic_flops(self, model: nn.Module) -> float:
        # each (G − I)v is two matrix-vector products (4·n·p); iters + 1 of them forward, ≈ 2 backward
        return sum((self.hp["iters"] + 3) * 4.0 * w.numel() for w in self.target_weights(model))
