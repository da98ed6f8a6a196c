"""What every data set shares: the :class:`Data` bundle, in-memory :class:`TensorData`, the errors and the
warning, the cache folder, and :class:`DataEntry`, the declaration one data set module makes of itself."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from oblique.errors import ObliqueError, ObliqueWarning
from oblique.options import Option, OptionError

__all__ = [
    "Data",
    "DataEntry",
    "DataError",
    "DataOption",
    "DataOptionError",
    "DataWarning",
    "TensorData",
    "UnknownDatasetError",
    "cache_dir",
]


class DataError(ObliqueError, RuntimeError):
    """A data set cannot be read (missing folder, wrong format); the message says what to do."""


class UnknownDatasetError(ObliqueError, ValueError):
    """An unknown data set name; the message lists the valid ones."""


class DataWarning(ObliqueWarning):
    """The data cache cannot be read or written; the work goes on (one line)."""


#: A data option the data set does not have, or a value outside its range: the one error of a bad value
#: (:class:`oblique.options.OptionError`), naming ``data_options``.
DataOptionError = OptionError

#: One option a data set accepts (``oblique run --data-option NAME=VALUE``): an
#: :class:`oblique.options.Option`; its default is the loader's.
DataOption = Option


class TensorData(Dataset):
    """An in-memory data set ``(x, y)`` that returns whole batches for a list of indices.

    Args:
        x: inputs, ``(N, C, *spatial)``.
        y: integer labels, ``(N,)``.
        transform: optional batch-level augmentation ``x_batch -> x_batch`` (train sets only).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: Callable | None = None):
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same length; got {len(x)} and {len(y)}")
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device) -> TensorData:
        """The same data set held on ``device`` (moved once; batches are then cut there)."""
        transform = self.transform.to(device) if hasattr(self.transform, "to") else self.transform
        return TensorData(self.x.to(device), self.y.to(device), transform)

    def __getitem__(self, idx):
        x = self.x[idx]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.y[idx]


@dataclass
class Data:
    """A data set ready for training: train and test sets and what the model needs to know."""

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    in_channels: int


@dataclass(frozen=True)
class DataEntry:
    """What a data set module declares of one data set; :mod:`oblique.data` registers it.

    Attributes:
        name: the registry name (``--dataset``).
        load: ``load(root, **options) -> Data``; ``root`` is the data folder of an on-disk data set.
        options: the options its loader takes (``--data-option``), each valid value declared.
        spatial_dims: of its inputs (1: sequences for Conv1d, 2: images for Conv2d).
        downloadable: ``download`` can fetch it.
        locate: for an on-disk data set, ``locate(root, download)`` finds its folder without reading it
            (downloading it first, with ``download``) or raises :class:`DataError`; None: generated here.
        check_options: a check of options that are valid one by one but not together (raises
            :class:`DataOptionError`); None: none.
    """

    name: str
    load: Callable[..., Data]
    options: tuple[Option, ...] = ()
    spatial_dims: int | None = None
    downloadable: bool = False
    locate: Callable[[str | os.PathLike | None, bool], Any] | None = None
    check_options: Callable[[dict[str, Any]], None] | None = None


def cache_dir() -> Path:
    """The cache folder: ``$OBLIQUE_CACHE`` if set, else ``~/.cache/oblique``."""
    env = os.environ.get("OBLIQUE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "oblique"
