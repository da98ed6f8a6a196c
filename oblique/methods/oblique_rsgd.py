"""Riemannian SGD on the oblique manifold: every filter on the unit sphere, trained with geoopt.

Absil, Mahony, Sepulchre, *Optimization Algorithms on Matrix Manifolds* (2008), ch. 4 (retraction-based
Riemannian gradient descent); Bonnabel, "Stochastic gradient descent on Riemannian manifolds", IEEE TAC
2013; Kochurov, Karimov, Kozlukov, "Geoopt: Riemannian Optimization in PyTorch" (arXiv 2005.02819). The
oblique manifold is the product of the filters' spheres, ``ddiag(F Fᵀ) = I``.

One step on a filter ``x`` (a row of the filter matrix) with Euclidean gradient ``g``:

.. math::

    \\operatorname{grad} = g - \\langle x, g\\rangle x,\\qquad
    x \\leftarrow \\frac{x - \\eta\\, d}{\\lVert x - \\eta\\, d \\rVert}

with ``d`` the momentum (Nesterov) direction, the momentum transported to the new tangent space by
projection (``geoopt.Sphere.retr_transp``).

How the weight is stored (docs/DESIGN.md, "Pitfalls of the libraries we build on"): ``geoopt.Sphere``
normalizes the *last* dimension, so a 4-D conv weight put on it would be normalized per kernel row. Here every targeted layer gets a
``torch.nn.utils.parametrize`` parametrization :class:`FilterView` whose ``original`` is the filter matrix
``(C_out, C_in·k…)`` — replaced by a ``geoopt.ManifoldParameter`` on ``geoopt.Sphere()`` — and whose forward
views it back to the layer's shape; ``module.weight`` is the effective weight. This works for Conv1d/2d/3d
and Linear, with or without bias; ``state_dict`` holds the plain filter matrix, loads in place, and survives
``copy.deepcopy``.

Note [projection at construction]: ``ManifoldParameter`` does not project, and ``Sphere.projx`` divides by
the norm without an epsilon. :meth:`ObliqueRSGD.prepare` projects explicitly; a filter whose norm is below
:data:`oblique.geometry.EPS` (no direction) is given a random unit direction from torch's generator (so a
seeded run stays reproducible) — it cannot stay zero on the sphere.

The optimizer (:meth:`ObliqueRSGD.make_optimizer`): ``sgd`` gives ``geoopt.optim.RiemannianSGD`` with the
run's momentum and Nesterov and ``stabilize``; ``adam`` gives ``geoopt.optim.RiemannianAdam``. Every other
parameter (biases, BN, untargeted layers) is in the same optimizer, in its own group with the run's
``weight_decay`` (Euclidean manifold: plain SGD/Adam). Fixes over geoopt 0.5.1, as thin subclasses:

- geoopt's SGD starts the momentum buffer at the raw Euclidean gradient and then adds the gradient again,
  so the first step is ``(1 + momentum)×`` torch's; here the buffer starts at zero, so the first step equals
  ``torch.optim.SGD``'s (tested against it on Euclidean parameters).
- geoopt issue 226: ``RiemannianAdam.state_dict()`` raises ``KeyError`` when its state holds a tensor that
  is in no parameter group (torch maps state keys through the groups' ids), e.g. after a parameter was
  replaced. Here ``state_dict()`` leaves such orphaned entries out instead of crashing at checkpoint time.
  And ``load_state_dict()`` keeps Adam's step count an integer (torch turns it into a float32 tensor, which
  geoopt then uses in ``β^step``): a resumed run takes exactly the steps of an uninterrupted one.

Differences from upstream (geoopt used directly on conv weights, as in most published comparisons): the
manifold parameter is the filter matrix, not the 4-D weight; the explicit, zero-safe projection; the
optimizer fixes above. ``impl`` picks the implementation: ``"fused"`` (default; ``oblique.optim.ObliqueSGD``,
the same SGD steps as the corrected geoopt optimizer, fused over filters of equal length; Adam stays
geoopt's) or ``"geoopt"`` (the reference path).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from oblique.geometry import EPS
from oblique.layers import ROWS, Layout
from oblique.methods.base import CostTarget, Hyper, Method, MethodUseError, OptimizerConfig, param_groups

__all__ = ["FilterView", "ObliqueRSGD", "project_rows_safe"]


class FilterView(nn.Module):
    """Parametrization ``(n, p) → weight``: the filter matrix written back as the weight by its layout
    (:mod:`oblique.layers`; rows: a view, ``(C_out, p) → (C_out, C_in, *kernel)``)."""

    def __init__(self, shape: torch.Size, layout: Layout = ROWS):
        super().__init__()
        self.shape = tuple(shape)
        self.layout = layout

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.layout.weight(f, self.shape)  # (n, p) -> the weight's shape

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return self.layout.filters(weight).contiguous()  # the weight -> (n, p)


@torch.no_grad()
def project_rows_safe(f: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Rows of ``f`` (``n × p``) scaled to unit norm; a row of norm ``< eps`` gets a random unit direction.

    See Note [projection at construction].

    >>> project_rows_safe(torch.tensor([[3.0, 4.0]]))
    tensor([[0.6000, 0.8000]])
    """
    f = f.clone()
    dead = torch.linalg.vector_norm(f, dim=1) < eps  # (n,)
    if dead.any():
        f[dead] = torch.randn(int(dead.sum()), f.shape[1], dtype=f.dtype, device=f.device)
    return f / torch.linalg.vector_norm(f, dim=1, keepdim=True)


#: ``impl``: geoopt's optimizers (the reference) or the fused ones of :mod:`oblique.optim` (ObliqueSGD with SGD;
#: Adam is geoopt's in both): :func:`oblique.methods.geoopt_optim.riemannian_optimizer`.
IMPLS = ("geoopt", "fused")


class ObliqueRSGD(Method):
    """``oblique-rsgd``: each filter a point of ``geoopt.Sphere``, trained by Riemannian SGD (or Adam)."""

    name = "oblique-rsgd"
    kind = "riemannian"
    manifold = "oblique"
    summary = "Riemannian SGD on the oblique manifold: x ← retr_x(−η·(g − ⟨x,g⟩x)) per filter (geoopt.Sphere)"
    paper = "Absil et al. 2008; Bonnabel 2013; geoopt"
    replaces_weights = True
    promises = "oblique"
    aims_at = "oblique, exactly"
    formula = "x ← retr_x(−η(g − ⟨x,g⟩x)) per filter"
    differences = (
        "the filter matrix (C_out, C_in·k…) is the `ManifoldParameter`, not the 4-D weight "
        "(geoopt's Sphere acts on the last dimension only); zero-safe projection at "
        "construction; momentum starts at zero (geoopt's first step is (1+μ)× torch's); a fused "
        "optimizer (`impl=fused`, default) with geoopt kept as reference; Adam checkpoints don't "
        "crash (geoopt issue 226) and resume exactly"
    )
    color, marker, linestyle = "#88ccee", "v", (0, (5, 1, 1, 1))
    cost_target = CostTarget("fused_optimizer", speedup=3.0)
    cost_note = "optimizer ({impl}): tangent projection, retraction, transport"
    hyperparameters = (
        Hyper(
            "impl",
            "fused",
            "optimizer: fused (oblique.optim.ObliqueSGD) or geoopt (reference)",
            choices=IMPLS,
        ),
        Hyper(
            "stabilize",
            0,
            "re-project points and momentum every k steps (geoopt stabilize; 0: never)",
            minimum=0,
        ),
    )

    def prepare(self, model: nn.Module) -> nn.Module:
        import geoopt  # only here and in the optimizers: a geoopt problem cannot break the other methods

        for t in self.target_modules(model):
            parametrize.register_parametrization(t.module, t.param, FilterView(t.weight.shape, t.layout))
            plist = t.parametrizations
            point = project_rows_safe(
                plist.original.detach()
            )  # (C_out, p), Note [projection at construction]
            plist.original = geoopt.ManifoldParameter(point, manifold=geoopt.Sphere())
        return model

    def check_first_step(self, model: nn.Module) -> None:
        """The filters are still on the sphere after the first optimizer step: a Euclidean optimizer (the
        user's own AdamW) would have moved them off it, silently."""
        ok, reason = self.check(model)
        if not ok:
            raise MethodUseError(
                f"oblique-rsgd: the first optimizer step moved the filters off the sphere ({reason}): step them "
                f"with method.make_optimizer(model, cfg) (Riemannian SGD or Adam), not a Euclidean optimizer "
                f"such as torch.optim.AdamW"
            )

    def target_weights(self, model: nn.Module) -> list[torch.Tensor]:
        """The ``ManifoldParameter`` filter matrix ``(C_out, p)`` of every targeted layer."""
        return [t.parametrizations.original for t in self.target_modules(model)]

    def make_optimizer(self, model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
        # filters on the sphere (no weight decay: the projection would remove it), the rest Euclidean
        groups = param_groups(model, self.target_weights(model), cfg)
        from oblique.methods.geoopt_optim import riemannian_optimizer  # geoopt: only here
        from oblique.optim import ObliqueSGD

        fused = ObliqueSGD if self.hp["impl"] == "fused" else None
        return riemannian_optimizer(groups, cfg, self.hp["stabilize"] or None, fused)

    def analytic_flops(self, model: nn.Module) -> float:
        # over plain SGD, per entry: egrad2rgrad (inner 2 + axpy 2), retraction's norm and division (3),
        # momentum transport by projection (4)
        return 11.0 * sum(w.numel() for w in self.target_weights(model))
