"""The bench of one model: its settings (:class:`BenchConfig`) and :func:`bench`, over named steps.

:func:`bench` prepares every method on its own copy of the model (:mod:`oblique.cost.entries`) and a
second baseline (the A/A control, Note [noise floor] in :mod:`oblique.cost.targets`), times the
interleaved rounds, then the isolated parts, measures the targets (:mod:`oblique.cost.targets`) and
each method's peak memory (:mod:`oblique.cost.memory`), and returns the record
(:mod:`oblique.cost.record`; the format is in :mod:`oblique.cost`'s docstring).

Every setting is validated once, when the :class:`BenchConfig` is made; a bad one raises
:class:`BenchError`, whose message names the setting (``rounds must be an integer >= 1; got 0``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from oblique.clock import Clock
from oblique.config import MAX_THREADS, SEED_LIMIT, ConfigError, device_name, environment, resolve_device
from oblique.cost.entries import Entry, plain_sgd_fn, prepare_entry, reparam_fn
from oblique.cost.memory import peak_mem_mb
from oblique.cost.record import SCHEMA, model_dims
from oblique.cost.targets import (
    Measuring,
    compares_all,
    declared_targets,
    evaluate,
    measure,
    resolved,
    target_ticks,
)
from oblique.cost.timing import median, quantile, robust_se, time_call
from oblique.errors import ObliqueError
from oblique.methods import CostTarget, list_methods
from oblique.models import MODELS, ModelDependencyError, UnknownModelError, input_shape
from oblique.options import Option, OptionError
from oblique.progress import progress

__all__ = [
    "MAX_ROUNDS",
    "MIN_ROUNDS",
    "BenchConfig",
    "BenchError",
    "bench",
    "device_name",
    "environment",
    "resolve_methods",
    "used_device",
]

#: adaptive rounds (``rounds=None``): at least this many timed rounds, at most that many
MIN_ROUNDS, MAX_ROUNDS = 8, 200
#: the largest synthetic batch and classifier a bench builds (beyond them the bench only runs out of memory)
MAX_BATCH_SIZE, MAX_CLASSES = 65_536, 100_000

#: the learning rate of every method's optimizer: small, as the synthetic batch is repeated and the
#: weights should stay sane over the rounds
_LR = 1e-3


class BenchError(ObliqueError, ValueError):
    """A bench setting that cannot work (unknown model or method, bad numbers); one line."""


def resolve_methods(spec: str | Sequence[str]) -> list[str]:
    """``"all"`` or a comma-separated list of method names → the names, ``baseline`` first.

    >>> resolve_methods("wd, nl,wd")
    ['baseline', 'wd', 'nl']

    Raises:
        BenchError: an unknown name (the message lists the valid ones).
    """
    valid = list_methods()
    names = (
        valid if spec == "all" else [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    )
    names = [n for n in names if n]
    if not names:
        raise BenchError(
            f"methods must name at least one method; got {spec!r}; valid: all, {', '.join(valid)}",
            settings=("methods",),
        )
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise BenchError(f"unknown method(s) {', '.join(unknown)}; valid: all, {', '.join(valid)}")
    return ["baseline"] + [n for n in dict.fromkeys(names) if n != "baseline"]


def _check_int(setting: str, value: Any, lo: int, hi: int | None = None, *, below: int | None = None) -> None:
    """``value`` checked as an integer from ``lo`` to ``hi`` (or below ``below``), by the one option check.

    Raises:
        BenchError: naming ``setting``, in the options' one wording (:class:`oblique.options.Option`).
    """
    option = Option(
        setting, lo, minimum=lo, maximum=hi if below is None else below, max_exclusive=below is not None
    )
    try:
        option.check(value)
    except OptionError as e:
        raise BenchError(str(e), settings=e.settings) from None


@dataclass(frozen=True)
class BenchConfig:
    """Every setting of one bench, validated when made.

    Attributes:
        model: a registered model name (``oblique.models.list_models()``).
        methods: ``"all"`` or names; ``baseline`` is always included (the overheads need it).
        batch_size: synthetic batch size.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (the record keeps it as asked, and the
            device used, its type and the card's name apart). On CUDA the bench runs with cuDNN
            autotuning on, as ``oblique run`` trains there (unless torch's deterministic mode is on).
        rounds: timed rounds (every method stepped once per round, in random order); ``None``: as many
            as fit in ``time_budget_s`` (at least :data:`MIN_ROUNDS`, at most :data:`MAX_ROUNDS`).
        warmup: untimed rounds first.
        micro_repeats: repeats of the isolated measurements (reparametrizations, optimizer steps, targets).
        threads: torch CPU threads (``None``: torch's default).
        seed: seed of the models' initialization, the batch and the method order.
        num_classes: classifier outputs.
        targets: also measure the targets that apply to the benched methods (:mod:`oblique.cost.targets`).
        progress: show the progress on stderr (a bar on a terminal, a plain line now and then in a log).
        time_budget_s: with ``rounds=None``, the seconds from the start of the bench to the end of the
            timed rounds (the isolated measurements and the memory step follow, typically under a minute
            for ResNet-110 on the CPU): 420 s keeps the default ResNet-110 bench under 10 minutes.

    Raises:
        BenchError: a bad number, an unknown device, model or method; the message names the setting.

    >>> BenchConfig(model="cnn", rounds=0)
    Traceback (most recent call last):
    ...
    oblique.cost.bench.BenchError: rounds must be an integer >= 1; got 0
    """

    model: str = "resnet110"
    methods: str | Sequence[str] = "all"
    batch_size: int = 32
    device: str = "cpu"
    rounds: int | None = None
    warmup: int = 2
    micro_repeats: int = 40
    threads: int | None = None
    seed: int = 0
    num_classes: int = 10
    targets: bool = True
    progress: bool = True
    time_budget_s: float = 420.0

    def __post_init__(self) -> None:
        if self.rounds is not None:
            _check_int("rounds", self.rounds, 1)
        _check_int("warmup", self.warmup, 0)
        _check_int("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        _check_int("micro_repeats", self.micro_repeats, 1)
        if self.threads is not None:
            _check_int("threads", self.threads, 1, MAX_THREADS)
        _check_int("num_classes", self.num_classes, 1, MAX_CLASSES)
        _check_int("seed", self.seed, 0, below=SEED_LIMIT)
        t = self.time_budget_s
        if not (isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t) and t > 0):
            raise BenchError(
                f"time_budget_s must be a number of seconds > 0; got {t!r}", settings=("time_budget_s",)
            )
        self.torch_device()
        self.input_shape()
        self.method_names()

    def torch_device(self) -> torch.device:
        """:attr:`device` as a device that exists here."""
        try:
            return resolve_device(self.device)
        except ConfigError as e:
            raise BenchError(str(e), settings=e.settings) from None

    def input_shape(self) -> tuple[int, ...]:
        """The model's input shape, without the batch dimension."""
        try:
            return input_shape(self.model)
        except UnknownModelError:
            raise BenchError(f"unknown model {self.model!r}; valid: {', '.join(MODELS)}") from None
        except ValueError as e:  # a WRN-d-k that cannot be built
            raise BenchError(f"model {self.model}: {e}", settings=("model",)) from None

    def method_names(self) -> list[str]:
        """The benched methods' names, ``baseline`` first (:func:`resolve_methods`)."""
        return resolve_methods(self.methods)


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0]


@contextmanager
def _progress(config: BenchConfig, total: int | None) -> Iterator[Callable[..., Any]]:
    """``tick(n=1)``: advances the progress on stderr (:func:`oblique.progress.progress`: a bar on a
    terminal, a plain line now and then in a log; nothing without ``config.progress``)."""
    bar = progress(total, f"bench {config.model}", "step", enabled=config.progress)
    try:
        yield bar.update
    finally:
        bar.close()


def used_device(device: torch.device) -> torch.device:
    """``device`` with its index (``cuda`` → ``cuda:0``, the current one), as the record says it."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


@contextmanager
def _like_training(device: torch.device) -> Iterator[None]:
    """cuDNN autotuning on CUDA, as ``oblique run`` trains there (unless ``--deterministic``); restored
    afterwards. Nothing changes on the CPU."""
    before = torch.backends.cudnn.benchmark
    if device.type == "cuda" and not torch.are_deterministic_algorithms_enabled():
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


@dataclass
class _Bench:
    """One bench under way: the prepared methods and what the measurements after the rounds need."""

    config: BenchConfig
    device: torch.device
    t_start: float
    entries: list[Entry]
    errors: dict[str, str]
    aa: Entry  # the A/A control: the baseline once more, on its own copy of the model
    by_name: dict[str, Entry] = field(init=False)
    reparam: dict[str, Callable[[], None]] = field(init=False)  # reparametrizations: forward + backward alone
    riem: dict[str, tuple[Callable[[], None], Callable[[], None]]] = field(init=False)  # own step, plain SGD
    targets: dict[str, CostTarget] = field(init=False)  # the targets to measure, by method name

    def __post_init__(self) -> None:
        self.by_name = {e.name: e for e in self.entries}
        self.reparam = {
            e.name: fn
            for e in self.entries
            if e.method.kind == "reparam" and (fn := reparam_fn(e)) is not None
        }
        self.riem = {e.name: plain_sgd_fn(e) for e in self.entries if e.method.kind == "riemannian"}
        self.targets = {  # those the benched methods declare and that apply to them, in registry order
            name: target
            for name, target in declared_targets().items()
            if self.config.targets and name in self.by_name and target.applies(self.by_name[name].method)
        }

    @classmethod
    def prepare(cls, config: BenchConfig) -> _Bench:
        """Every method on its own copy of the model, with the same synthetic batch; a method that cannot
        act on this model is left out, with why (``errors``)."""
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        dev, shape = config.torch_device(), config.input_shape()
        t_start = time.perf_counter()
        g = torch.Generator().manual_seed(config.seed)
        x = torch.randn(config.batch_size, *shape, generator=g).to(dev)
        y = torch.randint(config.num_classes, (config.batch_size,), generator=g).to(dev)
        entries: list[Entry] = []
        errors: dict[str, str] = {}
        for name in config.method_names():
            try:
                entries.append(
                    prepare_entry(name, config.model, config.num_classes, config.seed, dev, x, y, _LR)
                )
            except ModelDependencyError as e:
                raise BenchError(str(e)) from None
            except (ValueError, RuntimeError, NotImplementedError) as e:
                if name == "baseline":
                    raise
                errors[name] = _one_line(e)
        aa = prepare_entry("baseline", config.model, config.num_classes, config.seed, dev, x, y, _LR)
        return cls(config, dev, t_start, entries, errors, aa)

    def progress_total(self) -> int | None:
        """The progress bar's steps (unknown with adaptive rounds)."""
        c = self.config
        if c.rounds is None:
            return None
        steps = (c.warmup + c.rounds) * (len(self.entries) + 1)  # the rounds, with the A/A control
        steps += c.micro_repeats * (len(self.reparam) + len(self.riem))  # the isolated parts
        steps += sum(target_ticks(t) for t in self.targets.values())  # the targets
        return steps + len(self.entries)  # the memory steps

    def time_rounds(self, clock: Clock, tick: Callable[[], None]) -> int:
        """The warm-up and timed rounds, each stepping every method once in a fresh random order; a method
        that fails is dropped (with why). Returns the number of timed rounds."""
        c, entries, aa = self.config, self.entries, self.aa
        rng = random.Random(c.seed)
        order = [*entries, aa]
        r = 0
        t_rounds = time.perf_counter()
        while c.rounds is None or r < c.warmup + c.rounds:
            rng.shuffle(order)
            for e in order:
                try:
                    e.step(clock)
                except (RuntimeError, ValueError) as err:  # a method that fails at this size
                    if e is aa or e.name == "baseline":
                        raise
                    self.errors[e.name] = _one_line(err)
                    entries.remove(e)
                tick()
            order = [e for e in order if e is aa or e in entries]
            r += 1
            now = time.perf_counter()
            if r == c.warmup:
                for e in (*entries, aa):
                    e.clear()
                t_rounds = now
            timed = r - c.warmup
            if c.rounds is None and timed >= 1:  # adaptive: stop before the budget runs out
                per_round = (now - t_rounds) / timed
                left = c.time_budget_s - (now - self.t_start)
                if timed >= MAX_ROUNDS or (timed >= MIN_ROUNDS and left < per_round):
                    break
        return r - c.warmup

    def time_isolated(self, clock: Clock, tick: Callable[[], None]) -> dict[str, dict[str, float]]:
        """The isolated parts, interleaved: ``{method: {"reparam_ms" | "optimizer_extra_ms": ms}}``."""
        rep_ms: dict[str, list[float]] = {k: [] for k in self.reparam}
        riem_ms: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in self.riem}
        for _ in range(self.config.micro_repeats):
            for k, fn in self.reparam.items():
                rep_ms[k].append(time_call(fn, clock))
                tick()
            for k, (own, plain) in self.riem.items():
                riem_ms[k][0].append(time_call(own, clock))
                riem_ms[k][1].append(time_call(plain, clock))
                tick()
        parts = {k: {"reparam_ms": median(ms)} for k, ms in rep_ms.items()}
        parts |= {
            k: {"optimizer_extra_ms": median(own) - median(plain)} for k, (own, plain) in riem_ms.items()
        }
        return parts

    def measure_targets(self, clock: Clock, tick: Callable[[], None]) -> dict[str, dict[str, Any]]:
        """The measurements of the targets that apply (:mod:`oblique.cost.targets`), by method name."""
        c = self.config
        how = Measuring(c.model, c.num_classes, c.seed, self.device, clock, c.micro_repeats, tick)
        return {name: measure(self.by_name[name], target, how) for name, target in self.targets.items()}

    def measure_peaks(self, tick: Callable[[], None]) -> dict[str, float]:
        """Every method's peak memory of one step (:func:`oblique.cost.memory.peak_mem_mb`)."""
        peaks = {}
        for e in self.entries:
            peaks[e.name] = peak_mem_mb(e, self.device)
            tick()
        return peaks

    def _paired(self, a: Entry, b: Entry) -> list[float]:
        """``step(a) − step(b)`` of every timed round, in % of the median baseline step."""
        base_med = median(self.by_name["baseline"].step_ms)
        return [(x - y) / base_med * 100 for x, y in zip(a.step_ms, b.step_ms, strict=True)]

    def aa_control(self) -> dict[str, float | None]:
        """The A/A control (Note [noise floor] in :mod:`oblique.cost.targets`): the second baseline's
        paired difference to the baseline (median ± robust se, % of the baseline step) and the floor."""
        paired = self._paired(self.aa, self.by_name["baseline"])
        se = robust_se(paired) if len(paired) >= 4 else None  # too few rounds: no floor
        center = median(paired)
        return {
            "step_ms": median(self.aa.step_ms),
            "overhead_pct": center,
            "overhead_pct_se": se,
            "floor_pct": None if se is None else abs(center) + 2 * se,
        }

    def paired_to(self, name: str) -> dict[str, float]:
        """Every other method's step minus ``name``'s, paired round by round (median, % of the baseline
        step): what the "lowest" verdict compares (Note [noise floor])."""
        ref = self.by_name[name]
        return {
            e.name: median(self._paired(e, ref)) for e in self.entries if e.name not in ("baseline", name)
        }

    def summarize(
        self, isolated: dict[str, dict[str, float]], peaks: dict[str, float], floor: float | None = None
    ) -> dict[str, dict]:
        """The record's ``methods`` table (the module docstring of :mod:`oblique.cost` says what each is);
        ``floor``: the A/A floor, for ``overhead_resolved``."""
        base = self.by_name["baseline"]
        base_med = median(base.step_ms)
        results: dict[str, dict] = {}
        for e in self.entries:
            paired = [(a - b) / base_med * 100 for a, b in zip(e.step_ms, base.step_ms, strict=True)]
            parts = {"in_step_ms": median(e.reg_ms), **isolated.get(e.name, {})}
            kind = e.method.kind
            reg_ms = 0.0 if kind == "none" else sum(parts.values())
            results[e.name] = {
                "kind": kind,
                "step_ms": median(e.step_ms),
                "step_ms_q25": quantile(e.step_ms, 0.25),
                "step_ms_q75": quantile(e.step_ms, 0.75),
                "overhead_pct": 0.0 if e is base else median(paired),
                # standard error of that median, robust to the odd slow round: 1.2533·(IQR/1.349)/√n
                "overhead_pct_se": 0.0 if e is base or len(paired) < 4 else robust_se(paired),
                # beyond the bench's own bias and noise (the A/A floor)? None for the baseline
                "overhead_resolved": None if e is base else resolved(median(paired), floor),
                "regularizer_ms": reg_ms,
                "regularizer_parts": parts,
                "optimizer_ms": median(e.opt_ms),
                "peak_mem_mb": peaks[e.name],
                "analytic_flops": float(e.method.analytic_flops(e.model)),
                "cost_note": e.method.describe_cost(),
                # the isolated regularizer time as a share of the baseline step
                "regularizer_pct": reg_ms / base_med * 100,
            }
        return results

    def record(
        self,
        rounds: int,
        methods: dict[str, dict],
        targets: dict[str, dict],
        aa: dict[str, float],
        env: dict[str, Any],
    ) -> dict[str, Any]:
        """The bench record (schema :data:`oblique.cost.record.SCHEMA`)."""
        c, dev = self.config, self.device
        base = self.by_name["baseline"]
        depth, width = model_dims(c.model)
        return {
            "schema": SCHEMA,
            "model": c.model,
            "depth": depth,
            "width": width,
            "num_params": sum(p.numel() for p in base.model.parameters()),
            "num_target_params": sum(w.numel() for w in base.method.target_weights(base.model)),
            "input_shape": list(c.input_shape()),
            "batch_size": c.batch_size,
            "device": c.device,  # as asked: "auto", "cuda", "cuda:1", "cpu"
            "device_used": str(used_device(dev)),
            "device_type": dev.type,
            "device_name": env["device_name"],
            "environment": env,
            "threads": torch.get_num_threads(),
            "rounds": rounds,
            "warmup": c.warmup,
            "time_budget_s": c.time_budget_s if c.rounds is None else None,
            "micro_repeats": c.micro_repeats,
            "seed": c.seed,
            "torch_version": torch.__version__,
            "seconds": time.perf_counter() - self.t_start,
            "aa": aa,
            "methods": methods,
            "errors": self.errors,
            "targets": targets,
        }


def bench(config: BenchConfig | None = None, **settings: Any) -> dict[str, Any]:
    """Bench every method of ``config.methods`` on ``config.model``; return the record (see
    :mod:`oblique.cost`).

    Args:
        config: the settings; ``None``: a :class:`BenchConfig` made from ``settings``.
        **settings: :class:`BenchConfig` fields, as keywords (``bench(model="resnet20", methods="nl,wd",
            batch_size=8)``), or replacing those of ``config``.

    Raises:
        BenchError: bad settings, unknown model or method.
    """
    if config is None:
        config = BenchConfig(**settings)
    elif not isinstance(config, BenchConfig):
        raise TypeError(f"bench() takes a BenchConfig or keywords (bench(model=...)); got {config!r}")
    elif settings:
        config = replace(config, **settings)
    run = _Bench.prepare(config)
    clock = Clock(run.device)
    with _like_training(run.device), _progress(config, run.progress_total()) as tick:
        env = environment(run.device)
        rounds = run.time_rounds(clock, tick)
        isolated = run.time_isolated(clock, tick)
        targets = run.measure_targets(clock, tick)
        peaks = run.measure_peaks(tick)
    aa = run.aa_control()
    methods = run.summarize(isolated, peaks, aa["floor_pct"])
    for name, t in targets.items():
        if compares_all(run.targets[name]):
            t["vs"] = run.paired_to(name)
    evaluate(targets, methods, aa, run.device.type)
    return run.record(rounds, methods, targets, aa, env)
