"""One look for every figure: print-readable sizes, one fixed style per method, byte-stable files.

Every method has a fixed *style* — a colour, a marker and a line style — declared by its class
(``color``, ``marker``, ``linestyle``: :class:`oblique.methods.base.Method`), so it looks the same in every
figure of every study, whichever methods a study holds. The built-in methods' colours are Paul Tol's
*muted* scheme (distinct under the common colour-vision deficiencies; https://personal.sron.nl/~pault/),
with black for ``baseline``; the marker and the line style tell the methods apart where colour cannot (a
greyscale print). A registered method without a style, or with a colour, a marker or a line style another
registered method has, is an error (:class:`StyleError`), never a silent copy of another method's look.

Files (:func:`save`): PNG at 200 dpi, PDF with TrueType text, dense per-step lines rasterized inside the
PDF (``rasterized=True`` on the artist; 300 dpi), and no creation date or software version in either, so
that regenerating a figure from the same records gives the same bytes.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import matplotlib as mpl
from matplotlib.colors import is_color_like, to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.markers import MarkerStyle
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from oblique import storage
from oblique.errors import ObliqueError

__all__ = [
    "FLOOR",
    "PRINT_RC",
    "StyleError",
    "log_ticks",
    "method_colors",
    "method_styles",
    "new_figure",
    "print_style",
    "save",
    "style",
]

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


class StyleError(ObliqueError, ValueError):
    """A registered method without a figure style of its own: none declared, an invalid one, or a colour,
    marker or line style another registered method has."""


def _declared(cls) -> dict:
    """``cls``'s declared style, checked: a Matplotlib colour (as hex), marker and line style."""
    s = {"color": cls.color, "marker": cls.marker, "linestyle": cls.linestyle}
    missing = [k for k, v in s.items() if v in ("", None)]
    if missing:
        raise StyleError(
            f"method {cls.name!r} declares no figure {' or '.join(missing)} (class attributes of "
            f"{cls.__name__}; every figure draws each method in its own style)"
        )
    for key, valid in (("color", is_color_like), ("marker", _is_marker), ("linestyle", _is_linestyle)):
        if not valid(s[key]):
            raise StyleError(f"method {cls.name!r}: {key} must be a Matplotlib {key}; got {s[key]!r}")
    return {**s, "color": to_hex(s["color"])}


def _is_marker(value) -> bool:
    try:
        MarkerStyle(value)
    except (TypeError, ValueError):
        return False
    return True


def _is_linestyle(value) -> bool:
    try:
        Line2D([], [], linestyle=value)
    except (TypeError, ValueError):
        return False
    return True


def method_styles() -> dict[str, dict]:
    """Method name -> ``{"color", "marker", "linestyle"}``, in registry order, as each method declares it.

    Raises:
        StyleError: a registered method declares no style (or an invalid one), or shares its colour, its
            marker or its line style with another registered method.
    """
    from oblique.methods import REGISTRY

    styles = {name: _declared(cls) for name, cls in REGISTRY.items()}
    for key in ("color", "marker", "linestyle"):
        seen: dict[str, str] = {}
        for name, s in styles.items():
            other = seen.setdefault(repr(s[key]), name)
            if other != name:
                raise StyleError(
                    f"methods {other!r} and {name!r} share the {key} {s[key]!r}; each method needs its own"
                )
    return styles


def style(method: str) -> dict:
    """The method's colour, marker and line style (grey, ``.`` and solid for an unregistered name)."""
    return dict(method_styles().get(method, {"color": "#7f7f7f", "marker": ".", "linestyle": "-"}))


def method_colors() -> dict[str, str]:
    """Method name -> colour (hex), in registry order."""
    return {m: s["color"] for m, s in method_styles().items()}


#: a log axis's tick labels as plain numbers (0.5, 1, 2) rather than 5×10⁻¹
PLAIN = FuncFormatter(lambda v, _: f"{v:g}")


def log_ticks(axis, lo: float, hi: float, subs: tuple[float, ...] | None = None) -> None:
    """Label a log-scaled ``axis`` (``ax.yaxis``) spanning ``lo`` … ``hi`` with well-spaced values only:
    the decades when it spans more than two, else 1, 2 and 5 times the decades (every digit on a very
    short span), or the multiples ``subs`` of each decade; minor ticks unlabelled."""
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 0.0
    if subs is None:
        subs = (
            (1.0,) if decades > 2.0 else (1.0, 2.0, 5.0) if decades > 0.4 else tuple(map(float, range(1, 10)))
        )
    axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
    axis.set_major_formatter(PLAIN)
    axis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10)), numticks=12))
    axis.set_minor_formatter(NullFormatter())


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
    """Write ``stem.png`` (200 dpi) and ``stem.pdf`` into ``out_dir``, each atomically and byte-stable (no
    creation date, no software version: the same figure gives the same bytes); return both paths."""
    png = storage.write_atomic(
        out_dir / f"{stem}.png", lambda f: fig.savefig(f, format="png", dpi=200, metadata={"Software": None})
    )
    pdf = storage.write_atomic(
        out_dir / f"{stem}.pdf",
        lambda f: fig.savefig(
            f, format="pdf", dpi=300, metadata={"CreationDate": None, "Producer": None, "Creator": None}
        ),
    )
    return [png, pdf]
