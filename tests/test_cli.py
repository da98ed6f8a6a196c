"""The `oblique` command: every bad input gets one line, exit status 2, and nothing is overwritten."""

import json
import subprocess
import sys

import pytest
from hostile_world import refused

from oblique.cli import main
from oblique.errors import ObliqueError


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


QUICK = ["--epochs", "1", "--no-progress", "--model", "cnn"]


@pytest.mark.parametrize(
    "argv,expect",
    [
        (["run", "--method", "nope"], "unknown method 'nope'; valid: baseline, wd, nl"),
        (["run", "--model", "nope"], "--model must be one of resnet1d, cnn"),
        (["run", "--dataset", "mnist2d"], "--dataset must be one of mnist1d"),
        (["run", "--optimizer", "lbfgs"], "--optimizer must be one of sgd, adam, adamw, muon; got 'lbfgs'"),
        (
            ["run", "--method", "oblique-rsgd", "--optimizer", "muon"],
            "--optimizer muon does not apply to method oblique-rsgd: it brings its own Riemannian optimizer, "
            "sgd or adam",
        ),
        (["run", "--muon-lr", "0.1"], "--muon-lr applies to --optimizer muon only (this run's is sgd)"),
        (["run", "--optimizer", "muon", "--muon-lr", "0"], "--muon-lr must be a number > 0"),
        (["run", "--schedule", "linear"], "--schedule must be one of constant, multistep, cosine"),
        (
            ["run", "--targets", "convs"],
            "--targets must be layer kinds joined by + (from conv, conv_transpose, ",
        ),
        (["run", "--strength", "-0.1"], "--strength must be a number >= 0; got -0.1"),
        (["run", "--batch-size", "0"], "--batch-size must be an integer from 1 to 1000000; got 0"),
        (["run", "--epochs", "0"], "--epochs must be an integer from 1 to 1000000"),
        (["run", "--lr", "-1"], "--lr must be a number > 0"),
        (["run", "--momentum", "-0.5"], "--momentum must be a number from 0 to 1"),
        (
            ["run", "--model", "resnet20"],
            "--model resnet20 takes images but --dataset mnist1d has 1-D sequences",
        ),
        (["run", "--model", "wrn27-4", "--dataset", "synthetic"], "--model wrn27-4: "),
        (["run", "--hp", "form=fast"], "--hp form must be one of closed, autograd; got 'fast' (nl)"),
        (["run", "--hp", "steps=3"], "method 'nl' has no hyperparameter 'steps'; valid --hp names: form"),
        (["run", "--hp", "=0"], "expected NAME=VALUE, got '=0' (no NAME)"),
        (["run", "--hp", "strength=0"], "set --strength itself, not --hp strength='0'"),
        (["run", "--method", "so", "--hp", "targets=all"], "set --targets itself, not --hp targets="),
        (["run", "--batch-size", "ten"], "invalid int value: 'ten'"),
        (["run", "--bogus"], "unrecognized arguments: --bogus"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, expect, capsys, tmp_path):
    code, out, err = _run(
        [*argv, "--out", str(tmp_path / "r")] if argv[0] == "run" and "--bogus" not in argv else argv, capsys
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("oblique: error: ")
    assert expect in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing written


def test_unreadable_and_unknown_config(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = [\n")
    code, _, err = _run(["run", "--config", str(bad)], capsys)
    assert code == 2 and "cannot be read" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(["run", "--config", str(tmp_path / "missing.toml")], capsys)
    assert code == 2 and "does not exist" in err
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("epochz = 3\n")
    code, _, err = _run(["run", "--config", str(unknown)], capsys)
    assert code == 2 and "unknown setting 'epochz'" in err


def test_finished_run_is_not_overwritten(capsys, tmp_path):
    out = tmp_path / "run"
    assert _run(["run", *QUICK, "--out", str(out)], capsys)[0] == 0
    before = (out / "summary.json").read_bytes()
    code, _, err = _run(["run", *QUICK, "--seed", "1", "--out", str(out)], capsys)
    assert code == 2 and "already holds a finished run; pass --overwrite" in err
    assert (out / "summary.json").read_bytes() == before
    assert _run(["run", *QUICK, "--seed", "1", "--out", str(out), "--overwrite"], capsys)[0] == 0
    assert json.loads((out / "summary.json").read_text())["seed"] == 1


def test_config_file_and_flags(capsys, tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('method = "wd"\nstrength = 0.002\nepochs = 1\nmodel = "cnn"\nbatch-size = 50\n[hp]\n')
    out = tmp_path / "run"
    code, stdout, _ = _run(
        ["run", "--config", str(cfg), "--strength", "0.003", "--out", str(out), "--no-progress"], capsys
    )
    assert code == 0, stdout
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "wd" and config["batch_size"] == 50
    assert config["strength"] == 0.003  # the flag overrides the file
    assert config["optimizer"] == "adam"  # the cnn recipe fills what neither names


def test_methods_lists_every_method(capsys):
    import oblique

    code, out, _ = _run(["methods"], capsys)
    assert code == 0
    for name in oblique.list_methods():
        assert f"\n{name} " in out
    assert "form=closed" in out


def test_entry_point_exit_status():
    p = subprocess.run(
        [sys.executable, "-m", "oblique", "run", "--method", "nope"], capture_output=True, text=True
    )
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


#: Every true/false word in several cases, and text that is none of them.
WORDS = sorted(
    {v for w in ("true", "yes", "on", "1", "false", "no", "off", "0") for v in (w, w.upper(), w.title())}
    | {"maybe", "", "y", "n", "t", "f", "2", "-1", "1.0", "0.0", "none", "null", "enabled", "tru", "yes!"}
)


def _read(argv: list[str]):
    """What ``oblique run ARGV`` makes of the flags, up to its check (a RunConfig resolved and validated):
    the config, or the error."""
    from oblique.cli import build_parser
    from oblique.cli.run import run_config_from_args

    try:
        cfg = run_config_from_args(build_parser().parse_args(["run", *argv])).resolved()
        cfg.validate()
    except ObliqueError as e:
        return e
    return cfg


def test_hp_data_options_and_true_false_flags_accept_and_refuse_the_same_words():
    """``--hp batched=W``, ``--data-option shuffle_seq=W`` and ``--nesterov W`` read the same words, as the
    same value, and refuse the same others."""
    hp, data, flag = {}, {}, {}
    for word in WORDS:
        cfg = _read(["--method", "oni", "--hp", f"batched={word}"])
        hp[word] = cfg if isinstance(cfg, Exception) else cfg.checked_method().hp["batched"]
        cfg = _read(["--data-option", f"shuffle_seq={word}"])
        data[word] = cfg if isinstance(cfg, Exception) else cfg.data_options["shuffle_seq"]
        cfg = _read([f"--nesterov={word}"])
        flag[word] = cfg if isinstance(cfg, Exception) else cfg.nesterov
    accepted = {w for w, v in hp.items() if isinstance(v, bool)}
    assert accepted == {w for w, v in data.items() if isinstance(v, bool)}
    assert accepted == {w for w, v in flag.items() if isinstance(v, bool)}
    assert accepted == {
        w for w in WORDS if w.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0")
    }
    assert {w: hp[w] for w in accepted} == {w: data[w] for w in accepted} == {w: flag[w] for w in accepted}
    assert {w for w in accepted if hp[w]} == {w for w in accepted if w.lower() in ("true", "yes", "on", "1")}
    for word in set(WORDS) - accepted:  # refused, each naming its flag
        assert str(hp[word]).startswith("hp batched must be true or false; got ") and hp[word].settings == (
            "hp",
        )
        assert str(data[word]).startswith("data_options shuffle_seq must be true or false; got ")


# --------------------------------------------------------------------------- refusals, in the world of tests/hostile_world.py
@pytest.mark.parametrize(
    "argv,expect",
    [
        (["run", "--seed", "18446744073709551616"], "--seed must be an integer >= 0 and < 2**63"),
        (["run", "--seed", "-1"], "--seed must be an integer >= 0 and < 2**63; got -1"),
        (["bench", "--seed", "18446744073709551616"], "--seed must be an integer >= 0 and < 2**63"),
        (["bench", "--seed", "-1"], "--seed must be an integer >= 0 and < 2**63; got -1"),
        (["study", "--seeds", "99999999999999999999999,"], "seeds must be integers >= 0 and < 2**63"),
        (["study", "--seeds=-1,"], "seeds must be integers >= 0"),
    ],
)
def test_seeds_are_range_checked_by_run_bench_and_study(world, argv, expect):
    refused(world, [*argv, "--out", "new/never"] if argv[0] != "bench" else argv, expect)


def test_error_messages_say_what_is_wrong(world):
    refused(world, ["run", "--out", "FILE"], "--out FILE exists and is not a folder")
    refused(world, ["study", "--out", "FILE"], "--out FILE exists and is not a folder")
    refused(world, ["run", "--foo"], "unrecognized arguments: --foo (see 'oblique run --help')")
    refused(
        world,
        ["run", "--hp", "iters=x", "--method", "oni"],
        "--hp iters must be an integer from 1 to 100; got 'x' (oni)",
    )


@pytest.mark.parametrize(
    "argv,expect",
    [
        (["run", "--out", ""], "--out must be a folder name (not empty); got ''"),
        (["run", "--method", "baseline", "--strength", "5"], "--strength does not apply to method baseline"),
        (["study", "--workers", "-1"], "--workers must be an integer >= 0; got -1"),
        ([], "no command given"),
    ],
)
def test_empty_negative_and_needless_values_and_no_command_are_refused(world, argv, expect):
    refused(world, argv, expect)


def test_version_prints_the_package_version(capsys):
    from oblique import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"oblique {__version__}"


def test_an_error_line_escapes_control_characters(world):
    refused(world, ["run", "--a\nb"], "unrecognized arguments: --a\\nb")


@pytest.mark.parametrize(
    "argv,expect",
    [
        (
            ["--method", "oni", "--hp", "batched=maybe"],
            "--hp batched must be true or false; got 'maybe' (oni)",
        ),
        (
            ["--method", "oni", "--hp", "iters=x"],
            "--hp iters must be an integer from 1 to 100; got 'x' (oni)",
        ),
        (
            ["--method", "oni", "--hp", "iters=0"],
            "--hp iters must be an integer from 1 to 100; got '0' (oni)",
        ),
        (["--method", "oni", "--hp", "eps=-1"], "--hp eps must be a number >= 0; got '-1' (oni)"),
        (
            ["--method", "nl", "--hp", "iters=3"],
            "method 'nl' has no hyperparameter 'iters'; valid --hp names: form",
        ),
        (
            ["--method", "wd", "--hp", "iters=3"],
            "method 'wd' has no hyperparameter 'iters'; valid --hp names: none",
        ),
        (["--strength=-1e-9"], "--strength must be a number >= 0; got -1e-09"),
        (["--strength", "inf"], "--strength must be a number >= 0; got inf"),
        (
            ["--targets", "linear+conv2d"],
            "--targets must be layer kinds joined by + (from conv, conv_transpose, linear, attention, embedding), "
            "or all; got 'linear+conv2d'",
        ),
    ],
)
def test_a_bad_method_setting_names_its_flag(argv, expect, capsys, tmp_path):
    code, _, err = _run(["run", *argv, "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and err == f"oblique: error: {expect}\n", err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "argv,expect",
    [
        (
            ["run", "--model", "wrn16-100000", "--dataset", "synthetic"],
            "--model wrn16-100000: WRN width must be <= 32",
        ),
        (
            ["run", "--model", "wrn100000-1", "--dataset", "synthetic"],
            "--model wrn100000-1: WRN depth must be <= 1000",
        ),
        (["bench", "--model", "wrn16-100000"], "--model wrn16-100000: WRN width must be <= 32"),
        (["study", "--grid", "model=wrn16-100000", "--dataset", "synthetic"], "WRN width must be <= 32"),
        (["run", "--method", "oni", "--hp", "iters=1000000"], "--hp iters must be an integer from 1 to 100"),
        (["run", "--method", "olm", "--hp", "scale=1e308"], "--hp scale must be a number from 0 to 1000000"),
    ],
)
def test_a_model_or_hyperparameter_that_would_not_fit_or_never_end_is_refused(world, argv, expect):
    """Refused before any work: WRN-16-100000 would allocate 92 TB, WRN-100000-1 take minutes to build,
    ONI with 10^6 Newton iterations never end a step, and a scale of 1e308 overflow float32."""
    refused(world, argv, expect)
