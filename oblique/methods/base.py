"""The one interface every method speaks (docs/DESIGN.md, "One interface").

A method is built by ``oblique.get_method(name, strength=..., targets=..., **hyperparameters)`` and is
used by the trainer, the bench and the study runner in exactly this order::

    model = method.prepare(model)                 # parametrize / turn weights into manifold parameters
    opt = method.make_optimizer(model, opt_cfg)   # Riemannian methods bring their own
    for x, y in batches:
        loss = criterion(model(x), y)
        pen = method.penalty(model)               # soft methods: a scalar, already times the strength
        (loss + pen).backward()                   # the trainer may backward `pen` separately to time it
        method.before_step(model)                 # closed-form gradients added straight to .grad
        opt.step()
        method.after_step(model, step)            # projections
    method.effective_filters(model)               # what the forward pass computes with: drift is read here

Subclasses set the class attributes and override only the hooks they need. A method's hyperparameters
are declared once, as a tuple of :class:`Hyper`; the constructor validates them, ``config()`` records them
resolved, and ``oblique methods`` lists them.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from oblique.errors import ObliqueError
from oblique.layers import ROWS, Layout, Target, TargetsError, parse_targets, resolve_targets
from oblique.methods.muon import MUON_LR, MUON_MOMENTUM, FilterMuon, filter_muon_defaults, muon_class
from oblique.options import Option, OptionError

__all__ = [
    "COST_MEASURES",
    "MethodUseError",
    "full_precision",
    "KINDS",
    "MANIFOLDS",
    "CostTarget",
    "Hyper",
    "Method",
    "OPTIMIZERS",
    "OptimizerConfig",
    "StepMarks",
    "build_filter_muon",
    "build_torch_optimizer",
    "param_groups",
    "training_step",
]


class MethodUseError(ObliqueError, RuntimeError):
    """A method used out of its order (an optimizer built before ``prepare``, a Riemannian method stepped by
    a Euclidean optimizer): one line saying what to do."""


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """Autocast switched off (CPU and CUDA) for what is inside: the manifold maths — parametrizations,
    penalties — computes in the parameters' own dtype (float32) under a caller's ``torch.autocast``."""
    with contextlib.ExitStack() as stack:
        for device in ("cpu", "cuda"):
            if torch.is_autocast_enabled(device):
                stack.enter_context(torch.autocast(device, enabled=False))
        yield


#: How many steps the optimizer may leave a method's parameters unchanged before it is taken for one that
#: does not hold them (Note [hook guards]): a GradScaler skips steps, a warm-up may start at lr 0.
_STEPS_TO_MOVE = 3

#: The kinds of method (docs/DESIGN.md, "Kinds of method").
KINDS = ("none", "soft", "reparam", "riemannian", "projection")

#: The optimizers a run may train with (:attr:`OptimizerConfig.name`); a method that brings its own takes
#: fewer (:meth:`Method.accepted_optimizers`).
OPTIMIZERS = ("sgd", "adam", "adamw", "muon")
#: What a Riemannian method's own optimizer can be: its Riemannian SGD or Adam.
RIEMANNIAN_OPTIMIZERS = ("sgd", "adam")
#: What steps the parameters Muon does not (``OptimizerConfig.others``).
OTHERS_OPTIMIZERS = ("sgd", "adam", "adamw")

#: The manifolds a method may aim at: unit-norm filters (``ddiag(FFᵀ) = I``) and orthonormal filters
#: (``FFᵀ = I`` for a wide filter matrix, ``FᵀF = I`` for a tall one, within each group).
MANIFOLDS = ("oblique", "stiefel")

#: Where a method's cost goes, by kind: what :meth:`Method.describe_cost` says for a method without its own
#: :attr:`Method.cost_note`.
_KIND_COST_NOTES = {
    "none": "—",
    "soft": "penalty and its backward (or closed-form gradient)",
    "reparam": "parametrization forward + backward (computing the weights)",
    "riemannian": "optimizer step beyond plain SGD (projection, retraction, transport)",
    "projection": "projection after the optimizer step",
}


#: One declared hyperparameter of a method: an :class:`oblique.options.Option`, declared as
#: ``Hyper(name, default, help, choices=..., minimum=..., maximum=...)`` (its kind is the default's type).
#: ``oblique run --hp name=value`` and the TOML ``[hp]`` table give it; a bad value is an
#: :class:`~oblique.options.OptionError` that names ``hp`` (the command line: ``--hp iters must be ...``).
Hyper = Option

#: The strength λ every method takes: a finite number >= 0 (its default is the method's own).
STRENGTH = Option("strength", 0.0, "the regularization factor λ", minimum=0.0)


@dataclass
class OptimizerConfig:
    """What the trainer asks of the optimizer; methods that need their own optimizer read it.

    Attributes:
        name: one of :data:`OPTIMIZERS`: ``"sgd"``, ``"adam"``, ``"adamw"`` (``torch.optim.AdamW``: its
            decoupled weight decay is ``weight_decay``, on the untargeted parameters only) or ``"muon"``
            (``torch.optim.Muon`` on the targeted filter matrices, ``others`` on every other parameter:
            :class:`oblique.methods.muon.FilterMuon`). A method that brings its own optimizer takes fewer
            (:meth:`Method.accepted_optimizers`).
        lr: learning rate (with ``muon``: the other parameters').
        momentum: SGD momentum (ignored by Adam).
        nesterov: Nesterov momentum for SGD.
        weight_decay: the optimizer's own (decoupled-from-the-method) L2 on parameters the method does
            not target (biases, BN). 0 by default: the method is the regularizer under study.
        betas: Adam's betas.
        others: with ``muon``, the optimizer of every parameter Muon does not step (``"sgd"``, ``"adam"``
            or ``"adamw"``, with ``lr``, ``momentum``, ``weight_decay`` above); the trainer gives the model's
            recipe's.
        muon_lr: with ``muon``, Muon's learning rate on the filter matrices (Keller Jordan's 0.02; torch's
            ``"original"`` adjustment, ``× sqrt(max(1, n/p))``); a scheduler scales it as it scales ``lr``.
        muon_momentum: with ``muon``, Muon's (Nesterov) momentum.
    """

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    betas: tuple[float, float] = field(default=(0.9, 0.999))
    others: str = "sgd"
    muon_lr: float = MUON_LR
    muon_momentum: float = MUON_MOMENTUM


def param_groups(model: nn.Module, targets: list[torch.Tensor], cfg: OptimizerConfig) -> list[dict]:
    """Two parameter groups: the method's ``targets`` with no optimizer weight decay (the method is their
    regularizer), and every other trainable parameter with ``cfg.weight_decay``. Empty groups are left out.
    """
    ids = {id(t) for t in targets}
    tgt = [t for t in targets if t.requires_grad]
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    groups = ({"params": tgt, "weight_decay": 0.0}, {"params": others, "weight_decay": cfg.weight_decay})
    return [g for g in groups if g["params"]]


def build_torch_optimizer(params, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Plain torch SGD, Adam or AdamW over ``params`` (an iterable of tensors or param groups; a group's
    own ``weight_decay``, as :func:`param_groups` sets it, wins over ``cfg.weight_decay``). ``muon`` needs
    the targets' filter layouts: :meth:`Method.make_optimizer` builds it (:func:`build_filter_muon`)."""
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "muon":
        raise ValueError(
            "optimizer muon steps the targets' filter matrices: build it with method.make_optimizer(model, cfg)"
        )
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {cfg.name!r}")


def build_filter_muon(
    model: nn.Module, filters: list[tuple[torch.Tensor, Layout]], cfg: OptimizerConfig
) -> torch.optim.Optimizer:
    """``cfg.name == "muon"``: ``torch.optim.Muon`` on ``filters`` (each trainable tensor and the layout of
    its filter matrix; no weight decay, ``cfg.muon_lr``, ``cfg.muon_momentum``) and ``cfg.others`` on every
    other trainable parameter of ``model`` (``cfg.weight_decay``), as one
    :class:`~oblique.methods.muon.FilterMuon`.

    Raises:
        oblique.options.OptionError: the installed torch has no ``torch.optim.Muon``; ``others`` is not
            sgd, adam or adamw.
    """
    muon_class()  # no torch.optim.Muon: one line, before anything is built
    if cfg.others not in OTHERS_OPTIMIZERS:
        raise OptionError(
            f"optimizer muon steps the other parameters with sgd, adam or adamw; got others={cfg.others!r}",
            settings=("optimizer",),
        )
    weights = [w for w, _ in filters]
    ids = {id(w) for w in weights}
    rest = [g for g in param_groups(model, weights, cfg) if not ids.intersection(map(id, g["params"]))]
    others = build_torch_optimizer(rest, replace(cfg, name=cfg.others)) if rest else None
    return FilterMuon(filters, others, **filter_muon_defaults(cfg.muon_lr, cfg.muon_momentum))


#: How a :class:`CostTarget` can be measured (:mod:`oblique.cost.targets` holds each procedure) → the
#: bounds a target measured so must declare.
COST_MEASURES = {
    "foreach_norm_floor": ("ratio", "overhead_pct"),
    "fused_optimizer": ("speedup",),
    "batched": ("overhead_pct", "speedup"),
    "overhead": ("overhead_pct",),
}


@dataclass(frozen=True)
class CostTarget:
    """A cost target of ``oblique bench`` that a method declares (:attr:`Method.cost_target`);
    :mod:`oblique.cost.targets` measures it when the method is benched and says whether it holds.

    Attributes:
        measure: how it is measured, one of :data:`COST_MEASURES`: ``"foreach_norm_floor"``, the fused
            closed-form gradient (``before_step``) against one ``torch._foreach_norm`` over the same weights,
            and the step overhead; ``"fused_optimizer"``, the method's fused optimizer step (``impl=fused``)
            against geoopt's (``impl=geoopt``); ``"batched"``, the step overhead, and the batched form against
            its per-layer reference (``batched=false``) in isolated regularizer time; ``"overhead"``, the step
            overhead alone.
        overhead_pct: the largest step overhead, % of the baseline step (None: no bound).
        ratio: the largest ratio to the floor (``foreach_norm_floor``).
        speedup: the smallest speedup over the reference (``fused_optimizer``, ``batched``).
        when: ``(hyperparameter, value)`` pairs the benched method must have for the target to apply
            (the closed form, the batched form); empty: it always applies.
    """

    measure: str
    overhead_pct: float | None = None
    ratio: float | None = None
    speedup: float | None = None
    when: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.measure not in COST_MEASURES:
            raise ValueError(f"measure must be one of {', '.join(COST_MEASURES)}; got {self.measure!r}")
        missing = [b for b in COST_MEASURES[self.measure] if getattr(self, b) is None]
        if missing:
            raise ValueError(f"a {self.measure} target needs {' and '.join(missing)}")

    @classmethod
    def batched(cls, overhead_pct: float, speedup: float = 3.0) -> CostTarget:
        """A batched form's target: the step overhead at most ``overhead_pct`` % and the batched form at
        least ``speedup`` × faster than per layer, measured when benched batched.

        >>> CostTarget.batched(3.0)
        CostTarget(measure='batched', overhead_pct=3.0, ratio=None, speedup=3.0, when=(('batched', True),))
        """
        return cls("batched", overhead_pct=overhead_pct, speedup=speedup, when=(("batched", True),))

    def applies(self, method: Method) -> bool:
        """Whether the target can be measured on ``method`` as built (its :attr:`when`)."""
        return all(method.hp.get(k) == v for k, v in self.when)


class Method:
    """Base class: plain training, no regularization. Subclasses override the hooks they need.

    Args:
        strength: the regularization factor λ (soft methods); ``None`` takes the class default.
            Must be >= 0. A function of the step is a schedule (:attr:`strength`).
        targets: which layers' weights the method acts on: layer kinds joined by ``+`` (``"conv"``,
            ``"conv+linear"``, ``"all"``; :mod:`oblique.layers`).
        exclude: layers to leave out: glob patterns matched against module and record names (``["fc",
            "layer1.*"]``), or a function ``(module name, module) -> bool``.
        **hyperparameters: the method's declared :attr:`hyperparameters`.

    Raises:
        oblique.options.OptionError: (a ``ValueError``) a strength that is not a finite number >= 0, unknown
            targets, an unknown hyperparameter or a bad value of one; it names its setting (``strength``,
            ``targets``, ``hp``).
    """

    #: registry name, e.g. ``"nl"``
    name: ClassVar[str] = ""
    #: one of :data:`KINDS`
    kind: ClassVar[str] = "none"
    #: the manifold it aims at, one of :data:`MANIFOLDS` (the row of the summary's grid; ``""``: none — plain
    #: training, weight decay); ``kind`` is the column
    manifold: ClassVar[str] = ""
    #: one-line description for ``oblique methods``
    summary: ClassVar[str] = ""
    #: the paper, cited short (the README's methods table; the module docstring cites it in full)
    paper: ClassVar[str] = ""
    #: the constraint it pulls the filter matrix toward — oblique (unit-norm filters), Stiefel (orthonormal
    #: filters), or none — and how hard (the README's methods table)
    aims_at: ClassVar[str] = ""
    #: what it computes, in the paper's notation (the README's methods table)
    formula: ClassVar[str] = ""
    #: what ``oblique`` does differently from upstream (the README's methods table; Markdown)
    differences: ClassVar[str] = ""
    #: its figure style (:mod:`analysis.style`): a colour, a marker and a line style (a Matplotlib
    #: linestyle: a name or ``(offset, (on, off, ...))``), each its own among the registered methods
    color: ClassVar[str] = ""
    marker: ClassVar[str] = ""
    linestyle: ClassVar[str | tuple] = ""
    #: what ``oblique bench`` holds it to (None: no target)
    cost_target: ClassVar[CostTarget | None] = None
    #: default strength λ (0 for methods without one)
    default_strength: ClassVar[float] = 0.0
    #: whether ``strength`` means anything for this method
    uses_strength: ClassVar[bool] = False
    #: declared hyperparameters besides strength and targets
    hyperparameters: ClassVar[tuple[Hyper, ...]] = ()
    #: where the regularizer's cost goes (``oblique bench``'s last column): a format string over the
    #: hyperparameters, e.g. ``"{iters} Newton iterations per group"``; empty: the note of the kind
    cost_note: ClassVar[str] = ""

    #: whether :meth:`Method.prepare` replaces the targeted parameters (a parametrization, a manifold parameter):
    #: then a weight tied to another layer is refused (Note [shared weights] in :mod:`oblique.layers`)
    replaces_weights: ClassVar[bool] = False
    #: the optimizers (of :data:`OPTIMIZERS`) it trains with; empty: by its kind
    #: (:meth:`Method.accepted_optimizers`)
    optimizers: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def accepted_optimizers(cls) -> tuple[str, ...]:
        """The optimizers (:attr:`OptimizerConfig.name`) the method trains with: its :attr:`optimizers`
        where it declares them, else by its kind — a Riemannian method brings its own optimizer, Riemannian
        SGD or Adam (:data:`RIEMANNIAN_OPTIMIZERS`); every other method takes any of :data:`OPTIMIZERS`.

        >>> from oblique.methods import get_method_class
        >>> get_method_class("oblique-rsgd").accepted_optimizers(), get_method_class("nl").accepted_optimizers()
        (('sgd', 'adam'), ('sgd', 'adam', 'adamw', 'muon'))
        """
        if cls.optimizers:
            return cls.optimizers
        return RIEMANNIAN_OPTIMIZERS if cls.kind == "riemannian" else OPTIMIZERS

    @classmethod
    def check_optimizer(cls, name: str) -> None:
        """Whether the method trains with the optimizer ``name`` here (``muon``: the installed torch has
        ``torch.optim.Muon``).

        Raises:
            oblique.options.OptionError: one line naming the ``optimizer`` setting: an unknown optimizer,
                one the method does not take, or ``muon`` where torch has none.
        """
        accepted = cls.accepted_optimizers()
        if name not in OPTIMIZERS:
            raise OptionError(
                f"optimizer must be one of {', '.join(accepted)}; got {name!r}", settings=("optimizer",)
            )
        if name not in accepted:
            either = " or ".join([", ".join(accepted[:-1]), accepted[-1]] if len(accepted) > 1 else accepted)
            why = "brings its own Riemannian optimizer" if cls.kind == "riemannian" else "trains with"
            raise OptionError(
                f"optimizer {name} does not apply to method {cls.name}: it {why}, {either}",
                settings=("optimizer",),
            )
        if name == "muon":
            muon_class()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # every hook does what the interface promises around a subclass's own (Note [hook guards])
        super().__init_subclass__(**kwargs)
        for name in _GUARDS:
            own = cls.__dict__.get(name)
            if own is not None and not getattr(own, "_guarded", False):
                setattr(cls, name, _guard(name, own))

    def __init__(
        self,
        strength: float | Callable[[int], float] | None = None,
        targets: str = "conv",
        exclude: Sequence[str] | Callable[[str, nn.Module], bool] = (),
        **hyperparameters: Any,
    ):
        self.strength = self.default_strength if strength is None else strength
        self.targets = parse_targets(targets)
        if callable(exclude):
            self.exclude: Any = exclude
        elif isinstance(exclude, str) or not all(isinstance(g, str) for g in exclude):
            raise OptionError(
                f"exclude must be a list of glob patterns or a function (name, module) -> bool; got {exclude!r}",
                settings=("exclude",),
            )
        else:
            self.exclude = tuple(exclude)
        declared = {h.name: h for h in self.hyperparameters}
        unknown = sorted(set(hyperparameters) - set(declared))
        if unknown:
            raise OptionError(
                f"method {self.name!r} has no hyperparameter {', '.join(map(repr, unknown))}; valid hp names: "
                f"{', '.join(declared) or 'none'}",
                settings=("hp",),
            )
        self.hp: dict[str, Any] = {
            name: h.convert(hyperparameters[name], table="hp", of=self.name)
            if name in hyperparameters
            else h.default
            for name, h in declared.items()
        }

    @property
    def strength(self) -> float:
        """The regularization factor λ of the current step.

        Set it to a number (between steps, too) or to a schedule, a function of the step ``s`` (counted
        from 1, as ``after_step`` counts) giving λ for that step: ``method.strength = lambda s: 1e-2 * min(1,
        s / 100)``. The step a schedule is read at is the one after the last ``after_step``. A value that
        is not a finite number >= 0 is refused (``OptionError``), never read as "off"; a schedule's values
        are checked as they are read."""
        schedule = getattr(self, "_schedule", None)
        if schedule is None:
            return self._strength
        return STRENGTH.convert(schedule(getattr(self, "_step", 0) + 1))

    def at_step(self, step: int) -> None:
        """Tell the method that ``step`` optimizer steps are done (a resumed run; ``fit`` calls it): a strength
        schedule reads step ``step + 1``'s λ next. ``after_step`` keeps it up to date as training goes."""
        self._step = step

    @property
    def scheduled(self) -> bool:
        """Whether :attr:`strength` is a schedule (a function of the step): then ``fit`` records its value in
        every step record (``strength`` in ``metrics.jsonl``)."""
        return getattr(self, "_schedule", None) is not None

    @strength.setter
    def strength(self, value: float | Callable[[int], float]) -> None:
        if callable(value):
            STRENGTH.convert(value(1))  # a schedule that cannot give step 1's value is refused now
            self._schedule = value
        else:
            self._schedule = None
            self._strength = STRENGTH.convert(value)

    # ------------------------------------------------------------------ recording
    def config(self) -> dict[str, Any]:
        """Every setting of this method, resolved: recorded in ``config.json`` and ``summary.json``."""
        out = {
            "name": self.name,
            "kind": self.kind,
            "strength": self.strength,  # a schedule's: its value at the current step
            "targets": self.targets,
            "hyperparameters": dict(self.hp),
        }
        if self.exclude:  # only when given: the records of runs without one stay as they were
            out["exclude"] = list(self.exclude) if not callable(self.exclude) else repr(self.exclude)
        return out

    def describe_cost(self) -> str:
        """Where this method's cost goes: :attr:`cost_note` formatted with the hyperparameters (:attr:`hp`),
        else the note of its kind (``oblique bench`` prints it and records it as ``cost_note``)."""
        if self.cost_note:
            return self.cost_note.format(**self.hp)
        return _KIND_COST_NOTES.get(self.kind, self.kind)

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hp.items())
        return f"{type(self).__name__}(strength={self.strength}, targets={self.targets!r}{', ' if hp else ''}{hp})"

    # ------------------------------------------------------------------ targets
    def target_modules(self, model: nn.Module) -> list[Target]:
        """The parameters this method acts on (:class:`oblique.layers.Target`), in model order, each once.

        Found once per model (:meth:`prepare` finds them afresh) and kept while the model lives: the hooks
        ask every step, and walking a ResNet-110 costs about 1.6 ms of Python. A model whose layers are
        replaced after ``prepare`` needs a new method object."""
        cached = getattr(self, "_targets", None)
        if cached is not None and cached[0]() is model:
            return cached[1]
        return self._remember(model, resolve_targets(model, self.targets, self.exclude))

    def _remember(self, model: nn.Module, found: list[Target]) -> list[Target]:
        self._targets = (weakref.ref(model), found)
        return found

    def __getstate__(self) -> dict[str, Any]:
        # the targets found hold one model's modules: a copy (deepcopy, pickle) finds its own
        return {**self.__dict__, "_targets": None}

    def check_targets(self, model: nn.Module) -> list[Target]:
        """What :meth:`prepare` checks before it changes anything (every method's ``prepare`` calls it first):
        :func:`~oblique.layers.resolve_targets` with ``check`` (nothing targeted is refused; parameters of a
        known kind left out are warned of); a targeted weight that a parametrization or hook of someone
        else's computes is refused (the method would act on a tensor the forward pass does not use); and a
        method that replaces its weights (:attr:`replaces_weights`) refuses a weight tied to another layer.

        Raises:
            oblique.layers.TargetsError: one line naming the layer and what to do.
        """
        found = self._remember(model, resolve_targets(model, self.targets, self.exclude, check=True))
        if self.kind == "none":
            return found
        for t in found:
            if t.is_parametrized():
                plist = t.parametrizations
                what = ", ".join(type(p).__name__ for p in plist)
                raise TargetsError(
                    f"{self.name}: {t.name} already carries a parametrization ({what}); {self.name} acts on "
                    f"plain weights: remove it (torch.nn.utils.parametrize.remove_parametrizations) or exclude "
                    f"the layer"
                )
            if t.param not in t.module._parameters:
                raise TargetsError(
                    f"{self.name}: {t.name} is computed by a hook (e.g. the deprecated "
                    f"torch.nn.utils.weight_norm or spectral_norm), not a parameter: remove the hook or "
                    f"exclude the layer"
                )
            if self.replaces_weights and t.tied:
                raise TargetsError(
                    f"{self.name}: {t.name} is tied to {', '.join(t.tied)} (one tensor) and {self.name} would "
                    f"break the tie: exclude one of them or untie them"
                )
        return found

    def target_weights(self, model: nn.Module) -> list[torch.Tensor]:
        """The *trainable* tensors this method acts on, one per targeted parameter.

        For a plain layer this is the parameter itself. Methods that move the trainable tensor elsewhere (a
        parametrization's ``original``, a manifold parameter) override this.
        """
        return [t.weight for t in self.target_modules(model)]

    # ------------------------------------------------------------------ the hooks
    def prepare(self, model: nn.Module) -> nn.Module:
        """Make ``model`` ready for this method (in place) and return it. Every method's ``prepare`` first
        calls :meth:`check_targets` (Note [hook guards])."""
        return model

    def make_optimizer(self, model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
        """The optimizer for ``model``: plain SGD/Adam/AdamW over all trainable parameters, the optimizer's
        own weight decay on the untargeted ones only (:func:`param_groups`); ``muon``: ``torch.optim.Muon``
        on the targeted filter matrices (:meth:`muon_filters`), ``cfg.others`` on every other parameter
        (:func:`build_filter_muon`).

        Raises:
            oblique.options.OptionError: an optimizer the method does not take (:meth:`check_optimizer`,
                for every method's own ``make_optimizer`` too: Note [hook guards]).
        """
        if cfg.name == "muon":
            return build_filter_muon(model, self.muon_filters(model), cfg)
        return build_torch_optimizer(param_groups(model, self.target_weights(model), cfg), cfg)

    def muon_filters(self, model: nn.Module) -> list[tuple[torch.Tensor, Layout]]:
        """What Muon steps (:mod:`oblique.methods.muon`): every trainable tensor of :meth:`target_weights`
        with the layout its filter matrix is read through — the targeted layer's where the tensor has the
        weight's shape (the weight itself, ``wn``'s direction, ONI's ``Z``), rows where it is 2-D and of the
        filter matrix's shape.

        Raises:
            MethodUseError: a trainable tensor of another shape (its filter matrix cannot be read).
        """
        out = []
        with torch.no_grad():
            for w, t in zip(self.target_weights(model), self.target_modules(model), strict=True):
                if not w.requires_grad:
                    continue
                if w.shape == t.weight.shape:
                    out.append((w, t.layout))
                elif w.dim() == 2 and w.shape == t.filters().shape:
                    out.append((w, ROWS))
                else:
                    raise MethodUseError(
                        f"{self.name}: optimizer muon cannot read the filter matrix of {t.name} from its "
                        f"trainable tensor of shape {tuple(w.shape)} (the weight is {tuple(t.weight.shape)})"
                    )
        return out

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """The regularization term to add to the loss (already multiplied by the strength), or None."""
        return None

    def before_step(self, model: nn.Module) -> None:
        """Called after ``backward`` and before ``optimizer.step()`` (closed-form gradients go here)."""

    def after_step(self, model: nn.Module, step: int) -> None:
        """Called after every ``optimizer.step()``; ``step`` counts from 1."""

    def check_first_step(self, model: nn.Module) -> None:
        """Called once, after the first optimizer step and before :meth:`after_step`: what a method needs
        of the optimizer that stepped it (a Riemannian method: that it kept the points on the manifold).
        Raises :class:`MethodUseError`."""

    def _before_first_step(self, model: nn.Module) -> None:
        watch = getattr(self, "_watch", None)
        if watch is False:
            return
        try:
            ws = [w for w in self.target_weights(model) if w.grad is not None]
        except (AttributeError, KeyError):  # the parametrization or manifold parameter prepare puts there
            raise MethodUseError(
                f"{self.name}: this model was not prepared by {self.name}: call method.prepare(model) before "
                f"building the optimizer and training"
            ) from None
        self._snapshot = [(w, w._version, w.detach().reshape(-1)[:8].clone()) for w in ws]  # no device sync
        self._watch = watch or 0

    def _after_first_step(self, model: nn.Module) -> None:
        watch, snapshot = getattr(self, "_watch", None), getattr(self, "_snapshot", [])
        if watch is None or watch is False or not snapshot:
            return
        self._snapshot = []
        moved = any(w._version != v for w, v, _ in snapshot)  # an optimizer's in-place step: no device sync
        if not moved:  # a fused optimizer moves no version counter: the values, in one transfer
            same = [torch.equal(w.detach().reshape(-1)[:8], x) for w, _, x in snapshot]
            moved = not all(same)
        if not moved:  # a step may be skipped (a GradScaler's inf, a warm-up from lr 0): _STEPS_TO_MOVE tries
            self._watch = watch + 1
            if self._watch >= _STEPS_TO_MOVE:
                raise MethodUseError(
                    f"{self.name}: the optimizer stepped none of the parameters {self.name} trains in "
                    f"{_STEPS_TO_MOVE} steps: build it after method.prepare(model), from model.parameters() or "
                    f"method.make_optimizer(model, cfg)"
                )
            return
        self._watch = False  # checked: never again for this method object and model
        self.check_first_step(model)

    def analytic_flops(self, model: nn.Module) -> float:
        """Floating-point operations the regularizer adds per training step (forward and backward),
        counted from the shapes of the targeted weights. 0 for plain training."""
        return 0.0

    def regularizer_value(self) -> torch.Tensor | None:
        """The regularizer's value (unscaled) at the last step, as a device tensor for the step record, when
        the method computes it outside :meth:`penalty` (Norm Loss's closed form); None otherwise (the
        trainer then records ``penalty / strength``)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """The method's own state beyond the model's and the optimizer's (tensors and plain containers),
        for checkpoints: what an exact resume needs (e.g. SRIP's power-iteration vectors). Empty for a
        method that keeps none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise ValueError(f"method {self.name!r} keeps no state; got a state with {', '.join(state)}")

    def effective_weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The weights the forward pass computes with, by record name (detached), in their own shapes.

        ``getattr(module, param)`` already is the effective weight for ``torch.nn.utils.parametrize`` layers.
        """
        with torch.no_grad():
            return {t.name: t.weight.detach() for t in self.target_modules(model)}

    def promise(self) -> str:
        """What the method promises of the effective filters, as built: ``"oblique"`` (every filter of unit
        norm: the hard oblique methods), ``"orthogonal"`` (orthonormal rows per group, times the scale:
        ONI, OLM) or ``""`` (nothing exact: soft methods, plain training). :meth:`check` tests it."""
        return self.promises

    #: :meth:`Method.promise` of the class (a method whose promise depends on a hyperparameter overrides it)
    promises: ClassVar[str] = ""

    def check(self, model: nn.Module) -> tuple[bool, str]:
        """Whether the method's promise (:meth:`promise`) holds now, as ``(ok, reason)`` — geoopt's
        ``check_point_on_manifold`` for the whole model. On the oblique manifold: every effective filter's
        norm within ``100·ε`` of 1 (ε of the weight's dtype: 1.2e-5 for float32). Soft methods and plain
        training promise nothing exact: ``(True, the measured drift)``. Non-finite weights: ``(False, ...)``.

        >>> import oblique
        >>> net = nn.Sequential(nn.Conv1d(1, 4, 3))
        >>> m = oblique.get_method("pbwn")
        >>> m.check(m.prepare(net))[0]
        True
        """
        from oblique.geometry import model_drift

        filters = self.effective_filters(model)
        if not filters:
            return False, f"{self.name}: no targeted layer"
        with torch.no_grad():  # every layer's worst deviation (NaN where not finite), read in one transfer
            worst = [(torch.linalg.vector_norm(f.double(), dim=1) - 1).abs().max() for f in filters.values()]
            devs = torch.stack([w.to(worst[0].device) for w in worst]).tolist()
        bad = [name for name, d in zip(filters, devs, strict=True) if not math.isfinite(d)]
        if bad:
            return False, f"{self.name}: {bad[0]} has non-finite weights"
        if self.promise() == "oblique":
            worst, where, tol = 0.0, "", 0.0
            for (name, f), dev in zip(filters.items(), devs, strict=True):
                tol = max(tol, 100 * torch.finfo(f.dtype).eps)
                if dev >= worst:
                    worst, where = dev, name
            ok = worst <= tol
            return ok, (
                f"{self.name}: {'on' if ok else 'off'} the oblique manifold: max |‖F_i‖ − 1| = {worst:.1e} at "
                f"{where or '(the model)'} (tolerance {tol:.1e})"
            )
        mean = model_drift(model, weights=filters)["mean"]
        return True, (
            f"{self.name} promises no exact constraint; drift norm_dev_mean={mean['norm_dev_mean']:.3g}, "
            f"norm_dev_max={mean['norm_dev_max']:.3g}, offdiag_dev={mean['offdiag_dev']:.3g}"
        )

    def effective_filters(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The filter matrices ``(n, p)`` of :meth:`effective_weights`, read through each layer's layout:
        what drift is measured on."""
        with torch.no_grad():
            return {t.name: t.filters(t.weight.detach()) for t in self.target_modules(model)}


def _guard(name: str, own: Callable) -> Callable:
    """``own`` (a hook of a method class) with what the interface does around it.

    Note [hook guards]: the interface's promises that hold whatever a method's own hooks do, wrapped around
    every method class's hooks (the base class's too): ``prepare`` checks the targets first
    (:meth:`Method.check_targets`); ``make_optimizer`` refuses an optimizer the method does not take
    (:meth:`Method.check_optimizer`: a Riemannian method brings its own); ``penalty`` computes in full
    precision under a caller's autocast
    (:func:`full_precision`); the first ``before_step`` / ``after_step`` pairs check that the optimizer
    steps the parameters the method trains (of those with a gradient, a version counter or one of the first
    entries moved, within ``_STEPS_TO_MOVE`` steps: a GradScaler skips steps, a warm-up may start at lr 0, a
    fused optimizer moves no version counter), then :meth:`Method.check_first_step`. No device sync but
    where the version counters did not move.
    """
    if name == "prepare":

        def hook(self, model, *args, **kwargs):
            self.check_targets(model)
            self._watch = None  # a freshly prepared model: its first steps are checked
            return own(self, model, *args, **kwargs)

    elif name == "penalty":

        def hook(self, model, *args, **kwargs):
            with full_precision():
                return own(self, model, *args, **kwargs)

    elif name == "before_step":

        def hook(self, model, *args, **kwargs):
            self._before_first_step(model)
            return own(self, model, *args, **kwargs)

    elif name == "make_optimizer":

        def hook(self, model, cfg, *args, **kwargs):
            self.check_optimizer(cfg.name)
            return own(self, model, cfg, *args, **kwargs)

    else:  # after_step

        def hook(self, model, step, *args, **kwargs):
            self._after_first_step(model)
            out = own(self, model, step, *args, **kwargs)
            self._step = step  # a strength schedule reads the next step's λ
            return out

    hook = functools.wraps(own)(hook)
    hook._guarded = True
    return hook


_GUARDS = ("prepare", "make_optimizer", "penalty", "before_step", "after_step")
for _name in _GUARDS:
    setattr(Method, _name, _guard(_name, Method.__dict__[_name]))


class StepMarks(NamedTuple):
    """What :func:`training_step` hands back: the penalty it added (or None) and four clock marks."""

    penalty: torch.Tensor | None
    backward_done: Any  # after the loss's backward
    regularizer_done: Any  # after the penalty's backward and ``before_step``
    step_done: Any  # after ``optimizer.step()``
    after_step_done: Any  # after ``after_step``: the regularizer's own time is the two spans around the step

    def regularizer_ms(self, ms: Callable[[Any, Any], float]) -> float:
        """The regularizer's own time in ms: the span from the loss's backward to before the optimizer step
        plus the one after it, each read by ``ms(start, end)`` (:meth:`oblique.clock.Clock.ms`)."""
        return ms(self.backward_done, self.regularizer_done) + ms(self.step_done, self.after_step_done)


def training_step(
    method: Method,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    step: int,
    clock: Callable[[], Any] = time.perf_counter,
    scaler: torch.amp.GradScaler | None = None,
) -> StepMarks:
    """One step of the interface after the forward pass (the module docstring's order), as the trainer and
    the bench run it: zero the gradients, backward the loss, then the penalty's backward (separately, so it
    can be timed), ``before_step``, ``optimizer.step()``, ``after_step``. ``step`` counts from 1.

    With a ``scaler`` (fp16's ``torch.amp.GradScaler``) the loss and the penalty are scaled in backward and
    the gradients unscaled before ``before_step``, so the closed forms add to true gradients; the scaler
    steps the optimizer (skipping a step whose gradients are not finite) and updates its scale.
    """
    scale = (lambda t: t) if scaler is None else scaler.scale
    optimizer.zero_grad(set_to_none=True)
    scale(loss).backward()
    m0 = clock()
    pen = method.penalty(model)
    if pen is not None:
        scale(pen).backward()
    if scaler is not None:
        scaler.unscale_(optimizer)
    method.before_step(model)
    m1 = clock()
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    m2 = clock()
    method.after_step(model, step)
    return StepMarks(pen, m0, m1, m2, clock())
