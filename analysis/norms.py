"""The manifold itself: every filter's norm ``‖F_i‖`` at the end of a run, from its ``model.pt``.

A run folder keeps the final ``state_dict`` of the *prepared* model (``model.pt``; a reparametrization's
own tensors, a manifold parameter's filter matrix). To see the weights the forward pass computes with, the
model is built again from ``config.json`` (the model, the method with its resolved hyperparameters and
targets), prepared by the method, loaded with ``torch.load(..., weights_only=True)``, and asked for its
effective filters (``Method.effective_filters``: the effective weights read through each layer's layout) —
the same filters the drift metrics are measured on.

The number of classes is not a run setting (the data set gives it); it is read from the state_dict's last
matrix, the classifier's weight in every model of :mod:`oblique.models`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from oblique import records, storage

__all__ = ["filter_norms"]


def _num_classes(state: dict) -> int:
    matrices = [v for v in state.values() if getattr(v, "ndim", 0) == 2]
    if not matrices:
        raise storage.RecordError("model.pt holds no matrix: cannot tell the number of classes")
    return int(matrices[-1].shape[0])


def filter_norms(run_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """The row norms of every targeted layer's effective filter matrix at the end of the run.

    Returns:
        Layer name -> the norms of its filters, in filter order (float64).

    Raises:
        oblique.storage.RecordError: the run has no ``model.pt`` (``--no-save-model``, or not finished),
            or its records cannot be read.
    """
    import torch

    from oblique.config import RunConfig
    from oblique.models import get_model, input_shape

    run_dir = Path(run_dir)
    path = run_dir / records.MODEL
    if not path.exists():
        raise storage.RecordError(f"{path}: no such file (the run saved no model)")
    config = records.read_config(run_dir)
    fields = set(RunConfig.field_names())
    cfg = RunConfig(**{k: v for k, v in config.items() if k in fields})
    state = torch.load(path, map_location="cpu", weights_only=True)
    method = cfg.build_method()
    model = get_model(cfg.model, num_classes=_num_classes(state), in_channels=input_shape(cfg.model)[0])
    model = method.prepare(model)
    model.load_state_dict(state)
    return {
        name: f.double().norm(dim=1).numpy()  # F (n, p), read through the layer's layout
        for name, f in method.effective_filters(model).items()
    }
