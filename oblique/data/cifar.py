"""CIFAR-10 and CIFAR-100, read from torchvision's on-disk format without torchvision, and downloaded
with torchvision's downloader when asked (``download``).

The standard CIFAR augmentation (:class:`CifarTransform`) runs on whole uint8 batches on the data's
device; the normalization uses the training set's own per-channel statistics (:func:`channel_stats`).
"""

from __future__ import annotations

import importlib
import os
import pickle
import shutil
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch

from oblique.data.base import Data, DataEntry, DataError, TensorData, UnknownDatasetError, cache_dir
from oblique.options import Option

__all__ = ["CIFAR10", "CIFAR100", "CIFAR_LAYOUT", "OPTIONS", "CifarTransform", "channel_stats", "load_cifar"]

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

    def __init__(
        self,
        mean: torch.Tensor,
        std: torch.Tensor,
        augment: bool,
        pad: int = 4,
        generator: torch.Generator | None = None,
    ):
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


#: The options of both CIFAR data sets (``--data-option``).
OPTIONS = (Option("augment", True, "pad-4 random crops and horizontal flips of the training set"),)

CIFAR10, CIFAR100 = (
    DataEntry(
        name,
        partial(_cifar, name),
        OPTIONS,
        spatial_dims=2,
        downloadable=True,
        locate=partial(_cifar_root, name),
    )
    for name in CIFAR_LAYOUT
)
