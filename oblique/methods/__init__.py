"""The methods and their registry: ``REGISTRY`` below is the one list of methods.

Adding a method is one module plus one line. The module holds its :class:`~oblique.methods.base.Method`
subclass, and the class declares everything the project knows of it: its ``name`` and ``kind``, its
hyperparameters, where its cost goes (``cost_note``) and the target the bench holds it to
(``cost_target``), its figure style (``color``, ``marker``, ``linestyle``) and its row of the README's
methods table (``paper``, ``formula``, ``differences``). The line is its class in the tuple of
``REGISTRY`` below, or, for a method that lives outside the package, ``register(MyMethod)``;
``with registered(MyMethod):`` registers it for one block only (a test) and restores the registry after.

Then ``tests/test_methods_contract.py`` tests it, ``oblique run`` and ``oblique study`` train it, figures
draw it in its own style, ``oblique bench`` times it and measures its target, and ``oblique methods
--markdown`` prints its README row (:func:`markdown_table`; ``tests/test_registry.py`` checks the README).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from oblique.errors import ObliqueError
from oblique.methods.base import (
    COST_MEASURES,
    KINDS,
    MANIFOLDS,
    CostTarget,
    Hyper,
    Method,
    MethodUseError,
    OptimizerConfig,
    build_torch_optimizer,
    training_step,
)
from oblique.methods.baseline import Baseline
from oblique.methods.fwn import FWN
from oblique.methods.norm_loss import NormLoss, add_norm_loss_grad_, norm_loss
from oblique.methods.oblique_rsgd import ObliqueRSGD
from oblique.methods.olm import OLM
from oblique.methods.oni import ONI
from oblique.methods.parseval import Parseval
from oblique.methods.pbwn import PBWN
from oblique.methods.soft_orthogonality import SRIP, SoftOrthogonality
from oblique.methods.stiefel_rsgd import StiefelRSGD
from oblique.methods.weight_decay import WeightDecay, weight_decay_penalty
from oblique.methods.weight_norm import WeightNorm

__all__ = [
    "COST_MEASURES",
    "KINDS",
    "MANIFOLDS",
    "REGISTRY",
    "CostTarget",
    "Hyper",
    "Method",
    "MethodUseError",
    "OptimizerConfig",
    "RegistrationError",
    "UnknownMethodError",
    "add_norm_loss_grad_",
    "build_torch_optimizer",
    "get_method",
    "get_method_class",
    "training_step",
    "list_methods",
    "markdown_table",
    "norm_loss",
    "register",
    "registered",
    "weight_decay_penalty",
]

#: name -> class, in the order ``oblique methods`` lists them.
REGISTRY: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (
        Baseline,
        WeightDecay,
        NormLoss,
        WeightNorm,
        FWN,
        ObliqueRSGD,
        StiefelRSGD,
        PBWN,
        Parseval,
        ONI,
        OLM,
        SoftOrthogonality,
        SRIP,
    )
}


class UnknownMethodError(ObliqueError, ValueError):
    """An unknown method name; the message lists the valid ones."""


class RegistrationError(ObliqueError, ValueError):
    """A class that cannot be registered: not a method, no name, a name taken, a kind not in ``KINDS``."""


def register(cls: type[Method]) -> type[Method]:
    """Add ``cls`` to :data:`REGISTRY` under ``cls.name``, after the methods already there; returns
    ``cls`` (so it also works as a class decorator).

    Raises:
        RegistrationError: ``cls`` is not a :class:`Method` subclass, has no name or a name already
            registered, or a kind not in :data:`KINDS`.
    """
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise RegistrationError(f"register takes a Method subclass; got {cls!r}")
    if not cls.name:
        raise RegistrationError(f"{cls.__name__} has no name (its class attribute `name`)")
    if cls.name in REGISTRY:
        raise RegistrationError(f"method {cls.name!r} is already registered ({REGISTRY[cls.name].__name__})")
    if cls.kind not in KINDS:
        raise RegistrationError(f"{cls.__name__}.kind must be one of {', '.join(KINDS)}; got {cls.kind!r}")
    if cls.manifold not in ("", *MANIFOLDS):
        raise RegistrationError(
            f"{cls.__name__}.manifold must be one of {', '.join(MANIFOLDS)} or empty; got {cls.manifold!r}"
        )
    REGISTRY[cls.name] = cls
    return cls


@contextmanager
def registered(*classes: type[Method]) -> Iterator[None]:
    """Register ``classes`` (:func:`register`) for the block only; the registry is as it was afterwards,
    whatever the block registered or removed.

    >>> class Toy(Method):
    ...     name = "toy"
    >>> with registered(Toy):
    ...     list_methods()[-1]
    'toy'
    >>> "toy" in list_methods()
    False
    """
    saved = dict(REGISTRY)
    try:
        for cls in classes:
            register(cls)
        yield
    finally:
        REGISTRY.clear()
        REGISTRY.update(saved)


#: the README's methods table: its columns (header, the class attribute of each cell)
_TABLE_COLUMNS = (
    ("method", "name"),
    ("kind", "kind"),
    ("aims at", "aims_at"),
    ("paper", "paper"),
    ("formula", "formula"),
    ("what `oblique` does differently from upstream", "differences"),
)


def _cell(cls: type[Method], attr: str) -> str:
    text = getattr(cls, attr)
    if not text or "\n" in text:
        raise RegistrationError(
            f"{cls.__name__}.{attr} must be one non-empty line (the README's methods table)"
        )
    text = text.replace("|", "\\|")  # a bar would end the cell
    return f"`{text}`" if attr == "name" else text


def markdown_table() -> str:
    """The README's methods table: a row per registered method, in registry order, from its class
    attributes (``kind``, ``aims_at``, ``paper``, ``formula``, ``differences``); ends with a newline.

    >>> print(markdown_table().splitlines()[2])
    | `baseline` | none | nothing | — | plain training | drift is still recorded on the same targets |

    Raises:
        RegistrationError: a registered method leaves one of those empty.
    """
    lines = [
        "| " + " | ".join(head for head, _ in _TABLE_COLUMNS) + " |",
        "|" + "---|" * len(_TABLE_COLUMNS),
    ]
    for cls in REGISTRY.values():
        lines.append("| " + " | ".join(_cell(cls, attr) for _, attr in _TABLE_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def list_methods() -> list[str]:
    """Names of every registered method, in registry order.

    >>> list_methods()[:3]
    ['baseline', 'wd', 'nl']
    """
    return list(REGISTRY)


def get_method_class(name: str) -> type[Method]:
    """The class registered under ``name``; raises :class:`UnknownMethodError` listing the valid names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownMethodError(f"unknown method {name!r}; valid: {', '.join(REGISTRY)}") from None


def get_method(name: str, **hyperparameters: Any) -> Method:
    """Build the method ``name`` with ``strength``, ``targets`` and its own hyperparameters.

    >>> get_method("nl", strength=0.1).config()["strength"]
    0.1
    """
    return get_method_class(name)(**hyperparameters)
