"""One look for every figure: print-readable sizes and one fixed colour per method.

The colour of a method is fixed by its position in the registry (``oblique.list_methods()``), so a method
has the same colour in every figure of every study, whichever methods a study holds.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import matplotlib as mpl
from matplotlib.figure import Figure

from oblique import records

__all__ = ["FLOOR", "PRINT_RC", "color", "method_colors", "new_figure", "print_style", "save"]

#: Drift values below this are drawn at it on log axes (hard constraints hold the norms to ~1e-7).
FLOOR = 1e-8

#: rc settings for figures that stay readable printed at column width (about 7 inches wide).
PRINT_RC = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "lines.linewidth": 1.5,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,  # TrueType in the PDF: editable text, accepted by publishers
}


def method_colors() -> dict[str, str]:
    """Method name -> colour (hex), in registry order: tab10 for the first ten, then tab20's light half."""
    from oblique import list_methods

    tab10 = mpl.colormaps["tab10"].colors
    tab20 = mpl.colormaps["tab20"].colors
    palette = list(tab10) + [tab20[i] for i in range(1, 20, 2)]
    return {m: mpl.colors.to_hex(palette[i % len(palette)]) for i, m in enumerate(list_methods())}


def color(method: str) -> str:
    """The method's colour; grey for a name that is not (or no longer) registered."""
    return method_colors().get(method, "#7f7f7f")


@contextmanager
def print_style():
    """Apply :data:`PRINT_RC` within the block."""
    with mpl.rc_context(PRINT_RC):
        yield


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 7.0, height: float = 2.6, **kw):
    """A pyplot-free Figure (works under any backend; saved with Agg / PDF) and its axes array."""
    fig = Figure(figsize=(width, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def save(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write ``stem.png`` (200 dpi) and ``stem.pdf`` into ``out_dir``, each atomically; return both paths."""
    png = records.write_atomic(out_dir / f"{stem}.png", lambda f: fig.savefig(f, format="png", dpi=200))
    pdf = records.write_atomic(out_dir / f"{stem}.pdf", lambda f: fig.savefig(f, format="pdf"))
    return [png, pdf]
