"""The bench record: its schema, the printed table, the CSV, and reading either back.

A record is one JSON object per bench of one model (``schema`` :data:`SCHEMA`; the format is in
:mod:`oblique.cost`'s docstring), written with :func:`oblique.storage.write_json_atomic`.
:func:`format_table` is what ``oblique bench`` prints; :func:`write_csv` writes one row per model and
method with the columns :data:`CSV_COLUMNS`; :func:`read_bench` reads a record, its CSV or a sweep folder
into a pandas DataFrame of those columns — the input of the cost figures.

Schema ``oblique.bench/2`` keeps the device as asked (``device``: ``"auto"``, ``"cuda"``, ``"cpu"`` …)
apart from the one used (``device_used``: ``"cuda:0"``), its type (``device_type``) and the card's name
(``device_name``; ``"cpu"`` on the CPU), and records the ``environment`` (CUDA and cuDNN versions, TF32,
cuDNN autotuning). Records of ``oblique.bench/1`` (``device``: ``"cpu"`` or ``"cuda:0 (NVIDIA H100)"``)
read and print all the same: :func:`device_of` and :func:`device_label` read either.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oblique.storage import RecordError, read_json, write_atomic

__all__ = [
    "CSV_COLUMNS",
    "SCHEMA",
    "SCHEMAS",
    "device_label",
    "device_of",
    "format_table",
    "model_dims",
    "read_bench",
    "record_problem",
    "write_csv",
]

SCHEMA = "oblique.bench/2"
#: the schemas :func:`read_bench` reads (``/1``: ``device`` was the device used, with the card's name)
SCHEMAS = ("oblique.bench/1", SCHEMA)

#: the record's keys that every CSV row of it repeats
_MODEL_KEYS = (
    "model",
    "depth",
    "width",
    "num_params",
    "num_target_params",
    "batch_size",
    "device",
    "device_type",
    "device_name",
    "threads",
)

#: CSV columns that CSVs written before schema ``oblique.bench/2`` lack (read from their ``device``)
_NEW_COLUMNS = ("device_type", "device_name")

#: one row per model and method in the CSV and in :func:`read_bench`'s DataFrame
CSV_COLUMNS = (
    *_MODEL_KEYS,
    "method",
    "kind",
    "step_ms",
    "overhead_pct",
    "regularizer_ms",
    "peak_mem_mb",
    "analytic_flops",
)

#: the table's columns, as printed
_TABLE_COLUMNS = (
    "method",
    "kind",
    "step ms",
    "overhead %",
    "± se",
    "resolved",
    "regularizer ms",
    "reg. % of step",
    "peak MB",
    "analytic GFLOP",
    "where the cost goes",
)


def model_dims(model_name: str) -> tuple[int | None, int | None]:
    """(depth, width) of a CIFAR ResNet or a WRN from its name, for the record; ``None`` where it has none.

    >>> model_dims("resnet110"), model_dims("wrn28-10"), model_dims("cnn")
    ((110, None), (28, 10), (None, None))
    """
    if m := re.fullmatch(r"resnet(\d+)", model_name):
        return int(m[1]), None
    if m := re.fullmatch(r"wrn(\d+)-(\d+)(-drop)?", model_name):
        return int(m[1]), int(m[2])
    return None, None


def device_of(record: dict) -> tuple[str | None, str | None]:
    """(device type, card name — ``"cpu"`` on the CPU) of a bench record of either schema; ``None`` where
    the record does not say.

    >>> device_of({"device": "cuda:0 (NVIDIA H100 80GB HBM3)"}), device_of({"device": "cpu"})
    (('cuda', 'NVIDIA H100 80GB HBM3'), ('cpu', 'cpu'))
    >>> device_of({"device": "auto", "device_type": "cuda", "device_name": "NVIDIA H100"})
    ('cuda', 'NVIDIA H100')
    """
    kind, name = record.get("device_type"), record.get("device_name")
    if isinstance(kind, str):
        return kind, name if isinstance(name, str) else None
    old = record.get("device")  # schema /1: the device used, "cpu" or "cuda:0 (card)"
    if not isinstance(old, str):
        return None, None
    m = re.fullmatch(r"\s*([a-z]+)(?::\d+)?\s*(?:\((.*)\))?\s*", old)
    if m is None:
        return None, None
    return m[1], "cpu" if m[1] == "cpu" else m[2]


def device_label(record: dict) -> str:
    """The device of a bench record in words, as the table prints it: the device used and the card
    (``cuda:0 (NVIDIA H100)``), and what was asked where it differs (``cpu (asked auto)``). A record of
    schema ``oblique.bench/1`` prints its ``device`` as it is.

    >>> device_label({"device": "cuda", "device_used": "cuda:0", "device_type": "cuda", "device_name": "H100"})
    'cuda:0 (H100; asked cuda)'
    >>> device_label({"device": "cpu (old)"}), device_label({"device": "cpu", "device_used": "cpu"})
    ('cpu (old)', 'cpu')
    """
    asked, used = record.get("device"), record.get("device_used")
    if not isinstance(used, str):
        return str(asked)
    kind, name = device_of(record)
    notes = [name] if kind != "cpu" and name else []
    if asked != used:
        notes.append(f"asked {asked}")
    return used + (f" ({'; '.join(notes)})" if notes else "")


def _environment_line(record: dict) -> str | None:
    """The CUDA settings a bench ran with, in words (a record of a CUDA bench of schema /2); else None."""
    env = record.get("environment")
    if device_of(record)[0] != "cuda" or not isinstance(env, dict):
        return None
    onoff = {True: "on", False: "off"}
    return (
        f"environment: CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, TF32 matmul "
        f"{onoff.get(env.get('tf32_matmul'), '?')}, TF32 cuDNN {onoff.get(env.get('tf32_cudnn'), '?')}, "
        f"cuDNN benchmark {onoff.get(env.get('cudnn_benchmark'), '?')}, deterministic algorithms "
        f"{onoff.get(env.get('deterministic_algorithms'), '?')}"
    )


def _target_line(name: str, t: dict) -> str:
    """One target's line: what was measured, the target, and the verdict — or, measured on another device
    than the one the target was defined on, no verdict (Note [targets' device] in
    :mod:`oblique.cost.targets`)."""
    head = f"target {name}: {t['figure']}; target {t['target']}: "
    if t.get("holds") is None and t.get("defined_on"):
        where = "the CPU" if t["defined_on"] == "cpu" else t["defined_on"]
        return head + f"target defined on {where}; informative here"
    return (
        head + ("holds" if t["holds"] else "does NOT hold") + (f" ({t['caveat']})" if t.get("caveat") else "")
    )


def _fmt(v: float | None, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.{nd}f}"


def _table_row(name: str, r: dict) -> tuple[str, ...]:
    return (
        name,
        r["kind"],
        _fmt(r["step_ms"], 1),
        _fmt(r["overhead_pct"], 2) if name != "baseline" else "0 (ref)",
        _fmt(r.get("overhead_pct_se"), 2),
        {True: "yes", False: "no"}.get(r.get("overhead_resolved"), "—"),
        _fmt(r["regularizer_ms"], 3),
        _fmt(r.get("regularizer_pct"), 3),
        _fmt(r["peak_mem_mb"], 1),
        f"{r['analytic_flops'] / 1e9:.4f}",
        r["cost_note"],
    )


def format_table(record: dict) -> str:
    """The bench table and the target lines, as printed by ``oblique bench``."""
    head = (
        f"oblique bench: {record['model']} ({record['num_params'] / 1e6:.2f} M parameters, "
        f"{record['num_target_params'] / 1e6:.2f} M targeted), batch {record['batch_size']}, {device_label(record)}, "
        f"{record['threads']} threads, {record['rounds']} rounds (+{record['warmup']} warm-up), "
        f"torch {record['torch_version']}, {record['seconds']:.0f} s"
    )
    cols = _TABLE_COLUMNS
    rows = [_table_row(name, r) for name, r in record["methods"].items()]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    lines = [head]
    env = _environment_line(record)
    if env:
        lines.append(env)
    aa = record.get("aa")  # the A/A control (absent from records made before it existed)
    if aa:
        floor = aa.get("floor_pct")
        lines.append(
            f"A/A control (baseline stepped twice per round): {aa['overhead_pct']:+.2f} ± "
            f"{_fmt(aa.get('overhead_pct_se'))} % of the baseline step → "
            + (
                f"floor ±{floor:.2f} %: an overhead (or a difference between two methods) inside it is not resolved"
                if floor is not None and floor == floor
                else "no floor (too few rounds for a standard error)"
            )
        )
    lines.append("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    for name, why in record.get("errors", {}).items():
        lines.append(f"{name}: not benched ({why})")
    for name, t in record.get("targets", {}).items():
        lines.append(_target_line(name, t))
    return "\n".join(lines)


def _rows(record: dict) -> list[dict]:
    device_type, card = device_of(record)
    return [
        {
            **{k: record.get(k) for k in _MODEL_KEYS},
            "device_type": device_type,
            "device_name": card,
            "method": name,
            **{k: r[k] for k in CSV_COLUMNS if k in r},
        }
        for name, r in record["methods"].items()
    ]


def write_csv(records: Sequence[dict], path: str | os.PathLike) -> None:
    """One row per model and method, columns :data:`CSV_COLUMNS` (written atomically, with
    :func:`oblique.storage.write_atomic`)."""
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=CSV_COLUMNS)
    w.writeheader()
    for rec in records:
        for row in _rows(rec):
            w.writerow({k: row.get(k) for k in CSV_COLUMNS})
    write_atomic(path, text.getvalue())


def record_problem(rec: Any) -> str | None:
    """What keeps ``rec`` (a parsed JSON file) from being a bench record this version reads, in words; None
    when it is one (a known schema, and its methods a table of tables).

    >>> record_problem({"schema": SCHEMA, "methods": {"baseline": {}}}) is None
    True
    >>> record_problem({"schema": SCHEMA, "methods": [1]})
    'a bench record whose methods are not a table of tables'
    """
    if not isinstance(rec, dict) or rec.get("schema") not in SCHEMAS:
        return f"expected a bench record (schema {' or '.join(SCHEMAS)}); got {str(rec)[:60]!r}"
    methods = rec.get("methods")
    if not isinstance(methods, dict) or not all(isinstance(r, dict) for r in methods.values()):
        return "a bench record whose methods are not a table of tables"
    return None


def read_bench(path: str | os.PathLike):
    """Read bench results into a pandas DataFrame with the columns :data:`CSV_COLUMNS`.

    Args:
        path: a bench JSON file, a bench CSV file, or a sweep folder (every ``*.json`` record in it).

    Raises:
        oblique.storage.RecordError: nothing there, or a file that is not a bench record (one line).
    """
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise RecordError(f"no bench records (*.json) in {path}")
    elif path.suffix == ".csv":
        if not path.exists():
            raise RecordError(f"{path}: no such file")
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError) as e:  # pandas' parser errors, a file not UTF-8: ValueErrors
            raise RecordError(f"{path}: not a bench CSV ({str(e).splitlines()[0][:100]})") from None
        missing = [c for c in CSV_COLUMNS if c not in frame.columns and c not in _NEW_COLUMNS]
        if missing:
            raise RecordError(f"{path}: not a bench CSV (no column {', '.join(missing)})")
        if any(c not in frame.columns for c in _NEW_COLUMNS):  # written before schema /2: from its device
            devices = [device_of({"device": d}) for d in frame["device"]]
            frame["device_type"] = [d[0] for d in devices]
            frame["device_name"] = [d[1] for d in devices]
        return frame[[*CSV_COLUMNS, *(c for c in frame.columns if c not in CSV_COLUMNS)]]
    else:
        files = [path]
    recs = [read_json(f) for f in files]
    for rec, where in zip(recs, files, strict=True):
        problem = record_problem(rec)
        if problem is not None:
            raise RecordError(f"{where}: {problem}")
    rows = [row for rec in recs for row in _rows(rec)]
    return pd.DataFrame([{k: r.get(k) for k in CSV_COLUMNS} for r in rows], columns=list(CSV_COLUMNS))
