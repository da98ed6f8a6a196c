"""Planning a study: the grid (:class:`StudySpec`), its runs (:func:`expand`), and the study file.

The grid is methods × strengths × seeds × batch sizes × optimizers × any other run setting. A method whose
``uses_strength`` is false (``baseline``, the hard constraints) ignores the strengths and runs once per
other grid point; its rows say ``strength_applies = False``. The optimizers (``--optimizers sgd,muon``) are
the grid variable ``optimizer``, the same as ``[grid] optimizer = [...]`` (the same runs, the same names);
a method that brings its own optimizer (a Riemannian one: sgd or adam) runs with those of them it takes.
:func:`expand` checks the grid and every run's settings (:meth:`oblique.config.RunConfig.validate`) before
anything is written.

A study file (``oblique study --config FILE``; flags override it), read by :func:`spec_from_tables`::

    [study]
    methods = ["nl", "wd", "baseline"]   # or "all"
    strengths = [1e-3, 1e-2, 1e-1]       # omit: each method's default
    seeds = 3                            # or [0, 1, 2]
    batch_sizes = [50, 100]
    optimizers = ["sgd", "muon"]         # omit: the run's optimizer (the model's recipe's)
    workers = 2
    out = "studies/sweep"
    [run]                                # fixed settings of every run (the `oblique run` flags)
    preset = "mnist1d-paper"             # optional: a preset's settings beneath these (oblique presets)
    epochs = 10
    [grid]                               # any other run setting (or "hp.NAME") as an axis
    targets = ["conv", "conv+linear"]

Executors (how the runs are trained: here, in worker processes) are :mod:`oblique.study.executor`'s
business; the plan is the same for every executor.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from oblique.config import RUN_OPTIONS, SEED_LIMIT, RunConfig, settings_from
from oblique.errors import ObliqueError
from oblique.options import check_folder, is_integer, is_number
from oblique.text import short as _short
from oblique.text import value as _fmt

__all__ = [
    "BASIC_AXES",
    "EXECUTION_FIELDS",
    "MAX_RUNS",
    "STUDY_KEYS",
    "PlannedRun",
    "StudyError",
    "StudySpec",
    "expand",
    "spec_from_tables",
    "study_table",
]

#: Grid variables every study has, in the order of the tables.
BASIC_AXES = ("method", "strength", "batch_size", "seed")
#: Run settings that are not grid variables: how a run is executed, not what it computes (declared by each
#: RunConfig field's :class:`oblique.config.Execution`). They are kept out of study.json's planned settings
#: (a study can be resumed with another ``--device``); those a study passes on reach every run it starts
#: (:func:`oblique.study.execute.execution_settings`).
EXECUTION_FIELDS = RunConfig.execution_settings()
#: Settings with an axis of their own (not allowed in ``[run]`` or ``[grid]``).
_OWN_AXES = ("method", "strength", "seed", "batch_size", "hp")
#: The most runs one study may plan: a grid beyond it is a typo (``--seeds 1000000000000``), not a plan.
MAX_RUNS = 100_000
#: The most worker processes a study may ask for.
MAX_WORKERS = 1024
#: The keys of a study file's ``[study]`` table.
STUDY_KEYS = ("methods", "strengths", "seeds", "batch_sizes", "optimizers", "workers", "out")


class StudyError(ObliqueError, ValueError):
    """An invalid study (grid, study file or folder); the message says expected vs got."""


@dataclass
class StudySpec:
    """A grid of runs.

    Attributes:
        methods: registry names (``oblique.list_methods()``).
        strengths: λ values; ``None`` = each method's default. Ignored by methods without a strength.
        seeds: seeds, one run each.
        batch_sizes: batch sizes; ``None`` = the ``base`` setting (RunConfig's default unless given).
        optimizers: optimizers (``"sgd"``, ``"adam"``, ``"adamw"``, ``"muon"``), the grid variable
            ``optimizer``; ``None`` = the ``base`` setting (the model's recipe's unless given). A method
            that brings its own optimizer runs with those of them it takes
            (:meth:`oblique.methods.base.Method.accepted_optimizers`).
        grid: any other run setting as a grid axis: RunConfig field (or ``hp.NAME``) -> values.
        base: the fixed run settings (RunConfig fields) every run shares.
    """

    methods: list[str]
    strengths: list[float] | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    batch_sizes: list[int] | None = None
    grid: dict[str, list] = field(default_factory=dict)
    base: dict[str, Any] = field(default_factory=dict)
    optimizers: list[str] | None = None


@dataclass(frozen=True)
class PlannedRun:
    """One run of a study: its folder name, its RunConfig settings and its grid-variable values."""

    name: str
    settings: dict
    grid: dict


# --------------------------------------------------------------------------- the grid → its runs
def expand(spec: StudySpec) -> list[PlannedRun]:
    """Every run of the grid, in table order (method in the order the study lists them, strength, batch size, …, seed).

    Every run's settings are resolved (the model's recipe filled in) and validated.

    Raises:
        StudyError: an unknown grid variable, an empty axis or a repeated value, a hyperparameter no
            method of the study has.
        oblique.config.ConfigError: a run setting that is not valid.
        oblique.methods.UnknownMethodError: an unknown method name.
    """
    from oblique.methods import get_method_class

    _check_axes(spec)
    classes = {m: get_method_class(m) for m in spec.methods}
    declared = {m: {h.name for h in cls.hyperparameters} for m, cls in classes.items()}
    _check_hyperparameters(spec, declared)
    batch_sizes = spec.batch_sizes or [spec.base.get("batch_size")]  # None: the model's recipe
    grid = _grid_axes(spec)
    per_method = len(batch_sizes) * math.prod(len(v) for v in grid.values()) * len(spec.seeds)
    total = sum(
        per_method * (len(spec.strengths or [None]) if c.uses_strength else 1) for c in classes.values()
    )
    if total > MAX_RUNS:
        raise StudyError(
            f"this grid has {total} runs; a study plans at most {MAX_RUNS}: use fewer seeds or values, or "
            "split it into several studies"
        )
    runs: list[PlannedRun] = []
    data_checked: set = set()
    for method, cls in classes.items():
        strengths = (spec.strengths or [None]) if cls.uses_strength else [None]
        axes = _method_axes(grid, cls)
        for strength, bs, *extra in itertools.product(strengths, batch_sizes, *axes.values()):
            values = dict(zip(axes, extra, strict=True))
            runs += _planned_runs(spec, method, cls, declared[method], strength, bs, values, data_checked)
    return runs


def _grid_axes(spec: StudySpec) -> dict[str, list]:
    """The grid variables beyond method, strength, batch size and seed: the optimizers (as the grid
    variable ``optimizer``, first), then :attr:`StudySpec.grid`."""
    if spec.optimizers is None:
        return dict(spec.grid)
    return {"optimizer": list(spec.optimizers), **spec.grid}


def _method_axes(grid: dict[str, list], cls) -> dict[str, list]:
    """``grid`` for the method ``cls``: a method that brings its own optimizer keeps the optimizers it takes
    (one it takes none of is refused); a value that is no optimizer at all is left for the run's check.

    Raises:
        StudyError: none of the optimizers applies to the method.
    """
    from oblique.methods.base import OPTIMIZERS

    if "optimizer" not in grid:
        return grid
    accepted = cls.accepted_optimizers()
    kept = [v for v in grid["optimizer"] if v in accepted or v not in OPTIMIZERS]
    if not kept:
        own = "brings its own Riemannian optimizer" if cls.kind == "riemannian" else "trains with"
        raise StudyError(
            f"method {cls.name} {own}, {' or '.join(accepted)}: none of the study's optimizers "
            f"({', '.join(map(str, grid['optimizer']))}) applies to it: add {' or '.join(accepted)} to them, or "
            f"leave {cls.name} out of the methods",
            settings=("optimizers",),
        )
    return {**grid, "optimizer": kept}


def _check_axes(spec: StudySpec) -> None:
    fields_ = RunConfig.field_names()
    valid = [f for f in fields_ if f not in EXECUTION_FIELDS + _OWN_AXES]
    for key, values in spec.grid.items():
        if key == "preset":  # a preset is a whole setting under the others, not one value among them
            raise StudyError("preset cannot be a grid variable; run one study per preset (--preset NAME)")
        if not key.startswith("hp.") and key not in valid:
            raise StudyError(
                f"grid variable {key!r} is not a run setting; valid: {', '.join(valid)}, hp.NAME "
                "(method, strength, seed and batch size have their own flags)"
            )
        if not isinstance(values, list) or not values:
            raise StudyError(f"grid variable {key!r} needs a non-empty list of values; got {values!r}")
    if spec.optimizers is not None:
        if "optimizer" in spec.grid:
            raise StudyError(
                "the optimizer is given twice, as optimizers and as grid variable 'optimizer': give "
                "optimizers only",
                settings=("optimizers",),
            )
        if spec.base.get("optimizer") is not None:
            raise StudyError(
                f"optimizer {spec.base['optimizer']} is fixed for every run and optimizers is a grid "
                "axis: give one of them",
                settings=("optimizer", "optimizers"),
            )
        if not isinstance(spec.optimizers, list) or not all(isinstance(o, str) for o in spec.optimizers):
            raise StudyError(
                f"optimizers must be a list of optimizer names; got {_short(spec.optimizers)}",
                settings=("optimizers",),
            )
    axes = {
        "methods": spec.methods,
        "seeds": spec.seeds,
        **({"strengths": spec.strengths} if spec.strengths is not None else {}),
        **({"batch sizes": spec.batch_sizes} if spec.batch_sizes is not None else {}),
        **({"optimizers": spec.optimizers} if spec.optimizers is not None else {}),
        **{f"grid variable {k!r}": v for k, v in spec.grid.items()},
    }
    for what, values in axes.items():
        if not values:
            raise StudyError(f"{what}: expected at least one value; got none")
        if len({json.dumps(v) for v in values}) != len(values):
            raise StudyError(f"{what}: a value is repeated in {values!r}")
    for seed in spec.seeds:
        if not is_integer(seed) or seed < 0:
            raise StudyError(f"seeds must be integers >= 0; got {seed!r}")
        if seed >= SEED_LIMIT:
            raise StudyError(f"seeds must be integers < 2**63; got {seed!r}")
    for s in spec.strengths or []:
        if not (is_number(s) and s >= 0):
            raise StudyError(f"strengths must be numbers >= 0; got {s!r}")


def _check_hyperparameters(spec: StudySpec, declared: dict[str, set[str]]) -> None:
    asked = set(spec.base.get("hp") or {}) | {k[3:] for k in spec.grid if k.startswith("hp.")}
    for key in sorted(asked - set().union(*declared.values())):
        raise StudyError(f"no method of this study has a hyperparameter {key!r} (see 'oblique methods -v')")


def _planned_runs(spec, method, cls, declared, strength, bs, values, data_checked: set) -> list[PlannedRun]:
    """The runs of one grid point, one per seed: their settings resolved and validated (once: only the
    seed differs, and every seed was checked), their grid values, their folder names. The data set's
    folder is checked once per data set and root (``data_checked``), so a missing one is refused up front."""
    settings = {k: v for k, v in spec.base.items() if k not in EXECUTION_FIELDS}
    settings.update(method=method, strength=strength, seed=spec.seeds[0], batch_size=bs)
    hp = dict(settings.get("hp") or {})
    for key, v in values.items():
        if key.startswith("hp."):
            hp[key[3:]] = v
        else:
            settings[key] = v
    # a method hyperparameter applies to the methods that declare it (--hp iters=3 with --methods all
    # sets ONI's iterations and leaves the others alone)
    settings["hp"] = {k: v for k, v in hp.items() if k in declared}
    if cls.uses_strength:  # the resolved λ, so the same run is the same settings however asked
        settings["strength"] = float(strength) if strength is not None else float(cls.default_strength)
    try:  # every setting resolved (the model's recipe filled in): study.json says what each run computes
        cfg = RunConfig(**settings).resolved()
    except TypeError as e:
        raise StudyError(f"run settings: {e}") from None
    if "optimizer" in values and cfg.optimizer != "muon" and "muon_lr" not in values:
        cfg = replace(cfg, muon_lr=None)  # a fixed muon_lr applies to the Muon runs of an optimizer axis
    cfg.validate()
    if (cfg.dataset, cfg.data_root) not in data_checked:
        cfg.check_data(download=bool(spec.base.get("download")))  # downloads, if asked, once, up front
        data_checked.add((cfg.dataset, cfg.data_root))
    settings = _normalize({k: v for k, v in cfg.recorded().items() if k not in EXECUTION_FIELDS})
    lam = settings["strength"] if cls.uses_strength else None
    parts = [method] + ([f"lam{lam:g}"] if lam is not None else []) + [f"bs{settings['batch_size']}"]
    parts += [f"{k[3:] if k.startswith('hp.') else k}{_fmt(v)}" for k, v in values.items()]
    grid = _normalize(
        {
            "method": method,
            "strength": lam,
            "strength_applies": bool(cls.uses_strength),
            "batch_size": settings["batch_size"],
            "seed": spec.seeds[0],
            **values,
        }
    )
    return [
        PlannedRun(
            _safe("_".join([*parts, f"seed{seed}"])), {**settings, "seed": seed}, {**grid, "seed": seed}
        )
        for seed in spec.seeds
    ]


def _safe(text: str) -> str:
    """``text`` as a folder name: odd characters replaced, a name too long for a filesystem cut and
    completed by a hash of the whole (so distinct runs keep distinct folders)."""
    name = "".join(c if c.isalnum() or c in "._+=-" else "-" for c in text)
    if len(name) > 160:
        name = name[:140] + "-" + hashlib.sha256(text.encode()).hexdigest()[:16]
    return name


def _normalize(obj: Any) -> Any:
    """JSON round trip: what study.json will hold, so planned and stored settings compare equal."""
    return json.loads(json.dumps(obj, sort_keys=True))


# --------------------------------------------------------------------------- the study file
def spec_from_tables(tables: Mapping[str, Any], source: str = "study file") -> tuple[StudySpec, dict]:
    """The :class:`StudySpec` and the study options (``workers``, ``out``) from a study file's tables.

    ``tables`` holds ``study``, ``run`` and ``grid`` (the module docstring's format; the command line
    lays its flags over a file's tables before calling this). ``source`` names them in messages.

    Raises:
        StudyError: an unknown table or key, a value of the wrong type.
        oblique.config.ConfigError: an unknown run setting, a run setting of the wrong kind, threads out of
            range.
    """
    from oblique.methods import list_methods

    if not isinstance(tables, Mapping):
        raise StudyError(f"{source}: expected the tables study, run and grid; got {_short(tables)}")
    unknown = sorted(set(tables) - {"study", "run", "grid"})
    if unknown:
        raise StudyError(f"{source}: unknown table(s) {', '.join(unknown)}; valid: study, run, grid")
    study_t, run_t, grid_t = (study_table(tables, name, source) for name in ("study", "run", "grid"))
    bad = sorted(set(study_t) - set(STUDY_KEYS))
    if bad:
        raise StudyError(f"{source}: unknown [study] key(s) {', '.join(bad)}; valid: {', '.join(STUDY_KEYS)}")
    methods = study_t.get("methods", "all")
    if isinstance(methods, str):
        methods = (
            list_methods()
            if methods.strip() == "all"
            else [m.strip() for m in methods.split(",") if m.strip()]
        )
    if not (isinstance(methods, list) and all(isinstance(m, str) for m in methods)):
        raise StudyError(
            f"methods must be 'all', comma-separated method names or a list of them; got {_short(methods)}",
            settings=("methods",),
        )
    seeds = study_t.get("seeds", 3)
    if is_integer(seeds):
        if not 1 <= seeds <= MAX_RUNS:
            raise StudyError(
                f"seeds must be a count from 1 to {MAX_RUNS} or a list of seeds; got {seeds!r}",
                settings=("seeds",),
            )
        seeds = list(range(seeds))
    optimizers = study_t.get("optimizers")
    if isinstance(optimizers, str):
        optimizers = [o.strip() for o in optimizers.split(",") if o.strip()]
    for key, what, example in (
        ("seeds", "a count N >= 1 or a list of seeds", "[1]"),
        ("strengths", "a list of numbers", "[0.1]"),
        ("batch_sizes", "a list of integers", "[1]"),
        ("optimizers", "a list of optimizer names", '["sgd", "muon"]'),
    ):
        value = {"seeds": seeds, "optimizers": optimizers}.get(key, study_t.get(key))
        if value is not None and not isinstance(value, list):
            raise StudyError(f"{key} must be {what} (e.g. {example}); got {_short(value)}", settings=(key,))
    base = {k.replace("-", "_"): v for k, v in run_t.items()}
    for k in ("method", "strength", "seed", "batch_size"):
        if k in base:
            raise StudyError(f"{source}: {k!r} is a grid variable; use the study's {k}s setting instead")
    base = settings_from(base, source=source)  # the preset's settings beneath the file's and the flags'
    cfg = RunConfig(**base)  # mistyped run settings fail here (unknown ones above), in one line
    RUN_OPTIONS["threads"].check(cfg.threads)  # the study decides threads: else every run would fail
    workers = study_t.get("workers", 2)
    if not is_integer(workers) or not 0 <= workers <= MAX_WORKERS:
        what = "an integer >= 0" if not is_integer(workers) or workers < 0 else f"an integer <= {MAX_WORKERS}"
        raise StudyError(f"workers must be {what}; got {_short(workers)}", settings=("workers",))
    spec = StudySpec(
        methods=list(methods),
        strengths=study_t.get("strengths"),
        seeds=list(seeds),
        batch_sizes=study_t.get("batch_sizes"),
        grid={k.replace("-", "_"): v for k, v in grid_t.items()},
        base=base,
        optimizers=optimizers,
    )
    return spec, {"workers": workers, "out": _study_out(study_t.get("out", "studies/default"))}


def study_table(tables: Mapping[str, Any], name: str, source: str = "study file") -> dict:
    """The table ``name`` of a study file's ``tables`` (empty when absent), as a dict.

    Raises:
        StudyError: it is not a table (``study = 5``)."""
    value = tables.get(name, {})
    if not isinstance(value, Mapping):
        raise StudyError(f"{source}: {name} must be a table ([{name}]); got {_short(value)}")
    return dict(value)


def _study_out(out: Any) -> str:
    """The study folder setting, checked: a folder name that is a folder or can become one."""
    return check_folder("out", out, error=StudyError)
