"""Studies: grids of runs, their executor, and the tables they produce (``oblique study``).

A *study* is a folder of ordinary run directories (``STUDY_DIR/runs/<name>``, see :mod:`oblique.records`)
plus what the study runner writes beside them:

``study.json``
    The planned runs: for each run name, every setting of the run and the values of the grid variables.
``results.csv``
    One row per planned run: every grid variable, ``status`` (``ok``, ``diverged``, ``error`` or
    ``pending``), ``test_error``, ``test_error_top5`` (%), the final drift means (the four
    :data:`oblique.geometry.DRIFT_KEYS`, mean over layers), ``train_time_s``, ``regularizer_time_s``,
    ``diverged_step``.
``summary.md``
    Mean ± std over seeds of every group of runs that differ only in their seed (method × strength ×
    batch size × any other grid variable), in the layout of the paper's tables (best, then the mean in
    parentheses); where the study's dataset and model are a published setting of the Norm Loss poster
    (:data:`PUBLISHED`), the published figures stand beside ours.
``.lock``
    Held (``fcntl.flock``) by the process running the study; holds its PID.

The grid is methods × strengths × seeds × batch sizes × any other run setting. A method whose
``uses_strength`` is false (``baseline``, the hard constraints) ignores the strengths and runs once per
other grid point; its rows say ``strength_applies = False``.

Resuming: a study folder is a *set* of runs. Running a grid into a folder adds the runs it lacks and
skips the finished ones (status ``ok`` or ``diverged``, :func:`oblique.records.is_finished`); an
unfinished run directory (interrupted, crashed) is removed and rerun from the start. A run name that is
already planned with *different* settings (e.g. the same grid with another ``--epochs``) is refused with a
one-line message: pass ``--overwrite`` to start the folder over, or choose another ``--out``.

A study file (``oblique study --config FILE``; flags override it)::

    [study]
    methods = ["nl", "wd", "baseline"]   # or "all"
    strengths = [1e-3, 1e-2, 1e-1]       # omit: each method's default
    seeds = 3                            # or [0, 1, 2]
    batch_sizes = [50, 100]
    workers = 2
    out = "studies/sweep"
    [run]                                # fixed settings of every run (the `oblique run` flags)
    epochs = 10
    [grid]                               # any other run setting (or "hp.NAME") as an axis
    targets = ["conv", "conv+linear"]

Executors: local worker processes (``workers >= 1``; each gets ``max(1, cores // workers)`` torch threads
unless ``--threads`` says otherwise) or, with ``workers = 0``, this process (notebooks, debugging).
Ctrl-C (SIGINT to the process group, or to the study process alone) stops the workers, keeps every
finished run, rewrites ``results.csv`` and ``summary.md`` from what is finished and prints one line.
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import json
import math
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from oblique import records
from oblique.geometry import DRIFT_KEYS

__all__ = [
    "PUBLISHED",
    "PlannedRun",
    "Study",
    "StudyError",
    "StudyLockedError",
    "StudySpec",
    "collect",
    "default_threads",
    "expand",
    "load_study",
    "plan_study",
    "results_frame",
    "run_study",
    "summary_frame",
    "summary_markdown",
]

STUDY_FILE, RESULTS_FILE, SUMMARY_FILE, LOCK_FILE, ERROR_FILE = (
    "study.json",
    "results.csv",
    "summary.md",
    ".lock",
    "study_error.txt",
)
STUDY_SCHEMA = 1

#: Grid variables every study has, in the order of the tables.
BASIC_AXES = ("method", "strength", "batch_size", "seed")
#: Run settings that are not grid variables: how a run is executed, not what it computes.
EXECUTION_FIELDS = ("out", "threads", "progress", "overwrite")


class StudyError(ValueError):
    """An invalid study (grid, study file or folder); the message says expected vs got."""


class StudyLockedError(StudyError):
    """Another process holds the study folder's lock."""


# --------------------------------------------------------------------------- published figures
#: The Norm Loss poster's tables (``reference/norm_loss_poster.md`` in the shared folder; Georgiou et al.,
#: ICPR 2020, arXiv 2103.06583): ``(dataset, model) -> method -> {label: (best, mean)}`` in % test error
#: (top-1; ImageNet also ``top5``). ``None`` = not given. "repr" is the authors' reproduction of the
#: baseline, "pub" the figure published by the method's own paper. OLM-L1 has no method here.
PUBLISHED: dict[tuple[str, str], dict[str, dict[str, tuple[float | None, float | None]]]] = {
    ("imagenet", "resnet50"): {
        "wd": {"repr": (25.29, None), "repr top5": (7.86, None), "pub": (23.85, None)},
        "nl": {"": (24.34, None), "top5": (7.44, None)},
        "oni": {"pub": (23.30, None)},
    },
    ("cifar10", "resnet110"): {
        "wd": {"repr": (6.32, 6.568), "pub": (6.43, 6.61)},
        "wn": {"pub": (None, 7.56)},
        "pbwn": {"pub": (None, 6.27)},
        "oni": {"pub": (None, 6.56)},
        "nl": {"": (5.9, 5.996)},
    },
    ("cifar10", "wrn28-10"): {
        "wd": {"repr": (3.9, 3.966), "pub": (None, 3.89)},
        "olm": {"pub": (None, 3.73)},
        "nl": {"": (4.47, 4.662)},
    },
    ("cifar100", "resnet110"): {
        "wd": {"repr": (27.9, 28.398)},
        "wn": {"pub": (None, 28.38)},
        "pbwn": {"pub": (None, 27.03)},
        "nl": {"": (26.24, 26.526)},
    },
    ("cifar100", "wrn28-10"): {
        "wd": {"repr": (18.85, 19.138), "pub": (None, 18.85)},
        "olm": {"pub": (None, 18.76)},
        "nl": {"": (18.57, 18.648)},
    },
}


def published_cell(dataset: str, model: str, method: str) -> str:
    """The poster's figures for one method in one setting, as ``best (mean)`` text; '' when none."""
    entries = PUBLISHED.get((dataset, model), {}).get(method, {})
    parts = []
    for label, (best, mean) in entries.items():
        text = (f"{best:g}" if best is not None else "–") + (f" ({mean:g})" if mean is not None else "")
        parts.append(f"{label} {text}".strip())
    return "; ".join(parts)


# --------------------------------------------------------------------------- the grid
@dataclass
class StudySpec:
    """A grid of runs.

    Attributes:
        methods: registry names (``oblique.list_methods()``).
        strengths: λ values; ``None`` = each method's default. Ignored by methods without a strength.
        seeds: seeds, one run each.
        batch_sizes: batch sizes; ``None`` = the ``base`` setting (RunConfig's default unless given).
        grid: any other run setting as a grid axis: RunConfig field (or ``hp.NAME``) -> values.
        base: the fixed run settings (RunConfig fields) every run shares.
    """

    methods: list[str]
    strengths: list[float] | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    batch_sizes: list[int] | None = None
    grid: dict[str, list] = field(default_factory=dict)
    base: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedRun:
    """One run of a study: its folder name, its RunConfig settings and its grid-variable values."""

    name: str
    settings: dict
    grid: dict


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._+=-" else "-" for c in text)


def _normalize(obj: Any) -> Any:
    """JSON round trip: what study.json will hold, so planned and stored settings compare equal."""
    return json.loads(json.dumps(obj, sort_keys=True))


def expand(spec: StudySpec) -> list[PlannedRun]:
    """Every run of the grid, in table order (method in registry order, strength, batch size, …, seed).

    Raises:
        StudyError: an unknown grid variable, an empty axis or a repeated value.
        oblique.methods.UnknownMethodError: an unknown method name.
    """
    from oblique.methods import get_method_class
    from oblique.train import RunConfig

    fields_ = RunConfig.field_names()
    for key, values in spec.grid.items():
        name = key[3:] if key.startswith("hp.") else key
        if not key.startswith("hp.") and (
            name not in fields_
            or name in EXECUTION_FIELDS
            or name in ("method", "strength", "seed", "batch_size", "hp")
        ):
            valid = [
                f
                for f in fields_
                if f not in EXECUTION_FIELDS + ("method", "strength", "seed", "batch_size", "hp")
            ]
            raise StudyError(
                f"grid variable {key!r} is not a run setting; valid: {', '.join(valid)}, hp.NAME "
                "(method, strength, seed and batch size have their own flags)"
            )
        if not isinstance(values, list) or not values:
            raise StudyError(f"grid variable {key!r} needs a non-empty list of values; got {values!r}")
    axes = {
        "methods": spec.methods,
        "seeds": spec.seeds,
        **({"strengths": spec.strengths} if spec.strengths is not None else {}),
        **({"batch sizes": spec.batch_sizes} if spec.batch_sizes is not None else {}),
        **{f"grid variable {k!r}": v for k, v in spec.grid.items()},
    }
    for what, values in axes.items():
        if not values:
            raise StudyError(f"{what}: expected at least one value; got none")
        if len({json.dumps(v) for v in values}) != len(values):
            raise StudyError(f"{what}: a value is repeated in {values!r}")
    for seed in spec.seeds:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise StudyError(f"seeds must be integers >= 0; got {seed!r}")
    for s in spec.strengths or []:
        if not (isinstance(s, int | float) and not isinstance(s, bool) and s >= 0 and math.isfinite(s)):
            raise StudyError(f"strengths must be numbers >= 0; got {s!r}")

    classes = {m: get_method_class(m) for m in spec.methods}
    batch_sizes = spec.batch_sizes or [spec.base.get("batch_size")]  # None: the model's recipe
    extra_keys = list(spec.grid)
    declared = {m: {h.name for h in cls.hyperparameters} for m, cls in classes.items()}
    asked = set(spec.base.get("hp") or {}) | {k[3:] for k in extra_keys if k.startswith("hp.")}
    for key in sorted(asked - set().union(*declared.values())):
        raise StudyError(f"no method of this study has a hyperparameter {key!r} (see 'oblique methods -v')")
    runs: list[PlannedRun] = []
    seen: set[str] = set()
    for method in spec.methods:
        cls = classes[method]
        if cls.uses_strength:
            strengths: list[float | None] = list(spec.strengths) if spec.strengths is not None else [None]
        else:
            strengths = [None]
        for strength, bs, *extra in itertools.product(
            strengths, batch_sizes, *(spec.grid[k] for k in extra_keys)
        ):
            for seed in spec.seeds:
                settings = {k: v for k, v in spec.base.items() if k not in EXECUTION_FIELDS}
                settings.update(method=method, strength=strength, seed=seed, batch_size=bs)
                hp = dict(settings.get("hp") or {})
                values = dict(zip(extra_keys, extra, strict=True))
                for key, value in values.items():
                    if key.startswith("hp."):
                        hp[key[3:]] = value
                    else:
                        settings[key] = value
                # a method hyperparameter applies to the methods that declare it (--hp iters=3 with
                # --methods all sets ONI's iterations and leaves the others alone)
                settings["hp"] = {k: v for k, v in hp.items() if k in declared[method]}
                if cls.uses_strength:  # the resolved λ, so the same run is the same settings however asked
                    settings["strength"] = (
                        float(strength) if strength is not None else float(cls.default_strength)
                    )
                try:  # every setting resolved (the model's recipe filled in): study.json says what each run computes
                    resolved = asdict(RunConfig(**settings).resolved())
                except TypeError as e:
                    raise StudyError(f"run settings: {e}") from None
                settings = {k: v for k, v in resolved.items() if k not in EXECUTION_FIELDS}
                bs = settings["batch_size"]
                lam = settings["strength"] if cls.uses_strength else None
                parts = [method] + ([f"lam{lam:g}"] if lam is not None else []) + [f"bs{bs}"]
                parts += [f"{k[3:] if k.startswith('hp.') else k}{_fmt(v)}" for k, v in values.items()]
                parts.append(f"seed{seed}")
                name = _safe("_".join(parts))
                if name in seen:  # pragma: no cover - names are built from the distinct grid values
                    raise StudyError(f"two runs of the grid would share the folder name {name!r}")
                seen.add(name)
                grid = {
                    "method": method,
                    "strength": lam,
                    "strength_applies": bool(cls.uses_strength),
                    "batch_size": bs,
                    "seed": seed,
                    **values,
                }
                runs.append(PlannedRun(name, _normalize(settings), _normalize(grid)))
    return runs


# --------------------------------------------------------------------------- the study folder
@dataclass
class Study:
    """A study folder and its planned runs (``study.json``)."""

    root: Path
    runs: dict[str, dict]  # name -> {"settings": ..., "grid": ...}
    grid_variables: list[str]

    def run_dir(self, name: str) -> Path:
        return self.root / "runs" / name

    def status(self, name: str) -> str:
        """``ok``, ``diverged``, ``error`` (crashed; see ``study_error.txt``), ``interrupted`` or ``pending``."""
        d = self.run_dir(name)
        try:
            status = records.read_summary(d).get("status", "pending")
        except records.RecordError:
            status = "pending"
        if status not in records.FINISHED and (d / ERROR_FILE).exists():
            return "error"
        return status

    def unfinished(self) -> list[str]:
        return [n for n in self.runs if not records.is_finished(self.run_dir(n))]


def load_study(root: str | os.PathLike) -> Study:
    """Read ``STUDY_DIR/study.json``.

    Raises:
        StudyError: the folder holds no study, or its study.json is not one this version reads.
    """
    root = Path(root)
    if not (root / STUDY_FILE).exists():
        raise StudyError(
            f"{root} holds no study ({STUDY_FILE} missing); run 'oblique study --out {root}' first"
        )
    try:
        data = records.read_json(root / STUDY_FILE)
    except records.RecordError as e:
        raise StudyError(str(e)) from None
    if (
        not isinstance(data, dict)
        or data.get("schema") != STUDY_SCHEMA
        or not isinstance(data.get("runs"), dict)
    ):
        raise StudyError(
            f"{root / STUDY_FILE}: expected a study file of schema {STUDY_SCHEMA}; got something else"
        )
    return Study(root, data["runs"], list(data.get("grid_variables", BASIC_AXES)))


def _write_study(study: Study) -> None:
    records.write_json_atomic(
        study.root / STUDY_FILE,
        {"schema": STUDY_SCHEMA, "grid_variables": study.grid_variables, "runs": study.runs},
    )


def plan_study(
    root: str | os.PathLike, runs: Sequence[PlannedRun], *, overwrite: bool = False
) -> tuple[Study, int]:
    """Merge ``runs`` into the study at ``root`` (creating it); return the study and how many runs were new.

    Raises:
        StudyError: a run name already planned with different settings (unless ``overwrite``, which
            deletes the folder's runs and results first).
    """
    root = Path(root)
    if overwrite and (root / STUDY_FILE).exists():  # never wipe a folder that is not a study
        for name in ("runs", "figures"):
            shutil.rmtree(root / name, ignore_errors=True)
        for name in (STUDY_FILE, RESULTS_FILE, SUMMARY_FILE):
            (root / name).unlink(missing_ok=True)
    study = load_study(root) if (root / STUDY_FILE).exists() else Study(root, {}, list(BASIC_AXES))
    for run in runs:
        old = study.runs.get(run.name)
        if old is not None and old["settings"] != run.settings:
            diff = sorted(
                k
                for k in set(old["settings"]) | set(run.settings)
                if old["settings"].get(k) != run.settings.get(k)
            )
            raise StudyError(
                f"{root} already holds run {run.name} with other settings ({', '.join(diff)} differ); "
                "pass --overwrite to start this study folder over, or choose another --out"
            )
    new = 0
    for run in runs:
        if run.name not in study.runs:
            study.runs[run.name] = {"settings": run.settings, "grid": run.grid}
            new += 1
        for key in run.grid:
            if key not in study.grid_variables and key != "strength_applies":
                study.grid_variables.append(key)
    root.mkdir(parents=True, exist_ok=True)
    _write_study(study)
    return study, new


class _Lock:
    """An exclusive ``fcntl.flock`` on ``STUDY_DIR/.lock`` (released when the process ends), with our PID."""

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / LOCK_FILE
        self._f = open(self.path, "a+")
        try:
            fcntl.flock(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._f.seek(0)
            pid = self._f.read().strip() or "unknown"
            self._f.close()
            raise StudyLockedError(
                f"study folder {root} is in use by another oblique study (pid {pid}); wait for it to end "
                "or choose another --out"
            ) from None
        self._f.seek(0)
        self._f.truncate()
        self._f.write(f"{os.getpid()}\n")
        self._f.flush()

    def release(self) -> None:
        if not self._f.closed:
            fcntl.flock(self._f, fcntl.LOCK_UN)
            self._f.close()

    def __enter__(self) -> _Lock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# --------------------------------------------------------------------------- executing one run
def default_threads(workers: int) -> int:
    """Torch threads per worker so that ``workers`` processes do not oversubscribe the cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, workers))


def _run_one(task: dict) -> tuple:
    """Train one planned run (in a worker or in this process); return the message for the parent.

    ``("done", name, brief)`` or ``("error", name, message)``; a KeyboardInterrupt propagates.
    """
    from oblique.train import RunConfig, train

    name, out = task["name"], Path(task["out"])
    try:
        cfg = RunConfig(**task["settings"], out=str(out), threads=task["threads"], progress=False)
        s = train(cfg)
        return ("done", name, _brief(s))
    except KeyboardInterrupt:
        raise
    except Exception as e:  # a crashed run must not stop the study; the file says why
        out.mkdir(parents=True, exist_ok=True)
        (out / ERROR_FILE).write_text(traceback.format_exc())
        return ("error", name, f"{type(e).__name__}: {e}".splitlines()[0])


def _brief(summary: Mapping) -> dict:
    keep = ("status", "test_error", "diverged_step", "train_time_s")
    out = {k: summary.get(k) for k in keep}
    out["norm_dev_mean"] = summary.get("drift", {}).get("mean", {}).get("norm_dev_mean")
    return out


def _interrupt_when_parent_dies() -> None:  # pragma: no cover - runs in a child process
    """Linux: SIGINT this process when its parent dies (a killed study leaves no orphan training on)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGINT))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(conn) -> None:  # pragma: no cover - runs in a child process (tested end to end)
    """A worker process: train the runs the parent sends until it sends ``None``.

    SIGINT is ignored while idle (the parent tells idle workers to stop) and raises KeyboardInterrupt only
    while a run trains, so ``train`` records the run as interrupted and the worker exits quietly.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _interrupt_when_parent_dies()
    try:
        while True:
            task = conn.recv()
            if task is None:
                return
            signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                msg = _run_one(task)
            except KeyboardInterrupt:
                msg = ("interrupted", task["name"], None)
            finally:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            conn.send(msg)
            if msg[0] == "interrupted":
                return
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        return


class _Worker:
    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child,), daemon=True)
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the child starts with SIGINT ignored
        try:
            self.proc.start()
        finally:
            signal.signal(signal.SIGINT, old)
        child.close()
        self.current: str | None = None

    def send(self, task: dict | None) -> None:
        self.current = task["name"] if task else None
        try:
            self.conn.send(task)
        except (BrokenPipeError, OSError):
            pass


def _line(study: Study, name: str, msg: tuple) -> str:
    g = study.runs[name]["grid"]
    lam = f" λ={g['strength']:g}" if g.get("strength") is not None else ""
    extra = "".join(f" {k}={_fmt(v)}" for k, v in g.items() if k not in BASIC_AXES + ("strength_applies",))
    head = f"{g['method']}{lam} bs={g['batch_size']}{extra} seed={g['seed']}:"
    kind, _, info = msg
    if kind == "error":
        return f"{head} failed ({info}); see {study.run_dir(name) / ERROR_FILE}"
    if kind == "interrupted":
        return f"{head} interrupted"
    if info["status"] == "diverged":
        return (
            f"{head} diverged at step {info['diverged_step']} (non-finite loss), {info['train_time_s']:.1f} s"
        )
    return (
        f"{head} test error {info['test_error']:.2f} %, drift {info['norm_dev_mean']:.3g} (norm_dev_mean), "
        f"{info['train_time_s']:.1f} s"
    )


@dataclass
class StudyResult:
    """What :func:`run_study` did."""

    study: Study
    ran: list[str]
    failed: list[str]
    interrupted: bool


def run_study(
    root: str | os.PathLike,
    runs: Sequence[PlannedRun],
    *,
    workers: int = 2,
    threads: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    echo=None,
) -> StudyResult:
    """Plan ``runs`` into the study at ``root``, train every unfinished run, write the tables.

    Args:
        root: the study folder.
        runs: from :func:`expand`.
        workers: worker processes; 0 trains in this process.
        threads: torch threads per run; ``None`` = :func:`default_threads`.
        overwrite: start the folder over (see :func:`plan_study`).
        progress: a tqdm bar over runs.
        echo: called with one line per finished run (default: ``tqdm.write``).

    Returns:
        The :class:`StudyResult`. ``interrupted`` is true when SIGINT stopped the study (the tables are
        written from the finished runs either way).

    Raises:
        StudyLockedError: another process runs a study in ``root``.
        StudyError: the runs conflict with the study already in ``root``.
    """
    from oblique.train import remove_run

    root = Path(root)
    if workers < 0:
        raise StudyError(f"--workers must be an integer >= 0; got {workers}")
    threads = threads or default_threads(workers)
    with _Lock(root):
        study, _ = plan_study(root, runs, overwrite=overwrite)
        todo = study.unfinished()
        for name in todo:  # unfinished runs start over (train's checkpoints are final-only)
            remove_run(study.run_dir(name))
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(study.runs),
            initial=len(study.runs) - len(todo),
            desc="study",
            unit="run",
            disable=not progress,
            dynamic_ncols=True,
        )
        say = echo or (lambda line: bar.write(line, file=sys.stderr))
        ran: list[str] = []
        failed: list[str] = []
        interrupted = False

        def finished(name: str, msg: tuple) -> None:
            say(_line(study, name, msg))
            (failed if msg[0] == "error" else ran).append(name)
            bar.update(1)

        tasks = [
            {
                "name": n,
                "out": str(study.run_dir(n)),
                "settings": study.runs[n]["settings"],
                "threads": threads,
            }
            for n in todo
        ]
        try:
            if workers == 0:
                for task in tasks:
                    finished(task["name"], _run_one(task))
            else:
                interrupted = _run_pool(tasks, workers, finished)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
            old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the tables be written
            try:
                collect(study)
            finally:
                signal.signal(signal.SIGINT, old)
    return StudyResult(study, ran, failed, interrupted)


def _run_pool(tasks: list[dict], workers: int, finished) -> bool:
    """Train ``tasks`` on ``workers`` processes; return True when stopped by SIGINT."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")  # never fork a process that holds torch's thread pools
    pending = list(reversed(tasks))
    tasks_by_name = {t["name"]: t for t in tasks}
    pool = [_Worker(ctx) for _ in range(min(workers, len(tasks)))]
    try:
        while True:
            for w in pool:
                if w.current is None and pending and w.proc.is_alive():
                    w.send(pending.pop())
            busy = [w for w in pool if w.current is not None]
            if not busy and not pending:
                return False
            ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in pool], timeout=1.0)
            for w in list(pool):
                msg = None
                if w.conn in ready:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        msg = None
                if msg is not None:
                    name = w.current
                    w.current = None
                    if msg[0] == "interrupted":
                        raise KeyboardInterrupt
                    finished(name, msg)
                elif w.proc.sentinel in ready or not w.proc.is_alive():
                    w.proc.join(timeout=5)
                    if w.current is not None:  # a worker died mid-run (killed, out of memory)
                        name, w.current = w.current, None
                        why = f"worker process exited with code {w.proc.exitcode}"
                        run_dir = Path(tasks_by_name[name]["out"])
                        run_dir.mkdir(parents=True, exist_ok=True)
                        (run_dir / ERROR_FILE).write_text(why + "\n")
                        finished(name, ("error", name, why))
                    pool.remove(w)
                    if pending:
                        pool.append(_Worker(ctx))
    except KeyboardInterrupt:
        _stop(pool)
        return True
    finally:
        for w in pool:
            w.send(None)
        for w in pool:
            w.proc.join(timeout=10)
            if w.proc.is_alive():  # pragma: no cover - a stuck worker
                w.proc.kill()


def _stop(pool: list[_Worker]) -> None:
    """Stop every worker: SIGINT to those still training (if the group's SIGINT missed them), then wait."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and any(w.proc.is_alive() and w.current for w in pool):
            time.sleep(0.05)
        for w in pool:
            if w.proc.is_alive() and w.current is not None:
                os.kill(w.proc.pid, signal.SIGINT)
            w.current = None
    finally:
        signal.signal(signal.SIGINT, old)


# --------------------------------------------------------------------------- collecting
def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def results_frame(study: Study | str | os.PathLike):
    """One row per planned run (pandas DataFrame): grid variables, status, errors, final drift, times."""
    import pandas as pd

    if not isinstance(study, Study):
        study = load_study(study)
    rows = []
    for name, entry in study.runs.items():
        settings, grid = entry["settings"], entry["grid"]
        row: dict[str, Any] = {"run": name, **grid}
        row.update(
            model=settings.get("model"),
            dataset=settings.get("dataset"),
            targets=settings.get("targets"),
            epochs=settings.get("epochs"),
        )
        if "targets" in grid:
            row["targets"] = grid["targets"]
        status = study.status(name)
        row["status"] = status
        summary: dict = {}
        if status in records.FINISHED:
            summary = records.read_summary(study.run_dir(name))
        mean = (summary.get("drift") or {}).get("mean") or {}
        row.update(
            test_error=_float(summary.get("test_error")),
            test_error_top5=_float(summary.get("test_error_top5")),
            **{k: _float(mean.get(k)) for k in DRIFT_KEYS},
            train_time_s=_float(summary.get("train_time_s")),
            regularizer_time_s=_float(summary.get("regularizer_time_s")),
            steps=summary.get("steps"),
            diverged_step=summary.get("diverged_step"),
        )
        rows.append(row)
    frame = pd.DataFrame.from_records(rows)
    if not frame.empty:
        frame["diverged_step"] = frame["diverged_step"].astype("Int64")
        frame["steps"] = frame["steps"].astype("Int64")
    return frame


def _group_keys(study: Study) -> list[str]:
    return [k for k in study.grid_variables if k != "seed"]


def summary_frame(study: Study | str | os.PathLike):
    """Mean, std, best over seeds per group of runs that differ only in the seed (pandas DataFrame).

    Only runs with status ``ok`` enter the statistics; ``runs``, ``ok``, ``diverged`` count the group.
    """
    import pandas as pd

    if not isinstance(study, Study):
        study = load_study(study)
    res = results_frame(study)
    keys = _group_keys(study)
    rows = []
    if res.empty:
        return pd.DataFrame(columns=keys)
    for values, g in res.groupby(keys, sort=False, dropna=False):
        ok = g[g["status"] == "ok"]
        row = dict(zip(keys, values, strict=True))
        row.update(
            strength_applies=bool(g["strength_applies"].iloc[0]),
            model=g["model"].iloc[0],
            dataset=g["dataset"].iloc[0],
            runs=len(g),
            ok=len(ok),
            diverged=int((g["status"] == "diverged").sum()),
            error_best=ok["test_error"].min() if len(ok) else float("nan"),
            error_mean=ok["test_error"].mean() if len(ok) else float("nan"),
            error_std=ok["test_error"].std(ddof=1) if len(ok) > 1 else float("nan"),
            top5_mean=ok["test_error_top5"].mean() if len(ok) else float("nan"),
            **{f"{k}_mean": ok[k].mean() if len(ok) else float("nan") for k in DRIFT_KEYS},
            train_time_s=ok["train_time_s"].mean() if len(ok) else float("nan"),
            regularizer_time_s=ok["regularizer_time_s"].mean() if len(ok) else float("nan"),
        )
        rows.append(row)
    return pd.DataFrame.from_records(rows)


def _num(x: float, spec: str) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def summary_markdown(study: Study | str | os.PathLike) -> str:
    """``summary.md``: the poster's layout — test error best (mean ± std over seeds) per group of runs."""
    if not isinstance(study, Study):
        study = load_study(study)
    sf = summary_frame(study)
    if sf.empty:
        return "No runs.\n"
    keys = _group_keys(study)
    extra = [k for k in keys if k not in ("method", "strength", "batch_size")]
    settings = {(r["settings"].get("dataset"), r["settings"].get("model")) for r in study.runs.values()}
    published = [s for s in settings if s in PUBLISHED]
    header = [
        "method",
        "λ",
        "batch",
        *extra,
        "test error % best (mean ± std)",
        "top-5 %",
        "norm_dev_mean",
        "offdiag_dev",
        "time s",
        "runs",
    ]
    if published:
        header.append("published best (mean)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in sf.iterrows():
        err = (
            f"{_num(r['error_best'], '.2f')} ({_num(r['error_mean'], '.2f')} ± {_num(r['error_std'], '.2f')})"
        )
        lam = _num(r["strength"], "g") if r["strength_applies"] else "—"
        runs = f"{r['ok']}/{r['runs']}" + (f", {r['diverged']} diverged" if r["diverged"] else "")
        cells = [
            r["method"], lam, str(r["batch_size"]), *(_fmt(r[k]) for k in extra), err,
            _num(r["top5_mean"], ".2f"), _num(r["norm_dev_mean_mean"], ".3g"), _num(r["offdiag_dev_mean"], ".3g"),
            _num(r["train_time_s"], ".1f"), runs,
        ]  # fmt: skip
        if published:
            cells.append(published_cell(r["dataset"], r["model"], r["method"]) or "–")
        lines.append("| " + " | ".join(cells) + " |")
    base = next(iter(study.runs.values()))["settings"]
    note = (
        f"\nTest error in %, over seeds: best (mean ± sample std); {base.get('model')} on {base.get('dataset')}, "
        f"{base.get('epochs')} epochs; drift: final, mean over layers; time: training wall time per run.\n"
    )
    if published:
        note += "Published: the Norm Loss poster (Georgiou et al., ICPR 2020), by dataset and model only.\n"
    return "\n".join(lines) + "\n" + note


def collect(study: Study | str | os.PathLike) -> tuple[Path, Path]:
    """Write ``results.csv`` and ``summary.md`` (atomically) from the runs on disk; return their paths."""
    if not isinstance(study, Study):
        study = load_study(study)
    res = results_frame(study)
    csv_path, md_path = study.root / RESULTS_FILE, study.root / SUMMARY_FILE
    records.write_text_atomic(csv_path, res.to_csv(index=False))
    records.write_text_atomic(md_path, summary_markdown(study))
    return csv_path, md_path


# --------------------------------------------------------------------------- the commands
def _csv(kind, what: str):
    def parse(text: str) -> list:
        try:
            return [kind(t.strip()) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None

    return parse


def _seeds(text: str) -> list[int]:
    """``N`` = seeds 0..N-1; a comma list (``3,`` for the single seed 3) = those seeds."""
    try:
        if "," not in text:
            n = int(text)
            if n < 1:
                raise ValueError
            return list(range(n))
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a count N >= 1 or a comma list of seeds, got {text!r}"
        ) from None


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _grid_flag(text: str) -> tuple[str, list]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=V1,V2,..., got {text!r}")
    key, values = text.split("=", 1)
    return key.strip().replace("-", "_"), [_value(v.strip()) for v in values.split(",") if v.strip()]


_STUDY_KEYS = ("methods", "strengths", "seeds", "batch_sizes", "workers", "out")


def setup_study(p: argparse.ArgumentParser) -> None:
    """The ``oblique study`` flags."""
    from oblique.cli import add_run_arguments

    p.add_argument("--config", help="TOML study file: [study] methods/strengths/seeds/batch_sizes/workers/out, "
                   "[run] fixed run settings, [grid] NAME = [values]; flags override it")  # fmt: skip
    p.add_argument("--methods", help="comma-separated method names, or 'all' (default: all)")
    p.add_argument("--strengths", type=_csv(float, "numbers"), help="λ values; default: each method's own")
    p.add_argument("--seeds", type=_seeds, help="N (seeds 0..N-1) or a comma list; default 3")
    p.add_argument(
        "--batch-sizes", dest="batch_sizes", type=_csv(int, "integers"), help="batch sizes; default 100"
    )
    p.add_argument("--grid", type=_grid_flag, action="append", metavar="NAME=V1,V2",
                   help="any other run setting (or hp.NAME) as a grid axis; repeatable")  # fmt: skip
    p.add_argument("--workers", type=int, help="worker processes (0: this process); default 2")
    p.add_argument("--out", help="study folder; default studies/default")
    p.add_argument("--overwrite", action="store_true", help="delete the study folder's runs and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-figures", action="store_true", help="do not write the figures")
    add_run_arguments(p, exclude=("--method", "--strength", "--seed", "--batch-size", "--out"))


def spec_from_args(args: argparse.Namespace) -> tuple[StudySpec, dict]:
    """The :class:`StudySpec` and the study options (workers, out) from a study file and the flags."""
    from oblique.cli import RUN_FLAGS, UsageError, read_toml, run_config_from
    from oblique.methods import list_methods

    file: dict = read_toml(args.config) if getattr(args, "config", None) else {}
    unknown = sorted(set(file) - {"study", "run", "grid"})
    if unknown:
        raise UsageError(f"{args.config}: unknown table(s) {', '.join(unknown)}; valid: study, run, grid")
    study_t, run_t, grid_t = file.get("study", {}), dict(file.get("run", {})), dict(file.get("grid", {}))
    bad = sorted(set(study_t) - set(_STUDY_KEYS))
    if bad:
        raise UsageError(
            f"{args.config}: unknown [study] key(s) {', '.join(bad)}; valid: {', '.join(_STUDY_KEYS)}"
        )
    opts = {k: study_t[k] for k in _STUDY_KEYS if k in study_t}
    for k in _STUDY_KEYS:
        if getattr(args, k, None) is not None:
            opts[k] = getattr(args, k)
    for key, values in getattr(args, "grid", None) or []:
        grid_t[key] = values

    methods = opts.get("methods", "all")
    if isinstance(methods, str):
        methods = (
            list_methods()
            if methods.strip() == "all"
            else [m.strip() for m in methods.split(",") if m.strip()]
        )
    seeds = opts.get("seeds", 3)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(seeds))
    given = {dest: getattr(args, dest) for _, dest, _ in RUN_FLAGS if hasattr(args, dest)}
    if "hp" in given:
        given["hp"] = {**run_t.get("hp", {}), **dict(given["hp"])}
    run_t.update(given)
    source = str(getattr(args, "config", None) or "command line")
    run_config_from(run_t, source=source)  # unknown or mistyped run settings fail here, in one line
    base = {k.replace("-", "_"): v for k, v in run_t.items()}
    for k in ("method", "strength", "seed", "batch_size"):
        if k in base:
            raise UsageError(f"{source}: {k!r} is a grid variable; use the study's {k}s setting instead")
    spec = StudySpec(
        methods=list(methods),
        strengths=opts.get("strengths"),
        seeds=list(seeds),
        batch_sizes=opts.get("batch_sizes"),
        grid={k.replace("-", "_"): v for k, v in grid_t.items()},
        base=base,
    )
    return spec, {"workers": opts.get("workers", 2), "out": opts.get("out", "studies/default")}


def cmd_study(args: argparse.Namespace) -> int:
    """``oblique study``: run the grid, print the summary table, write the figures."""
    from oblique.cli import UsageError
    from oblique.train import ConfigError, RunConfig

    spec, opts = spec_from_args(args)
    workers = opts["workers"]
    if not isinstance(workers, int) or workers < 0:
        raise UsageError(f"--workers must be an integer >= 0; got {workers!r}")
    try:
        runs = expand(spec)
        for run in runs:  # validate every run before anything is written
            RunConfig(**run.settings).validate()
    except (StudyError, ConfigError) as e:
        raise UsageError(str(e)) from None
    except TypeError as e:
        raise UsageError(f"grid: {e}") from None
    t0 = time.perf_counter()

    def _terminate(signum, frame):  # SIGTERM (kill, a batch scheduler) stops the study as Ctrl-C does
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, _terminate)
    try:
        result = run_study(
            opts["out"],
            runs,
            workers=workers,
            threads=spec.base.get("threads"),
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except StudyError as e:
        raise UsageError(str(e)) from None
    finally:
        signal.signal(signal.SIGTERM, old_term)
    study = result.study
    done = sum(records.is_finished(study.run_dir(n)) for n in study.runs)
    if result.interrupted:
        print(
            f"oblique: study interrupted: {done} of {len(study.runs)} runs finished and kept in {study.root}; "
            "run the same command again to finish it",
            file=sys.stderr,
        )
        return 130
    print(summary_markdown(study))
    print(f"{len(result.ran)} runs trained, {done} of {len(study.runs)} finished, in {time.perf_counter() - t0:.0f} s; "
          f"results: {study.root / RESULTS_FILE}")  # fmt: skip
    if not args.no_figures:
        _figures(study.root, None, False)
    if result.failed:
        print(f"oblique: {len(result.failed)} runs failed (see their {ERROR_FILE}); run the command again to retry them",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _figures(root: Path, bench: str | None, per_layer: bool) -> list[Path]:
    try:
        from analysis import write_figures  # the CLI face may import analysis, lazily (DESIGN.md)
    except ImportError as e:  # pragma: no cover - analysis ships in the same distribution
        print(f"oblique: figures not written: the analysis package cannot be imported ({e})", file=sys.stderr)
        return []
    paths = write_figures(root, bench=bench, per_layer=per_layer, echo=print)
    print(f"figures: {root / 'figures'} ({len(paths)} files)")
    return paths


def setup_plot(p: argparse.ArgumentParser) -> None:
    """The ``oblique plot`` flags."""
    p.add_argument("study_dir", metavar="STUDY_DIR", help="a study folder written by 'oblique study'")
    p.add_argument("--bench", help="bench records (file or folder) for the cost figure")
    p.add_argument("--per-layer", action="store_true", help="also draw the drift of every layer")


def cmd_plot(args: argparse.Namespace) -> int:
    """``oblique plot STUDY_DIR``: write the figures and tables into ``STUDY_DIR/figures``."""
    from oblique.cli import UsageError

    try:
        load_study(args.study_dir)
    except StudyError as e:
        raise UsageError(str(e)) from None
    _figures(Path(args.study_dir), args.bench, args.per_layer)
    return 0
