"""Tests of the analysis package: figures 1-6 from a tiny real study, colours, notes, `oblique plot`."""

from __future__ import annotations

import subprocess
import sys

import matplotlib.colors as mcolors
import matplotlib.image as mpimg
import pytest

from analysis import method_colors, write_figures
from analysis.figures import fig_cost, fig_drift, fig_strength, reference_runs
from analysis.tables import table_latex, table_markdown
from oblique import list_methods
from oblique.cli import main
from oblique.study import SUMMARY_FILE, StudySpec, expand, run_study

TINY = {"epochs": 1, "drift_every": 10}
STEMS = ("fig1_drift", "fig2_loss", "fig3_strength", "fig4_batch_size", "fig5_cost")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """nl at two strengths and baseline, two batch sizes, two seeds, one epoch: 12 short real runs."""
    root = tmp_path_factory.mktemp("study")
    spec = StudySpec(
        methods=["nl", "baseline"], strengths=[0.01, 0.1], seeds=[0, 1], batch_sizes=[100, 200], base=TINY
    )
    result = run_study(root, expand(spec), workers=0, threads=1, progress=False, echo=lambda line: None)
    assert len(result.ran) == 12 and not result.failed
    return root


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
    assert md == (study / SUMMARY_FILE).read_text()
    tex = table_latex(study)
    assert (
        tex.startswith("\\begin{tabular}") and "\\toprule" in tex and tex.rstrip().endswith("\\end{tabular}")
    )
    assert tex.count("\\\\") == 1 + 2 * 2 + 2  # header + nl (2 strengths x 2 batch sizes) + baseline (2)


def test_one_colour_per_method_in_registry_order(study):
    colors = method_colors()
    assert list(colors) == list_methods()
    assert len(set(colors.values())) == len(colors)
    fig = fig_strength(study, echo=lambda line: None)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    lines = {
        lab: (h[0] if isinstance(h, tuple) else h).get_color() for h, lab in zip(handles, labels, strict=True)
    }
    assert mcolors.to_hex(lines["nl"]) == colors["nl"]
    assert mcolors.to_hex(lines["baseline (no strength)"]) == colors["baseline"]
    drift_lines = [ln for ln in fig_drift(study).axes[0].get_lines()]
    assert {mcolors.to_hex(ln.get_color()) for ln in drift_lines} == {colors["nl"], colors["baseline"]}


def test_reference_setting_is_the_default_strength_and_batch_size(study):
    ref = reference_runs(study)
    assert set(ref["batch_size"]) == {100}
    assert set(ref[ref["method"] == "nl"]["strength"]) == {0.01}  # nl's default
    assert len(ref) == 4  # 2 methods x 2 seeds


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
        )  # fmt: skip
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
