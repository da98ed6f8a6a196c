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
tall layer ``σ_max(FFᵀ − I_n) = max(σ_max(FᵀF − I_p), 1)`` — stuck at 1 with a useless gradient (and the
same holds for ``FᵀF`` of a wide layer). :func:`srip_penalty` uses the smaller Gram matrix; for a wide layer
it is the paper's term.

Note [batched by shape]: a network has hundreds of targeted layers but a handful of filter-matrix shapes
(ResNet-110: 16×144, 32×288, 64×576 and three singletons). With ``batched=True`` (the default) the weights of
one shape are stacked into one ``(L, n, p)`` tensor and handled by batched products, in a
``torch.autograd.Function`` whose backward is written out: SO's gradient ``4(FFᵀ − I)F`` (``4F(FᵀF − I)``
when tall) is one batched product, where autograd would take two; SRIP's power iteration and its
gradient (two outer products at the estimated vector) are a few batched matrix-vector products. Nothing
in it waits for the device: the power iteration keeps the previous vector where a step gives zero
(``torch.where``, no data-dependent branch on the host), and the value is returned as a tensor. The
per-layer form (``batched=False``) is the reference: same values and gradients (tested in float64).

What the authors' code does (github.com/nbansal90/Can-we-Gain-More-from-Orthogonality), and where this
differs:

- SRIP, σ or σ². The PyTorch scripts (``Wide-Resnet/train_n.py``, ``SVHN/train.py``,
  ``Imagenet/*/train_n.py``, ``l2_reg_ortho``) add ``σ²`` per layer; the Keras script
  (``ResNet/resnet_cifar_new.py``, ``l2_reg``) adds ``σ`` (plus ``1e-4·‖W‖_F``). This returns ``σ``, the paper's
  formula.
- SRIP, which Gram matrix. The Wide-ResNet script uses the smaller one (``FᵀF`` when tall, ``FFᵀ`` when
  wide), as here; the SVHN and ImageNet scripts always use ``FᵀF`` (``p × p``: for a wide layer the larger
  one, whose ``σ`` is at least 1); the Keras script the filter Gram ``FFᵀ``.
- SRIP, the power iteration: upstream takes one step from a fresh random vector every training step
  (uniform in the Wide-ResNet and Keras scripts, Gaussian in the SVHN and ImageNet ones); here ``iters`` steps (default 2) from the last
  step's vector (``persistent``), and ``G`` is never formed (products with ``F`` and ``Fᵀ``).
- Which weights: upstream regularizes every parameter with two or more dimensions (conv and linear); here
  the targets are explicit (conv, or conv and linear; never biases or BN).
- The strength schedule comes from the authors' training scripts (``adjust_ortho_decay_rate``; the Keras
  ``decay_schedule``), not from a formula: the initial λ (``--ortho-decay``, default 1e-2) is multiplied by
  1e-3 after epoch 20 (ImageNet: 30), 1e-4 after 50, 1e-6 after 70 and set to 0 after 120 of 200 epochs.
  Here λ is constant and the default is set for the default setting (README).
- SO: the authors' repository has no code for it (its README lists SO as not released); this follows the
  paper's formula.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from oblique.geometry import filter_matrix
from oblique.methods._grouping import BATCHED_HYPER
from oblique.methods.base import CostTarget, Hyper, Method

__all__ = [
    "SRIP",
    "SoftOrthogonality",
    "so_penalty",
    "spectral_deviation",
    "spectral_deviations",
    "srip_penalty",
]


def _by_shape(weights: Sequence[torch.Tensor]) -> dict[tuple, list[int]]:
    """Indices of ``weights`` grouped by shape, dtype and device (Note [batched by shape])."""
    classes: dict[tuple, list[int]] = {}
    for i, w in enumerate(weights):
        classes.setdefault((w.shape, w.dtype, w.device), []).append(i)
    return classes


def _stack(weights: Sequence[torch.Tensor]) -> tuple[torch.Tensor, int, int]:
    """Same-shape weights as one ``(L, n, p)`` tensor of filter matrices (a copy; called where autograd
    does not record), and ``n``, ``p``."""
    n, p = weights[0].shape[0], math.prod(weights[0].shape[1:])
    return torch.stack(weights).reshape(len(weights), n, p), n, p  # reshape: channels-last weights too


def _so_one(f: torch.Tensor) -> torch.Tensor:
    n, p = f.shape
    if n <= p:
        g = f @ f.T  # (n, n)
        return (g - torch.eye(n, dtype=f.dtype, device=f.device)).square().sum()
    g = f.T @ f  # (p, p)
    return (g - torch.eye(p, dtype=f.dtype, device=f.device)).square().sum() + (n - p)


class _SOByShape(torch.autograd.Function):
    """``Σ_l ‖F_l F_lᵀ − I‖²_F`` over weights of one filter-matrix shape ``(n, p)``, from the smaller Gram
    matrix (Note [smaller Gram]); backward ``4(G − I)F`` (``4F(G − I)`` when tall), one batched product."""

    @staticmethod
    def forward(ctx, *weights: torch.Tensor) -> torch.Tensor:
        f, n, p = _stack(weights)  # (L, n, p)
        tall = n > p
        d = f.mT @ f if tall else f @ f.mT  # G, (L, m, m) with m = min(n, p)
        d.diagonal(dim1=-2, dim2=-1).sub_(1.0)  # G − I
        ctx.save_for_backward(f, d)
        ctx.tall, ctx.shape = tall, weights[0].shape
        return d.square().sum() + len(weights) * max(n - p, 0)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f, d = ctx.saved_tensors
        d = d * (4.0 * grad)  # the scale on the small factor (L, m, m), not on the gradient
        g = f @ d if ctx.tall else d @ f  # ∂/∂F, (L, n, p)
        return g.view(-1, *ctx.shape).unbind(0)


def so_penalty(weights: Iterable[torch.Tensor], batched: bool = True) -> torch.Tensor:
    """Soft orthogonality ``Σ_layers ‖F Fᵀ − I_n‖²_F``, from the smaller Gram matrix (Note [smaller Gram]).

    .. math:: L_{so} = \\sum_l \\lVert F^{(l)} F^{(l)T} - I \\rVert_F^2

    Args:
        weights: conv or linear weights.
        batched: one batched computation per filter-matrix shape (Note [batched by shape]); ``False``:
            layer by layer, by autograd (the reference).

    >>> so_penalty([torch.tensor([[2.0, 0.0], [0.0, 1.0]])])
    tensor(9.)
    >>> so_penalty([torch.tensor([[1.0], [0.0], [0.0]])])   # tall: ‖FFᵀ − I₃‖² = 2
    tensor(2.)
    """
    weights = list(weights)
    if not batched:
        terms = [_so_one(filter_matrix(w)) for w in weights]
    else:
        terms = [_SOByShape.apply(*(weights[i] for i in idx)) for idx in _by_shape(weights).values()]
    if not terms:
        return torch.zeros(())
    return terms[0] if len(terms) == 1 else torch.stack(terms).sum()


def _matvec(f: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(G − I) v`` for the smaller Gram matrix ``G`` of ``f``, without forming ``G``."""
    n, p = f.shape
    if n <= p:
        return f @ (f.T @ v) - v  # (n,)
    return f.T @ (f @ v) - v  # (p,)


def _unit(u: torch.Tensor, fallback: torch.Tensor, dim: int) -> torch.Tensor:
    """``u / ‖u‖``, or ``fallback`` where ``‖u‖ = 0`` (``G = I`` exactly: σ = 0 and any vector will do) —
    a ``torch.where``, no branch on the host."""
    norm = torch.linalg.vector_norm(u, dim=dim, keepdim=True)
    tiny = torch.finfo(u.dtype).tiny
    return torch.where(norm > tiny, u / norm.clamp_min(tiny), fallback)


def spectral_deviation(
    weight: torch.Tensor,
    v: torch.Tensor | None = None,
    iters: int = 2,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``σ_max(G − I)`` of one weight's smaller Gram matrix by ``iters`` power steps, and the final vector.

    The power steps run without autograd; the returned value ``‖(G − I) v‖`` (``v`` the unit iterate) is
    differentiable in ``weight``, so its gradient is ``∇σ`` at the estimated singular vector. This is the
    per-layer form; :func:`srip_penalty` and ``srip`` batch it by shape (Note [batched by shape]).

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
    with torch.no_grad():
        v = _start(v, min(f.shape), f, generator)
        fd = f.detach()
        for _ in range(iters):
            v = _unit(_matvec(fd, v), v, dim=0)
    return _matvec(f, v).norm(), v


def _start(
    v: torch.Tensor | None, m: int, like: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """The unit starting vector: ``v`` normalized, or a fresh Gaussian one (drawn in float64)."""
    if v is None:
        v = torch.randn(m, generator=generator, dtype=torch.float64)
    v = v.to(like)
    return v / v.norm().clamp_min(torch.finfo(like.dtype).tiny)


class _SRIPByShape(torch.autograd.Function):
    """``σ_l = ‖(G_l − I) v_l‖`` for weights of one filter-matrix shape, after ``iters`` batched power steps
    from the vectors ``v`` (``(L, m)``, normalized first); returns ``(σ (L,), v (L, m))``. Backward in closed form: with
    ``r = (G − I)v``, ``∂σ/∂F = (r (Fᵀv)ᵀ + v (Fᵀr)ᵀ)/σ`` (wide, ``G = FFᵀ``) or ``((Fv) rᵀ + (Fr) vᵀ)/σ``
    (tall, ``G = FᵀF``); zero where ``σ = 0``.

    Vectors are kept as rows ``(L, 1, ·)``: a batched product of a row and a matrix runs an order of
    magnitude faster than of a matrix and a column (measured, CPU), and the two outer products of the
    gradient are one product with inner dimension 2."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, iters: int, *weights: torch.Tensor):
        f, n, p = _stack(weights)  # (L, n, p)
        tall = n > p
        ft = f.mT  # (L, p, n)
        # v·(G − I) for a row v: (vF)Fᵀ − v when wide, (vFᵀ)F − v when tall (G symmetric)
        first, second = (ft, f) if tall else (f, ft)
        v = v.to(f).unsqueeze(1)  # (L, 1, m)
        v = v / torch.linalg.vector_norm(v, dim=2, keepdim=True).clamp_min(torch.finfo(f.dtype).tiny)
        for _ in range(iters):
            v = _unit((v @ first) @ second - v, v, dim=2)
        a = v @ first  # (Fv)ᵀ (L, 1, n) when tall, (Fᵀv)ᵀ (L, 1, p) when wide
        r = a @ second - v  # ((G − I) v)ᵀ, (L, 1, m)
        sigma = torch.linalg.vector_norm(r, dim=(1, 2))  # (L,)
        ctx.save_for_backward(f, v, a, r, sigma)
        ctx.tall, ctx.shape = tall, weights[0].shape
        v = v.squeeze(1)
        ctx.mark_non_differentiable(v)
        return sigma, v

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_sigma: torch.Tensor, _grad_v: torch.Tensor):
        f, v, a, r, sigma = ctx.saved_tensors
        coef = (grad_sigma / sigma.clamp_min(torch.finfo(sigma.dtype).tiny)).view(-1, 1, 1)  # ∂L/∂σ / σ
        if ctx.tall:  # ∂σ/∂F = ((Fv) rᵀ + (Fr) vᵀ)/σ: [Fv, Fr] (L, n, 2) @ [r; v] (L, 2, p)
            b = r @ f.mT  # (Fr)ᵀ, (L, 1, n)
            g = torch.cat([a, b], dim=1).mul_(coef).mT @ torch.cat([r, v], dim=1)
        else:  # ∂σ/∂F = (r (Fᵀv)ᵀ + v (Fᵀr)ᵀ)/σ: [r, v] (L, n, 2) @ [Fᵀv; Fᵀr] (L, 2, p)
            b = r @ f  # (Fᵀr)ᵀ, (L, 1, p)
            g = torch.cat([r, v], dim=1).mul_(coef).mT @ torch.cat([a, b], dim=1)  # (L, n, p)
        return (None, None, *g.view(-1, *ctx.shape).unbind(0))


def spectral_deviations(
    weights: Sequence[torch.Tensor],
    vectors: Sequence[torch.Tensor | None],
    iters: int = 2,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """:func:`spectral_deviation` of every weight, batched by shape (Note [batched by shape]).

    Args:
        weights: conv or linear weights.
        vectors: each weight's starting vector, or None for a fresh random one (drawn in the order of
            ``weights``, as the per-layer form draws them).
        iters: power steps (>= 1).
        generator: random source for fresh starts.

    Returns:
        ``(Σ σ, vectors)``: the sum of the estimates (a 0-d tensor) and every weight's final unit vector.
    """
    starts = [  # the per-layer form's draws, in its order; normalized per class in _SRIPByShape
        (
            torch.randn(min(w.shape[0], math.prod(w.shape[1:])), generator=generator, dtype=torch.float64)
            if v is None
            else v
        )
        for w, v in zip(weights, vectors, strict=True)
    ]
    out: list[torch.Tensor | None] = [None] * len(weights)
    terms = []
    for idx in _by_shape(weights).values():
        like = weights[idx[0]]
        v0 = torch.stack([starts[i].to(like) for i in idx])  # (L, m), the weights' dtype and device
        sigma, vs = _SRIPByShape.apply(v0, iters, *(weights[i] for i in idx))
        terms.append(sigma.sum())
        for i, v in zip(idx, vs.unbind(0), strict=True):
            out[i] = v
    total = torch.zeros(()) if not terms else terms[0] if len(terms) == 1 else torch.stack(terms).sum()
    return total, out  # type: ignore[return-value]


def srip_penalty(weights: Iterable[torch.Tensor], iters: int = 2, batched: bool = True) -> torch.Tensor:
    """SRIP ``Σ_layers σ_max(G − I)`` (fresh random start for each layer, from the global generator).

    .. math:: L_{srip} = \\sum_l \\sigma_{max}\\left(G^{(l)} - I\\right)

    Args:
        weights: conv or linear weights.
        iters: power steps (>= 1).
        batched: one batched computation per filter-matrix shape (Note [batched by shape]); ``False``:
            layer by layer (the reference).
    """
    weights = list(weights)
    if batched:
        return spectral_deviations(weights, [None] * len(weights), iters)[0]
    terms = [spectral_deviation(w, iters=iters)[0] for w in weights]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()


class SoftOrthogonality(Method):
    """``so``: ``λ · Σ_layers ‖F Fᵀ − I‖²_F`` added to the loss."""

    name = "so"
    kind = "soft"
    manifold = "stiefel"
    summary = "soft orthogonality λ·Σ‖FFᵀ − I‖²_F (computed on the smaller Gram matrix)"
    paper = "Bansal et al., NeurIPS 2018"
    aims_at = "Stiefel, softly"
    formula = "λ‖FFᵀ − I‖²_F"
    differences = (
        "the exact value from the smaller Gram matrix (tall: ‖FᵀF − I‖² + n − p); the authors "
        "released no code for SO; explicit targets (upstream regularizes every ≥ 2-D parameter); "
        "constant λ; batched by shape with a closed-form backward (`batched=false`: per layer, "
        "autograd)"
    )
    color, marker, linestyle = "#aa4499", "h", (0, (8, 2, 1, 2))
    cost_target = CostTarget.batched(overhead_pct=3.0)
    cost_note = "Gram FFᵀ − I per layer (2n²p) and its backward (2n²p batched); batched={batched}"
    default_strength = 1e-3
    uses_strength = True
    hyperparameters = (BATCHED_HYPER,)

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        if self.strength == 0:
            return None
        filters = [t.filters() for t in self.target_modules(model)]  # (n, p) each, through its layout
        return self.strength * so_penalty(filters, batched=self.hp["batched"])

    def analytic_flops(self, model: nn.Module) -> float:
        # Gram 2·m²·M, its square-sum 2m², backward 2·m²·M batched (closed form), 4·m²·M by autograd
        # (m = min(n, p), M = max(n, p))
        total = 0.0
        for t in self.target_modules(model):
            n, p = t.filters().shape
            m, big = min(n, p), max(n, p)
            total += (4.0 if self.hp["batched"] else 6.0) * m * m * big + 2.0 * m * m
        return total


class SRIP(Method):
    """``srip``: ``λ · Σ_layers σ_max(G − I)`` by power iteration, added to the loss."""

    name = "srip"
    kind = "soft"
    manifold = "stiefel"
    summary = "spectral restricted isometry λ·Σ σ_max(FFᵀ − I) by power iteration (smaller Gram)"
    paper = "Bansal et al., NeurIPS 2018"
    aims_at = "Stiefel in spectral norm, softly"
    formula = "λ·σ_max(G − I), G the smaller Gram"
    differences = (
        "returns σ, the paper's formula (upstream's PyTorch scripts return σ², its Keras script "
        "σ); the smaller Gram as upstream's Wide-ResNet script (its SVHN/ImageNet scripts always "
        "use FᵀF, for wide layers the larger one); 2 power steps warm-started from the last "
        "step's vector (upstream: one step from a fresh random vector), G never formed; constant "
        "λ — upstream's schedule (×1e-3 after epoch 20, ×1e-4 after 50, ×1e-6 after 70, 0 after "
        "120, from λ = 1e-2) is in its training scripts, not the paper's formula; batched by "
        "shape, no host sync"
    )
    color, marker, linestyle = "#ddcc77", "<", (0, (2, 2))
    cost_target = CostTarget.batched(overhead_pct=3.0)
    cost_note = "{iters} power iterations on FFᵀ − I per layer, and the backward; batched={batched}"
    default_strength = 1e-2
    uses_strength = True
    hyperparameters = (
        Hyper("iters", 2, "power-iteration steps per training step", minimum=1),
        Hyper(
            "persistent", True, "warm-start each step from the last step's vector (else a fresh random one)"
        ),
        BATCHED_HYPER,
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._vectors: dict[str, torch.Tensor] = {}
        self._generator = torch.Generator().manual_seed(0)  # own random source: the global RNG is untouched

    def state_dict(self) -> dict:
        """The warm-start vectors and the generator's state: a resumed run iterates from the same vectors."""
        return {"vectors": dict(self._vectors), "generator": self._generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self._vectors = dict(state["vectors"])
        self._generator.set_state(state["generator"])

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        if self.strength == 0:
            return None
        mods = self.target_modules(model)
        if not mods:
            return None
        persistent = self.hp["persistent"]
        if self.hp["batched"]:
            names = [t.name for t in mods]
            starts = [self._vectors.get(name) if persistent else None for name in names]
            total, vectors = spectral_deviations(
                [t.filters() for t in mods], starts, self.hp["iters"], self._generator
            )
            if persistent:
                self._vectors.update(zip(names, vectors, strict=True))
            return self.strength * total
        terms = []
        for t in mods:
            v0 = self._vectors.get(t.name) if persistent else None
            sigma, v = spectral_deviation(t.filters(), v0, self.hp["iters"], self._generator)
            if persistent:
                self._vectors[t.name] = v
            terms.append(sigma)
        return self.strength * torch.stack(terms).sum()

    def analytic_flops(self, model: nn.Module) -> float:
        # each (G − I)v is two matrix-vector products (4·n·p); iters + 1 of them forward, ≈ 2 backward
        return sum((self.hp["iters"] + 3) * 4.0 * w.numel() for w in self.target_weights(model))
