"""Back to a plain model: :func:`bake` turns a prepared model into its own architecture with ordinary weights.

After ``method.prepare(model)`` a reparametrizing method (``wn``, ``oni``, ``olm``) or a Riemannian one
(``oblique-rsgd``) has put ``torch.nn.utils.parametrize`` parametrizations on the targeted layers (and geoopt
``ManifoldParameter`` filter matrices under them): its state dict then has ``parametrizations.*`` keys, and
loads only into a prepared model. :func:`bake` replaces every parametrized tensor by an ``nn.Parameter`` of
the layer's own shape and dtype holding its current value — what the forward pass computed with — so the
model computes the same outputs, its ``state_dict`` loads strictly into a fresh copy of the architecture,
and a ``transformers`` model saves and loads with ``save_pretrained`` / ``from_pretrained``. Methods that
keep plain weights (``nl``, ``pbwn``, ``wd``, the soft orthogonality family) leave nothing to bake.

Parametrizations that were there before ``prepare`` are baked too: ``bake`` removes every parametrization
of the model. A baked model no longer belongs to the method: train it with a fresh ``prepare``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["bake"]


@torch.no_grad()
def bake(model: nn.Module) -> nn.Module:
    """Remove every parametrization of ``model`` in place, each tensor kept at its current value as a plain
    ``nn.Parameter`` (contiguous, the layer's shape and dtype; trainable); return ``model``.

    >>> import oblique
    >>> net = nn.Sequential(nn.Conv1d(1, 4, 3))
    >>> method = oblique.get_method("wn", g="frozen")
    >>> net = method.prepare(net)
    >>> sorted(bake(net).state_dict())
    ['0.bias', '0.weight']
    """
    for module in list(model.modules()):
        if not parametrize.is_parametrized(module):
            continue
        for name in list(module.parametrizations.keys()):
            value = getattr(module, name).detach().clone(memory_format=torch.contiguous_format)
            plist = module.parametrizations[name]
            if hasattr(plist, "original") and type(plist.original) is not nn.Parameter:
                plist.original = nn.Parameter(plist.original.detach())  # a geoopt ManifoldParameter: plain
            parametrize.remove_parametrizations(module, name, leave_parametrized=True)
            module._buffers.pop(name, None)  # torch leaves a tensor of several originals as a buffer
            module._parameters.pop(name, None)
            module.register_parameter(name, nn.Parameter(value))
    return model
