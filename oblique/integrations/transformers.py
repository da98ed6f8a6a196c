"""``ObliqueCallback``: a method of ``oblique`` in a Hugging Face ``transformers.Trainer``.

::

    method = oblique.get_method("nl", targets="all")
    trainer = Trainer(model, args, train_dataset=data, callbacks=[ObliqueCallback(method)])
    trainer.train()

When the hooks run: at the end of ``Trainer.__init__`` (``on_init_end``) the model is prepared, before the
``Trainer`` builds its optimizer in ``train()``; before every optimizer step (``on_pre_optimizer_step``,
after the ``Trainer``'s gradient clipping, on true gradients: with fp16's ``GradScaler`` they are unscaled
first if the clipping has not) the penalty's gradient is added and ``before_step`` called; after it (``on_optimizer_step``) ``after_step``; the drift means join the
``Trainer``'s logs (``"oblique_norm_dev_mean"``, ...) every time it logs: its ``state.log_history`` (saved in
``trainer_state.json``) and the reporters listed after this callback (the ``Trainer`` runs its own
reporting callbacks first: they do not see the drift). The penalty's gradient is not clipped (it is added
after clipping).

A method that brings its own optimizer (``oblique-rsgd``): prepare the model first and hand the
``Trainer`` its optimizer, ``ObliqueCallback(method, prepare=False)`` with
``Trainer(..., optimizers=(method.make_optimizer(model, cfg), None))``; the ``Trainer``'s own AdamW is
refused at the first step. A checkpoint written by the ``Trainer`` holds the prepared model's state dict;
``trainer.train(resume_from_checkpoint=...)`` with a model prepared the same way resumes it (the methods
that keep state of their own, ``srip``, start that state afresh).
"""

from __future__ import annotations

import transformers

from oblique.geometry import model_drift
from oblique.methods import Method

__all__ = ["ObliqueCallback"]


def _unscale(optimizer) -> None:
    """The gradients unscaled if a ``GradScaler`` scaled them (fp16), so the penalty and ``before_step`` act
    on true gradients: the ``Trainer`` unscales them only when it clips, and ``scaler.step`` does not
    unscale again once ``unscale_`` ran (PyTorch's documented GradScaler use)."""
    scaler = getattr(optimizer, "scaler", None)  # accelerate's AcceleratedOptimizer carries the scaler
    if scaler is None:
        return
    try:
        scaler.unscale_(optimizer.optimizer)
    except RuntimeError as e:  # unscaled already, by the Trainer's gradient clipping
        if "unscale_() has already been called" not in str(e):
            raise


class ObliqueCallback(transformers.TrainerCallback):
    """Train a ``transformers`` model with ``method`` (see the module docstring).

    Args:
        method: a method of :func:`oblique.get_method`.
        prepare: prepare the model at the end of ``Trainer.__init__`` (False: it is prepared already).
    """

    def __init__(self, method: Method, prepare: bool = True):
        self.method = method
        self.prepare = prepare

    def on_init_end(self, args, state, control, model=None, **kwargs):
        if self.prepare and model is not None:
            self.method.prepare(model)

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        _unscale(optimizer)
        pen = self.method.penalty(model)
        if pen is not None:
            pen.backward()
        self.method.before_step(model)

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.method.after_step(model, state.global_step + 1)  # the Trainer counts the step after this hook

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if logs is None or model is None:
            return
        drift = model_drift(model, weights=self.method.effective_filters(model))["mean"]
        drift = {f"oblique_{k}": v for k, v in drift.items()}
        logs.update(drift)  # the reporters after this callback see it
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(drift)  # the Trainer's own record (trainer_state.json)
