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
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from oblique.errors import ObliqueError

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
    "RunWriter",
    "write_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

SCHEMA_VERSION = 1

#: Statuses of a run that is over and need not be run again.
FINISHED = ("ok", "diverged")

CONFIG, METRICS, SUMMARY, MODEL = "config.json", "metrics.jsonl", "summary.json", "model.pt"


class RecordError(ObliqueError, ValueError):
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


def write_atomic(path: str | os.PathLike, content: bytes | str | Callable[[BinaryIO], Any]) -> Path:
    """Write a file atomically: readers see the old file or the new one, never half of it.

    The one writer of every file the project writes (records, tables, bench CSV, ``model.pt``, the
    MNIST-1D cache, figures). ``content`` is the bytes, the text (UTF-8), or a function that writes into
    the open binary file (``lambda f: torch.save(state, f)``). The data goes to a temporary file in the
    same folder, is flushed to disk (``fsync``) and then renamed over ``path``; on any failure the
    temporary file is removed and ``path`` is left as it was. An ``OSError`` names ``path``, not the
    temporary file. The file is readable by everyone (mode 0644), as records are meant to be shared.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; records are for everyone to read
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`write_atomic`)."""
    write_atomic(path, text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as strict JSON to ``path`` atomically (non-finite floats as strings)."""
    write_atomic(path, json.dumps(_clean(obj), indent=2, allow_nan=False) + "\n")


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

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._metrics: MetricsWriter | None = None

    # ---------------------------------------------------------------- files written once
    def config(self, config: dict) -> None:
        """``config.json``: every setting, resolved."""
        write_json_atomic(self.root / CONFIG, config)

    def summary(self, summary: dict) -> None:
        """``summary.json``: written last (its ``status`` says whether the run is over)."""
        write_json_atomic(self.root / SUMMARY, summary)

    def model(self, state_dict: dict) -> None:
        """``model.pt``: the model's ``state_dict`` (tensors only; load with ``weights_only=True``)."""
        import torch

        write_atomic(self.root / MODEL, lambda f: torch.save(state_dict, f))

    # ---------------------------------------------------------------- metrics.jsonl, one line each
    def _line(self, record: dict) -> None:
        if self._metrics is None:
            self._metrics = MetricsWriter(self.root / METRICS)
        self._metrics.write(record)

    def meta(self, *, steps_per_epoch: int, total_steps: int, targets: str, layers: list[str]) -> None:
        self._line({"type": "meta", "schema_version": SCHEMA_VERSION, "steps_per_epoch": steps_per_epoch,
                    "total_steps": total_steps, "targets": targets, "layers": list(layers)})  # fmt: skip

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
