"""The grid of ways onto the manifolds (oblique.study.grid, figure 7): each method in its manifold's row
and its kind's column, with its error, drift and step overhead."""

from __future__ import annotations

import matplotlib.colors as mcolors
import pytest

from analysis.figures import fig_grid
from analysis.style import method_styles
from oblique.methods import REGISTRY
from oblique.study import SUMMARY_FILE, StudySpec, expand, run_study
from oblique.study.grid import GRID_KINDS, grid_frame, grid_markdown

METHODS = ["baseline", "nl", "pbwn", "so"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    spec = StudySpec(methods=METHODS, seeds=[0, 1], base={"epochs": 1, "drift_every": 10})
    run_study(root, expand(spec), workers=0, threads=1, progress=False, echo=lambda line: None)
    return root


def test_every_method_has_its_place_in_the_grid():
    for name, cls in REGISTRY.items():
        assert cls.manifold in ("", "oblique", "stiefel"), name
        assert cls.manifold == "" or cls.kind in GRID_KINDS, name
    assert REGISTRY["nl"].manifold == "oblique" and REGISTRY["oni"].manifold == "stiefel"


def test_the_grid_places_each_method_by_manifold_and_kind(study):
    frame = grid_frame(study).set_index("method")
    assert list(frame.index) == METHODS
    assert frame.loc["pbwn", ["manifold", "kind"]].tolist() == ["oblique", "projection"]
    assert frame.loc["so", ["manifold", "kind"]].tolist() == ["stiefel", "soft"]
    assert (frame["seeds"] == 2).all()
    assert frame.loc["pbwn", "norm_dev_mean"] < 1e-5 < frame.loc["baseline", "norm_dev_mean"]
    md = grid_markdown(study)
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")[1:]
        for line in md.splitlines()
        if line.startswith("| ")
    }
    oblique, stiefel = rows["oblique"], rows["Stiefel"]
    assert "**nl**" in oblique[0] and "**pbwn**" in oblique[2] and "empty" in oblique[3]
    assert "**so**" in stiefel[0] and "empty" in stiefel[1]
    assert "Aiming at neither manifold: **baseline**" in md
    assert "step –" in md  # no bench in this study: no overhead to show
    assert md in (study / SUMMARY_FILE).read_text()


def test_figure_7_draws_each_method_in_its_style_in_its_manifolds_panel(study):
    fig = fig_grid(study, echo=lambda line: None)
    oblique, stiefel = fig.axes[:2]
    styles = method_styles()

    def colours(ax):
        return {mcolors.to_hex(c.lines[0].get_color()) for c in ax.containers}

    assert colours(oblique) == {styles["nl"]["color"], styles["pbwn"]["color"]}
    assert colours(stiefel) == {styles["so"]["color"]}
    notes = []
    assert fig_grid(_empty(study), echo=notes.append) is None and notes[0].startswith("figure 7 skipped")


def _empty(study):
    """A study of plain training only: nothing aims at a manifold."""
    root = study.parent / "baseline-only"
    if not root.exists():
        spec = StudySpec(methods=["baseline"], seeds=[0], base={"epochs": 1})
        run_study(root, expand(spec), workers=0, threads=1, progress=False, echo=lambda line: None)
    return root
