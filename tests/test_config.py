"""RunConfig: validation names the setting; the command line renders it as the flag; every field is a flag."""

from __future__ import annotations

from dataclasses import fields

import pytest

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


def test_every_run_setting_has_a_flag_with_help():
    flags = {dest: (name, kw) for name, dest, kw in RUN_FLAGS}
    assert set(flags) == {f.name for f in fields(RunConfig)}
    for f in fields(RunConfig):
        assert f.metadata.get("help"), f"{f.name} has no help text"
    help_text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    for name, _ in flags.values():
        assert name in help_text
    assert flags["progress"][0] == "--no-progress" and flags["overwrite"][0] == "--overwrite"


def test_overlay_merges_hyperparameters_and_run_config_from_names_unknown_keys():
    assert overlay({"hp": {"a": 1}, "lr": 1}, {"hp": [("b", "2")]}) == {"hp": {"a": 1, "b": "2"}, "lr": 1}
    with pytest.raises(ConfigError, match="unknown setting 'lrr'"):
        run_config_from({"lrr": 1}, source="x.toml")
    with pytest.raises(ConfigError, match="'hp' must be a table"):
        run_config_from({"hp": [1, 2]})
