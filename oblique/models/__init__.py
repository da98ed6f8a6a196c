"""The model registry: ``MODELS`` is the one list of architectures ``--model`` accepts."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from oblique.models.mnist1d import MNIST1DCNN, ResNet1D

__all__ = ["MODELS", "UnknownModelError", "get_model", "list_models"]


class UnknownModelError(ValueError):
    """An unknown model name; the message lists the valid ones."""


#: name -> (builder(num_classes, in_channels) -> nn.Module, one-line description)
MODELS: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "resnet1d": (ResNet1D, "1-D ResNet with BatchNorm for MNIST-1D (width 16, two stages of one block)"),
    "cnn": (MNIST1DCNN, "the MNIST-1D paper's reference CNN (three Conv1d of 25 channels, no BN)"),
}


def list_models() -> list[str]:
    """Names of every registered model."""
    return list(MODELS)


def get_model(name: str, num_classes: int = 10, in_channels: int = 1, **kwargs) -> nn.Module:
    """Build model ``name`` for ``num_classes`` outputs and ``in_channels`` input channels."""
    try:
        builder, _ = MODELS[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; valid: {', '.join(MODELS)}") from None
    return builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
