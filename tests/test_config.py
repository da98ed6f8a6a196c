"""RunConfig: validation names the setting; the command line renders it as the flag; every field is a flag."""

from __future__ import annotations

from dataclasses import fields

import pytest
from hostile_world import refused

from oblique.cli import build_parser, main
from oblique.cli.run import RUN_FLAGS
from oblique.config import ConfigError, RunConfig, overlay, run_config_from
from oblique.errors import ObliqueError
from oblique.train import train


def test_a_library_error_names_the_setting_not_the_flag(tmp_path):
    with pytest.raises(ConfigError, match=r"^lr must be a number > 0; got -1$") as e:
        train(RunConfig(lr=-1, out=str(tmp_path / "r")))
    assert isinstance(e.value, ObliqueError) and e.value.settings == ("lr",)
    assert not (tmp_path / "r").exists()


def test_the_cli_renders_the_setting_as_its_flag(capsys):
    assert main(["run", "--batch-size", "0", "--out", "never"]) == 2
    assert capsys.readouterr().err.strip() == "oblique: error: --batch-size must be an integer >= 1; got 0"


def test_every_run_setting_has_a_flag_with_help(capsys):
    flags = {dest: (name, kw) for name, dest, kw in RUN_FLAGS}
    assert set(flags) == {f.name for f in fields(RunConfig)}
    for f in fields(RunConfig):
        assert f.metadata.get("help"), f"{f.name} has no help text"
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["run", "--help"])
    help_text = capsys.readouterr().out
    assert e.value.code == 0 and help_text.startswith("usage: oblique run")
    for name, _ in flags.values():
        assert name in help_text
    assert flags["progress"][0] == "--no-progress" and flags["overwrite"][0] == "--overwrite"


def test_overlay_merges_hyperparameters_and_run_config_from_names_unknown_keys():
    assert overlay({"hp": {"a": 1}, "lr": 1}, {"hp": [("b", "2")]}) == {"hp": {"a": 1, "b": "2"}, "lr": 1}
    with pytest.raises(ConfigError, match="unknown setting 'lrr'"):
        run_config_from({"lrr": 1}, source="x.toml")
    with pytest.raises(ConfigError, match="'hp' must be a table"):
        run_config_from({"hp": [1, 2]})


# --------------------------------------------------------------------------- every setting checked, in files and flags
@pytest.mark.parametrize("setting", ["overwrite", "progress", "save_model"])
def test_a_run_file_boolean_must_be_true_or_false(world, setting):
    (world.root / "bool.toml").write_text(f'{setting} = "no"\nmodel = "cnn"\n')
    refused(
        world,
        ["run", "--config", "bool.toml", "--out", "FINISHED"],
        f"--{setting.replace('_', '-')} must be true or false; got 'no'",
    )


@pytest.mark.parametrize(
    "setting,value,expect",
    [
        ("epochs", 1.5, "must be an integer; got 1.5"),
        ("lr", "0.1", "must be a number; got '0.1'"),
        ("nesterov", 1, "must be true or false; got 1"),
        ("milestones", [1, "x"], "must be a list of numbers"),
        ("hp", [1, 2], "must be a table of NAME = VALUE"),
        ("model", 3, "must be text; got 3"),
        ("data_root", 5, "must be text; got 5"),
        ("seed", "x", "must be an integer; got 'x'"),
        ("seed", True, "must be an integer; got True"),
    ],
)
def test_every_run_setting_is_checked_against_its_kind(setting, value, expect):
    with pytest.raises(ConfigError, match=rf"^{setting} {expect}") as e:
        RunConfig(**{setting: value})
    assert e.value.settings == (setting,)


@pytest.mark.parametrize(
    "doc,expect",
    [
        ("model = 3", "--model must be text; got 3"),
        ("hp = [1, 2]", "'hp' must be a table of NAME = VALUE"),
        ('seed = "x"', "--seed must be an integer; got 'x'"),
        ("seed = 1.5", "--seed must be an integer; got 1.5"),
        ("data_root = 5", "--data-root must be text; got 5"),
        ('out = ""', "--out must be a folder name"),
    ],
)
def test_a_wrong_typed_run_file_is_one_line_naming_the_flag(world, doc, expect):
    (world.root / "bad-run.toml").write_text(doc + "\n")
    refused(world, ["run", "--config", "bad-run.toml"], expect)


@pytest.mark.parametrize(
    "argv,expect",
    [
        (["--warmup-epochs", "1e308"], "--warmup-epochs must be a number of epochs <= 1000000; got 1e+308"),
        (["--milestones", "1e308"], "--milestones must be a list of epochs <= 1000000"),
        (["--gamma", "1e308", "--milestones", "0,0"], "--gamma must be a number > 0 and <= 1"),
        (["--epochs", "10000000000"], "--epochs must be an integer <= 1000000"),
        (["--batch-size", "1" + "0" * 30], "--batch-size must be an integer <= 1000000"),
        (
            ["--lr", "1e308"],
            "--lr must be a number <= 1000; got 1e+308",
        ),  # beyond: the optimizer's step overflows
        (["--weight-decay", "1e308"], "--weight-decay must be a number <= 1000"),
        (["--momentum", "2"], "--momentum must be a number <= 1; got 2.0"),
    ],
)
def test_a_run_refuses_a_schedule_or_size_beyond_its_bounds(world, argv, expect):
    refused(world, ["run", *argv, "--out", "FINISHED", "--overwrite"], expect)
