"""Data sets: MNIST-1D (the embedded default, generated offline), synthetic inputs, and a registry.

Every data set is returned as a :class:`Data` bundle of a train and a test ``Dataset``. In-memory data
sets are :class:`TensorData`, which hands out whole batches at once (``dataset[list_of_indices]``): the
trainer's loaders use a ``BatchSampler`` so a batch costs one indexing op, not ``batch_size`` of them.

MNIST-1D (Greydanus 2020) is generated procedurally with ``mnist1d.data.make_dataset`` — never
downloaded — and cached as ``.npz`` under the cache folder: ``$OBLIQUE_CACHE`` if set, else
``~/.cache/oblique``. The file name carries a hash of every generation setting; a cache file that cannot
be read (truncated, corrupt) is regenerated, and a cache folder that cannot be written is left alone (the
data generated in memory is used), each with a one-line :class:`DataWarning` saying so.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import pickle
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from oblique import storage
from oblique.errors import ObliqueError, ObliqueWarning
from oblique.text import short

__all__ = [
    "DATASETS",
    "DATA_OPTIONS",
    "DOWNLOADABLE",
    "MNIST1D_DEFAULTS",
    "Data",
    "DataOption",
    "DataOptionError",
    "CifarTransform",
    "DataError",
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


class DataError(ObliqueError, RuntimeError):
    """A data set cannot be read (missing folder, wrong format); the message says what to do."""


class UnknownDatasetError(ObliqueError, ValueError):
    """An unknown data set name; the message lists the valid ones."""


class DataWarning(ObliqueWarning):
    """The data cache cannot be read or written; the work goes on (one line)."""


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


# --------------------------------------------------------------------------- cache
def cache_dir() -> Path:
    """The cache folder: ``$OBLIQUE_CACHE`` if set, else ``~/.cache/oblique``."""
    env = os.environ.get("OBLIQUE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "oblique"


# --------------------------------------------------------------------------- MNIST-1D
#: The default generation settings (keys of ``mnist1d.data.get_dataset_args``). See README, "The default
#: setting", for why they differ from the package's (5000 samples, 80/20 split).
MNIST1D_DEFAULTS: dict = {
    "num_samples": 10000,  # 6000 train / 4000 test: one test error is 0.025 %
    "train_split": 0.6,
    "shear_scale": 1.5,  # package default 0.75: harder, so the default ResNet's error is ~3 %, not ~1 %
    "scale_coeff": 0.6,  # package default 0.4 (with 2.0 / 0.8 the reference CNN cannot reach 10 %)
    "seed": 42,
}


def load_mnist1d(**overrides) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Generate (or read from the cache) MNIST-1D; return ``x_train, y_train, x_test, y_test``.

    ``overrides`` are ``mnist1d.data.get_dataset_args`` keys on top of :data:`MNIST1D_DEFAULTS`.
    Inputs are float32 ``(N, 40)``, labels int64 ``(N,)``.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args(as_dict=True)
    args.pop("url", None)
    unknown = sorted(set(overrides) - set(args))
    if unknown:
        raise ValueError(
            f"unknown MNIST-1D setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(args))}"
        )
    args.update(MNIST1D_DEFAULTS)
    args.update(overrides)
    key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "mnist1d" / f"mnist1d-{key}.npz"
    try:
        with open(path, "rb") as fh, np.load(fh) as z:  # own the handle: np.load leaks it on a bad file
            return z["x"], z["y"], z["x_test"], z["y_test"]
    except (FileNotFoundError, NotADirectoryError):
        pass  # not cached yet
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        warnings.warn(DataWarning(f"MNIST-1D cache {path} is unreadable; regenerating it"), stacklevel=2)

    class _Args(dict):
        __getattr__ = dict.__getitem__

    ds = make_dataset(_Args(args))  # procedural, seeded by args["seed"]; no download
    arrays = {
        "x": ds["x"].astype(np.float32),
        "y": ds["y"].astype(np.int64),
        "x_test": ds["x_test"].astype(np.float32),
        "y_test": ds["y_test"].astype(np.int64),
    }
    try:
        storage.write_atomic(path, lambda f: np.savez(f, **arrays))
    except OSError as e:  # a read-only or full cache: the data is in memory, go on without caching it
        where = e.filename or path
        warnings.warn(
            DataWarning(
                f"MNIST-1D cache cannot be written ({where}: {e.strerror or e}); using the data generated in "
                "memory (set $OBLIQUE_CACHE to a writable folder to cache it)"
            ),
            stacklevel=2,
        )
    return arrays["x"], arrays["y"], arrays["x_test"], arrays["y_test"]


def _mnist1d(root: str | None = None, **overrides) -> Data:
    x, y, xt, yt = load_mnist1d(**overrides)
    return Data(
        name="mnist1d",
        train=TensorData(torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)),  # (N, 1, 40)
        test=TensorData(torch.from_numpy(xt).unsqueeze(1), torch.from_numpy(yt)),
        num_classes=10,
        in_channels=1,
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


def _synthetic(root: str | None = None, image_size: int = 32, **kwargs) -> Data:
    return synthetic(shape=(3, image_size, image_size), **kwargs)


#: name -> loader(root, **options) -> Data. ``root`` is the data folder for on-disk data sets.
DATASETS: dict[str, Callable[..., Data]] = {
    "mnist1d": _mnist1d,
    "synthetic": _synthetic,
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


# --------------------------------------------------------------------------- CIFAR-10/100 and ImageNet
#: name -> (folder, train files, test file, meta file, label key, class-name key, classes): torchvision's
#: own on-disk layout (the "python version" archives of https://www.cs.toronto.edu/~kriz/cifar.html).
CIFAR_LAYOUT: dict[str, tuple[str, tuple[str, ...], str, str, str, str, int]] = {
    "cifar10": (
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "batches.meta",
        "labels",
        "label_names",
        10,
    ),
    "cifar100": ("cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names", 100),
}


_NUMPY_NAMES = ("_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batch files: dicts, lists, strings and numpy arrays, nothing else."""

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "numpy" and name in _NUMPY_NAMES:
            if module.startswith("numpy.core") and hasattr(np, "_core"):  # numpy < 2 wrote it, >= 2 reads
                module = "numpy._core" + module[len("numpy.core") :]
            return getattr(importlib.import_module(module), name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR file")


def _read_cifar_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = _ArrayUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"{path} is missing: the folder is not a complete torchvision CIFAR copy") from None
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, AttributeError, ImportError) as e:
        raise DataError(f"{path} cannot be read as a CIFAR pickle ({e}); download it again") from None
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a pickled dict (torchvision's CIFAR); got {type(d).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _cifar_root(name: str, root: str | os.PathLike | None, download: bool) -> Path:
    folder = CIFAR_LAYOUT[name][0]
    base = Path(root) if root is not None else cache_dir() / "data"
    if base.name == folder and base.is_dir():  # the data folder itself was given
        return base
    if not (base / folder).is_dir() and download:
        _download_cifar(name, base)
    if not (base / folder).is_dir():
        raise DataError(
            f"{name} not found: looked for {base / folder} (torchvision's on-disk format); pass --data-root "
            f"FOLDER that holds {folder}, put it there (python version from "
            "https://www.cs.toronto.edu/~kriz/cifar.html), or set download to fetch it (needs oblique[vision])",
            settings=("download",),
        )
    return base / folder


def _download_cifar(name: str, base: Path) -> None:
    """Fetch CIFAR ``name`` into ``base`` with torchvision's downloader (archive, checksum, extraction).

    It downloads into a fresh folder inside ``base`` and moves the extracted folder into place only when
    all went well: a failed or interrupted download leaves nothing behind (not even ``base``, if it made
    it). Another process that finished the same download first wins; its folder is kept.

    Raises:
        DataError: torchvision is not installed, or the download failed (no internet, a bad archive).
    """
    folder = CIFAR_LAYOUT[name][0]
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise DataError(
            f"download needs torchvision: install oblique[vision], or put the {folder} folder in {base}",
            settings=("download",),
        ) from None
    made = [p for p in (base, *base.parents) if not p.exists()]  # the folders this download creates
    tmp = None
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder}-download-", dir=base))
        getattr(tvd, "CIFAR10" if name == "cifar10" else "CIFAR100")(str(tmp), train=True, download=True)
        if not (tmp / folder).is_dir():
            raise RuntimeError(f"the archive held no {folder} folder")
        try:
            os.replace(tmp / folder, base / folder)
        except OSError:
            if not (base / folder).is_dir():  # not another process's finished download: a real failure
                raise
    except Exception as e:  # noqa: BLE001 - urllib, tarfile, torchvision: every failure is one line
        reason = getattr(e, "reason", None) or e
        raise DataError(
            f"{name} could not be downloaded to {base} ({type(e).__name__}: {reason}); without internet, "
            f"put the {folder} folder there (python version from https://www.cs.toronto.edu/~kriz/cifar.html) "
            "and leave download out",
            settings=("download",),
        ) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if not (base / folder).is_dir():
            for p in made:  # innermost first; only the folders made here, and only while empty
                try:
                    p.rmdir()
                except OSError:
                    break


def load_cifar(
    name: str = "cifar10", root: str | os.PathLike | None = None, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Read CIFAR-10 or CIFAR-100 from torchvision's on-disk format, without torchvision.

    Args:
        name: ``"cifar10"`` or ``"cifar100"`` (fine labels).
        root: the folder holding ``cifar-10-batches-py`` / ``cifar-100-python`` (or that folder itself);
            default ``$OBLIQUE_CACHE/data``.
        download: fetch it with torchvision when it is missing (needs the extra ``vision`` and internet).

    Returns:
        ``x_train, y_train, x_test, y_test, class_names``; images uint8 ``(N, 3, 32, 32)``, labels int64.

    Raises:
        DataError: the folder or a file is missing or unreadable (one line: where it looked, what to do).
    """
    if name not in CIFAR_LAYOUT:
        raise UnknownDatasetError(f"unknown CIFAR variant {name!r}; valid: {', '.join(CIFAR_LAYOUT)}")
    folder, train_files, test_file, meta_file, label_key, names_key, classes = CIFAR_LAYOUT[name]
    path = _cifar_root(name, root, download)

    def read(files) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for fname in files:
            d = _read_cifar_pickle(path / fname)
            if "data" not in d or label_key not in d:
                raise DataError(f"{path / fname}: expected keys 'data', {label_key!r}; got {sorted(d)}")
            x = np.asarray(d["data"], dtype=np.uint8)
            y = np.asarray(d[label_key], dtype=np.int64)
            if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(x) != len(y):
                raise DataError(
                    f"{path / fname}: expected data of shape (N, 3072) and N labels; got {x.shape}, {len(y)}"
                )
            if len(y) and (y.min() < 0 or y.max() >= classes):
                raise DataError(
                    f"{path / fname}: labels must be in 0..{classes - 1}; got {y.min()}..{y.max()}"
                )
            xs.append(x.reshape(-1, 3, 32, 32))  # (N, 3072) -> (N, 3, 32, 32), channel-major as stored
            ys.append(y)
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    x, y = read(train_files)
    xt, yt = read([test_file])
    meta = _read_cifar_pickle(path / meta_file)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(names_key, [])]
    return x, y, xt, yt, names


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-channel mean and standard deviation of uint8 images ``(N, C, H, W)``, in [0, 1] units.

    Computed from each channel's 256-bin histogram, so no float copy of the data set is made.

    >>> m, s = channel_stats(torch.tensor([[[[0, 255]]]], dtype=torch.uint8))
    >>> m.tolist(), s.tolist()
    ([0.5], [0.5])
    """
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    mean, std = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1).long(), minlength=256).double()
        p = counts / counts.sum()
        m = (p * levels).sum()
        mean.append(m)
        std.append(((p * (levels - m) ** 2).sum()).sqrt())
    return torch.stack(mean).float(), torch.stack(std).float()


class CifarTransform:
    """Batch-level CIFAR transform: optional augmentation, then per-channel normalization.

    The standard CIFAR augmentation of He et al. (2016) and Zagoruyko & Komodakis (2016): pad 4 pixels of
    zeros on every side, crop a random 32×32 window, flip horizontally with probability 1/2 — done for a
    whole uint8 batch at once, each image with its own window and flip, drawn on the batch's device from
    ``generator`` (the trainer gives each run its own, seeded; ``None``: torch's global generator). Then
    ``(x / 255 − mean) / std``.

    Args:
        mean: per-channel mean in [0, 1] units, ``(C,)``.
        std: per-channel standard deviation, ``(C,)``.
        augment: whether to crop and flip (train sets) or only normalize (test sets).
        pad: the padding of the random crop.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, augment: bool, pad: int = 4,
                 generator: torch.Generator | None = None):  # fmt: skip
        self.mean = mean.view(1, -1, 1, 1)  # (1, C, 1, 1)
        self.std = std.view(1, -1, 1, 1)
        self.augment, self.pad = augment, pad
        self.generator = generator  # the run's own augmentation generator (on the data's device)

    def to(self, device: torch.device) -> CifarTransform:
        """The same transform for batches on ``device`` (its generator is set by the trainer)."""
        return CifarTransform(
            self.mean.to(device).flatten(), self.std.to(device).flatten(), self.augment, self.pad
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # a single image (C, H, W)
            return self(x.unsqueeze(0))[0]
        if self.augment:
            b, _, h, w = x.shape
            p, dev, g = self.pad, x.device, self.generator
            padded = torch.nn.functional.pad(x, (p, p, p, p))  # (B, C, H+2p, W+2p), zeros
            oy = torch.randint(0, 2 * p + 1, (b, 1), generator=g, device=dev)
            ox = torch.randint(0, 2 * p + 1, (b, 1), generator=g, device=dev)
            rows = oy + torch.arange(h, device=dev)  # (B, H)
            cols = ox + torch.arange(w, device=dev)  # (B, W)
            flip = torch.rand(b, 1, generator=g, device=dev) < 0.5
            cols = torch.where(flip, cols.flip(1), cols)  # mirrored window = crop then flip
            idx = torch.arange(b, device=dev).view(b, 1, 1)
            x = padded.permute(0, 2, 3, 1)[idx, rows.unsqueeze(2), cols.unsqueeze(1)]  # (B, H, W, C)
            x = x.permute(0, 3, 1, 2)  # (B, C, H, W)
        return (x.float() / 255.0 - self.mean) / self.std


def _cifar(name: str, root: str | None = None, download: bool = False, augment: bool = True) -> Data:
    x, y, xt, yt, _ = load_cifar(name, root, download)
    mean, std = channel_stats(x)  # the training set's own statistics
    return Data(
        name=name,
        train=TensorData(x, y, transform=CifarTransform(mean, std, augment=augment)),
        test=TensorData(xt, yt, transform=CifarTransform(mean, std, augment=False)),
        num_classes=CIFAR_LAYOUT[name][-1],
        in_channels=3,
    )


#: ImageNet normalization of torchvision's reference scripts (statistics of the ImageNet training set).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _imagenet(root: str | None = None, image_size: int = 224) -> Data:
    """ImageNet from an ImageFolder tree: ``root/train/<class>/*.JPEG`` and ``root/val/<class>/*.JPEG``.

    Augmentation as in torchvision's reference recipe: random-resized crop and flip for training; resize to
    ``image_size · 8/7`` and center crop for validation. Needs torchvision (the extra ``vision``).
    """
    base = _imagenet_root(root)
    try:
        from torchvision import datasets, transforms
    except ImportError:
        raise DataError("imagenet needs torchvision to decode images: install oblique[vision]") from None
    norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            norm,
        ]
    )
    val_tf = transforms.Compose(
        [
            transforms.Resize(image_size * 8 // 7),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            norm,
        ]
    )
    try:
        train = datasets.ImageFolder(str(base / "train"), transform=train_tf)
        val = datasets.ImageFolder(str(base / "val"), transform=val_tf)
    except (FileNotFoundError, OSError) as e:
        raise DataError(f"imagenet in {base} cannot be read: {e}") from None
    if train.classes != val.classes:
        raise DataError(
            f"imagenet in {base}: train/ and val/ must have the same class folders; got {len(train.classes)} "
            f"and {len(val.classes)}"
        )
    return Data("imagenet", train, val, num_classes=len(train.classes), in_channels=3)


def _imagenet_root(root: str | os.PathLike | None) -> Path:
    base = Path(root) if root is not None else cache_dir() / "data" / "imagenet"
    if not (base / "train").is_dir() and (base / "imagenet" / "train").is_dir():
        base = base / "imagenet"
    missing = [s for s in ("train", "val") if not (base / s).is_dir()]
    if missing:
        raise DataError(
            f"imagenet not found: looked for {' and '.join(str(base / s) for s in missing)}; pass --data-root "
            "FOLDER holding train/ and val/ with one subfolder per class (torchvision ImageFolder format)"
        )
    return base


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
    if name in CIFAR_LAYOUT:
        _cifar_root(name, root, download=download)
    elif name == "imagenet":
        _imagenet_root(root)


DATASETS.update(
    {
        "cifar10": partial(_cifar, "cifar10"),
        "cifar100": partial(_cifar, "cifar100"),
        "imagenet": _imagenet,
    }
)

#: name -> number of spatial dimensions of its inputs (1: sequences for Conv1d, 2: images for Conv2d).
SPATIAL_DIMS: dict[str, int] = {"mnist1d": 1, "synthetic": 2, "cifar10": 2, "cifar100": 2, "imagenet": 2}


# --------------------------------------------------------------------------- data options and download
#: The data sets ``download`` can fetch (with torchvision's downloader; the others are generated here or
#: are a folder the user prepares).
DOWNLOADABLE: tuple[str, ...] = tuple(CIFAR_LAYOUT)


class DataOptionError(ObliqueError, ValueError):
    """A data option the data set does not have, or a value outside its range; names ``data_options``."""


@dataclass(frozen=True)
class DataOption:
    """One option a data set accepts (``oblique run --data-option NAME=VALUE``).

    Attributes:
        name: the keyword its loader takes.
        kind: ``int``, ``float`` or ``bool``: what a value is converted to (``"5000"`` from a flag → 5000).
        default: the value when the option is not given (for the help; the loader holds the real one).
        help: one line.
        low, high: the smallest and largest valid value (inclusive; None: no bound).
        open_low, open_high: the bound itself is not valid (``train_split`` > 0 and < 1).
    """

    name: str
    kind: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def expected(self) -> str:
        """What a valid value is, in words (``an integer from 10 to 1000000``)."""
        if self.kind is bool:
            return "true or false"
        what = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None and not (self.open_low or self.open_high):
            return f"{what} from {_bound(self.low)} to {_bound(self.high)}"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.open_low else '>='} {_bound(self.low)}")
        if self.high is not None:
            parts.append(f"{'<' if self.open_high else '<='} {_bound(self.high)}")
        return " ".join([what, " and ".join(parts)]) if parts else what

    def convert(self, value: Any) -> Any:
        """``value`` (a flag's text, or a TOML value) as this option's kind, checked against its range.

        Raises:
            ValueError: not of the kind, or out of range (the message: expected vs got).
        """
        out = _convert(value, self.kind)
        ok = out is not None
        if ok and self.kind is not bool:
            ok = math.isfinite(out)
            if ok and self.low is not None:
                ok = out > self.low if self.open_low else out >= self.low
            if ok and self.high is not None:
                ok = out < self.high if self.open_high else out <= self.high
        if not ok:
            raise ValueError(f"{self.name} must be {self.expected()}; got {short(value, 60)}")
        return out


def _convert(value: Any, kind: type) -> Any:
    """``value`` as ``kind`` (None where it is not one): text is read as a flag's value is."""
    if isinstance(value, str):
        text = value.strip().lower()
        if kind is bool:
            return {"true": True, "1": True, "yes": True, "on": True,
                    "false": False, "0": False, "no": False, "off": False}.get(text)  # fmt: skip
        try:
            value = float(text) if kind is float or not text.lstrip("+-").isdigit() else int(text)
        except ValueError:
            return None
    if kind is bool:
        return value if isinstance(value, bool) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if kind is int:
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            return None
        return int(value)
    return float(value)


def _bound(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


_SEED = 2**32 - 1  # numpy's global seed (np.random.seed, which MNIST-1D's generation uses) is 32-bit

#: data set -> the options it accepts. MNIST-1D: the generation settings of
#: ``mnist1d.data.get_dataset_args`` that keep its inputs 40 long (the models' input length; ``template_len``,
#: ``padding`` and ``final_seq_length`` are left out), with this toolkit's defaults (:data:`MNIST1D_DEFAULTS`).
DATA_OPTIONS: dict[str, dict[str, DataOption]] = {
    name: {o.name: o for o in options}
    for name, options in {
        "mnist1d": (
            DataOption("num_samples", int, 10000, "samples generated, train and test together", 10, 1_000_000),
            DataOption("train_split", float, 0.6, "the share of samples in the training set", 0, 1, True, True),
            DataOption("shear_scale", float, 1.5, "shear strength (package default 0.75)", 0, 1e6),
            DataOption("scale_coeff", float, 0.6, "random scaling, 1 ± c/2 (package default 0.4)", 0, 2, open_high=True),
            DataOption("max_translation", int, 48, "largest circular shift", 1, 72),
            DataOption("corr_noise_scale", float, 0.25, "correlated background noise", 0, 1e6),
            DataOption("iid_noise_scale", float, 2e-2, "independent noise", 0, 1e6),
            DataOption("shuffle_seq", bool, False, "shuffle the 40 positions (the same permutation for all)"),
            DataOption("seed", int, 42, "the generation's seed (not the run's --seed)", 0, _SEED),
        ),
        "synthetic": (
            DataOption("n_train", int, 256, "training samples", 1, 10_000_000),
            DataOption("n_test", int, 128, "test samples", 1, 10_000_000),
            DataOption("num_classes", int, 10, "classes (random labels)", 2, 100_000),
            DataOption("image_size", int, 32, "images are 3 x S x S", 1, 1024),
            DataOption("seed", int, 0, "the generator's seed (not the run's --seed)", 0, 2**63 - 1),
        ),
        **{
            name: (DataOption("augment", bool, True, "pad-4 random crops and horizontal flips of the training set"),)
            for name in CIFAR_LAYOUT
        },
        "imagenet": (DataOption("image_size", int, 224, "crop size of training and validation images", 32, 1024),),
    }.items()
}  # fmt: skip


def check_data_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` of data set ``name``, each converted to its kind and checked against its range.

    A data set with no declared options (one registered by a caller) gets its options unchecked.

    >>> check_data_options("mnist1d", {"num_samples": "5000", "train_split": 0.8})
    {'num_samples': 5000, 'train_split': 0.8}

    Raises:
        DataOptionError: an option ``name`` does not have (the message lists the valid ones), a value of
            the wrong kind or out of range (expected vs got), or MNIST-1D settings that leave a split empty.
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
        try:
            out[key] = declared[key].convert(value)
        except ValueError as e:
            raise DataOptionError(f"data_options: {e} ({name})", settings=("data_options",)) from None
    if name == "mnist1d":
        n = out.get("num_samples", MNIST1D_DEFAULTS["num_samples"]) // 10 * 10  # whole samples per class
        split = out.get("train_split", MNIST1D_DEFAULTS["train_split"])
        if not 1 <= int(n * split) < n:
            raise DataOptionError(
                f"data_options: num_samples {n} with train_split {split:g} leaves the "
                f"{'training' if int(n * split) < 1 else 'test'} set empty; give more samples or another split",
                settings=("data_options",),
            )
    return out


def check_downloadable(name: str) -> None:
    """Refuse ``download`` for a data set that cannot be downloaded (one line saying why).

    Raises:
        DataError: ``name`` is not in :data:`DOWNLOADABLE`.
    """
    if name not in DOWNLOADABLE:
        how = "read from a folder you prepare" if name == "imagenet" else "generated here, never downloaded"
        raise DataError(
            f"download is for {' and '.join(DOWNLOADABLE)} only; {name} is {how}: leave download out",
            settings=("download",),
        )
