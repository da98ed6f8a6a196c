"""Riemannian SGD on the Stiefel manifold: every group of filters orthonormal, trained with geoopt.

Absil, Mahony, Sepulchre, *Optimization Algorithms on Matrix Manifolds* (Princeton University Press,
2008), ch. 3-4 (the Stiefel manifold as an embedded submanifold, its tangent projection, the QR
retraction, retraction-based Riemannian gradient descent); Edelman, Arias, Smith, "The geometry of
algorithms with orthogonality constraints", SIAM J. Matrix Anal. Appl. 20(2):303-353, 1998 (the Stiefel
geometry); Bonnabel, "Stochastic gradient descent on Riemannian manifolds", IEEE TAC 2013; Kochurov,
Karimov, Kozlukov, "Geoopt: Riemannian Optimization in PyTorch" (arXiv 2005.02819).

The constraint: a filter matrix ``F`` (``n × p``, one row per filter, read through the layer's layout) is
cut into groups of ``m`` consecutive filters, ``m ≤ p`` (Note [Stiefel groups]), and every group has
orthonormal rows, ``F_g F_gᵀ = I_m``: the filters of a group are of unit norm and mutually orthogonal, the
weight lies on the oblique manifold, and on the Stiefel manifold ``St(m, p)`` group by group. Each group is
a point of ``geoopt.EuclideanStiefel`` (the embedded metric ``⟨U, V⟩ = tr(UᵀV)``), stored transposed:
geoopt's Stiefel points are ``(p, m)`` matrices with orthonormal *columns*, ``X = F_gᵀ``.

One step on a group ``X = F_gᵀ`` with Euclidean gradient ``G`` (geoopt's ``RiemannianSGD`` on
``EuclideanStiefel``; ``sym(A) = (A + Aᵀ)/2``):

.. math::

    R = G - X \\operatorname{sym}(X^\\top G), \\qquad
    X \\leftarrow \\operatorname{qf}(X - \\eta\\, D), \\qquad
    B \\leftarrow B - X \\operatorname{sym}(X^\\top B)

with ``D`` the momentum (Nesterov) direction built from ``R`` and the buffer ``B``, ``qf`` the Q factor of
the Householder QR with every column's sign fixed so that ``diag R ≥ 0`` (geoopt's QR retraction, not a
polar or Cayley one: ``EuclideanStiefel.retr``), and the buffer transported to the new point by projection
(``EuclideanStiefel.transp``). The fused optimizer computes the same Q factor by Cholesky QR (Note
[Cholesky QR] in :mod:`oblique.optim`). The filters are ``Xᵀ``: in row form the projection is
``R_F = G_F − sym(F G_Fᵀ) F``.

Note [Stiefel groups]: a group of ``m`` filters in ``R^p`` can have orthonormal rows only if ``m ≤ p``. A
layer is split into groups exactly as ``oni`` splits it, without centring (the filters are not centred
here: Note [tall groups] in :mod:`oblique.methods._grouping`): a wide layer (``n ≤ p``) is one group; a
tall one into ``k = ceil(n / p)`` contiguous groups whose sizes differ by at most one, none taller than
wide, so every filter keeps unit norm and the method is comparable to ``oni`` with ``scale=1``;
``group_size`` caps the group size as ``oni``'s does. With ``conv_groups`` (the default, as ``oni``) a
grouped or depthwise convolution is split within each of its groups, and ``nn.MultiheadAttention``'s packed
``in_proj_weight`` within each of q, k and v. The alternative for a tall layer — orthonormal *columns*
(``FᵀF = I``, geoopt's native orientation) — would leave the filters of unequal norm, off the oblique
manifold: ONI's column variant, which this project does not use.

How the weight is stored: every targeted layer gets a ``torch.nn.utils.parametrize`` parametrization
:class:`StiefelView` with one trainable tensor per run of equal-size groups (``original0``, ``original1``:
two for a tall layer whose groups have two sizes, one otherwise), each a ``geoopt.ManifoldParameter`` on
``geoopt.EuclideanStiefel()`` of shape ``(c, p, m)`` — ``c`` groups, each ``p × m`` with orthonormal columns
— whose memory is the row-major ``(c, m, p)`` block of the filter matrix (a transposed view; Note [row form]
in :mod:`oblique.optim`). The forward pass views the blocks back to the filter matrix and the layer's
weight (a view for a one-run layer of the rows layout); ``state_dict`` holds the blocks, loads in place,
and survives ``copy.deepcopy``.

Note [Stiefel projection at construction]: ``ManifoldParameter`` does not project, and
``EuclideanStiefel.projx`` (the polar factor ``UVᵀ`` of the SVD) of a rank-deficient group is not unique.
:meth:`StiefelRSGD.prepare` maps every group to its polar factor — the orthonormal point nearest it — where
the group has full rank; a singular direction below ``max(EPS, p·ε·σ_max)`` (a zero filter, two parallel
ones) is replaced by a random direction from torch's generator (so a seeded run stays reproducible),
orthogonal to the group's other right singular vectors, before the polar factor is formed: a zero group
becomes a random orthonormal one, never NaN.

The optimizer (:meth:`StiefelRSGD.make_optimizer`): ``sgd`` gives :class:`oblique.optim.StiefelSGD`
(``impl=fused``, the default: geoopt's steps batched over every group of the same shape ``(m, p)`` across
all layers) or ``geoopt.optim.RiemannianSGD`` (``impl=geoopt``, the reference), with the run's momentum and
Nesterov and ``stabilize`` (every ``k`` steps, the points replaced by their polar factor and the buffers
re-projected). Momentum convention: the buffer starts at zero, so the first step is ``−η`` times the
Riemannian gradient, the convention of ``oblique-rsgd`` (geoopt 0.5.1 starts it at the raw Euclidean
gradient and adds the gradient again, a first step ``(1 + μ)×`` torch's; Note [first-step momentum] in
:mod:`oblique.optim`). ``adam`` gives geoopt's ``RiemannianAdam`` (with ``oblique-rsgd``'s checkpoint fixes)
in both implementations. Every other parameter (biases, BN, untargeted layers) is in the same optimizer,
in its own group with the run's ``weight_decay`` (Euclidean: plain SGD/Adam); the Stiefel groups get none
(``λX`` is normal to the manifold at ``X``: the tangent projection removes all of it).

Differences from upstream (geoopt used directly on weights): the manifold parameters are the groups of the
filter matrix ``(C_out, C_in·k…)``, transposed to geoopt's orthonormal-columns convention, not the 4-D
weight (geoopt's Stiefel acts on the last two dimensions, which on a conv weight are a kernel); a tall layer
is split into groups no taller than wide (every filter of unit norm) instead of getting orthonormal
columns; the explicit, zero-safe projection; momentum started at zero; a fused optimizer with geoopt kept
as reference.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from oblique.geometry import EPS, worst_gram_deviation
from oblique.layers import ROWS, Layout, Target
from oblique.methods._grouping import _batches, group_sizes, independent_blocks
from oblique.methods.base import CostTarget, Hyper, Method, MethodUseError, OptimizerConfig, param_groups

__all__ = ["StiefelRSGD", "StiefelView", "orthonormalize_rows_safe"]


class StiefelView(nn.Module):
    """Parametrization ``(c_1, p, m_1), (c_2, p, m_2), … → weight``: the runs of equal-size groups, each
    stored transposed (geoopt's orthonormal columns), written back as the filter matrix ``(n, p)`` and then
    as the weight by its layout (Note [Stiefel groups]).

    Args:
        shape: the weight's shape.
        sizes: the rows of every group, in order (summing to ``n``).
        layout: how the weight holds its filters (:mod:`oblique.layers`).
    """

    def __init__(self, shape: torch.Size, sizes: list[int], layout: Layout = ROWS):
        super().__init__()
        self.shape = tuple(shape)
        self.sizes = list(sizes)
        self.runs = _batches(self.sizes)  # [(groups, rows per group), …]
        self.layout = layout

    def forward(self, *blocks: torch.Tensor) -> torch.Tensor:
        rows = [b.mT.reshape(-1, b.shape[-2]) for b in blocks]  # (c, p, m) -> (c·m, p), a view when stored so
        f = rows[0] if len(rows) == 1 else torch.cat(rows)  # (n, p)
        return self.layout.weight(f, self.shape)

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f = self.layout.filters(weight)  # (n, p)
        out, start = [], 0
        for count, m in self.runs:
            block = f[start : start + count * m].reshape(count, m, -1).contiguous()  # (c, m, p)
            out.append(block.mT)  # (c, p, m): memory in row form
            start += count * m
        return tuple(out)


@torch.no_grad()
def orthonormalize_rows_safe(z: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Every matrix of ``z`` (``(K, m, p)``, ``m ≤ p``) mapped to a matrix with orthonormal rows: its polar
    factor where it has full rank; a missing direction (singular value below ``max(eps, p·ε·σ_max)``) filled
    with a random one from torch's generator first. See Note [Stiefel projection at construction].

    >>> x = orthonormalize_rows_safe(torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]))
    >>> torch.allclose(x[0] @ x[0].T, torch.eye(2), atol=1e-6), x[0, 0].tolist()
    (True, [1.0, 0.0, 0.0])
    """
    u, s, vh = torch.linalg.svd(z, full_matrices=False)  # (K, m, m), (K, m), (K, m, p)
    tol = (s[..., :1] * (z.shape[-1] * torch.finfo(z.dtype).eps)).clamp_min(eps)  # (K, 1)
    missing = s < tol  # (K, m); σ sorted descending: the missing ones are last
    for i in missing.any(dim=1).nonzero().flatten().tolist():
        r = int((~missing[i]).sum())
        keep = vh[i, :r]  # (r, p)
        fill = torch.randn(z.shape[1] - r, z.shape[2], dtype=z.dtype, device=z.device)  # (m − r, p)
        for _ in range(2):  # twice: orthogonal to the kept directions to rounding
            fill = fill - (fill @ keep.T) @ keep
        vh[i, r:] = torch.linalg.qr(fill.T).Q.T  # orthonormal, in the complement of the kept directions
    return u @ vh  # (K, m, p)


#: ``impl``: geoopt's optimizers (the reference) or the fused ones of :mod:`oblique.optim` (StiefelSGD with SGD;
#: Adam is geoopt's in both): :func:`oblique.methods.geoopt_optim.riemannian_optimizer`.
IMPLS = ("geoopt", "fused")


class StiefelRSGD(Method):
    """``stiefel-rsgd``: each group of filters a point of ``geoopt.EuclideanStiefel`` (orthonormal rows),
    trained by Riemannian SGD (or Adam); see the module docstring."""

    name = "stiefel-rsgd"
    kind = "riemannian"
    manifold = "stiefel"
    summary = (
        "Riemannian SGD on the Stiefel manifold: per group of filters F ← qf(F − η(G − sym(FGᵀ)F)) "
        "(geoopt.EuclideanStiefel, QR retraction)"
    )
    paper = "Edelman et al. 1998; Absil et al. 2008; geoopt"
    replaces_weights = True
    promises = "orthogonal"
    aims_at = "Stiefel (per group), exactly"
    formula = "F ← qf(F − η(G − sym(FGᵀ)F)) per group of ≤ p filters"
    differences = (
        "the groups of the filter matrix (C_out, C_in·k…), transposed to geoopt's orthonormal columns, are "
        "the `ManifoldParameter`s, not the 4-D weight (geoopt's Stiefel acts on the last two dimensions); "
        "a tall layer is split into groups no taller than wide as `oni` splits it (every filter of unit "
        "norm) rather than given orthonormal columns; zero-safe polar projection at construction; momentum "
        "starts at zero; a fused optimizer batched by group shape (`impl=fused`, default) with geoopt "
        "kept as reference"
    )
    color, marker, linestyle = "#4477aa", "d", (0, (4, 1, 2, 1))
    cost_target = CostTarget("fused_optimizer", speedup=2.0)
    cost_note = "optimizer ({impl}): tangent projections, QR retraction, transport per group of filters"
    hyperparameters = (
        Hyper(
            "impl",
            "fused",
            "optimizer: fused (oblique.optim.StiefelSGD, batched by group shape) or geoopt (reference)",
            choices=IMPLS,
        ),
        Hyper(
            "stabilize",
            0,
            "replace points by their polar factor and re-project momentum every k steps (geoopt stabilize; "
            "0: never)",
            minimum=0,
        ),
        Hyper("group_size", 0, "filters per group; 0 = as many as the layer allows (≤ p, as oni)", minimum=0),
        Hyper(
            "conv_groups",
            True,
            "orthonormalize within each group of a grouped or depthwise convolution and within each of q, k, "
            "v of a packed in_proj_weight (as oni); false: all of a layer's filters as one matrix",
        ),
    )

    # ------------------------------------------------------------------ groups
    def layer_sizes(self, t: Target) -> list[int]:
        """The rows of every group of target ``t``'s filter matrix (Note [Stiefel groups])."""
        n, p = t.filters().shape
        blocks = independent_blocks(t) if self.hp["conv_groups"] else 1
        return group_sizes(n // blocks, p, self.hp["group_size"], center=False) * blocks

    def views(self, model: nn.Module) -> list[StiefelView]:
        """The parametrization of every targeted layer (holds its groups)."""
        return [t.parametrizations[0] for t in self.target_modules(model)]

    # ------------------------------------------------------------------ hooks
    def prepare(self, model: nn.Module) -> nn.Module:
        import geoopt  # only here and in the optimizers: a geoopt problem cannot break the other methods

        for t in self.target_modules(model):
            view = StiefelView(t.weight.shape, self.layer_sizes(t), t.layout)
            parametrize.register_parametrization(t.module, t.param, view)
            plist = t.parametrizations
            for i in range(len(view.runs)):
                block = getattr(plist, f"original{i}").detach()  # (c, p, m)
                # Note [Stiefel projection at construction]
                point = orthonormalize_rows_safe(block.mT).contiguous().mT
                setattr(
                    plist, f"original{i}", geoopt.ManifoldParameter(point, manifold=geoopt.EuclideanStiefel())
                )
        return model

    def target_weights(self, model: nn.Module) -> list[torch.Tensor]:
        """The ``ManifoldParameter`` blocks ``(c, p, m)`` of every targeted layer, in order (one per run of
        equal-size groups: two for a tall layer whose groups have two sizes)."""
        out = []
        for t in self.target_modules(model):
            plist = t.parametrizations
            out += [getattr(plist, f"original{i}") for i in range(len(plist[0].runs))]
        return out

    def make_optimizer(self, model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
        # (cfg.name is sgd or adam: the hook guard refuses any other, Method.check_optimizer)
        # Stiefel groups without weight decay, the rest Euclidean with the run's
        groups = param_groups(model, self.target_weights(model), cfg)
        from oblique.methods.geoopt_optim import riemannian_optimizer  # geoopt: only here
        from oblique.optim import StiefelSGD

        fused = StiefelSGD if self.hp["impl"] == "fused" else None
        return riemannian_optimizer(groups, cfg, self.hp["stabilize"] or None, fused)

    def check(self, model: nn.Module) -> tuple[bool, str]:
        """Whether every group's effective filters are orthonormal now (promise ``"orthogonal"``, scale 1):
        ``max |F_g F_gᵀ − I|`` within ``100·ε`` of the weight's dtype (1.2e-5 for float32; the QR
        retraction is exact to rounding). Orthonormal rows are also on the oblique manifold."""
        blocks, tol = [], 0.0
        with torch.no_grad():
            for t, view in zip(self.target_modules(model), self.views(model), strict=True):
                tol = max(tol, 100 * torch.finfo(t.weight.dtype).eps)
                blocks += [(t.name, g) for g in t.filters().split(view.sizes)]  # (m, p) each
            worst, where = worst_gram_deviation(blocks)
        if not math.isfinite(worst):
            return False, f"{self.name}: {where} has non-finite weights"
        if not where:
            return False, f"{self.name}: no targeted layer"
        ok = worst <= tol
        return ok, (
            f"{self.name}: rows per group {'orthonormal' if ok else 'not orthonormal'}: max |F Fᵀ − I| = "
            f"{worst:.1e} at {where} (tolerance {tol:.1e})"
        )

    def check_first_step(self, model: nn.Module) -> None:
        """The groups are still orthonormal after the first optimizer step: a Euclidean optimizer (the user's
        own AdamW) would have moved them off the Stiefel manifold, silently."""
        ok, reason = self.check(model)
        if not ok:
            raise MethodUseError(
                f"stiefel-rsgd: the first optimizer step moved the filters off the Stiefel manifold ({reason}): "
                f"step them with method.make_optimizer(model, cfg) (Riemannian SGD or Adam), not a Euclidean "
                f"optimizer such as torch.optim.AdamW"
            )

    def analytic_flops(self, model: nn.Module) -> float:
        # over plain SGD, per group of m filters in R^p: the tangent projection and the transport, two
        # m×m×p products each (4·m²p each); the Householder QR and forming Q (4m²p − 4m³/3); the sign fix,
        # weight decay and the step (about 6 per entry)
        total = 0.0
        for t, view in zip(self.target_modules(model), self.views(model), strict=True):
            p = t.filters().shape[1]
            total += sum(12.0 * m * m * p - 4.0 * m**3 / 3 + 6.0 * m * p for m in view.sizes)
        return total
