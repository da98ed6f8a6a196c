"""The model registry: ``MODELS`` is the one list of architectures ``--model`` accepts.

``INPUT_SHAPES`` gives each model's input shape without the batch dimension (the bench feeds synthetic
inputs of that shape). ``resnet50`` needs the optional extra ``vision`` (torchvision); without it,
:func:`get_model` raises :class:`ModelDependencyError` with one line saying what to install.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial

from torch import nn

from oblique.errors import ObliqueError
from oblique.models.cifar_resnet import CIFAR_RESNET_DEPTHS, cifar_resnet
from oblique.models.mnist1d import MNIST1DCNN, ResNet1D
from oblique.models.transformer1d import Transformer1D
from oblique.models.wrn import check_wrn, wide_resnet

__all__ = [
    "INPUT_SHAPES",
    "MODELS",
    "ModelDependencyError",
    "UnknownModelError",
    "get_model",
    "input_shape",
    "list_models",
]


class UnknownModelError(ObliqueError, ValueError):
    """An unknown model name; the message lists the valid ones."""


class ModelDependencyError(UnknownModelError):
    """A registered model whose optional dependency is not installed; the message says what to install."""


def _resnet50(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> nn.Module:
    """torchvision's ResNet-50 (He et al. 2016; 25.6 M parameters with 1000 classes)."""
    try:
        from torchvision.models import resnet50
    except ImportError:
        raise ModelDependencyError(
            "model 'resnet50' needs torchvision: install oblique[vision] (pip install 'oblique[vision]')"
        ) from None
    if in_channels != 3:
        raise ValueError(f"resnet50 takes 3 input channels; got in_channels={in_channels}")
    return resnet50(weights=None, num_classes=num_classes, **kwargs)


#: name -> (builder(num_classes, in_channels) -> nn.Module, one-line description)
MODELS: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "resnet1d": (ResNet1D, "1-D ResNet with BatchNorm for MNIST-1D (width 16, two stages of one block)"),
    "cnn": (MNIST1DCNN, "the MNIST-1D paper's reference CNN (three Conv1d of 25 channels, no BN)"),
    "transformer1d": (Transformer1D, "small pre-LN transformer for MNIST-1D (patch 4, width 32, 2 blocks)"),
}
for _d in CIFAR_RESNET_DEPTHS:
    MODELS[f"resnet{_d}"] = (
        partial(cifar_resnet, _d),
        f"CIFAR ResNet-{_d} (He et al. 2016; option-A shortcuts)",
    )
for _d, _k in [(28, k) for k in range(1, 11)] + [(16, 4), (16, 8), (22, 8), (40, 4)]:
    MODELS[f"wrn{_d}-{_k}"] = (partial(wide_resnet, _d, _k), f"Wide ResNet WRN-{_d}-{_k} (Zagoruyko 2016)")
MODELS["wrn28-10-drop"] = (
    partial(wide_resnet, 28, 10, dropout=0.3),
    "WRN-28-10 with dropout 0.3 between the convs of each block (Zagoruyko 2016)",
)
MODELS["resnet50"] = (_resnet50, "ImageNet ResNet-50 via torchvision (needs the extra oblique[vision])")

#: name -> input shape without the batch dimension (for synthetic inputs and ``oblique bench``).
INPUT_SHAPES: dict[str, tuple[int, ...]] = {name: (3, 32, 32) for name in MODELS}
INPUT_SHAPES.update({"resnet1d": (1, 40), "cnn": (1, 40), "resnet50": (3, 224, 224)})
INPUT_SHAPES["transformer1d"] = (1, 40)

_WRN = re.compile(r"wrn(\d+)-(\d+)")


def list_models() -> list[str]:
    """Names of every registered model."""
    return list(MODELS)


def input_shape(name: str) -> tuple[int, ...]:
    """The input shape of model ``name`` without the batch dimension, e.g. ``(3, 32, 32)``.

    Raises:
        UnknownModelError: an unknown name.
        ValueError: a WRN-d-k that cannot be built (a depth not 6n + 4, too deep or too wide).
    """
    if name in INPUT_SHAPES:
        return INPUT_SHAPES[name]
    if m := _WRN.fullmatch(name):
        check_wrn(int(m[1]), int(m[2]))
        return (3, 32, 32)
    raise UnknownModelError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")


def get_model(name: str, num_classes: int = 10, in_channels: int = 1, **kwargs) -> nn.Module:
    """Build model ``name`` for ``num_classes`` outputs and ``in_channels`` input channels.

    Besides the registered names, any ``wrn{d}-{k}`` (WRN-d-k) is built.

    Raises:
        UnknownModelError: unknown name (the message lists the valid ones).
        ModelDependencyError: the model needs an optional extra that is not installed.
    """
    if name in MODELS:
        builder, _ = MODELS[name]
    elif m := _WRN.fullmatch(name):
        builder = partial(wide_resnet, int(m[1]), int(m[2]))
    else:
        raise UnknownModelError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    return builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
