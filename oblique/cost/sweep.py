"""The sweeps: how each method's overhead grows with the width (WRN-28-k) and the depth (ResNet-6n+2).

:func:`run_sweep` benches every model of a sweep into a folder — ``<model>.json`` per model and
``bench.csv`` with every model's rows — and resumes: a model whose record is already there (made with the
same batch size on the same device, with every method asked for) is read back, not benched again. "The
same device" is the device the bench *used* — its type and the card's name — not the ``--device`` string
asked for: a sweep made with ``--device cpu`` and resumed with ``--device auto`` on a machine without a
GPU reuses its records, one made on a GPU and resumed on the CPU (or on another card) benches again. It
sits above :mod:`oblique.cost.bench` and :mod:`oblique.cost.record`, which it uses both.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from oblique.cost.bench import BenchConfig, BenchError, bench, device_name
from oblique.cost.record import device_of, record_problem, write_csv
from oblique.storage import read_json, write_json_atomic

__all__ = ["SWEEPS", "run_sweep"]

#: the sweeps: how each method's overhead grows with the width (WRN-28-k) and the depth (ResNet-6n+2)
SWEEPS: dict[str, list[str]] = {
    "width": [f"wrn28-{k}" for k in range(1, 11)],
    "depth": [f"resnet{d}" for d in (20, 32, 44, 56, 110)],
}


def run_sweep(
    kind: str,
    out: str | os.PathLike,
    models: Sequence[str] | None = None,
    config: BenchConfig | None = None,
    **settings: Any,
) -> list[dict]:
    """Bench every model of sweep ``kind`` (``"width"``: WRN-28-1…10; ``"depth"``: ResNet-20…110).

    Writes ``out/<model>.json`` per model (a model already there, benched with the same batch size on the
    same device type and card with every method asked for, is not benched again: the module docstring)
    and ``out/bench.csv`` with every model's rows, after each model.

    Args:
        kind: a key of :data:`SWEEPS`.
        out: the sweep folder.
        models: overrides the sweep's list of models.
        config: the bench settings (its ``model`` is replaced by each model's); ``None``: a
            :class:`~oblique.cost.bench.BenchConfig` from ``settings``.
        **settings: :class:`~oblique.cost.bench.BenchConfig` fields (or replacing those of ``config``).

    Raises:
        BenchError: an unknown sweep, or a bad bench setting.
    """
    if kind not in SWEEPS:
        raise BenchError(f"sweep must be one of {', '.join(SWEEPS)}; got {kind!r}", settings=("sweep",))
    names = list(models or SWEEPS[kind])
    first = {"model": names[0], **settings}
    config = BenchConfig(**first) if config is None else replace(config, **first)
    out = Path(out)
    dev = config.torch_device()
    here = (dev.type, device_name(dev))
    recs = []
    for name in names:
        path = out / f"{name}.json"
        rec = read_json(path) if path.exists() else None
        if not _reusable(rec, config.batch_size, here, config.method_names()):
            rec = bench(replace(config, model=name))
            write_json_atomic(path, rec)
        recs.append(rec)
        write_csv(recs, out / "bench.csv")
    return recs


def _reusable(rec: Any, batch_size: int, here: tuple[str, str], methods: Sequence[str]) -> bool:
    """Whether a record found in the sweep folder was made with ``batch_size`` on a device of the type and
    card ``here`` (either schema; :func:`oblique.cost.record.device_of`) and holds every one of
    ``methods`` (a sweep resumed with more methods benches the model again, with all of them); else (also
    when it is no bench record: :func:`oblique.cost.record.record_problem`) it is benched again."""
    return (
        record_problem(rec) is None
        and set(methods) <= set(rec["methods"])
        and rec.get("batch_size") == batch_size
        and device_of(rec) == here
    )
