"""Nothing lost: checkpoints, exact resume for every method, signals, the run lock, safe loading, quiet logs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from oblique import list_methods, records, storage
from oblique.cli import main
from oblique.config import ConfigError, RunConfig, run_config_from
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


# --------------------------------------------------------------------------- not the run's own checkpoint
def _md5s(folder: Path) -> dict[str, str]:
    """The md5 of every file of a run folder (its lock files aside)."""
    import hashlib

    return {
        p.name: hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(storage.LOCK_FILE)
    }


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """Two runs stopped after 3 of their 12 steps, seeds 0 and 1, with their checkpoints."""
    root = tmp_path_factory.mktemp("killed")
    for seed in (0, 1):
        with pytest.raises(RunInterrupted):
            _interrupted_at(root / f"seed{seed}", 3, seed=seed)
    return root


def _zeros_in_a_tensor(run: Path, killed: Path) -> None:
    """64 zero bytes written inside the largest tensor of the checkpoint (a disk's or a hand's damage)."""
    import zipfile

    path = run / records.CHECKPOINT
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name, extra = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
        f.seek(info.header_offset + 30 + name + extra + info.file_size // 2)
        f.write(bytes(64))


def _resaved(change, seal: bool = False):
    """A checkpoint read, changed by ``change`` and saved again by torch (its zip records intact); with
    ``seal``, its digest made to match its new contents."""

    def corrupt(run: Path, killed: Path) -> None:
        state = torch.load(run / records.CHECKPOINT, weights_only=True)
        change(state)
        if seal:
            state["digest"] = storage.content_digest({k: v for k, v in state.items() if k != "digest"})
        torch.save(state, run / records.CHECKPOINT)

    return corrupt


def _offset(state: dict) -> None:
    state["run"]["metrics_offset"] = 10**9


def _other_seed(run: Path, killed: Path) -> None:
    (run / records.CHECKPOINT).write_bytes((killed / "seed1" / records.CHECKPOINT).read_bytes())


def _method_edited(run: Path, killed: Path) -> None:
    config = json.loads((run / records.CONFIG).read_text())
    config["method"] = "wd"
    (run / records.CONFIG).write_text(json.dumps(config))


def _metrics_cut(run: Path, killed: Path) -> None:
    data = (run / records.METRICS).read_bytes()
    (run / records.METRICS).write_bytes(data[: len(data) // 2])


def _metrics_emptied(run: Path, killed: Path) -> None:
    (run / records.METRICS).write_bytes(b"")


def _metrics_changed(run: Path, killed: Path) -> None:
    data = (run / records.METRICS).read_bytes()
    (run / records.METRICS).write_bytes(data.replace(b'"step": 2', b'"step": 7', 1))


REFUSED = {
    "zero-bytes-in-a-tensor": (_zeros_in_a_tensor, "not a readable torch file"),
    "a-tensor-changed": (
        _resaved(lambda s: s["model"][next(iter(s["model"]))].zero_()),
        "contents do not match their digest",
    ),
    "offset-1e9": (_resaved(_offset), "contents do not match their digest"),
    "offset-1e9-sealed": (_resaved(_offset, seal=True), "bytes of records"),
    "seed-1-checkpoint-in-seed-0-run": (_other_seed, "belongs to another run (seed 1)"),
    "config-nl-edited-to-wd": (_method_edited, '(method "nl" in the checkpoint, "wd" in config.json)'),
    "metrics-cut": (_metrics_cut, "(cut short or emptied)"),
    "metrics-emptied": (_metrics_emptied, "holds 0 bytes, not the"),
    "metrics-changed": (_metrics_changed, "are not the records"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_resume_refuses_a_checkpoint_that_is_not_the_runs_own(case, killed, tmp_path, capsys):
    """Note [checkpoint identity] in oblique.records: a damaged checkpoint, another run's, one whose
    config.json or metrics.jsonl is not what it was taken after is refused in one line, and nothing on disk
    changes (metrics.jsonl is never cut back to, or padded up to, a position it does not hold)."""
    corrupt, expect = REFUSED[case]
    run = tmp_path / "run"
    shutil.copytree(killed / "seed0", run)
    corrupt(run, killed)
    before = _md5s(run)
    assert main(["run", "--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("oblique: error: ") and err.count("\n") == 1 and expect in err, err
    assert _md5s(run) == before


def test_the_run_the_refusals_started_from_resumes(killed, tmp_path, uninterrupted):
    shutil.copytree(killed / "seed0", tmp_path / "run")
    assert main(["run", "--resume", str(tmp_path / "run"), "--no-progress"]) == 0
    _same_run(uninterrupted["nl"], tmp_path / "run")


def test_an_old_checkpoint_without_identity_is_refused_in_one_line(killed, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(killed / "seed0", run)
    state = torch.load(run / records.CHECKPOINT, weights_only=True)
    old = {k: v for k, v in state.items() if k not in ("run", "digest", "step")}
    torch.save(
        {**old, "format": 1, "metrics_offset": state["run"]["metrics_offset"]}, run / records.CHECKPOINT
    )
    assert main(["run", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "written by an older oblique" in err and "--overwrite" in err


def test_a_checkpoint_records_whose_run_it_is(killed):
    ckpt = records.read_checkpoint(killed / "seed1")
    run = ckpt["run"]
    assert run["seed"] == 1 and run["step"] == ckpt["step"] == 3
    recorded = records.read_config(killed / "seed1")
    cfg = run_config_from({k: v for k, v in recorded.items() if k in RunConfig.field_names()})
    assert run["config"] == cfg.identity() and run["config"]["seed"] == 1 and "device" not in run["config"]
    assert run["config_sha256"] == storage.content_digest(run["config"])
    metrics = (killed / "seed1" / records.METRICS).read_bytes()
    assert run["metrics_offset"] == len(metrics)  # the run stopped right after its checkpoint
    import hashlib

    assert run["metrics_sha256"] == hashlib.sha256(metrics).hexdigest()


# --------------------------------------------------------------------------- leftovers, a full disk, a symlink
#: ``oblique ARGV`` that is killed (SIGKILL) halfway through writing its first checkpoint
_KILLED_MID_CHECKPOINT = """
import os, signal, sys
import torch
from oblique.cli import main
real = torch.save
def save(obj, f, *args, **kwargs):
    if isinstance(obj, dict) and "digest" in obj:  # the checkpoint: a part of it, then the kill
        f.write(b"PK\\x03\\x04 half a checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, f, *args, **kwargs)
torch.save = save
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_kill_during_the_first_checkpoint_leaves_a_temporary_the_next_start_removes(tmp_path, reference):
    out = tmp_path / "run"
    argv = ["run", *ARGS, "--out", str(out)]
    killed = subprocess.run([sys.executable, "-c", _KILLED_MID_CHECKPOINT, *argv, "--checkpoint-every", "1"])
    assert killed.returncode == -signal.SIGKILL
    assert [p.name.startswith(".checkpoint.pt.") for p in out.glob("*.tmp")] == [True]
    assert not (out / records.CHECKPOINT).exists()
    assert main(argv) == 0  # no checkpoint: the run starts again, and clears what the kill left
    assert not list(out.glob("*.tmp"))
    _same_run(reference, out)


def test_resume_removes_the_temporaries_a_killed_write_left(killed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(killed / "seed0", run)
    for name in (".checkpoint.pt.k1ll3d.tmp", ".summary.json.x.tmp", ".model.pt.y.tmp"):
        (run / name).write_bytes(b"half")
    (run / ".other.tmp").write_bytes(b"not the run's")
    assert main(["run", "--resume", str(run), "--no-progress"]) == 0
    assert [p.name for p in run.glob("*.tmp")] == [".other.tmp"]


QUICK_FLAGS = [
    "--epochs",
    "2",
    "--batch-size",
    "500",
    "--drift-every",
    "5",
    "--threads",
    "1",
    "--no-progress",
]


@pytest.mark.parametrize("final_checkpoint", ["written", "not written"])
def test_a_full_disk_at_model_pt_keeps_a_checkpoint_and_says_so(
    final_checkpoint, tmp_path, monkeypatch, capsys, uninterrupted
):
    """The training is over, model.pt cannot be written: the final state is kept as a checkpoint (or, when
    that cannot be written either, the last periodic one stays), one line says so, and the resume ends
    with the records of an uninterrupted run."""
    import errno

    real_checkpoint = records.RunWriter.checkpoint
    full = {"on": False}

    def model(self, state_dict):
        full["on"] = True
        raise OSError(errno.ENOSPC, "No space left on device", str(self.root / records.MODEL))

    def checkpoint(self, state):
        if full["on"] and final_checkpoint == "not written":
            raise OSError(errno.ENOSPC, "No space left on device", str(self.root / records.CHECKPOINT))
        real_checkpoint(self, state)

    monkeypatch.setattr(records.RunWriter, "model", model)
    monkeypatch.setattr(records.RunWriter, "checkpoint", checkpoint)
    out = tmp_path / "run"
    assert main(["run", *QUICK_FLAGS, "--checkpoint-every", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"oblique: error: {out / records.MODEL}: No space left on device; the training is over but model.pt "
        "is not written: "
    )
    kept = "its final checkpoint is kept" if final_checkpoint == "written" else "its last checkpoint is kept"
    assert kept in err and f"'oblique run --resume {out}'" in err
    assert records.read_summary(out)["status"] == "interrupted" and not (out / records.MODEL).exists()
    steps = records.read_checkpoint(out)["step"]
    assert steps == (24 if final_checkpoint == "written" else 12)
    monkeypatch.undo()
    assert main(["run", "--resume", str(out), "--no-progress"]) == 0
    _same_run(uninterrupted["nl"], out)


def test_overwrite_through_a_symlink_replaces_the_run_it_links_to(tmp_path):
    real, link = tmp_path / "real", tmp_path / "link"
    train(RunConfig(out=str(real), **QUICK))
    link.symlink_to(real, target_is_directory=True)
    train(RunConfig(out=str(link), overwrite=True, lr=0.05, **QUICK))
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert records.is_finished(real) and records.read_config(real)["lr"] == 0.05
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]  # no link.old, real.new, ...


@pytest.mark.parametrize("value", ["abc", "-1", "0", "1e309", "nan"])
def test_a_bad_log_interval_in_the_environment_is_one_line(value, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OBLIQUE_LOG_EVERY", value)
    assert main(["run", *QUICK_FLAGS, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err == (
        "oblique: error: the environment variable OBLIQUE_LOG_EVERY must be a number > 0 and <= 86400; "
        f"got '{value}'\n"
    )
    assert not (tmp_path / "r").exists()
