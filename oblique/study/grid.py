"""The grid of ways onto the manifolds: every method at its reference setting, by manifold and kind.

The toolkit's question is "soft or hard, and at what cost?". Its methods fill a grid: two manifolds as
rows — the oblique manifold (unit-norm filters, ``ddiag(FFᵀ) = I``) and the Stiefel manifold (orthonormal
filters) — by four kinds of way as columns — a penalty (soft), a reparametrization, a projection after
each step, a Riemannian optimizer. A method's place is its class's :attr:`~oblique.methods.Method.manifold`
and :attr:`~oblique.methods.Method.kind`; plain training and weight decay aim at neither manifold and
stand below the grid as the reference.

Each cell holds, per method at the study's reference setting (:mod:`oblique.study.reference`), the test
error (mean ± sample std over seeds), the two drift measures the rows are about (``norm_dev_mean``:
distance from unit norm; ``offdiag_dev``: the RMS off-diagonal of ``FFᵀ``, distance from orthogonality)
and the step overhead over plain training from the study's bench (``bench.json``; "–" without one).
:func:`grid_markdown` writes it into ``summary.md``; :func:`analysis.figures.fig_grid` draws it.
"""

from __future__ import annotations

import math
import os

from oblique.study.folder import Study, load_study

__all__ = ["GRID_KINDS", "grid_frame", "grid_markdown"]

#: The grid's columns: the kinds of way onto a manifold, in the order the README's table has them.
GRID_KINDS = ("soft", "reparam", "projection", "riemannian")

#: How the summary names the grid's rows and columns.
_KIND_LABELS = {
    "soft": "soft (a penalty)",
    "reparam": "reparametrization",
    "projection": "projection after each step",
    "riemannian": "Riemannian optimizer",
}
_MANIFOLD_LABELS = {"oblique": "oblique", "stiefel": "Stiefel", "": "neither (reference)"}


def grid_frame(study: Study | str | os.PathLike, results=None):
    """One row per method at the reference setting (pandas DataFrame): ``method``, ``manifold``, ``kind``,
    ``seeds`` (finished runs), ``error_mean``, ``error_std``, ``norm_dev_mean``, ``offdiag_dev`` (means over
    seeds of the final drift) and ``overhead_pct`` (the study's bench; NaN without one). Methods the
    registry does not know have manifold and kind ``""``. ``results``: the study's
    :func:`~oblique.study.results_frame`, when the caller has it (else read here)."""
    import pandas as pd

    from oblique.methods import REGISTRY
    from oblique.study.bench import read_study_bench
    from oblique.study.reference import method_order, reference_runs

    if not isinstance(study, Study):
        study = load_study(study)
    if results is None:
        from oblique.study import results_frame  # (oblique.study.tables imports this module)

        results = results_frame(study)
    ref = reference_runs(study, results, ("ok",))
    bench = read_study_bench(study)
    overheads = (bench or {}).get("methods", {})
    rows = []
    for method in method_order(ref["method"]) if not ref.empty else []:
        runs = ref[ref["method"] == method]
        cls = REGISTRY.get(method)
        overhead = overheads.get(method, {}).get("overhead_pct")
        rows.append(
            {
                "method": method,
                "manifold": cls.manifold if cls is not None else "",
                "kind": cls.kind if cls is not None else "",
                "seeds": len(runs),
                "error_mean": runs["test_error"].mean(),
                "error_std": runs["test_error"].std(ddof=1) if len(runs) > 1 else math.nan,
                "norm_dev_mean": runs["norm_dev_mean"].mean(),
                "offdiag_dev": runs["offdiag_dev"].mean(),
                "overhead_pct": math.nan if overhead is None or method == "baseline" else float(overhead),
            }
        )
    columns = ["method", "manifold", "kind", "seeds", "error_mean", "error_std"]
    return pd.DataFrame.from_records(rows, columns=[*columns, "norm_dev_mean", "offdiag_dev", "overhead_pct"])


def _cell(r) -> str:
    from oblique.text import number

    overhead = "–" if math.isnan(r["overhead_pct"]) else f"{r['overhead_pct']:+.1f} %"
    return (
        f"**{r['method']}** {number(r['error_mean'], '.2f')} ± {number(r['error_std'], '.2f')} %; "
        f"norm {number(r['norm_dev_mean'], '.2g')}, off-diag {number(r['offdiag_dev'], '.2g')}; "
        f"step {overhead}"
    )


def grid_markdown(study: Study | str | os.PathLike, results=None) -> str:
    """The grid as a markdown section (module docstring): rows the manifolds, columns the kinds, each cell
    its methods; the methods that aim at neither manifold on a line below. Empty when no finished method of
    the study aims at a manifold. ``results`` as :func:`grid_frame`'s."""
    frame = grid_frame(study, results)
    placed = frame[frame["manifold"] != ""] if not frame.empty else frame
    if placed.empty:
        return ""
    header = ["manifold", *(_KIND_LABELS[k] for k in GRID_KINDS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for manifold in ("oblique", "stiefel"):
        cells = []
        for kind in GRID_KINDS:
            members = placed[(placed["manifold"] == manifold) & (placed["kind"] == kind)]
            cells.append("<br>".join(_cell(r) for _, r in members.iterrows()) or "empty")
        lines.append(f"| {_MANIFOLD_LABELS[manifold]} | " + " | ".join(cells) + " |")
    others = frame[frame["manifold"] == ""]
    text = "## The grid: soft or hard, and at what cost\n\n" + "\n".join(lines) + "\n"
    if not others.empty:
        text += "\nAiming at neither manifold: " + "; ".join(_cell(r) for _, r in others.iterrows()) + ".\n"
    text += (
        "\nEach method at the reference setting: test error mean ± std over seeds; final drift, mean over "
        "layers (norm: `norm_dev_mean`, distance from unit-norm filters; off-diag: `offdiag_dev`, distance "
        "from orthogonal ones); step: overhead over plain training in the study's bench (`bench.json`).\n"
    )
    return text
