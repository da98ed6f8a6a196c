"""Forced weight normalization: the forward pass normalizes every filter, and the stored weight is put back
on the unit sphere after every step.

Karras, Aittala, Lehtinen, Hellsten, Aila, Laine, "Analyzing and Improving the Training Dynamics of
Diffusion Models", CVPR 2024 (arXiv 2312.02696; EDM2), sec. 2.3 and Appendix B.2 (``MPConv`` in
``training/networks_edm2.py`` of github.com/NVlabs/edm2). For the filter matrix ``F = t.filters(v)`` of a
stored weight ``v`` (``n × p``, read through the layer's layout) the forward pass computes with

.. math:: w_i = g \\cdot v_i / \\lVert v_i \\rVert   \\qquad \\text{(every filter } i\\text{; gain } g = 1 \\text{ by default)},

and after every optimizer step the stored filters are projected back, ``v_i ← v_i / ‖v_i‖`` (once at
:meth:`FWN.prepare` too). With ``g = 1`` every effective filter has unit norm: the weights lie exactly on
the oblique manifold.

Note [why force the norm]: the gradient through ``v/‖v‖`` is ``(I − u uᵀ) ḡ / ‖v‖`` (``u = v/‖v‖``): tangent to
the sphere, so an SGD step ``v ← v − η∇`` moves ``v`` along the tangent plane and its norm *grows*,
``‖v'‖² = ‖v‖² + η²‖∇‖²``. Under plain weight normalization (``wn`` with ``g`` frozen) nothing brings it back,
and the effective (angular) step ``η‖∇‖/‖v‖ ∝ η/‖v‖²`` shrinks as training goes: an implicit learning-rate
decay that depends on the gradients' history. Forcing ``‖v_i‖ = 1`` after every step keeps the angular step
at ``η‖ḡ_⊥‖``, set by the learning rate alone (EDM2, sec. 2.3: "forced weight normalization").

Two implementations, picked by the ``impl`` hyperparameter, train the same trajectory (tested to 1e-12 in
float64 over 20 steps with momentum):

- ``"fused"`` (default; gain 1): plain layers, the gradient projected onto the tangent space (Note [fused
  forced normalization]);
- ``"parametrize"``: the reference, the forward pass normalizing as EDM2's does, for any gain.

Note [fused forced normalization]: the stored filters have unit norm at every forward pass (projected at
prepare and after every step, and nothing else moves them), so ``v_i/‖v_i‖ = v_i`` there and the forward
pass can compute with ``v`` itself; what the normalization still does is the gradient: at ``‖v_i‖ = 1`` it
is ``ḡ_i − v_i⟨v_i, ḡ_i⟩``, the tangent projection. So ``fused`` keeps the layers plain and, in
``before_step``, projects each filter's gradient onto the tangent space (a zero filter's gradient to zero,
Note [fwn zero filter]), then renormalizes after the step: a few in-place operations per layer, no
parametrization, no autograd graph (the step overhead of the parametrization, computed per layer, was
10–18 % of ResNet-110's step on the CPU; the fused form's is 1.5 %). The optimizer sees exactly the
gradient the parametrization would give it — unless something between the backward pass and
``before_step`` reads the gradient: a loop that clips gradients there (the Hugging Face ``Trainer`` with
``max_grad_norm``) clips the fused form's Euclidean gradient, radial part included, and the parametrized
form's tangent one, so the two then differ (``impl=parametrize`` where that matters). With a gain ``g ≠ 1`` the two would differ (the gradient of
``g·v/‖v‖`` is ``g`` times the tangent one, and the stored norm would have to be ``g``), so ``fused``
takes gain 1 only.

The parametrization (:class:`ForcedWeightNorm`, ``torch.nn.utils.parametrize``) computes ``w`` through the
layer's layout (a transposed convolution's output filters, a ``Conv1D``'s columns), as ``wn``'s
:class:`~oblique.methods.weight_norm.LayoutWeightNorm` does; its ``right_inverse`` normalizes, so
assigning ``module.weight = W`` stores ``W``'s directions and a ``state_dict``
(``parametrizations.weight.original``, the stored ``v``) loads into a freshly prepared model.

Note [fwn zero filter]: a filter with ``‖v_i‖ = 0`` has no direction. Where ``wn`` gives NaN, here it computes
as zero and gets gradient zero (a ``torch.where`` on the norm, no host sync), and the projection leaves it
zero (Note [zero filter] in :mod:`oblique.geometry`): it stays a zero filter, and the drift reports it at
distance 1. A freshly initialized layer has none.

Differences from ``wn`` and ``pbwn``:

- ``wn`` with ``g=frozen`` computes the same forward pass and the same gradient, but lets ``‖v‖`` grow, so
  its effective learning rate decays (Note [why force the norm]); ``fwn`` resets ``‖v_i‖`` to 1 after every
  step.
- ``pbwn`` projects after every step too, but its forward pass uses the stored weight itself: its gradient
  is the Euclidean one, with a radial part the projection then discards (and the momentum buffer keeps).
  ``fwn``'s gradient goes through ``v/‖v‖`` and is tangent to the sphere, so the optimizer (and its
  momentum) only ever sees tangent directions.

Differences from upstream (EDM2's ``MPConv``):

- **Where the reset happens.** EDM2 overwrites the stored weight inside the training-mode forward pass
  (``self.weight.copy_(normalize(w))`` under ``torch.no_grad()``, before computing with it), so the reset
  happens once per forward, also for forward passes that are not followed by a step. Here it happens in
  :meth:`FWN.after_step` (and once at :meth:`FWN.prepare`), through the one interface every method
  speaks: the forward pass never writes a parameter (it stays valid under ``torch.compile``, DDP and
  evaluation), and the weights at every forward pass are the same as EDM2's, since nothing else moves them
  between a step and the next forward.
- **The stored norm.** EDM2's ``normalize`` gives every stored filter RMS 1 (norm ``√fan_in``) and the
  forward pass multiplies by ``gain/√fan_in``; here the stored filter has norm 1 and the forward pass
  multiplies by ``gain``. The effective weight is the same; the angular step of a given learning rate is
  not (``∝ η/‖v‖²`` for SGD; for Adam, whose step is ``≈ η`` per entry, ``∝ η/RMS(v)``): to match EDM2's Adam
  steps, scale ``η`` by ``1/√fan_in``.
- **ε.** EDM2 divides by ``ε + ‖v_i‖/√fan_in`` (``ε = 10⁻⁴``), so its effective filters have norm
  ``1/(1 + 10⁻⁴)``; here by ``‖v_i‖`` itself (zero filters aside, Note [fwn zero filter]), so they lie on the
  oblique manifold to rounding.
- **Which layers.** EDM2 uses it for every convolution and linear layer of its U-Net (``MPConv``); here the
  targets are the toolkit's (``conv`` by default).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.utils import parametrize

from oblique.geometry import EPS, project_oblique_
from oblique.layers import Layout
from oblique.methods.base import CostTarget, Hyper, Method, full_precision
from oblique.options import OptionError

__all__ = ["FWN", "ForcedWeightNorm"]


class _UnitRows(torch.autograd.Function):
    """``F ↦ g · F_i/‖F_i‖`` row by row (a zero row ↦ 0), with the backward in closed form.

    Note [fwn backward]: with ``r_i = ‖F_i‖`` and ``s_i = g/r_i``, the gradient is
    ``∂L/∂F_i = s_i (ḡ_i − F_i ⟨F_i, ḡ_i⟩ / r_i²)``: one row-wise dot product and one multiply-add over the
    filter matrix, three passes, where autograd through the norm, the division and the product takes about
    eight (measured on ResNet-110 on the CPU: the parametrization's forward and backward 3–5× faster than
    through autograd). A zero row (``r_i ≤ EPS``) gets ``s_i = 0`` and gradient zero (Note [fwn zero filter])."""

    @staticmethod
    def forward(ctx, f: torch.Tensor, gain: float) -> torch.Tensor:
        r = torch.linalg.vector_norm(f, dim=1, keepdim=True)  # (n, 1)
        live = r > EPS
        s = torch.where(live, gain / r.clamp_min(EPS), torch.zeros_like(r))  # (n, 1)
        ctx.save_for_backward(f, r, s, live)
        return f * s

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        f, r, s, live = ctx.saved_tensors
        dot = torch.linalg.vecdot(f, grad, dim=1).unsqueeze(1)  # ⟨F_i, ḡ_i⟩, (n, 1)
        k = torch.where(live, dot / r.clamp_min(EPS).square(), torch.zeros_like(dot))
        return torch.addcmul(grad, f, k, value=-1).mul_(s), None


class ForcedWeightNorm(nn.Module):
    """Parametrization ``v → layout.weight(g · F_i(v)/‖F_i(v)‖)``: the filters a :class:`~oblique.layers.Layout`
    reads, normalized, times the gain ``g``; a zero filter computes as zero (Note [fwn zero filter])."""

    def __init__(self, layout: Layout, gain: float = 1.0):
        super().__init__()
        self.layout = layout
        self.gain = float(gain)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        with full_precision():
            return self.layout.weight(_UnitRows.apply(self.layout.filters(v), self.gain), v.shape)

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        """The stored ``v`` for an effective weight: its filters' directions (unit norm; zero stays zero)."""
        f = self.layout.filters(weight)
        norm = torch.linalg.vector_norm(f, dim=1, keepdim=True)
        return self.layout.weight(f / norm.clamp_min(EPS), weight.shape)


class FWN(Method):
    """``fwn``: forward ``w_i = g·v_i/‖v_i‖`` per filter, and ``v_i ← v_i/‖v_i‖`` after every step (EDM2)."""

    name = "fwn"
    kind = "reparam"
    manifold = "oblique"
    summary = (
        "forced weight normalization (EDM2): forward w_i = v_i/‖v_i‖, and v_i ← v_i/‖v_i‖ after every step"
    )
    paper = "Karras et al., CVPR 2024 (EDM2)"
    aims_at = "oblique, exactly (gain 1)"
    formula = "wᵢ = g·vᵢ/‖vᵢ‖; after each step vᵢ ← vᵢ/‖vᵢ‖"
    differences = (
        "reset in after_step and at prepare, not in the training forward; stored filters of norm 1, not RMS 1; "
        "no ε in the norm; fused by default: the forward pass computes with the (unit) stored filters and "
        "their gradient is projected onto the tangent space, the same trajectory as the parametrization "
        "(`impl=parametrize`, EDM2's forward, any gain); vs `wn` (g frozen): ‖v‖ reset, so no learning-rate "
        "decay; vs `pbwn`: tangent gradient"
    )
    color, marker, linestyle = "#0077bb", ">", (0, (2, 1))
    cost_note = "the gradient's tangent projection per filter before the step, the norms reset after it"
    cost_target = CostTarget("overhead", overhead_pct=5.0)
    hyperparameters = (
        Hyper(
            "gain",
            1.0,
            "the effective filters' norm g (EDM2's gain; 1: exactly on the oblique manifold)",
            minimum=0.0,
            maximum=1e6,
        ),
        Hyper(
            "impl",
            "fused",
            "fused (plain layers, the gradient projected onto the tangent space; gain 1) or parametrize "
            "(the forward pass normalizes, EDM2's way; any gain)",
            choices=("fused", "parametrize"),
        ),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.hp["impl"] == "fused" and self.hp["gain"] != 1.0:
            raise OptionError(
                f"fwn: gain {self.hp['gain']:g} needs impl=parametrize (the fused form computes with the unit "
                f"filters themselves, gain 1)",
                settings=("hp",),
            )

    @property
    def replaces_weights(self) -> bool:  # the parametrization replaces them; the fused form keeps them
        return self.hp["impl"] == "parametrize"

    def prepare(self, model: nn.Module) -> nn.Module:
        if self.hp["impl"] == "fused":
            project_oblique_(self.target_modules(model))  # unit filters at the first forward pass
            return model
        for t in self.target_modules(model):  # right_inverse stores unit filters: projected once here
            parametrize.register_parametrization(
                t.module, t.param, ForcedWeightNorm(t.layout, self.hp["gain"])
            )
        return model

    @torch.no_grad()
    def before_step(self, model: nn.Module) -> None:
        """``fused``: every filter's gradient projected onto the tangent space at its (unit) filter,
        ``ḡ_i ← ḡ_i − v_i⟨v_i, ḡ_i⟩``, and a zero filter's set to zero (Note [fused forced normalization])."""
        if self.hp["impl"] != "fused":
            return
        for t in self.target_modules(model):
            v = t.weight
            if v.grad is None:
                continue
            f, g = t.layout.filters(v), t.layout.filters(v.grad)  # (n, p) each
            live = torch.linalg.vector_norm(f, dim=1, keepdim=True) > EPS  # (n, 1)
            tangent = torch.addcmul(g, f, torch.linalg.vecdot(f, g, dim=1).unsqueeze(1), value=-1).mul_(live)
            if g.untyped_storage().data_ptr() == v.grad.untyped_storage().data_ptr():
                g.copy_(tangent)  # g is a view of the gradient
            else:
                v.grad.copy_(t.layout.weight(tangent, v.shape))

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        targets = self.target_modules(model)
        if self.hp["impl"] == "fused":
            project_oblique_(targets)
        else:  # the stored v, read through its layer's layout
            project_oblique_((t.parametrizations.original, t.layout) for t in targets)

    def describe_cost(self) -> str:
        """Where the cost goes, for the implementation in use (``oblique bench``'s last column)."""
        if self.hp["impl"] == "parametrize":
            return "per-filter norm and scale of v (forward + backward), and v's norms reset after the step"
        return super().describe_cost()

    def promise(self) -> str:
        """``"oblique"`` with gain 1 (every effective filter ``v_i/‖v_i‖``); nothing exact with another gain."""
        return "oblique" if self.hp["gain"] == 1.0 else ""

    def target_weights(self, model: nn.Module) -> list[torch.Tensor]:
        """The stored ``v`` of every targeted layer (the weight itself when fused;
        ``parametrizations.weight.original`` when parametrized; weight-shaped)."""
        if self.hp["impl"] == "fused":
            return super().target_weights(model)
        return [t.parametrizations.original for t in self.target_modules(model)]

    def analytic_flops(self, model: nn.Module) -> float:
        # forward: row norms (2/entry) + scale (1/entry); backward of g·v/‖v‖: ≈ 5/entry; reset: 3/entry
        return 11.0 * sum(v.numel() for v in self.target_weights(model))
