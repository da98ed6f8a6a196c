"""Figures and tables from study records (matplotlib); it reads records, it never trains.

The library (``oblique``) never imports this package; the ``oblique study`` and ``oblique plot`` commands
import it lazily. Records are read only through :mod:`oblique.records` (and :mod:`oblique.study`, which
reads them through it); figure 1b loads each run's ``model.pt`` (:mod:`analysis.norms`).

Public API::

    analysis.write_figures(study_dir, bench=None, per_layer=False)   # every figure and table
    analysis.method_colors(), analysis.style.method_styles()         # one fixed colour, marker, line style
    analysis.figures.fig_drift(...), fig_filter_norms, fig_loss, fig_strength, fig_batch_size, fig_cost,
    analysis.figures.fig_grid(...)                                   # figure 7: by manifold and kind
    analysis.norms.filter_norms(run_dir)                             # ‖F_i‖ per layer at the end of a run
    analysis.tables.table_markdown(study_dir), analysis.tables.table_latex(study_dir)
    analysis.notebook.show(fig), analysis.notebook.study(root, spec)  # the notebooks' helpers (IPython)

Figures (PNG and PDF in ``STUDY_DIR/figures``; one style per method — a colour-blind-safe colour, a marker
and a line style, so a greyscale print tells the methods apart; per-step lines rasterized in the PDF; no
creation date in either file, so regenerating gives the same bytes):

1. ``fig1_drift``: manifold drift over training (``norm_dev_mean``, ``ddiag_dev``, ``offdiag_dev``, log y),
   mean over layers, a band over seeds; ``fig1_drift_layers_<metric>`` per layer with ``per_layer``.
1b. ``fig1b_filter_norms``: the manifold itself — the distribution of the filter norms ``‖F_i‖`` at the end
   of training, one violin per method (from each run's ``model.pt``), beside the drift curves.
2. ``fig2_loss``: train cross-entropy per batch against the step, raw and smoothed (Norm Loss against
   weight decay when the study has both, as the poster plots it).
3. ``fig3_strength``: test error against the strength λ (log x), a curve and band over seeds per method
   run at several strengths, baseline as a level.
4. ``fig4_batch_size``: test error against the batch size, a curve per method run at several.
5. ``fig5_cost``: (a) the time of one training step per method and the regularizer's share, from the
   study's own bench (``bench.json``: each method benched alone after the runs) and, from bench records
   (``oblique bench``, read by ``oblique.cost.read_bench``), (b) the overhead and (c) the regularizer's
   isolated time against the parameter count (log-log).
6. ``table.md`` and ``table.tex``: the summary table (``summary.md`` without its claims section).
"""

from analysis.figures import write_figures
from analysis.style import method_colors

__all__ = ["method_colors", "write_figures"]
