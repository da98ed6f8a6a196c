"""Run records in the formats the field's tools read: TensorBoard event files and one flat per-step CSV.

Both read the run folders only (``config.json``, ``metrics.jsonl``, ``summary.json``; the schema is in
:mod:`oblique.records`), after the fact, so they work on runs written before this module existed, and on
runs still training or killed (whatever their records hold so far). ``PATH`` is a run folder, or any
folder with run folders under it (a study: ``STUDY/runs/*``).

:func:`export_csv` — ``PATH/steps.csv`` by default; needs nothing beyond the standard library. One row per
step of every run: the run (its folder, relative to ``PATH``), the settings that identify it
(:data:`IDENTITY`, and every other setting whose value differs between the exported runs), then
:data:`STEP_COLUMNS`: the step record's ``loss`` (train cross-entropy of the batch), ``lr`` and ``reg``
(the regularizer, unscaled); the mean drift over layers where a drift record has that step (step 0: before
training); the test error and loss where an evaluation has it. Empty cells where a record has no value.

:func:`export_tensorboard` — ``PATH/tensorboard/<run>/`` by default; needs the ``tensorboard`` package
(``pip install 'oblique[tensorboard]'``), whose writer ``torch.utils.tensorboard`` uses. Per run, scalars
against the step (:data:`TB_SCALARS`: ``train/loss``, ``train/lr``, ``train/reg``, ``test/error``,
``test/error_top5``, ``test/loss``, ``drift/<key>`` for the four drift means) and the resolved config as
TensorBoard hyperparameters (lists and tables as JSON text), with the final ``test/error`` and
``drift/norm_dev_mean`` as its metrics. Exporting again replaces the event files of the same run; a run's
events are written whole into ``<run>.partial`` first and moved in after, so an export stopped part-way
leaves the events of the previous export in place.

>>> sorted(TB_SCALARS)[:3]
['drift/ddiag_dev', 'drift/norm_dev_max', 'drift/norm_dev_mean']
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

from oblique import records, storage
from oblique.config import RunConfig
from oblique.errors import ObliqueError

__all__ = [
    "DRIFT_KEYS",
    "IDENTITY",
    "STEP_COLUMNS",
    "TB_SCALARS",
    "ExportError",
    "export_csv",
    "export_tensorboard",
    "find_runs",
    "step_rows",
]

#: the drift means of a drift record (docs/DESIGN.md, "Drift metrics"; :data:`oblique.geometry.DRIFT_KEYS`)
DRIFT_KEYS = ("norm_dev_mean", "norm_dev_max", "ddiag_dev", "offdiag_dev")
#: the settings that name a run, first in every row of the CSV
IDENTITY = ("method", "strength", "batch_size", "seed", "model", "dataset", "targets", "epochs")
#: the per-step columns of the CSV
STEP_COLUMNS = (
    "step",
    "epoch",
    "loss",
    "lr",
    "reg",
    *DRIFT_KEYS,
    "test_error",
    "test_error_top5",
    "test_loss",
)
#: settings never used to tell runs apart: the run settings that only say where and how one process ran
#: (declared by each RunConfig field's :class:`oblique.config.Execution`), and the record's keys of what
#: the machine made of the run (its thread count, device, torch version, parameter count) or that repeat
#: settings already in their own columns (``method_config``, ``hp``: the hyperparameters)
_NOT_IDENTITY = {
    *RunConfig.execution_settings(tells_runs_apart=False),
    *("threads_used", "device_used", "torch_version", "num_params", "method_config", "hp"),
}
#: TensorBoard tag -> (record type, field)
TB_SCALARS = {
    "train/loss": ("step", "loss"),
    "train/lr": ("step", "lr"),
    "train/reg": ("step", "reg"),
    "test/error": ("eval", "test_error"),
    "test/error_top5": ("eval", "test_error_top5"),
    "test/loss": ("eval", "test_loss"),
    **{f"drift/{k}": ("drift", k) for k in DRIFT_KEYS},
}
TENSORBOARD_EXTRA = "pip install 'oblique[tensorboard]'"


class ExportError(ObliqueError, ValueError):
    """Nothing to export, or an exporter that cannot run here; one line that says what to do."""


def find_runs(path: str | os.PathLike) -> list[Path]:
    """The run folders at ``path``: ``path`` itself when it is one, else every run folder under it.

    Raises:
        ExportError: ``path`` does not exist or holds no run.
    """
    path = Path(path)
    if not path.is_dir():
        raise ExportError(f"{path}: no such folder; give a run folder or a study folder")
    if (path / records.METRICS).exists() or (path / records.CONFIG).exists():
        return [path]
    runs = [p for p in records.list_runs(path) if (p / records.METRICS).exists()]
    if not runs:
        raise ExportError(f"{path} holds no run records (no run folder with {records.METRICS} under it)")
    return runs


def _config(run: Path) -> dict:
    try:
        return records.read_config(run)
    except storage.RecordError:
        return {}


def step_rows(run: str | os.PathLike) -> list[dict[str, Any]]:
    """Every step of one run as a row of :data:`STEP_COLUMNS` (``None`` where a record has no value),
    ordered by step; drift and evaluation records join the step they were taken at."""
    rows: dict[int, dict[str, Any]] = {}

    def row(step: int) -> dict[str, Any]:
        return rows.setdefault(int(step), dict.fromkeys(STEP_COLUMNS) | {"step": int(step)})

    for rec in records.read_metrics(run):
        kind = rec.get("type")
        if kind == "step":
            r = row(rec["step"])
            r.update(epoch=rec.get("epoch"), loss=rec.get("loss"), lr=rec.get("lr"), reg=rec.get("reg"))
        elif kind == "drift":
            r = row(rec["step"])
            r["epoch"] = r["epoch"] if r["epoch"] is not None else rec.get("epoch")
            r.update({k: (rec.get("mean") or {}).get(k) for k in DRIFT_KEYS})
        elif kind == "eval":
            r = row(rec["step"])
            r.update({k: rec.get(k) for k in ("test_error", "test_error_top5", "test_loss")})
    return [rows[s] for s in sorted(rows)]


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict | list):
        return json.dumps(v, sort_keys=True)
    return v


def _run_name(root: Path, run: Path) -> str:
    rel = run.relative_to(root).as_posix() if run != root else "."
    return rel[len("runs/") :] if rel.startswith("runs/") else rel


def _identity(configs: list[dict]) -> list[str]:
    """:data:`IDENTITY`, then every other scalar setting whose value differs between the runs."""
    keys = [k for k in IDENTITY if any(k in c for c in configs)]
    others = sorted({k for c in configs for k, v in c.items() if not isinstance(v, dict | list)})
    for k in others:
        if k not in keys and k not in _NOT_IDENTITY and len({json.dumps(c.get(k)) for c in configs}) > 1:
            keys.append(k)
    return keys


def export_csv(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the flat per-step CSV of every run at ``path`` (module docstring); return its path.

    Args:
        path: a run folder or a folder with runs under it (a study).
        out: the CSV file; default ``path/steps.csv``.

    Raises:
        ExportError: no run at ``path``.
        oblique.storage.RecordError: a corrupt ``metrics.jsonl`` (the message names the file and line).
    """
    root = Path(path)
    runs = find_runs(root)
    configs = [_config(r) for r in runs]
    ident = _identity(configs)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", *ident, *STEP_COLUMNS])
    for run, cfg in zip(runs, configs, strict=True):
        head = [_run_name(root, run), *(_cell(cfg.get(k)) for k in ident)]
        for r in step_rows(run):
            w.writerow(head + [_cell(r[c]) for c in STEP_COLUMNS])
    return storage.write_atomic(Path(out) if out is not None else root / "steps.csv", buf.getvalue())


def _hparam(v: Any) -> Any:
    """A setting as a TensorBoard hyperparameter value (number, text or bool)."""
    if isinstance(v, bool | int | float | str):
        return v
    if v is None:
        return "none"
    return json.dumps(v, sort_keys=True)


def _writer_classes():
    try:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams
    except ImportError:
        raise ExportError(
            f"exporting to TensorBoard needs the tensorboard package: {TENSORBOARD_EXTRA}"
        ) from None
    return SummaryWriter, hparams


def export_tensorboard(path: str | os.PathLike, out: str | os.PathLike | None = None) -> list[Path]:
    """Write TensorBoard event files of every run at ``path`` (module docstring); return their folders.

    Args:
        path: a run folder or a folder with runs under it (a study).
        out: the log folder (``tensorboard --logdir OUT``); default ``path/tensorboard``. A study's runs get
            a subfolder each, named after the run.

    Raises:
        ExportError: no run at ``path``, or the ``tensorboard`` package is not installed.
    """
    summary_writer, hparams = _writer_classes()
    root = Path(path)
    runs = find_runs(root)
    logdir = Path(out) if out is not None else root / "tensorboard"
    written = []
    for run in runs:
        name = _run_name(root, run)
        target = logdir if name == "." else logdir / name
        partial = target.with_name(target.name + ".partial")  # written whole first, then swapped in
        shutil.rmtree(partial, ignore_errors=True)  # left by an export that was stopped
        partial.mkdir(parents=True)
        writer = summary_writer(log_dir=str(partial))
        try:
            _write_run(writer, hparams, run)
        finally:
            writer.close()
        target.mkdir(parents=True, exist_ok=True)
        for old in target.glob("events.out.tfevents.*"):  # exporting again replaces the run's events
            old.unlink()
        for new in partial.iterdir():
            os.replace(new, target / new.name)
        partial.rmdir()
        written.append(target)
    return written


def _write_run(writer, hparams, run: Path) -> None:
    by_type: dict[str, list[dict]] = {}
    for rec in records.read_metrics(run):
        by_type.setdefault(rec.get("type"), []).append(rec)
    for tag, (kind, key) in TB_SCALARS.items():
        for rec in by_type.get(kind, []):
            value = (rec.get("mean") or {}).get(key) if kind == "drift" else rec.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                writer.add_scalar(tag, float(value), global_step=int(rec["step"]))
    config = _config(run)
    try:
        summary = records.read_summary(run)
    except storage.RecordError:
        summary = {}
    metrics = {
        "test/error": summary.get("test_error"),
        "drift/norm_dev_mean": ((summary.get("drift") or {}).get("mean") or {}).get("norm_dev_mean"),
    }
    metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    hp = {k: _hparam(v) for k, v in sorted(config.items()) if k not in ("out",)}
    hp["status"] = summary.get("status", "unfinished")
    for s in hparams(hp, metrics):  # experiment, session start, session end: in this run's own folder
        writer.file_writer.add_summary(s)
