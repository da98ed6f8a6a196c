"""Shared machinery of the orthogonalizing reparametrizations (``oni``, ``olm``): groups, centring, scale,
and the batched computation across layers.

Both methods map the filter matrix ``Z`` (``n × p``, one row per filter) to a matrix ``W`` whose rows are
orthonormal *within each group of filters*, then multiply every row by an output scale ``γ_i``.

Note [tall groups]: a group of ``m`` filters in ``R^p`` can have orthonormal rows only if ``m ≤ p``; after
centring (every row's mean subtracted, so every row lies in the ``(p − 1)``-dimensional subspace orthogonal
to the all-ones vector) only if ``m ≤ p − 1``. Upstream handles a tall layer in three different ways: the
PyTorch ONI (``ONI_Conv2d``, ``ONI_Linear``) switches to a *column* variant (``ONINorm_colum``: orthonormal
columns, rows no longer unit norm; docs/DESIGN.md calls it numerically broken) when ``C_out > C_in·k·k``; the
Torch7 ONI and OLM modules cap the group size at ``p`` (``m_perGroup``, default 64 in their CIFAR scripts,
lowered to ``p`` when larger) and cut the filters into consecutive groups of that size, the remainder
last — a centred group of ``p`` rows has rank ``p − 1``, so its Gram matrix is singular (OLM adds an
absolute ``ε``); the PyTorch ``OWN_Conv2d`` (OLM) does not cap at all and needs the number of groups to
divide ``C_out``. Here a layer whose group would be taller than wide is *split into more groups, none
taller than wide*: the number of groups is ``k = ceil(n / min(group_size, p_eff))`` with ``p_eff = p − 1``
when centring (``p`` otherwise) and the ``n`` filters, in order, are dealt into ``k`` contiguous groups
whose sizes differ by at most one. Every filter then has unit norm (before the scale) — the weight lies on
the oblique manifold — and filters are mutually orthogonal within their group, which is the most a tall
layer can have. A one-column layer (``p = 1``) is never centred (centring would zero it): each filter
becomes its own group, ``±1``.

Note [depthwise centring]: a grouped convolution's groups see disjoint input channels, so orthogonalizing
filters of different groups against each other constrains nothing the layer needs; with ``conv_groups``
(the default) the groups of filters never straddle two convolution groups (each convolution group is split
as above, on its own). A depthwise convolution (one input channel per group) has one or a few filters per
group, each a single kernel: centring it makes every kernel sum to zero, so the layer passes no constant
signal (a constant image gives 0). Such filters are left uncentred unless ``center_depthwise`` asks for it;
orthonormalizing a one-filter group is normalizing it (unit norm, times γ). An ungrouped convolution with
one input channel (the stem of a 1-D ResNet) is centred as upstream centres it: ``center=false`` keeps it.

Note [batched across layers]: a network has hundreds of targeted layers but only a handful of group
shapes ``(m, p)`` (ResNet-110: 16×144, 32×288, 64×576 and three singletons). Orthogonalizing layer by layer
runs every small matrix product once per layer, forward and backward — thousands of small operations a
step, each costing more in dispatch than in arithmetic. With ``batched=True`` (the default) the
parametrization of every targeted layer of a model shares one :class:`BatchedOrthogonalization`: the
first layer whose weight is asked for triggers *one* computation of every layer's weight, in which the
groups of all layers with the same ``(m, p)`` are stacked into one ``(K, m, p)`` batch and orthogonalized
by the same batched function the per-layer form uses (so both give the same weights and gradients; tested
in float64 to 1e-12). Each layer's weight is a view of its class's result; autograd takes the gradient
back through the one batched computation to each layer's own trainable tensor. How often it is computed:

- with autograd recording (training): once per forward. Every layer's weight is handed out once; a layer
  that asks again (a second forward, a layer used twice) or whose tensor changed gets a fresh computation,
  and a backward through the computation retires it (a layer not used in this forward never receives a
  weight whose graph was already freed).
- without (``torch.no_grad()``, ``torch.inference_mode()``: evaluation, ``effective_weights``): once, then
  reused while no layer's tensor changes (its version counter, storage, dtype and device), so an evaluation
  over many batches computes the weights once. Optimizers, ``load_state_dict`` and ``copy_`` all bump the
  version counter; a write through ``.data`` does not (that is what ``.data`` is for) and is not seen:
  after one, call :meth:`BatchedOrthogonalization.invalidate`.

The plan holds no parameter and no buffer (``state_dict`` is unchanged), holds no tensor across a training
step once backward ran, and is dropped from copies (``copy.deepcopy`` gives the copy its own plan over
its own layers); parameters are still updated in place by the optimizer, so wrapping the prepared model in
``DistributedDataParallel`` sees ordinary parameters. ``batched=False`` keeps the per-layer form (the
reference).

Note [compiled orthogonalization]: under ``torch.compile`` every layer computes its own weight (the
per-layer form), whatever ``batched`` says. The plan is Python state keyed by storage pointers, version
counters and object identities, which Dynamo cannot trace: through it a compiled ResNet forward broke into
7 graphs for ONI and 19 for OLM (its eigendecomposition also sets the thread count: Note [eigh threads],
skipped when compiling). Per layer it traces into one graph (``fullgraph=True`` holds for ``oni``, ``olm``
and ``wn``; tests/test_compile.py), and what the plan saves — dispatching thousands of small operations —
is the compiler's business there: it sees the whole step's graph.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from oblique.geometry import filter_matrix, worst_gram_deviation
from oblique.layers import ROWS, Layout, Target
from oblique.methods.base import Hyper, Method, full_precision

__all__ = [
    "BATCHED_HYPER",
    "GROUP_HYPERS",
    "BatchedOrthogonalization",
    "GroupedOrthogonal",
    "GroupedReparamMethod",
    "center",
    "gram",
    "group_sizes",
    "regularized_gram",
]

#: The hyperparameters ONI and OLM share (defaults: one group, centring, scale √2 fixed — upstream's
#: ``ONI_Conv2d``/``OWN_Conv2d`` defaults; upstream's ``ONI_Linear`` uses scale 1 and Torch7 OLM none).
GROUP_HYPERS = (
    Hyper("group_size", 0, "filters per group; 0 = all filters of a layer in one group", minimum=0),
    Hyper("center", True, "subtract every filter's mean before orthogonalizing (upstream default)"),
    Hyper(
        "scale",
        math.sqrt(2.0),
        "per-filter output scale γ (upstream ONI_Conv2d's NScale √2; ONI_Linear uses 1)",
        minimum=0.0,
        maximum=1e6,  # far beyond any use; 1e308 would overflow float32 weights
    ),
    Hyper("learn_scale", False, "make γ a learnable per-filter parameter (upstream adjustScale)"),
    Hyper(
        "conv_groups",
        True,
        "orthogonalize within each group of a grouped or depthwise convolution (its groups see disjoint "
        "inputs) and within each of q, k, v of a packed in_proj_weight; false: all of a layer's filters as "
        "one matrix",
    ),
    Hyper(
        "center_depthwise",
        False,
        "centre the filters of a grouped convolution with one input channel per group (depthwise) too: each "
        "kernel then sums to zero and the layer passes no constant signal (false: left uncentred)",
    ),
)

#: Every method with a batched form (oni, olm, so, srip) declares it; ``false`` is the per-layer reference.
BATCHED_HYPER = Hyper(
    "batched",
    True,
    "one batched computation for all targeted layers of the same shape (false: layer by layer, the reference)",
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


class _Center(torch.autograd.Function):
    """Every row minus its mean (last dimension); the backward is the same projection, one pass (autograd
    would expand and divide the mean's gradient at full size, then subtract)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        return z - z.mean(dim=-1, keepdim=True)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad - grad.mean(dim=-1, keepdim=True)


def center(z: torch.Tensor) -> torch.Tensor:
    """Every row of ``z`` (last dimension) minus its mean: ``Zc = Z − (1/p)·Z 1 1ᵀ``.

    >>> center(torch.tensor([[1.0, 2.0, 6.0]]))
    tensor([[-2., -1.,  3.]])
    """
    return _Center.apply(z)


class _Gram(torch.autograd.Function):
    """``Z ↦ Z Zᵀ`` for a batch ``(k, m, p)``, with the backward ``(Ḡ + Ḡᵀ) Z``: one product, not two."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(z)
        return z @ z.mT  # (k, m, m)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (z,) = ctx.saved_tensors
        return (grad + grad.mT) @ z  # (k, m, p)


def gram(z: torch.Tensor) -> torch.Tensor:
    """``Z Zᵀ`` of a batch ``(k, m, p)``; its backward is one batched product.

    >>> gram(torch.tensor([[[1.0, 2.0], [0.0, 1.0]]]))
    tensor([[[5., 2.],
             [2., 1.]]])
    """
    return _Gram.apply(z)


def regularized_gram(zc: torch.Tensor, eps: float) -> torch.Tensor:
    """``S = Zc Zcᵀ + ε·(tr S / m)·I`` for a batch ``(k, m, p)``: ``(k, m, m)`` (ε relative to the mean
    eigenvalue, so the result does not depend on the weight's scale). Shared by ONI and OLM."""
    s = gram(zc)  # (k, m, m)
    m = s.shape[-1]
    mean_eig = s.diagonal(dim1=-2, dim2=-1).sum(-1).div(m).clamp_min(torch.finfo(s.dtype).tiny)  # (k,)
    eye = torch.eye(m, dtype=s.dtype, device=s.device)
    return s + (eps * mean_eig)[:, None, None] * eye


class GroupedOrthogonal(nn.Module):
    """A parametrization ``W = γ ⊙ orth(centre(Z))`` applied group by group to the filter matrix.

    Subclasses implement :meth:`orthogonalize` on a batch of (centred) groups ``(k, m, p)``. When the layer
    belongs to a :class:`BatchedOrthogonalization` (``batched=True``), :meth:`forward` hands the request
    to it (Note [batched across layers]); otherwise it computes this layer alone (:meth:`per_layer`).

    Args:
        shape: the weight's shape ``(C_out, C_in, *kernel)`` or ``(C_out, C_in)``.
        group_size: requested filters per group (0: all); see Note [tall groups].
        center: subtract each row's mean first (ignored when ``p = 1``).
        scale: initial per-filter output scale γ.
        learn_scale: whether γ is a learnable parameter (shape ``(C_out,)``) or a fixed buffer.
        conv_groups: the rows fall into this many consecutive blocks (a grouped convolution's groups): no
            group of filters straddles two blocks.
    """

    def __init__(
        self,
        shape: torch.Size,
        group_size: int = 0,
        center: bool = True,
        scale: float = math.sqrt(2.0),
        learn_scale: bool = False,
        conv_groups: int = 1,
    ):
        super().__init__()
        n, p = shape[0], math.prod(shape[1:])
        self.center = center and p > 1
        self.sizes = group_sizes(n // conv_groups, p, group_size, self.center) * conv_groups
        gamma = torch.full((n,), float(scale))
        if learn_scale:
            self.scale = nn.Parameter(gamma)
        else:
            self.register_buffer("scale", gamma)
        self.shared: BatchedOrthogonalization | None = None  # set by GroupedReparamMethod.prepare

    def orthogonalize(
        self, zc: torch.Tensor, row_scale: torch.Tensor | None = None
    ) -> torch.Tensor:  # pragma: no cover - abstract
        """``(k, m, p) → (k, m, p)``: rows of each group made (approximately) orthonormal, then multiplied
        by ``row_scale`` (``(k, m, 1)``) when given."""
        raise NotImplementedError

    #: how the weight holds its filters (:mod:`oblique.layers`); set by ``prepare`` for other layouts
    layout: Layout = ROWS

    def per_layer(self, weight: torch.Tensor) -> torch.Tensor:
        """This layer's effective weight computed on its own (the reference form), in the weight's shape."""
        z = self.layout.filters(weight)  # (n, p)
        if self.center:
            z = center(z)  # (n, p), every row ⟂ 1
        gamma = self.scale.to(z.dtype)  # (n,)
        out, start = [], 0
        for count, size in _batches(self.sizes):
            rows = slice(start, start + count * size)
            block = z[rows].reshape(count, size, -1)  # (k, m, p)
            out.append(self.orthogonalize(block, gamma[rows].view(count, size, 1)).reshape(count * size, -1))
            start += count * size
        return self.layout.weight(out[0] if len(out) == 1 else torch.cat(out, dim=0), weight.shape)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        with full_precision():  # under a caller's autocast too: the weight in its own dtype (float32)
            shared = self.shared
            if shared is not None and not torch.compiler.is_compiling() and shared.owns(self, weight):
                return shared.weight(self)
            return self.per_layer(weight)

    def group_flops(self, p: int, per_group: Callable[[int, int], float]) -> float:
        """Sum ``per_group(m, p)`` over this layer's groups."""
        return float(sum(per_group(m, p) for m in self.sizes))


class _Computed:
    """One computation of every layer's weight: the weights, each layer's key at the time, who took one."""

    __slots__ = ("weights", "keys", "taken", "left", "inference", "token")

    def __init__(self, weights: list[torch.Tensor], keys: list[tuple], inference: bool, taken: list[bool]):
        self.weights, self.keys, self.inference, self.taken = weights, keys, inference, taken
        self.left = len(weights)
        self.token = object()  # what a backward hook recognizes it by (the hook holds no tensor: no cycle)


class _Gather(torch.autograd.Function):
    """``torch.cat`` of blocks of several layers' tensors whose backward gives a gradient only to the layers
    whose weight was handed out (``taken``, read when backward runs): a layer that a forward did not use
    keeps ``.grad`` None, as in the per-layer form, instead of receiving zeros."""

    @staticmethod
    def forward(ctx, taken: list[bool], owners: list[int], *blocks: torch.Tensor) -> torch.Tensor:
        ctx.taken, ctx.owners, ctx.sizes = taken, owners, [b.shape[0] for b in blocks]
        return torch.cat(blocks)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        parts = grad.split(ctx.sizes)
        return (None, None, *(g if ctx.taken[i] else None for g, i in zip(parts, ctx.owners, strict=True)))


def _retire(plan_ref: weakref.ref, token: object) -> Callable[[torch.Tensor], None]:
    def hook(_grad: torch.Tensor) -> None:  # backward ran through this computation: its graph is spent
        plan = plan_ref()
        if plan is not None and plan._grad is not None and plan._grad.token is token:
            plan._grad = None

    return hook


class BatchedOrthogonalization:
    """The targeted layers of one model, orthogonalized together (Note [batched across layers]).

    Args:
        lists: ``module.parametrizations.weight`` of every targeted layer, in model order; each holds one
            :class:`GroupedOrthogonal` and the trainable ``original``. All were built by one method (the
            same orthogonalization and hyperparameters).
    """

    def __init__(self, lists: Sequence[nn.Module]):
        self.lists = list(lists)
        # the groups of every layer: [(layer, first row, number of groups, rows per group, columns), …]
        self.runs: list[tuple[int, int, int, int, int]] = []
        for i, pl in enumerate(self.lists):
            row, p = 0, math.prod(pl.original.shape[1:])
            for count, size in _batches(pl[0].sizes):
                self.runs.append((i, row, count, size, p))
                row += count * size
        self._position: dict[int, int] | None = None  # id(parametrization) -> layer index, built on use
        self._grad: _Computed | None = None  # with autograd: each layer's weight handed out once
        self._nograd: _Computed | None = None  # without: reused while the weights are unchanged

    def __getstate__(self) -> dict[str, Any]:
        # computed weights (and their graphs) never travel, nor object ids: a copy (deepcopy of the
        # model) computes its own over its own layers
        return {**self.__dict__, "_position": None, "_grad": None, "_nograd": None}

    def invalidate(self) -> None:
        """Forget every computed weight (after changing a layer's tensor through ``.data``, which the version
        counters do not see); the next request computes afresh."""
        self._grad = self._nograd = None

    def _index(self, par: nn.Module) -> int | None:
        if self._position is None:
            self._position = {id(pl[0]): i for i, pl in enumerate(self.lists)}
        return self._position.get(id(par))

    def owns(self, par: nn.Module, weight: torch.Tensor) -> bool:
        """Whether ``weight`` is the trainable tensor of the layer of ``par`` in this plan (a call with any
        other tensor, e.g. ``gradcheck``'s, is computed on its own)."""
        i = self._index(par)
        return i is not None and self.lists[i].original is weight

    def _key(self, i: int) -> tuple:
        """What a layer's weight depends on: its tensor and scale (storage, version, dtype, device)."""
        pl = self.lists[i]
        z, g = pl.original, pl[0].scale
        return (z.data_ptr(), z._version, z.dtype, z.device, g.data_ptr(), g._version)

    def weight(self, par: nn.Module) -> torch.Tensor:
        """The effective weight of ``par``'s layer, from the current computation or a new one."""
        i = self._index(par)
        if torch.is_grad_enabled():
            c = self._grad
            if c is None or c.taken[i] or c.keys[i] != self._key(i):
                c = self._grad = self._compute(inference=False)
                self._nograd = None  # training: the evaluation cache would only hold memory
            c.taken[i] = True
            c.left -= 1
            if c.left == 0:  # every layer has its weight: nothing left to hand out
                self._grad = None
            return c.weights[i]
        inference = torch.is_inference_mode_enabled()
        c = self._nograd
        if c is None or c.inference != inference or c.keys[i] != self._key(i):
            c = self._nograd = self._compute(inference=inference)
        return c.weights[i]

    @staticmethod
    def _gather(
        blocks: list[torch.Tensor], members: list[tuple], taken: list[bool], track: bool
    ) -> torch.Tensor:
        """The blocks of one class as one tensor (:class:`_Gather` when autograd records)."""
        if len(blocks) == 1:  # one layer: a gradient reaches it only if its weight was used
            return blocks[0]
        if track and any(b.requires_grad for b in blocks):
            return _Gather.apply(taken, [r[0] for r in members], *blocks)
        return torch.cat(blocks)

    def _compute(self, inference: bool) -> _Computed:
        """Every layer's weight: one batched orthogonalization per class of groups ``(m, p)`` (and dtype,
        device), each layer's weight reassembled from views of its classes' results."""
        lists = self.lists
        keys = [self._key(i) for i in range(len(lists))]
        taken = [False] * len(lists)  # shared with _Computed: who was handed a weight (read by backward)
        track = torch.is_grad_enabled()
        classes: dict[tuple, list[tuple[int, int, int, int, int]]] = {}
        for run in self.runs:
            i, _, _, size, p = run
            z = lists[i].original
            classes.setdefault((size, p, lists[i][0].center, z.dtype, z.device), []).append(run)
        pieces: list[list[tuple[int, torch.Tensor]]] = [[] for _ in lists]
        outputs = []
        for (m, p, centred, _, _), members in classes.items():
            blocks, gammas = [], []
            for i, row, count, _, _ in members:
                pl = lists[i]
                z, g = pl.original, pl[0].scale  # (n, …), (n,)
                if count * m == z.shape[0]:  # the whole layer (one op: the weight seen as (count, m, p))
                    blocks.append(z.reshape(count, m, p))
                else:  # a layer of groups of two sizes: this run's rows only
                    rows = slice(row, row + count * m)
                    blocks.append(filter_matrix(z)[rows].reshape(count, m, p))
                    g = g[rows]
                gammas.append(g)
            z, gamma = (
                self._gather(blocks, members, taken, track),
                self._gather(gammas, members, taken, track),
            )
            gamma = gamma.to(z.dtype).view(-1, m, 1)  # γ of every row, (K, m, 1)
            if centred:
                z = center(z)  # every row ⟂ 1
            w = lists[members[0][0]][0].orthogonalize(z, gamma)  # (K, m, p)
            outputs.append(w)
            for (i, row, _, _, _), wi in zip(members, w.split([r[2] for r in members]), strict=True):
                pieces[i].append((row, wi))  # (count, m, p), a view
        weights = []
        for pl, ps in zip(lists, pieces, strict=True):
            shape = pl.original.shape
            if len(ps) == 1:  # the whole layer: a view of its class's result
                weights.append(ps[0][1].view(shape))
            else:
                ps.sort(key=lambda t: t[0])
                weights.append(torch.cat([x.reshape(-1, x.shape[-1]) for _, x in ps]).view(shape))
        computed = _Computed(weights, keys, inference, taken)
        ref = weakref.ref(self)
        for w in outputs:  # the first gradient that reaches the computation retires it
            if w.requires_grad:
                w.register_hook(_retire(ref, computed.token))
        return computed


def independent_blocks(t: Target) -> int:
    """How many independent matrices target ``t``'s filter matrix stacks: a grouped (or transposed grouped)
    convolution's groups, which see disjoint input channels; ``nn.MultiheadAttention``'s packed q, k and v
    (``in_proj_weight``); else 1."""
    if t.param == "in_proj_weight":
        return 3
    return getattr(t.module, "groups", 1) if t.kind in ("conv", "conv_transpose") else 1


class GroupedReparamMethod(Method):
    """Shared ``prepare`` / ``target_weights`` / ``analytic_flops`` of ``oni`` and ``olm``.

    Subclasses implement :meth:`build` (the parametrization for one weight, a :class:`GroupedOrthogonal`)
    and :meth:`group_flops` (forward flops of one group).
    With the ``batched`` hyperparameter, ``prepare`` puts every targeted layer of the model into one
    :class:`BatchedOrthogonalization` (Note [batched across layers]).
    """

    kind = "reparam"
    manifold = "stiefel"
    replaces_weights = True

    def build(self, weight: torch.Tensor, **groups: Any) -> GroupedOrthogonal:  # pragma: no cover - abstract
        """The parametrization of one filter matrix ``weight`` (``(n, p)``); ``groups``: ``center`` and
        ``conv_groups`` for this layer (:meth:`layer_groups`)."""
        raise NotImplementedError

    def layer_groups(self, t: Target) -> dict[str, Any]:
        """``center`` and ``conv_groups`` for target ``t``: a grouped convolution is orthogonalized within
        its groups (``conv_groups``), and ``nn.MultiheadAttention``'s packed ``in_proj_weight`` within each of
        q, k and v; a depthwise convolution (one input channel per group) is centred only with
        ``center_depthwise`` (Note [depthwise centring])."""
        groups = independent_blocks(t)
        depthwise = (
            t.kind in ("conv", "conv_transpose") and groups > 1 and t.module.in_channels // groups == 1
        )
        return {
            "center": self.hp["center"] and (not depthwise or self.hp["center_depthwise"]),
            "conv_groups": groups if self.hp["conv_groups"] else 1,
        }

    def group_flops(self, m: int, p: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare(self, model: nn.Module) -> nn.Module:
        found = self.target_modules(model)
        for t in found:
            with torch.no_grad():
                p = self.build(t.filters(), **self.layer_groups(t)).to(device=t.weight.device)  # on F (n, p)
            p.layout = t.layout
            parametrize.register_parametrization(t.module, t.param, p)
        rows = [t for t in found if t.layout == ROWS]  # other layouts compute on their own (per_layer)
        if self.hp["batched"] and rows:
            plan = BatchedOrthogonalization([t.parametrizations for t in rows])
            for t in rows:
                t.parametrizations[0].shared = plan
        return model

    promises = "orthogonal"

    def check(self, model: nn.Module) -> tuple[bool, str]:
        """Whether every group's effective rows, divided by their scale γ (the ``scale`` hyperparameter, or the
        learned γ with ``learn_scale``), are orthonormal now:
        ``max |(W_g W_gᵀ)/(γγᵀ) − I|`` within ``1000·ε`` of the dtype (1.2e-4 for float32). ONI's
        Newton iteration is approximate: at few iterations on small groups it is not within (the result
        says by how much). With ``scale=1`` (γ = 1) orthonormal rows are also on the oblique manifold."""
        blocks, tol = [], 0.0
        with torch.no_grad():
            for t, par in zip(self.target_modules(model), self.parametrizations(model), strict=True):
                gamma = par.scale if self.hp["learn_scale"] else torch.full_like(par.scale, self.hp["scale"])
                f = t.filters().double() / gamma.double().unsqueeze(1)  # the promised scale: γ learned, or hp
                tol = max(tol, 1000 * torch.finfo(t.weight.dtype).eps)
                blocks += [(t.name, g) for g in f.split(par.sizes)]  # (m, p) each, m ≤ p
            worst, where = worst_gram_deviation(blocks)
        if not math.isfinite(worst):
            return False, f"{self.name}: {where} has non-finite weights"
        ok = worst <= tol
        return ok, (
            f"{self.name}: rows per group {'orthonormal' if ok else 'not orthonormal'} (times γ): "
            f"max |W Wᵀ/γγᵀ − I| = {worst:.1e} at {where} (tolerance {tol:.1e})"
        )

    def target_weights(self, model: nn.Module) -> list[torch.Tensor]:
        """The unconstrained ``Z`` of every targeted layer (``parametrizations.weight.original``)."""
        return [t.parametrizations.original for t in self.target_modules(model)]

    def parametrizations(self, model: nn.Module) -> list[GroupedOrthogonal]:
        """The parametrization module of every targeted layer (holds the groups and the scale γ)."""
        return [t.parametrizations[0] for t in self.target_modules(model)]

    def analytic_flops(self, model: nn.Module) -> float:
        # forward per group from `group_flops`, backward ≈ twice the forward (one pass per matmul operand)
        total = 0.0
        for z, par in zip(self.target_weights(model), self.parametrizations(model), strict=True):
            p = par.layout.filters(z).shape[1]
            total += 3.0 * par.group_flops(p, self.group_flops) + 4.0 * z.numel()  # + centring and scale
        return total
