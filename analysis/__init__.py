"""Figures and tables from study records (matplotlib); it reads records, it never trains.

The library (``oblique``) never imports this package; the ``oblique study`` and ``oblique plot`` commands
import it lazily. Records are read only through :mod:`oblique.records` (and :mod:`oblique.study`, which
reads them through it).

Public API::

    analysis.write_figures(study_dir, bench=None, per_layer=False)   # every figure and table
    analysis.method_colors()                                         # one fixed colour per method
    analysis.figures.fig_drift(...), fig_loss, fig_strength, fig_batch_size, fig_cost
    analysis.tables.table_markdown(study_dir), analysis.tables.table_latex(study_dir)
    analysis.notebook.show(fig), analysis.notebook.study(root, spec)  # the notebooks' helpers (IPython)

Figures (PNG and PDF in ``STUDY_DIR/figures``):

1. ``fig1_drift``: manifold drift over training (``norm_dev_mean``, ``ddiag_dev``, ``offdiag_dev``, log y),
   mean over layers, a band over seeds; ``fig1_drift_layers_<metric>`` per layer with ``per_layer``.
2. ``fig2_loss``: train cross-entropy per batch over epochs, raw and smoothed.
3. ``fig3_strength``: test error against the strength λ (log x), a band over seeds.
4. ``fig4_batch_size``: test error against the batch size.
5. ``fig5_cost``: training time per step and the regularizer's share per method (from the study's own
   runs) and, from bench records (``oblique bench``, read by ``oblique.cost.read_bench``), the overhead
   and the regularizer's isolated time against the parameter count (log-log).
6. ``table.md`` and ``table.tex``: the summary table.
"""

from analysis.figures import write_figures
from analysis.style import method_colors

__all__ = ["method_colors", "write_figures"]
