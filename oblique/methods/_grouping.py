"""Shared machinery of the orthogonalizing reparametrizations (``oni``, ``olm``): groups, centring, scale.

Both methods map the filter matrix ``Z`` (``n × p``, one row per filter) to a matrix ``W`` whose rows are
orthonormal *within each group of filters*, then multiply every row by an output scale ``γ_i``.

Note [tall groups]: a group of ``m`` filters in ``R^p`` can have orthonormal rows only if ``m ≤ p``; after
centring (every row's mean subtracted, so every row lies in the ``(p − 1)``-dimensional subspace orthogonal
to the all-ones vector) only if ``m ≤ p − 1``. Upstream ONI switches to a *column* variant when
``C_out > C_in·k·k`` (orthonormal columns, rows no longer unit norm; DESIGN.md calls it numerically
broken), and upstream OLM simply produces a rank-deficient, non-orthogonal result. Here a layer whose
group would be taller than that is *split into more groups, none taller than wide*: the number of groups
is ``k = ceil(n / min(group_size, p_eff))`` with ``p_eff = p − 1`` when centring (``p`` otherwise) and the
``n`` filters, in order, are dealt into ``k`` contiguous groups whose sizes differ by at most one. Every
filter then has unit norm (before the scale) — the weight lies on the oblique manifold — and filters are
mutually orthogonal within their group, which is the most a tall layer can have. A one-column layer
(``p = 1``) is never centred (centring would zero it): each filter becomes its own group, ``±1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from oblique.geometry import filter_matrix
from oblique.methods.base import Hyper, Method

__all__ = ["GROUP_HYPERS", "GroupedOrthogonal", "GroupedReparamMethod", "group_sizes"]

#: The hyperparameters ONI and OLM share (upstream defaults: one group, centring, scale √2 fixed).
GROUP_HYPERS = (
    Hyper("group_size", 0, "filters per group; 0 = all filters of a layer in one group", minimum=0),
    Hyper("center", True, "subtract every filter's mean before orthogonalizing (upstream default)"),
    Hyper("scale", math.sqrt(2.0), "per-filter output scale γ (upstream NScale, √2)", minimum=0.0),
    Hyper("learn_scale", False, "make γ a learnable per-filter parameter (upstream adjustScale)"),
)


def group_sizes(n: int, p: int, group_size: int = 0, center: bool = True) -> list[int]:
    """Row counts of the contiguous filter groups of an ``n × p`` filter matrix (Note [tall groups]).

    Args:
        n: filters (rows).
        p: entries per filter (columns).
        group_size: requested filters per group; 0 means all ``n``.
        center: whether rows are centred (then a group holds at most ``p − 1`` rows when ``p > 1``).

    Returns:
        Sizes summing to ``n``, non-increasing, differing by at most one, none above the limit.

    >>> group_sizes(16, 3)          # the MNIST-1D stem conv (16, 1, 3), centred: groups of ≤ 2
    [2, 2, 2, 2, 2, 2, 2, 2]
    >>> group_sizes(10, 64, group_size=4)
    [4, 3, 3]
    """
    limit = p - 1 if (center and p > 1) else p
    m = min(group_size or n, limit, n)
    k = math.ceil(n / m)
    q, r = divmod(n, k)
    return [q + 1] * r + [q] * (k - r)


def _batches(sizes: list[int]) -> list[tuple[int, int]]:
    """``[(count, size), …]``: runs of equal sizes, so each run is one batched matrix op."""
    runs: list[tuple[int, int]] = []
    for s in sizes:
        if runs and runs[-1][1] == s:
            runs[-1] = (runs[-1][0] + 1, s)
        else:
            runs.append((1, s))
    return runs


def regularized_gram(zc: torch.Tensor, eps: float) -> torch.Tensor:
    """``S = Zc Zcᵀ + ε·(tr S / m)·I`` for a batch ``(k, m, p)``: ``(k, m, m)`` (ε relative to the mean
    eigenvalue, so the result does not depend on the weight's scale). Shared by ONI and OLM."""
    s = zc @ zc.mT  # (k, m, m)
    m = s.shape[-1]
    mean_eig = s.diagonal(dim1=-2, dim2=-1).sum(-1).div(m).clamp_min(torch.finfo(s.dtype).tiny)  # (k,)
    eye = torch.eye(m, dtype=s.dtype, device=s.device)
    return s + (eps * mean_eig)[:, None, None] * eye


class GroupedOrthogonal(nn.Module):
    """A parametrization ``W = γ ⊙ orth(centre(Z))`` applied group by group to the filter matrix.

    Subclasses implement :meth:`orthogonalize` on a batch of (centred) groups ``(k, m, p)``.

    Args:
        shape: the weight's shape ``(C_out, C_in, *kernel)`` or ``(C_out, C_in)``.
        group_size: requested filters per group (0: all); see Note [tall groups].
        center: subtract each row's mean first (ignored when ``p = 1``).
        scale: initial per-filter output scale γ.
        learn_scale: whether γ is a learnable parameter (shape ``(C_out,)``) or a fixed buffer.
    """

    def __init__(
        self,
        shape: torch.Size,
        group_size: int = 0,
        center: bool = True,
        scale: float = math.sqrt(2.0),
        learn_scale: bool = False,
    ):
        super().__init__()
        n, p = shape[0], math.prod(shape[1:])
        self.center = center and p > 1
        self.sizes = group_sizes(n, p, group_size, self.center)
        gamma = torch.full((n,), float(scale))
        if learn_scale:
            self.scale = nn.Parameter(gamma)
        else:
            self.register_buffer("scale", gamma)

    def orthogonalize(self, zc: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """``(k, m, p) → (k, m, p)``: rows of each group made (approximately) orthonormal."""
        raise NotImplementedError

    def unscaled(self, weight: torch.Tensor) -> torch.Tensor:
        """The orthogonalized weight before the output scale, in the weight's shape."""
        z = filter_matrix(weight)  # (n, p)
        if self.center:
            z = z - z.mean(dim=1, keepdim=True)  # (n, p), every row ⟂ 1
        out, start = [], 0
        for count, size in _batches(self.sizes):
            block = z[start : start + count * size].reshape(count, size, -1)  # (k, m, p)
            out.append(self.orthogonalize(block).reshape(count * size, -1))  # (k·m, p)
            start += count * size
        return torch.cat(out, dim=0).view_as(weight)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        w = self.unscaled(weight)
        return w * self.scale.to(w.dtype).view(-1, *([1] * (w.dim() - 1)))  # γ_i per filter

    def group_flops(self, p: int, per_group: Callable[[int, int], float]) -> float:
        """Sum ``per_group(m, p)`` over this layer's groups."""
        return float(sum(per_group(m, p) for m in self.sizes))


class GroupedReparamMethod(Method):
    """Shared ``prepare`` / ``target_weights`` / ``analytic_flops`` of ``oni`` and ``olm``.

    Subclasses set :attr:`parametrization` (a :class:`GroupedOrthogonal` subclass) and implement
    :meth:`build` (the parametrization for one weight) and :meth:`group_flops` (forward flops of one group).
    """

    kind = "reparam"

    def build(self, weight: torch.Tensor) -> GroupedOrthogonal:  # pragma: no cover - abstract
        raise NotImplementedError

    def group_flops(self, m: int, p: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare(self, model: nn.Module) -> nn.Module:
        for _, module in self.unparametrized_targets(model):
            p = self.build(module.weight).to(device=module.weight.device)
            parametrize.register_parametrization(module, "weight", p)
        return model

    def target_weights(self, model: nn.Module) -> list[torch.Tensor]:
        """The unconstrained ``Z`` of every targeted layer (``parametrizations.weight.original``)."""
        return [m.parametrizations.weight.original for _, m in self.target_modules(model)]

    def parametrizations(self, model: nn.Module) -> list[GroupedOrthogonal]:
        """The parametrization module of every targeted layer (holds the groups and the scale γ)."""
        return [m.parametrizations.weight[0] for _, m in self.target_modules(model)]

    def analytic_flops(self, model: nn.Module) -> float:
        # forward per group from `group_flops`, backward ≈ twice the forward (one pass per matmul operand)
        total = 0.0
        for z, par in zip(self.target_weights(model), self.parametrizations(model), strict=True):
            p = filter_matrix(z).shape[1]
            total += 3.0 * par.group_flops(p, self.group_flops) + 4.0 * z.numel()  # + centring and scale
        return total
