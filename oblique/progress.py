"""Progress on stderr: a tqdm bar on a terminal, a plain line now and then in a log.

A redirected log (a cluster job, ``oblique run > log 2>&1``) must not fill with a bar's carriage-return
redraws; there, :func:`progress` prints one plain line every ``OBLIQUE_LOG_EVERY`` seconds (default 60)
and one at the end, e.g. ``nl: 1200/9000 step (13 %), loss=0.512, err=3.1%, 42 s``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

__all__ = ["LogLines", "progress"]


def progress(total: int | None, desc: str, unit: str = "step", *, enabled: bool = True, initial: int = 0):
    """A progress object with tqdm's ``update``, ``set_postfix``, ``write`` and ``close``.

    A tqdm bar when stderr is a terminal; :class:`LogLines` otherwise; a silent one when not ``enabled``.
    """
    if enabled and sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=False)
    return LogLines(total, desc, unit, enabled=enabled, initial=initial)


class LogLines:
    """Progress as a plain line every ``every`` seconds (and at the end) on stderr: for logs.

    Args:
        every: seconds between lines; default ``$OBLIQUE_LOG_EVERY`` or 60.
    """

    def __init__(self, total, desc: str, unit: str, *, enabled: bool = True, initial: int = 0, every=None):
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.n = initial
        self.every = float(every if every is not None else os.environ.get("OBLIQUE_LOG_EVERY", 60))
        self.t0 = self._last = time.monotonic()
        self.postfix: dict[str, Any] = {}

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.enabled and time.monotonic() - self._last >= self.every:
            self._print()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def write(self, line: str, file=None) -> None:
        print(line, file=file or sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.n and self._last != -1:
            self._print()
        self._last = -1

    def _print(self) -> None:
        self._last = time.monotonic()
        of = f"/{self.total}" if self.total else ""
        pct = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        line = f"{self.desc}: {self.n}{of} {self.unit}{pct}{extra}, {self._last - self.t0:.0f} s"
        print(line, file=sys.stderr, flush=True)
