"""The run directory: its files, their schema, atomic writes, and reading them back.

A run directory holds:

``config.json``
    Every setting of the run, resolved (the :class:`oblique.config.RunConfig` fields plus the method's
    resolved ``config()``), written before training starts.
``metrics.jsonl``
    One JSON object per line, appended during training and flushed line by line. Every line has a
    ``"type"``; the first line is ``{"type": "meta", "schema_version": 1, ...}``. Types (schema 1):

    - ``meta``: ``schema_version``, ``steps_per_epoch``, ``total_steps``, ``targets``, ``layers``.
    - ``step``: ``step`` (from 1), ``epoch`` (float, fraction of epochs done), ``loss`` (train
      cross-entropy of the batch), ``lr``, ``reg`` (the regularizer's value, unscaled, or null).
    - ``drift``: ``step`` (0 = before training), ``epoch``, ``mean`` and ``layers`` exactly as
      :func:`oblique.geometry.model_drift` returns them.
    - ``eval``: ``step``, ``epoch``, ``test_error``, ``test_error_top5`` (both in %), ``test_loss``.
    - ``diverged``: ``step``, ``loss`` (the non-finite value as a string).
``summary.json``
    Written once, at the end: ``status`` (``"ok"``, ``"diverged"`` or ``"interrupted"``), ``method``,
    ``strength``, ``targets``, ``seed``, ``test_error``, ``test_error_top5`` (%), ``train_time_s``,
    ``regularizer_time_s``, ``drift`` (as ``model_drift`` returns it) and more (see ``train``).

Non-finite floats are written as the strings ``"nan"``, ``"inf"``, ``"-inf"`` (strict JSON) and read back
as floats by every reader here (the codec of :mod:`oblique.storage`).
``model.pt``
    The final ``state_dict`` of the model (load with ``torch.load(..., weights_only=True)``).
``checkpoint.pt``
    While a run is unfinished: everything an exact resume needs (Note [exact resume] in
    :mod:`oblique.fit`) and ``metrics_offset``, the bytes of ``metrics.jsonl`` it covers. Read with
    :func:`read_checkpoint` (``weights_only``). Removed when the run finishes.
``.lock``, ``.lock.pid``
    The folder lock (:class:`oblique.storage.FolderLock`) of the process writing the run, and its PID.

Files are written atomically (:func:`oblique.storage.write_atomic`: a temporary file in the same folder,
then ``os.replace``). Readers treat
every file as untrusted: a truncated last line of ``metrics.jsonl`` (a run killed mid-write) is dropped; a
line anywhere else that is not JSON or not a record of the schema is skipped with a :class:`RecordWarning`
naming the file and the line; a ``summary.json`` of the wrong shape is a :class:`RecordError`. A run counts
as finished (:func:`is_finished`) only when its summary says so *and* its ``metrics.jsonl`` is whole, so a
study reruns a run whose records are corrupt.

:class:`RecordError` is :class:`oblique.storage.RecordError` (the error of every reader of the project's
files, defined there once): this module names it as the error of its own readers, so that
``except oblique.records.RecordError`` catches whatever a reader here raises, a file the storage layer
cannot read included.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oblique import storage
from oblique.errors import ObliqueWarning
from oblique.options import is_integer, is_number
from oblique.storage import RecordError  # the error of this module's readers (module docstring)

__all__ = [
    "CHECKPOINT",
    "FINISHED",
    "SCHEMA_VERSION",
    "RecordError",
    "RecordWarning",
    "RunWriter",
    "is_finished",
    "list_runs",
    "metrics_frame",
    "read_checkpoint",
    "read_config",
    "read_metrics",
    "read_summary",
]

SCHEMA_VERSION = 1

#: Statuses of a run that is over and need not be run again.
FINISHED = ("ok", "diverged")

CONFIG, METRICS, SUMMARY, MODEL = "config.json", "metrics.jsonl", "summary.json", "model.pt"
CHECKPOINT = "checkpoint.pt"


class RecordWarning(ObliqueWarning):
    """Part of a record was unreadable and skipped (a corrupt line of ``metrics.jsonl``); one line that
    names the file and the line."""


def read_checkpoint(run_dir: str | os.PathLike) -> dict:
    """The run's ``checkpoint.pt`` (see :meth:`RunWriter.checkpoint`), read by
    :func:`oblique.storage.read_torch` (tensors and plain containers only)."""
    state = storage.read_torch(Path(run_dir) / CHECKPOINT)
    if not isinstance(state, dict) or not isinstance(state.get("metrics_offset"), int):
        raise RecordError(f"{Path(run_dir) / CHECKPOINT}: not a checkpoint of this oblique")
    return state


class RunWriter:
    """Writes one run directory in the schema above: the only code that builds its records.

    >>> import tempfile
    >>> with RunWriter(tempfile.mkdtemp()) as w:
    ...     w.meta(steps_per_epoch=2, total_steps=4, targets="conv", layers=["conv1"])
    ...     w.step(1, 0.5, loss=2.3, lr=0.1, reg=None)
    >>> [r["type"] for r in read_metrics(w.root)]
    ['meta', 'step']

    Args:
        root: the run directory (created if missing).
    """

    def __init__(self, root: str | os.PathLike, *, resume_at: int | None = None, lazy: bool = False):
        self.root = Path(root)
        self.resume_at = resume_at
        self._metrics: storage.JsonLinesWriter | None = None
        if not lazy:
            self.open()

    def open(self) -> None:
        """Create the folder; for a resumed run, cut ``metrics.jsonl`` back to ``resume_at`` (the
        checkpoint's position) and append from there: no line is doubled. ``lazy=True`` leaves this to the
        caller, once it has checked the folder."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.resume_at is not None and self._metrics is None:
            path = self.root / METRICS
            with open(path, "r+b") as f:
                f.truncate(self.resume_at)
            self._metrics = storage.JsonLinesWriter(path, mode="a")

    @property
    def metrics_offset(self) -> int:
        """Bytes of ``metrics.jsonl`` written so far (where a resumed run cuts it back to)."""
        if self._metrics is None:
            return 0
        return self._metrics.offset

    # ---------------------------------------------------------------- files written once
    def config(self, config: dict) -> None:
        """``config.json``: every setting, resolved."""
        storage.write_json_atomic(self.root / CONFIG, config)

    def summary(self, summary: dict) -> None:
        """``summary.json``: written last (its ``status`` says whether the run is over)."""
        storage.write_json_atomic(self.root / SUMMARY, summary)

    def model(self, state_dict: dict) -> None:
        """``model.pt``: the model's ``state_dict`` (tensors only; load with ``weights_only=True``)."""
        storage.save_torch(self.root / MODEL, state_dict)

    def checkpoint(self, state: dict) -> None:
        """``checkpoint.pt``: ``state`` (tensors and plain containers only) plus ``metrics_offset``, the
        position reached in ``metrics.jsonl``; replaces the previous checkpoint atomically."""
        storage.save_torch(self.root / CHECKPOINT, {**state, "metrics_offset": self.metrics_offset})

    def drop_checkpoint(self) -> None:
        """Remove ``checkpoint.pt`` (a finished run needs none: ``model.pt`` holds its weights)."""
        (self.root / CHECKPOINT).unlink(missing_ok=True)

    # ---------------------------------------------------------------- metrics.jsonl, one line each
    def _line(self, record: dict) -> None:
        if self._metrics is None:
            self._metrics = storage.JsonLinesWriter(self.root / METRICS)
        self._metrics.write(record)

    def meta(self, *, steps_per_epoch: int, total_steps: int, targets: str, layers: list[str]) -> None:
        self._line(
            {
                "type": "meta",
                "schema_version": SCHEMA_VERSION,
                "steps_per_epoch": steps_per_epoch,
                "total_steps": total_steps,
                "targets": targets,
                "layers": list(layers),
            }
        )

    def step(self, step: int, epoch: float, *, loss: float, lr: float, reg: float | None) -> None:
        self._line({"type": "step", "step": step, "epoch": epoch, "loss": loss, "lr": lr, "reg": reg})

    def drift(self, step: int, epoch: float, drift: dict) -> None:
        """``drift`` as :func:`oblique.geometry.model_drift` returns it (``mean`` and ``layers``)."""
        self._line({"type": "drift", "step": step, "epoch": epoch, **drift})

    def eval(self, step: int, epoch: float, result: dict) -> None:
        """``result``: ``test_error``, ``test_error_top5`` (%), ``test_loss``."""
        self._line({"type": "eval", "step": step, "epoch": epoch, **result})

    def diverged(self, step: int, loss: float) -> None:
        self._line({"type": "diverged", "step": step, "loss": str(loss)})

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _number(x: Any) -> bool:
    """A number of a record: NaN and infinity included (a diverged run's loss, its drift)."""
    return is_number(x, finite=False)


_int = is_integer


def _numbers(x: Any) -> bool:
    """A table of drift values (name -> number)."""
    return isinstance(x, dict) and all(_number(v) for v in x.values())


#: What each record type of schema 1 must hold, key -> check (more keys are allowed).
_RECORD_KEYS: dict[str, dict[str, Callable[[Any], bool]]] = {
    "meta": {"schema_version": _int, "steps_per_epoch": _int, "total_steps": _int},
    "step": {
        "step": _int,
        "epoch": _number,
        "loss": _number,
        "lr": _number,
        "reg": lambda v: v is None or _number(v),
    },
    "drift": {
        "step": _int,
        "epoch": _number,
        "mean": _numbers,
        "layers": lambda v: isinstance(v, dict) and all(_numbers(d) for d in v.values()),
    },
    "eval": {"step": _int, "epoch": _number, "test_error": _number, "test_error_top5": _number},
    "diverged": {"step": _int},
}


def _record_problem(rec: Any) -> str | None:
    """Why ``rec`` (one parsed line) is not a record of the schema, or None."""
    if not isinstance(rec, dict) or not isinstance(rec.get("type"), str):
        return "not a record (a JSON object with a 'type')"
    for key, ok in _RECORD_KEYS.get(rec["type"], {}).items():
        if key not in rec:
            return f"a {rec['type']} record without {key!r}"
        if not ok(rec[key]):
            return f"a {rec['type']} record whose {key!r} is {str(rec[key])[:40]!r}"
    return None


@dataclass
class _Scan:
    """``metrics.jsonl`` read line by line: the well-formed records, the lines skipped (line number, why),
    and whether the last line was cut (a run killed mid-write)."""

    records: list[dict]
    skipped: list[tuple[int, str]]
    cut: bool


def _scan_metrics(path: Path) -> _Scan:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file") from None
    except OSError as e:
        raise RecordError(f"{path}: cannot be read ({e.strerror or e})") from None
    lines = data.split(b"\n")
    scan = _Scan([], [], cut=False)
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            rec = storage.loads_json(raw.decode("utf-8"))
        except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deep
            if i == len(lines) - 1:  # no newline after it: a run killed mid-write cut the last line
                scan.cut = True
                continue
            scan.skipped.append((i + 1, "not valid JSON"))
            continue
        version = rec.get("schema_version") if isinstance(rec, dict) and rec.get("type") == "meta" else None
        if _int(version) and version > SCHEMA_VERSION:  # its records may differ from the ones checked here
            raise RecordError(
                f"{path}: schema version {version} is newer than this oblique reads ({SCHEMA_VERSION}); "
                "upgrade oblique"
            )
        problem = _record_problem(rec)
        if problem is not None:
            scan.skipped.append((i + 1, problem))
            continue
        scan.records.append(rec)
    return scan


#: (path, mtime, size) of the metrics files already warned about, so that one corrupt file read many
#: times (every figure reads it) is reported once
_WARNED: set[tuple] = set()


def _stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path), st.st_mtime_ns, st.st_size)


def read_metrics(run_dir: str | os.PathLike, type: str | None = None) -> list[dict]:
    """The records of ``metrics.jsonl`` in order, optionally only those of one ``type``.

    A truncated last line (a run killed mid-write) is dropped. Any other line that is not JSON, or not a
    record of the schema (each type's keys of the right kind), is skipped with a :class:`RecordWarning`
    that names the file and the line (once per state of the file).

    Raises:
        RecordError: the file is missing or unreadable, or its schema version is newer than this reader's.
    """
    path = Path(run_dir) / METRICS
    scan = _scan_metrics(path)
    if scan.skipped:
        stamp = _stamp(path)
        if stamp not in _WARNED:
            _WARNED.add(stamp)
            first = ", ".join(f"line {n} ({why})" for n, why in scan.skipped[:3])
            more = f" and {len(scan.skipped) - 3} more" if len(scan.skipped) > 3 else ""
            warnings.warn(
                RecordWarning(f"{path}: skipped {len(scan.skipped)} corrupt line(s): {first}{more}"),
                stacklevel=2,
            )
    return [r for r in scan.records if type is None or r["type"] == type]


def metrics_frame(run_dir: str | os.PathLike, type: str):
    """The records of one ``type`` as a pandas DataFrame; ``drift`` records get ``mean`` flattened into
    columns named after the drift keys (per-layer values stay in the ``layers`` column)."""
    import pandas as pd

    recs = read_metrics(run_dir, type)
    if type == "drift":
        recs = [{**{k: v for k, v in r.items() if k != "mean"}, **r["mean"]} for r in recs]
    return pd.DataFrame.from_records(recs)


def read_config(run_dir: str | os.PathLike) -> dict:
    """The run's ``config.json``."""
    return storage.read_json(Path(run_dir) / CONFIG)


def _number_or_none(x: Any) -> bool:
    return x is None or _number(x)


def _drift_table(x: Any) -> bool:
    return isinstance(x, dict) and _numbers(x.get("mean", {})) and isinstance(x.get("layers", {}), dict)


_NUMBER_KEYS = (
    "strength",
    "test_error",
    "test_error_top5",
    "test_loss",
    "train_time_s",
    "regularizer_time_s",
)
#: What a ``summary.json`` must hold where it holds it, key -> (check, what it should be).
_SUMMARY_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "status": (lambda v: isinstance(v, str), "text"),
    "method": (lambda v: isinstance(v, str), "text"),
    **{k: (_number_or_none, "a number") for k in _NUMBER_KEYS},
    **{k: (lambda v: v is None or _int(v), "an integer") for k in ("steps", "diverged_step", "seed")},
    "drift": (_drift_table, "a table with 'mean' (name -> number) and 'layers'"),
}
#: What the summary of a finished run must hold.
_FINISHED_KEYS = ("test_error", "test_error_top5", "train_time_s", "regularizer_time_s", "drift")


def read_summary(run_dir: str | os.PathLike) -> dict:
    """The run's ``summary.json``, checked: a JSON object with a ``status``, each key it has of the
    right kind, and a finished run's results all there.

    Raises:
        RecordError: missing, unreadable, corrupt or of the wrong shape (the message names the file).
    """
    path = Path(run_dir) / SUMMARY
    summary = storage.read_json(path)
    if not isinstance(summary, dict) or "status" not in summary:
        raise RecordError(
            f"{path}: expected a run summary (a JSON object with a status); got {str(summary)[:60]!r}"
        )
    for key, (ok, what) in _SUMMARY_KEYS.items():
        if key in summary and not ok(summary[key]):
            raise RecordError(f"{path}: {key} must be {what}; got {str(summary[key])[:60]!r}")
    if summary["status"] in FINISHED:
        missing = [k for k in _FINISHED_KEYS if k not in summary]
        if missing:
            raise RecordError(f"{path}: a finished run's summary without {', '.join(missing)}")
    return summary


#: is_finished's verdicts on metrics files, by (path, mtime, size, status): a study asks about every run
#: often, and a long run's metrics.jsonl is megabytes
_COMPLETE: dict[tuple, bool] = {}


def _metrics_complete(path: Path, status: str) -> bool:
    """Whether ``metrics.jsonl`` is whole for a run that ended with ``status``: every line a record, the
    last one not cut, a meta record, and the last step (ok) or a divergence (diverged) recorded."""
    stamp = _stamp(path)
    if stamp is None:
        return False
    key = (*stamp, status)
    if key not in _COMPLETE:
        try:
            scan = _scan_metrics(path)
        except RecordError:
            scan = None
        if scan is None or scan.skipped or scan.cut:
            whole = False
        else:
            metas = [r for r in scan.records if r["type"] == "meta"]
            steps = [r["step"] for r in scan.records if r["type"] == "step"]
            if status == "diverged":
                ended = any(r["type"] == "diverged" for r in scan.records)
            else:
                ended = bool(metas) and bool(steps) and steps[-1] == metas[0]["total_steps"]
            whole = bool(metas) and ended
        if len(_COMPLETE) > 10_000:
            _COMPLETE.clear()
        _COMPLETE[key] = whole
    return _COMPLETE[key]


def is_finished(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a run that is over: its ``summary.json`` readable with a status in
    :data:`FINISHED`, and its ``metrics.jsonl`` whole. A run whose records are corrupt is not finished, so
    a study reruns it."""
    try:
        status = read_summary(run_dir)["status"]
    except RecordError:
        return False
    return status in FINISHED and _metrics_complete(Path(run_dir) / METRICS, status)


def list_runs(root: str | os.PathLike) -> list[Path]:
    """Every run directory (a folder with a ``config.json``) under ``root``, sorted."""
    return sorted(p.parent for p in Path(root).rglob(CONFIG))
