"""geoopt's Riemannian optimizers with the fixes ``oblique-rsgd`` needs (see :mod:`oblique.methods.oblique_rsgd`).

Imported only when an ``oblique-rsgd`` run builds its optimizer, so that a geoopt import problem cannot
break the other methods.
"""

from __future__ import annotations

import geoopt
import torch

__all__ = ["RiemannianAdam", "RiemannianSGD", "riemannian_optimizer"]


class RiemannianSGD(geoopt.optim.RiemannianSGD):
    """geoopt's RiemannianSGD with the momentum buffer started at zero (torch.optim.SGD's first step)."""

    def step(self, closure=None):
        for group in self.param_groups:
            if group["momentum"] > 0:
                for p in group["params"]:
                    if p.grad is not None and len(self.state[p]) == 0:
                        self.state[p]["momentum_buffer"] = torch.zeros_like(p)
        return super().step(closure)


class RiemannianAdam(geoopt.optim.RiemannianAdam):
    """geoopt's RiemannianAdam whose ``state_dict()`` leaves out orphaned state (geoopt issue 226) and
    whose ``load_state_dict()`` resumes exactly (the step count stays an integer)."""

    def __setstate__(self, state):
        # torch.optim.Adam.__setstate__ turns an integer "step" into a float32 tensor; geoopt then computes
        # the bias corrections β^step in float32 and a resumed run drifts from the uninterrupted one.
        super().__setstate__(state)
        for s in self.state.values():
            if isinstance(s.get("step"), torch.Tensor):
                s["step"] = int(s["step"].item())

    def state_dict(self):
        live = {id(p) for group in self.param_groups for p in group["params"]}
        orphans = [k for k in self.state if isinstance(k, torch.Tensor) and id(k) not in live]
        if not orphans:
            return super().state_dict()
        saved = {k: self.state.pop(k) for k in orphans}
        try:
            return super().state_dict()
        finally:
            self.state.update(saved)


def riemannian_optimizer(
    groups: list[dict], cfg, stabilize: int | None, fused: type[torch.optim.Optimizer] | None = None
) -> torch.optim.Optimizer:
    """A Riemannian method's optimizer over ``groups`` (its manifold parameters without weight decay, the
    rest Euclidean with the run's; ``cfg`` an :class:`~oblique.methods.base.OptimizerConfig`).

    SGD: ``fused`` when given (:class:`oblique.optim.ObliqueSGD` or :class:`~oblique.optim.StiefelSGD`, the
    corrected steps fused; the ``impl=fused`` of ``oblique-rsgd`` and ``stiefel-rsgd``), else geoopt's
    :class:`RiemannianSGD` (momentum started at zero, as the fused ones). Adam: geoopt's
    :class:`RiemannianAdam` (corrected) in both.
    """
    if cfg.name == "sgd":
        kind = fused if fused is not None else RiemannianSGD
        extra = {"momentum_init": "zero"} if fused is not None else {}
        return kind(
            groups,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            stabilize=stabilize,
            **extra,
        )
    if cfg.name == "adam":
        return RiemannianAdam(groups, lr=cfg.lr, betas=cfg.betas, stabilize=stabilize)
    raise ValueError(f"a Riemannian optimizer is sgd or adam; got {cfg.name!r}")
