"""How the bench reads the clock, and the statistics of its samples.

The clock is the project's one, :class:`oblique.clock.Clock` (``Timer`` is its old name here): it marks
points in a step — CUDA events on a CUDA device (recorded in the stream, read after one synchronization),
``time.perf_counter`` on the CPU — and :func:`time_call` times one call with it.
:func:`median`, :func:`quantile` and :func:`robust_se` summarize the samples (milliseconds).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from oblique.clock import Clock

__all__ = ["Clock", "Timer", "median", "quantile", "robust_se", "time_call"]


#: the bench's clock is the project's one (:class:`oblique.clock.Clock`); the old name stays importable
Timer = Clock


def time_call(fn: Callable[[], Any], clock: Clock) -> float:
    """Milliseconds one call of ``fn`` takes, measured with ``clock`` (waits for the device).

    >>> time_call(lambda: None, Clock("cpu")) >= 0
    True
    """
    a = clock.mark()
    fn()
    b = clock.mark()
    clock.sync()
    return clock.ms(a, b)


def median(xs: Sequence[float]) -> float:
    """The median of ``xs``; NaN when there are none.

    >>> median([3.0, 1.0, 2.0]), median([])
    (2.0, nan)
    """
    return float(statistics.median(xs)) if xs else float("nan")


def robust_se(xs: Sequence[float]) -> float:
    """The standard error of the median of ``xs``, robust to the odd slow round: ``1.2533·σ/√n`` with σ
    estimated from the interquartile range (``IQR/1.349``). Needs at least two samples.

    >>> round(robust_se([1.0, 2.0, 3.0, 4.0]), 3)
    0.697
    """
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return 1.2533 * (q[2] - q[0]) / 1.349 / math.sqrt(len(xs))


def quantile(xs: Sequence[float], q: float) -> float:
    """The quartile ``q`` (0.25, 0.5 or 0.75) of ``xs``; the median when there are fewer than two.

    >>> quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.25), quantile([7.0], 0.75)
    (2.0, 7.0)
    """
    if len(xs) < 2:
        return median(xs)
    return float(statistics.quantiles(xs, n=4, method="inclusive")[int(q * 4) - 1])
