"""Muon on the filter matrices, the run's other optimizer on the rest: :class:`FilterMuon`, one optimizer.

Muon (Jordan et al., "Muon: an optimizer for hidden layers in neural networks", 2024;
``torch.optim.Muon``, torch >= 2.9) orthogonalizes each *update*: the Nesterov momentum of the gradient,
``n × p``, is run through a quintic Newton–Schulz iteration toward ``U Vᵀ`` of its SVD and the weight moves
by that, times the learning rate. ONI (:mod:`oblique.methods.oni`) runs a Newton iteration of the same family
on the *weights*: Muon keeps the step orthogonal, ONI the filters — the comparison ``oblique run
--optimizer muon`` makes possible for every method that does not bring its own optimizer.

What Muon sees is the *filter matrix* of each targeted weight, read through its layout (docs/DESIGN.md,
"Layer kinds and filter layouts"): ``F = W.reshape(C_out, -1)`` for a convolution or a linear layer —
never a kernel row, never the 4-D tensor (``torch.optim.Muon`` takes 2-D parameters only) —, ``Wᵀ`` for
``transformers``' ``Conv1D``, the per-group slices of a transposed convolution. Where the filter matrix is a
view of the weight (the rows of a contiguous weight, ``Wᵀ``), Muon steps that view and the weight moves
in place. Otherwise (a transposed convolution, a channels-last weight) Muon steps a matrix of its own:
the filter matrix is read into it before each step and written back through the layout
(``layout.weight(F, shape)``) after it. Either way one step is exactly ``torch.optim.Muon``'s on ``F``
with the gradient's filter matrix (``tests/test_muon.py``). A method whose trainable tensor is not the
layer's weight (``wn``'s direction ``v``, ONI's ``Z``) has Muon step that tensor, read through the same
layout.

Its hyperparameters, and why (:func:`filter_muon_defaults`): lr ``0.02`` (``muon_lr``; Keller Jordan's
default, with torch's learning-rate adjustment ``"original"``, ``× sqrt(max(1, n/p))``), momentum 0.95
with Nesterov, 5 Newton–Schulz steps with torch's coefficients, and *no* weight decay: the method under
study is the targets' regularizer. The run's ``lr`` is an SGD or Adam learning rate (0.1 for the ResNets)
and is not reused for Muon, whose step has unit spectral norm whatever the gradient's scale.

Every other parameter — biases, normalization, layers the targets leave out, embeddings unless targeted —
is stepped by ``others``, an ordinary torch optimizer (the model's recipe's SGD, Adam or AdamW, with the
run's lr, momentum and weight decay). :attr:`FilterMuon.param_groups` holds the others' groups, then the
Muon group, whose ``params`` are the trainable tensors themselves: ``zero_grad``, a ``GradScaler``'s
``unscale_``, a learning-rate scheduler (which scales every group's lr, Muon's too) and the step records
(the first group's lr) see the model's parameters; ``state_dict`` holds both parts and ``load_state_dict``
restores them, so a resumed run takes exactly the steps of an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from oblique.layers import Layout
from oblique.options import OptionError

__all__ = ["FilterMuon", "filter_muon_defaults", "muon_class"]

#: Keller Jordan's Muon learning rate (torch's default is 1e-3, for its "original" lr adjustment too).
MUON_LR = 0.02
#: torch.optim.Muon's momentum (and Keller Jordan's).
MUON_MOMENTUM = 0.95


def muon_class() -> type[torch.optim.Optimizer]:
    """``torch.optim.Muon``.

    Raises:
        oblique.options.OptionError: the installed torch has none (it came with torch 2.9); one line,
            naming the ``optimizer`` setting.
    """
    muon = getattr(torch.optim, "Muon", None)
    if muon is None:
        raise OptionError(
            f"optimizer muon needs torch.optim.Muon, which came with torch 2.9; this torch is "
            f"{torch.__version__}: upgrade torch (pip install 'torch>=2.9'), or use sgd, adam or adamw",
            settings=("optimizer",),
        )
    return muon


def filter_muon_defaults(lr: float = MUON_LR, momentum: float = MUON_MOMENTUM) -> dict[str, Any]:
    """The Muon group's hyperparameters (the module docstring says why): ``torch.optim.Muon``'s keywords.

    >>> filter_muon_defaults()["weight_decay"], filter_muon_defaults()["nesterov"]
    (0.0, True)
    """
    return {
        "lr": lr,
        "weight_decay": 0.0,
        "momentum": momentum,
        "nesterov": True,
        "ns_steps": 5,
        "adjust_lr_fn": None,
    }


def _shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


class FilterMuon(torch.optim.Optimizer):
    """``torch.optim.Muon`` on the filter matrices of ``filters``, ``others`` on every other parameter, as
    one optimizer (the module docstring).

    Args:
        filters: ``(tensor, layout)`` pairs: each trainable tensor Muon steps and the layout its filter
            matrix is read through (:class:`oblique.layers.Layout`; a 2-D tensor that is its own filter
            matrix: :data:`oblique.layers.ROWS`).
        others: the optimizer of every other parameter (None: there is none); its parameter groups become
            this optimizer's first ones.
        **muon: ``torch.optim.Muon``'s keywords (default :func:`filter_muon_defaults`).

    Raises:
        oblique.options.OptionError: the installed torch has no ``torch.optim.Muon``.
        ValueError: no filter matrix, or a tensor both in ``filters`` and in ``others``.
    """

    def __init__(
        self,
        filters: Sequence[tuple[torch.Tensor, Layout]],
        others: torch.optim.Optimizer | None = None,
        **muon: Any,
    ):
        muon_optimizer = muon_class()
        if not filters:
            raise ValueError("FilterMuon needs at least one filter matrix to step")
        weights = [w for w, _ in filters]
        theirs = {id(p) for g in (others.param_groups if others is not None else ()) for p in g["params"]}
        if any(id(w) in theirs for w in weights):
            raise ValueError("FilterMuon: a tensor is both a filter matrix (Muon) and in the other optimizer")
        self._layouts = [layout for _, layout in filters]
        self._matrices: list[torch.Tensor] = []  # what Muon steps: a view of the tensor, or its own copy
        self._views: list[bool] = []
        for w, layout in filters:
            f = layout.filters(w.detach())
            view = f.dim() == 2 and _shares_storage(f, w)
            self._matrices.append(f if view else f.clone(memory_format=torch.contiguous_format))
            self._views.append(view)
        self._muon = muon_optimizer(self._matrices, **{**filter_muon_defaults(), **muon})
        self._others = others
        super().__init__([{"params": weights}], dict(self._muon.defaults))
        self.param_groups[:0] = others.param_groups if others is not None else []
        self._built = True

    @property
    def muon(self) -> torch.optim.Optimizer:
        """The ``torch.optim.Muon`` that steps the filter matrices."""
        return self._muon

    @property
    def others(self) -> torch.optim.Optimizer | None:
        """The optimizer of every other parameter (None: there is none)."""
        return self._others

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if getattr(self, "_built", False):
            raise NotImplementedError(
                "FilterMuon's groups are fixed when it is built: build it again with the new parameters"
            )
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step: Muon on the filter matrices (with the Muon group's hyperparameters as they are now: a
        scheduler's lr), then the other optimizer."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        group = self.param_groups[-1]
        self._follow(group["params"])
        self._muon.param_groups[0].update({k: v for k, v in group.items() if k != "params"})
        entries = list(zip(group["params"], self._layouts, self._matrices, self._views, strict=True))
        for w, layout, f, view in entries:
            if w.grad is None:
                f.grad = None
                continue
            if not view:  # the tensor may have moved since the last step (a projection, a loaded state)
                f.copy_(layout.filters(w))
            f.grad = layout.filters(w.grad)
        self._muon.step()
        for w, layout, f, view in entries:
            if f.grad is not None and not view:
                w.copy_(layout.weight(f, w.shape))
            f.grad = None
        if self._others is not None:
            self._others.step()
        return loss

    def _follow(self, weights: list[torch.Tensor]) -> None:
        """The filter matrices again for tensors that moved since they were read (``model.to(float64)``,
        another device, ``channels_last``: new storage, so a view would step the old one), Muon's state
        carried over to them (cast to their dtype and device)."""
        params = self._muon.param_groups[0]["params"]
        for i, (w, layout) in enumerate(zip(weights, self._layouts, strict=True)):
            f = self._matrices[i]
            same = (f.dtype, f.device) == (w.dtype, w.device)
            if same and (not self._views[i] or f.data_ptr() == layout.filters(w.detach()).data_ptr()):
                continue
            fresh = layout.filters(w.detach())
            view = fresh.dim() == 2 and _shares_storage(fresh, w)
            new = fresh if view else fresh.clone(memory_format=torch.contiguous_format)
            old = self._muon.state.pop(f, {})
            self._muon.state[new] = {k: v.to(new) if torch.is_tensor(v) else v for k, v in old.items()}
            params[i] = self._matrices[i] = new
            self._views[i] = view

    def state_dict(self) -> dict[str, Any]:
        """Both parts' states and the Muon group's hyperparameters (tensors and plain containers)."""
        return {
            "muon": self._muon.state_dict(),
            "muon_group": {k: v for k, v in self.param_groups[-1].items() if k != "params"},
            "others": self._others.state_dict() if self._others is not None else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            ValueError: a state of another optimizer, or of a FilterMuon over other parameters.
        """
        keys = {"muon", "muon_group", "others"}
        if not isinstance(state_dict, dict) or set(state_dict) != keys:
            got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(f"not a FilterMuon state (keys {', '.join(sorted(keys))}); got {got}")
        group = state_dict["muon_group"]
        if not isinstance(group, dict) or set(group) - {"initial_lr"} != set(self.param_groups[-1]) - {
            "params",
            "initial_lr",
        }:
            raise ValueError("FilterMuon state: its Muon group holds other hyperparameters")
        if (state_dict["others"] is None) != (self._others is None):
            raise ValueError("FilterMuon state: of an optimizer with other parameters besides the filters")
        self._muon.load_state_dict(state_dict["muon"])
        if self._others is not None:
            self._others.load_state_dict(state_dict["others"])
            self.param_groups[:-1] = self._others.param_groups  # loading made new group dicts there
        self.param_groups[-1].update(group)
