"""One declared, bounded value — a run setting, a method hyperparameter, a data option — and its one check.

An :class:`Option` says what a value may be: its kind (an integer, a number, true or false, text, a list of
numbers, a table of NAME = VALUE), its choices or its bounds (each inclusive or exclusive), its default and
one line of help. Every value that is not valid is refused with one :class:`OptionError` whose message is
the one shared wording, ``<setting> must be <what is valid>; got <value>``, and whose ``settings`` names the
setting, so the command line renders it as its flag:

>>> Option("iters", 5, "Newton iterations", minimum=1, maximum=100).convert("0", table="hp", of="oni")
Traceback (most recent call last):
...
oblique.options.OptionError: hp iters must be an integer from 1 to 100; got '0' (oni)

Text (a flag's value, ``--hp NAME=VALUE``, ``--data-option NAME=VALUE``) is read by one parser,
:func:`parse_text`, with one set of true/false words (:data:`TRUE_WORDS`, :data:`FALSE_WORDS`, any case).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oblique.errors import ObliqueError
from oblique.text import short

__all__ = [
    "FALSE_WORDS",
    "KINDS",
    "TRUE_WORDS",
    "Option",
    "OptionError",
    "check_folder",
    "is_integer",
    "is_number",
    "parse_bool",
    "parse_text",
]

#: The words read as true and as false, in any case: the same for every flag, ``--hp`` and ``--data-option``.
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")

#: The kinds of value an option holds, and how each is named in messages.
KINDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "text",
    "floats": "a list of numbers",
    "texts": "a list of text",
    "table": "a table of NAME = VALUE",
}

_KIND_OF_TYPE = {
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    list: "floats",
    tuple: "floats",
    dict: "table",
}
_NOT_READ = object()  # what a value that is not of the kind converts to


class OptionError(ObliqueError, ValueError):
    """A value that is not valid for its setting; the message says what is valid and what was given, and
    ``settings`` names the setting (``lr``, or ``hp`` for a method hyperparameter, ``data_options`` for a
    data option)."""


def is_integer(x: Any) -> bool:
    """Whether ``x`` is an integer (a ``bool`` is not).

    >>> is_integer(3), is_integer(3.0), is_integer(True)
    (True, False, False)
    """
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: Any, *, finite: bool = True) -> bool:
    """Whether ``x`` is an ``int`` or ``float`` (a ``bool`` is not), finite unless ``finite=False`` (a record
    may hold the NaN of a diverged run).

    >>> is_number(0.5), is_number(float("nan")), is_number(float("nan"), finite=False), is_number(True)
    (True, False, True, False)
    """
    if not isinstance(x, int | float) or isinstance(x, bool):
        return False
    return not finite or math.isfinite(x)


def parse_bool(text: str) -> bool:
    """``text`` as true or false: one of :data:`TRUE_WORDS` or :data:`FALSE_WORDS`, in any case, blanks
    around it ignored.

    >>> parse_bool("On"), parse_bool(" no ")
    (True, False)

    Raises:
        ValueError: any other text.
    """
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def parse_text(text: str, kind: str) -> Any:
    """``text`` (a flag's value) read as a value of ``kind`` (a key of :data:`KINDS`): ``"bool"`` by
    :func:`parse_bool`; ``"int"`` as an integer (``"5000"``, or a number with no fraction: ``"1e3"``);
    ``"float"`` as a number; ``"floats"`` comma-separated numbers; ``"str"`` as it is. Nothing is checked
    beyond the kind (:meth:`Option.check` does that).

    >>> parse_text("1e3", "int"), parse_text("0.5", "float"), parse_text("yes", "bool")
    (1000, 0.5, True)

    Raises:
        ValueError: text that is not of the kind.
    """
    if kind == "bool":
        return parse_bool(text)
    if kind == "str":
        return text
    if kind == "floats":
        return [float(t) for t in text.split(",") if t.strip()]
    if kind == "texts":
        return [t.strip() for t in text.split(",") if t.strip()]
    word = text.strip()
    if kind == "int" and word.lstrip("+-").isdigit():
        return int(word)
    number = float(word)  # a ValueError for text that is no number
    if kind == "int":
        if not (math.isfinite(number) and number.is_integer()):
            raise ValueError(f"expected an integer, got {text!r}")
        return int(number)
    if kind == "float":
        return number
    raise ValueError(f"a {kind} cannot be read from text")


@dataclass(frozen=True)
class Option:
    """One declared value: a method hyperparameter (``Hyper``), a data option, a run setting.

    Attributes:
        name: the keyword it is given by (``iters``; ``--hp iters=3``, ``--data-option num_samples=5000``).
        default: the value when it is not given; its type is the kind unless ``kind`` says otherwise.
        help: one line (``oblique methods -v``, ``oblique run --help``).
        choices: the valid values, for a categorical option.
        minimum: the smallest valid number (inclusive, or exclusive with ``min_exclusive``).
        maximum: the largest valid number (inclusive, or exclusive with ``max_exclusive``): where more only
            hangs or overflows a run. For a list of numbers, the bounds hold for each.
        kind: a key of :data:`KINDS`; default: the default's type (``5`` → ``"int"``).
        min_exclusive: ``minimum`` itself is not valid (a learning rate > 0).
        max_exclusive: ``maximum`` itself is not valid (a seed < 2**63).
        optional: ``None`` is a valid value (not given: torch's thread count, the method's own strength).
    """

    name: str
    default: Any
    help: str = ""
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    kind: str = ""
    min_exclusive: bool = False
    max_exclusive: bool = False
    optional: bool = False

    def __post_init__(self) -> None:
        kind = self.kind or _KIND_OF_TYPE.get(type(self.default), "")
        if kind not in KINDS:
            raise TypeError(f"option {self.name!r}: give its kind, one of {', '.join(KINDS)}; got {kind!r}")
        object.__setattr__(self, "kind", kind)

    def expected(self) -> str:
        """What a valid value is, in words: ``an integer from 1 to 100``, ``a number > 0 and <= 1000``,
        ``one of closed, autograd``, ``true or false``."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        what = KINDS[self.kind]
        low, high = self.minimum, self.maximum
        if low is not None and high is not None and not (self.min_exclusive or self.max_exclusive):
            return f"{what} from {_bound(low)} to {_bound(high)}"
        parts = []
        if low is not None:
            parts.append(f"{'>' if self.min_exclusive else '>='} {_bound(low)}")
        if high is not None:
            parts.append(f"{'<' if self.max_exclusive else '<='} {_bound(high)}")
        return " ".join([what, " and ".join(parts)]) if parts else what

    def error(self, got: Any, *, table: str | None = None, of: str | None = None) -> OptionError:
        """The one error of a value ``got`` that is not valid: ``<label> must be <expected>; got <got>``.

        Args:
            table: the setting whose NAME = VALUE table holds this option (``hp``, ``data_options``): the
                message starts ``hp iters``, and the error names ``hp``; None: the option is a setting.
            of: what the option belongs to (a method, a data set), named at the end in parentheses.
        """
        label = f"{table} {self.name}" if table else self.name
        where = f" ({of})" if of else ""
        return OptionError(
            f"{label} must be {self.expected()}; got {short(got)}{where}", settings=(table or self.name,)
        )

    def check_kind(self, value: Any, **where: Any) -> Any:
        """``value`` if it is of this option's kind (no conversion; ``None`` where the default is None: a
        value filled in later, or none); else :meth:`error` (``where``: its ``table`` and ``of``)."""
        if value is None and (self.optional or self.default is None):
            return value
        if not _of_kind(value, self.kind):
            raise self.error(value, **where)
        return value

    def check(self, value: Any, **where: Any) -> Any:
        """``value`` if it is valid as it is — of the kind (no conversion), finite, one of the choices,
        within the bounds; ``None`` only where the option is ``optional``; else :meth:`error`."""
        if value is None and self.optional:
            return value
        if not (_of_kind(value, self.kind) and self._within(value)):
            raise self.error(value, **where)
        return value

    def convert(self, value: Any, **where: Any) -> Any:
        """``value`` as this option's kind, then :meth:`check` ed: text is read by :func:`parse_text`
        (``"5000"`` → 5000, ``"on"`` → True), a number with no fraction is an integer (``3.0`` → 3), an
        integer is a number (``1`` → 1.0). True and false are never numbers, nor numbers true or false.

        Raises:
            OptionError: a value not of the kind, not finite, not one of the choices or out of bounds; the
                message quotes ``value`` as given.
        """
        if value is None and self.optional:
            return value
        out = _as_kind(value, self.kind)
        if out is _NOT_READ or not self._within(out):
            raise self.error(value, **where)
        return out

    def _within(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if self.kind == "floats":
            return all(self._in_bounds(v) for v in value)
        if self.kind in ("int", "float"):
            return self._in_bounds(value)
        return True

    def _in_bounds(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        if self.minimum is not None and not (x > self.minimum if self.min_exclusive else x >= self.minimum):
            return False
        return self.maximum is None or (x < self.maximum if self.max_exclusive else x <= self.maximum)


def _of_kind(value: Any, kind: str) -> bool:
    if kind == "int":
        return is_integer(value)
    if kind == "float":
        return is_number(value, finite=False)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "floats":
        return isinstance(value, list | tuple) and all(is_number(v, finite=False) for v in value)
    if kind == "texts":
        return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)  # table


def _as_kind(value: Any, kind: str) -> Any:
    """``value`` converted to ``kind`` (:meth:`Option.convert`), or :data:`_NOT_READ`."""
    if isinstance(value, str) and kind != "str":
        try:
            return parse_text(value, kind)
        except (ValueError, OverflowError):
            return _NOT_READ
    if kind in ("int", "float") and isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            if kind == "float":
                return float(value)
            if isinstance(value, numbers.Integral):
                return int(value)
            return int(value) if math.isfinite(value) and float(value).is_integer() else _NOT_READ
        except OverflowError:  # an integer too large for a float
            return _NOT_READ
    return value if _of_kind(value, kind) else _NOT_READ


def _bound(x: float) -> str:
    """A bound as a message writes it: ``10``, ``0.5``, ``2**63`` (a large power of two)."""
    if isinstance(x, int) and x >= 2**32 and x & (x - 1) == 0:
        return f"2**{x.bit_length() - 1}"
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def check_folder(
    setting: str, value: Any, *, existing: bool = True, error: type[ObliqueError] = OptionError
) -> str:
    """``value``, checked as the folder setting ``setting``: a folder name (text, not blank, no NUL byte)
    and, with ``existing``, not the name of something that exists and is not a folder.

    Args:
        error: the error class to raise (a study raises its own), given the message and ``settings``.

    Raises:
        OptionError: (or ``error``) naming ``setting``.
    """
    named = isinstance(value, str) and value.strip() != ""
    if not named or "\0" in value:
        what = "a folder name" if named else "a folder name (not empty)"
        raise error(f"{setting} must be {what}; got {short(value)}", settings=(setting,))
    if existing and Path(value).exists() and not Path(value).is_dir():
        raise error(
            f"{setting} {value} exists and is not a folder; choose another folder", settings=(setting,)
        )
    return value
