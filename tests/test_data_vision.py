"""CIFAR-10/100 and ImageNet loaders, on tiny fake folders in the real on-disk formats."""

from __future__ import annotations

import collections
import pickle

import numpy as np
import pytest
import torch

from oblique.data import CifarTransform, DataError, channel_stats, get_dataset, list_datasets, load_cifar

try:
    import torchvision  # noqa: F401

    HAVE_TV = True
except ImportError:
    HAVE_TV = False


def _batch(n: int, label_key: bytes, classes: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"fake batch",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: rng.integers(0, classes, n).tolist(),
        b"filenames": [b"img%d.png" % i for i in range(n)],
    }


def _dump(path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def make_cifar10(root, n=6):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for i in range(1, 6):
        _dump(d / f"data_batch_{i}", _batch(n, b"labels", 10, i))
    _dump(d / "test_batch", _batch(n, b"labels", 10, 9))
    _dump(d / "batches.meta", {b"label_names": [b"airplane", b"automobile"] + [b"c%d" % i for i in range(8)]})
    return d


def make_cifar100(root, n=7):
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    for name, seed in (("train", 1), ("test", 2)):
        b = _batch(n, b"fine_labels", 100, seed)
        b[b"coarse_labels"] = [0] * n
        _dump(d / name, b)
    _dump(d / "meta", {b"fine_label_names": [b"f%d" % i for i in range(100)], b"coarse_label_names": []})
    return d


def test_registered():
    assert {"cifar10", "cifar100", "imagenet"} <= set(list_datasets())


def test_cifar10_reads_the_pickles(tmp_path):
    d = make_cifar10(tmp_path)
    x, y, xt, yt, names = load_cifar("cifar10", tmp_path)
    assert (
        x.shape == (30, 3, 32, 32)
        and x.dtype == torch.uint8
        and y.shape == (30,)
        and xt.shape == (6, 3, 32, 32)
    )
    with open(d / "data_batch_2", "rb") as f:
        raw = pickle.load(f)
    # channel-major layout: the first 1024 bytes of a row are the red plane
    assert torch.equal(x[6, 0].reshape(-1), torch.from_numpy(raw[b"data"][0, :1024]))
    assert y[6:12].tolist() == raw[b"labels"]
    assert names[:2] == ["airplane", "automobile"]
    # the folder itself may be given, too
    assert torch.equal(load_cifar("cifar10", d)[0], x)


def test_cifar100_fine_labels_and_dataset(tmp_path):
    make_cifar100(tmp_path)
    data = get_dataset("cifar100", root=str(tmp_path))
    assert data.num_classes == 100 and data.in_channels == 3 and len(data.train) == 7
    xb, yb = data.test[[0, 1, 2]]
    assert xb.shape == (3, 3, 32, 32) and xb.dtype == torch.float32 and yb.dtype == torch.int64


def test_normalization_uses_train_statistics(tmp_path):
    make_cifar10(tmp_path)
    data = get_dataset("cifar10", root=str(tmp_path))
    xb, _ = data.test[list(range(len(data.test)))]
    mean, std = channel_stats(data.train.x)
    want = (data.test.x.double() / 255 - mean.double().view(1, 3, 1, 1)) / std.double().view(1, 3, 1, 1)
    assert torch.allclose(xb.double(), want, atol=1e-5)
    xa, _ = data.train[list(range(len(data.train)))]  # augmented, still normalized train batch
    assert xa.shape == (30, 3, 32, 32)
    ref = data.train.x.double() / 255
    assert torch.allclose(mean.double(), ref.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(std.double(), ref.std(dim=(0, 2, 3), unbiased=False), atol=1e-6)


def test_augmentation_is_a_padded_crop_and_flip():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    tf = CifarTransform(torch.zeros(3), torch.ones(3), augment=True)
    out = (tf(x) * 255).round().to(torch.uint8)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    flips = 0
    for i in range(64):  # every output is some 32×32 window of the padded image, maybe mirrored
        found = None
        for oy in range(9):
            for ox in range(9):
                win = padded[i, :, oy : oy + 32, ox : ox + 32]
                if torch.equal(out[i], win):
                    found = "plain"
                elif torch.equal(out[i], win.flip(2)):
                    found = "flip"
        assert found is not None
        flips += found == "flip"
    assert 10 < flips < 54  # both happen
    assert not torch.equal(out, x)  # and it is random, not the identity
    plain = CifarTransform(torch.zeros(3), torch.ones(3), augment=False)
    assert torch.equal((plain(x) * 255).round().to(torch.uint8), x)


def test_missing_folder_says_where_and_what(tmp_path):
    with pytest.raises(DataError) as e:
        get_dataset("cifar10", root=str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "cifar-10-batches-py") in msg and "--data-root" in msg


@pytest.mark.skipif(HAVE_TV, reason="torchvision is installed: download would go to the network")
def test_download_without_torchvision_says_install(tmp_path):
    with pytest.raises(DataError, match=r"install oblique\[vision\]"):
        get_dataset("cifar10", root=str(tmp_path), download=True)


def test_incomplete_or_corrupt_folder(tmp_path):
    d = make_cifar10(tmp_path)
    (d / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3 is missing"):
        load_cifar("cifar10", tmp_path)
    (d / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cannot be read"):
        load_cifar("cifar10", tmp_path)
    _dump(d / "data_batch_3", {b"data": np.zeros((2, 10), dtype=np.uint8), b"labels": [0, 1]})
    with pytest.raises(DataError, match=r"\(N, 3072\)"):
        load_cifar("cifar10", tmp_path)


def test_pickle_with_foreign_objects_is_refused(tmp_path):
    d = make_cifar10(tmp_path)
    _dump(d / "test_batch", {b"data": collections.Counter(), b"labels": []})  # a class outside numpy
    with pytest.raises(DataError, match="cannot be read"):
        load_cifar("cifar10", tmp_path)


def _make_imagenet(root):
    from PIL import Image

    for split in ("train", "val"):
        for c, color in (("n01", (255, 0, 0)), ("n02", (0, 0, 255))):
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (40, 30), color).save(root / split / c / f"img{i}.JPEG", format="JPEG")


def test_imagenet_missing_folder(tmp_path):
    with pytest.raises(DataError) as e:
        get_dataset("imagenet", root=str(tmp_path))
    assert str(tmp_path / "train") in str(e.value) and "ImageFolder" in str(e.value)


@pytest.mark.skipif(HAVE_TV, reason="torchvision is installed")
def test_imagenet_without_torchvision_says_install(tmp_path):
    _make_imagenet(tmp_path)
    with pytest.raises(DataError, match=r"install oblique\[vision\]"):
        get_dataset("imagenet", root=str(tmp_path))


@pytest.mark.skipif(not HAVE_TV, reason="needs torchvision (oblique[vision])")
def test_imagenet_folder_reads(tmp_path):  # pragma: no cover - torchvision not installed here
    _make_imagenet(tmp_path)
    data = get_dataset("imagenet", root=str(tmp_path), image_size=32)
    assert data.num_classes == 2 and len(data.train) == 4
    x, y = data.test[0]
    assert x.shape == (3, 32, 32) and y == 0
