"""oblique.data: MNIST-1D generated offline, cached, regenerated when corrupt."""

import numpy as np
import pytest
import torch

from oblique import data


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIQUE_CACHE", str(tmp_path))
    return tmp_path


SMALL = {"num_samples": 200, "train_split": 0.75}


def test_mnist1d_generated_and_cached(cache):
    x, y, xt, yt = data.load_mnist1d(**SMALL)
    assert x.shape == (150, 40) and xt.shape == (50, 40)
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert set(np.unique(np.concatenate([y, yt]))) <= set(range(10))
    files = list((cache / "mnist1d").glob("*.npz"))
    assert len(files) == 1
    x2, *_ = data.load_mnist1d(**SMALL)  # from the cache, identical
    np.testing.assert_array_equal(x, x2)


def test_mnist1d_is_seeded(cache):
    a = data.load_mnist1d(**SMALL, seed=1)[0]
    b = data.load_mnist1d(**SMALL, seed=2)[0]
    assert not np.array_equal(a, b)


def test_corrupt_cache_is_regenerated(cache):
    x, *_ = data.load_mnist1d(**SMALL)
    (f,) = (cache / "mnist1d").glob("*.npz")
    f.write_bytes(f.read_bytes()[:100])  # truncated
    with pytest.warns(data.DataWarning, match="unreadable; regenerating"):
        x2, *_ = data.load_mnist1d(**SMALL)
    np.testing.assert_array_equal(x, x2)


def test_unknown_setting_is_refused(cache):
    with pytest.raises(ValueError, match="unknown MNIST-1D setting"):
        data.load_mnist1d(noise=3)


def test_dataset_bundle_for_conv1d(cache):
    d = data.get_dataset("mnist1d", num_samples=100, train_split=0.5)
    x, y = d.train[[0, 1, 2]]
    assert x.shape == (3, 1, 40) and y.shape == (3,)
    assert d.num_classes == 10 and d.in_channels == 1


def test_unknown_dataset():
    with pytest.raises(data.UnknownDatasetError, match="valid: mnist1d"):
        data.get_dataset("mnist2d")


def test_synthetic_is_seeded():
    a, b = data.synthetic(seed=3), data.synthetic(seed=3)
    assert torch.equal(a.train.x, b.train.x)


def test_an_unwritable_cache_warns_and_goes_on(tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    monkeypatch.setenv("OBLIQUE_CACHE", str(tmp_path / "cache"))
    with pytest.warns(data.DataWarning, match=r"MNIST-1D cache cannot be written .*\$OBLIQUE_CACHE"):
        x, y, xt, yt = data.load_mnist1d(num_samples=200)
    assert len(x) + len(xt) == 200


def test_the_cache_file_is_readable_by_everyone(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIQUE_CACHE", str(tmp_path))
    data.load_mnist1d(num_samples=200)
    (f,) = (tmp_path / "mnist1d").glob("*.npz")
    assert f.stat().st_mode & 0o777 == 0o644
