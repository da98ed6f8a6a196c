"""What each method costs, measured side by side: ``oblique bench``.

For every method, one full training step — forward, loss, penalty, backward, ``before_step``, optimizer
step, ``after_step`` — on synthetic inputs of the model's shape. Every method has its own prepared copy of
the model (same seed, same initialization, same batch). After ``warmup`` rounds, ``rounds`` rounds run,
each stepping every method once in a fresh random order, so drift of the machine (other processes, clock
changes, a warming cache) falls on all methods alike. CUDA segments are timed with events, then
synchronized; CPU segments with ``time.perf_counter``.

Per method (the record's ``methods`` table):

- ``step_ms``: median over rounds of the whole step.
- ``overhead_pct``: median over rounds of the *paired* difference ``step(method) − step(baseline)`` of the
  same round, in % of the median baseline step (the pairing cancels drift between rounds; a median of
  differences is far less noisy than a difference of medians).
- ``overhead_pct_se``: the standard error of that median (``1.2533·σ/√rounds``, σ from the interquartile
  range so that a few rounds slowed by other processes do not dominate): on a busy machine it can
  exceed a small method's true overhead, which ``regularizer_pct`` then measures better.
- ``regularizer_ms``: the regularizer's own time, isolated, the sum of ``regularizer_parts``
  (``regularizer_pct``: the same in % of the median baseline step):

  - ``in_step_ms``: penalty + its backward + ``before_step`` + ``after_step`` inside the step (soft
    methods; Norm Loss's fused closed form is ``before_step``; projections are ``after_step``);
  - ``reparam_ms`` (reparametrizations): the parametrization's forward and backward alone — every
    targeted ``module.weight`` computed from its parameters and back-propagated with a unit gradient,
    repeated ``micro_repeats`` times, interleaved across methods;
  - ``optimizer_extra_ms`` (Riemannian methods): the method's optimizer step minus a ``torch.optim.SGD``
    step (same momentum, Nesterov) on tensors of the same shapes, both medians of ``micro_repeats``
    interleaved repeats.

- ``peak_mem_mb``: on CUDA, the peak of ``torch.cuda.max_memory_allocated`` during one step less what the
  other methods' models hold; on the CPU (where no allocator statistic sees torch), the bytes a step
  holds at the start of backward: parameters + gradients + optimizer state + every tensor autograd saved
  for backward (activations, and a reparametrization's computed weights), each storage counted once.
  Temporaries of single operations are not counted.
- ``analytic_flops``: ``method.analytic_flops(model)``, the regularizer's floating-point operations per
  step counted from the shapes (0 for baseline).
- ``cost_note``: where the cost goes (the method's ``cost_note`` attribute if it has one, else its kind).

The two targets (issue 4), measured in the same process, interleaved, medians of ``micro_repeats``:

- ``nl``: the fused Norm Loss (``before_step``) costs at most 4× one ``torch._foreach_norm`` over the same
  targeted weights (the memory-traffic floor), *and* its ``overhead_pct`` is at most 1 % and the lowest of
  all methods but ``baseline``. Defined on ResNet-110, batch 32, CPU.
- ``oblique-rsgd``: its fused optimizer step (``impl=fused``, :class:`oblique.optim.ObliqueSGD`) is at
  least 3× faster than geoopt's (``impl=geoopt``) on the same model's parameters.

Record format (``schema`` ``"oblique.bench/1"``), one JSON object per bench of one model::

    {"schema": "oblique.bench/1", "model": "resnet110", "depth": 110, "width": null,
     "num_params": 1727962, "num_target_params": 1719216, "input_shape": [3, 32, 32],
     "batch_size": 32, "device": "cpu", "threads": 2, "rounds": 25, "warmup": 2, "micro_repeats": 40,
     "torch_version": "...", "seconds": 412.3,
     "methods": {"baseline": {"kind": "none", "step_ms": ..., "step_ms_q25": ..., "step_ms_q75": ...,
                              "overhead_pct": 0.0, "regularizer_ms": ..., "regularizer_parts": {...},
                              "peak_mem_mb": ..., "analytic_flops": 0.0, "cost_note": "..."}, ...},
     "errors": {"method": "why it could not be benched"},
     "targets": {"nl": {"figure": "...", "ratio_to_foreach_norm": 2.1, "overhead_pct": 0.1,
                        "lowest_overhead": true, "holds": true},
                 "oblique-rsgd": {"figure": "...", "speedup": 3.4, "fused_ms": ..., "geoopt_ms": ...,
                                  "holds": true}}}

The CSV (``--csv``, and ``bench.csv`` of a sweep) has one row per model and method with the columns
:data:`CSV_COLUMNS`. :func:`read_bench` reads either form, or a sweep folder, into one pandas DataFrame of
those columns — the input of the cost figures.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from oblique import records
from oblique.methods.base import training_step

__all__ = [
    "CSV_COLUMNS",
    "SCHEMA",
    "SWEEPS",
    "bench",
    "format_table",
    "read_bench",
    "run_sweep",
    "write_csv",
]

SCHEMA = "oblique.bench/1"

#: one row per model and method in the CSV and in :func:`read_bench`'s DataFrame
CSV_COLUMNS = (
    "model",
    "depth",
    "width",
    "num_params",
    "num_target_params",
    "batch_size",
    "device",
    "threads",
    "method",
    "kind",
    "step_ms",
    "overhead_pct",
    "regularizer_ms",
    "peak_mem_mb",
    "analytic_flops",
)

#: the sweeps: how each method's overhead grows with the width (WRN-28-k) and the depth (ResNet-6n+2)
SWEEPS: dict[str, list[str]] = {
    "width": [f"wrn28-{k}" for k in range(1, 11)],
    "depth": [f"resnet{d}" for d in (20, 32, 44, 56, 110)],
}

#: adaptive rounds (``rounds=None``): at least this many timed rounds, at most that many
MIN_ROUNDS, MAX_ROUNDS = 8, 200

#: the targets of issue 4
NL_RATIO_TARGET = 4.0
NL_OVERHEAD_TARGET_PCT = 1.0
RSGD_SPEEDUP_TARGET = 3.0

_KIND_NOTES = {
    "none": "—",
    "soft": "penalty and its backward (or closed-form gradient)",
    "reparam": "parametrization forward + backward (computing the weights)",
    "riemannian": "optimizer step beyond plain SGD (projection, retraction, transport)",
    "projection": "projection after the optimizer step",
}


def _cost_note(method) -> str:
    """Where a method's cost goes: its own ``cost_note`` attribute if it has one, else from its name/kind."""
    own = getattr(method, "cost_note", "")
    if own:
        return own
    hp = method.hp
    notes = {
        "wd": "λΣ‖w‖² and its autograd backward",
        "nl": "fused eq. 6 in before_step: per-filter norms + one multi-tensor multiply-add",
        "wn": "per-filter norm and scale of v (forward + backward)",
        "oblique-rsgd": f"optimizer ({hp.get('impl', '?')}): tangent projection, retraction, transport",
        "pbwn": "per-filter norms and division after the step",
        "oni": f"{hp.get('iters', '?')} Newton iterations per group (6T·m³) + Gram and product (4m²p)",
        "olm": "eigendecomposition of ZcZcᵀ per group (≈ 11m³) + Gram and product (4m²p)",
        "so": "Gram FFᵀ − I per layer (2n²p) and its backward",
        "srip": f"{hp.get('iters', '?')} power iterations on FFᵀ − I per layer, and the backward",
    }
    return notes.get(method.name, _KIND_NOTES.get(method.kind, method.kind))


class BenchError(ValueError):
    """A bench setting that cannot work (unknown model or method, bad numbers); one line."""


# --------------------------------------------------------------------------- timing
class _Timer:
    """Marks points in a step: CUDA events on a CUDA device, ``perf_counter`` on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def ms(self, a, b) -> float:
        if self.cuda:
            return a.elapsed_time(b)
        return (b - a) * 1e3

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def _time_call(fn: Callable[[], Any], timer: _Timer) -> float:
    a = timer.mark()
    fn()
    b = timer.mark()
    timer.sync()
    return timer.ms(a, b)


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def _robust_se(xs: Sequence[float]) -> float:
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return 1.2533 * (q[2] - q[0]) / 1.349 / math.sqrt(len(xs))


def _quantile(xs: Sequence[float], q: float) -> float:
    if len(xs) < 2:
        return _median(xs)
    return float(statistics.quantiles(xs, n=4, method="inclusive")[int(q * 4) - 1])


# --------------------------------------------------------------------------- one method, prepared
class _Entry:
    """One method with its own prepared model, optimizer and batch."""

    def __init__(self, name, method, model, opt, x, y):
        self.name, self.method, self.model, self.opt, self.x, self.y = name, method, model, opt, x, y
        self.step_no = 0
        self.step_ms: list[float] = []
        self.reg_ms: list[float] = []
        self.opt_ms: list[float] = []

    def step(self, timer: _Timer) -> None:
        m, model, opt = self.method, self.model, self.opt
        self.step_no += 1
        t0 = timer.mark()
        loss = F.cross_entropy(model(self.x), self.y)
        _, t1, t2, t3, t4 = training_step(m, model, opt, loss, self.step_no, clock=timer.mark)
        timer.sync()
        self.step_ms.append(timer.ms(t0, t4))
        self.reg_ms.append(timer.ms(t1, t2) + timer.ms(t3, t4))
        self.opt_ms.append(timer.ms(t2, t3))


def _build_model(model_name: str, num_classes: int, seed: int, device: torch.device) -> nn.Module:
    from oblique.models import get_model, input_shape

    torch.manual_seed(seed)
    return get_model(model_name, num_classes=num_classes, in_channels=input_shape(model_name)[0]).to(device)


def _prepare(name, model_name, num_classes, seed, device, x, y, lr, hp=None) -> _Entry:
    from oblique.methods import OptimizerConfig, get_method

    method = get_method(name, **(hp or {}))
    model = method.prepare(_build_model(model_name, num_classes, seed, device))
    model.train()
    opt = method.make_optimizer(model, OptimizerConfig(lr=lr, momentum=0.9, nesterov=True))
    return _Entry(name, method, model, opt, x, y)


# --------------------------------------------------------------------------- the isolated parts
def _reparam_fn(entry: _Entry) -> Callable[[], None] | None:
    """The parametrization's forward + backward alone (every targeted weight, unit output gradient)."""
    mods = [mod for _, mod in entry.method.target_modules(entry.model)]
    with torch.enable_grad():
        probe = [mod.weight for mod in mods]
    if not any(w.grad_fn is not None for w in probe):
        return None
    ones = [torch.ones_like(w) for w in probe]

    def run() -> None:
        with torch.enable_grad():
            ws = [mod.weight for mod in mods]
            pairs = [(w, g) for w, g in zip(ws, ones, strict=True) if w.grad_fn is not None]
            torch.autograd.backward([w for w, _ in pairs], grad_tensors=[g for _, g in pairs])

    return run


def _plain_sgd_fn(entry: _Entry) -> tuple[Callable[[], None], Callable[[], None]]:
    """(the method's optimizer step, a torch SGD step on tensors of the same shapes), both repeatable."""
    params = [p for g in entry.opt.param_groups for p in g["params"]]
    clones = [
        torch.zeros_like(p, memory_format=torch.contiguous_format).normal_().requires_grad_() for p in params
    ]
    for c in clones:
        c.grad = torch.randn_like(c) * 1e-3
    for p in params:
        if p.grad is None:
            p.grad = torch.randn_like(p) * 1e-3
    sgd = torch.optim.SGD(clones, lr=1e-3, momentum=0.9, nesterov=True)
    return entry.opt.step, sgd.step


# --------------------------------------------------------------------------- memory
def _storage_key(t: torch.Tensor):
    try:
        s = t.untyped_storage()
        return s.data_ptr(), s.nbytes()
    except (RuntimeError, NotImplementedError):  # pragma: no cover - exotic tensor types
        return id(t), t.numel() * t.element_size()


def _tensor_bytes(tensors) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            ptr, n = _storage_key(t)
            seen[ptr] = max(seen.get(ptr, 0), n)
    return sum(seen.values())


def _opt_state_tensors(opt: torch.optim.Optimizer):
    for st in opt.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor):
                yield v


def _peak_mem_mb(entry: _Entry, device: torch.device) -> float:
    """See the module docstring: CUDA allocator peak, or a CPU account of what a step holds."""
    m, model, opt = entry.method, entry.model, entry.opt
    opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        own = _tensor_bytes(list(model.parameters()) + list(_opt_state_tensors(opt)))
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        entry.step(_Timer(device))
        peak = torch.cuda.max_memory_allocated(device)
        return (peak - base + own) / 2**20
    params = list(model.parameters())
    param_ptrs = {_storage_key(p)[0] for p in params}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr, n = _storage_key(t)
        if ptr not in param_ptrs:
            saved[ptr] = max(saved.get(ptr, 0), n)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(entry.x), entry.y)
        pen = m.penalty(model)
    total = loss + pen if pen is not None else loss
    total.backward()
    m.before_step(model)
    opt.step()
    entry.step_no += 1
    m.after_step(model, entry.step_no)
    grads = [p.grad for p in params if p.grad is not None]
    held = _tensor_bytes(params) + _tensor_bytes(grads) + _tensor_bytes(_opt_state_tensors(opt))
    return (held + sum(saved.values())) / 2**20


# --------------------------------------------------------------------------- the bench
def _model_dims(model_name: str) -> tuple[int | None, int | None]:
    if m := re.fullmatch(r"resnet(\d+)", model_name):
        return int(m[1]), None
    if m := re.fullmatch(r"wrn(\d+)-(\d+)(-drop)?", model_name):
        return int(m[1]), int(m[2])
    return None, None


def resolve_methods(spec: str | Sequence[str]) -> list[str]:
    """``"all"`` or a comma-separated list of method names → the names, ``baseline`` first.

    Raises:
        BenchError: an unknown name (the message lists the valid ones).
    """
    from oblique.methods import list_methods

    valid = list_methods()
    names = (
        valid if spec == "all" else [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    )
    names = [n for n in names if n]
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise BenchError(f"unknown method(s) {', '.join(unknown)}; valid: all, {', '.join(valid)}")
    return ["baseline"] + [n for n in dict.fromkeys(names) if n != "baseline"]


def bench(
    model: str = "resnet110",
    methods: str | Sequence[str] = "all",
    batch_size: int = 32,
    device: str = "cpu",
    rounds: int | None = None,
    warmup: int = 2,
    micro_repeats: int = 40,
    threads: int | None = None,
    seed: int = 0,
    num_classes: int = 10,
    targets: bool = True,
    progress: bool = True,
    time_budget_s: float = 420.0,
) -> dict:
    """Bench every method of ``methods`` on ``model``; return the record (see the module docstring).

    Args:
        model: a registered model name (``oblique.models.list_models()``).
        methods: ``"all"`` or names; ``baseline`` is always included (the overheads need it).
        batch_size: synthetic batch size.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        rounds: timed rounds (every method stepped once per round, in random order); ``None``: as many
            as fit in ``time_budget_s`` (at least :data:`MIN_ROUNDS`, at most :data:`MAX_ROUNDS`).
        warmup: untimed rounds first.
        micro_repeats: repeats of the isolated measurements (reparametrizations, optimizer steps, targets).
        threads: torch CPU threads (``None``: torch's default).
        seed: seed of the models' initialization, the batch and the method order.
        num_classes: classifier outputs.
        targets: also measure the two targets (needs ``nl`` / ``oblique-rsgd`` among the methods).
        progress: show a tqdm progress bar on stderr.
        time_budget_s: with ``rounds=None``, the seconds from the start of the bench to the end of the
            timed rounds (the isolated measurements and the memory step follow, typically under a minute
            for ResNet-110 on the CPU): 420 s keeps the default ResNet-110 bench under 10 minutes.

    Raises:
        BenchError: bad settings, unknown model or method.
    """
    from oblique.models import MODELS, ModelDependencyError, UnknownModelError, input_shape

    for what, v, lo in (
        ("--rounds", 1 if rounds is None else rounds, 1),
        ("--warmup", warmup, 0),
        ("--batch-size", batch_size, 1),
    ):
        if not isinstance(v, int) or v < lo:
            raise BenchError(f"{what} must be an integer >= {lo}; got {v!r}")
    if not isinstance(micro_repeats, int) or micro_repeats < 1:
        raise BenchError(f"--micro-repeats must be an integer >= 1; got {micro_repeats!r}")
    if threads is not None:
        if threads < 1:
            raise BenchError(f"--threads must be an integer >= 1; got {threads}")
        torch.set_num_threads(threads)
    from oblique.train import ConfigError, resolve_device

    try:
        dev = resolve_device(device)
    except ConfigError as e:
        raise BenchError(str(e)) from None
    try:
        shape = input_shape(model)
    except UnknownModelError:
        raise BenchError(f"unknown model {model!r}; valid: {', '.join(MODELS)}") from None
    names = resolve_methods(methods)
    t_start = time.perf_counter()
    timer = _Timer(dev)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, *shape, generator=g).to(dev)
    y = torch.randint(num_classes, (batch_size,), generator=g).to(dev)
    lr = 1e-3  # small: the synthetic batch is repeated, the weights should stay sane over the rounds

    entries: list[_Entry] = []
    errors: dict[str, str] = {}
    for name in names:
        try:
            entries.append(_prepare(name, model, num_classes, seed, dev, x, y, lr))
        except ModelDependencyError as e:
            raise BenchError(str(e)) from None
        except (ValueError, RuntimeError, NotImplementedError) as e:
            if name == "baseline":
                raise
            errors[name] = f"{type(e).__name__}: {e}".splitlines()[0]
    base_model = entries[0].model
    num_params = sum(p.numel() for p in base_model.parameters())
    num_target = sum(w.numel() for w in entries[0].method.target_weights(base_model))

    by_name = {e.name: e for e in entries}
    reparam = {
        e.name: fn for e in entries if e.method.kind == "reparam" and (fn := _reparam_fn(e)) is not None
    }
    riem = {e.name: _plain_sgd_fn(e) for e in entries if e.method.kind == "riemannian"}
    do_nl = targets and "nl" in by_name and by_name["nl"].method.hp.get("form") == "closed"
    do_rsgd = targets and "oblique-rsgd" in by_name
    micro_units = len(reparam) + len(riem) + (5 if do_nl else 0) + (1 if do_rsgd else 0)
    total = (
        None
        if rounds is None
        else (warmup + rounds) * len(entries) + micro_repeats * micro_units + len(entries)
    )

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=total, desc=f"bench {model}", unit="step", file=sys.stderr, dynamic_ncols=True, leave=False
        )

    def tick(n: int = 1) -> None:
        if bar is not None:
            bar.update(n)

    rng = random.Random(seed)
    order = list(entries)
    try:
        r = 0
        t_rounds = time.perf_counter()
        while rounds is None or r < warmup + rounds:
            rng.shuffle(order)
            for e in order:
                try:
                    e.step(timer)
                except (RuntimeError, ValueError) as err:  # a method that fails at this size
                    errors[e.name] = f"{type(err).__name__}: {err}".splitlines()[0]
                    entries.remove(e)
                tick()
            order = [e for e in order if e in entries]
            r += 1
            now = time.perf_counter()
            if r == warmup:
                for e in entries:
                    e.step_ms.clear(), e.reg_ms.clear(), e.opt_ms.clear()
                t_rounds = now
            timed = r - warmup
            if rounds is None and timed >= 1:  # adaptive: stop before the budget runs out
                per_round = (now - t_rounds) / timed
                left = time_budget_s - (now - t_start)
                if timed >= MAX_ROUNDS or (timed >= MIN_ROUNDS and left < per_round):
                    break
        timed_rounds = r - warmup

        # ---- isolated parts, interleaved: reparametrizations, Riemannian optimizer steps
        rep_ms: dict[str, list[float]] = {k: [] for k in reparam}
        riem_ms: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in riem}
        for _ in range(micro_repeats):
            for k, fn in reparam.items():
                rep_ms[k].append(_time_call(fn, timer))
                tick()
            for k, (own, plain) in riem.items():
                riem_ms[k][0].append(_time_call(own, timer))
                riem_ms[k][1].append(_time_call(plain, timer))
                tick()

        target_records: dict[str, Any] = {}
        if do_nl:
            target_records["nl"] = _nl_floor(by_name["nl"], timer, 5 * micro_repeats, tick)
        if do_rsgd:
            target_records["oblique-rsgd"] = _rsgd_speedup(
                model, num_classes, seed, dev, timer, micro_repeats, tick
            )

        peaks = {}
        for e in entries:
            peaks[e.name] = _peak_mem_mb(e, dev)
            tick()
    finally:
        if bar is not None:
            bar.close()

    base = by_name["baseline"]
    base_med = _median(base.step_ms)
    results: dict[str, dict] = {}
    for e in entries:
        paired = [(a - b) / base_med * 100 for a, b in zip(e.step_ms, base.step_ms, strict=True)]
        parts = {"in_step_ms": _median(e.reg_ms)}
        if e.name in rep_ms:
            parts["reparam_ms"] = _median(rep_ms[e.name])
        if e.name in riem_ms:
            own, plain = riem_ms[e.name]
            parts["optimizer_extra_ms"] = _median(own) - _median(plain)
        kind = e.method.kind
        results[e.name] = {
            "kind": kind,
            "step_ms": _median(e.step_ms),
            "step_ms_q25": _quantile(e.step_ms, 0.25),
            "step_ms_q75": _quantile(e.step_ms, 0.75),
            "overhead_pct": 0.0 if e is base else _median(paired),
            # standard error of that median, robust to the odd slow round: 1.2533·(IQR/1.349)/√n
            "overhead_pct_se": 0.0 if e is base or len(paired) < 4 else _robust_se(paired),
            "regularizer_ms": 0.0 if kind == "none" else sum(parts.values()),
            "regularizer_parts": parts,
            "optimizer_ms": _median(e.opt_ms),
            "peak_mem_mb": peaks[e.name],
            "analytic_flops": float(e.method.analytic_flops(e.model)),
            "cost_note": _cost_note(e.method),
        }
    for r in results.values():  # the isolated regularizer time as a share of the baseline step
        r["regularizer_pct"] = r["regularizer_ms"] / base_med * 100
    if "nl" in target_records:
        t = target_records["nl"]
        t["overhead_pct_se"] = results["nl"]["overhead_pct_se"]
        t["regularizer_pct"] = results["nl"]["regularizer_pct"]
        others = [v["overhead_pct"] for k, v in results.items() if k not in ("baseline", "nl")]
        t["overhead_pct"] = results["nl"]["overhead_pct"]
        t["lowest_overhead"] = all(t["overhead_pct"] < o for o in others)
        t["holds"] = bool(
            t["ratio_to_foreach_norm"] <= NL_RATIO_TARGET
            and t["overhead_pct"] <= NL_OVERHEAD_TARGET_PCT
            and t["lowest_overhead"]
        )
        t["figure"] = (
            f"fused Norm Loss = {t['ratio_to_foreach_norm']:.2f}× one torch._foreach_norm pass "
            f"({t['nl_ms']:.3f} vs {t['floor_ms']:.3f} ms); step overhead {t['overhead_pct']:.2f} ± "
            f"{t['overhead_pct_se']:.2f} % (isolated: {t['regularizer_pct']:.3f} %)"
            f"{', the lowest but baseline' if t['lowest_overhead'] else ', NOT the lowest but baseline'}"
        )
        t["target"] = (
            f"≤ {NL_RATIO_TARGET:g}× the floor, overhead ≤ {NL_OVERHEAD_TARGET_PCT:g} % and the lowest"
        )
    if "oblique-rsgd" in target_records:
        t = target_records["oblique-rsgd"]
        t["holds"] = bool(t["speedup"] >= RSGD_SPEEDUP_TARGET)
        t["figure"] = (
            f"fused oblique RSGD step {t['speedup']:.2f}× faster than geoopt's "
            f"({t['fused_ms']:.2f} vs {t['geoopt_ms']:.2f} ms; torch SGD {t['torch_sgd_ms']:.2f} ms)"
        )
        t["target"] = f"≥ {RSGD_SPEEDUP_TARGET:g}× faster"
    depth, width = _model_dims(model)
    return {
        "schema": SCHEMA,
        "model": model,
        "depth": depth,
        "width": width,
        "num_params": num_params,
        "num_target_params": num_target,
        "input_shape": list(shape),
        "batch_size": batch_size,
        "device": str(dev) if dev.type == "cpu" else f"{dev} ({torch.cuda.get_device_name(dev)})",
        "threads": torch.get_num_threads(),
        "rounds": timed_rounds,
        "warmup": warmup,
        "time_budget_s": time_budget_s if rounds is None else None,
        "micro_repeats": micro_repeats,
        "seed": seed,
        "torch_version": torch.__version__,
        "seconds": time.perf_counter() - t_start,
        "methods": results,
        "errors": errors,
        "targets": target_records,
    }


def _nl_floor(entry: _Entry, timer: _Timer, repeats: int, tick) -> dict:
    """Target 1's ratio: Norm Loss's fused ``before_step`` vs one ``torch._foreach_norm`` over its weights."""
    model, method = entry.model, entry.method
    ws = method.target_weights(model)
    for w in ws:
        if w.grad is None:
            w.grad = torch.zeros_like(w)
    nl, floor = [], []
    for i in range(repeats):
        nl.append(_time_call(lambda: method.before_step(model), timer))
        floor.append(_time_call(lambda: torch._foreach_norm(ws), timer))
        if (i + 1) % max(1, repeats // 5) == 0:
            tick()
    return {
        "nl_ms": _median(nl),
        "floor_ms": _median(floor),
        "ratio_to_foreach_norm": _median(nl) / _median(floor),
        "repeats": repeats,
    }


def _rsgd_speedup(model_name, num_classes, seed, dev, timer, repeats, tick) -> dict:
    """Target 2: the oblique-rsgd optimizer step, impl=fused vs impl=geoopt, on the model's parameters."""
    opts = {}
    for impl in ("geoopt", "fused"):
        e = _prepare("oblique-rsgd", model_name, num_classes, seed, dev, None, None, 1e-3, hp={"impl": impl})
        g = torch.Generator(device="cpu").manual_seed(seed + 1)
        for p in e.model.parameters():
            p.grad = (torch.randn(p.shape, generator=g) * 1e-3).to(dev, p.dtype)
        opts[impl] = e.opt
    params = [p for grp in opts["fused"].param_groups for p in grp["params"]]
    clones = [p.detach().clone().requires_grad_() for p in params]
    for c, p in zip(clones, params, strict=True):
        c.grad = p.grad.clone()
    sgd = torch.optim.SGD(clones, lr=1e-3, momentum=0.9, nesterov=True)
    for o in (*opts.values(), sgd):  # the first step allocates state: not timed
        o.step()
    t = {"geoopt": [], "fused": [], "sgd": []}
    for _ in range(repeats):
        t["geoopt"].append(_time_call(opts["geoopt"].step, timer))
        t["fused"].append(_time_call(opts["fused"].step, timer))
        t["sgd"].append(_time_call(sgd.step, timer))
    tick()
    return {
        "geoopt_ms": _median(t["geoopt"]),
        "fused_ms": _median(t["fused"]),
        "torch_sgd_ms": _median(t["sgd"]),
        "speedup": _median(t["geoopt"]) / _median(t["fused"]),
        "repeats": repeats,
    }


# --------------------------------------------------------------------------- output
def _fmt(v: float, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.{nd}f}"


def format_table(record: dict) -> str:
    """The bench table and the target lines, as printed by ``oblique bench``."""
    head = (
        f"oblique bench: {record['model']} ({record['num_params'] / 1e6:.2f} M parameters, "
        f"{record['num_target_params'] / 1e6:.2f} M targeted), batch {record['batch_size']}, {record['device']}, "
        f"{record['threads']} threads, {record['rounds']} rounds (+{record['warmup']} warm-up), "
        f"torch {record['torch_version']}, {record['seconds']:.0f} s"
    )
    cols = (
        "method",
        "kind",
        "step ms",
        "overhead %",
        "± se",
        "regularizer ms",
        "reg. % of step",
        "peak MB",
        "analytic GFLOP",
        "where the cost goes",
    )
    rows = []
    for name, r in record["methods"].items():
        rows.append(
            (
                name,
                r["kind"],
                _fmt(r["step_ms"], 1),
                _fmt(r["overhead_pct"], 2) if name != "baseline" else "0 (ref)",
                _fmt(r.get("overhead_pct_se"), 2),
                _fmt(r["regularizer_ms"], 3),
                _fmt(r.get("regularizer_pct"), 3),
                _fmt(r["peak_mem_mb"], 1),
                f"{r['analytic_flops'] / 1e9:.4f}",
                r["cost_note"],
            )
        )
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    lines = [head, "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    for name, why in record.get("errors", {}).items():
        lines.append(f"{name}: not benched ({why})")
    for name, t in record.get("targets", {}).items():
        lines.append(
            f"target {name}: {t['figure']}; target {t['target']}: {'holds' if t['holds'] else 'does NOT hold'}"
        )
    return "\n".join(lines)


def _rows(record: dict) -> list[dict]:
    keys = ("model", "depth", "width", "num_params", "num_target_params", "batch_size", "device", "threads")
    return [
        {**{k: record.get(k) for k in keys}, "method": name, **{k: r[k] for k in CSV_COLUMNS if k in r}}
        for name, r in record["methods"].items()
    ]


def write_csv(records: Sequence[dict], path: str | os.PathLike) -> None:
    """One row per model and method, columns :data:`CSV_COLUMNS` (written atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for rec in records:
            for row in _rows(rec):
                w.writerow({k: row.get(k) for k in CSV_COLUMNS})
    os.replace(tmp, path)


def read_bench(path: str | os.PathLike):
    """Read bench results into a pandas DataFrame with the columns :data:`CSV_COLUMNS`.

    Args:
        path: a bench JSON file, a bench CSV file, or a sweep folder (every ``*.json`` record in it).

    Raises:
        oblique.records.RecordError: nothing there, or a file that is not a bench record (one line).
    """
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise records.RecordError(f"no bench records (*.json) in {path}")
        recs = [records.read_json(f) for f in files]
    elif path.suffix == ".csv":
        if not path.exists():
            raise records.RecordError(f"{path}: no such file")
        return pd.read_csv(path)
    else:
        recs = [records.read_json(path)]
    for rec, where in zip(recs, files if path.is_dir() else [path], strict=True):
        if not isinstance(rec, dict) or rec.get("schema") != SCHEMA:
            raise records.RecordError(
                f"{where}: expected a bench record (schema {SCHEMA}); got {str(rec)[:60]!r}"
            )
    rows = [row for rec in recs for row in _rows(rec)]
    return pd.DataFrame([{k: r.get(k) for k in CSV_COLUMNS} for r in rows], columns=list(CSV_COLUMNS))


def run_sweep(
    kind: str, out: str | os.PathLike, models: Sequence[str] | None = None, **bench_kwargs
) -> list[dict]:
    """Bench every model of sweep ``kind`` (``"width"``: WRN-28-1…10; ``"depth"``: ResNet-20…110).

    Writes ``out/<model>.json`` per model (a model already there is not benched again) and
    ``out/bench.csv`` with every model's rows, after each model. ``models`` overrides the sweep's list.
    """
    if kind not in SWEEPS:
        raise BenchError(f"--sweep must be one of {', '.join(SWEEPS)}; got {kind!r}")
    out = Path(out)
    recs = []
    for name in models or SWEEPS[kind]:
        path = out / f"{name}.json"
        rec = records.read_json(path) if path.exists() else None
        if rec is not None and any(
            rec.get(k) != bench_kwargs[k] for k in ("batch_size", "device") if k in bench_kwargs
        ):
            rec = None  # made with another batch size or device: not comparable, bench again
        if rec is None:
            rec = bench(model=name, **bench_kwargs)
            records.write_json_atomic(path, rec)
        recs.append(rec)
        write_csv(recs, out / "bench.csv")
    return recs


# --------------------------------------------------------------------------- the command
def setup_bench(p: argparse.ArgumentParser) -> None:
    """The ``oblique bench`` flags."""
    p.add_argument("--model", default="resnet110", help="model name (see oblique.models); default resnet110")
    p.add_argument("--batch-size", type=int, default=32, help="synthetic batch size; default 32")
    p.add_argument("--methods", default="all", help="all, or comma-separated method names; default all")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto; default cpu")
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="timed rounds, interleaved across methods; default: as many as fit in --time-budget",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=420.0,
        help="seconds for set-up, warm-up and the timed rounds when --rounds is not given; default 420",
    )
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up rounds; default 2")
    p.add_argument(
        "--micro-repeats", type=int, default=40, help="repeats of the isolated measurements; default 40"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads; default torch's")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the models, the batch and the order; default 0"
    )
    p.add_argument("--num-classes", type=int, default=10, help="classifier outputs; default 10")
    p.add_argument("--json", help="write the record to this JSON file")
    p.add_argument("--csv", help="write one row per method to this CSV file")
    p.add_argument("--sweep", choices=tuple(SWEEPS), help="width: WRN-28-1…10; depth: ResNet-20…110")
    p.add_argument(
        "--out", default="bench", help="sweep folder (a JSON per model and bench.csv); default bench"
    )
    p.add_argument("--no-targets", action="store_true", help="skip the two target measurements")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_bench(args: argparse.Namespace) -> int:
    """``oblique bench``: print the table (and the target lines); write JSON/CSV if asked."""
    from oblique.cli import UsageError

    kw = dict(
        methods=args.methods,
        batch_size=args.batch_size,
        device=args.device,
        rounds=args.rounds,
        warmup=args.warmup,
        micro_repeats=args.micro_repeats,
        threads=args.threads,
        seed=args.seed,
        num_classes=args.num_classes,
        progress=not args.no_progress,
        time_budget_s=args.time_budget,
    )
    try:
        if args.sweep:
            recs = run_sweep(args.sweep, args.out, targets=not args.no_targets, **kw)
            for rec in recs:
                print(format_table(rec))
                print()
            print(f"wrote {len(recs)} records and {Path(args.out) / 'bench.csv'}")
            return 0
        record = bench(model=args.model, targets=not args.no_targets, **kw)
    except BenchError as e:
        raise UsageError(str(e)) from None
    print(format_table(record))
    if args.json:
        records.write_json_atomic(args.json, record)
    if args.csv:
        write_csv([record], args.csv)
    return 0
