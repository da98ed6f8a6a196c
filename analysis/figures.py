"""The figures of a study (see :mod:`analysis`), drawn from its run records.

Records are read through :mod:`oblique.records` (``metrics_frame``), :mod:`oblique.study`
(``results_frame``, which reads ``summary.json`` through ``oblique.records``; the study's ``bench.json``)
and :mod:`analysis.norms` (``model.pt``).

Figures 1, 1b, 2 and 5 show each method at one *reference setting*
(:func:`oblique.study.reference.reference_runs`, the setting the claims test too), so that a study with
several strengths or batch sizes still gives one curve per method: the batch size is the model's standard
one (:mod:`oblique.recipes`; 100 for resnet1d) when the study has it, else the most frequent one; the
strength is the one nearest (in log) to the method's default; any other grid variable takes its first
value.

Figures 3 and 4 draw a curve for every method run at several strengths (batch sizes), with ``baseline`` as
a dashed level in figure 3; a study with one value per method draws every method as a point with its
spread over seeds, and a one-line note says that a curve needs several values (``--strengths a,b,c`` /
``--batch-sizes a,b,c``).

Every method keeps its style (:func:`analysis.style.style`: colour, marker, line style) in every figure;
dense per-step lines are rasterized inside the PDF; log axes label decades (or 1-2-5) only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter

from analysis.style import FLOOR, PLAIN, log_ticks, new_figure, print_style, save, style
from oblique import records, storage
from oblique.cost import device_label
from oblique.study import Study, load_study, read_study_bench, results_frame
from oblique.study.reference import (
    at_first_extras,
    at_reference_strengths,
    method_order,
    reference_batch_size,
)
from oblique.study.reference import reference_runs as _reference_runs

__all__ = [
    "DRIFT_PANELS",
    "fig_batch_size",
    "fig_cost",
    "fig_drift",
    "fig_drift_layers",
    "fig_filter_norms",
    "fig_grid",
    "fig_loss",
    "fig_strength",
    "reference_runs",
    "write_figures",
]

#: The drift metrics of figure 1 (docs/DESIGN.md, "Drift metrics"), with their axis labels.
DRIFT_PANELS = {
    "norm_dev_mean": r"mean $|\,\|F_i\| - 1\,|$",
    "ddiag_dev": r"$\|\mathrm{ddiag}(FF^\top) - I\|_F / \sqrt{n}$",
    "offdiag_dev": r"RMS off-diagonal of $FF^\top$",
}

Echo = Callable[[str], None]

#: markers along a curve: about this many per line (a fraction of its length)
MARK_EVERY = 0.1
#: the methods the poster compares in its figures (Norm Loss against weight decay)
PAIR = ("nl", "wd")


def _study(study: Study | str | os.PathLike) -> Study:
    return study if isinstance(study, Study) else load_study(study)


def reference_runs(study: Study | str | os.PathLike, statuses=("ok",)) -> pd.DataFrame:
    """The runs of every method at its reference setting (module docstring), with ``statuses``."""
    study = _study(study)
    return _reference_runs(study, results_frame(study), statuses)


def _label(row) -> str:
    return f"{row['method']} (λ={row['strength']:g})" if row["strength_applies"] else str(row["method"])


def _line(ax, x, y, method: str, label: str | None = None, *, dense: bool = False, **kw):
    """One method's curve in its style; a dense (per-step) line is rasterized and marked at every
    ``len/8``-th point (a zigzag would get a marker per zig at a fixed distance along the line)."""
    s = style(method)
    every = max(1, len(x) // 8) if dense else MARK_EVERY
    kw = {
        "color": s["color"],
        "linestyle": s["linestyle"],
        "marker": s["marker"],
        "markersize": 3.5,
        "markevery": every,
        "label": label,
        "rasterized": dense,
        **kw,
    }
    return ax.plot(x, y, **kw)


def _band(ax, x, mean, lo, hi, method: str, label: str, *, dense: bool = False) -> None:
    _line(ax, x, mean, method, label, dense=dense)
    ax.fill_between(x, lo, hi, color=style(method)["color"], alpha=0.18, linewidth=0, rasterized=dense)


def _legend_below(fig, ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(handles), 4), frameon=False)


def _note_diverged(study: Study, echo: Echo) -> None:
    res = results_frame(study)
    div = res[res["status"] == "diverged"]
    if len(div):
        echo(f"note: {len(div)} diverged runs are left out of the curves (see results.csv)")


def _finite_range(arrays) -> tuple[float, float]:
    """The smallest and largest finite positive value of ``arrays`` (for a log axis)."""
    v = np.concatenate([np.ravel(np.asarray(a, dtype=float)) for a in arrays] or [np.empty(0)])
    v = v[np.isfinite(v) & (v > 0)]
    return (float(v.min()), float(v.max())) if len(v) else (1.0, 10.0)


# --------------------------------------------------------------------------- figure 1
def _drift_frames(study: Study, needs: list[str], figure: str, echo: Echo) -> dict[str, tuple] | None:
    """The drift records of every reference run as frames: method -> (its label, its runs' frames), in
    the methods' order. Runs without one (or whose records lack the columns ``needs``) are left out with a
    one-line note; None, with a note that ``figure`` is skipped and why, when no run holds one."""
    ref = reference_runs(study)
    found: dict[str, tuple[str, list[pd.DataFrame]]] = {}
    missing = 0
    for method in method_order(ref["method"]):
        rows = ref[ref["method"] == method]
        for name in rows["run"]:
            df = records.metrics_frame(study.run_dir(name), "drift")
            if df.empty or not set(needs) <= set(df.columns):
                missing += 1
                continue
            found.setdefault(method, (_label(rows.iloc[0]), []))[1].append(df)
    if not found:
        echo(f"{figure} skipped: no run of the reference setting holds a drift record (metrics.jsonl)")
        return None
    if missing:
        echo(f"{figure}: {missing} runs hold no drift record (metrics.jsonl) and are left out")
    return found


def fig_drift(
    study: Study | str | os.PathLike, metrics: tuple[str, ...] = tuple(DRIFT_PANELS), echo: Echo = print
):
    """Figure 1: drift over training per method, mean over layers, mean and min–max band over seeds. Runs
    without drift records are left out (with a note); None when no run has any."""
    study = _study(study)
    found = _drift_frames(study, ["epoch", *metrics], "figure 1 (drift)", echo)
    if found is None:
        return None
    with print_style():
        fig, axes = new_figure(len(metrics))
        for ax, key in zip(axes[0], metrics, strict=True):
            seen = []
            for method, (label, dfs) in found.items():
                frames = [df[["epoch", key]] for df in dfs]
                table = pd.concat(frames).groupby("epoch")[key].agg(["mean", "min", "max"]).clip(lower=FLOOR)
                label = f"{label}, {len(frames)} seed{'s' * (len(frames) > 1)}"
                _band(ax, table.index, table["mean"], table["min"], table["max"], method, label)
                seen.append(table.to_numpy())
            ax.set_yscale("log")
            log_ticks(ax.yaxis, *_finite_range(seen))
            ax.set_xlabel("epoch")
            ax.set_ylabel(DRIFT_PANELS.get(key, key))
            ax.set_title(key)
        _legend_below(fig, axes[0][0])
        fig.suptitle(
            f"Drift from the oblique manifold, mean over layers (values below {FLOOR:g} drawn at it)"
        )
    return fig


def fig_drift_layers(study: Study | str | os.PathLike, key: str, echo: Echo = print):
    """Figure 1, per layer: one panel per targeted layer, mean over seeds of ``key`` (log y). Runs without
    drift records are left out (with a note); None when no run has any."""
    study = _study(study)
    found = _drift_frames(study, ["epoch", "layers"], f"figure 1, {key} per layer", echo)
    if found is None:
        return None
    curves: dict[str, dict[str, pd.Series]] = {}
    for method, (_, dfs) in found.items():
        per_layer: dict[str, list[pd.Series]] = {}
        for df in dfs:
            for layer in df["layers"].iloc[0]:
                values = [d[layer][key] for d in df["layers"]]
                per_layer.setdefault(layer, []).append(pd.Series(values, index=df["epoch"]))
        curves[method] = {layer: pd.concat(s, axis=1).mean(axis=1) for layer, s in per_layer.items()}
    layers = list(dict.fromkeys(layer for c in curves.values() for layer in c))
    ncols = min(4, max(1, len(layers)))
    nrows = max(1, math.ceil(len(layers) / ncols))
    with print_style():
        fig, axes = new_figure(ncols, nrows, height=2.0, sharex=True)
        flat = axes.ravel()
        for ax, layer in zip(flat, layers, strict=False):
            seen = []
            for method, c in curves.items():
                if layer in c:
                    y = c[layer].clip(lower=FLOOR)
                    _line(ax, c[layer].index, y, method, method)
                    seen.append(y.to_numpy())
            ax.set_yscale("log")
            log_ticks(ax.yaxis, *_finite_range(seen))
            ax.set_title(layer, fontsize=8)
            ax.set_xlabel("epoch")
            ax.set_ylabel(key)
        for ax in flat[len(layers) :]:
            ax.set_visible(False)
        flat[0].legend(frameon=False)
        fig.suptitle(f"{key} per layer, mean over seeds")
    return fig


# --------------------------------------------------------------------------- figure 1b
def fig_filter_norms(study: Study | str | os.PathLike, echo: Echo = print):
    """Figure 1b: the distribution of the filter norms ``‖F_i‖`` at the end of training, one violin per
    method (every targeted layer, every seed of the reference setting), the manifold (norm 1) dashed; a
    method whose norms are all equal (to 1e-6) is a bar at that value. Runs without ``model.pt`` are left
    out (with a note). Returns ``None`` when no run has one."""
    from analysis.norms import filter_norms

    study = _study(study)
    ref = reference_runs(study)
    norms: dict[str, np.ndarray] = {}
    missing = 0
    for method in method_order(ref["method"]):
        parts = []
        for name in ref[ref["method"] == method]["run"]:
            try:
                parts += list(filter_norms(study.run_dir(name)).values())
            except storage.RecordError:
                missing += 1
        if parts:
            norms[method] = np.concatenate(parts)
    if missing:
        echo(f"figure 1b: {missing} runs saved no model.pt and are left out")
    if not norms:
        echo("figure 1b skipped: no run of the reference setting saved its model (model.pt)")
        return None
    with print_style():
        fig, axes = new_figure(1, width=7.0, height=2.8)
        ax = axes[0][0]
        ax.axhline(1.0, color="0.3", linestyle="--", linewidth=0.8, label="the oblique manifold (‖F_i‖ = 1)")
        for i, (method, v) in enumerate(norms.items()):
            s = style(method)
            if np.ptp(v) > 1e-6:
                parts = ax.violinplot([v], positions=[i], widths=0.8, showextrema=False)
                for body in parts["bodies"]:
                    body.set_facecolor(s["color"])
                    body.set_edgecolor("black")
                    body.set_linewidth(0.5)
                    body.set_alpha(0.55)
            else:
                ax.plot([i - 0.35, i + 0.35], [v.mean()] * 2, color=s["color"], linewidth=2.5)
            ax.plot(
                [i],
                [np.median(v)],
                marker=s["marker"],
                color=s["color"],
                markeredgecolor="black",
                markeredgewidth=0.5,
                markersize=5,
                linestyle="none",
            )
        ax.set_xticks(range(len(norms)), list(norms), rotation=30, ha="right")
        ax.set_ylabel(r"filter norm $\|F_i\|$")
        ax.set_title("Filter norms at the end of training, every targeted layer and seed (marker: median)")
        ax.legend(frameon=False, loc="best", fontsize=7)
    return fig


# --------------------------------------------------------------------------- figure 2
def fig_loss(study: Study | str | os.PathLike, span_epochs: float = 0.5):
    """Figure 2: train cross-entropy per batch against the step — (a) raw, per batch, first seed; (b)
    smoothed (exponential moving average over ``span_epochs`` epochs), mean and min–max band over seeds.
    When the study has Norm Loss and weight decay, the poster's comparison: those two (and baseline in
    (b)); else every method. Log y, labelled at decades (or 1-2-5) only; the per-step lines are
    rasterized in the PDF."""
    study = _study(study)
    ref = reference_runs(study)
    methods = method_order(ref["method"])
    if set(PAIR) <= set(methods):  # the poster's comparison, with baseline as the reference when smoothed
        raw_methods = [m for m in methods if m in PAIR]
        methods = [m for m in methods if m in (*PAIR, "baseline")]
    else:
        raw_methods = methods
    with print_style():
        fig, axes = new_figure(2)
        raw_ax, smooth_ax = axes[0]
        seen = []
        for method in methods:
            rows = ref[ref["method"] == method]
            smoothed = []
            for i, name in enumerate(rows.sort_values("seed")["run"]):
                steps = records.metrics_frame(study.run_dir(name), "step")
                if steps.empty:
                    continue
                per_epoch = max(1, int(round(1 / steps["epoch"].iloc[0])))
                if i == 0 and method in raw_methods:
                    _line(
                        raw_ax,
                        steps["step"],
                        steps["loss"],
                        method,
                        _label(rows.iloc[0]),
                        dense=True,
                        linewidth=0.5,
                        alpha=0.75,
                        linestyle="-",
                    )
                    seen.append(steps["loss"].to_numpy())
                ema = steps["loss"].ewm(span=max(2.0, span_epochs * per_epoch)).mean()
                smoothed.append(pd.Series(ema.to_numpy(), index=steps["step"].to_numpy()))
            if not smoothed:
                continue
            table = pd.concat(smoothed, axis=1)
            _band(
                smooth_ax,
                table.index,
                table.mean(axis=1),
                table.min(axis=1),
                table.max(axis=1),
                method,
                _label(rows.iloc[0]),
                dense=True,
            )
            seen.append(table.to_numpy())
        lo, hi = _finite_range(seen)
        for ax, title in (
            (raw_ax, "(a) raw, per batch (first seed)"),
            (smooth_ax, f"(b) EMA over {span_epochs:g} epoch, band over seeds"),
        ):
            ax.set_yscale("log")
            log_ticks(ax.yaxis, lo, hi)
            ax.set_xlabel("step")
            ax.set_ylabel("train cross-entropy (nats)")
            ax.set_title(title)
        raw_ax.legend(frameon=False, fontsize=7)
        _legend_below(fig, smooth_ax)
    return fig


# --------------------------------------------------------------------------- figures 3 and 4
def _error_against(res: pd.DataFrame, x: str, ax, *, level: str | None) -> int:
    """Test error of ``res`` against column ``x``: a curve (mean, min–max band over seeds) per method run
    at several values; against the strength, ``level`` (a method without a strength) as a dashed level.
    With no curve at all, every method is a point (against the strength, every method without one a
    level). Returns the most x values drawn for one method."""
    counts = {
        m: res[(res["method"] == m) & (res["status"] == "ok")][x].nunique() for m in res["method"].unique()
    }
    most = max(counts.values(), default=0)
    curves = most >= 2
    for method in method_order(res["method"]):
        rows = res[res["method"] == method]
        ok = rows[rows["status"] == "ok"]
        s = style(method)
        if x == "strength" and not bool(rows["strength_applies"].iloc[0]):
            if curves and method != level:
                continue
            if len(ok):
                m, lo, hi = ok["test_error"].mean(), ok["test_error"].min(), ok["test_error"].max()
                ax.axhline(
                    m, color=s["color"], linestyle=s["linestyle"], linewidth=1.0, label=f"{method} (level)"
                )
                ax.axhspan(lo, hi, color=s["color"], alpha=0.10, linewidth=0)
            continue
        if curves and counts.get(method, 0) < 2:
            continue
        stats = ok.groupby(x)["test_error"].agg(["mean", "min", "max"]).sort_index()
        if len(stats):
            ax.errorbar(
                stats.index,
                stats["mean"],
                yerr=[stats["mean"] - stats["min"], stats["max"] - stats["mean"]],
                color=s["color"],
                marker=s["marker"],
                linestyle=s["linestyle"],
                markersize=4,
                capsize=2,
                label=method,
            )
            ax.fill_between(
                stats.index, stats["min"], stats["max"], color=s["color"], alpha=0.15, linewidth=0
            )
        div = sorted(set(rows[rows["status"] == "diverged"][x]))
        if div:
            ax.plot(
                div,
                [0.97] * len(div),
                "x",
                color=s["color"],
                transform=ax.get_xaxis_transform(),
                markersize=6,
                label=f"{method} diverged",
            )
    return most


def _error_axis(ax, res: pd.DataFrame) -> None:
    """Test error on a log axis when it spans more than a factor 4 (a flat curve stays readable beside one
    that climbs), labelled at 1-2-5 values."""
    ok = res[res["status"] == "ok"]["test_error"]
    lo, hi = _finite_range([ok.to_numpy()])
    if hi / lo > 4:
        ax.set_yscale("log")
        log_ticks(ax.yaxis, lo, hi, subs=(1.0, 2.0, 3.0, 5.0))
        ax.set_ylabel("test error (%, log scale)")
    else:
        ax.set_ylabel("test error (%)")


def fig_strength(study: Study | str | os.PathLike, echo: Echo = print):
    """Figure 3: test error against the strength λ (log x), mean with min–max band over seeds, at the
    reference batch size, a curve per method run at several strengths; ``baseline`` as a dashed level;
    diverged strengths as ×."""
    study = _study(study)
    res = results_frame(study)
    bs = reference_batch_size(res)
    res = at_first_extras(study, res[res["batch_size"] == bs])
    with print_style():
        fig, axes = new_figure(1, width=4.5, height=3.0)
        ax = axes[0][0]
        most = _error_against(res, "strength", ax, level="baseline")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(PLAIN)
        _error_axis(ax, res)
        ax.set_xlabel("regularization strength λ (log scale)")
        ax.set_title(f"Test error against λ (batch {bs}; band: min–max over seeds)")
        ax.legend(frameon=False, fontsize=7)
    if most < 2:
        echo("figure 3: one strength per method, drawn as points; pass --strengths a,b,c for a curve")
    return fig


def fig_batch_size(study: Study | str | os.PathLike, echo: Echo = print):
    """Figure 4: test error against the batch size (log₂ x), each method at its reference strength, a curve
    per method run at several batch sizes."""
    study = _study(study)
    res = at_reference_strengths(at_first_extras(study, results_frame(study)))
    with print_style():
        fig, axes = new_figure(1, width=4.5, height=3.0)
        ax = axes[0][0]
        most = _error_against(res, "batch_size", ax, level=None)
        ax.set_xscale("log", base=2)
        sizes = sorted(set(res["batch_size"]))
        ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.xaxis.set_minor_formatter(NullFormatter())
        _error_axis(ax, res)
        ax.set_xlabel("batch size (log₂ scale)")
        ax.set_title("Test error against batch size (band: min–max over seeds)")
        ax.legend(frameon=False, fontsize=7)
    if most < 2:
        echo("figure 4: one batch size in this study, drawn as points; pass --batch-sizes a,b,c for a curve")
    return fig


# --------------------------------------------------------------------------- figure 5
def _bench_frame(path: str | os.PathLike) -> pd.DataFrame | None:
    """Bench records (``oblique bench``: a record, its CSV or a sweep folder) as :func:`oblique.cost.read_bench`
    reads them: one row per model and method with ``num_params``, ``overhead_pct``, ``regularizer_ms``."""
    try:
        from oblique.cost import read_bench
    except ImportError:
        return None
    return read_bench(path)


#: Overheads at or below this (%) are drawn at it on the log axis (the paired median can be <= 0: noise).
OVERHEAD_FLOOR_PCT = 0.01


def _cost_bars(ax, study: Study, ref: pd.DataFrame) -> None:
    """Figure 5 (a): one step per method from the study's bench (benched alone, interquartile range as
    the error bar), else the runs' wall time per step (which shared the cores), the regularizer hatched."""
    record = read_study_bench(study)
    if record is not None:
        table = record["methods"]
        methods = method_order(table)
        step = [table[m]["step_ms"] for m in methods]
        err = [
            [table[m]["step_ms"] - table[m]["step_ms_q25"] for m in methods],
            [table[m]["step_ms_q75"] - table[m]["step_ms"] for m in methods],
        ]
        reg = [table[m]["regularizer_ms"] for m in methods]
        title = (
            f"(a) one training step, each method benched alone\n{record['model']}, batch "
            f"{record['batch_size']}, {device_label(record).split(' ')[0]}, {record['threads']} thread"
            f"{'s' * (record['threads'] != 1)}, {record['rounds']} rounds"
        )
    else:
        methods = method_order(ref["method"])
        step, err, reg = [], None, []
        for method in methods:
            rows = ref[ref["method"] == method]
            step.append((1e3 * rows["train_time_s"] / rows["steps"].astype(float)).mean())
            reg.append((1e3 * rows["regularizer_time_s"] / rows["steps"].astype(float)).mean())
        title = "(a) wall time per step of the runs\n(they shared the cores; no bench.json)"
    for i, method in enumerate(methods):
        ax.bar(
            i,
            step[i],
            color=style(method)["color"],
            edgecolor="black",
            linewidth=0.5,
            yerr=None if err is None else [[err[0][i]], [err[1][i]]],
            capsize=2,
        )
        ax.bar(i, reg[i], color="white", alpha=0.6, edgecolor="black", hatch="///", linewidth=0.5)
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    ax.set_ylabel("time per training step (ms)")
    ax.set_title(title, fontsize=8)
    hatched = Patch(facecolor="white", edgecolor="black", hatch="///", linewidth=0.5)
    ax.legend([hatched], ["the regularizer's own time"], frameon=False, fontsize=7, loc="upper left")


def fig_cost(study: Study | str | os.PathLike, bench: str | os.PathLike | None = None, echo: Echo = print):
    """Figure 5: (a) the time of one training step per method, the regularizer's own time hatched — from
    the study's ``bench.json`` (each method benched alone after the runs), else (with a note in the title)
    from the runs' wall time; with ``bench`` records (``oblique bench``, a sweep over model sizes), (b) the
    step overhead over baseline and (c) the regularizer's isolated time, both against the parameter count
    (log-log)."""
    study = _study(study)
    ref = reference_runs(study)
    bench_df = _bench_frame(bench) if bench else None
    if bench and bench_df is None:
        echo("figure 5 (b, c) skipped: oblique.cost (the bench's reader) is not available in this version")
    with print_style():
        ncols = 3 if bench_df is not None else 1
        fig, axes = new_figure(ncols, width=10.0 if ncols == 3 else 4.5, height=3.0)
        _cost_bars(axes[0][0], study, ref)
        if bench_df is not None:
            bench_df = bench_df[bench_df["method"] != "baseline"]
            low = (bench_df["overhead_pct"] <= OVERHEAD_FLOOR_PCT).sum()
            for col, bx, label, title in (
                ("overhead_pct", axes[0][1], "step overhead over baseline (%)", "(b) bench: paired overhead"),
                ("regularizer_ms", axes[0][2], "regularizer's own time per step (ms)", "(c) bench: isolated"),
            ):
                seen = []
                for method in method_order(bench_df["method"]):
                    b = bench_df[bench_df["method"] == method].sort_values("num_params")
                    y = b[col].astype(float).clip(lower=OVERHEAD_FLOOR_PCT if col == "overhead_pct" else 1e-4)
                    s = style(method)
                    bx.plot(
                        b["num_params"],
                        y,
                        marker=s["marker"],
                        markersize=3.5,
                        color=s["color"],
                        linestyle=s["linestyle"],
                        label=method,
                    )
                    seen.append(y.to_numpy())
                bx.set_xscale("log")
                bx.set_yscale("log")
                log_ticks(bx.yaxis, *_finite_range(seen))
                bx.set_xlabel("parameters of the model (log scale)")
                bx.set_ylabel(label)
                bx.set_title(title, fontsize=8)
            axes[0][2].legend(frameon=False, fontsize=7)
            if low:
                echo(
                    f"figure 5 (b): {low} overheads at or below {OVERHEAD_FLOOR_PCT:g} % drawn at it (timing noise)"
                )
    return fig


# --------------------------------------------------------------------------- figure 7
def fig_grid(study: Study | str | os.PathLike, echo: Echo = print):
    """Figure 7: the grid of ways onto the manifolds (:mod:`oblique.study.grid`). One panel per manifold
    (oblique, Stiefel), the four kinds of way as columns; each method of the cell a point in its style at
    its test error (mean, the bar ± the sample std over seeds), labelled with its drift from that panel's
    manifold (``norm_dev_mean`` on the oblique panel, ``offdiag_dev`` on the Stiefel one) and its step
    overhead. Plain training's mean error is the dashed level. None, with a note, when no finished method
    aims at a manifold."""
    from oblique.study.grid import GRID_KINDS, grid_frame

    frame = grid_frame(_study(study))
    placed = frame[frame["manifold"] != ""] if not frame.empty else frame
    if placed.empty:
        echo("figure 7 skipped: no finished method of this study aims at a manifold")
        return None
    base = frame[frame["method"] == "baseline"]["error_mean"]
    errors = np.concatenate([placed["error_mean"] - placed["error_std"].fillna(0), base.to_numpy()])
    tops = np.concatenate([placed["error_mean"] + placed["error_std"].fillna(0), base.to_numpy()])
    lo, hi = np.nanmin(errors), np.nanmax(tops)
    pad = 0.25 * (hi - lo) if hi > lo else 0.5
    labels = {
        "soft": "soft\n(penalty)",
        "reparam": "reparam-\netrization",
        "projection": "projection",
        "riemannian": "Riemannian\noptimizer",
    }
    drift_of = {"oblique": ("norm_dev_mean", "norm"), "stiefel": ("offdiag_dev", "off-diag")}
    with print_style():
        fig, axes = new_figure(2, width=9.0, height=3.4, sharey=True)
        for ax, (manifold, title) in zip(
            axes[0],
            (("oblique", "oblique: ddiag(FFᵀ) = I"), ("stiefel", "Stiefel: FFᵀ = I (per group)")),
            strict=True,
        ):
            key, short = drift_of[manifold]
            for col, kind in enumerate(GRID_KINDS):
                members = placed[(placed["manifold"] == manifold) & (placed["kind"] == kind)]
                offsets = np.linspace(-0.22, 0.22, len(members)) if len(members) > 1 else [0.0] * len(members)
                for dx, (_, r) in zip(offsets, members.iterrows(), strict=True):
                    s = style(r["method"])
                    x = col + dx
                    ax.errorbar(
                        x,
                        r["error_mean"],
                        yerr=None if math.isnan(r["error_std"]) else r["error_std"],
                        color=s["color"],
                        marker=s["marker"],
                        markersize=6,
                        capsize=2,
                        linestyle="none",
                    )
                    overhead = "" if math.isnan(r["overhead_pct"]) else f"\n{r['overhead_pct']:+.0f} %"
                    ax.annotate(
                        f"{r['method']}\n{short} {r[key]:.1g}{overhead}",
                        (x, r["error_mean"]),
                        xytext=(4, 4),
                        textcoords="offset points",
                        fontsize=6,
                    )
                if members.empty:
                    ax.text(col, lo, "empty", ha="center", va="bottom", fontsize=7, color="0.5")
            if len(base):
                ax.axhline(
                    float(base.iloc[0]),
                    color="black",
                    linestyle="--",
                    linewidth=0.8,
                    label="baseline (plain training)",
                )
            ax.set_xticks(range(len(GRID_KINDS)), [labels[k] for k in GRID_KINDS], fontsize=7)
            ax.set_xlim(-0.6, len(GRID_KINDS) - 0.4)
            ax.set_title(title, fontsize=9)
        axes[0][0].set_ylim(lo - pad, hi + pad)
        axes[0][0].set_ylabel("test error % (mean ± std over seeds)")
        _legend_below(fig, axes[0][0])
    return fig


# --------------------------------------------------------------------------- all of them
def write_figures(
    study_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    bench: str | os.PathLike | None = None,
    per_layer: bool = False,
    echo: Echo = print,
) -> list[Path]:
    """Write figures 1–5, 1b and 7 (PNG and PDF) and table 6 (``table.md``, ``table.tex``) of a study. A
    figure whose records no run holds (drift records, ``model.pt``) is left out with a one-line note.

    Args:
        study_dir: a study folder (``oblique study --out``).
        out: where to write; default ``study_dir/figures``.
        bench: bench records for figure 5 (b, c): an ``oblique bench`` record, its CSV or a sweep folder.
        per_layer: also write ``fig1_drift_layers_<metric>`` for each drift metric of figure 1.
        echo: receives one-line notes (a figure drawn partly, runs left out).

    Returns:
        The paths written.
    """
    from analysis.tables import table_latex, table_markdown

    study = _study(study_dir)
    out_dir = Path(out) if out is not None else study.root / "figures"
    if reference_runs(study).empty:
        echo("no finished run in this study yet: no figures")
        return []
    paths: list[Path] = []
    drift = fig_drift(study, echo=echo)
    if drift is not None:
        paths += save(drift, out_dir, "fig1_drift")
    norms = fig_filter_norms(study, echo)
    if norms is not None:
        paths += save(norms, out_dir, "fig1b_filter_norms")
    for key in DRIFT_PANELS if per_layer and drift is not None else ():  # its notes are figure 1's
        layers = fig_drift_layers(study, key, echo=lambda line: None)
        if layers is not None:
            paths += save(layers, out_dir, f"fig1_drift_layers_{key}")
    paths += save(fig_loss(study), out_dir, "fig2_loss")
    paths += save(fig_strength(study, echo), out_dir, "fig3_strength")
    paths += save(fig_batch_size(study, echo), out_dir, "fig4_batch_size")
    paths += save(fig_cost(study, bench, echo), out_dir, "fig5_cost")
    grid = fig_grid(study, echo)
    if grid is not None:
        paths += save(grid, out_dir, "fig7_grid")
    for name, text in (("table.md", table_markdown(study)), ("table.tex", table_latex(study))):
        paths.append(storage.write_atomic(out_dir / name, text))
    _note_diverged(study, echo)
    return paths
