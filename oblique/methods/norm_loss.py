"""Norm Loss: a soft pull of every filter toward unit norm, i.e. toward the oblique manifold.

Georgiou, Schmitt, Chen, Bäck, Lew, "Norm Loss: An efficient yet effective regularization method for deep
neural networks", ICPR 2020 (arXiv 2103.06583).

For the filter matrix ``F`` of every targeted weight (one row per filter):

- eq. 1: ``L_nl = Σ_i (1 − ‖F_i‖)²``, summed over filters, then over targeted layers;
- eq. 2: ``L_total = L_target + λ_nl · L_nl``;
- eq. 6: ``∂L_nl/∂w = 2 w (1 − 1/‖F_i‖)`` for every entry ``w`` of filter ``i``.

Two forms, picked by the ``form`` hyperparameter, give the same training trajectory (tested to 1e-8 in
float64 over 20 SGD steps):

- ``"autograd"``: :func:`norm_loss` is added to the loss and differentiated by autograd.
- ``"closed"`` (default): eq. 6 is added straight to ``.grad`` after ``backward``, for all targeted weights
  at once with multi-tensor, in-place ops, no autograd graph and no device sync (:class:`FusedNormLossGrad`,
  built once per model; :func:`add_norm_loss_grad_` is its one-shot form). On ResNet-110's conv weights
  on the CPU it costs about 2–3× one ``torch._foreach_norm`` pass over them (``oblique bench``).
  ``NormLoss.last_value`` (logging) is kept as a 0-d tensor and turned into a float only when read.

Note [zero filter in Norm Loss]: a filter with ``‖F_i‖ = 0`` contributes ``(1 − 0)² = 1`` to the loss and a gradient of
*zero* in both forms (eq. 6's ``1/‖F_i‖`` is replaced by ``1/max(‖F_i‖, ε)``, and the autograd form uses
the same clamped norm in its backward). A dead filter stays dead, as it would under any first-order
method; no NaN ever enters the weights.

Differences from the authors' code: the targeted layers are explicit (``targets``: conv, or conv and
linear; biases and normalization parameters are never touched), and the closed form is fused.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from oblique.geometry import EPS, filter_matrix, targeted_modules
from oblique.layers import ROWS, Target
from oblique.methods.base import CostTarget, Hyper, Method

__all__ = ["FusedNormLossGrad", "NormLoss", "add_norm_loss_grad_", "norm_loss"]


class _ClampedRowNorm(torch.autograd.Function):
    """Row norms of a filter matrix whose backward uses ``max(‖F_i‖, ε)``: zero gradient at a zero row."""

    @staticmethod
    def forward(ctx, f: torch.Tensor) -> torch.Tensor:
        r = torch.linalg.vector_norm(f, dim=1)  # (n,)
        ctx.save_for_backward(f, r)
        return r

    @staticmethod
    def backward(ctx, grad_r: torch.Tensor) -> torch.Tensor:
        f, r = ctx.saved_tensors
        return f * (grad_r / r.clamp_min(EPS)).unsqueeze(1)  # (n, p)


def _weights(model_or_weights: nn.Module | Iterable[torch.Tensor], targets: str) -> list[torch.Tensor]:
    if isinstance(model_or_weights, nn.Module):  # the filter matrices, through each layer's layout
        return [t.filters() for t in targeted_modules(model_or_weights, targets)]
    return list(model_or_weights)


def norm_loss(model_or_weights: nn.Module | Iterable[torch.Tensor], targets: str = "conv") -> torch.Tensor:
    """Norm Loss, eq. 1: ``Σ_layers Σ_i (1 − ‖F_i‖)²``; differentiable by autograd (eq. 6).

    .. math:: L_{nl} = \\sum_{l} \\sum_{i} \\left(1 - \\lVert F^{(l)}_i \\rVert_2\\right)^2

    Args:
        model_or_weights: a model (the filter matrices of its targeted parameters are used, each once) or an
            iterable of weights whose filters are the rows of ``W.reshape(C_out, -1)`` (or filter matrices).
        targets: which layers (:mod:`oblique.layers`), when a model is given.

    Returns:
        A scalar tensor (not multiplied by any strength).

    >>> norm_loss([torch.tensor([[3.0, 4.0], [0.6, 0.8]])])
    tensor(16.)
    """
    ws = _weights(model_or_weights, targets)
    if not ws:
        return torch.zeros(())
    terms = [(1 - _ClampedRowNorm.apply(filter_matrix(w))).square().sum() for w in ws]
    return torch.stack(terms).sum()


class _Bucket:
    """The targeted weights of one dtype and device, with the preallocated buffers of the fused step."""

    def __init__(self, weights: list[torch.Tensor], gather: bool):
        # the per-layer path keeps filter matrices as *views* of the weights: only a contiguous weight has one
        # (a channels_last or transposed weight would give a stale copy), so such weights are gathered
        gather = gather or not all(w.is_contiguous() for w in weights)
        groups: dict[tuple, list[torch.Tensor]] = {}
        for w in weights:
            groups.setdefault(tuple(w.shape[1:]), []).append(w)
        self.weights = [w for ws in groups.values() for w in ws]  # grouped by shape after dim 0
        ref = self.weights[0]
        self.ptr = ref.data_ptr()
        rows = [w.shape[0] for w in self.weights]
        self.norms = torch.empty(sum(rows), dtype=ref.dtype, device=ref.device)  # ‖F_i‖ of every filter
        self.coef = torch.empty_like(self.norms)  # 2λ(1 − 1/max(‖F_i‖, ε)) of every filter
        self.norm_views = list(self.norms.split(rows))  # (C_out,) per layer
        # (C_out, 1, …): broadcasts over each filter in the multi-tensor multiply-add
        self.coef_views = [
            c.view(-1, *([1] * (w.dim() - 1)))
            for c, w in zip(self.coef.split(rows), self.weights, strict=True)
        ]
        self.gather = gather
        if gather:  # one buffer per group: (N_group, *tail), its pieces shaped like the group's weights
            self.groups = []
            start = 0
            for tail, ws in groups.items():
                n = sum(w.shape[0] for w in ws)
                buf = torch.empty(n, *tail, dtype=ref.dtype, device=ref.device)
                pieces = [v.view_as(w) for v, w in zip(buf.split([w.shape[0] for w in ws]), ws, strict=True)]
                self.groups.append(
                    (ws, buf, self.norms[start : start + n], self.coef[start : start + n], pieces)
                )
                start += n
        else:  # the filter matrix of every weight, a view: (C_out, C_in·k…)
            with torch.no_grad():
                self.matrices = [filter_matrix(w) for w in self.weights]

    def is_current(self) -> bool:
        ref = self.weights[0]
        return (
            ref.dtype == self.norms.dtype and ref.device == self.norms.device and ref.data_ptr() == self.ptr
        )


class FusedNormLossGrad:
    """Eq. 6 for a fixed list of weights, fused: multi-tensor, in-place ops, no autograd graph, no sync.

    The weights are bucketed by dtype and device. Per step and bucket: the row norms of every filter are
    written into one preallocated vector; the per-filter coefficients ``2λ(1 − 1/max(‖F_i‖, ε))`` are
    computed for the whole bucket by four in-place ops; one ``torch._foreach_addcmul_`` adds ``coef_i · w``
    to every gradient (the coefficient views are shaped ``(C_out, 1, …)`` and broadcast). Nothing is
    allocated per step but the 0-d loss value, and nothing waits for the device: :meth:`__call__` returns
    eq. 1 as a tensor.

    The row norms are taken in one of two ways (``gather``):

    - ``False`` (the default on the CPU): one ``linalg.vector_norm(out=…)`` per layer on its filter-matrix
      view. Each is small, so it runs on one thread: no extra pass over the weights, and no parallel region
      to wait for on a busy machine (measured on ResNet-110, 2 cores under load: a gathered, 2-thread pass
      cost 5× more than the per-layer norms).
    - ``True`` (the default on CUDA, where every kernel launch counts): the weights of every group of equal
      shape after the first dimension (every ``(·, 64, 3, 3)`` conv of ResNet-110) are gathered by one
      ``torch.cat(out=…)`` into a preallocated ``(N, *tail)`` buffer, one ``vector_norm`` gives all its
      row norms, the buffer is scaled by the coefficients in place and added to the gradients by one
      ``torch._foreach_add_`` (same shapes: the multi-tensor fast path): a few launches per group.

    Args:
        weights: the targeted weights (leaf tensors, at least 2-D). Their identity, shapes, dtype, device
            and storage are fixed at construction (:meth:`is_current` says whether they still are).
        others: targets whose filters are not the rows of the weight (:mod:`oblique.layers`: a transposed
            convolution, a ``Conv1D``): eq. 6 is computed for each on its own, through its layout, and
            written back into its gradient.
        gather: how to take the row norms (above); ``None`` picks by device.
    """

    def __init__(
        self, weights: Sequence[torch.Tensor], others: Sequence[Target] = (), gather: bool | None = None
    ):
        self.weights = list(weights)
        self.others = list(others)
        by_device: dict[tuple, list[torch.Tensor]] = {}
        for w in self.weights:
            filter_matrix(w)  # validates: at least 2-D
            by_device.setdefault((w.dtype, w.device), []).append(w)
        self.buckets = [
            _Bucket(ws, gather if gather is not None else device.type != "cpu")
            for (_, device), ws in by_device.items()
        ]
        self._other_ptrs = [t.weight.data_ptr() for t in self.others]

    def is_current(self) -> bool:
        """Whether the weights still have the dtype, device and storage they had at construction
        (``model.to(…)`` gives a parameter new data)."""
        return all(b.is_current() for b in self.buckets) and all(
            t.weight.data_ptr() == p for t, p in zip(self.others, self._other_ptrs, strict=True)
        )

    def workspace_tensors(self) -> list[torch.Tensor]:
        """The preallocated buffers, for a memory account (``oblique bench``): every bucket's row norms and
        coefficients, and with ``gather`` its gathered ``(N_group, *tail)`` buffers (the per-layer filter
        matrices are views of the weights: not a workspace)."""
        out = []
        for b in self.buckets:
            out += [b.norms, b.coef, *(buf for _, buf, _, _, _ in (b.groups if b.gather else ()))]
        return out

    @torch.no_grad()
    def __call__(self, strength: float) -> torch.Tensor:
        """Add ``strength · ∂L_nl/∂w`` (eq. 6) to every weight's ``.grad``; return eq. 1 as a 0-d tensor."""
        values = []
        for b in self.buckets:
            grads = [w.grad for w in b.weights]
            if any(g is None for g in grads):
                for w in b.weights:
                    if w.grad is None:
                        w.grad = torch.zeros_like(w)
                grads = [w.grad for w in b.weights]
            if b.gather:
                for ws, buf, r, _, _ in b.groups:
                    torch.cat(ws, out=buf)  # (N_group, *tail)
                    torch.linalg.vector_norm(buf.view(buf.shape[0], -1), dim=1, out=r)  # (N_group,)
            else:
                for f, r in zip(b.matrices, b.norm_views, strict=True):
                    torch.linalg.vector_norm(f, dim=1, out=r)  # (C_out,)
            # coefficient per filter: 2λ(1 − 1/max(r, ε))   (eq. 6; Note [zero filter in Norm Loss])
            torch.clamp_min(b.norms, EPS, out=b.coef).reciprocal_().sub_(1.0).mul_(-2.0 * strength)
            if b.gather:
                pieces = []
                for _, buf, _, c, ps in b.groups:
                    buf.mul_(c.view(-1, *([1] * (buf.dim() - 1))))  # coef_i · w, (N_group, *tail)
                    pieces += ps
                torch._foreach_add_(grads, pieces)
            else:
                torch._foreach_addcmul_(grads, b.weights, b.coef_views)
            values.append(torch.sub(b.norms, 1.0).square_().sum())  # eq. 1 over the bucket
        for t in self.others:  # eq. 6 through the layout: coef_i · F_i written back in the weight's shape
            w = t.weight
            f = t.layout.filters(w)  # (n, p)
            r = torch.linalg.vector_norm(f, dim=1)  # (n,)
            coef = r.clamp_min(EPS).reciprocal().sub_(1.0).mul_(-2.0 * strength)
            step = t.layout.weight(f * coef.unsqueeze(1), w.shape)
            if w.grad is None:
                w.grad = step
            else:
                w.grad.add_(step)
            values.append(r.sub(1.0).square_().sum().to(values[0].device if values else r.device))
        if not values:
            return torch.zeros(())
        return values[0] if len(values) == 1 else torch.stack([v.cpu() for v in values]).sum()


@torch.no_grad()
def add_norm_loss_grad_(weights: Sequence[torch.Tensor], strength: float) -> float:
    """Add ``strength · ∂L_nl/∂w`` (eq. 6) to every weight's ``.grad`` in place; return ``L_nl``.

    .. math:: \\frac{\\partial L_{nl}}{\\partial w} = 2 w \\left(1 - \\frac{1}{\\lVert F_i \\rVert}\\right)

    A weight without a gradient gets one (zeros plus the Norm Loss term). No autograd graph is built. This
    builds a :class:`FusedNormLossGrad` for ``weights`` and calls it once; :class:`NormLoss` keeps one per
    model and does not wait for the value.

    Args:
        weights: the targeted weights (leaf tensors).
        strength: λ_nl.

    Returns:
        The value of eq. 1 over ``weights`` (without the strength), as a float.

    >>> w = torch.tensor([[3.0, 4.0]], requires_grad=True)
    >>> add_norm_loss_grad_([w], 0.5), w.grad
    (16.0, tensor([[2.4000, 3.2000]]))
    """
    if not weights:
        return 0.0
    return FusedNormLossGrad(weights)(strength).item()


class NormLoss(Method):
    """Norm Loss (``nl``): eq. 1 times the strength, added to the loss (eq. 2)."""

    name = "nl"
    kind = "soft"
    manifold = "oblique"
    summary = "Norm Loss: λ·Σ_i (1 − ‖F_i‖)², a soft pull of every filter toward unit norm"
    paper = "Georgiou et al., ICPR 2020"
    aims_at = "oblique, softly"
    formula = "λ·Σᵢ(1 − ‖Fᵢ‖)² (eq. 1); gradient 2w(1 − 1/‖Fᵢ‖) (eq. 6)"
    differences = (
        "eq. 6 added straight to `.grad`, fused over all layers (no autograd graph); the "
        "autograd form is an option and gives the same trajectory; a zero filter gets gradient "
        "0, never NaN"
    )
    color, marker, linestyle = "#332288", "^", "-"
    cost_target = CostTarget("foreach_norm_floor", overhead_pct=1.0, ratio=4.0, when=(("form", "closed"),))
    cost_note = "fused eq. 6 in before_step: per-filter norms + one multi-tensor multiply-add"
    default_strength = 1e-2
    uses_strength = True
    hyperparameters = (
        Hyper(
            "form",
            "closed",
            "closed: eq. 6 added to .grad with multi-tensor ops; autograd: eq. 1 added to the loss",
            choices=("closed", "autograd"),
        ),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._value: torch.Tensor | None = None  # eq. 1 at the last step, not yet read
        self._fused: FusedNormLossGrad | None = None
        self._fused_model: weakref.ref | None = None

    @property
    def last_value(self) -> float | None:
        """Value of eq. 1 at the last step where it was computed (for logging); ``None`` before.

        Kept as a tensor and turned into a float only when read, so a step never waits for the device.
        """
        return None if self._value is None else self._value.item()

    def regularizer_value(self) -> torch.Tensor | None:
        """Eq. 1 at the last step as a 0-d tensor (no device sync), or None before the first step."""
        return self._value

    def fused(self, model: nn.Module) -> FusedNormLossGrad:
        """The fused eq. 6 for ``model``'s targeted weights; built once per model, rebuilt if they change
        dtype or device. The layers are found once: a model whose targeted layers are replaced later
        needs a new method object."""
        plan = self._fused
        if (
            plan is None
            or self._fused_model is None
            or self._fused_model() is not model
            or not plan.is_current()
        ):
            found = self.target_modules(model)
            plan = self._fused = FusedNormLossGrad(
                [t.weight for t in found if t.layout == ROWS], [t for t in found if t.layout != ROWS]
            )
            self._fused_model = weakref.ref(model)
        return plan

    def __getstate__(self) -> dict:
        # the fused plan holds views of one model's weights: a copy (deepcopy, pickle) builds its own
        return {**super().__getstate__(), "_fused": None, "_fused_model": None}

    def prepare(self, model: nn.Module) -> nn.Module:
        self._fused = None
        return model

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        if self.hp["form"] != "autograd" or self.strength == 0:
            return None
        value = norm_loss([t.filters() for t in self.target_modules(model)])
        self._value = value.detach()
        return self.strength * value

    def before_step(self, model: nn.Module) -> None:
        if self.hp["form"] == "closed" and self.strength > 0:
            self._value = self.fused(model)(self.strength)

    def analytic_flops(self, model: nn.Module) -> float:
        # row norms (2 flops/entry) + gradient axpy (2 flops/entry) + per-filter scalars
        p = sum(w.numel() for w in self.target_weights(model))
        return 4.0 * p
