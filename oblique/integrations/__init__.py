"""Integrations with the training loops researchers already have: one callback per framework, each an
optional extra imported only when used (``import oblique`` imports none of them).

- :mod:`oblique.integrations.lightning`: ``ObliqueCallback(method)`` for a PyTorch Lightning ``Trainer``
  (``pip install 'oblique[lightning]'``).
- :mod:`oblique.integrations.transformers`: ``ObliqueCallback(method)`` for a Hugging Face ``Trainer``
  (``pip install 'oblique[transformers]'``).

Both do what the README's own loop does ("Your own training loop"): the method prepared before the
optimizer is built, its penalty's gradient added, ``before_step`` on true (unscaled) gradients just before
the optimizer's step and ``after_step`` right after it, and the drift logged through the framework's own
logger.
"""
