"""The notebooks' two helpers (``notebooks/*.py``): show a figure, run a study and show its table.

IPython is a dev dependency, not a core one, so it is imported inside the functions; so is
:mod:`oblique.study`, so that importing this module costs nothing.
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from oblique.study import Study, StudySpec

__all__ = ["show", "study"]


def show(fig: Figure, dpi: int = 110) -> None:
    """Display a matplotlib Figure in the notebook as a PNG.

    The figure is rendered to PNG bytes and displayed as an image, so this works under any matplotlib
    backend (including a ``Figure`` built without pyplot).

    Args:
        fig: the figure to display.
        dpi: the PNG's resolution.
    """
    from IPython.display import Image, display

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    display(Image(buf.getvalue()))


def study(root: str | os.PathLike, spec: StudySpec, *, workers: int = 0, threads: int | None = None) -> Study:
    """Run (or resume) the study at ``root`` and display its summary table.

    Runs already finished in ``root`` are reused, not retrained; lines for the runs trained now are
    printed as they finish.

    Args:
        root: the study folder.
        spec: the study's grid, expanded with :func:`oblique.study.expand`.
        workers: worker processes; 0 trains in this kernel.
        threads: torch threads per run; ``None`` = :func:`oblique.study.default_threads`.

    Returns:
        The study, for the figures and tables that read it.

    Raises:
        oblique.study.StudyLockedError: another process runs a study in ``root``.
        oblique.study.StudyError: ``spec`` conflicts with the study already in ``root``.
    """
    from IPython.display import Markdown, display

    from oblique.study import expand, run_study, summary_markdown

    result = run_study(root, expand(spec), workers=workers, threads=threads, progress=False, echo=print)
    display(Markdown(summary_markdown(result.study)))
    return result.study
