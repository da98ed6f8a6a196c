"""Plain training: no weight regularization. The reference every overhead is measured against."""

from __future__ import annotations

from oblique.methods.base import Method

__all__ = ["Baseline"]


class Baseline(Method):
    """``baseline``: the model and optimizer as they are; drift is still recorded on the targets."""

    name = "baseline"
    kind = "none"
    summary = "plain training, no weight regularization"
    paper = "—"
    aims_at = "nothing"
    formula = "plain training"
    differences = "drift is still recorded on the same targets"
    color, marker, linestyle = "#000000", "o", (0, (6, 2))
