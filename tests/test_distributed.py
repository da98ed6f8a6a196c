"""One run on N processes, for real: torchrun --nproc_per_node=2 with gloo on the CPU (never mocked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import oblique
from oblique import records

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
SCRIPT = Path(__file__).parent / "scripts" / "ddp_check.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "result.json"
    p = subprocess.run(
        [*TORCHRUN, str(SCRIPT), str(out)], capture_output=True, text=True, timeout=600, env=ENV
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_every_method_under_ddp_equals_one_process_on_the_global_batch(ddp):
    """Acceptance: float64, the MNIST-1D CNN, every method: after a few steps the parameters equal a single
    process on the global batch to 1e-12, and are identical on both ranks."""
    assert set(ddp["methods"]) == {*oblique.list_methods(), "nl-autograd", "oblique-rsgd-geoopt"}
    for name, r in ddp["methods"].items():
        assert r["max_diff"] <= 1e-12, name
        assert r["ranks_identical"], name


@pytest.mark.slow
def test_the_fixed_batch_order_under_ddp_equals_one_process(ddp):
    assert ddp["fixed_order"]["max_diff"] <= 1e-12 and ddp["fixed_order"]["ranks_identical"]


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_both_as_diverged(ddp):
    assert ddp["diverged_steps"] == [3, 3]


@pytest.mark.slow
def test_oblique_run_under_torchrun_writes_one_folder_matching_one_process(tmp_path):
    args = [
        "run",
        "--model",
        "cnn",
        "--epochs",
        "1",
        "--batch-size",
        "100",
        "--threads",
        "1",
        "--no-progress",
    ]
    p = subprocess.run(
        [*TORCHRUN, "-m", "oblique", *args, "--out", str(tmp_path / "ddp")],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("test error") == 1  # rank 0 reports, alone
    single = subprocess.run(
        [sys.executable, "-m", "oblique", *args, "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    assert single.returncode == 0, single.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "one"]  # exactly one run folder each
    a, b = records.read_metrics(tmp_path / "ddp"), records.read_metrics(tmp_path / "one")
    assert [(r["type"], r.get("step")) for r in a] == [(r["type"], r.get("step")) for r in b]
    for x, y in zip(a, b, strict=True):
        if x["type"] == "step":
            assert x["loss"] == pytest.approx(y["loss"], rel=1e-5) and x["lr"] == y["lr"]
    sa, sb = records.read_summary(tmp_path / "ddp"), records.read_summary(tmp_path / "one")
    assert sa["status"] == sb["status"] == "ok"
    assert abs(sa["test_error"] - sb["test_error"]) <= 0.1  # at most a couple of test samples
    config = records.read_config(tmp_path / "ddp")
    assert config["world_size"] == 2 and config["batch_size_per_rank"] == 50


@pytest.mark.slow
def test_sigterm_under_torchrun_stops_every_rank_interrupted_with_a_checkpoint(tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    args = [
        "run",
        "--model",
        "cnn",
        "--epochs",
        "20",
        "--batch-size",
        "100",
        "--threads",
        "1",
        "--no-progress",
        "--log-every",
        "5",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        [*TORCHRUN, "-m", "oblique", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    t0 = time.monotonic()
    while not (
        (out / records.METRICS).exists() and len((out / records.METRICS).read_text().splitlines()) > 12
    ):
        assert proc.poll() is None and time.monotonic() - t0 < 300
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # torchrun forwards it to both ranks
    proc.communicate(timeout=120)
    summary = records.read_summary(out)
    assert summary["status"] == "interrupted" and (out / records.CHECKPOINT).exists()
    steps = [r["step"] for r in records.read_metrics(out, "step")]
    assert steps == list(range(1, summary["steps"] + 1)) and summary["steps"] % 5 == 0  # stopped at a flush


def _rank_pid(torchrun: subprocess.Popen, rank: int) -> int:
    """The process id of ``rank``, one of torchrun's children (its ``RANK`` in its environment)."""
    for child in Path("/proc").iterdir():
        try:
            if (
                child.name.isdigit()
                and int((child / "stat").read_text().rsplit(")", 1)[1].split()[1]) == torchrun.pid
            ):
                if f"RANK={rank}".encode() in (child / "environ").read_bytes().split(b"\0"):
                    return int(child.name)
        except OSError:
            continue
    raise AssertionError(f"rank {rank} of torchrun {torchrun.pid} not found")


def _wait(until, proc: subprocess.Popen, timeout: float = 300) -> None:
    import time

    t0 = time.monotonic()
    while not until():
        assert proc.poll() is None, "the run ended before it could be stopped"
        assert time.monotonic() - t0 < timeout
        time.sleep(0.05)


def _errors(err: str) -> list[str]:
    """The lines the ranks print (torchrun's own report and log lines aside)."""
    return [line for line in err.splitlines() if line.startswith(("oblique:", "[rank"))]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="finds a rank's process through /proc (Linux)")
def test_sigterm_then_a_killed_rank_under_torchrun_each_end_in_one_line_and_the_run_resumes(tmp_path):
    """README, "Scale out" and "When things go wrong": SIGTERM to torchrun stops every rank with a
    checkpoint (torchrun itself exits 1, rank 0 says how to continue); ``kill -9`` of one rank leaves the
    survivor saying, in one line, which rank died and how to resume; the run then resumes to its end."""
    import signal

    out = tmp_path / "run"
    resume = f"torchrun --nproc_per_node=2 -m oblique run --resume {out}"
    args = ["--model", "cnn", "--epochs", "4", "--batch-size", "200", "--threads", "1", "--no-progress"]
    args += ["--log-every", "5", "--checkpoint-every", "1", "--out", str(out)]
    pipes = dict(env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc = subprocess.Popen([*TORCHRUN, "-m", "oblique", "run", *args], **pipes)
    _wait(
        lambda: len(records.read_metrics(out, "step")) >= 10 if (out / records.METRICS).exists() else False,
        proc,
    )
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1  # torchrun's own status after a signal (README)
    assert _errors(err) == [
        f"oblique: interrupted; the run's checkpoint is in {out}: continue it with '{resume}'"
    ]
    first = records.read_summary(out)["steps"]

    proc = subprocess.Popen(
        [*TORCHRUN, "-m", "oblique", "run", "--resume", str(out), "--no-progress"], **pipes
    )
    _wait(lambda: records.read_checkpoint(out)["step"] > first, proc)  # a checkpoint of the resumed run
    os.kill(_rank_pid(proc, 1), signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert _errors(err) == [
        "oblique: error: rank 1 of the 2 processes of this run stopped (killed or crashed) while it trained; "
        f"its last checkpoint is in {out}: continue it with '{resume}'"
    ]
    assert records.read_summary(out)["status"] == "interrupted"

    done = subprocess.run(
        [*TORCHRUN, "-m", "oblique", "run", "--resume", str(out), "--no-progress"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = records.read_summary(out)
    assert summary["status"] == "ok" and len(summary["resumed_at"]) == 2
    steps = [r["step"] for r in records.read_metrics(out, "step")]
    assert steps == list(range(1, summary["steps"] + 1)) == list(range(1, 4 * 30 + 1))
