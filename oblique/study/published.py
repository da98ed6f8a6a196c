"""The Norm Loss poster's published figures, by data set and model, to stand beside a study's own.

Source: ``docs/reference/norm_loss_poster.md`` (Georgiou et al., ICPR 2020, arXiv 2103.06583), which
``tests/test_references.py`` holds these tables to.
"""

from __future__ import annotations

__all__ = ["PUBLISHED", "published_cell"]

#: The Norm Loss poster's tables (``docs/reference/norm_loss_poster.md``; Georgiou et al., ICPR 2020,
#: arXiv 2103.06583): ``(dataset, model) -> method -> {label: (best, mean)}`` in % test error
#: (top-1; ImageNet also ``top5``). ``None`` = not given. "repr" is the authors' reproduction of the
#: baseline, "pub" the figure published by the method's own paper. OLM-L1 has no method here.
PUBLISHED: dict[tuple[str, str], dict[str, dict[str, tuple[float | None, float | None]]]] = {
    ("imagenet", "resnet50"): {
        "wd": {"repr": (25.29, None), "repr top5": (7.86, None), "pub": (23.85, None)},
        "nl": {"": (24.34, None), "top5": (7.44, None)},
        "oni": {"pub": (23.30, None)},
    },
    ("cifar10", "resnet110"): {
        "wd": {"repr": (6.32, 6.568), "pub": (6.43, 6.61)},
        "wn": {"pub": (None, 7.56)},
        "pbwn": {"pub": (None, 6.27)},
        "oni": {"pub": (None, 6.56)},
        "nl": {"": (5.9, 5.996)},
    },
    ("cifar10", "wrn28-10"): {
        "wd": {"repr": (3.9, 3.966), "pub": (None, 3.89)},
        "olm": {"pub": (None, 3.73)},
        "nl": {"": (4.47, 4.662)},
    },
    ("cifar100", "resnet110"): {
        "wd": {"repr": (27.9, 28.398)},
        "wn": {"pub": (None, 28.38)},
        "pbwn": {"pub": (None, 27.03)},
        "nl": {"": (26.24, 26.526)},
    },
    ("cifar100", "wrn28-10"): {
        "wd": {"repr": (18.85, 19.138), "pub": (None, 18.85)},
        "olm": {"pub": (None, 18.76)},
        "nl": {"": (18.57, 18.648)},
    },
}


def published_cell(dataset: str, model: str, method: str) -> str:
    """The poster's figures for one method in one setting, as ``best (mean)`` text; '' when none."""
    entries = PUBLISHED.get((dataset, model), {}).get(method, {})
    parts = []
    for label, (best, mean) in entries.items():
        text = (f"{best:g}" if best is not None else "–") + (f" ({mean:g})" if mean is not None else "")
        parts.append(f"{label} {text}".strip())
    return "; ".join(parts)
