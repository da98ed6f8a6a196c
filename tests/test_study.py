"""Tests of oblique.study: the grid, the study folder, the lock, resuming after SIGINT, divergence."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from hostile_world import STUDY_ARGS, Accepted, digest, quiet_main, refused, run_folders, stubbed

from oblique import list_methods, records
from oblique.cli import main
from oblique.study import (
    RESULTS_FILE,
    SUMMARY_FILE,
    Lock,
    StudyError,
    StudySpec,
    default_threads,
    expand,
    load_study,
    plan_study,
    published_cell,
    results_frame,
    run_study,
    summary_markdown,
)

TINY = {"epochs": 1, "drift_every": 10}
#: the ``oblique`` command in a fresh interpreter (``-m oblique.cli`` would import the CLI module twice)
OBLIQUE = [sys.executable, "-c", "import sys; from oblique.cli import main; sys.exit(main())"]


# --------------------------------------------------------------------------- the grid
def test_expand_is_the_product_and_methods_without_strength_run_once():
    spec = StudySpec(
        methods=["nl", "baseline"], strengths=[0.01, 0.1], seeds=[0, 1], batch_sizes=[50, 100], base=TINY
    )
    runs = expand(spec)
    nl = [r for r in runs if r.grid["method"] == "nl"]
    base = [r for r in runs if r.grid["method"] == "baseline"]
    assert len(nl) == 2 * 2 * 2 and len(base) == 2 * 2  # baseline ignores the strengths
    assert all(r.grid["strength_applies"] for r in nl) and not any(r.grid["strength_applies"] for r in base)
    assert all(r.grid["strength"] is None and r.settings["strength"] is None for r in base)
    assert len({r.name for r in runs}) == len(runs)
    assert {(r.grid["strength"], r.grid["batch_size"], r.grid["seed"]) for r in nl} == {
        (s, b, seed) for s in (0.01, 0.1) for b in (50, 100) for seed in (0, 1)
    }
    one = next(
        r for r in nl if r.grid["strength"] == 0.1 and r.grid["batch_size"] == 50 and r.grid["seed"] == 1
    )
    assert one.name == "nl_lam0.1_bs50_seed1"
    assert (
        one.settings["epochs"] == 1
        and one.settings["batch_size"] == 50
        and one.settings["model"] == "resnet1d"
    )


def test_expand_default_strength_and_other_axes():
    runs = expand(
        StudySpec(
            methods=["nl"],
            seeds=[0],
            grid={"targets": ["conv", "conv+linear"], "hp.form": ["closed", "autograd"]},
        )
    )
    assert len(runs) == 4
    assert {r.grid["strength"] for r in runs} == {0.01}  # the method's own default, recorded
    assert {(r.settings["targets"], r.settings["hp"]["form"]) for r in runs} == {
        (t, f) for t in ("conv", "conv+linear") for f in ("closed", "autograd")
    }


@pytest.mark.parametrize(
    "spec, match",
    [
        (StudySpec(methods=["nl"], grid={"epoch": [1, 2]}), "not a run setting"),
        (StudySpec(methods=["nl"], grid={"seed": [1, 2]}), "not a run setting"),
        (StudySpec(methods=["nl"], grid={"lr": []}), "non-empty list"),
        (StudySpec(methods=["nl"], seeds=[0, 0]), "repeated"),
        (StudySpec(methods=["nl"], seeds=[-1]), "seeds must be integers"),
        (StudySpec(methods=["nl"], strengths=[-1.0]), "strengths must be numbers >= 0"),
    ],
)
def test_expand_rejects_bad_grids(spec, match):
    with pytest.raises(StudyError, match=match):
        expand(spec)


def test_plan_extends_but_refuses_other_settings(tmp_path):
    a = expand(StudySpec(methods=["nl"], seeds=[0], base=TINY))
    b = expand(StudySpec(methods=["nl"], seeds=[0, 1], base=TINY))
    _, new = plan_study(tmp_path, a)
    assert new == 1
    study, new = plan_study(tmp_path, b)
    assert new == 1 and len(study.runs) == 2 and len(load_study(tmp_path).runs) == 2
    other = expand(StudySpec(methods=["nl"], seeds=[0], base={**TINY, "epochs": 2}))
    with pytest.raises(StudyError, match="epochs differ.*--overwrite"):
        plan_study(tmp_path, other)
    study, _ = plan_study(tmp_path, other, overwrite=True)
    assert list(study.runs) == [other[0].name] and study.runs[other[0].name]["settings"]["epochs"] == 2


def test_default_threads_do_not_oversubscribe():
    cores = len(os.sched_getaffinity(0))
    assert default_threads(1) == cores
    assert default_threads(cores) == 1 and default_threads(4 * cores) == 1


def test_published_figures_stand_beside_matching_settings(tmp_path):
    assert published_cell("cifar10", "resnet110", "nl") == "5.9 (5.996)"
    assert published_cell("mnist1d", "resnet1d", "nl") == ""
    (tmp_path / "data" / "cifar-10-batches-py").mkdir(parents=True)  # planning checks the folder is there
    cifar = {"dataset": "cifar10", "model": "resnet110", "data_root": str(tmp_path / "data")}
    runs = expand(StudySpec(methods=["nl", "wd"], seeds=[0], base=cifar))
    study, _ = plan_study(tmp_path, runs)
    md = summary_markdown(study)
    assert (
        "published best (mean)" in md and "5.9 (5.996)" in md and "repr 6.32 (6.568); pub 6.43 (6.61)" in md
    )
    own = expand(StudySpec(methods=["nl"], seeds=[0], base=TINY))
    assert "published" not in summary_markdown(plan_study(tmp_path / "own", own)[0])


# --------------------------------------------------------------------------- the lock
def test_a_second_process_is_refused_by_the_lock(tmp_path):
    with Lock(tmp_path):
        p = subprocess.run(
            [
                *OBLIQUE,
                "study",
                "--methods",
                "baseline",
                "--seeds",
                "1",
                "--epochs",
                "1",
                "--out",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and "in use by another oblique study" in lines[0] and f"pid {os.getpid()}" in lines[0]
    )
    assert not (tmp_path / "runs").exists()
    with Lock(tmp_path):  # released on exit: taking it again works
        pass


# --------------------------------------------------------------------------- running
@pytest.mark.slow
def test_tiny_study_end_to_end(tmp_path, capsys):
    out = tmp_path / "s"
    argv = [
        "study",
        "--methods",
        "nl,baseline",
        "--strengths",
        "0.01,0.1",
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--drift-every",
        "10",
        "--workers",
        "2",
        "--out",
        str(out),
        "--no-progress",
        "--no-figures",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr()
    res = pd.read_csv(out / RESULTS_FILE)
    assert len(res) == 6 and (res["status"] == "ok").all()
    for col in (
        "method",
        "strength",
        "batch_size",
        "seed",
        "test_error",
        "test_error_top5",
        "norm_dev_mean",
        "norm_dev_max",
        "ddiag_dev",
        "offdiag_dev",
        "train_time_s",
        "regularizer_time_s",
        "diverged_step",
    ):
        assert col in res.columns
    assert res["test_error"].between(0, 100).all() and res["norm_dev_mean"].gt(0).all()
    summary = (out / SUMMARY_FILE).read_text()
    table = summary.split("## The poster's claims")[0]  # the claims section follows the table
    assert summary in printed.out and table.count("\n| nl |") == 2 and "| baseline | — | 100 |" in table
    for name in load_study(out).runs:  # ordinary run directories
        s = records.read_summary(out / "runs" / name)
        assert s["status"] == "ok" and s["epochs"] == 1
    assert (
        sum(line.startswith(("nl", "baseline")) for line in printed.err.splitlines()) == 6
    )  # a line per run
    mtimes = {n: (out / "runs" / n / "summary.json").stat().st_mtime_ns for n in load_study(out).runs}
    assert main(argv) == 0  # everything finished: nothing reruns
    assert mtimes == {n: (out / "runs" / n / "summary.json").stat().st_mtime_ns for n in load_study(out).runs}


@pytest.mark.slow
def test_a_diverging_strength_is_recorded_and_the_study_completes(tmp_path):
    runs = expand(StudySpec(methods=["wd"], strengths=[1e-3, 1e6], seeds=[0], base=TINY))
    result = run_study(tmp_path, runs, workers=0, threads=1, progress=False, echo=lambda line: None)
    assert not result.interrupted and not result.failed and len(result.ran) == 2
    res = pd.read_csv(tmp_path / RESULTS_FILE).set_index("strength")
    assert res.loc[1e6, "status"] == "diverged" and res.loc[1e6, "diverged_step"] >= 1
    assert res.loc[1e-3, "status"] == "ok" and pd.isna(res.loc[1e-3, "diverged_step"])
    assert "1 diverged" in (tmp_path / SUMMARY_FILE).read_text()
    assert (
        run_study(tmp_path, runs, workers=0, threads=1, progress=False).ran == []
    )  # diverged is finished: not rerun


def _finished(out: Path) -> dict[str, int]:
    runs = out / "runs"
    if not runs.exists():
        return {}
    return {d.name: (d / "summary.json").stat().st_mtime_ns for d in runs.iterdir() if records.is_finished(d)}


@pytest.mark.slow
def test_sigint_part_way_then_rerun_finishes_every_run_once(tmp_path):
    out = tmp_path / "s"
    argv = [
        *OBLIQUE,
        "study",
        "--methods",
        "nl,baseline",
        "--seeds",
        "3",
        "--epochs",
        "2",
        "--drift-every",
        "10",
        "--workers",
        "2",
        "--out",
        str(out),
        "--no-progress",
        "--no-figures",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    while len(_finished(out)) < 2 and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.2)
    assert p.poll() is None, "the study ended before it could be interrupted"
    os.killpg(p.pid, signal.SIGINT)  # Ctrl-C: the whole process group, workers included
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("oblique: study interrupted:")
    before = _finished(out)
    assert 2 <= len(before) < 6
    res = pd.read_csv(out / RESULTS_FILE)
    assert len(res) == 6 and set(res[res["status"] == "ok"]["run"]) == set(before)

    p2 = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert p2.returncode == 0, p2.stderr
    res = pd.read_csv(out / RESULTS_FILE)
    assert len(res) == 6 and res["run"].is_unique and (res["status"] == "ok").all()
    after = _finished(out)
    assert len(after) == 6
    assert {n: after[n] for n in before} == before  # no finished run recomputed
    assert sum(line.startswith(("nl", "baseline")) for line in p2.stderr.splitlines()) == 6 - len(before)


def test_unknown_method_and_bad_flags_are_one_line_errors(tmp_path, capsys):
    assert main(["study", "--methods", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown method 'nope'" in err[0] and "nl" in err[0]
    assert main(["study", "--grid", "epoch=1,2", "--out", str(tmp_path)]) == 2
    assert "not a run setting" in capsys.readouterr().err
    assert main(["study", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "runs").exists()


def test_study_file_and_flags(tmp_path, capsys):
    cfg = tmp_path / "s.toml"
    cfg.write_text(
        '[study]\nmethods = ["nl"]\nseeds = [4]\nworkers = 0\n[run]\nepochs = 1\n[grid]\nlr = [0.05, 0.1]\n'
    )
    from oblique.cli import build_parser
    from oblique.cli.study import spec_from_args

    spec, opts = spec_from_args(build_parser().parse_args(["study", "--config", str(cfg), "--epochs", "2"]))
    assert spec.methods == ["nl"] and spec.seeds == [4] and spec.grid == {"lr": [0.05, 0.1]}
    assert spec.base["epochs"] == 2 and opts["workers"] == 0
    spec, _ = spec_from_args(build_parser().parse_args(["study", "--methods", "all"]))
    assert spec.methods == list_methods() and spec.seeds == [0, 1, 2]
    cfg.write_text("[study]\nmethod = 'nl'\n")
    assert main(["study", "--config", str(cfg)]) == 2
    assert "unknown [study] key(s) method" in capsys.readouterr().err


def test_the_documented_study_file_is_valid(tmp_path):
    import textwrap

    import oblique.study.spec as st
    from oblique.cli import build_parser
    from oblique.cli.study import spec_from_args
    from oblique.config import RunConfig

    doc = st.__doc__
    cfg = tmp_path / "study.toml"
    cfg.write_text(textwrap.dedent(doc[doc.index("    [study]") : doc.index("Executors")]))
    spec, opts = spec_from_args(build_parser().parse_args(["study", "--config", str(cfg)]))
    runs = expand(spec)
    # nl, wd: 3 strengths; baseline: none; each with 2 optimizers
    assert len(runs) == (2 * 3 * 3 * 2 * 2 + 3 * 2 * 2) * 2
    assert {r.settings["optimizer"] for r in runs} == {"sgd", "muon"}
    for run in runs:
        RunConfig(**run.settings).validate()
    assert opts == {"workers": 2, "out": "studies/sweep"}


# --------------------------------------------------------------------------- hostile study files and records
@pytest.mark.parametrize(
    "argv,expect",
    [
        (["--threads", "-1"], "--threads must be an integer"),
        (["--threads", "0"], "--threads must be an integer"),
        (["--dataset", "cifar10", "--model", "resnet20", "--data-root", "nonexistent"], "cifar10 not found"),
        (["--grid", "warmup_epochs=1e308"], "--warmup-epochs must be a number from 0 to 1000000"),
        (["--grid", "milestones=1e308"], "--milestones must be"),
        (["--seeds", "1000000000000"], "expected a count N from 1 to 100000"),
        (
            ["--seeds", "100000", "--methods", "nl,wd"],
            "this grid has 200000 runs; a study plans at most 100000",
        ),
    ],
)
def test_a_study_refuses_up_front_what_would_fail_every_run(world, argv, expect):
    refused(world, ["study", *argv, "--out", "new/never-study"], expect)
    assert not (world.root / "new" / "never-study").exists()


@pytest.mark.parametrize(
    "doc,expect",
    [
        ("study = 5", "study must be a table ([study]); got 5"),
        ("run = 5", "run must be a table ([run]); got 5"),
        ('grid = "x"', "grid must be a table ([grid]); got 'x'"),
        (
            "[study]\nmethods = 5",
            "--methods must be 'all', comma-separated method names or a list of them; got 5",
        ),
        ("[study]\nseeds = 1.5", "--seeds must be a count N >= 1 or a list of seeds (e.g. [1]); got 1.5"),
        ("[study]\nseeds = true", "--seeds must be a count N >= 1 or a list of seeds (e.g. [1]); got True"),
        ("[study]\nout = 5", "--out must be a folder name (not empty); got 5"),
        ("[study]\nstrengths = 0.1", "--strengths must be a list of numbers (e.g. [0.1]); got 0.1"),
        ("[study]\nworkers = true", "--workers must be an integer >= 0; got True"),
        ("[grid]\nmodel = [5]", "--model must be text; got 5"),
        ("[run]\nmodel = 3", "--model must be text; got 3"),
        ("[run]\nhp = [1, 2]", "'hp' must be a table of NAME = VALUE; got [1, 2]"),
        ("[run]\nseed = 'x'", "'seed' is a grid variable"),
        ("[run]\nthreads = 0", "--threads must be an integer from 1 to 4096; got 0"),
    ],
)
def test_a_wrong_typed_study_file_is_one_line_naming_the_flag(world, doc, expect):
    (world.root / "bad-study.toml").write_text(doc + "\n")
    refused(world, ["study", "--config", "bad-study.toml"], expect)


@pytest.mark.parametrize(
    "content",
    [
        b"[1, 2]",
        b'{"schema": 1, "runs": {"r": 5}}',
        b'{"schema": 1, "runs": {}, "grid_variables": 5}',
        b'{"schema": 1, "runs": {"../../x": {"settings": {}, "grid": {}}}}',
        b"\xff binary",
        b"",
    ],
)
def test_a_corrupt_study_json_is_one_line(world, tmp_path, content):
    study = tmp_path / "s"
    shutil.copytree(world.root / "STUDY", study)
    (study / "study.json").write_bytes(content)
    refused(world, ["plot", str(study)], "study.json")
    code, err = quiet_main(["study", *STUDY_ARGS, "--out", str(study)])  # the real study reads the folder
    assert code == 2 and err.count("oblique: error: ") == 1 and "study.json" in err, err


def test_a_rerun_repairs_a_run_whose_metrics_are_corrupt(world, tmp_path, capsys):
    study = tmp_path / "s"
    shutil.copytree(world.root / "STUDY", study)
    a, b = run_folders(study)
    (a / "metrics.jsonl").write_bytes((a / "metrics.jsonl").read_bytes()[:-200])  # cut short
    kept = digest(b)
    assert main(["study", *STUDY_ARGS, "--out", str(study)]) == 0
    assert "1 runs trained, 2 of 2 finished" in capsys.readouterr().out
    assert records.is_finished(a) and digest(b) == kept


SUMMARIES = [
    b"[1, 2]",
    b'"ok"',
    b'{"drift": 5}',
    b'{"status": "ok", "drift": 5}',
    b"",
    b"\xff\xfe\x00",
    b'{"status": "ok", "steps": "x", "test_error": 1, "test_error_top5": 1, "train_time_s": 1, '
    b'"regularizer_time_s": 0, "drift": {"mean": {}, "layers": {}}}',
]
METRICS = [b"", b"garbage\n", b"\xff\xfe\x00\x80 binary\n", b"[1, 2]\n", b'{"type": "step"}\n']


@pytest.mark.parametrize(
    "which,content", [*(("summary.json", s) for s in SUMMARIES), *(("metrics.jsonl", m) for m in METRICS)]
)
def test_records_of_the_wrong_shape_are_left_out_with_a_warning(world, tmp_path, which, content):
    study = tmp_path / "s"
    shutil.copytree(world.root / "STUDY", study)
    (study / "results.csv").write_bytes(b"\x00garbage,\n\xff")  # rewritten by plot
    name = run_folders(study)[0].name
    (study / "runs" / name / which).write_bytes(content)
    with stubbed(world):
        with pytest.raises(Accepted):  # the figures are the next step
            main(["plot", str(study)])
    assert not records.is_finished(study / "runs" / name)  # so the next `oblique study` reruns it
    frame = results_frame(load_study(study))
    assert dict(zip(frame["run"], frame["status"], strict=True))[name] == "pending"
    assert (study / "results.csv").read_text().startswith("run,")


def test_plot_warns_one_line_per_unreadable_run(world, tmp_path, capsys):
    study = tmp_path / "s"
    shutil.copytree(world.root / "STUDY", study)
    a, b = run_folders(study)
    (a / "summary.json").write_text("[1, 2]")
    (b / "metrics.jsonl").write_bytes(b"\xff\xfe binary")
    with stubbed(world), pytest.raises(Accepted):
        main(["plot", str(study)])
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("oblique: warning: ") for line in err), err
    assert f"{a.name} is left out" in err[0] and "summary.json: expected a run summary" in err[0]
    assert f"{b.name} is left out" in err[1] and "metrics.jsonl: corrupt or incomplete" in err[1]
