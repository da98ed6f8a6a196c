"""The targets of the bench: how each is measured, and whether it holds.

A method declares its target (:attr:`oblique.methods.base.Method.cost_target`, a
:class:`~oblique.methods.base.CostTarget`: how it is measured, its bounds, when it applies); this module
holds the four ways of measuring one (:data:`~oblique.methods.base.COST_MEASURES`) and judges each. The
bench measures every declared target that applies to a benched method (:func:`declared_targets`), in
registry order, in the bench's process, interleaved, medians of ``micro_repeats``:

- ``foreach_norm_floor`` (Norm Loss, its fused closed form, ``form=closed``): the fused Norm Loss
  (``before_step``) costs at most ``ratio`` × one ``torch._foreach_norm`` over the same targeted weights
  (the memory-traffic floor), *and* its ``overhead_pct`` is at most the declared bound, *and* no other
  method's overhead is resolvably lower (Note [noise floor]).
- ``fused_optimizer`` (e.g. ``oblique-rsgd``): its fused optimizer step (``impl=fused``,
  :class:`oblique.optim.ObliqueSGD`) is at least ``speedup`` × faster than geoopt's (``impl=geoopt``) on the
  same model's parameters.
- ``batched`` (e.g. ``oni``, ``so``; benched batched, the default): the step
  overhead at most the declared bound, *and* the batched form at least ``speedup`` × faster than its
  per-layer reference (``batched=false``, on its own copy of the model) in isolated regularizer time: the
  reparametrization's forward and backward (:func:`oblique.cost.entries.reparam_fn`), or the penalty and its
  backward.
- ``overhead`` (e.g. ``parseval``, ``fwn``): the step overhead alone, at most the declared bound. It is read
  off the bench's timed rounds (the median of the paired differences to the baseline, ± its robust standard
  error), so measuring it costs nothing beyond them; against the A/A floor it is resolved or not (Note
  [noise floor]), and a bound narrower than the floor gets the caveat that the verdict, the point estimate's,
  is not resolved.

Every target was defined on ResNet-110, batch 32, the CPU, 2 threads (Note [targets' device]).

Note [speedup spread]: the two forms are timed alternately, so each repeat gives a paired ratio (per-layer
time over the batched time just before it). The ``speedup`` is the ratio of the two medians; the quartiles
of the paired ratios (``speedup_q1``, ``speedup_q3``) say how far one repeat strays from it — what the
machine's noise does to a ratio measured once. When they lie on both sides of the target, the verdict
(still decided by ``speedup``) says it is not resolved. Records made before they existed print without.

Note [noise floor]: every round also steps the baseline a second time, on its own copy of the model (the
A/A control). Its paired difference to the baseline, ``aa`` (median, in % of the baseline step, ± its
robust standard error), is what an identical method shows: the bench's bias (memory placement, the order
in the round, the machine) and noise. Its *floor* is ``|aa| + 2·se(aa)``. An overhead — or a difference
between two methods, paired round by round — is *resolved* when its magnitude exceeds the floor;
inside it, the measurement cannot tell it from zero. The "lowest" verdict of the ``nl`` target claims only
resolved differences: ``lowest_overhead`` is true when Norm Loss is resolvably below every other method,
the methods it cannot be told from are listed (``tied_with``), and the target fails only when some method
is resolvably below it.

Note [targets' device]: every target was defined on the CPU (:data:`TARGETS_DEFINED_ON`; ResNet-110, batch
32, 2 threads): a ratio to a memory-traffic floor, a speedup over geoopt's per-parameter loop, an overhead
bound are statements about that machine's costs. On a GPU the same numbers mean something else (kernel
launches dominate small operations; the step is far shorter), so a verdict there would be a verdict on a
question nobody asked. A target measured on another device type keeps its measurement (``figure``) and
gets ``holds: None`` and ``defined_on: "cpu"``; the table prints "target defined on the CPU; informative
here" instead of a verdict. On the CPU the verdict is given whatever the model, batch and threads: the
figure says what was measured.

:func:`measure` measures a declared target (:func:`nl_floor`, :func:`rsgd_speedup`, :func:`batched_speedup`; an
``overhead`` target needs nothing beyond the rounds);
:func:`evaluate` adds to each measured target whether it ``holds``, its ``figure`` (what was measured, in
words), its ``target`` (what it should be) and where it was defined (``defined_on``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from oblique.clock import Clock
from oblique.cost.entries import Entry, prepare_entry, reparam_fn
from oblique.cost.timing import median, quantile, time_call
from oblique.methods import REGISTRY, CostTarget

__all__ = [
    "TARGETS_DEFINED_ON",
    "Measuring",
    "batched_speedup",
    "compares_all",
    "declared_targets",
    "evaluate",
    "measure",
    "nl_floor",
    "regularizer_fn",
    "resolved",
    "rsgd_speedup",
    "target_ticks",
]

#: the device type every target was defined on (Note [targets' device]); elsewhere they are informative
TARGETS_DEFINED_ON = "cpu"

#: how many times the ``foreach_norm_floor`` measurement advances the progress bar (the others: once)
_FLOOR_TICKS = 5


def declared_targets() -> dict[str, CostTarget]:
    """The target each registered method declares (:attr:`~oblique.methods.base.Method.cost_target`), by
    method name, in registry order; methods without one are left out."""
    return {name: cls.cost_target for name, cls in REGISTRY.items() if cls.cost_target is not None}


@dataclass(frozen=True)
class Measuring:
    """What a target's measurement needs of the bench beside the method's own entry.

    Attributes:
        model: the benched model's name (a reference form is prepared on a fresh one).
        num_classes, seed, device: as the bench's.
        clock: the bench's clock.
        micro_repeats: the bench's repeats of isolated measurements.
        tick: advances the progress bar (:func:`target_ticks` times per target).
    """

    model: str
    num_classes: int
    seed: int
    device: torch.device
    clock: Clock
    micro_repeats: int
    tick: Callable[[], None]


def resolved(value_pct: float, floor_pct: float | None) -> bool | None:
    """Whether an overhead (or a paired difference) is resolved: its magnitude exceeds the floor
    (Note [noise floor]); ``None`` without a floor.

    >>> resolved(2.5, 1.0), resolved(-0.4, 1.0), resolved(3.0, None)
    (True, False, None)
    """
    if floor_pct is None or floor_pct != floor_pct:  # no A/A control (an old record), or NaN
        return None
    return bool(abs(value_pct) > floor_pct)


def regularizer_fn(entry: Entry) -> Callable[[], None]:
    """The regularizer's own work, repeatable: a reparametrization's forward and backward of every targeted
    weight (:func:`~oblique.cost.entries.reparam_fn`), else the penalty and its backward."""
    fn = reparam_fn(entry) if entry.method.kind == "reparam" else None
    if fn is not None:
        return fn
    method, model = entry.method, entry.model

    def run() -> None:
        with torch.enable_grad():
            pen = method.penalty(model)
            if pen is not None:
                pen.backward()

    return run


def batched_speedup(
    entry: Entry,
    model_name: str,
    num_classes: int,
    seed: int,
    device: torch.device,
    clock: Clock,
    repeats: int,
    tick: Callable[[], None],
) -> dict[str, Any]:
    """A batched method's isolated regularizer time against its per-layer reference (``batched=false``,
    the same hyperparameters otherwise, its own fresh model), interleaved, medians of ``repeats``.
    ``tick`` is called once."""
    hp = {**entry.method.hp, "batched": False}
    ref = prepare_entry(entry.name, model_name, num_classes, seed, device, entry.x, entry.y, 1e-3, hp)
    fns = {"batched": regularizer_fn(entry), "per_layer": regularizer_fn(ref)}
    for fn in fns.values():  # the first call allocates (and draws SRIP's vectors): not timed
        fn()
    t: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t[k].append(time_call(fn, clock))
    tick()
    ratios = [r / b for r, b in zip(t["per_layer"], t["batched"], strict=True)]  # paired, repeat by repeat
    return {
        "batched_ms": median(t["batched"]),
        "per_layer_ms": median(t["per_layer"]),
        "speedup": median(t["per_layer"]) / median(t["batched"]),
        "speedup_q1": quantile(ratios, 0.25),
        "speedup_q3": quantile(ratios, 0.75),
        "repeats": repeats,
    }


def nl_floor(entry: Entry, clock: Clock, repeats: int, tick: Callable[[], None]) -> dict[str, Any]:
    """The ``foreach_norm_floor`` ratio: Norm Loss's fused ``before_step`` vs one ``torch._foreach_norm``
    over its weights.

    ``tick`` is called :data:`_FLOOR_TICKS` times (``repeats`` a multiple of it), for the progress bar.
    """
    model, method = entry.model, entry.method
    ws = method.target_weights(model)
    for w in ws:
        if w.grad is None:
            w.grad = torch.zeros_like(w)
    nl, floor = [], []
    for i in range(repeats):
        nl.append(time_call(lambda: method.before_step(model), clock))
        floor.append(time_call(lambda: torch._foreach_norm(ws), clock))
        if (i + 1) % max(1, repeats // _FLOOR_TICKS) == 0:
            tick()
    return {
        "nl_ms": median(nl),
        "floor_ms": median(floor),
        "ratio_to_foreach_norm": median(nl) / median(floor),
        "repeats": repeats,
    }


def rsgd_speedup(
    model_name: str,
    num_classes: int,
    seed: int,
    device: torch.device,
    clock: Clock,
    repeats: int,
    tick: Callable[[], None],
    name: str = "oblique-rsgd",
) -> dict[str, Any]:
    """The ``fused_optimizer`` speedup: method ``name``'s optimizer step, impl=fused vs impl=geoopt, on the
    model's parameters (and a torch SGD step on copies of them, for scale). ``tick`` is called once."""
    opts = {}
    for impl in ("geoopt", "fused"):
        e = prepare_entry(name, model_name, num_classes, seed, device, None, None, 1e-3, {"impl": impl})
        g = torch.Generator(device="cpu").manual_seed(seed + 1)
        for p in e.model.parameters():
            p.grad = (torch.randn(p.shape, generator=g) * 1e-3).to(device, p.dtype)
        opts[impl] = e.opt
    params = [p for grp in opts["fused"].param_groups for p in grp["params"]]
    clones = [p.detach().clone().requires_grad_() for p in params]
    for c, p in zip(clones, params, strict=True):
        c.grad = p.grad.clone()
    sgd = torch.optim.SGD(clones, lr=1e-3, momentum=0.9, nesterov=True)
    for o in (*opts.values(), sgd):  # the first step allocates state: not timed
        o.step()
    t: dict[str, list[float]] = {"geoopt": [], "fused": [], "sgd": []}
    for _ in range(repeats):
        t["geoopt"].append(time_call(opts["geoopt"].step, clock))
        t["fused"].append(time_call(opts["fused"].step, clock))
        t["sgd"].append(time_call(sgd.step, clock))
    tick()
    return {
        "geoopt_ms": median(t["geoopt"]),
        "fused_ms": median(t["fused"]),
        "torch_sgd_ms": median(t["sgd"]),
        "speedup": median(t["geoopt"]) / median(t["fused"]),
        "repeats": repeats,
    }


def _caveat(limit_pct: float, floor: float | None) -> str:
    """What a verdict on ``overhead ≤ limit`` is worth when the A/A floor is wider than the limit: the
    point estimate decides it, the measurement cannot resolve it (Note [noise floor]); empty otherwise."""
    if floor is None or floor <= limit_pct:
        return ""
    return f"not resolved: the A/A floor ±{floor:.2f} % is wider than the {limit_pct:g} % bound"


def _speedup_quartiles(t: dict[str, Any]) -> tuple[float, float] | None:
    """The quartiles of a batched target's paired ratios (Note [speedup spread]); None for a record made
    before they were measured."""
    q1, q3 = t.get("speedup_q1"), t.get("speedup_q3")
    return None if q1 is None or q3 is None else (q1, q3)


def _speedup_caveat(quartiles: tuple[float, float] | None, speedup: float) -> str:
    """What a verdict on ``speedup ≥`` the target's ``speedup`` is worth when the quartiles of the paired
    ratios lie on both sides of it; empty otherwise, and without them."""
    if quartiles is None or not quartiles[0] < speedup <= quartiles[1]:
        return ""
    q1, q3 = quartiles
    return f"not resolved: the paired ratios' quartiles {q1:.2f}–{q3:.2f}× straddle {speedup:g}×"


def _evaluate_nl(
    name: str, target: CostTarget, t: dict[str, Any], results: dict[str, dict], floor: float | None
) -> None:
    nl = results[name]
    t["overhead_pct_se"] = nl["overhead_pct_se"]
    t["regularizer_pct"] = nl["regularizer_pct"]
    t["overhead_pct"] = nl["overhead_pct"]
    t["floor_pct"] = floor
    # nl against every other method, paired round by round (``vs``), when measured; else (no rounds
    # recorded) the difference of their overheads (Note [noise floor])
    vs = t.get("vs") or {
        k: v["overhead_pct"] - nl["overhead_pct"] for k, v in results.items() if k not in ("baseline", name)
    }
    verdict = {k: resolved(d, floor) for k, d in vs.items()}  # d = other − nl: > 0 when nl is cheaper
    if floor is None:  # an old record: the point estimates
        below = [k for k, d in vs.items() if d <= 0]
        tied: list[str] = []
    else:
        below = [k for k, d in vs.items() if verdict[k] and d < 0]
        tied = [k for k in vs if not verdict[k]]
    t["lowest_overhead"] = not below and not tied
    t["tied_with"], t["resolvably_lower"] = tied, below
    t["holds"] = bool(
        t["ratio_to_foreach_norm"] <= target.ratio and t["overhead_pct"] <= target.overhead_pct and not below
    )
    if t["lowest_overhead"]:
        lowest = ", the lowest but baseline" + (" (resolved)" if floor is not None else "")
    elif below:
        how = "resolvably lower" if floor is not None else "lower (no A/A floor: point estimates)"
        lowest = f", NOT the lowest: {', '.join(below)} {how}"
    else:
        lowest = f", lowest not resolved: within the A/A floor ±{floor:.2f} % of {', '.join(tied)}"
    t["figure"] = (
        f"fused Norm Loss = {t['ratio_to_foreach_norm']:.2f}× one torch._foreach_norm pass "
        f"({t['nl_ms']:.3f} vs {t['floor_ms']:.3f} ms); step overhead {t['overhead_pct']:.2f} ± "
        f"{t['overhead_pct_se']:.2f} % (isolated: {t['regularizer_pct']:.3f} %){lowest}"
    )
    t["target"] = (
        f"≤ {target.ratio:g}× the floor, overhead ≤ {target.overhead_pct:g} % and none resolvably lower"
    )
    t["caveat"] = _caveat(target.overhead_pct, floor)


def _evaluate_rsgd(
    name: str, target: CostTarget, t: dict[str, Any], results: dict[str, dict], floor: float | None
) -> None:
    t["holds"] = bool(t["speedup"] >= target.speedup)
    t["figure"] = (
        f"fused {name} optimizer step {t['speedup']:.2f}× faster than geoopt's "
        f"({t['fused_ms']:.2f} vs {t['geoopt_ms']:.2f} ms; torch SGD {t['torch_sgd_ms']:.2f} ms)"
    )
    t["target"] = f"≥ {target.speedup:g}× faster"


def _evaluate_batched(
    name: str, target: CostTarget, t: dict[str, Any], results: dict[str, dict], floor: float | None
) -> None:
    r, limit, speedup = results[name], target.overhead_pct, target.speedup
    t["overhead_pct"], t["overhead_pct_se"] = r["overhead_pct"], r["overhead_pct_se"]
    t["regularizer_pct"], t["floor_pct"] = r["regularizer_pct"], floor
    t["overhead_resolved"] = resolved(r["overhead_pct"], floor)
    t["holds"] = bool(t["overhead_pct"] <= limit and t["speedup"] >= speedup)
    against = (
        ""
        if floor is None
        else f", {'beyond' if t['overhead_resolved'] else 'within'} the A/A floor ±{floor:.2f} %"
    )
    quartiles = _speedup_quartiles(t)
    spread = (
        "" if quartiles is None else f", paired ratios {quartiles[0]:.2f}–{quartiles[1]:.2f}× (quartiles)"
    )
    t["figure"] = (
        f"step overhead {t['overhead_pct']:.2f} ± {t['overhead_pct_se']:.2f} %{against} (isolated: "
        f"{t['regularizer_pct']:.2f} %); batched {t['speedup']:.2f}× faster than per layer "
        f"({t['batched_ms']:.2f} vs {t['per_layer_ms']:.2f} ms, forward + backward alone{spread})"
    )
    t["target"] = f"overhead ≤ {limit:g} % and batched ≥ {speedup:g}× faster"
    t["caveat"] = "; ".join(c for c in (_caveat(limit, floor), _speedup_caveat(quartiles, speedup)) if c)


def _evaluate_overhead(
    name: str, target: CostTarget, t: dict[str, Any], results: dict[str, dict], floor: float | None
) -> None:
    r, limit = results[name], target.overhead_pct
    t["overhead_pct"], t["overhead_pct_se"] = r["overhead_pct"], r["overhead_pct_se"]
    t["regularizer_pct"], t["floor_pct"] = r["regularizer_pct"], floor
    t["overhead_resolved"] = resolved(r["overhead_pct"], floor)
    t["holds"] = bool(t["overhead_pct"] <= limit)
    against = (
        ""
        if floor is None
        else f", {'beyond' if t['overhead_resolved'] else 'within'} the A/A floor ±{floor:.2f} %"
    )
    t["figure"] = (
        f"step overhead {t['overhead_pct']:.2f} ± {t['overhead_pct_se']:.2f} %{against} (isolated: "
        f"{t['regularizer_pct']:.2f} %)"
    )
    t["target"] = f"overhead ≤ {limit:g} %"
    t["caveat"] = _caveat(limit, floor)


@dataclass(frozen=True)
class _Procedure:
    """One way of measuring a target (a :data:`~oblique.methods.base.COST_MEASURES` name) and judging it."""

    measure: Callable[[Entry, Measuring], dict[str, Any]]
    evaluate: Callable[[str, CostTarget, dict[str, Any], dict[str, dict], float | None], None]
    ticks: int = 1  # how many times ``measure`` advances the progress bar (0: it measures nothing more)
    compares_all: bool = False  # judged against every other benched method, paired round by round (``vs``)


_PROCEDURES = {
    "foreach_norm_floor": _Procedure(
        lambda e, m: nl_floor(e, m.clock, _FLOOR_TICKS * m.micro_repeats, m.tick),
        _evaluate_nl,
        ticks=_FLOOR_TICKS,
        compares_all=True,
    ),
    "fused_optimizer": _Procedure(
        lambda e, m: rsgd_speedup(
            m.model, m.num_classes, m.seed, m.device, m.clock, m.micro_repeats, m.tick, e.name
        ),
        _evaluate_rsgd,
    ),
    "batched": _Procedure(
        lambda e, m: batched_speedup(
            e, m.model, m.num_classes, m.seed, m.device, m.clock, m.micro_repeats, m.tick
        ),
        _evaluate_batched,
    ),
    # the step overhead is the rounds' own measurement: nothing more to time
    "overhead": _Procedure(lambda e, m: {}, _evaluate_overhead, ticks=0),
}


def target_ticks(target: CostTarget) -> int:
    """How many times measuring ``target`` advances the bench's progress bar."""
    return _PROCEDURES[target.measure].ticks


def compares_all(target: CostTarget) -> bool:
    """Whether ``target`` is judged against every other benched method (its record's ``vs``: the method's
    step against each other's, paired round by round, Note [noise floor])."""
    return _PROCEDURES[target.measure].compares_all


def measure(entry: Entry, target: CostTarget, measuring: Measuring) -> dict[str, Any]:
    """Measure ``target``, the target ``entry``'s method declares, in the way it names (``measure``)."""
    return _PROCEDURES[target.measure].measure(entry, measuring)


def evaluate(
    targets: dict[str, dict[str, Any]],
    results: dict[str, dict],
    aa: dict[str, Any] | None = None,
    device_type: str = TARGETS_DEFINED_ON,
) -> None:
    """Complete each measured target in ``targets`` (in place): ``holds``, ``figure``, ``target``,
    ``defined_on``.

    Args:
        targets: measured targets by method name (``{"nl": nl_floor(...), "oni": batched_speedup(...),
            …}``, :func:`measure`), each judged by the target its method declares (names without one are
            left as they are). A ``foreach_norm_floor`` entry may carry ``vs``: ``{method: paired
            difference to it, %}``.
        results: the record's ``methods`` table (a ``foreach_norm_floor`` target reads every method's
            overhead).
        aa: the A/A control (the record's ``aa``: ``floor_pct``); None for none (Note [noise floor]).
        device_type: where they were measured; on another type than :data:`TARGETS_DEFINED_ON`, ``holds``
            is ``None`` (Note [targets' device]).
    """
    floor = None if aa is None else aa.get("floor_pct")
    declared = declared_targets()
    for name, t in targets.items():
        if name in declared:
            target = declared[name]
            _PROCEDURES[target.measure].evaluate(name, target, t, results, floor)
    for t in targets.values():
        t["defined_on"] = TARGETS_DEFINED_ON
        if device_type != TARGETS_DEFINED_ON:  # no verdict on a question asked of another machine
            t["holds"], t["caveat"] = None, ""
