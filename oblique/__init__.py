"""oblique — Norm Loss and every other way onto the oblique manifold, behind one interface.

Public API::

    oblique.get_method(name, strength=..., targets=..., **hyperparameters)
    oblique.list_methods()
    oblique.norm_loss(model_or_weights, targets="conv")
    oblique.drift(weight), oblique.model_drift(model, targets=...), oblique.filter_matrix(weight)
    oblique.config.RunConfig, oblique.train.train(config); oblique.fit.fit (the training loop alone)
    oblique.bake(model)                          # a prepared model back to plain weights
    oblique.register_layer_kind(name, ...), oblique.layers.census(model, targets)
    method.check(model) -> (ok, reason)
    oblique.OptimizerConfig, oblique.training_step   # your own loop (README, "Your own training loop")
"""

from oblique.bake import bake
from oblique.geometry import DRIFT_KEYS, drift, filter_matrix, model_drift, project_oblique
from oblique.layers import register_layer_kind
from oblique.methods import (
    MethodUseError,
    OptimizerConfig,
    get_method,
    list_methods,
    norm_loss,
    training_step,
)

__version__ = "0.1.0"

__all__ = [
    "DRIFT_KEYS",
    "MethodUseError",
    "OptimizerConfig",
    "__version__",
    "bake",
    "drift",
    "filter_matrix",
    "get_method",
    "list_methods",
    "model_drift",
    "norm_loss",
    "project_oblique",
    "register_layer_kind",
    "training_step",
]
