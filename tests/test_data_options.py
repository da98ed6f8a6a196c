"""Data options (``--data-option KEY=VALUE``) and ``--download``: declared per data set, checked up front with
one line (a bad key lists the valid ones, a bad value says expected vs got), passed to the loader, recorded
in config.json; a download that cannot happen leaves nothing behind."""

from __future__ import annotations

import json
import pickle
import sys
import types
import urllib.error

import numpy as np
import pytest

from oblique import data
from oblique.cli import main
from oblique.config import ConfigError, RunConfig, run_config_from
from oblique.data import DATA_OPTIONS, DataError, DataOptionError, check_data_options, get_dataset

try:
    import torchvision  # noqa: F401

    HAVE_TV = True
except ImportError:
    HAVE_TV = False

QUICK = ["--epochs", "1", "--no-progress", "--model", "cnn"]


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code, err) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oblique: error: ") and "Traceback" not in err, err
    return lines[0]


def test_every_data_set_declares_its_options():
    assert set(DATA_OPTIONS) == set(data.DATASETS)
    assert list(DATA_OPTIONS["cifar10"]) == list(DATA_OPTIONS["cifar100"]) == ["augment"]
    assert list(DATA_OPTIONS["imagenet"]) == ["image_size"]
    assert {"n_train", "n_test", "num_classes", "image_size"} <= set(DATA_OPTIONS["synthetic"])
    from mnist1d.data import get_dataset_args

    package = get_dataset_args(as_dict=True)
    assert set(DATA_OPTIONS["mnist1d"]) <= set(package)  # generation settings of the package
    for option in DATA_OPTIONS["mnist1d"].values():  # the declared default is the one used
        assert option.default == data.MNIST1D_DEFAULTS.get(option.name, package[option.name]), option.name


def test_values_are_converted_to_their_kind():
    got = check_data_options(
        "mnist1d",
        {"num_samples": "5000", "train_split": "0.8", "shuffle_seq": "true", "seed": 7.0, "shear_scale": 1},
    )
    assert got == {
        "num_samples": 5000,
        "train_split": 0.8,
        "shuffle_seq": True,
        "seed": 7,
        "shear_scale": 1.0,
    }
    assert type(got["shear_scale"]) is float and type(got["seed"]) is int
    assert check_data_options("cifar10", {"augment": "no"}) == {"augment": False}
    cfg = run_config_from({"data_options": [("num_samples", "300"), ("train_split", "0.5")]}).resolved()
    assert cfg.data_options == {"num_samples": 300, "train_split": 0.5}  # typed in config.json


@pytest.mark.parametrize(
    "dataset,options,expect",
    [
        (
            "mnist1d",
            {"noise": 1},
            "mnist1d has no option 'noise'; valid: num_samples, train_split, shear_scale",
        ),
        ("mnist1d", {"padding": 3}, "has no option 'padding'"),  # a package setting that changes the length
        ("mnist1d", {"num_samples": "abc"}, "num_samples must be an integer from 10 to 1000000; got 'abc'"),
        ("mnist1d", {"num_samples": 2.5}, "num_samples must be an integer from 10 to 1000000; got 2.5"),
        ("mnist1d", {"train_split": 1}, "train_split must be a number > 0 and < 1; got 1"),
        ("mnist1d", {"scale_coeff": 2}, "scale_coeff must be a number >= 0 and < 2; got 2"),
        (
            "mnist1d",
            {"iid_noise_scale": "nan"},
            "iid_noise_scale must be a number from 0 to 1000000; got 'nan'",
        ),
        ("mnist1d", {"shuffle_seq": "maybe"}, "shuffle_seq must be true or false; got 'maybe'"),
        ("mnist1d", {"seed": -1}, "seed must be an integer from 0 to 4294967295; got -1"),
        (
            "mnist1d",
            {"num_samples": 10, "train_split": 0.05},
            "num_samples 10 with train_split 0.05 leaves the training set empty",
        ),
        ("cifar10", {"num_samples": 5}, "cifar10 has no option 'num_samples'; valid: augment"),
        ("cifar100", {"augment": 3}, "augment must be true or false; got 3"),
        ("imagenet", {"image_size": 8}, "image_size must be an integer from 32 to 1024; got 8"),
        ("synthetic", {"n_train": 0}, "n_train must be an integer from 1 to 10000000; got 0"),
    ],
)
def test_bad_keys_and_values_say_what_is_valid(dataset, options, expect):
    with pytest.raises(DataOptionError) as e:
        check_data_options(dataset, options)
    assert expect in str(e.value) and "\n" not in str(e.value) and e.value.settings == ("data_options",)
    cfg = RunConfig(
        dataset=dataset, model="cnn" if dataset == "mnist1d" else "resnet20", data_options=options
    )
    with pytest.raises(ConfigError, match=r"^data_options\b") as e:  # refused before any data is read
        cfg.resolved().validate()
    assert expect in str(e.value) and e.value.settings == ("data_options",)


@pytest.mark.parametrize(
    "argv,expect",
    [
        (["--data-option", "noise=3"], "--data-option: mnist1d has no option 'noise'; valid: num_samples, "),
        (
            ["--data-option", "num_samples=many"],
            "--data-option num_samples must be an integer from 10 to 1000000; got 'many' (mnist1d)",
        ),
        (["--data-option", "num_samples"], "argument --data-option: expected NAME=VALUE, got 'num_samples'"),
        (
            ["--dataset", "synthetic", "--model", "resnet20", "--data-option", "augment=true"],
            "synthetic has no option 'augment'",
        ),
        (
            ["--download"],
            "--download is for cifar10 and cifar100 only; mnist1d is generated here, never downloaded",
        ),
        (
            ["--dataset", "imagenet", "--model", "resnet50", "--download"],
            "imagenet is read from a folder you prepare",
        ),
    ],
)
def test_command_line_errors_are_one_line(argv, expect, capsys, tmp_path):
    line = _one_line_error(*_run(["run", *QUICK, *argv, "--out", str(tmp_path / "r")], capsys)[::2])
    assert expect in line, line
    assert not (tmp_path / "r").exists()


def test_options_reach_the_data_and_config_json(capsys, tmp_path):
    d = get_dataset("mnist1d", num_samples="200", train_split=0.5)  # flag text works in the library too
    assert (len(d.train), len(d.test)) == (100, 100)
    s = get_dataset("synthetic", n_train=8, n_test=4, image_size=8, num_classes=3)
    assert s.train.x.shape == (8, 3, 8, 8) and len(s.test) == 4 and int(s.train.y.max()) < 3
    out = tmp_path / "r"
    code, _, err = _run(
        [
            "run",
            *QUICK,
            "--data-option",
            "num_samples=200",
            "--data-option",
            "train_split=0.5",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["data_options"] == {"num_samples": 200, "train_split": 0.5} and config["download"] is False
    meta = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert meta["steps_per_epoch"] == 1  # 100 training samples, batch 100
    # in a config file, the table [data_options]; the flags merge into it key by key
    f = tmp_path / "run.toml"
    f.write_text("[data_options]\nnum_samples = 300\ntrain_split = 0.5\n")
    code, _, err = _run(
        [
            "run",
            *QUICK,
            "--config",
            str(f),
            "--data-option",
            "num_samples=400",
            "--out",
            str(tmp_path / "r2"),
        ],
        capsys,
    )
    assert code == 0, err
    config = json.loads((tmp_path / "r2" / "config.json").read_text())
    assert config["data_options"] == {"num_samples": 400, "train_split": 0.5}


def _fake_cifar10(folder, n: int = 4) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [i % 10 for i in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)]}))


def test_cifar_augment_option(tmp_path):
    _fake_cifar10(tmp_path / "cifar-10-batches-py")
    assert get_dataset("cifar10", root=str(tmp_path)).train.transform.augment is True
    assert get_dataset("cifar10", root=str(tmp_path), augment="false").train.transform.augment is False


def _fake_torchvision(monkeypatch, download):
    """torchvision.datasets with a CIFAR10 whose download is ``download(root)``."""
    tv, tvd = types.ModuleType("torchvision"), types.ModuleType("torchvision.datasets")

    class CIFAR10:
        def __init__(self, root, train=True, download=False):
            assert download
            downloader(root)

    downloader = download
    tvd.CIFAR10 = tvd.CIFAR100 = CIFAR10
    tv.datasets = tvd
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", tvd)


def test_download_unreachable_is_one_line_and_leaves_nothing(monkeypatch, capsys, tmp_path):
    def unreachable(root):
        from pathlib import Path

        (Path(root) / "cifar-10-python.tar.gz").write_bytes(b"half an archive")  # what a cut download leaves
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    _fake_torchvision(monkeypatch, unreachable)
    root, out = tmp_path / "data" / "cifar", tmp_path / "run"
    line = _one_line_error(
        *_run(
            [
                "run",
                "--dataset",
                "cifar10",
                "--model",
                "resnet20",
                "--download",
                "--data-root",
                str(root),
                "--out",
                str(out),
                "--epochs",
                "1",
            ],
            capsys,
        )[::2]
    )
    assert (
        "cifar10 could not be downloaded" in line
        and "name resolution" in line
        and "cifar-10-batches-py" in line
    )
    assert not (tmp_path / "data").exists() and not out.exists()  # the folders it made are gone again
    (tmp_path / "mine").mkdir()  # a folder the user made stays, and stays as it was
    with pytest.raises(DataError, match="could not be downloaded"):
        get_dataset("cifar10", root=str(tmp_path / "mine"), download=True)
    assert list((tmp_path / "mine").iterdir()) == []


def test_download_moves_a_complete_folder_into_place(monkeypatch, tmp_path):
    from pathlib import Path

    calls = []

    def fetch(root):
        calls.append(root)
        _fake_cifar10(Path(root) / "cifar-10-batches-py")

    _fake_torchvision(monkeypatch, fetch)
    d = get_dataset("cifar10", root=str(tmp_path / "data"), download=True)
    assert len(d.train) == 20 and len(calls) == 1
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["cifar-10-batches-py"]  # no temporary left
    get_dataset("cifar10", root=str(tmp_path / "data"), download=True)
    assert len(calls) == 1  # there already: not downloaded again
    # a study downloads once, while planning, before any run starts
    from oblique.study import expand, spec_from_tables

    tables = {
        "study": {"methods": ["nl", "wd"], "seeds": [0, 1]},
        "run": {
            "dataset": "cifar10",
            "model": "resnet20",
            "download": True,
            "data_root": str(tmp_path / "s"),
        },
    }
    runs = expand(spec_from_tables(tables)[0])
    assert len(calls) == 2 and (tmp_path / "s" / "cifar-10-batches-py").is_dir()
    assert all("download" not in r.settings for r in runs)  # how the data got there is not part of a run


@pytest.mark.skipif(HAVE_TV, reason="torchvision is installed: the download would go to the network")
def test_download_without_torchvision_is_one_line(capsys, tmp_path):
    line = _one_line_error(
        *_run(
            [
                "run",
                "--dataset",
                "cifar100",
                "--model",
                "resnet20",
                "--download",
                "--data-root",
                str(tmp_path / "d"),
                "--out",
                str(tmp_path / "r"),
            ],
            capsys,
        )[::2]
    )
    assert "download needs torchvision: install oblique[vision]" in line
    assert not (tmp_path / "d").exists() and not (tmp_path / "r").exists()
