"""ImageNet from an ImageFolder tree the user prepares (``root/train/<class>/*.JPEG``, ``root/val/...``);
decoded by torchvision (the extra ``vision``)."""

from __future__ import annotations

import os
from pathlib import Path

from oblique.data.base import Data, DataEntry, DataError, cache_dir
from oblique.options import Option

__all__ = ["IMAGENET", "IMAGENET_MEAN", "IMAGENET_STD", "OPTIONS"]

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


#: ImageNet's option (``--data-option``).
OPTIONS = (
    Option("image_size", 224, "crop size of training and validation images", minimum=32, maximum=1024),
)


def _locate(root: str | os.PathLike | None, download: bool) -> Path:
    return _imagenet_root(root)


IMAGENET = DataEntry("imagenet", _imagenet, OPTIONS, spatial_dims=2, locate=_locate)
