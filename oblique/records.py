"""The run directory: its files, their schema, atomic writes, and reading them back.

A run directory holds:

``config.json``
    Every setting of the run, resolved (the :class:`oblique.train.RunConfig` fields plus the method's
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
as floats by :func:`read_json` and :func:`read_metrics`.
``model.pt``
    The final ``state_dict`` of the model (load with ``torch.load(..., weights_only=True)``).

JSON files are written atomically (a temporary file in the same folder, then ``os.replace``). A reader
tolerates a truncated last line of ``metrics.jsonl`` (a run killed mid-write); a corrupt line anywhere else
is an error that names the file and the line.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "FINISHED",
    "SCHEMA_VERSION",
    "MetricsWriter",
    "RecordError",
    "is_finished",
    "list_runs",
    "metrics_frame",
    "read_config",
    "read_json",
    "read_metrics",
    "read_summary",
    "write_json_atomic",
    "write_text_atomic",
]

SCHEMA_VERSION = 1

#: Statuses of a run that is over and need not be run again.
FINISHED = ("ok", "diverged")

CONFIG, METRICS, SUMMARY, MODEL = "config.json", "metrics.jsonl", "summary.json", "model.pt"


class RecordError(ValueError):
    """A record cannot be read; the message names the file and what is wrong with it."""


def _clean(obj: Any) -> Any:
    """Make ``obj`` strict JSON: non-finite floats become strings ("nan", "inf")."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


_NONFINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def _restore(obj: Any) -> Any:
    """Undo :func:`_clean`: the strings "nan", "inf", "-inf" become floats again."""
    if isinstance(obj, str):
        return _NONFINITE.get(obj, obj)
    if isinstance(obj, dict):
        return {k: _restore(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore(v) for v in obj]
    return obj


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically: readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; records are for everyone to read
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as strict JSON to ``path`` atomically (non-finite floats as strings)."""
    write_text_atomic(path, json.dumps(_clean(obj), indent=2, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; raise :class:`RecordError` naming the file when it is missing or corrupt."""
    path = Path(path)
    try:
        with open(path) as f:
            return _restore(json.load(f))
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordError(f"{path}: not valid JSON ({e})") from None


class MetricsWriter:
    """Appends records to ``metrics.jsonl``, one line each, flushed at once."""

    def __init__(self, path: str | os.PathLike, mode: str = "w"):
        self.path = Path(path)
        self._f = open(self.path, mode)

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(_clean(record), allow_nan=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(run_dir: str | os.PathLike, type: str | None = None) -> list[dict]:
    """The records of ``metrics.jsonl`` in order, optionally only those of one ``type``.

    A truncated (unparseable) *last* line is dropped; an unparseable line elsewhere raises
    :class:`RecordError`. A schema version newer than this reader's raises too.
    """
    path = Path(run_dir) / METRICS
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file") from None
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = _restore(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # a run killed mid-write: the last line is cut
            raise RecordError(f"{path}: line {i + 1} is not valid JSON; the file is corrupt") from None
        if rec.get("type") == "meta" and rec.get("schema_version", 0) > SCHEMA_VERSION:
            raise RecordError(
                f"{path}: schema version {rec['schema_version']} is newer than this oblique reads "
                f"({SCHEMA_VERSION}); upgrade oblique"
            )
        if type is None or rec.get("type") == type:
            out.append(rec)
    return out


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
    return read_json(Path(run_dir) / CONFIG)


def read_summary(run_dir: str | os.PathLike) -> dict:
    """The run's ``summary.json``."""
    return read_json(Path(run_dir) / SUMMARY)


def is_finished(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a run that is over (``summary.json`` readable, status in FINISHED)."""
    try:
        return read_summary(run_dir).get("status") in FINISHED
    except RecordError:
        return False


def list_runs(root: str | os.PathLike) -> list[Path]:
    """Every run directory (a folder with a ``config.json``) under ``root``, sorted."""
    return sorted(p.parent for p in Path(root).rglob(CONFIG))
