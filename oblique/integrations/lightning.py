"""``ObliqueCallback``: a method of ``oblique`` in a PyTorch Lightning ``Trainer``.

::

    method = oblique.get_method("oni", targets="conv+linear")
    callback = ObliqueCallback(method)

    class Model(L.LightningModule):
        ...
        def configure_optimizers(self):
            return callback.make_optimizer(self, oblique.OptimizerConfig(lr=0.05))  # after prepare

    L.Trainer(callbacks=[callback], precision="bf16-mixed").fit(Model())

When the hooks run: ``setup`` prepares the module (before Lightning calls ``configure_optimizers``, and
before a checkpoint is restored into it, so a prepared state dict loads); ``on_after_backward`` adds the
penalty's gradient (scaled by the precision plugin's ``GradScaler`` when there is one, divided by the
gradient-accumulation steps as Lightning divides the loss); ``on_before_optimizer_step`` — after Lightning
has unscaled the gradients — calls ``before_step``; after every optimizer step (``on_train_batch_end``
where ``global_step`` moved) ``after_step``, and every ``drift_every`` steps the drift means are logged
(``"oblique_norm_dev_mean"``, ...). A method that brings its own optimizer (``oblique-rsgd``) must be stepped
by it: build it with :meth:`ObliqueCallback.make_optimizer` in ``configure_optimizers`` (a Euclidean one is
refused at the first step). The callback's ``state_dict`` holds the method's own state, so a checkpoint
resumes exactly.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import torch

from oblique.geometry import model_drift
from oblique.methods import Method, OptimizerConfig

__all__ = ["ObliqueCallback"]


class ObliqueCallback(L.Callback):
    """Train a Lightning module with ``method`` (see the module docstring).

    Args:
        method: a method of :func:`oblique.get_method`, not yet used on the module.
        drift_every: log the drift means every N optimizer steps (0: never).
    """

    def __init__(self, method: Method, drift_every: int = 50):
        self.method = method
        self.drift_every = drift_every
        self._last_step = 0

    def make_optimizer(self, module: torch.nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
        """The method's optimizer for ``module`` (call it in ``configure_optimizers``)."""
        return self.method.make_optimizer(module, cfg)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.method.prepare(pl_module)

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pen = self.method.penalty(pl_module)
        if pen is None:
            return
        pen = pen / trainer.accumulate_grad_batches
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        (scaler.scale(pen) if scaler is not None else pen).backward()

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        self.method.before_step(pl_module)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx
    ) -> None:
        step = trainer.global_step
        if step == self._last_step:  # accumulating: no optimizer step on this batch
            return
        self._last_step = step
        self.method.after_step(pl_module, step)
        if self.drift_every and step % self.drift_every == 0:
            mean = model_drift(pl_module, weights=self.method.effective_filters(pl_module))["mean"]
            pl_module.log_dict({f"oblique_{k}": v for k, v in mean.items()})

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step  # a resumed run goes on from its step

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.method.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.method.load_state_dict(state_dict["method"])
