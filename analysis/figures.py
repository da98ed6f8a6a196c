"""Figures 1–5 of a study (see :mod:`analysis`), drawn from its run records.

Records are read through :mod:`oblique.records` (``metrics_frame``) and :mod:`oblique.study`
(``results_frame``, which reads ``summary.json`` through ``oblique.records``).

Figures 1, 2 and 5 show each method at one *reference setting*, so that a study with several strengths
or batch sizes still gives one curve per method: the batch size is the model's standard one
(:mod:`oblique.recipes`; 100 for resnet1d) when the study has it, else the most frequent one; the strength
is the one nearest (in log) to the method's
default; any other grid variable takes its first value. Figures 3 and 4 are always drawn: with a single
strength (batch size) per method they show one point per method with its spread over seeds, and a
one-line note says that a curve needs several values (``--strengths a,b,c`` / ``--batch-sizes a,b,c``).
A method without a strength (``baseline``, the hard constraints) is a horizontal dashed line with its band
in figure 3: it is the level the soft methods are compared against.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from matplotlib.ticker import FuncFormatter

from analysis.style import FLOOR, color, new_figure, print_style, save
from oblique import records
from oblique.study import Study, load_study, results_frame

__all__ = [
    "DRIFT_PANELS",
    "fig_batch_size",
    "fig_cost",
    "fig_drift",
    "fig_drift_layers",
    "fig_loss",
    "fig_strength",
    "reference_runs",
    "write_figures",
]

#: The drift metrics of figure 1 (DESIGN.md, "Drift metrics"), with their axis labels.
DRIFT_PANELS = {
    "norm_dev_mean": r"mean $|\,\|F_i\| - 1\,|$",
    "ddiag_dev": r"$\|\mathrm{ddiag}(FF^\top) - I\|_F / \sqrt{n}$",
    "offdiag_dev": r"RMS off-diagonal of $FF^\top$",
}

Echo = Callable[[str], None]

#: Log-axis tick labels as plain numbers (0.5, 1, 2) rather than 5×10⁻¹.
PLAIN = FuncFormatter(lambda v, _: f"{v:g}")


def _study(study: Study | str | os.PathLike) -> Study:
    return study if isinstance(study, Study) else load_study(study)


def _method_order(methods) -> list[str]:
    from oblique import list_methods

    order = {m: i for i, m in enumerate(list_methods())}
    return sorted(set(methods), key=lambda m: (order.get(m, len(order)), m))


def _default_strength(method: str) -> float | None:
    from oblique.methods import REGISTRY

    cls = REGISTRY.get(method)
    return cls.default_strength if cls is not None and cls.uses_strength else None


def _reference_batch_size(res: pd.DataFrame) -> int:
    from oblique.config import RunConfig

    sizes = res["batch_size"].value_counts()
    recipe = RunConfig(model=res["model"].iloc[0]).resolved().batch_size  # the model's standard batch size
    if recipe in sizes.index:
        return int(recipe)
    return int(sorted(sizes.index, key=lambda b: (-sizes[b], b))[0])


def _extras(study: Study) -> list[str]:
    return [k for k in study.grid_variables if k not in ("method", "strength", "batch_size", "seed")]


def _at_first_extras(study: Study, res: pd.DataFrame) -> pd.DataFrame:
    for key in _extras(study):
        if key in res and len(res):
            res = res[res[key] == res[key].iloc[0]]
    return res


def _nearest_strength(method: str, strengths) -> float | None:
    strengths = sorted(
        s for s in set(strengths) if s is not None and not (isinstance(s, float) and math.isnan(s))
    )
    if not strengths:
        return None
    default = _default_strength(method)
    if default is None or default <= 0:
        return strengths[len(strengths) // 2]
    return min(strengths, key=lambda s: abs(math.log(max(s, 1e-300)) - math.log(default)))


def reference_runs(study: Study | str | os.PathLike, statuses=("ok",)) -> pd.DataFrame:
    """The runs of every method at its reference setting (module docstring), with ``statuses``."""
    study = _study(study)
    res = results_frame(study)
    if res.empty:
        return res
    res = _at_reference_strengths(
        _at_first_extras(study, res[res["batch_size"] == _reference_batch_size(res)])
    )
    return res[res["status"].isin(statuses)]


def _at_reference_strengths(res: pd.DataFrame) -> pd.DataFrame:
    """Each method's runs at the strength nearest its default (all its runs if it has no strength)."""
    parts = []
    for method in _method_order(res["method"]):
        r = res[res["method"] == method]
        if bool(r["strength_applies"].iloc[0]):
            r = r[r["strength"] == _nearest_strength(method, r["strength"])]
        parts.append(r)
    return pd.concat(parts) if parts else res


def _label(row) -> str:
    return f"{row['method']} (λ={row['strength']:g})" if row["strength_applies"] else str(row["method"])


def _band(ax, x, mean, lo, hi, c, label, **kw) -> None:
    ax.plot(x, mean, color=c, label=label, **kw)
    ax.fill_between(x, lo, hi, color=c, alpha=0.18, linewidth=0)


def _legend_below(fig, ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(handles), 4), frameon=False)


def _note_diverged(study: Study, echo: Echo) -> None:
    res = results_frame(study)
    div = res[res["status"] == "diverged"]
    if len(div):
        echo(f"note: {len(div)} diverged runs are left out of the curves (see results.csv)")


# --------------------------------------------------------------------------- figure 1
def fig_drift(study: Study | str | os.PathLike, metrics: tuple[str, ...] = tuple(DRIFT_PANELS)):
    """Figure 1: drift over training per method, mean over layers, mean and min–max band over seeds."""
    study = _study(study)
    ref = reference_runs(study)
    with print_style():
        fig, axes = new_figure(len(metrics))
        for ax, key in zip(axes[0], metrics, strict=True):
            for method in _method_order(ref["method"]):
                rows = ref[ref["method"] == method]
                frames = [
                    records.metrics_frame(study.run_dir(n), "drift")[["epoch", key]] for n in rows["run"]
                ]
                table = pd.concat(frames).groupby("epoch")[key].agg(["mean", "min", "max"]).clip(lower=FLOOR)
                label = f"{_label(rows.iloc[0])}, {len(frames)} seed{'s' * (len(frames) > 1)}"
                _band(ax, table.index, table["mean"], table["min"], table["max"], color(method), label)
            ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_ylabel(DRIFT_PANELS.get(key, key))
            ax.set_title(key)
        _legend_below(fig, axes[0][0])
        fig.suptitle(
            f"Drift from the oblique manifold, mean over layers (values below {FLOOR:g} drawn at it)"
        )
    return fig


def fig_drift_layers(study: Study | str | os.PathLike, key: str):
    """Figure 1, per layer: one panel per targeted layer, mean over seeds of ``key`` (log y)."""
    study = _study(study)
    ref = reference_runs(study)
    curves: dict[str, dict[str, pd.Series]] = {}
    for method in _method_order(ref["method"]):
        per_layer: dict[str, list[pd.Series]] = {}
        for name in ref[ref["method"] == method]["run"]:
            df = records.metrics_frame(study.run_dir(name), "drift")
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
            for method, c in curves.items():
                if layer in c:
                    ax.plot(c[layer].index, c[layer].clip(lower=FLOOR), color=color(method), label=method)
            ax.set_yscale("log")
            ax.set_title(layer, fontsize=8)
            ax.set_xlabel("epoch")
            ax.set_ylabel(key)
        for ax in flat[len(layers) :]:
            ax.set_visible(False)
        flat[0].legend(frameon=False)
        fig.suptitle(f"{key} per layer, mean over seeds")
    return fig


# --------------------------------------------------------------------------- figure 2
def fig_loss(study: Study | str | os.PathLike, span_epochs: float = 0.5):
    """Figure 2: train cross-entropy per batch over epochs — raw (first seed) and smoothed (exponential
    moving average over ``span_epochs`` epochs, mean and min–max band over seeds)."""
    study = _study(study)
    ref = reference_runs(study)
    with print_style():
        fig, axes = new_figure(2)
        raw_ax, smooth_ax = axes[0]
        for method in _method_order(ref["method"]):
            rows = ref[ref["method"] == method]
            smoothed = []
            for i, name in enumerate(rows.sort_values("seed")["run"]):
                steps = records.metrics_frame(study.run_dir(name), "step")
                per_epoch = max(1, int(round(1 / steps["epoch"].iloc[0]))) if len(steps) else 1
                if i == 0:
                    raw_ax.plot(steps["epoch"], steps["loss"], color=color(method), linewidth=0.4, alpha=0.6,
                                label=_label(rows.iloc[0]))  # fmt: skip
                ema = steps["loss"].ewm(span=max(2.0, span_epochs * per_epoch)).mean()
                smoothed.append(pd.Series(ema.to_numpy(), index=steps["epoch"].to_numpy()))
            table = pd.concat(smoothed, axis=1)
            _band(smooth_ax, table.index, table.mean(axis=1), table.min(axis=1), table.max(axis=1), color(method),
                  _label(rows.iloc[0]))  # fmt: skip
        for ax, title in (
            (raw_ax, "raw, per batch (first seed)"),
            (smooth_ax, f"EMA over {span_epochs:g} epoch, band over seeds"),
        ):
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(PLAIN)
            ax.yaxis.set_minor_formatter(PLAIN)
            ax.set_xlabel("epoch")
            ax.set_ylabel("train cross-entropy (nats)")
            ax.set_title(title)
        _legend_below(fig, smooth_ax)
    return fig


# --------------------------------------------------------------------------- figures 3 and 4
def _error_against(study: Study, res: pd.DataFrame, x: str, ax, echo: Echo, flat_methods: bool) -> int:
    """Test error of ``res`` against column ``x``, one line per method; returns the most x values drawn."""
    most = 0
    for method in _method_order(res["method"]):
        rows = res[res["method"] == method]
        ok = rows[rows["status"] == "ok"]
        c = color(method)
        if flat_methods and not bool(rows["strength_applies"].iloc[0]):
            if len(ok):
                m, lo, hi = ok["test_error"].mean(), ok["test_error"].min(), ok["test_error"].max()
                ax.axhline(m, color=c, linestyle="--", label=f"{method} (no strength)")
                ax.axhspan(lo, hi, color=c, alpha=0.12, linewidth=0)
            continue
        stats = ok.groupby(x)["test_error"].agg(["mean", "min", "max"]).sort_index()
        most = max(most, len(stats))
        if len(stats):
            ax.errorbar(stats.index, stats["mean"], yerr=[stats["mean"] - stats["min"], stats["max"] - stats["mean"]],
                        color=c, marker="o", markersize=3, capsize=2, label=method)  # fmt: skip
            ax.fill_between(stats.index, stats["min"], stats["max"], color=c, alpha=0.15, linewidth=0)
        div = sorted(set(rows[rows["status"] == "diverged"][x]))
        if div:
            ax.plot(div, [0.97] * len(div), "x", color=c, transform=ax.get_xaxis_transform(), markersize=6,
                    label=f"{method} diverged")  # fmt: skip
    return most


def fig_strength(study: Study | str | os.PathLike, echo: Echo = print):
    """Figure 3: test error against the strength λ (log x), mean with min–max band over seeds, at the
    reference batch size; methods without a strength as dashed levels; diverged strengths as ×."""
    study = _study(study)
    res = results_frame(study)
    res = _at_first_extras(study, res[res["batch_size"] == _reference_batch_size(res)])
    with print_style():
        fig, axes = new_figure(1, width=4.5, height=3.0)
        ax = axes[0][0]
        most = _error_against(study, res, "strength", ax, echo, flat_methods=True)
        ax.set_xscale("log")
        ax.set_xlabel("regularization strength λ (log scale)")
        ax.set_ylabel("test error (%)")
        ax.set_title(f"Test error against λ (batch {_reference_batch_size(res)}; band: min–max over seeds)")
        ax.legend(frameon=False, fontsize=7)
    if most < 2:
        echo("figure 3: one strength per method, drawn as points; pass --strengths a,b,c for a curve")
    return fig


def fig_batch_size(study: Study | str | os.PathLike, echo: Echo = print):
    """Figure 4: test error against the batch size (log₂ x), each method at its reference strength."""
    study = _study(study)
    res = _at_reference_strengths(_at_first_extras(study, results_frame(study)))
    with print_style():
        fig, axes = new_figure(1, width=4.5, height=3.0)
        ax = axes[0][0]
        most = _error_against(study, res, "batch_size", ax, echo, flat_methods=False)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size (log₂ scale)")
        ax.set_ylabel("test error (%)")
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


def fig_cost(study: Study | str | os.PathLike, bench: str | os.PathLike | None = None, echo: Echo = print):
    """Figure 5: (a) training time per step per method, the regularizer's share hatched, from the study's
    own runs at the reference setting; with ``bench`` records (``oblique bench``, a sweep over model
    sizes), (b) the step overhead over baseline and (c) the regularizer's isolated time, both against the
    parameter count (log-log)."""
    study = _study(study)
    ref = reference_runs(study)
    bench_df = _bench_frame(bench) if bench else None
    if bench and bench_df is None:
        echo("figure 5 (b, c) skipped: oblique.cost (the bench's reader) is not available in this version")
    with print_style():
        ncols = 3 if bench_df is not None else 1
        fig, axes = new_figure(ncols, width=10.0 if ncols == 3 else 4.5, height=3.0)
        ax = axes[0][0]
        methods = _method_order(ref["method"])
        for i, method in enumerate(methods):
            rows = ref[ref["method"] == method]
            per_step = 1e3 * rows["train_time_s"] / rows["steps"].astype(float)
            reg = 1e3 * rows["regularizer_time_s"] / rows["steps"].astype(float)
            ax.bar(
                i,
                per_step.mean(),
                yerr=per_step.std(ddof=1) if len(rows) > 1 else None,
                color=color(method),
                capsize=2,
            )
            ax.bar(i, reg.mean(), color="none", edgecolor="black", hatch="///", linewidth=0.5)
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
        ax.set_ylabel("training time per step (ms)")
        ax.set_title("(a) this study; hatched: the regularizer's hooks", fontsize=8)
        if bench_df is not None:
            bench_df = bench_df[bench_df["method"] != "baseline"]
            low = (bench_df["overhead_pct"] <= OVERHEAD_FLOOR_PCT).sum()
            for col, bx, label, title in (
                ("overhead_pct", axes[0][1], "step overhead over baseline (%)", "(b) bench: paired overhead"),
                ("regularizer_ms", axes[0][2], "regularizer's own time per step (ms)", "(c) bench: isolated"),
            ):
                for method in _method_order(bench_df["method"]):
                    b = bench_df[bench_df["method"] == method].sort_values("num_params")
                    y = b[col].astype(float).clip(lower=OVERHEAD_FLOOR_PCT if col == "overhead_pct" else 1e-4)
                    bx.plot(b["num_params"], y, marker="o", markersize=3, color=color(method), label=method)
                bx.set_xscale("log")
                bx.set_yscale("log")
                bx.yaxis.set_major_formatter(PLAIN)
                bx.yaxis.set_minor_formatter(PLAIN)
                bx.set_xlabel("parameters of the model (log scale)")
                bx.set_ylabel(label)
                bx.set_title(title, fontsize=8)
            axes[0][2].legend(frameon=False, fontsize=7)
            if low:
                echo(
                    f"figure 5 (b): {low} overheads at or below {OVERHEAD_FLOOR_PCT:g} % drawn at it (timing noise)"
                )
    return fig


# --------------------------------------------------------------------------- all of them
def write_figures(
    study_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    bench: str | os.PathLike | None = None,
    per_layer: bool = False,
    echo: Echo = print,
) -> list[Path]:
    """Write figures 1–5 (PNG and PDF) and table 6 (``table.md``, ``table.tex``) of a study.

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
    paths += save(fig_drift(study), out_dir, "fig1_drift")
    if per_layer:
        for key in DRIFT_PANELS:
            paths += save(fig_drift_layers(study, key), out_dir, f"fig1_drift_layers_{key}")
    paths += save(fig_loss(study), out_dir, "fig2_loss")
    paths += save(fig_strength(study, echo), out_dir, "fig3_strength")
    paths += save(fig_batch_size(study, echo), out_dir, "fig4_batch_size")
    paths += save(fig_cost(study, bench, echo), out_dir, "fig5_cost")
    for name, text in (("table.md", table_markdown(study)), ("table.tex", table_latex(study))):
        paths.append(records.write_atomic(out_dir / name, text))
    _note_diverged(study, echo)
    return paths
