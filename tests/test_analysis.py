"""Tests of the analysis package: figures 1-6 and 1b from a tiny real study, styles, log ticks, rasterized
per-step lines, byte-stable files, notes, `oblique plot`."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import matplotlib.colors as mcolors
import matplotlib.image as mpimg
import numpy as np
import pytest
from hostile_world import digest, refused

from analysis import method_colors, write_figures
from analysis.figures import (
    fig_batch_size,
    fig_cost,
    fig_drift,
    fig_filter_norms,
    fig_loss,
    fig_strength,
    reference_runs,
)
from analysis.style import method_styles
from analysis.tables import table_latex, table_markdown
from oblique import list_methods
from oblique.cli import main
from oblique.study import SUMMARY_FILE, StudySpec, expand, run_study

TINY = {"epochs": 1, "drift_every": 10}
STEMS = (
    "fig1_drift",
    "fig1b_filter_norms",
    "fig2_loss",
    "fig3_strength",
    "fig4_batch_size",
    "fig5_cost",
    "fig7_grid",
)


@pytest.fixture(scope="module")
def study(tiny_study):
    """nl and wd at two strengths, baseline; two batch sizes, two seeds, one epoch (tests/conftest.py)."""
    return tiny_study


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One strength, one batch size, one seed: the figures that need several values say so."""
    root = tmp_path_factory.mktemp("single")
    run_study(
        root,
        expand(StudySpec(methods=["nl", "baseline"], seeds=[0], base=TINY)),
        workers=0,
        threads=1,
        progress=False,
    )
    return root


def test_write_figures_writes_every_figure_and_table(study):
    notes: list[str] = []
    paths = write_figures(study, per_layer=True, echo=notes.append)
    names = {p.name for p in paths}
    for stem in STEMS:
        assert {f"{stem}.png", f"{stem}.pdf"} <= names
    for key in ("norm_dev_mean", "ddiag_dev", "offdiag_dev"):
        assert f"fig1_drift_layers_{key}.png" in names
    assert {"table.md", "table.tex"} <= names
    for p in paths:
        assert p.exists() and p.stat().st_size > 0
        if p.suffix == ".png":
            assert mpimg.imread(p).shape[0] > 200  # a real raster image
        if p.suffix == ".pdf":
            assert p.read_bytes().startswith(b"%PDF")
    assert not any(n.startswith(("figure 3", "figure 4")) for n in notes)  # two strengths, two batch sizes


def test_tables_match_the_study(study):
    md = table_markdown(study)
    summary = (study / SUMMARY_FILE).read_text()
    assert summary.startswith(md) and "## The poster's claims" in summary and "claims" not in md
    tex = table_latex(study)
    assert (
        tex.startswith("\\begin{tabular}") and "\\toprule" in tex and tex.rstrip().endswith("\\end{tabular}")
    )
    assert tex.count("\\\\") == 1 + 2 * 2 * 2 + 2  # header + nl, wd (2 strengths x 2 batch sizes) + baseline


def test_one_style_per_method_in_registry_order(study):
    styles = method_styles()
    assert list(styles) == list_methods()
    assert list(method_colors()) == list_methods()
    for key in ("color", "marker", "linestyle"):  # colour, marker and line style each tell methods apart
        assert len({json.dumps(s[key]) for s in styles.values()}) == len(styles), key
    fig = fig_strength(study, echo=lambda line: None)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    lines = {lab: (h[0] if isinstance(h, tuple) else h) for h, lab in zip(handles, labels, strict=True)}
    assert mcolors.to_hex(lines["nl"].get_color()) == styles["nl"]["color"]
    assert (
        lines["nl"].get_marker() == styles["nl"]["marker"]
        and lines["wd"].get_marker() == styles["wd"]["marker"]
    )
    assert mcolors.to_hex(lines["baseline (level)"].get_color()) == styles["baseline"]["color"]
    drift_lines = [ln for ln in fig_drift(study).axes[0].get_lines()]
    assert {mcolors.to_hex(ln.get_color()) for ln in drift_lines} == {
        styles[m]["color"] for m in ("nl", "wd", "baseline")
    }
    assert {ln.get_marker() for ln in drift_lines} == {styles[m]["marker"] for m in ("nl", "wd", "baseline")}


def test_figures_3_and_4_draw_curves(study):
    for fig, x in (
        (fig_strength(study, echo=lambda line: None), {0.01, 0.1}),
        (fig_batch_size(study, echo=lambda line: None), {100, 200}),
    ):
        curves = {c.get_label(): c.lines[0] for c in fig.axes[0].containers if c.get_label() in ("nl", "wd")}
        assert set(curves) == {"nl", "wd"}
        for ln in curves.values():
            assert set(map(float, ln.get_xdata())) == x  # a curve through every value, not a point


def _render(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    return fig


def test_log_axes_label_only_well_spaced_values(study):
    fig = _render(fig_loss(study))
    for ax in fig.axes[:2]:
        assert ax.get_yscale() == "log"
        lo, hi = sorted(ax.get_ylim())
        shown = [
            float(t.get_text())
            for t in ax.get_yticklabels()
            if t.get_text() and lo <= t.get_position()[1] <= hi
        ]
        assert shown, "a log axis with no label"
        for v in shown:  # 1, 2 or 5 times a power of ten, or a tick of a short linear-looking span
            mant = v / 10 ** math.floor(math.log10(v) + 1e-12)
            assert round(mant, 6) in (1.0, 2.0, 5.0) or len(shown) >= 3, shown
        assert not any(t.get_text() for t in ax.get_yminorticklabels())  # minor ticks unlabelled
    sf = _render(fig_drift(study))
    for ax in sf.axes[:3]:
        assert not any(t.get_text() for t in ax.get_yminorticklabels())


def test_per_step_lines_are_rasterized_in_the_pdf_and_files_are_byte_stable(study, tmp_path):
    fig = fig_loss(study)
    assert any(ln.get_rasterized() for ln in fig.axes[0].get_lines())
    a = write_figures(study, out=tmp_path / "a", echo=lambda line: None)
    b = write_figures(study, out=tmp_path / "b", echo=lambda line: None)
    assert [p.name for p in a] == [p.name for p in b]
    for pa, pb in zip(a, b, strict=True):
        assert pa.read_bytes() == pb.read_bytes(), pa.name  # the same records give the same bytes
    pdf = (tmp_path / "a" / "fig2_loss.pdf").read_bytes()
    assert b"/Subtype /Image" in pdf  # the dense lines are an image inside the PDF
    assert b"CreationDate" not in pdf and b"ModDate" not in pdf


def test_filter_norms_are_those_the_drift_was_measured_on(study, tmp_path):
    from analysis.norms import filter_norms
    from oblique import records as rec
    from oblique.config import RunConfig
    from oblique.train import train

    for name in sorted((study / "runs").iterdir())[:1]:
        norms = filter_norms(name)
        drift = rec.read_summary(name)["drift"]["layers"]
        assert set(norms) == set(drift)
        for layer, r in norms.items():
            assert np.mean(np.abs(r - 1)) == pytest.approx(drift[layer]["norm_dev_mean"], rel=1e-5)
    for method in ("wn", "pbwn"):  # a reparametrization (rebuilt and loaded) and a projection
        out = tmp_path / method
        s = train(RunConfig(method=method, epochs=1, drift_every=50, threads=1, out=str(out)))
        norms = filter_norms(out)
        for layer, r in norms.items():
            assert np.mean(np.abs(r - 1)) == pytest.approx(
                s["drift"]["layers"][layer]["norm_dev_mean"], rel=1e-5
            )
    assert np.allclose(np.concatenate(list(norms.values())), 1.0, atol=1e-5)  # pbwn: on the manifold
    fig = fig_filter_norms(study, echo=lambda line: None)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["baseline", "wd", "nl"]


def test_cost_figure_uses_the_study_bench_when_there_is_one(study, tmp_path):
    import shutil

    from oblique.study import BENCH_FILE

    copy = tmp_path / "s"
    shutil.copytree(study, copy)
    assert "no bench.json" in fig_cost(copy, echo=lambda line: None).axes[0].get_title()
    methods = {
        m: {
            "step_ms": 5.0 + i,
            "step_ms_q25": 4.9 + i,
            "step_ms_q75": 5.3 + i,
            "regularizer_ms": 0.1 * i,
            "overhead_pct": 10.0 * i,
            "overhead_pct_se": 0.5,
        }
        for i, m in enumerate(("baseline", "wd", "nl"))
    }
    rec = {
        "model": "resnet1d",
        "batch_size": 100,
        "device": "cpu",
        "threads": 2,
        "rounds": 9,
        "methods": methods,
    }
    (copy / BENCH_FILE).write_text(json.dumps(rec))
    ax = fig_cost(copy, echo=lambda line: None).axes[0]
    assert "benched alone" in ax.get_title()
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert {5.0, 6.0, 7.0} <= set(heights)


def test_reference_setting_is_the_default_strength_and_batch_size(study):
    ref = reference_runs(study)
    assert set(ref["batch_size"]) == {100}
    assert set(ref[ref["method"] == "nl"]["strength"]) == {0.01}  # nl's default
    assert set(ref[ref["method"] == "wd"]["strength"]) == {0.01}  # the nearest to wd's default (5e-4)
    assert len(ref) == 6  # 3 methods x 2 seeds


def test_single_values_are_drawn_as_points_with_a_note(single, tmp_path):
    notes: list[str] = []
    paths = write_figures(single, out=tmp_path, echo=notes.append)
    assert {f"{s}.png" for s in STEMS} <= {p.name for p in paths}
    assert any(n.startswith("figure 3: one strength per method") for n in notes)
    assert any(n.startswith("figure 4: one batch size") for n in notes)


def test_plot_command(single, capsys, tmp_path):
    assert main(["plot", str(single)]) == 0
    assert (single / "figures" / "fig1_drift.png").exists()
    assert "figures:" in capsys.readouterr().out
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no study" in err[0]


def test_the_library_never_imports_analysis():
    code = (
        "import sys, oblique, oblique.cli, oblique.study, oblique.records; print('analysis' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.slow
def test_cost_figure_from_real_bench_records(single, tmp_path):
    from oblique.cost import bench, write_csv

    records = [
        bench(
            model=m,
            methods=["nl", "wd"],
            batch_size=4,
            rounds=2,
            warmup=1,
            micro_repeats=2,
            targets=False,
            progress=False,
            threads=1,
        )
        for m in ("resnet20", "resnet32")
    ]
    write_csv(records, tmp_path / "bench.csv")
    notes: list[str] = []
    fig = fig_cost(single, tmp_path / "bench.csv", echo=notes.append)
    assert len(fig.axes) == 3
    overhead = fig.axes[1]
    assert overhead.get_xscale() == "log" and overhead.get_yscale() == "log"
    lines = {ln.get_label(): ln for ln in fig.axes[2].get_lines()}
    assert set(lines) == {"wd", "nl"}
    assert list(lines["nl"].get_xdata()) == sorted(r["num_params"] for r in records)
    assert mcolors.to_hex(lines["nl"].get_color()) == method_colors()["nl"]
    assert not any("skipped" in n for n in notes)
    assert main(["plot", str(single), "--bench", str(tmp_path / "bench.csv")]) == 0


def test_plot_checks_its_inputs_before_writing_anything(world, tmp_path):
    study = tmp_path / "s"
    shutil.copytree(world.root / "STUDY", study)
    shutil.rmtree(study / "figures", ignore_errors=True)
    before = digest(study)
    for bench in ("missing.json", "garbage.csv", "badbench.json", "BINARY", "EMPTY"):
        refused(world, ["plot", str(study), "--bench", bench], "oblique: error: ")
        assert digest(study) == before and not (study / "figures").exists()


def _without_drift(study, runs=None) -> None:
    """Every drift line removed from the metrics.jsonl of ``runs`` (default: every run) of ``study``."""
    for path in sorted((study / "runs").glob("*/metrics.jsonl")):
        if runs is None or path.parent.name in runs:
            lines = path.read_text().splitlines(keepends=True)
            path.write_text("".join(ln for ln in lines if '"type": "drift"' not in ln))


def test_plot_draws_what_it_can_of_runs_without_drift_records(single, tmp_path, capsys):
    study = tmp_path / "s"
    shutil.copytree(single, study)
    shutil.rmtree(study / "figures", ignore_errors=True)
    _without_drift(study)
    assert main(["plot", str(study), "--per-layer"]) == 0
    out, err = capsys.readouterr()
    notes = [line for line in out.splitlines() if line.startswith("figure 1 ")]
    assert notes == [
        "figure 1 (drift) skipped: no run of the reference setting holds a drift record (metrics.jsonl)"
    ]
    assert "Traceback" not in err and not err.strip(), err
    written = {p.name for p in (study / "figures").iterdir()}
    assert not any(name.startswith("fig1_drift") for name in written)
    assert {f"{s}.png" for s in STEMS if s != "fig1_drift"} <= written
    # one run without them: figure 1 drawn from the others, with a note
    shutil.rmtree(study)
    shutil.copytree(single, study)
    nl = next(p.parent.name for p in (study / "runs").glob("nl*/metrics.jsonl"))
    _without_drift(study, runs={nl})
    notes: list[str] = []
    fig = fig_drift(study, echo=notes.append)
    assert notes == ["figure 1 (drift): 1 runs hold no drift record (metrics.jsonl) and are left out"]
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["baseline, 1 seed"]
