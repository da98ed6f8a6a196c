"""Nothing lost: checkpoints, exact resume for every method, signals, the run lock, safe loading, quiet logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from oblique import list_methods, records, storage
from oblique.cli import main
from oblique.config import ConfigError, RunConfig
from oblique.fit import RunInterrupted
from oblique.train import resume, train

#: small and quick: 12 steps an epoch on MNIST-1D; the default ResNet-1D, SGD with Nesterov
QUICK = dict(epochs=2, batch_size=500, drift_every=5, threads=1, progress=False)
VARIANTS = [(m, {}) for m in list_methods()] + [
    ("nl", {"form": "autograd"}),
    ("oblique-rsgd", {"impl": "geoopt"}),
]
IDS = [m + "".join(f"-{v}" for v in hp.values()) for m, hp in VARIANTS]
OBLIQUE = [sys.executable, "-m", "oblique"]


def _same_run(a: Path, b: Path) -> None:
    """Two run folders hold the same run: records byte for byte, weights exactly, summaries but times."""
    assert (a / records.METRICS).read_bytes() == (b / records.METRICS).read_bytes()
    wa, wb = storage.read_torch(a / records.MODEL), storage.read_torch(b / records.MODEL)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    sa, sb = records.read_summary(a), records.read_summary(b)
    skip = {"train_time_s", "regularizer_time_s", "resumed_at"}
    assert {k: v for k, v in sa.items() if k not in skip} == {k: v for k, v in sb.items() if k not in skip}
    assert not (b / records.CHECKPOINT).exists()  # a finished run keeps no checkpoint


class _Killed(Exception):
    """Stands for SIGKILL: the process is gone right after the checkpoint hit the disk."""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    done = {}
    for (method, hp), name in zip(VARIANTS, IDS, strict=True):
        train(RunConfig(method=method, hp=hp, out=str(root / name), **QUICK))
        done[name] = root / name
    return done


@pytest.mark.parametrize(("method", "hp"), VARIANTS, ids=IDS)
def test_killed_after_its_first_checkpoint_and_resumed_ends_equal(
    method, hp, tmp_path, monkeypatch, uninterrupted
):
    real = records.RunWriter.checkpoint

    def checkpoint_then_die(self, state):
        real(self, state)
        raise _Killed

    monkeypatch.setattr(records.RunWriter, "checkpoint", checkpoint_then_die)
    out = tmp_path / "run"
    with pytest.raises(_Killed):
        train(RunConfig(method=method, hp=hp, out=str(out), checkpoint_every=1, **QUICK))
    assert not (out / records.SUMMARY).exists() and (out / records.CHECKPOINT).exists()
    monkeypatch.setattr(records.RunWriter, "checkpoint", real)
    summary = resume(out)
    assert summary["resumed_at"] == [12]  # after the first epoch
    _same_run(uninterrupted[IDS[VARIANTS.index((method, hp))]], out)


@pytest.mark.parametrize(("method", "hp"), VARIANTS, ids=IDS)
def test_a_signal_mid_epoch_checkpoints_and_the_resumed_run_ends_equal(
    method, hp, tmp_path, monkeypatch, uninterrupted
):
    import oblique.fit as tr

    real = tr.training_step

    def signalled_at_17(method_, model, optimizer, loss, step, **kw):
        marks = real(method_, model, optimizer, loss, step, **kw)
        if step == 17:  # the fifth step of the second epoch
            os.kill(os.getpid(), signal.SIGINT)
        return marks

    monkeypatch.setattr(tr, "training_step", signalled_at_17)
    out = tmp_path / "run"
    with pytest.raises(RunInterrupted) as e:
        train(RunConfig(method=method, hp=hp, out=str(out), **QUICK))
    assert e.value.run_dir == out
    assert records.read_summary(out)["status"] == "interrupted" and records.read_summary(out)["steps"] == 17
    monkeypatch.setattr(tr, "training_step", real)
    assert resume(out)["resumed_at"] == [17]
    _same_run(uninterrupted[IDS[VARIANTS.index((method, hp))]], out)


@pytest.mark.parametrize("order", ["fixed", "shuffle"])
def test_either_batch_order_is_recorded_and_resumes_mid_epoch_exactly(order, tmp_path):
    straight = tmp_path / "straight"
    train(RunConfig(method="baseline", batch_order=order, out=str(straight), **QUICK))
    assert records.read_config(straight)["batch_order"] == order
    out = tmp_path / "resumed"
    with pytest.raises(RunInterrupted):
        _interrupted_at(out, 17, method="baseline", batch_order=order)  # the fifth step of the second epoch
    assert resume(out)["resumed_at"] == [17]
    _same_run(straight, out)
    if order == "shuffle":  # a run recorded before the setting existed resumes in today's default order
        old = tmp_path / "old"
        with pytest.raises(RunInterrupted):
            _interrupted_at(old, 17, method="baseline")
        config = records.read_config(old)
        del config["batch_order"]
        (old / records.CONFIG).write_text(json.dumps(config))
        resume(old)
        _same_run(straight, old)
    else:  # the fixed order is another run than the default's
        shuffled = tmp_path / "shuffled"
        train(RunConfig(method="baseline", out=str(shuffled), **QUICK))
        assert (shuffled / records.METRICS).read_bytes() != (straight / records.METRICS).read_bytes()


def _wait_for(path: Path, proc: subprocess.Popen, lines: int = 0, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if path.exists() and (not lines or len(path.read_text().splitlines()) >= lines):
            return
        assert proc.poll() is None, "the run ended before it could be stopped"
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear")


ARGS = ["--epochs", "3", "--batch-size", "500", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(["run", *ARGS, "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_sigkill_after_the_first_checkpoint_then_resume(tmp_path, reference):
    out = tmp_path / "run"
    proc = subprocess.Popen([*OBLIQUE, "run", *ARGS, "--checkpoint-every", "1", "--out", str(out)])
    _wait_for(out / records.CHECKPOINT, proc)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    done = subprocess.run(
        [*OBLIQUE, "run", "--resume", str(out), "--no-progress"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    _same_run(reference, out)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_sigint_and_sigterm_stop_with_a_checkpoint_and_a_summary(sig, tmp_path, reference):
    out = tmp_path / "run"
    proc = subprocess.Popen([*OBLIQUE, "run", *ARGS, "--out", str(out)], stderr=subprocess.PIPE, text=True)
    _wait_for(out / records.METRICS, proc, lines=20)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    assert err.strip().splitlines() == [
        f"oblique: interrupted; the run's checkpoint is in {out}: continue it with 'oblique run --resume {out}'"
    ]
    assert records.read_summary(out)["status"] == "interrupted" and (out / records.CHECKPOINT).exists()
    assert main(["run", "--resume", str(out)]) == 0
    _same_run(reference, out)


def test_a_checkpoint_holding_a_pickled_object_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        _interrupted_at(out, 3)
    state = torch.load(out / records.CHECKPOINT, weights_only=True)
    state["evil"] = Path("/etc/passwd")  # any object beyond tensors and plain containers
    torch.save(state, out / records.CHECKPOINT)
    assert main(["run", "--resume", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds something other than tensors and plain containers" in err[0]


def _interrupted_at(out: Path, at: int, **settings) -> None:
    import oblique.fit as tr

    real = tr.training_step

    def signalled(method_, model, optimizer, loss, step, **kw):
        marks = real(method_, model, optimizer, loss, step, **kw)
        if step == at:
            os.kill(os.getpid(), signal.SIGINT)
        return marks

    tr.training_step = signalled
    try:
        train(RunConfig(out=str(out), **{**QUICK, **settings}))
    finally:
        tr.training_step = real


def test_a_checkpoint_with_corrupt_random_states_is_one_line(tmp_path, capsys):
    # each spoiled random state is one line that names the error it raises, not that error's traceback
    out = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        _interrupted_at(out, 3)
    good = torch.load(out / records.CHECKPOINT, weights_only=True)
    for spoil, error in (
        (lambda rng: rng.update(python=(3, (-1,) * 625, None)), "OverflowError"),
        (lambda rng: rng["numpy"].update(keys=5), "AttributeError"),
        (lambda rng: rng.clear(), "KeyError"),
    ):
        ckpt = torch.load(out / records.CHECKPOINT, weights_only=True)
        spoil(ckpt["rng"][0])
        torch.save(ckpt, out / records.CHECKPOINT)
        assert main(["run", "--resume", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("oblique: error: ") and err.count("\n") == 1, err
        assert f"the checkpoint does not fit this run ({error}" in err
    torch.save(good, out / records.CHECKPOINT)
    assert main(["run", "--resume", str(out), "--no-progress"]) == 0  # nothing was lost


def test_resume_refuses_a_contradicting_flag_a_finished_run_and_a_missing_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        _interrupted_at(out, 3)
    assert main(["run", "--resume", str(out), "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("oblique: error: --lr 0.5 contradicts the run's recorded lr 0.1")
        and err.count("\n") == 1
    )
    for hp, expect in (  # a bad --hp is one line too, not a traceback
        ("bogus=1", "method 'nl' has no hyperparameter 'bogus'"),
        ("strength=1", "set --strength itself, not --hp strength="),
    ):
        assert main(["run", "--resume", str(out), "--hp", hp]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"oblique: error: {expect}") and err.count("\n") == 1, err
    assert main(["run", "--resume", str(out), "--batch-size", "500", "--no-progress"]) == 0  # agrees: fine
    capsys.readouterr()
    assert main(["run", "--resume", str(out)]) == 2
    assert "holds a finished run; there is nothing to resume" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path / "nothing")]) == 2
    assert "holds no run" in capsys.readouterr().err


def test_a_fresh_run_does_not_clobber_an_interrupted_one(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        _interrupted_at(out, 3)
    with pytest.raises(ConfigError, match="holds an interrupted run with a checkpoint; continue it with"):
        train(RunConfig(out=str(out), **QUICK))
    assert (out / records.CHECKPOINT).exists()


def test_overwrite_swaps_the_new_run_in_only_when_it_finishes(tmp_path):
    out = tmp_path / "run"
    train(RunConfig(out=str(out), **QUICK))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(RunInterrupted):
        _interrupted_at(out, 3, overwrite=True, lr=0.05)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # the finished run stays
    new = tmp_path / "run.new"
    assert records.read_summary(new)["status"] == "interrupted"
    resume(new)
    assert not new.exists() and records.read_config(out)["lr"] == 0.05 and records.is_finished(out)


def test_two_processes_on_one_run_folder_are_refused(tmp_path):
    out = tmp_path / "run"
    with storage.FolderLock(out):
        p = subprocess.run(
            [*OBLIQUE, "run", *ARGS, "--out", str(out)], capture_output=True, text=True, timeout=120
        )
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and "is in use by another oblique run" in lines[0]
        and f"pid {os.getpid()}" in lines[0]
    )
    assert not (out / records.CONFIG).exists()


@pytest.mark.slow
def test_a_killed_study_resumes_its_runs_and_finishes_each_once(tmp_path):
    study = tmp_path / "study"
    argv = [
        *OBLIQUE,
        "study",
        "--methods",
        "nl,baseline",
        "--seeds",
        "2",
        "--epochs",
        "4",
        "--batch-size",
        "500",
        "--workers",
        "2",
        "--no-figures",
        "--no-progress",
        "--out",
        str(study),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    while not any(
        (d / records.METRICS).exists() and len((d / records.METRICS).read_text().splitlines()) > 25
        for d in (study / "runs").glob("*")
    ):
        assert proc.poll() is None and time.monotonic() - t0 < 120
        time.sleep(0.05)
    proc.kill()  # the study process dies; its workers are signalled, checkpoint and stop
    proc.wait()
    time.sleep(3)
    assert subprocess.run(argv, capture_output=True, timeout=300).returncode == 0
    summaries = [records.read_summary(d) for d in sorted((study / "runs").iterdir())]
    assert len(summaries) == 4 and all(s["status"] == "ok" for s in summaries)
    assert any(s.get("resumed_at") for s in summaries)  # at least one did not start over
    for d in (study / "runs").iterdir():
        steps = [
            json.loads(line)["step"]
            for line in (d / records.METRICS).read_text().splitlines()
            if '"type": "step"' in line
        ]
        assert steps == list(range(1, len(steps) + 1))  # every step once, in order


def test_a_redirected_log_gets_plain_lines_not_a_bar(tmp_path):
    log = tmp_path / "log"
    with open(log, "w") as f:
        p = subprocess.run(
            [*OBLIQUE, "run", "--epochs", "2", "--batch-size", "500", "--out", str(tmp_path / "r")],
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OBLIQUE_LOG_EVERY": "0.5"},
        )
    assert p.returncode == 0
    text = log.read_text()
    assert "\r" not in text and len(text) < 2000
    assert any(line.startswith("nl: ") and "step" in line for line in text.splitlines())
