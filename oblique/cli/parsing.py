"""How the command line reads values and reports errors: the one-line argparse, the value parsers and the
mapping from a library setting's name to its flag."""

from __future__ import annotations

import argparse
from typing import Any

from oblique import options
from oblique.errors import UsageError

__all__ = [
    "Parser",
    "flag",
    "parse_bool",
    "parse_csv",
    "parse_floats",
    "parse_grid",
    "parse_hp",
    "parse_seeds",
    "parse_value",
]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the message names the valid choices) and exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError(f"{message} (see '{self.prog} --help')")


#: settings whose flag is not their name with ``-`` for ``_``: a repeatable flag names one entry of its table
FLAG_NAMES = {"data_options": "--data-option", "time_budget_s": "--time-budget"}


def flag(setting: str) -> str:
    """The command-line flag of a library setting: ``batch_size`` → ``--batch-size``.

    >>> flag("batch_size"), flag("data_options")
    ('--batch-size', '--data-option')
    """
    return FLAG_NAMES.get(setting) or "--" + setting.replace("_", "-")


def parse_bool(text: str) -> bool:
    """A true/false flag's value, read with the words every true/false value takes
    (:func:`oblique.options.parse_bool`: true/false, yes/no, on/off, 1/0, any case).

    >>> parse_bool("on"), parse_bool("FALSE")
    (True, False)
    """
    try:
        return options.parse_bool(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}") from None


def parse_floats(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def parse_hp(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    if not k.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r} (no NAME)")
    return k.strip(), v.strip()


def parse_csv(kind, what: str):
    """A parser of comma-separated values of ``kind`` (``what`` names them in the message)."""

    def parse(text: str) -> list:
        try:
            return [kind(t.strip()) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None

    return parse


def parse_seeds(text: str) -> list[int]:
    """``N`` = seeds 0..N-1; a comma list (``3,`` for the single seed 3) = those seeds.

    A count above the most runs a study plans, or a seed outside 0 <= seed < 2**63, is refused here.
    """
    from oblique.config import SEED_LIMIT
    from oblique.study.spec import MAX_RUNS

    try:
        if "," not in text:
            n = int(text)
            if n < 1:
                raise ValueError
        else:
            seeds = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a count N >= 1 or a comma list of seeds, got {text!r}"
        ) from None
    if "," not in text:
        if n > MAX_RUNS:
            raise argparse.ArgumentTypeError(f"expected a count N from 1 to {MAX_RUNS}, got {text!r}")
        return list(range(n))
    bad = [s for s in seeds if not 0 <= s < SEED_LIMIT]
    if bad:
        raise argparse.ArgumentTypeError(f"seeds must be integers >= 0 and < 2**63; got {bad[0]}")
    return seeds


def parse_value(text: str) -> Any:
    """A grid value: true/false, an int, a float, else the text."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_grid(text: str) -> tuple[str, list]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=V1,V2,..., got {text!r}")
    key, values = text.split("=", 1)
    return key.strip().replace("-", "_"), [parse_value(v.strip()) for v in values.split(",") if v.strip()]
