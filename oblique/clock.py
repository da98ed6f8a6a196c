"""Marking points in time without waiting for the device: CUDA events on a GPU, ``perf_counter`` on the CPU.

On a GPU the kernels run after the host has queued them, so ``perf_counter`` around them measures the
launches (and, after a synchronization, somebody else's work). A :class:`Clock` records CUDA events in the
stream instead, and the time between two of them is read later — once the events are done, e.g. at the
next point where the host waits for the device anyway. On the CPU, marks are ``perf_counter`` readings.
"""

from __future__ import annotations

import time
from typing import Any

import torch

__all__ = ["Clock"]


class Clock:
    """Marks for ``device``: :meth:`mark` returns a CUDA event (recorded in the current stream) or a
    ``perf_counter`` reading; :meth:`ms` gives the milliseconds between two marks (for events: once both
    are done; :meth:`sync` waits for them)."""

    def __init__(self, device: torch.device | str):
        self.cuda = torch.device(device).type == "cuda"

    def mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def ms(self, a: Any, b: Any) -> float:
        if self.cuda:
            return a.elapsed_time(b)
        return (b - a) * 1e3

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
