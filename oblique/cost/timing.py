"""How the bench reads the clock, and the statistics of its samples.

:class:`Timer` marks points in a step — CUDA events on a CUDA device (recorded in the stream, read after
one synchronization), ``time.perf_counter`` on the CPU — and :func:`time_call` times one call with it.
:func:`median`, :func:`quantile` and :func:`robust_se` summarize the samples (milliseconds).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["Timer", "median", "quantile", "robust_se", "time_call"]


class Timer:
    """Marks points in a step: CUDA events on a CUDA device, ``perf_counter`` on the CPU.

    Args:
        device: the device the timed work runs on.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self) -> Any:
        """A point in time: a recorded CUDA event, or the ``perf_counter`` reading."""
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def ms(self, a: Any, b: Any) -> float:
        """Milliseconds from mark ``a`` to mark ``b`` (on CUDA, after :meth:`sync`)."""
        if self.cuda:
            return a.elapsed_time(b)
        return (b - a) * 1e3

    def sync(self) -> None:
        """Wait for the device's queued work (CUDA); nothing on the CPU."""
        if self.cuda:
            torch.cuda.synchronize()


def time_call(fn: Callable[[], Any], timer: Timer) -> float:
    """Milliseconds one call of ``fn`` takes, measured with ``timer``.

    >>> time_call(lambda: None, Timer(torch.device("cpu"))) >= 0
    True
    """
    a = timer.mark()
    fn()
    b = timer.mark()
    timer.sync()
    return timer.ms(a, b)


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
