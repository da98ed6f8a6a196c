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
    :mod:`oblique.fit`), the identity of its run and the digest of it all (Note [checkpoint identity]).
    Read with :func:`read_checkpoint` (``weights_only``), checked with :func:`check_checkpoint`. Removed
    when the run finishes.
``.lock``, ``.lock.pid``
    The folder lock (:class:`oblique.storage.FolderLock`) of the process writing the run, and its PID.

Note [checkpoint identity]: a resume trusts nothing it did not write. Every checkpoint carries, beside
the state of the run, ``run``, the identity of the run it belongs to:

- ``config``: the settings that say what the run computes (:meth:`oblique.config.RunConfig.identity`:
  every setting but those of how it executes), and ``config_sha256``, their digest
  (:func:`oblique.storage.content_digest`);
- ``seed``: the run's seed; ``step``: the steps taken;
- ``metrics_offset`` and ``metrics_sha256``: how many bytes of ``metrics.jsonl`` the state is after, and
  the SHA-256 of those bytes;

and ``digest``, the :func:`oblique.storage.content_digest` of everything else in it. A resume
(:func:`check_checkpoint`) refuses, in one line and before it writes anything, a checkpoint whose
contents do not match their digest, one of another run (another seed, other settings than
``config.json``), and one whose ``metrics.jsonl`` is not the one it was taken after (cut short, emptied,
changed): it never cuts ``metrics.jsonl`` back to, or writes past, a position the file does not hold.

Files are written atomically (:func:`oblique.storage.write_atomic`: a temporary file in the same folder,
then ``os.replace``; a process killed mid-write leaves ``.NAME.*.tmp``, removed when the run starts or
resumes: :func:`remove_leftovers`). Readers treat
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

import hashlib
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
    "check_checkpoint",
    "is_finished",
    "list_runs",
    "metrics_frame",
    "read_checkpoint",
    "read_config",
    "read_metrics",
    "read_summary",
    "remove_leftovers",
]

SCHEMA_VERSION = 1

#: Statuses of a run that is over and need not be run again.
FINISHED = ("ok", "diverged")

CONFIG, METRICS, SUMMARY, MODEL = "config.json", "metrics.jsonl", "summary.json", "model.pt"
CHECKPOINT = "checkpoint.pt"


class RecordWarning(ObliqueWarning):
    """Part of a record was unreadable and skipped (a corrupt line of ``metrics.jsonl``); one line that
    names the file and the line."""


#: what the ``run`` of a checkpoint holds (Note [checkpoint identity]), key -> check
_IDENTITY_KEYS: dict[str, Callable[[Any], bool]] = {
    "config": lambda v: v is None or isinstance(v, dict),
    "config_sha256": lambda v: v is None or isinstance(v, str),
    "seed": lambda v: v is None or _int(v),
    "step": lambda v: _int(v) and v >= 0,
    "metrics_offset": lambda v: _int(v) and v >= 0,
    "metrics_sha256": lambda v: isinstance(v, str),
}


def read_checkpoint(run_dir: str | os.PathLike) -> dict:
    """The run's ``checkpoint.pt`` (see :meth:`RunWriter.checkpoint`), read by
    :func:`oblique.storage.read_torch` (tensors and plain containers only), with its identity and digest
    there and of the right kinds (Note [checkpoint identity]; :func:`check_checkpoint` checks them).

    Raises:
        RecordError: unreadable, not a checkpoint, or one of an older oblique (without an identity).
    """
    path = Path(run_dir) / CHECKPOINT
    state = storage.read_torch(path)
    if isinstance(state, dict) and "run" not in state and _int(state.get("metrics_offset")):
        raise RecordError(
            f"{path}: written by an older oblique, without the identity and the digest this one checks; "
            f"it is not resumed: start the run over with --overwrite"
        )
    run = state.get("run") if isinstance(state, dict) else None
    if not (
        isinstance(run, dict)
        and isinstance(state.get("digest"), str)
        and all(key in run and ok(run[key]) for key, ok in _IDENTITY_KEYS.items())
    ):
        raise RecordError(f"{path}: not a checkpoint of this oblique")
    return state


def check_checkpoint(run_dir: str | os.PathLike, state: dict, run: dict | None = None) -> None:
    """Check that ``state`` (:func:`read_checkpoint`) is the run's own (Note [checkpoint identity]): its
    contents match their digest; with ``run`` (what the run folder says of its run: ``config``, as
    :meth:`oblique.config.RunConfig.identity` gives it, and ``seed``), it belongs to that run; and
    ``metrics.jsonl`` holds, byte for byte, the records it was taken after. Reads only.

    Raises:
        RecordError: one line that names the file and what does not match.
    """
    root = Path(run_dir)
    path = root / CHECKPOINT
    refuse = "it is not resumed: put back the run's own files, or start the run over with --overwrite"
    contents = {k: v for k, v in state.items() if k != "digest"}
    try:
        intact = storage.content_digest(contents) == state["digest"]
    except (TypeError, ValueError, RuntimeError):  # something no checkpoint of ours holds (a sparse tensor)
        intact = False
    if not intact:
        raise RecordError(f"{path}: its contents do not match their digest (changed since written); {refuse}")
    own = state["run"]
    if run is not None:
        _check_identity(path, own, run, refuse)
    _check_metrics_prefix(root / METRICS, path, own["metrics_offset"], own["metrics_sha256"], refuse)


def _check_identity(path: Path, own: dict, run: dict, refuse: str) -> None:
    """The checkpoint's run (``own``) is ``run``: the same seed, the same settings."""
    config = path.parent / CONFIG
    if own["seed"] != run.get("seed"):
        raise RecordError(
            f"{path} belongs to another run (seed {own['seed']}), not to the one of {config} "
            f"(seed {run.get('seed')}); {refuse}"
        )
    if own["config_sha256"] != storage.content_digest(run.get("config")):
        theirs, mine = own["config"] or {}, run.get("config") or {}
        try:
            differ = [
                k
                for k in sorted(set(theirs) | set(mine), key=str)
                if storage.dumps_json(theirs.get(k)) != storage.dumps_json(mine.get(k))
            ]
            named = ", ".join(
                f"{k} {_short(theirs.get(k))} in the checkpoint, {_short(mine.get(k))} in {CONFIG}"
                for k in differ[:3]
            )
        except (TypeError, ValueError):  # settings no config of ours holds
            named = ""
        raise RecordError(
            f"{path} belongs to a run with other settings than {config} ({named or 'their digests differ'}); "
            f"{refuse}"
        )


def _short(value: Any) -> str:
    text = storage.dumps_json(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_metrics_prefix(metrics: Path, path: Path, offset: int, sha: str, refuse: str) -> None:
    """``metrics`` holds at least ``offset`` bytes, whose SHA-256 is ``sha``."""
    try:
        size = metrics.stat().st_size
    except FileNotFoundError:
        size = None
    except OSError as e:
        raise RecordError(f"{metrics}: cannot be read ({e.strerror or e})") from None
    if size is None or size < offset:
        has = "is missing" if size is None else f"holds {size} bytes"
        raise RecordError(
            f"{metrics} {has}, not the {offset} bytes of records {path} was taken after (cut short or "
            f"emptied); {refuse}"
        )
    digest = hashlib.sha256()
    try:
        with open(metrics, "rb") as f:
            left = offset
            while left:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
    except OSError as e:
        raise RecordError(f"{metrics}: cannot be read ({e.strerror or e})") from None
    if digest.hexdigest() != sha:
        raise RecordError(
            f"{metrics}: its first {offset} bytes are not the records {path} was taken after (changed since); "
            f"{refuse}"
        )


def remove_leftovers(run_dir: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of the run folder's own files that a process killed mid-write left
    (``.checkpoint.pt.*.tmp``, ...: :func:`oblique.storage.remove_temporaries`); return them. Only for
    the process that holds the folder's lock."""
    root = Path(run_dir)
    return [
        tmp
        for name in (CONFIG, SUMMARY, MODEL, CHECKPOINT)
        for tmp in storage.remove_temporaries(root / name)
    ]


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
        resume_at: for a resumed run, the bytes of ``metrics.jsonl`` its checkpoint is after (where
            :meth:`open` cuts the file back to).
        lazy: leave :meth:`open` to the caller.
        run: what identifies the run in its checkpoints (Note [checkpoint identity]): ``config``
            (:meth:`oblique.config.RunConfig.identity`) and ``seed``; None for a loop run without a
            config (its checkpoints carry the position in ``metrics.jsonl`` only).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        resume_at: int | None = None,
        lazy: bool = False,
        run: dict | None = None,
    ):
        self.root = Path(root)
        self.resume_at = resume_at
        self.run = dict(run or {})
        self._metrics: storage.JsonLinesWriter | None = None
        if not lazy:
            self.open()

    def open(self) -> None:
        """Create the folder; for a resumed run, cut ``metrics.jsonl`` back to ``resume_at`` (the
        checkpoint's position) and append from there: no line is doubled. A file shorter than
        ``resume_at`` is refused, never padded (:func:`check_checkpoint` says why before). ``lazy=True``
        leaves this to the caller, once it has checked the folder.

        Raises:
            RecordError: ``metrics.jsonl`` is missing or holds fewer bytes than ``resume_at``.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        if self.resume_at is not None and self._metrics is None:
            path = self.root / METRICS
            size = path.stat().st_size if path.is_file() else -1
            if size < self.resume_at:
                raise RecordError(
                    f"{path}: holds {max(size, 0)} bytes, fewer than the {self.resume_at} to resume after; "
                    "it is not written past its end"
                )
            with open(path, "r+b") as f:
                f.truncate(self.resume_at)
            self._metrics = storage.JsonLinesWriter(path, mode="a")

    @property
    def metrics_offset(self) -> int:
        """Bytes of ``metrics.jsonl`` written so far (where a resumed run cuts it back to)."""
        if self._metrics is None:
            return 0
        return self._metrics.offset

    @property
    def metrics_sha256(self) -> str:
        """The SHA-256 of the bytes of ``metrics.jsonl`` written so far."""
        if self._metrics is None:
            return hashlib.sha256().hexdigest()
        return self._metrics.sha256

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
        """``checkpoint.pt``: ``state`` (tensors and plain containers only; its ``step``, the steps taken,
        goes into the identity), ``run`` (the identity of the run and of the records it is after) and
        ``digest`` (of everything else): Note [checkpoint identity]. Replaces the previous checkpoint
        atomically."""
        config = self.run.get("config")
        identity = {
            "config": config,
            "config_sha256": storage.content_digest(config) if config is not None else None,
            "seed": self.run.get("seed"),
            "step": state.get("step", 0),
            "metrics_offset": self.metrics_offset,
            "metrics_sha256": self.metrics_sha256,
        }
        contents = {**state, "run": identity}
        storage.save_torch(self.root / CHECKPOINT, {**contents, "digest": storage.content_digest(contents)})

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

    def step(
        self,
        step: int,
        epoch: float,
        *,
        loss: float,
        lr: float,
        reg: float | None,
        strength: float | None = None,
    ) -> None:
        """``strength``: the λ the step used, given when the method's strength is a schedule (else left out)."""
        line = {"type": "step", "step": step, "epoch": epoch, "loss": loss, "lr": lr, "reg": reg}
        if strength is not None:
            line["strength"] = strength
        self._line(line)

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
