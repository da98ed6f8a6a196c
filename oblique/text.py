"""How numbers and values are written into tables, messages and folder names: one home for each rule."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["number", "short", "value"]


def number(x: Any, spec: str, missing: str = "–") -> str:
    """``x`` formatted with ``spec``; ``missing`` for None or NaN.

    >>> number(0.01234, ".3g"), number(float("nan"), ".2f"), number(None, ".2f", missing="--")
    ('0.0123', '–', '--')
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return missing
    return format(x, spec)


def value(v: Any) -> str:
    """A grid value as text: floats compact (``0.001`` → ``0.001``, ``1e-05``), anything else ``str``.

    >>> value(0.5), value(1e-5), value("conv")
    ('0.5', '1e-05', 'conv')
    """
    return f"{v:g}" if isinstance(v, float) else str(v)


def short(v: Any, limit: int = 80) -> str:
    """``repr(v)``, cut to ``limit`` characters: a value quoted in a message keeps it one readable line.

    >>> short("conv"), short(list(range(40)), limit=20)
    ("'conv'", '[0, 1, 2, 3, 4, 5...')
    """
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."
