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
    with pytest.raises(ConfigError, match=r"^lr must be a number > 0 and <= 1000; got -1$") as e:
        train(RunConfig(lr=-1, out=str(tmp_path / "r")))
    assert isinstance(e.value, ObliqueError) and e.value.settings == ("lr",)
    assert not (tmp_path / "r").exists()


def test_the_cli_renders_the_setting_as_its_flag(capsys):
    assert main(["run", "--batch-size", "0", "--out", "never"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "oblique: error: --batch-size must be an integer from 1 to 1000000; got 0"
    )


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


def test_each_setting_is_checked_against_its_declaration():
    """validate checks every setting by its field's declared bounds or choices (RUN_OPTIONS), one wording."""
    from oblique.config import RUN_OPTIONS

    assert set(RUN_OPTIONS) == set(RunConfig.field_names())
    for f in fields(RunConfig):
        assert RUN_OPTIONS[f.name].help == f.metadata["help"]
    for setting, value, expect in (
        ("epochs", 0, "epochs must be an integer from 1 to 1000000; got 0"),
        ("momentum", 1.5, "momentum must be a number from 0 to 1; got 1.5"),
        ("gamma", 0.0, "gamma must be a number > 0 and <= 1; got 0.0"),
        ("milestones", [-1], "milestones must be a list of numbers from 0 to 1000000; got [-1]"),
        ("schedule", "linear", "schedule must be one of constant, multistep, cosine; got 'linear'"),
        ("threads", 0, "threads must be an integer from 1 to 4096; got 0"),
        ("checkpoint_every", -1, "checkpoint_every must be an integer >= 0; got -1"),
        ("log_every", 2000, "log_every must be an integer from 1 to 1024; got 2000"),
        ("seed", 2**63, "seed must be an integer >= 0 and < 2**63; got 9223372036854775808"),
        ("lr", float("nan"), "lr must be a number > 0 and <= 1000; got nan"),
    ):
        cfg = RunConfig(**{setting: value}).resolved()
        with pytest.raises(ConfigError) as e:
            cfg.validate()
        assert str(e.value) == expect and e.value.settings == (setting,)
    RunConfig(threads=None, checkpoint_every=None).resolved().validate()  # optional: None is valid


def test_each_execution_list_is_derived_from_the_run_settings_with_todays_members(tmp_path):
    """The four lists of "how a run executes, not what it computes" come from each field's declared role
    (Execution), and hold exactly these settings."""
    from oblique import records, storage
    from oblique.export import export_csv
    from oblique.study.execute import execution_settings
    from oblique.study.spec import EXECUTION_FIELDS
    from oblique.train import RESUME_OVERRIDES

    assert set(EXECUTION_FIELDS) == set(
        "out threads progress overwrite checkpoint_every log_every download device".split()
    )
    assert EXECUTION_FIELDS == RunConfig.execution_settings()
    assert set(RESUME_OVERRIDES) == {"progress", "device", "log_every", "checkpoint_every"}
    assert RESUME_OVERRIDES == RunConfig.execution_settings(on_resume=True)
    decided = {"out", "threads", "progress", "overwrite", "download"}
    assert set(RunConfig.execution_settings(study_decides=True)) == decided
    # what a study passes on to its runs: the execution settings it does not decide itself
    given = dict(out="x", threads=2, progress=False, overwrite=True, download=True, device="cpu", log_every=7)
    given.update(checkpoint_every=3, epochs=2)
    assert execution_settings(given) == {"device": "cpu", "log_every": 7, "checkpoint_every": 3}
    # an export tells runs apart by every differing setting but these (and the machine's own record keys)
    assert set(RunConfig.execution_settings(tells_runs_apart=False)) == {
        "out",
        "threads",
        "progress",
        "overwrite",
    }
    machine = {"threads_used", "device_used", "torch_version", "num_params"}  # the record's, not settings
    differ = {
        "out",
        "threads",
        "progress",
        "overwrite",
        "device",
        "log_every",
        "checkpoint_every",
        "download",
    }
    differ |= machine | {"lr"}
    for i in (0, 1):
        run = tmp_path / f"run{i}"
        run.mkdir()
        config = {k: f"{k}-{i}" for k in differ} | {"method": "nl", "hp": {"form": str(i)}}
        storage.write_json_atomic(run / records.CONFIG, config)
        with storage.JsonLinesWriter(run / records.METRICS) as w:
            w.write({"type": "meta", "schema_version": 1, "steps_per_epoch": 1, "total_steps": 1})
    header = (export_csv(tmp_path)).read_text().splitlines()[0].split(",")
    assert {"device", "log_every", "checkpoint_every", "download", "lr"} <= set(header)
    assert not set(header) & ({"out", "threads", "progress", "overwrite", "hp"} | machine)
    with pytest.raises(TypeError, match="no execution role"):
        RunConfig.execution_settings(resumable=True)


def test_a_run_folder_that_is_a_file_is_refused_by_the_one_folder_check(tmp_path):
    (tmp_path / "FILE").write_text("x\n")
    with pytest.raises(ConfigError, match=r"^out .*FILE exists and is not a folder") as e:
        RunConfig(out=str(tmp_path / "FILE")).resolved().validate()
    assert e.value.settings == ("out",)
    with pytest.raises(ConfigError, match=r"^data_root must be a folder name \(not empty\); got ' '$"):
        RunConfig(data_root=" ").resolved().validate()


def test_train_and_fit_have_one_import_path():
    import oblique.train

    for name in ("RunConfig", "ConfigError", "fit", "FitState", "evaluate", "SCHEDULES", "resolve_device"):
        assert name not in oblique.train.__all__
    assert not hasattr(oblique.train, "evaluate") and not hasattr(oblique.train, "SCHEDULES")
