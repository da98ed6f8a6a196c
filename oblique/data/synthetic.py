"""Random Gaussian inputs with random labels: for benchmarks and smoke tests only."""

from __future__ import annotations

import torch

from oblique.data.base import Data, DataEntry, TensorData
from oblique.options import Option

__all__ = ["OPTIONS", "SYNTHETIC", "synthetic"]

#: The sizes and the seed of the synthetic data set (``--data-option``); images are 3 x S x S.
OPTIONS = (
    Option("n_train", 256, "training samples", minimum=1, maximum=10_000_000),
    Option("n_test", 128, "test samples", minimum=1, maximum=10_000_000),
    Option("num_classes", 10, "classes (random labels)", minimum=2, maximum=100_000),
    Option("image_size", 32, "images are 3 x S x S", minimum=1, maximum=1024),
    Option(
        "seed", 0, "the generator's seed (not the run's --seed)", minimum=0, maximum=2**63, max_exclusive=True
    ),
)


def synthetic(
    shape: tuple[int, ...] = (3, 32, 32),
    num_classes: int = 10,
    n_train: int = 256,
    n_test: int = 128,
    seed: int = 0,
) -> Data:
    """Random Gaussian inputs of ``shape`` with random labels: for benchmarks and smoke tests only."""
    g = torch.Generator().manual_seed(seed)
    mk = lambda n: TensorData(  # noqa: E731
        torch.randn(n, *shape, generator=g), torch.randint(num_classes, (n,), generator=g)
    )
    return Data("synthetic", mk(n_train), mk(n_test), num_classes, shape[0])


def _load(root: str | None = None, image_size: int = 32, **kwargs) -> Data:
    return synthetic(shape=(3, image_size, image_size), **kwargs)


SYNTHETIC = DataEntry("synthetic", _load, OPTIONS, spatial_dims=2)
