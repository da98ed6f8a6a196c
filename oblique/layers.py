"""Layer kinds: which parameters of which modules a method acts on, and how each is read as filters.

A *layer kind* (:class:`LayerKind`) says which modules it covers, which of their parameters carry filters,
and the *layout* (:class:`Layout`) of those filters in the parameter: how its filter matrix ``F`` —
``(n, p)``, one row per output filter (neuron) — is read out of the tensor and written back into it. Every
method, the drift metrics, the projection and the bench go through the layout, so a method is right on
every kind. :data:`LAYER_KINDS` is the one table; :func:`register_layer_kind` adds a user's own.

The built-in kinds (a module is claimed by the first kind that matches it; a registered kind comes before
the built-in ones):

===================  ====================================================  ==================================
kind                 modules and parameters                                filter layout
===================  ====================================================  ==================================
``conv``             ``Conv1d/2d/3d`` ``weight`` (also grouped, depthwise)  rows of ``W.reshape(C_out, -1)``
``conv_transpose``   ``ConvTranspose1d/2d/3d`` ``weight``                    per group, the output filters
                                                                           along dim 1 (:class:`Transposed`)
``linear``           ``nn.Linear`` ``weight`` (``MultiheadAttention``'s     rows; columns for ``Conv1D``
                     ``out_proj`` too); ``transformers``' ``Conv1D``        (weight ``(in, out)``)
``attention``        ``nn.MultiheadAttention`` ``in_proj_weight`` (or        rows (the q, k and v neurons)
                     ``q/k/v_proj_weight``)
``embedding``        ``nn.Embedding`` ``weight``; opt-in (nGPT)             rows (one per token)
===================  ====================================================  ==================================

``targets`` names kinds joined by ``+`` (``conv+linear``); ``all`` is every kind but the opt-in ones
(``embedding``). ``conv`` and ``conv+linear`` keep the meaning they always had: the same layers, the same
record names. A parameter's record name is its module's qualified name for ``weight`` (``layer1.0.conv1``)
and ``module.param`` otherwise (``blocks.0.attn.in_proj_weight``).

Note [shared weights]: a parameter held by two modules (an LM head tied to the embedding) is one weight.
It is found by identity and targeted once, under the first name that targets it; the other holders are
listed in :attr:`Target.tied`. A method that replaces the parameter (a parametrization, a manifold
parameter) would break the tie, so it refuses one (:attr:`oblique.methods.base.Method.replaces_weights`).
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from oblique.errors import ObliqueError, ObliqueWarning
from oblique.options import OptionError

__all__ = [
    "ALL",
    "LAYER_KINDS",
    "CensusRow",
    "Columns",
    "LayerKind",
    "Layout",
    "Rows",
    "Target",
    "TargetsError",
    "TargetsWarning",
    "Transposed",
    "census",
    "parse_targets",
    "register_layer_kind",
    "resolve_targets",
    "targets_expected",
]

#: the ``targets`` word for every kind that is not opt-in
ALL = "all"


class TargetsError(ObliqueError, ValueError):
    """A model a method cannot act on as asked: nothing targeted, a lazy layer not yet initialized, a
    weight another parametrization or hook computes, a tie the method cannot keep. One line, naming the
    layer and what to do."""


class TargetsWarning(ObliqueWarning):
    """Weight-bearing parameters of a known kind that the chosen targets leave out."""


# ---------------------------------------------------------------------------------------------- layouts
class Layout:
    """How a parameter holds its filters: :meth:`filters` reads the filter matrix ``(n, p)`` (differentiable,
    a view where the layout allows), :meth:`weight` writes one back into the parameter's shape.

    :attr:`filter_dim` is the dimension of the parameter that indexes the filters when each filter is all
    of the parameter's entries with that index (rows: 0; columns: 1), else None. The fused forms (Norm
    Loss's closed form) use it to scale whole filters in place."""

    filter_dim: int | None = 0

    def filters(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def weight(self, f: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Rows(Layout):
    """One filter per index of dim 0: ``F = W.reshape(C_out, -1)`` (convolutions, linear layers)."""

    filter_dim = 0

    def filters(self, w: torch.Tensor) -> torch.Tensor:
        if w.dim() < 2:
            raise ValueError(f"expected a weight with at least 2 dimensions; got shape {tuple(w.shape)}")
        return w.reshape(w.shape[0], -1)  # (C_out, C_in·prod(kernel))

    def weight(self, f: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        return f.reshape(shape)


@dataclass(frozen=True)
class Columns(Layout):
    """One filter per column of a 2-D ``(in, out)`` weight: ``F = Wᵀ`` (``transformers``' ``Conv1D``)."""

    filter_dim = 1

    def filters(self, w: torch.Tensor) -> torch.Tensor:
        if w.dim() != 2:
            raise ValueError(f"expected a 2-D (in, out) weight; got shape {tuple(w.shape)}")
        return w.T  # (out, in)

    def weight(self, f: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        return f.T.reshape(shape)


@dataclass(frozen=True)
class Transposed(Layout):
    """A transposed convolution's weight ``(C_in, C_out/g, *kernel)``: output channel ``o = j + g_i·C_out/g``
    of group ``g_i`` is computed from the group's ``C_in/g`` input channels through
    ``W[g_i·C_in/g : (g_i+1)·C_in/g, j]``, so its filter is that slice, flattened:
    ``F = W.reshape(g, C_in/g, C_out/g, K).transpose(1, 2).reshape(C_out, C_in/g·K)``."""

    groups: int = 1

    @property
    def filter_dim(self) -> int | None:  # type: ignore[override]
        return 1 if self.groups == 1 else None

    def filters(self, w: torch.Tensor) -> torch.Tensor:
        c_in, c_out_g = w.shape[0], w.shape[1]
        g = self.groups
        blocks = w.reshape(g, c_in // g, c_out_g, -1).transpose(1, 2)  # (g, C_out/g, C_in/g, K)
        return blocks.reshape(g * c_out_g, -1)  # (C_out, C_in/g·K)

    def weight(self, f: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        c_in, c_out_g = shape[0], shape[1]
        g = self.groups
        blocks = f.reshape(g, c_out_g, c_in // g, -1).transpose(1, 2)  # (g, C_in/g, C_out/g, K)
        return blocks.reshape(shape)


ROWS = Rows()


# ---------------------------------------------------------------------------------------------- kinds
@dataclass(frozen=True)
class LayerKind:
    """One kind of layer (the module docstring's table).

    Attributes:
        name: the word ``targets`` uses (``conv_transpose``).
        matches: whether a module is of this kind.
        params: the names of the module's parameters that carry filters (``("weight",)``), or a function of
            the module giving them.
        layout: the filters' :class:`Layout`, or a function ``(module, param) -> Layout``.
        opt_in: left out of ``all`` (``embedding``): only targeted when named.
        description: one line, for ``oblique targets``.
    """

    name: str
    matches: Callable[[nn.Module], bool]
    params: tuple[str, ...] | Callable[[nn.Module], tuple[str, ...]] = ("weight",)
    layout: Layout | Callable[[nn.Module, str], Layout] = ROWS
    opt_in: bool = False
    description: str = ""

    def params_of(self, module: nn.Module) -> tuple[str, ...]:
        return self.params(module) if callable(self.params) else self.params

    def layout_of(self, module: nn.Module, param: str) -> Layout:
        return self.layout if isinstance(self.layout, Layout) else self.layout(module, param)


def _is_hf_conv1d(module: nn.Module) -> bool:
    """``transformers.pytorch_utils.Conv1D``, recognized without importing ``transformers``."""
    cls = type(module)
    return any(c.__name__ == "Conv1D" and c.__module__.startswith("transformers") for c in cls.__mro__)


def _mha_params(module: nn.Module) -> tuple[str, ...]:
    if getattr(module, "_qkv_same_embed_dim", True):
        return ("in_proj_weight",)
    return ("q_proj_weight", "k_proj_weight", "v_proj_weight")


_BUILT_IN = (
    LayerKind(
        "conv",
        lambda m: isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d),
        description="Conv1d/2d/3d weight (grouped and depthwise too): rows of W.reshape(C_out, -1)",
    ),
    LayerKind(
        "conv_transpose",
        lambda m: isinstance(m, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d),
        layout=lambda m, _: Transposed(m.groups),
        description="ConvTranspose1d/2d/3d weight: per group, the output filters along dim 1",
    ),
    LayerKind(
        "linear",
        lambda m: isinstance(m, nn.Linear) or _is_hf_conv1d(m),
        layout=lambda m, _: Columns() if _is_hf_conv1d(m) else ROWS,
        description="nn.Linear weight (rows; MultiheadAttention's out_proj too); transformers' Conv1D "
        "(columns of its (in, out) weight)",
    ),
    LayerKind(
        "attention",
        lambda m: isinstance(m, nn.MultiheadAttention),
        params=_mha_params,
        description="nn.MultiheadAttention in_proj_weight (or q/k/v_proj_weight): rows, the q, k, v neurons",
    ),
    LayerKind(
        "embedding",
        lambda m: isinstance(m, nn.Embedding),
        opt_in=True,
        description="nn.Embedding weight, one row per token; opt-in (name it: +embedding)",
    ),
)

#: The layer kinds by name, in the order they claim modules (registered kinds first, then the built-in ones).
LAYER_KINDS: dict[str, LayerKind] = {k.name: k for k in _BUILT_IN}
_BUILT_IN_ORDER = tuple(k.name for k in _BUILT_IN)


def register_layer_kind(
    name: str,
    matches: type | tuple[type, ...] | Callable[[nn.Module], bool],
    params: tuple[str, ...] | Callable[[nn.Module], tuple[str, ...]] = ("weight",),
    layout: Layout | Callable[[nn.Module, str], Layout] = ROWS,
    *,
    opt_in: bool = False,
    description: str = "",
) -> LayerKind:
    """Register a layer kind of your own; ``targets`` can then name it (``targets="conv+mykind"``).

    Args:
        name: a new kind's name: letters, digits and ``_`` (not ``all``, not a built-in kind).
        matches: a module class (or a tuple of them), or a function ``module -> bool``.
        params: the parameters that carry filters.
        layout: how they hold them: :class:`Rows` (the default), :class:`Columns`, :class:`Transposed`, a
            :class:`Layout` of your own, or a function ``(module, param) -> Layout``.
        opt_in: leave it out of ``all``.

    A registered kind claims its modules before the built-in kinds do (a subclass of ``nn.Linear`` can get
    its own kind).

    >>> class Scaled(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.kernel = nn.Parameter(torch.randn(4, 3))
    >>> kind = register_layer_kind("scaled_doc", Scaled, params=("kernel",))
    >>> [t.name for t in resolve_targets(nn.Sequential(Scaled()), "scaled_doc")]
    ['0.kernel']
    >>> _ = LAYER_KINDS.pop("scaled_doc")
    """
    if not name.replace("_", "").isalnum() or name == ALL or name in _BUILT_IN_ORDER:
        raise ValueError(f"a layer kind's name must be a new word of letters, digits and _; got {name!r}")
    test = matches if callable(matches) and not isinstance(matches, type | tuple) else None
    if test is None:
        classes = matches

        def test(m: nn.Module) -> bool:
            return isinstance(m, classes)

    kind = LayerKind(name, test, params, layout, opt_in, description or f"registered kind {name}")
    others = {k: v for k, v in LAYER_KINDS.items() if k != name}
    LAYER_KINDS.clear()
    LAYER_KINDS.update({name: kind, **others})
    return kind


def targets_expected() -> str:
    """What a valid ``targets`` value is, in words (the one message of a bad value)."""
    return f"layer kinds joined by + (from {', '.join(_ordered(LAYER_KINDS))}), or {ALL}"


def _ordered(names: Iterable[str]) -> list[str]:
    """Kind names in a fixed order: the built-in ones first, in their order, then registered ones by name."""
    names = set(names)
    return [k for k in _BUILT_IN_ORDER if k in names] + sorted(names - set(_BUILT_IN_ORDER))


def parse_targets(targets: str) -> str:
    """The canonical ``targets`` string: kinds in the fixed order, each once (``linear+conv`` →
    ``conv+linear``); ``all`` and the opt-in kinds named beside it kept (``all+embedding``).

    Raises:
        OptionError: not text, empty, or an unknown kind (naming ``targets``).

    >>> parse_targets("linear+conv"), parse_targets("all"), parse_targets("embedding+all")
    ('conv+linear', 'all', 'all+embedding')
    """
    words = targets.split("+") if isinstance(targets, str) else None
    if not words or any(w not in LAYER_KINDS and w != ALL for w in words):
        raise OptionError(f"targets must be {targets_expected()}; got {targets!r}", settings=("targets",))
    kinds = _ordered(w for w in words if w != ALL)
    if ALL in words:
        return "+".join([ALL, *(k for k in kinds if LAYER_KINDS[k].opt_in)])
    return "+".join(kinds)


def _kinds_of(targets: str) -> set[str]:
    words = set(parse_targets(targets).split("+"))
    if ALL in words:
        words |= {k for k, v in LAYER_KINDS.items() if not v.opt_in}
    return words - {ALL}


# ---------------------------------------------------------------------------------------------- targets
Exclude = Sequence[str] | Callable[[str, nn.Module], bool] | None


@dataclass(frozen=True, eq=False)
class Target:
    """One targeted parameter: ``getattr(module, param)`` read through ``layout``.

    Attributes:
        name: its record name (the module docstring): what drift, records and ``config.json`` call it.
        module_name: the qualified name of the module holding it.
        module: that module.
        param: the parameter's attribute name (``weight``, ``in_proj_weight``).
        kind: its layer kind's name.
        layout: how it holds its filters.
        tied: the other ``module.param`` names holding the same tensor (Note [shared weights]).
    """

    name: str
    module_name: str
    module: nn.Module
    param: str
    kind: str
    layout: Layout
    tied: tuple[str, ...] = field(default=())

    @property
    def weight(self) -> torch.Tensor:
        """The weight the forward pass uses (a parametrization's value when the parameter has one)."""
        return getattr(self.module, self.param)

    def filters(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The filter matrix ``(n, p)`` of :attr:`weight` (or of ``weight``, a tensor of its shape)."""
        return self.layout.filters(self.weight if weight is None else weight)

    def is_parametrized(self) -> bool:
        return parametrize.is_parametrized(self.module, self.param)

    @property
    def parametrizations(self) -> nn.ModuleList:
        """The parameter's ``torch.nn.utils.parametrize`` list (its parametrizations and ``original``)."""
        return self.module.parametrizations[self.param]


def _record_name(module_name: str, param: str) -> str:
    if param == "weight":
        return module_name
    return f"{module_name}.{param}" if module_name else param


def _raw(module: nn.Module, param: str) -> torch.Tensor | None:
    """The tensor that holds ``module.param``'s value: the parameter itself, or a parametrization's
    original (None: computed by a hook, e.g. the deprecated ``torch.nn.utils.weight_norm``)."""
    if parametrize.is_parametrized(module, param):
        plist = module.parametrizations[param]
        return plist.original if hasattr(plist, "original") else plist.original0
    return module._parameters.get(param)


def _kind_of(module: nn.Module) -> LayerKind | None:
    for kind in LAYER_KINDS.values():
        if kind.matches(module):
            return kind
    return None


@dataclass(frozen=True)
class CensusRow:
    """One weight-bearing parameter of a model, targeted or not, and why (``oblique targets``)."""

    name: str  # record name
    kind: str  # layer kind, or "" for a parameter of no known kind
    shape: tuple[int, ...]
    layout: str
    targeted: bool
    why: str


def census(model: nn.Module, targets: str = "conv", exclude: Exclude = None) -> list[CensusRow]:
    """Every weight-bearing parameter of ``model`` (of a known kind, or any other parameter of 2 or more
    dimensions), in model order: targeted by ``targets`` and ``exclude`` or skipped, and why."""
    return _survey(model, targets, exclude, shapes=True)[1]


def resolve_targets(
    model: nn.Module, targets: str = "conv", exclude: Exclude = None, *, check: bool = False
) -> list[Target]:
    """The parameters ``targets`` selects in ``model``, minus ``exclude``, in model order, each once.

    Args:
        model: the network.
        targets: ``+``-joined layer kinds (:func:`parse_targets`).
        exclude: glob patterns matched against module names and record names (``fc``, ``layer1.*``,
            ``*.attn.in_proj_weight``), or a function ``(name, module) -> bool`` (module name); True drops.
        check: what ``prepare`` does: refuse (:class:`TargetsError`) a model with nothing targeted, naming the
            kinds that would fit; warn (:class:`TargetsWarning`) of parameters of a known kind that the
            targets leave out (not those ``exclude`` drops, not opt-in kinds, not the linear layers of
            ``targets=conv``: Note [left out by design]).

    Raises:
        TargetsError: a targeted layer that is lazy and not yet initialized (always); with ``check``,
            nothing targeted.
    """
    found, rows = _survey(model, targets, exclude)
    if check:
        if not found:
            present = _ordered({r.kind for r in rows if r.kind})
            hint = (
                f"layers of kind {', '.join(present)} would fit"
                if present
                else "it has no layer of a known kind"
            )
            raise TargetsError(
                f"targets={targets} selects no layer of this {type(model).__name__}: {hint} (--targets "
                f"{'+'.join(present) or '...'}; 'oblique targets MODEL' lists them; register_layer_kind adds "
                f"a kind)"
            )
        if exclude is not None and not callable(exclude):
            names = [n for n, _ in model.named_modules()] + [r.name for r in rows]
            idle = [g for g in exclude if not any(fnmatch.fnmatchcase(n, g) for n in names)]
            if idle:
                warnings.warn(
                    f"exclude {', '.join(map(repr, idle))} matches no layer of this {type(model).__name__} "
                    f"('oblique targets MODEL' lists the names)",
                    TargetsWarning,
                    stacklevel=3,
                )
        left = [r for r in rows if r.kind and not r.targeted and r.why.startswith("kind ")]
        left = [r for r in left if not LAYER_KINDS[r.kind].opt_in and not _by_design(r.kind, targets)]
        if left:
            kinds = _ordered({r.kind for r in left})
            names = ", ".join(r.name or "(the model)" for r in left[:3]) + (" ..." if len(left) > 3 else "")
            warnings.warn(
                f"targets={targets} leaves out {len(left)} weight(s) of kind {'+'.join(kinds)} ({names}): add "
                f"+{'+'.join(kinds)} to target them, or exclude them by name to say so",
                TargetsWarning,
                stacklevel=3,
            )
    return found


def _by_design(kind: str, targets: str) -> bool:
    """Note [left out by design]: ``targets=conv`` leaves a convolutional network's linear layers (its
    classifier) out on purpose — the published setting of Norm Loss and of every baseline here — so that is
    not warned of; every other left-out parameter of a known kind is."""
    return kind == "linear" and "conv" in _kinds_of(targets)


def _survey(
    model: nn.Module, targets: str, exclude: Exclude, shapes: bool = False
) -> tuple[list[Target], list[CensusRow]]:
    """The targets and the census rows; ``shapes``: the census's shapes of parametrized weights, computed
    (otherwise left out: resolving targets never computes a parametrization)."""
    kinds = _kinds_of(targets)
    holders: dict[int, list[tuple[int, str]]] = {}  # id(tensor) -> (id(module), "module.param") holding it
    for mname, module in model.named_modules(remove_duplicate=False):
        for pname, p in module._parameters.items():
            if p is not None:
                holders.setdefault(id(p), []).append((id(module), _record_name(mname, pname)))
        if parametrize.is_parametrized(module):
            for pname, plist in module.parametrizations.items():
                for o in plist.parameters(recurse=False):
                    holders.setdefault(id(o), []).append((id(module), _record_name(mname, pname)))
    found: list[Target] = []
    rows: list[CensusRow] = []
    seen: dict[int, str] = {}  # id(tensor) -> the record name it was first targeted under
    covered: set[int] = set()
    for mname, module in model.named_modules():
        kind = _kind_of(module)
        if kind is None:
            continue
        for param in kind.params_of(module):
            raw = _raw(module, param)
            if raw is None and not hasattr(module, param):
                continue
            covered.add(id(raw))
            name = _record_name(mname, param)
            parametrized = parametrize.is_parametrized(module, param)
            value = raw if raw is not None and not parametrized else None
            if value is None and (shapes or raw is None):
                with torch.no_grad():
                    value = getattr(module, param)
            if isinstance(value, nn.parameter.UninitializedParameter) or isinstance(
                raw, nn.parameter.UninitializedParameter
            ):
                if kind.name in kinds:
                    raise TargetsError(
                        f"layer {mname or type(module).__name__} ({type(module).__name__}) is lazy and not yet "
                        f"initialized: run one forward pass on an example batch before prepare"
                    )
                continue
            layout = kind.layout_of(module, param)
            shape = tuple(value.shape) if value is not None else ()
            why = ""
            if raw is not None and id(raw) in seen:
                why = f"tied to {seen[id(raw)]} (one weight, counted once)"
            elif _excluded(exclude, mname, name, module):
                why = "excluded"
            elif kind.name not in kinds:
                why = f"kind {kind.name} not in targets"
            if not why and raw is not None:
                seen[id(raw)] = name
            if not why:
                others = tuple(dict.fromkeys(h for m, h in holders.get(id(raw), ()) if m != id(module)))
                found.append(Target(name, mname, module, param, kind.name, layout, others))
            rows.append(
                CensusRow(name, kind.name, shape, type(layout).__name__.lower(), not why, why or "targeted")
            )
    for pname, p in model.named_parameters():
        if p.dim() >= 2 and id(p) not in covered and not isinstance(p, nn.parameter.UninitializedParameter):
            rows.append(
                CensusRow(pname, "", tuple(p.shape), "", False, "no known layer kind (register_layer_kind)")
            )
    return found, rows


def _excluded(exclude: Exclude, module_name: str, name: str, module: nn.Module) -> bool:
    if exclude is None:
        return False
    if callable(exclude):
        return bool(exclude(module_name, module))
    return any(fnmatch.fnmatchcase(module_name, g) or fnmatch.fnmatchcase(name, g) for g in exclude)
