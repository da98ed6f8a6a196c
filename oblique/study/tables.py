"""The study's tables, from the runs on disk: ``results.csv`` (one row per planned run) and ``summary.md``.

``results.csv``
    One row per planned run: every grid variable, the model, data set, targets, epochs and optimizer,
    ``status`` (``ok``, ``diverged``, ``error`` or ``pending``), ``test_error``, ``test_error_top5`` (%), the final drift means (the four
    :data:`oblique.geometry.DRIFT_KEYS`, mean over layers), ``train_time_s``, ``regularizer_time_s``,
    ``diverged_step``.
``summary.md``
    Mean ± std over seeds of every group of runs that differ only in their seed (method × strength ×
    batch size × any other grid variable: the optimizer, where a study varies it), in the layout of the paper's tables (best, then the mean in
    parentheses); where the study's dataset and model are a published setting of the Norm Loss poster
    (:data:`oblique.study.published.PUBLISHED`), the published figures stand beside ours. Then the grid:
    the methods by manifold and kind (:mod:`oblique.study.grid`). When the study holds a finished Norm
    Loss run, the poster's claims follow, each tested on the study's own numbers
    (:mod:`oblique.study.claims`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from oblique import records, storage
from oblique.geometry import DRIFT_KEYS
from oblique.study.folder import RESULTS_FILE, SUMMARY_FILE, Study, load_study
from oblique.study.published import PUBLISHED, published_cell
from oblique.text import number as _num
from oblique.text import value as _fmt

__all__ = ["collect", "group_keys", "results_frame", "summary_frame", "summary_markdown"]


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
            optimizer=settings.get("optimizer"),
        )
        for key in ("targets", "optimizer"):
            if key in grid:
                row[key] = grid[key]
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
            threads=_threads_used(study.run_dir(name)) if summary else None,
        )
        rows.append(row)
    frame = pd.DataFrame.from_records(rows)
    if not frame.empty:
        frame["diverged_step"] = frame["diverged_step"].astype("Int64")
        frame["steps"] = frame["steps"].astype("Int64")
        frame["threads"] = frame["threads"].astype("Int64")
    return frame


def _threads_used(run_dir) -> int | None:
    """The torch CPU thread count a run trained with (results depend on it in the last digits)."""
    try:
        used = records.read_config(run_dir).get("threads_used")
    except (storage.RecordError, AttributeError):
        return None
    return used if isinstance(used, int) else None


def group_keys(study: Study) -> list[str]:
    return [k for k in study.grid_variables if k != "seed"]


def summary_frame(study: Study | str | os.PathLike):
    """Mean, std, best over seeds per group of runs that differ only in the seed (pandas DataFrame).

    Only runs with status ``ok`` enter the statistics; ``runs``, ``ok``, ``diverged`` count the group.
    """
    import pandas as pd

    if not isinstance(study, Study):
        study = load_study(study)
    res = results_frame(study)
    keys = group_keys(study)
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


def summary_markdown(study: Study | str | os.PathLike, claims: bool = True, grid: bool = True) -> str:
    """``summary.md``: the poster's layout — test error best (mean ± std over seeds) per group of runs —
    then, with ``grid``, the methods arranged by manifold and kind (:func:`oblique.study.grid.grid_markdown`,
    when some finished method aims at a manifold), then, when the study holds a finished Norm Loss run and
    ``claims``, the poster's claims tested on the study's own numbers
    (:func:`oblique.study.claims.claims_markdown`)."""
    if not isinstance(study, Study):
        study = load_study(study)
    sf = summary_frame(study)
    if sf.empty:
        return "No runs.\n"
    keys = group_keys(study)
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
            r["method"],
            lam,
            str(r["batch_size"]),
            *(_fmt(r[k]) for k in extra),
            err,
            _num(r["top5_mean"], ".2f"),
            _num(r["norm_dev_mean_mean"], ".3g"),
            _num(r["offdiag_dev_mean"], ".3g"),
            _num(r["train_time_s"], ".1f"),
            runs,
        ]
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
    text = "\n".join(lines) + "\n" + note
    if grid:
        from oblique.study.grid import grid_markdown

        section = grid_markdown(study, results_frame(study))
        text += "\n" + section if section else ""
    if claims and ((sf["method"] == "nl") & (sf["ok"] > 0)).any():  # a finished Norm Loss run
        from oblique.study.claims import claims_markdown

        text += "\n" + claims_markdown(study, results_frame(study))
    return text


def collect(study: Study | str | os.PathLike) -> tuple[Path, Path]:
    """Write ``results.csv`` and ``summary.md`` (atomically) from the runs on disk; return their paths."""
    if not isinstance(study, Study):
        study = load_study(study)
    res = results_frame(study)
    csv_path, md_path = study.root / RESULTS_FILE, study.root / SUMMARY_FILE
    storage.write_text_atomic(csv_path, res.to_csv(index=False))
    storage.write_text_atomic(md_path, summary_markdown(study))
    return csv_path, md_path
