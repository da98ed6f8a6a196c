"""Data sets: MNIST-1D (the embedded default, generated offline), synthetic inputs, CIFAR-10/100 and
ImageNet, one module each, and their registry.

Every data set is returned as a :class:`Data` bundle of a train and a test ``Dataset``. In-memory data
sets are :class:`TensorData`, which hands out whole batches at once (``dataset[list_of_indices]``): the
trainer's loaders use a ``BatchSampler`` so a batch costs one indexing op, not ``batch_size`` of them.

Each data set's module declares it once (a :class:`~oblique.data.base.DataEntry`: its loader, its options
beside it, its inputs' dimensions, whether it can be downloaded, how its folder is found); :data:`ENTRIES`
is the one list of them, and the registry below (:data:`DATASETS`, :data:`DATA_OPTIONS`,
:data:`SPATIAL_DIMS`, :data:`DOWNLOADABLE`) is read from it:

- :mod:`oblique.data.mnist1d`: MNIST-1D (Greydanus 2020), generated and cached, never downloaded;
- :mod:`oblique.data.synthetic`: random inputs and labels, for benchmarks and smoke tests;
- :mod:`oblique.data.cifar`: CIFAR-10/100 from torchvision's on-disk format (``download`` fetches them);
- :mod:`oblique.data.imagenet`: ImageNet from an ImageFolder tree.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from oblique.data.base import (
    Data,
    DataEntry,
    DataError,
    DataOption,
    DataOptionError,
    DataWarning,
    TensorData,
    UnknownDatasetError,
    cache_dir,
)
from oblique.data.cifar import CIFAR10, CIFAR100, CIFAR_LAYOUT, CifarTransform, channel_stats, load_cifar
from oblique.data.imagenet import IMAGENET, IMAGENET_MEAN, IMAGENET_STD
from oblique.data.mnist1d import MNIST1D, MNIST1D_DEFAULTS, load_mnist1d
from oblique.data.synthetic import SYNTHETIC, synthetic
from oblique.text import short

__all__ = [
    "DATASETS",
    "DATA_OPTIONS",
    "DOWNLOADABLE",
    "CIFAR_LAYOUT",
    "ENTRIES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MNIST1D_DEFAULTS",
    "CifarTransform",
    "Data",
    "DataEntry",
    "DataError",
    "DataOption",
    "DataOptionError",
    "DataWarning",
    "TensorData",
    "UnknownDatasetError",
    "cache_dir",
    "channel_stats",
    "check_data_options",
    "check_dataset",
    "check_downloadable",
    "get_dataset",
    "list_datasets",
    "load_cifar",
    "load_mnist1d",
    "synthetic",
]

#: name -> the data set's declaration, in the order ``--dataset`` lists them: the one list of data sets.
ENTRIES: dict[str, DataEntry] = {e.name: e for e in (MNIST1D, SYNTHETIC, CIFAR10, CIFAR100, IMAGENET)}

#: name -> loader(root, **options) -> Data. ``root`` is the data folder for on-disk data sets. A caller may
#: add a loader of its own here (its options are then passed on unchecked).
DATASETS: dict[str, Callable[..., Data]] = {name: e.load for name, e in ENTRIES.items()}

#: name -> number of spatial dimensions of its inputs (1: sequences for Conv1d, 2: images for Conv2d).
SPATIAL_DIMS: dict[str, int] = {name: e.spatial_dims for name, e in ENTRIES.items() if e.spatial_dims}

#: The data sets ``download`` can fetch (with torchvision's downloader; the others are generated here or
#: are a folder the user prepares).
DOWNLOADABLE: tuple[str, ...] = tuple(name for name, e in ENTRIES.items() if e.downloadable)

#: data set -> the options it accepts, by name (each an :class:`oblique.options.Option`).
DATA_OPTIONS: dict[str, dict[str, DataOption]] = {
    name: {o.name: o for o in e.options} for name, e in ENTRIES.items()
}


def list_datasets() -> list[str]:
    """Names of every registered data set."""
    return list(DATASETS)


def get_dataset(name: str, root: str | None = None, download: bool = False, **options) -> Data:
    """Load data set ``name``; on-disk data sets read ``root``.

    Args:
        download: fetch a CIFAR data set missing from ``root`` (:data:`DOWNLOADABLE`; needs torchvision and
            internet); refused for the others.
        options: the data set's options (:data:`DATA_OPTIONS`: MNIST-1D's generation settings, CIFAR's
            ``augment``, ImageNet's ``image_size``, the synthetic sizes), checked before anything is read.

    Raises:
        UnknownDatasetError: unknown name (the message lists the valid ones).
        DataOptionError: an option the data set does not have, or a value out of its range.
        DataError: the data cannot be read or downloaded (the message says what to do).
    """
    try:
        loader = DATASETS[name]
    except KeyError:
        raise UnknownDatasetError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}") from None
    options = check_data_options(name, options)
    if download:
        check_downloadable(name)
        options["download"] = True
    return loader(root, **options)


def check_dataset(name: str, root: str | os.PathLike | None = None, download: bool = False) -> None:
    """Check, without reading it, that data set ``name`` can be found (its folder under ``root`` for the
    on-disk data sets; the generated ones always can): a study refuses up front what would fail every run.
    With ``download``, a missing CIFAR folder is downloaded now (once, before any run starts).

    Raises:
        UnknownDatasetError: an unknown name.
        DataError: the on-disk folder is not there (the message says where it looked and what to do), or
            it cannot be downloaded.
    """
    if name not in DATASETS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    if download:
        check_downloadable(name)
    entry = ENTRIES.get(name)
    if entry is not None and entry.locate is not None:
        entry.locate(root, download)


def check_data_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` of data set ``name``, each converted to its kind and checked against its range
    (:meth:`oblique.options.Option.convert`: text is read as a flag's value is).

    A data set with no declared options (one registered by a caller) gets its options unchecked.

    >>> check_data_options("mnist1d", {"num_samples": "5000", "train_split": 0.8})
    {'num_samples': 5000, 'train_split': 0.8}

    Raises:
        DataOptionError: an option ``name`` does not have (the message lists the valid ones), a value of
            the wrong kind or out of range (expected vs got), or MNIST-1D settings that leave a split empty;
            each names ``data_options``.
    """
    declared = DATA_OPTIONS.get(name)
    if declared is None:
        return dict(options)
    out = {}
    for key, value in options.items():
        if key not in declared:
            raise DataOptionError(
                f"data_options: {name} has no option {short(key, 60)}; valid: {', '.join(declared)}",
                settings=("data_options",),
            )
        out[key] = declared[key].convert(value, table="data_options", of=name)
    check = ENTRIES[name].check_options
    if check is not None:
        check(out)
    return out


def check_downloadable(name: str) -> None:
    """Refuse ``download`` for a data set that cannot be downloaded (one line saying why).

    Raises:
        DataError: ``name`` is not in :data:`DOWNLOADABLE`.
    """
    if name not in DOWNLOADABLE:
        entry = ENTRIES.get(name)
        on_disk = entry is not None and entry.locate is not None
        how = "read from a folder you prepare" if on_disk else "generated here, never downloaded"
        raise DataError(
            f"download is for {' and '.join(DOWNLOADABLE)} only; {name} is {how}: leave download out",
            settings=("download",),
        )
