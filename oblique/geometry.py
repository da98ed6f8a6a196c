"""Filter matrices, the oblique manifold, and the drift metrics.

A weight of shape ``(C_out, C_in, *kernel)`` (or ``(C_out, C_in)`` for a linear layer) is read as its
*filter matrix* ``F = W.reshape(C_out, -1)``: one row per filter (neuron), ``p = C_in·prod(kernel)``
columns. The oblique manifold is ``ddiag(F Fᵀ) = I``: every row of unit norm.

The four drift metrics are the project's contract (docs/DESIGN.md, "Drift metrics"), computed on the weight
the forward pass actually uses. With row norms ``r_i = ‖F_i‖``:

- ``norm_dev_mean = mean_i |r_i − 1|``
- ``norm_dev_max  = max_i |r_i − 1|``
- ``ddiag_dev     = ‖ddiag(FFᵀ) − I‖_F / √n = sqrt(mean_i (r_i² − 1)²)``
- ``offdiag_dev   = ‖FFᵀ − ddiag(FFᵀ)‖_F / √(n(n−1))`` (0 when n = 1)

Cost: the three norm metrics need one pass over the weights. ``offdiag_dev`` needs a Gram matrix, the
*smaller* one, so it costs ``min(n, p)²·max(n, p)`` — on a WRN-28-10 layer about as much as one forward pass
of a batch of a few images. The trainer records drift every ``drift_every`` steps, not every step.

Note [exact offdiag]: when ``n ≤ p`` the Gram matrix formed is ``G = FFᵀ`` itself, and ``offdiag_dev`` is read
off it directly, ``‖G − ddiag(G)‖_F``. The identity ``‖G‖²_F − Σ r_i⁴`` costs the same and cancels
catastrophically near orthogonality: both terms are ≈ n and their difference is what is sought, so below
about 1e-8 it returns rounding noise (measured on 16 × 64 filter matrices with a true value of 1.5e-11: 0 or
3e-9 depending on the seed; on float32 rows orthonormal to float32 rounding, true value 4e-9: always 0).
When ``n > p`` only ``FᵀF`` (``p × p``) is formed and the identity ``‖FᵀF‖²_F − Σ r_i⁴`` is used: ``n > p`` rows
cannot be mutually orthogonal, and for rows of equal norm the off-diagonal sum is at least ``(n − p)/p``
of ``Σ r_i⁴`` (``‖FᵀF‖²_F ≥ (tr FᵀF)²/p``), so the subtraction loses at most about ``log10(p)`` digits. (Rows of
very unequal norms can still cancel there.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from oblique.layers import ROWS, Layout, Target, resolve_targets

__all__ = [
    "worst_gram_deviation",
    "drift_record",
    "drift_terms",
    "model_drift_tensor",
    "DRIFT_KEYS",
    "EPS",
    "drift",
    "filter_matrix",
    "mean_drift",
    "model_drift",
    "project_oblique",
    "project_oblique_",
    "targeted_modules",
]

#: The drift metric names, in the order of docs/DESIGN.md, "Drift metrics". This tuple is the contract.
DRIFT_KEYS = ("norm_dev_mean", "norm_dev_max", "ddiag_dev", "offdiag_dev")

#: Row norms below this are treated as zero by the projection (see Note [zero filter]).
EPS = 1e-12


def filter_matrix(weight: torch.Tensor) -> torch.Tensor:
    """Return the filter matrix ``(C_out, C_in·k…)`` of a conv or linear weight (a view when possible).

    Args:
        weight: a tensor with at least two dimensions, the first being the output channels.

    Raises:
        ValueError: if ``weight`` has fewer than two dimensions.

    >>> filter_matrix(torch.zeros(8, 3, 5, 5)).shape
    torch.Size([8, 75])
    """
    if weight.dim() < 2:
        raise ValueError(
            f"Expected a weight with at least 2 dimensions (C_out, C_in, *kernel). Got shape {tuple(weight.shape)}."
        )
    return weight.reshape(weight.shape[0], -1)  # (C_out, C_in·prod(kernel))


def project_oblique(weight: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Project every filter of ``weight`` onto the unit sphere (out of place).

    .. math:: F_i \\leftarrow F_i / \\max(\\|F_i\\|, \\epsilon)

    Note [zero filter]: a filter whose norm is below ``eps`` has no direction. It is left as it is
    (zero) instead of being divided by zero, which would give NaN as ``geoopt.Sphere.projx`` does. The
    drift metrics then report it at distance 1 from the manifold, which is the truth.

    >>> project_oblique(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
    tensor([[0.6000, 0.8000],
            [0.0000, 0.0000]])
    """
    f = filter_matrix(weight)
    norms = torch.linalg.vector_norm(f, dim=1, keepdim=True)  # (C_out, 1)
    return (f / norms.clamp_min(eps)).view_as(weight)


@torch.no_grad()
def project_oblique_(
    weights: Iterable[torch.Tensor | Target | tuple[torch.Tensor, Layout]], eps: float = EPS
) -> None:
    """Project every filter of every weight onto the unit sphere, in place.

    ``weights``: tensors (their filters are the rows of ``W.reshape(C_out, -1)``), :class:`Target` s (their
    filters are read and written through the target's layout: a transposed convolution's output filters,
    the columns of a ``Conv1D``) or ``(tensor, layout)`` pairs (a parametrization's weight-shaped
    ``original``, read through its layer's layout). A filter matrix that is a view of the weight is scaled
    in place; any other is scaled and written back.
    """
    for item in weights:
        if isinstance(item, Target):
            w, layout = item.weight, item.layout
        else:
            w, layout = item if isinstance(item, tuple) else (item, ROWS)
        f = layout.filters(w)
        norms = torch.linalg.vector_norm(f, dim=1, keepdim=True)  # (n, 1)
        if f.untyped_storage().data_ptr() == w.untyped_storage().data_ptr():
            f.div_(norms.clamp_min(eps))  # f is a view of w
        else:
            w.copy_(layout.weight(f / norms.clamp_min(eps), w.shape))


def worst_gram_deviation(blocks: Iterable[tuple[str, torch.Tensor]]) -> tuple[float, str]:
    """The largest ``max |GGᵀ − I|`` over named matrices ``G`` (``GᵀG`` when tall: the smaller Gram), in
    float64, read in one transfer: ``(worst, name)``; ``(nan, name)`` for the first matrix that is not finite;
    ``(0.0, "")`` for none. What the checks of the Stiefel promises measure (ONI/OLM per group over their
    scale, ``stiefel-rsgd`` per group, ``parseval``'s polar variant per layer).

    >>> worst_gram_deviation([("a", torch.eye(2, 3)), ("b", torch.tensor([[2.0, 0.0]]))])
    (3.0, 'b')
    """
    names, devs = [], []
    for name, g in blocks:
        g = g.double()
        gram = g @ g.mT if g.shape[0] <= g.shape[1] else g.mT @ g
        devs.append((gram - torch.eye(len(gram), dtype=gram.dtype, device=gram.device)).abs().max())
        names.append(name)
    values = torch.stack([d.to(devs[0].device) for d in devs]).tolist() if devs else []
    worst, where = 0.0, ""
    for name, dev in zip(names, values, strict=True):
        if not math.isfinite(dev):
            return math.nan, name
        if dev >= worst:
            worst, where = dev, name
    return worst, where


def drift(weight: torch.Tensor) -> dict[str, float]:
    """The four drift metrics of one weight (see the module docstring), as Python floats.

    Computed in float64 whatever the weight's dtype (:func:`drift_terms`, then one transfer).

    >>> d = drift(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    >>> d["norm_dev_mean"], d["norm_dev_max"], round(d["ddiag_dev"], 4), d["offdiag_dev"]
    (0.5, 1.0, 2.1213, 0.0)
    """
    return _metrics(drift_terms(weight).tolist())


def drift_terms(weight: torch.Tensor) -> torch.Tensor:
    """The drift metrics of one weight as a float64 tensor ``(4,)`` on the weight's device, so nothing
    waits for the device until they are read: ``norm_dev_mean``, ``norm_dev_max``, ``ddiag_dev`` and the
    *square* of ``offdiag_dev`` (its root is taken on the host, correctly rounded, by :func:`drift` and
    :func:`drift_record`; torch's float64 ``sqrt`` is not always). Note [exact offdiag] above.
    """
    f = filter_matrix(weight.detach()).to(torch.float64)  # (n, p)
    n, p = f.shape
    sq = (f * f).sum(dim=1)  # r_i², (n,)
    dev = (sq.sqrt() - 1).abs()
    if n == 1:
        off_sq = torch.zeros((), dtype=f.dtype, device=f.device)
    elif n <= p:  # the off-diagonal entries of FFᵀ themselves
        gram = f @ f.T  # (n, n)
        gram.diagonal().zero_()
        off_sq = gram.square().sum() / (n * (n - 1))
    else:  # tall: ‖FFᵀ‖²_F = ‖FᵀF‖²_F from the smaller Gram matrix, (p, p); no cancellation (n > p)
        gram = f.T @ f
        off_sq = (gram.square().sum() - sq.square().sum()).clamp_min(0.0) / (n * (n - 1))
    return torch.stack([dev.mean(), dev.max(), (sq - 1).square().mean().sqrt(), off_sq])


def _metrics(terms: list[float]) -> dict[str, float]:
    """:func:`drift_terms` read back: the four metrics by name."""
    mean, worst, ddiag, off_sq = terms
    return dict(zip(DRIFT_KEYS, (mean, worst, ddiag, math.sqrt(off_sq)), strict=True))


def targeted_modules(model: nn.Module, targets: str = "conv", exclude=None) -> list[Target]:
    """The parameters a method acts on (:func:`oblique.layers.resolve_targets`), in model order, each once.

    ``"conv"`` selects the weight of every ``Conv1d/2d/3d``; ``"conv+linear"`` adds every ``nn.Linear``;
    :mod:`oblique.layers` lists every kind. Biases and normalization parameters are never targeted.

    Raises:
        oblique.options.OptionError: on an unknown ``targets`` value.
    """
    return resolve_targets(model, targets, exclude)


def mean_drift(per_layer: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean over layers of each drift metric (the aggregate of docs/DESIGN.md, "Drift metrics")."""
    if not per_layer:
        return {k: float("nan") for k in DRIFT_KEYS}
    return {k: sum(d[k] for d in per_layer.values()) / len(per_layer) for k in DRIFT_KEYS}


def model_drift(
    model: nn.Module,
    targets: str = "conv",
    weights: Mapping[str, torch.Tensor] | None = None,
) -> dict:
    """Drift of every targeted layer and their mean: ``{"layers": {name: dict}, "mean": dict}``.

    Args:
        model: the network.
        targets: which layers (:mod:`oblique.layers`): ``"conv"``, ``"conv+linear"``, ``"all"``, ...
        weights: the effective filter matrices by layer name (what ``Method.effective_filters`` returns), or
            weights whose filters are the rows of ``W.reshape(C_out, -1)``. When omitted, the filters of every
            targeted parameter as the forward pass uses it (a parametrization's value) are read through its
            layout.
    """
    return drift_record(model_drift_tensor(model, targets, weights))


def model_drift_tensor(
    model: nn.Module,
    targets: str = "conv",
    weights: Mapping[str, torch.Tensor] | None = None,
) -> tuple[list[str], torch.Tensor | None]:
    """The layer names and their :func:`drift_terms` stacked ``(layers, 4)`` (float64, on the device): what
    :func:`model_drift` reads in one transfer (:func:`drift_record`). ``None`` for a model without
    targeted layers."""
    if weights is None:
        with torch.no_grad():
            weights = {t.name: t.filters() for t in targeted_modules(model, targets)}
    names = list(weights)
    if not names:
        return names, None
    devices = {w.device for w in weights.values()}
    rows = [drift_terms(w) for w in weights.values()]
    if len(devices) > 1:  # pragma: no cover - a model split over devices
        rows = [row.cpu() for row in rows]
    return names, torch.stack(rows)


def drift_record(drift: tuple[list[str], torch.Tensor | None], values: list | None = None) -> dict:
    """``{"layers": {name: dict}, "mean": dict}`` from :func:`model_drift_tensor`'s result; ``values``: its
    tensor already read (``.tolist()``), e.g. with other numbers in one transfer."""
    names, table = drift
    if values is None:
        values = table.tolist() if table is not None else []
    layers = {name: _metrics(row) for name, row in zip(names, values, strict=True)}
    return {"layers": layers, "mean": mean_drift(layers)}
