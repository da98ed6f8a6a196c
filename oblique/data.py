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
import os
import pickle
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from oblique import records
from oblique.errors import ObliqueError, ObliqueWarning

__all__ = [
    "DATASETS",
    "MNIST1D_DEFAULTS",
    "Data",
    "CifarTransform",
    "DataError",
    "DataWarning",
    "TensorData",
    "UnknownDatasetError",
    "cache_dir",
    "channel_stats",
    "check_dataset",
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
        records.write_atomic(path, lambda f: np.savez(f, **arrays))
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


def _synthetic(root: str | None = None, **kwargs) -> Data:
    return synthetic(**kwargs)


#: name -> loader(root, **options) -> Data. ``root`` is the data folder for on-disk data sets.
DATASETS: dict[str, Callable[..., Data]] = {
    "mnist1d": _mnist1d,
    "synthetic": _synthetic,
}


def list_datasets() -> list[str]:
    """Names of every registered data set."""
    return list(DATASETS)


def get_dataset(name: str, root: str | None = None, **options) -> Data:
    """Load data set ``name``; on-disk data sets read ``root``.

    Raises:
        UnknownDatasetError: unknown name (the message lists the valid ones).
        DataError: the data cannot be read (the message says what to do).
    """
    try:
        loader = DATASETS[name]
    except KeyError:
        raise UnknownDatasetError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}") from None
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
        try:
            import torchvision.datasets as tvd
        except ImportError:
            raise DataError(
                f"download=True needs torchvision: install oblique[vision], or put the {folder} folder in {base}"
            ) from None
        getattr(tvd, "CIFAR10" if name == "cifar10" else "CIFAR100")(str(base), train=True, download=True)
    if not (base / folder).is_dir():
        raise DataError(
            f"{name} not found: looked for {base / folder} (torchvision's on-disk format); pass --data-root "
            f"FOLDER that holds {folder}, or download it there (python version from "
            "https://www.cs.toronto.edu/~kriz/cifar.html, or download=True with torchvision installed)"
        )
    return base / folder


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
    whole uint8 batch at once, each image with its own window and flip, from torch's global generator (the
    trainer seeds it). Then ``(x / 255 − mean) / std``.

    Args:
        mean: per-channel mean in [0, 1] units, ``(C,)``.
        std: per-channel standard deviation, ``(C,)``.
        augment: whether to crop and flip (train sets) or only normalize (test sets).
        pad: the padding of the random crop.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, augment: bool, pad: int = 4):
        self.mean = mean.view(1, -1, 1, 1)  # (1, C, 1, 1)
        self.std = std.view(1, -1, 1, 1)
        self.augment, self.pad = augment, pad

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # a single image (C, H, W)
            return self(x.unsqueeze(0))[0]
        if self.augment:
            b, _, h, w = x.shape
            p = self.pad
            padded = torch.nn.functional.pad(x, (p, p, p, p))  # (B, C, H+2p, W+2p), zeros
            oy = torch.randint(0, 2 * p + 1, (b, 1))
            ox = torch.randint(0, 2 * p + 1, (b, 1))
            rows = oy + torch.arange(h)  # (B, H)
            cols = ox + torch.arange(w)  # (B, W)
            flip = torch.rand(b, 1) < 0.5
            cols = torch.where(flip, cols.flip(1), cols)  # mirrored window = crop then flip
            idx = torch.arange(b).view(b, 1, 1)
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


def check_dataset(name: str, root: str | os.PathLike | None = None) -> None:
    """Check, without reading it, that data set ``name`` can be found (its folder under ``root`` for the
    on-disk data sets; the generated ones always can): a study refuses up front what would fail every run.

    Raises:
        UnknownDatasetError: an unknown name.
        DataError: the on-disk folder is not there (the message says where it looked and what to do).
    """
    if name not in DATASETS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    if name in CIFAR_LAYOUT:
        _cifar_root(name, root, download=False)
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
