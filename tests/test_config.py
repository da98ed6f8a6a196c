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
        ("epochs", 1.5, "must be an integer from 1 to 1000000; got 1.5"),
        ("lr", "0.1", "must be a number > 0 and <= 1000; got '0.1'"),
        ("nesterov", 1, "must be true or false; got 1"),
        ("milestones", [1, "x"], "must be a list of numbers"),
        ("hp", [1, 2], "must be a table of NAME = VALUE"),
        ("model", 3, "must be text; got 3"),
        ("data_root", 5, "must be text; got 5"),
        ("seed", "x", r"must be an integer >= 0 and < 2\*\*63; got 'x'"),
        ("seed", True, r"must be an integer >= 0 and < 2\*\*63; got True"),
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
        ('seed = "x"', "--seed must be an integer >= 0 and < 2**63; got 'x'"),
        ("seed = 1.5", "--seed must be an integer >= 0 and < 2**63; got 1.5"),
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
        (["--warmup-epochs", "1e308"], "--warmup-epochs must be a number from 0 to 1000000; got 1e+308"),
        (["--milestones", "1e308"], "--milestones must be a list of numbers from 0 to 1000000"),
        (["--gamma", "1e308", "--milestones", "0,0"], "--gamma must be a number > 0 and <= 1"),
        (["--epochs", "10000000000"], "--epochs must be an integer from 1 to 1000000"),
        (["--batch-size", "1" + "0" * 30], "--batch-size must be an integer from 1 to 1000000"),
        (
            ["--lr", "1e308"],
            "--lr must be a number > 0 and <= 1000; got 1e+308",
        ),  # beyond: the optimizer's step overflows
        (["--weight-decay", "1e308"], "--weight-decay must be a number from 0 to 1000"),
        (["--momentum", "2"], "--momentum must be a number from 0 to 1; got 2.0"),
    ],
)
def test_a_run_refuses_a_schedule_or_size_beyond_its_bounds(world, argv, expect):
    refused(world, ["run", *argv, "--out", "FINISHED", "--overwrite"], expect)
