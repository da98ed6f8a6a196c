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
``checkpoint.pt``
    While a run is unfinished: everything an exact resume needs (Note [exact resume] in
    :mod:`oblique.train`) and ``metrics_offset``, the bytes of ``metrics.jsonl`` it covers. Read with
    :func:`read_checkpoint` (``weights_only``). Removed when the run finishes.
``.lock``, ``.lock.pid``
    The folder lock (:class:`FolderLock`) of the process writing the run, and its PID.

JSON files are written atomically (a temporary file in the same folder, then ``os.replace``). Readers treat
every file as untrusted: a truncated last line of ``metrics.jsonl`` (a run killed mid-write) is dropped; a
line anywhere else that is not JSON or not a record of the schema is skipped with a :class:`RecordWarning`
naming the file and the line; a ``summary.json`` of the wrong shape is a :class:`RecordError`. A run counts
as finished (:func:`is_finished`) only when its summary says so *and* its ``metrics.jsonl`` is whole, so a
study reruns a run whose records are corrupt.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from oblique.errors import ObliqueError, ObliqueWarning

__all__ = [
    "CHECKPOINT",
    "FINISHED",
    "SCHEMA_VERSION",
    "FolderLock",
    "FolderLockedError",
    "MetricsWriter",
    "RecordError",
    "RecordWarning",
    "is_finished",
    "list_runs",
    "metrics_frame",
    "read_checkpoint",
    "read_config",
    "read_json",
    "read_metrics",
    "read_summary",
    "read_torch",
    "RunWriter",
    "write_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

SCHEMA_VERSION = 1

#: Statuses of a run that is over and need not be run again.
FINISHED = ("ok", "diverged")

CONFIG, METRICS, SUMMARY, MODEL = "config.json", "metrics.jsonl", "summary.json", "model.pt"
CHECKPOINT, LOCK = "checkpoint.pt", ".lock"


class RecordError(ObliqueError, ValueError):
    """A record cannot be read; the message names the file and what is wrong with it."""


class RecordWarning(ObliqueWarning):
    """Part of a record was unreadable and skipped (a corrupt line of ``metrics.jsonl``); one line that
    names the file and the line."""


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
    try:  # a folder that cannot be made or written: the error names the target, not a temporary file
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e
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
    """Read a JSON file; raise :class:`RecordError` naming the file when it is missing, unreadable (a
    folder, no permission) or corrupt (not UTF-8, not JSON, nested too deep)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return _restore(json.load(f))
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file") from None
    except OSError as e:
        raise RecordError(f"{path}: cannot be read ({e.strerror or e})") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RecordError(f"{path}: not valid JSON ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text if len(text) <= 120 else text[:117] + "..."


class MetricsWriter:
    """Appends records to ``metrics.jsonl``, one line each, flushed at once."""

    def __init__(self, path: str | os.PathLike, mode: str = "w"):
        self.path = Path(path)
        self._f = open(self.path, mode)

    def write(self, record: dict) -> None:
        try:
            self._f.write(json.dumps(_clean(record), allow_nan=False) + "\n")
            self._f.flush()
        except OSError as e:  # a full disk: say which file (the bare error names none)
            raise OSError(e.errno, e.strerror or str(e), str(self.path)) from e

    def close(self) -> None:
        try:
            self._f.close()
        except OSError as e:  # the last buffered line cannot be written (a full disk)
            raise OSError(e.errno, e.strerror or str(e), str(self.path)) from e

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _save_torch(path: Path, obj: Any) -> None:
    """``torch.save`` through :func:`write_atomic`. A failed write (a full disk: torch raises
    ``RuntimeError``, not ``OSError``) becomes an ``OSError`` that names ``path``."""
    import torch

    def write(f: BinaryIO) -> None:
        try:
            torch.save(obj, f)
        except RuntimeError as e:  # torch's zip writer reports a failed write as RuntimeError
            raise OSError(errno.EIO, f"cannot be written ({str(e).splitlines()[0]})", str(path)) from e

    write_atomic(path, write)


def read_torch(path: str | os.PathLike) -> Any:
    """A ``.pt`` file written by this project, loaded with ``torch.load(..., weights_only=True)``: tensors
    and plain containers only. Anything else (a pickled object, a corrupt or truncated file) is refused.

    Raises:
        RecordError: the file is missing, corrupt, or holds more than tensors and containers.
    """
    import pickle

    import torch

    path = Path(path)
    try:
        _check_crcs(path)
        with (
            warnings.catch_warnings()
        ):  # a corrupt file makes torch warn (an odd pickle protocol): refused below
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file") from None
    except pickle.UnpicklingError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RecordError(
            f"{path}: holds something other than tensors and plain containers; refusing to load it "
            f"(torch.load weights_only: {first[:160]})"
        ) from None
    except (
        Exception
    ) as e:  # an untrusted file: whatever torch's reader trips on (IndexError, BadZipFile, ...)
        raise RecordError(
            f"{path}: not a readable torch file ({type(e).__name__}); it is corrupt or truncated"
        ) from None


def _check_crcs(path: Path) -> None:
    """Every record of the zip archive that ``torch.save`` writes matches its CRC-32. torch's reader does
    not check them: a flipped byte in a tensor's data would be read back as another number.

    Raises:
        zipfile.BadZipFile: not a zip archive, or a record whose bytes do not match its CRC-32.
    """
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise zipfile.BadZipFile(f"bad CRC-32 for {bad}")


def read_checkpoint(run_dir: str | os.PathLike) -> dict:
    """The run's ``checkpoint.pt`` (see :meth:`RunWriter.checkpoint`); :func:`read_torch` rules apply."""
    state = read_torch(Path(run_dir) / CHECKPOINT)
    if not isinstance(state, dict) or not isinstance(state.get("metrics_offset"), int):
        raise RecordError(f"{Path(run_dir) / CHECKPOINT}: not a checkpoint of this oblique")
    return state


class FolderLock:
    """An exclusive lock on a run or study folder (``FOLDER/.lock``, through :mod:`filelock`), released
    when the process ends however it ends. The holder's PID is written beside it (``.lock.pid``) so that a
    refused process can say who holds it.

    Raises (on enter):
        FolderLockedError: another process holds it.
        RecordError: the folder's filesystem cannot lock files.
    """

    def __init__(self, root: str | os.PathLike, what: str = "run folder", holder: str = "run"):
        self.root, self.what, self.holder = Path(root), what, holder
        self._lock = None

    def __enter__(self) -> FolderLock:
        import filelock

        self.root.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(self.root / LOCK), timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            try:
                pid = (self.root / (LOCK + ".pid")).read_text().strip() or "unknown"
            except OSError:
                pid = "unknown"
            raise FolderLockedError(
                f"{self.what} {self.root} is in use by another oblique {self.holder} (pid {pid}); wait for it "
                "to end or choose another --out"
            ) from None
        except OSError as e:
            raise RecordError(
                f"{self.root}: this filesystem cannot lock files ({e.strerror or e}); put the {self.what} on a "
                "local or lock-capable filesystem"
            ) from None
        self._lock = lock
        write_atomic(self.root / (LOCK + ".pid"), f"{os.getpid()}\n")
        return self

    def release(self) -> None:
        if self._lock is not None:
            (self.root / (LOCK + ".pid")).unlink(missing_ok=True)
            self._lock.release()
            self._lock = None

    def __exit__(self, *exc) -> None:
        self.release()


class FolderLockedError(RecordError):
    """Another process holds the folder's lock."""


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
        self._metrics: MetricsWriter | None = None
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
            self._metrics = MetricsWriter(path, mode="a")

    @property
    def metrics_offset(self) -> int:
        """Bytes of ``metrics.jsonl`` written so far (where a resumed run cuts it back to)."""
        if self._metrics is None:
            return 0
        self._metrics._f.flush()
        return self._metrics._f.tell()

    # ---------------------------------------------------------------- files written once
    def config(self, config: dict) -> None:
        """``config.json``: every setting, resolved."""
        write_json_atomic(self.root / CONFIG, config)

    def summary(self, summary: dict) -> None:
        """``summary.json``: written last (its ``status`` says whether the run is over)."""
        write_json_atomic(self.root / SUMMARY, summary)

    def model(self, state_dict: dict) -> None:
        """``model.pt``: the model's ``state_dict`` (tensors only; load with ``weights_only=True``)."""
        _save_torch(self.root / MODEL, state_dict)

    def checkpoint(self, state: dict) -> None:
        """``checkpoint.pt``: ``state`` (tensors and plain containers only) plus ``metrics_offset``, the
        position reached in ``metrics.jsonl``; replaces the previous checkpoint atomically."""
        _save_torch(self.root / CHECKPOINT, {**state, "metrics_offset": self.metrics_offset})

    def drop_checkpoint(self) -> None:
        """Remove ``checkpoint.pt`` (a finished run needs none: ``model.pt`` holds its weights)."""
        (self.root / CHECKPOINT).unlink(missing_ok=True)

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


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


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
            rec = _restore(json.loads(raw.decode("utf-8")))
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
    return read_json(Path(run_dir) / CONFIG)


def _number_or_none(x: Any) -> bool:
    return x is None or _number(x)


def _drift_table(x: Any) -> bool:
    return isinstance(x, dict) and _numbers(x.get("mean", {})) and isinstance(x.get("layers", {}), dict)


_NUMBER_KEYS = ("strength", "test_error", "test_error_top5", "test_loss", "train_time_s", "regularizer_time_s")  # fmt: skip
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
    summary = read_json(path)
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
