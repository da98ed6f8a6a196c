"""The methods and their registry: ``REGISTRY`` below is the one list of methods.

Adding a method is one module plus one line here; ``tests/test_methods_contract.py`` picks it up.
"""

from __future__ import annotations

from typing import Any

from oblique.errors import ObliqueError
from oblique.methods.base import KINDS, Hyper, Method, OptimizerConfig, build_torch_optimizer
from oblique.methods.baseline import Baseline
from oblique.methods.norm_loss import NormLoss, add_norm_loss_grad_, norm_loss
from oblique.methods.oblique_rsgd import ObliqueRSGD
from oblique.methods.olm import OLM
from oblique.methods.oni import ONI
from oblique.methods.pbwn import PBWN
from oblique.methods.soft_orthogonality import SRIP, SoftOrthogonality
from oblique.methods.weight_decay import WeightDecay, weight_decay_penalty
from oblique.methods.weight_norm import WeightNorm

__all__ = [
    "KINDS",
    "REGISTRY",
    "Hyper",
    "Method",
    "OptimizerConfig",
    "UnknownMethodError",
    "add_norm_loss_grad_",
    "build_torch_optimizer",
    "get_method",
    "get_method_class",
    "list_methods",
    "norm_loss",
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
        ObliqueRSGD,
        PBWN,
        ONI,
        OLM,
        SoftOrthogonality,
        SRIP,
    )
}


class UnknownMethodError(ObliqueError, ValueError):
    """An unknown method name; the message lists the valid ones."""


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
