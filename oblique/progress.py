"""Progress on stderr: a tqdm bar on a terminal, a plain line now and then in a log.

A redirected log (a cluster job, ``oblique run > log 2>&1``) must not fill with a bar's carriage-return
redraws; there, :func:`progress` prints one plain line every ``OBLIQUE_LOG_EVERY`` seconds (default 60)
and one at the end, e.g. ``nl: 1200/9000 step (13 %), loss=0.512, err=3.1%, 42 s``. The variable is a
declared option (:data:`LOG_EVERY`: a number of seconds > 0, at most a day); :func:`log_every_seconds`
reads it, and the command line checks it before any command runs, so a bad value is one line.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from oblique.options import Option, OptionError

__all__ = ["LOG_EVERY", "LogLines", "log_every_seconds", "progress"]

#: ``$OBLIQUE_LOG_EVERY``: the seconds between two progress lines in a log.
LOG_EVERY = Option(
    "OBLIQUE_LOG_EVERY",
    60.0,
    "seconds between two progress lines in a log",
    minimum=0,
    min_exclusive=True,
    maximum=86400,
)


def log_every_seconds() -> float:
    """``$OBLIQUE_LOG_EVERY`` (:data:`LOG_EVERY`), default 60.

    Raises:
        OptionError: not a number > 0 and <= 86400 (``abc``, ``0``, ``-1``, ``1e309``); the message names
            the environment variable.
    """
    text = os.environ.get(LOG_EVERY.name)
    if text is None:
        return LOG_EVERY.default
    try:
        return LOG_EVERY.convert(text)
    except OptionError as e:  # the variable, not a setting with a flag
        raise OptionError(f"the environment variable {e}") from None


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
        every: seconds between lines; default :func:`log_every_seconds`.
    """

    def __init__(self, total, desc: str, unit: str, *, enabled: bool = True, initial: int = 0, every=None):
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.n = initial
        self.every = float(every if every is not None else log_every_seconds())
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
