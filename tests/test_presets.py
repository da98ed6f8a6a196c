"""Presets (oblique/presets.py, ``--preset``, ``oblique presets``): each resolves, names its source, lies under
a config file and the flags, round-trips through its TOML, and ``mnist1d-paper`` runs end to end."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace

import pytest

from oblique.cli import build_parser, main
from oblique.cli.presets import preset_toml
from oblique.cli.run import run_config_from_args
from oblique.config import ConfigError, RunConfig, run_config_from
from oblique.presets import PRESETS, PresetError, get_preset, list_presets, preset_settings
from oblique.recipes import recipe_for
from oblique.study import StudyError, expand, spec_from_tables

NAMES = [
    "cifar10-resnet110",
    "cifar100-resnet110",
    "cifar10-wrn28-10",
    "cifar100-wrn28-10",
    "imagenet-resnet50",
    "mnist1d-paper",
]
#: a word of each preset's source that must be there
AUTHORS = {"resnet110": "He et al.", "wrn28-10": "Zagoruyko", "resnet50": "Goyal", "cnn": "Greydanus"}


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_six_presets_resolve_validate_and_name_their_source():
    assert list_presets() == NAMES
    for name in NAMES:
        preset = get_preset(name)
        cfg = RunConfig.from_preset(name).resolved()
        cfg.validate()  # the data folders are not checked here (check_data): only the settings
        assert cfg.preset == name
        assert (cfg.model, cfg.dataset) == (preset.settings["model"], preset.settings["dataset"])
        assert AUTHORS[cfg.model] in preset.source and preset.summary
        # a preset sets no grid variable of a comparison, and only recipe values that differ from the recipe
        assert not {"method", "strength", "seed", "batch_size", "hp"} & set(preset.settings)
        recipe = recipe_for(cfg.model)
        assert all(preset.settings[k] != recipe[k] for k in set(preset.settings) & set(recipe))


def test_recipes_of_the_sources():
    r110 = RunConfig.from_preset("cifar10-resnet110").resolved()
    assert (r110.optimizer, r110.lr, r110.momentum, r110.nesterov, r110.batch_size, r110.epochs) == (
        "sgd",
        0.1,
        0.9,
        False,
        128,
        200,
    )
    assert (r110.milestones, r110.gamma, r110.warmup_epochs, r110.data_options) == (
        [100, 150],
        0.1,
        1.0,
        {"augment": True},
    )
    wrn = RunConfig.from_preset("cifar100-wrn28-10").resolved()
    assert (wrn.nesterov, wrn.milestones, wrn.gamma, wrn.dataset) == (True, [60, 120, 160], 0.2, "cifar100")
    r50 = RunConfig.from_preset("imagenet-resnet50").resolved()
    assert (r50.batch_size, r50.epochs, r50.milestones, r50.data_options) == (
        256,
        90,
        [30, 60],
        {"image_size": 224},
    )


def test_mnist1d_paper_is_the_package_generation_and_the_reference_cnn_recipe():
    from mnist1d.data import get_dataset_args

    from oblique.data import MNIST1D_DEFAULTS

    cfg = RunConfig.from_preset("mnist1d-paper").resolved()
    package = get_dataset_args(as_dict=True)
    package.pop("url", None)
    assert {**package, **MNIST1D_DEFAULTS, **cfg.data_options} == package  # the package's own generation
    train = int(package["num_samples"] * package["train_split"])
    assert (train, package["num_samples"] - train) == (4000, 1000)
    assert (cfg.model, cfg.optimizer, cfg.lr, cfg.batch_size, cfg.schedule, cfg.weight_decay) == (
        "cnn",
        "adam",
        1e-2,
        100,
        "constant",
        0.0,
    )
    assert cfg.epochs * (train // cfg.batch_size) == 6000  # steps


def test_defaults_below_preset_below_config_file_below_flags(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('preset = "mnist1d-paper"\nepochs = 3\nlr = 0.2\n[data_options]\nnum_samples = 2000\n')
    args = build_parser().parse_args(
        ["run", "--config", str(f), "--lr", "0.5", "--data-option", "train_split=0.5"]
    )
    cfg = run_config_from_args(args).resolved()
    assert (cfg.lr, cfg.epochs, cfg.schedule, cfg.optimizer) == (
        0.5,
        3,
        "constant",
        "adam",
    )  # flag, file, preset
    assert cfg.data_options == {
        "num_samples": 2000,
        "train_split": 0.5,
        "shear_scale": 0.75,
        "scale_coeff": 0.4,
        "seed": 42,
    }
    args = build_parser().parse_args(
        ["run", "--preset", "cifar10-resnet110", "--model", "resnet20", "--data-option", "augment=false"]
    )
    cfg = run_config_from_args(args).resolved()
    assert (cfg.model, cfg.warmup_epochs, cfg.data_options) == (
        "resnet20",
        0.0,
        {"augment": False},
    )  # its recipe


@pytest.mark.parametrize("name", NAMES)
def test_toml_round_trip(name, tmp_path):
    text = preset_toml(name)
    direct = run_config_from({"preset": name}).resolved()
    assert run_config_from(tomllib.loads(text)).resolved() == direct
    (tmp_path / "p.toml").write_text(text)  # and as the user copies it: --config FILE
    assert (
        run_config_from_args(
            build_parser().parse_args(["run", "--config", str(tmp_path / "p.toml")])
        ).resolved()
        == direct
    )
    assert f"# source: {get_preset(name).source[:40]}" in text


def test_presets_command_lists_and_prints(capsys):
    code, out, err = _run(["presets"], capsys)
    assert code == 0 and not err
    for name in NAMES:
        assert any(line.startswith(name + " ") for line in out.splitlines())
    assert out.count("source: ") == 6
    code, out, err = _run(["presets", "cifar10-wrn28-10"], capsys)
    assert code == 0 and 'model = "wrn28-10"' in out and "gamma = 0.2" in out and "[data_options]" in out
    code, out, err = _run(["presets", "cifar10-resnet-110"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and ", ".join(NAMES) in err


def test_bad_preset_is_one_line_listing_the_valid_ones(capsys, tmp_path):
    code, out, err = _run(["run", "--preset", "mnist1d", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("oblique: error: unknown --preset 'mnist1d'; valid: " + ", ".join(NAMES))
    assert not (tmp_path / "r").exists()
    f = tmp_path / "s.toml"
    f.write_text('[run]\npreset = "cifar10"\n')
    code, out, err = _run(["study", "--config", str(f), "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and "unknown --preset 'cifar10'" in err and not (tmp_path / "s").exists()
    with pytest.raises(ConfigError, match="unknown preset 'x'"):
        RunConfig(preset="x").resolved().validate()
    with pytest.raises(PresetError):
        preset_settings("x")
    with pytest.raises(ConfigError, match="preset must be text"):
        run_config_from({"preset": 3})


def test_preset_in_a_study(tmp_path):
    tables = {
        "study": {"methods": ["nl", "baseline"], "seeds": [0]},
        "run": {"preset": "mnist1d-paper", "epochs": 1, "data_options": {"num_samples": 200}},
    }
    spec, _ = spec_from_tables(tables)
    runs = expand(spec)
    assert len(runs) == 2
    for run in runs:
        s = run.settings
        assert (s["preset"], s["model"], s["schedule"], s["epochs"], s["optimizer"]) == (
            "mnist1d-paper",
            "cnn",
            "constant",
            1,
            "adam",
        )
        assert s["data_options"] == {**PRESETS["mnist1d-paper"].settings["data_options"], "num_samples": 200}
    # the flags of `oblique study` reach it the same way
    from oblique.cli.study import runs_from_spec, spec_from_args

    args = build_parser().parse_args(
        [
            "study",
            "--preset",
            "mnist1d-paper",
            "--methods",
            "nl",
            "--seeds",
            "1",
            "--data-option",
            "num_samples=300",
            "--epochs",
            "2",
        ]
    )
    (run,) = runs_from_spec(args, spec_from_args(args)[0])
    assert (run.settings["model"], run.settings["epochs"], run.settings["data_options"]["num_samples"]) == (
        "cnn",
        2,
        300,
    )
    with pytest.raises(StudyError, match="preset cannot be a grid variable"):
        expand(spec_from_tables({"study": {"methods": ["nl"]}, "grid": {"preset": NAMES[:2]}})[0])


def test_mnist1d_paper_runs_end_to_end(capsys, tmp_path):
    out = tmp_path / "paper"
    code, stdout, err = _run(
        [
            "run",
            "--preset",
            "mnist1d-paper",
            "--epochs",
            "1",
            "--no-progress",
            "--out",
            str(out),
            "--method",
            "baseline",
        ],
        capsys,
    )
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == "mnist1d-paper"
    assert (config["model"], config["dataset"], config["optimizer"], config["lr"], config["schedule"]) == (
        "cnn",
        "mnist1d",
        "adam",
        0.01,
        "constant",
    )
    assert config["data_options"] == PRESETS["mnist1d-paper"].settings["data_options"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["test_error"] < 90  # one epoch of 40 steps learns
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["steps_per_epoch"] == 40  # 4000 training samples / batch 100
    assert max(r.get("step", 0) for r in records) == 40


def test_mnist1d_paper_is_upstreams_own_loop_step_for_step(tmp_path):
    """The preset (``batch_order = fixed``) against a direct loop over upstream's in-order batches (the
    MNIST-1D notebooks' ``train_model`` takes step ``t``'s batch as ``x[(t·B) mod n : (t·B) mod n + B]``),
    on the package's own generation, at a tiny size (1000 samples: 8 batches an epoch) and in float64, from
    the same initial weights: the same loss at each of the first 80 steps (ten passes over the batches,
    each wrapping back to the first); the shuffled order is another trajectory."""
    import numpy as np
    import torch
    from mnist1d.data import get_dataset_args, make_dataset

    from oblique import records
    from oblique.fit import fit
    from oblique.train import Built, build

    steps, seed, samples = 80, 42, 1000
    cfg = RunConfig.from_preset(
        "mnist1d-paper",
        method="baseline",
        seed=seed,
        epochs=10,
        threads=1,
        data_options={"num_samples": samples},
    ).resolved()
    cfg.validate()
    assert cfg.batch_order == "fixed"

    args = get_dataset_args()
    args.num_samples = samples
    data = make_dataset(args)  # upstream's generation; upstream's torch.Tensor rounds it to float32
    data = {
        k: data[k].astype(np.float32) if k.startswith("x") else data[k]
        for k in ("x", "y", "x_test", "y_test")
    }

    def losses(order: str) -> tuple[list[float], Built]:
        run = build(replace(cfg, batch_order=order))
        assert np.array_equal(run.data.train.x[:, 0].numpy(), data["x"])  # the same samples, same order
        run.model.double()
        run.data.train.x = run.data.train.x.double()
        with records.RunWriter(tmp_path / order) as writer:
            fit(
                run.model,
                run.method,
                run.optimizer,
                run.batches,
                epochs=cfg.epochs,
                scheduler=run.scheduler,
                log_every=steps,
                writer=writer,
            )
        return [r["loss"] for r in records.read_metrics(tmp_path / order, "step")], run

    ours, run = losses("fixed")
    assert len(ours) == steps and len(run.batches) == 8

    # upstream's loop, written out directly: step t trains on x[(t·B) mod n : +B] in stored order (its
    # notebooks' train_model), Adam at the recipe's lr, cross-entropy, from the same initial weights
    model = build(cfg).model.double()
    # upstream's reference CNN, built from its published shapes at its seed: three Conv1d of 25 channels
    # (kernel 5 then 3, stride 2, padding 1) and a linear classifier over 125 features, 5210 parameters
    torch.manual_seed(seed)
    layers = [
        torch.nn.Conv1d(1, 25, 5, stride=2, padding=1),
        torch.nn.Conv1d(25, 25, 3, stride=2, padding=1),
        torch.nn.Conv1d(25, 25, 3, stride=2, padding=1),
        torch.nn.Linear(125, 10),
    ]
    reference = [t.double() for layer in layers for t in (layer.weight, layer.bias)]
    assert sum(t.numel() for t in reference) == 5210
    assert [torch.equal(a, b) for a, b in zip(model.parameters(), reference, strict=True)] == [True] * 8
    x = torch.from_numpy(data["x"]).double().unsqueeze(1)  # (n, 1, 40)
    y = torch.from_numpy(data["y"]).long()
    opt = torch.optim.Adam(model.parameters(), cfg.lr)
    theirs, batch = [], cfg.batch_size
    for step in range(steps):
        i = (step * batch) % len(x)
        loss = torch.nn.functional.cross_entropy(model(x[i : i + batch]), y[i : i + batch])
        theirs.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert len(theirs) == steps
    assert ours == pytest.approx(theirs, rel=1e-12, abs=0)
    shuffled, _ = losses("shuffle")  # the other order is another trajectory
    assert shuffled != pytest.approx(theirs, rel=1e-6)
