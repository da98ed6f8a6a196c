"""The study's executors past one process: one GPU per local worker, ``device`` as an execution setting,
and Ray (a real local Ray instance with 2 CPUs: never mocked): the same study as the local executor,
Ctrl-C and a rerun, a worker that dies."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from oblique import records
from oblique.cli import main
from oblique.config import ConfigError
from oblique.study import (
    ERROR_FILE,
    RESULTS_FILE,
    STUDY_FILE,
    Executor,
    LocalPoolExecutor,
    Outcome,
    StudySpec,
    Task,
    expand,
    load_study,
    run_study,
    run_task,
)
from oblique.study.local import _pinned_gpus, visible_gpus

#: the ``oblique`` command in a fresh interpreter
OBLIQUE = [sys.executable, "-c", "import sys; from oblique.cli import main; sys.exit(main())"]
#: a small real study: 4 one-epoch runs of 12 steps (batch 500 on MNIST-1D's 6000 training samples)
SMALL = [
    "--methods",
    "nl,baseline",
    "--seeds",
    "2",
    "--epochs",
    "1",
    "--batch-sizes",
    "500",
    "--drift-every",
    "5",
    "--no-figures",
    "--no-bench",
    "--no-progress",
]
#: what differs between two studies of the same runs: where they are, and how long things took
TIME_COLUMNS = ("train_time_s", "regularizer_time_s")


def _quiet(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


# --------------------------------------------------------------------------- one GPU per local worker
def _report_gpu(task: Task) -> Outcome:
    """A task function for the pool: what the worker process sees (module level: the workers import it)."""
    time.sleep(0.3)  # long enough that both workers take tasks
    return Outcome.done(task.name, {"gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()})


def _fake_tasks(n: int, device: str = "auto") -> list[Task]:
    return [Task(f"t{i}", "unused", {"device": device}, threads=1) for i in range(n)]


def _pool(tasks: list[Task], **kwargs) -> dict[str, dict]:
    got: dict[str, dict] = {}
    assert (
        LocalPoolExecutor(2, task_fn=_report_gpu, **kwargs).run(
            tasks, lambda o: got.update({o.name: o.brief})
        )
        is False
    )
    return got


def test_the_local_pool_gives_each_worker_its_own_gpu(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    got = _pool(_fake_tasks(6), gpus=["0", "1"])
    per_worker = {}
    for info in got.values():
        per_worker.setdefault(info["pid"], set()).add(info["gpu"])
    assert len(got) == 6 and len(per_worker) == 2  # two workers, each always on the same GPU
    assert sorted(g for gs in per_worker.values() for g in gs) == ["0", "1"]
    assert os.environ.get("CUDA_VISIBLE_DEVICES") is None  # the study process's own environment is left alone


def test_the_local_pool_leaves_a_named_gpu_and_a_cpu_machine_alone(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7,8")
    got = _pool(_fake_tasks(2, device="cuda:1"), gpus=["7", "8"])  # cuda:1 means what it says: no pinning
    assert {info["gpu"] for info in got.values()} == {"7,8"}
    assert _pinned_gpus(_fake_tasks(2, "cuda:1"), ["7", "8"]) == []
    assert _pinned_gpus(_fake_tasks(2, "cuda"), ["7", "8"]) == ["7", "8"]
    assert _pinned_gpus(_fake_tasks(2), ["7"]) == []  # one GPU: nothing to choose
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    got = _pool(_fake_tasks(2))  # this machine's own GPUs: none here, so no pinning
    if not visible_gpus():
        assert {info["gpu"] for info in got.values()} == {None}


def test_visible_gpus_follow_torch_and_cuda_visible_devices(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus() == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, GPU-5a1b")
    assert visible_gpus() == ["3", "GPU-5a1b"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert visible_gpus() == []


# --------------------------------------------------------------------------- device: an execution setting
@pytest.mark.slow
def test_device_is_an_execution_setting_that_reaches_every_run(tmp_path, capsys):
    out = tmp_path / "s"
    base = [
        "study",
        "--methods",
        "baseline",
        "--epochs",
        "1",
        "--batch-sizes",
        "500",
        "--workers",
        "0",
        "--no-figures",
        "--no-bench",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert _quiet([*base, "--seeds", "1"], capsys)[0] == 0
    study = json.loads((out / STUDY_FILE).read_text())
    assert all("device" not in r["settings"] for r in study["runs"].values())  # not what a run is
    # planned with --device auto (the default), continued with another device and another log interval
    code, err = _quiet([*base, "--seeds", "2", "--device", "cpu", "--log-every", "3"], capsys)
    assert code == 0, err
    configs = {n: records.read_config(out / "runs" / n) for n in load_study(out).runs}
    assert [(c["seed"], c["device"], c["log_every"]) for c in configs.values()] == [
        (0, "auto", 50),
        (1, "cpu", 3),
    ]
    assert all(c["device_used"] == "cpu" for c in configs.values())


def test_an_old_study_file_with_a_device_still_reads(tmp_path, capsys):
    runs = expand(StudySpec(methods=["baseline"], seeds=[0], base={"epochs": 1, "batch_size": 500}))
    run_study(tmp_path, runs, workers=0, threads=1, progress=False, echo=lambda line: None)
    data = json.loads((tmp_path / STUDY_FILE).read_text())
    for entry in data["runs"].values():  # as a study.json written before device was an execution setting
        entry["settings"]["device"] = "cuda:3"
    (tmp_path / STUDY_FILE).write_text(json.dumps(data))
    study = load_study(tmp_path)
    assert all("device" not in r["settings"] for r in study.runs.values())
    assert run_study(tmp_path, runs, workers=0, progress=False).ran == []  # the same runs, all finished


class _Recorder(Executor):
    """An executor (the contract's one abstract method) that trains nothing and keeps the tasks it was
    given."""

    def __init__(self):
        self.tasks: list[Task] = []

    def run(self, tasks, finished) -> bool:
        self.tasks += tasks
        return False


def test_the_executor_contract_declares_its_defaults_and_run_study_reads_them(tmp_path):
    rec = _Recorder()
    assert rec.threads_per_run is None and rec.connect() is None  # the contract's defaults
    runs = expand(StudySpec(methods=["baseline"], seeds=[0], base={"epochs": 1}))
    rec.threads_per_run = 3  # an executor that says how many threads a run gets
    run_study(tmp_path, runs, executor=rec, progress=False)
    assert [t.threads for t in rec.tasks] == [3]
    with pytest.raises(TypeError):
        Executor()  # run is the one thing a backend must say


def _interrupted(task: Task) -> Outcome:
    raise KeyboardInterrupt


def test_the_worker_body_reports_an_interrupt_and_restores_the_sigint_handler(monkeypatch):
    from oblique.study.task import run_in_worker
    from oblique.train import StopOnSignal

    monkeypatch.setattr(StopOnSignal, "second_signal_stops", True)  # restored after the test
    task = Task("t0", "unused", {}, threads=1)
    before = signal.getsignal(signal.SIGINT)
    assert run_in_worker(_interrupted, task) == Outcome.interrupted("t0")
    assert run_in_worker(lambda t: Outcome.done(t.name, {"status": "ok"}), task).brief == {"status": "ok"}
    assert signal.getsignal(signal.SIGINT) is before and StopOnSignal.second_signal_stops is False


def test_execution_settings_reach_the_tasks_and_nothing_else_does(tmp_path):
    from oblique.study import StudyError, execution_settings

    runs = expand(StudySpec(methods=["baseline"], seeds=[0, 1], base={"epochs": 1}))
    rec = _Recorder()
    # a Ray cluster's GPUs need not be on the study's machine: there only the device's form is checked
    execution = execution_settings({"device": "cuda", "log_every": 7, "epochs": 3}, device_here=False)
    assert execution == {"device": "cuda", "log_every": 7}
    run_study(tmp_path, runs, executor=rec, execution=execution, progress=False)
    assert [(t.settings["device"], t.settings["log_every"], t.settings["epochs"]) for t in rec.tasks] == [
        ("cuda", 7, 1),
        ("cuda", 7, 1),
    ]
    with pytest.raises(StudyError, match="epochs cannot be given"):
        run_study(tmp_path, runs, executor=rec, execution={"epochs": 3}, progress=False)
    with pytest.raises(ConfigError, match="device must be"):
        execution_settings({"device": "tpu"}, device_here=False)


def test_a_device_this_machine_lacks_is_refused_up_front(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, err = _quiet(
        [
            "study",
            "--methods",
            "baseline",
            "--seeds",
            "1",
            "--device",
            "cuda",
            "--workers",
            "0",
            "--out",
            str(tmp_path / "s"),
        ],
        capsys,
    )
    assert code == 2 and err.strip().startswith("oblique: error: --device cuda") and "\n" not in err.strip()
    assert not (tmp_path / "s").exists()
    code, err = _quiet(
        ["study", "--methods", "baseline", "--address", "auto", "--out", str(tmp_path / "s")], capsys
    )
    assert code == 2 and "--address" in err and "--executor ray" in err and not (tmp_path / "s").exists()


# --------------------------------------------------------------------------- Ray: the extra
def test_ray_is_imported_only_when_used_and_its_absence_is_one_line(tmp_path):
    code = (
        "import sys; from oblique.cli import main\n"
        "import oblique.study, oblique.study.execute, oblique.study.local\n"
        "assert 'ray' not in sys.modules, 'ray imported without being asked for'\n"
        "sys.modules['ray'] = None  # as if it were not installed\n"
        f"sys.exit(main(['study', '--executor', 'ray', '--methods', 'baseline', '--out', {str(tmp_path / 's')!r}]))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    line = p.stderr.strip()
    assert "\n" not in line and line.startswith("oblique: error: --executor ray needs Ray"), line
    assert 'pip install "oblique[ray]"' in line
    assert not (tmp_path / "s").exists()


# --------------------------------------------------------------------------- Ray: a local instance
@pytest.fixture(scope="module")
def ray_address():
    """A local Ray instance with 2 CPUs for this module (a few seconds to start); its address."""
    if os.environ.get("CI"):
        import ray  # CI installs the ray extra: its absence is a failure there, not a skip
    else:
        ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    # the test's own task functions travel by value (the workers cannot import this test module)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        ray.shutdown()


def _configs(root: Path) -> dict[str, dict]:
    """Every run's config.json but where it is (``out``) and the machine's momentary state."""
    skip = {"out"}
    return {
        n: {k: v for k, v in records.read_config(root / "runs" / n).items() if k not in skip}
        for n in load_study(root).runs
    }


@pytest.mark.slow
def test_a_ray_study_equals_the_local_one(tmp_path, capsys, ray_address):
    local, ray_ = tmp_path / "local", tmp_path / "ray"
    # one torch thread per run in both (Ray's default: its one CPU), whatever the machine's cores
    assert _quiet(["study", *SMALL, "--workers", "2", "--threads", "1", "--out", str(local)], capsys)[0] == 0
    code, err = _quiet(
        ["study", *SMALL, "--executor", "ray", "--cpus-per-run", "1", "--out", str(ray_)], capsys
    )
    assert code == 0, err
    assert "ray: 4 runs on 2 CPUs and 0 GPUs" in err
    assert (local / STUDY_FILE).read_bytes() == (ray_ / STUDY_FILE).read_bytes()
    assert _configs(local) == _configs(ray_)
    a = pd.read_csv(local / RESULTS_FILE).drop(columns=list(TIME_COLUMNS))
    b = pd.read_csv(ray_ / RESULTS_FILE).drop(columns=list(TIME_COLUMNS))
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 4 and (a["status"] == "ok").all() and (a["threads"] == 1).all()
    assert (local / "summary.md").read_text().split("## The poster")[0].count("\n| ") == (
        (ray_ / "summary.md").read_text().split("## The poster")[0].count("\n| ")
    )


def _exit_in_one_run(task: Task) -> Outcome:
    """A task function that kills its worker process (``os._exit``) for one chosen run, else trains."""
    if task.name.startswith("baseline_") and task.name.endswith("seed1"):
        os._exit(3)
    return run_task(task)


@pytest.mark.slow
def test_a_ray_worker_that_dies_is_recorded_and_the_study_completes(tmp_path, ray_address):
    from oblique.study.ray_executor import RayExecutor

    runs = expand(StudySpec(methods=["nl", "baseline"], seeds=[0, 1], base={"epochs": 1, "batch_size": 500}))
    lines: list[str] = []
    result = run_study(
        tmp_path, runs, executor=RayExecutor(task_fn=_exit_in_one_run), progress=False, echo=lines.append
    )
    dead = "baseline_bs500_seed1"
    assert (
        not result.interrupted
        and result.failed == [dead]
        and sorted(result.ran) == sorted(r.name for r in runs if r.name != dead)
    )
    why = (tmp_path / "runs" / dead / ERROR_FILE).read_text()
    assert why.startswith("Ray worker died while training this run (WorkerCrashedError")
    assert any(line.startswith("baseline bs=500 seed=1: failed (Ray worker died") for line in lines)
    res = pd.read_csv(tmp_path / RESULTS_FILE).set_index("run")
    assert (
        len(res) == 4
        and res.loc[dead, "status"] == "error"
        and (res.drop(index=dead)["status"] == "ok").all()
    )
    again = run_study(tmp_path, runs, executor=RayExecutor(), progress=False, echo=lines.append)
    assert again.ran == [dead] and not again.failed  # the rerun retries it, and only it
    assert (pd.read_csv(tmp_path / RESULTS_FILE)["status"] == "ok").all()


def _finished(out: Path) -> dict[str, int]:
    runs = out / "runs"
    if not runs.exists():
        return {}
    return {
        d.name: (d / records.SUMMARY).stat().st_mtime_ns for d in runs.iterdir() if records.is_finished(d)
    }


def _training(out: Path) -> list[Path]:
    """Run folders of runs part-way through training (step records written, no summary yet)."""
    return [
        d
        for d in (out / "runs").glob("*")
        if (d / records.METRICS).is_file()
        and '"type": "step"' in (d / records.METRICS).read_text()
        and not (d / records.SUMMARY).exists()
    ]


@pytest.mark.slow
def test_ctrl_c_cancels_the_ray_tasks_and_a_rerun_finishes_every_run_once(tmp_path, ray_address):
    out = tmp_path / "s"
    # runs of a few seconds each, so that the Ctrl-C lands while runs are still to train on a fast machine
    argv = [
        *OBLIQUE,
        "study",
        "--methods",
        "nl,baseline",
        "--seeds",
        "2",
        "--epochs",
        "8",
        "--batch-sizes",
        "100",
        "--drift-every",
        "10",
        "--log-every",
        "5",
        "--executor",
        "ray",
        "--address",
        ray_address,
        "--out",
        str(out),
        "--no-progress",
        "--no-figures",
        "--no-bench",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    deadline = time.monotonic() + 240
    while (
        p.poll() is None and time.monotonic() < deadline and not ((out / "runs").is_dir() and _training(out))
    ):
        time.sleep(0.1)
    assert p.poll() is None, "the study ended before it could be interrupted: " + p.communicate()[1]
    os.kill(p.pid, signal.SIGINT)  # Ctrl-C to the study process alone: it cancels its Ray tasks
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
        "oblique: study interrupted:"
    ), err
    before = _finished(out)
    stopped = [d for d in (out / "runs").iterdir() if d.name not in before and (d / records.SUMMARY).exists()]
    assert stopped, "no run was stopped part-way"
    for d in stopped:  # each stopped run says so and kept its checkpoint
        assert records.read_summary(d)["status"] == "interrupted" and (d / records.CHECKPOINT).is_file()
    assert len(before) < 4

    p2 = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert p2.returncode == 0, p2.stderr
    res = pd.read_csv(out / RESULTS_FILE)
    assert len(res) == 4 and res["run"].is_unique and (res["status"] == "ok").all()
    after = _finished(out)
    assert len(after) == 4 and {n: after[n] for n in before} == before  # no finished run recomputed
    for d in stopped:  # resumed from the checkpoint, every step recorded once, in order
        assert records.read_summary(d)["resumed_at"], d.name
    for d in (out / "runs").iterdir():
        steps = [
            json.loads(line)["step"]
            for line in (d / records.METRICS).read_text().splitlines()
            if '"type": "step"' in line
        ]
        assert steps == list(range(1, len(steps) + 1))
    assert sum(line.startswith(("nl", "baseline")) for line in p2.stderr.splitlines()) == 4 - len(before)


def _processes() -> dict[int, tuple[int, str, str]]:
    """Every process of this machine: pid -> (parent, state, command line) (Linux: /proc)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                rest = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError):
                continue
            table[int(entry.name)] = (int(rest[1]), rest[0], cmd.strip())
    return table


def _descendants(pid: int) -> dict[int, str]:
    """The processes ``pid`` started, and theirs: pid -> command line."""
    table, found, frontier = _processes(), {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, _, cmd) in table.items():
            if ppid == parent and child not in found:
                found[child] = cmd
                frontier.append(child)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="the watchdog watches through /proc (Linux)")
def test_a_study_killed_outright_takes_its_local_ray_instance_with_it(tmp_path):
    """SIGKILL to ``oblique study --executor ray`` (a local instance): within seconds nothing of that
    instance is left, Ray's agents included (on their own they outlive it by a minute)."""
    if not os.environ.get("CI"):
        pytest.importorskip("ray")
    out = tmp_path / "s"
    argv = [
        *OBLIQUE,
        "study",
        "--methods",
        "baseline",
        "--seeds",
        "2",
        "--epochs",
        "40",
        "--batch-sizes",
        "500",
    ]
    argv += ["--executor", "ray", "--out", str(out), "--no-progress", "--no-figures", "--no-bench"]
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while (
        p.poll() is None and time.monotonic() < deadline and not ((out / "runs").is_dir() and _training(out))
    ):
        time.sleep(0.1)
    assert p.poll() is None, "the study ended before it could be killed: " + p.communicate()[1]
    time.sleep(1.5)  # the watchdog notes the instance's processes once a second
    family = _descendants(p.pid)
    assert any(cmd == "ray::DashboardAgent" for cmd in family.values()), family
    p.kill()
    p.communicate(timeout=60)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        table = _processes()
        left = {pid: cmd for pid, cmd in family.items() if pid in table and table[pid][1] not in "ZX"}
        if not left:
            break
        time.sleep(0.2)
    assert not left, f"left running after the study process was killed: {sorted(left.values())}"
