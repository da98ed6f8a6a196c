"""Executing a study: the executors behind one small interface, and :func:`run_study`.

An executor trains a list of *tasks* (one planned run each: its name, its run folder, its settings and its
torch thread count) and reports each finished one; what to run is a plain function of the task whose
results land on disk (:func:`run_task`), how to run it is the executor's business:

- :class:`InProcessExecutor` (``workers = 0``): one run after the other in this process (notebooks,
  debugging).
- :class:`LocalPoolExecutor` (``workers >= 1``): local worker processes (spawned, never forked), each
  with ``max(1, cores // workers)`` torch threads unless ``threads`` says otherwise. On a machine with
  several GPUs each worker sees one (``CUDA_VISIBLE_DEVICES``, round-robin over the visible GPUs), so
  ``--device auto`` (or ``cuda``) puts the workers on different GPUs; a run that names ``cuda:N`` keeps
  every GPU visible, and a CPU-only machine is left alone.
- :class:`oblique.study.ray_executor.RayExecutor` (``oblique study --executor ray``): plain Ray tasks on a
  local Ray instance or a cluster, each with ``--cpus-per-run`` CPUs and ``--gpus-per-run`` GPUs as its
  resources (Ray sets ``CUDA_VISIBLE_DEVICES`` per task). Ray is imported only by that module
  (``pip install "oblique[ray]"``); :func:`executor_for` imports it only when asked for.

Every executor has the same contract: ``run(tasks, finished) -> interrupted``; ``finished(name, message)``
is called once per task that ended, with ``("done", name, brief)`` or ``("error", name, why)``. A run that
crashes, or whose worker dies, leaves ``study_error.txt`` in its folder and the study goes on. Ctrl-C
(SIGINT to the process group, or to the study process alone) stops the workers, records the runs in
flight as ``interrupted`` (with a checkpoint) and returns True. The pool executors take the function that
trains one task (``task_fn``, default :func:`run_task`): a test can pass its own, which must be importable
by the workers (a module-level function).

Resuming: :func:`run_study` skips the finished runs of the folder (status ``ok`` or ``diverged``,
:func:`oblique.records.is_finished`); an unfinished run with a checkpoint (stopped by Ctrl-C, SIGTERM, or
its study process killed — the workers are then signalled) continues from it (:func:`oblique.train.resume`);
one without (crashed, killed before its first checkpoint) is removed and rerun from the start.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from oblique import records, storage
from oblique.progress import progress as _bar
from oblique.study.folder import ERROR_FILE, Lock, Study, plan_study
from oblique.study.spec import BASIC_AXES, PlannedRun, StudyError
from oblique.study.tables import collect
from oblique.study.task import Finished, TaskFn, record_error, run_task
from oblique.text import value as _fmt

__all__ = [
    "Executor",
    "InProcessExecutor",
    "LocalPoolExecutor",
    "StudyResult",
    "default_threads",
    "execution_settings",
    "executor_for",
    "run_study",
    "run_task",
]

#: The executors :func:`executor_for` knows.
EXECUTORS = ("local", "ray")
#: Execution settings the study itself decides (the run folder, threads, no progress bar, no overwrite of
#: a run, a download done once at planning); the other ones given to a study reach every run.
_STUDY_DECIDES = ("out", "threads", "progress", "overwrite", "download")


class Executor(Protocol):
    """How a study's runs are trained: ``run`` trains ``tasks`` and calls ``finished`` once per ended task;
    it returns True when SIGINT stopped it (the runs in flight are then recorded ``interrupted``)."""

    def run(self, tasks: list[dict], finished: Finished) -> bool: ...


class InProcessExecutor:
    """Train one run after the other in this process."""

    def run(self, tasks: list[dict], finished: Finished) -> bool:
        try:
            for task in tasks:
                finished(task["name"], run_task(task))
        except KeyboardInterrupt:
            return True
        return False


@dataclass
class LocalPoolExecutor:
    """Train on ``workers`` local worker processes (spawned).

    Attributes:
        workers: how many worker processes.
        task_fn: trains one task in a worker (default :func:`run_task`); a module-level function.
        gpus: the GPUs to pin the workers to, round-robin (``CUDA_VISIBLE_DEVICES`` values); ``None`` = the
            GPUs visible here (:func:`visible_gpus`); empty = no pinning.
    """

    workers: int
    task_fn: TaskFn | None = None
    gpus: Sequence[str] | None = None

    def run(self, tasks: list[dict], finished: Finished) -> bool:
        gpus = _pinned_gpus(tasks, visible_gpus() if self.gpus is None else list(self.gpus))
        try:
            return _run_pool(tasks, self.workers, finished, task_fn=self.task_fn or run_task, gpus=gpus)
        except KeyboardInterrupt:
            return True


def executor_for(workers: int = 2, kind: str = "local", **options) -> Executor:
    """The executor of a study: ``local`` with ``workers`` (0 = this process, N = N worker processes), or
    ``ray`` (:class:`oblique.study.ray_executor.RayExecutor`, given ``options``: ``address``,
    ``cpus_per_run``, ``gpus_per_run``, ...; Ray is imported only then).

    Raises:
        StudyError: an unknown executor, a bad worker count, options for the wrong executor, or Ray asked
            for where it is not installed (the message names the extra).
    """
    if kind not in EXECUTORS:
        raise StudyError(
            f"executor must be one of {', '.join(EXECUTORS)}; got {kind!r}", settings=("executor",)
        )
    if kind == "ray":
        from oblique.study.ray_executor import RayExecutor  # imports Ray only when asked for

        return RayExecutor(**options)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise StudyError(f"workers must be an integer >= 0; got {workers!r}", settings=("workers",))
    given = sorted(k for k, v in options.items() if v is not None)
    if given:
        raise StudyError(f"{', '.join(given)} apply to the ray executor only; add --executor ray",
                         settings=tuple(given))  # fmt: skip
    return InProcessExecutor() if workers == 0 else LocalPoolExecutor(workers)


def execution_settings(base: Mapping, *, device_here: bool = True) -> dict:
    """The execution settings of ``base`` (a study's fixed run settings) that reach every run: ``device``,
    ``checkpoint_every``, ``log_every``, ... (:data:`oblique.study.spec.EXECUTION_FIELDS` less those the
    study decides itself). They are not planned (study.json leaves them out: they do not change what a
    run computes), so a study can be resumed with another of them (``--device cuda:0``).

    Raises:
        oblique.config.ConfigError: a device that is not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, or, with
            ``device_here`` (the runs train on this machine), CUDA asked for where torch sees none.
    """
    from oblique.config import resolve_device
    from oblique.study.spec import EXECUTION_FIELDS

    out = {k: base[k] for k in EXECUTION_FIELDS if k in base and k not in _STUDY_DECIDES}
    device = out.get("device", "auto")
    if device_here or device != "auto":  # elsewhere (a Ray cluster): only the form is checked here
        resolve_device(device, here=device_here)
    return out


@dataclass
class StudyResult:
    """What :func:`run_study` did."""

    study: Study
    ran: list[str]
    failed: list[str]
    interrupted: bool


def run_study(
    root: str | os.PathLike,
    runs: Sequence[PlannedRun],
    *,
    workers: int = 2,
    threads: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    executor: Executor | None = None,
    execution: Mapping | None = None,
) -> StudyResult:
    """Plan ``runs`` into the study at ``root``, train every unfinished run, write the tables.

    Args:
        root: the study folder.
        runs: from :func:`oblique.study.expand`.
        workers: worker processes; 0 trains in this process (ignored when ``executor`` is given).
        threads: torch threads per run; ``None`` = the executor's ``threads_per_run`` when it has one
            (Ray: the CPUs of a run), else :func:`default_threads`.
        overwrite: start the folder over (see :func:`oblique.study.plan_study`).
        progress: a tqdm bar over runs.
        echo: called with one line per finished run (default: ``tqdm.write``).
        executor: how to train the runs (default: :func:`executor_for` ``workers``).
        execution: execution settings for every run (:func:`execution_settings`: ``device``,
            ``checkpoint_every``, ``log_every``), laid over the planned settings of the runs this session
            starts; a run resumed from its checkpoint keeps those recorded in its ``config.json``.

    Returns:
        The :class:`StudyResult`. ``interrupted`` is true when SIGINT stopped the study (the tables are
        written from the finished runs either way).

    Raises:
        StudyLockedError: another process runs a study in ``root``.
        StudyError: the runs conflict with the study already in ``root``.
    """
    executor = executor or executor_for(workers)
    threads = threads or getattr(executor, "threads_per_run", None) or default_threads(workers)
    root = Path(root)
    with Lock(root):
        study, _ = plan_study(root, runs, overwrite=overwrite)
        tasks = _unfinished_tasks(study, threads, _execution_only(execution or {}))
        bar = _progress(study, len(tasks), progress)
        say = echo or (lambda line: bar.write(line, file=sys.stderr))
        if tasks and (note := _threads_note(study, threads)):
            say(note)
        ran: list[str] = []
        failed: list[str] = []

        def finished(name: str, msg: tuple) -> None:
            say(_line(study, name, msg))
            (failed if msg[0] == "error" else ran).append(name)
            bar.update(1)

        try:
            interrupted = executor.run(tasks, finished)
        finally:
            bar.close()
            _collect_uninterrupted(study)
    return StudyResult(study, ran, failed, interrupted)


def _execution_only(execution: Mapping) -> dict:
    """``execution`` checked to hold only execution settings a study passes on to its runs."""
    from oblique.study.spec import EXECUTION_FIELDS

    bad = sorted(k for k in execution if k not in EXECUTION_FIELDS or k in _STUDY_DECIDES)
    if bad:
        passed = ", ".join(k for k in EXECUTION_FIELDS if k not in _STUDY_DECIDES)
        raise StudyError(f"execution: {', '.join(map(str, bad))} cannot be given to a study's runs this way; "
                         f"only {passed} (the others change what a run computes, or the study decides them)")  # fmt: skip
    return dict(execution)


def _unfinished_tasks(study: Study, threads: int, execution: Mapping) -> list[dict]:
    """A task for every unfinished run: resumed from its checkpoint when it has one, else started over
    (its old folder — crashed, or killed before its first checkpoint — removed first); its settings are
    the planned ones with this session's ``execution`` settings over them."""
    from oblique.train import remove_run

    tasks = []
    for name in study.unfinished():
        run_dir = study.run_dir(name)
        resume = (run_dir / records.CHECKPOINT).is_file() and (run_dir / records.CONFIG).is_file()
        if not resume:
            remove_run(run_dir)
        settings = {**study.runs[name]["settings"], **execution}
        tasks.append({"name": name, "out": str(run_dir), "settings": settings, "threads": threads,
                      "resume": resume})  # fmt: skip
    return tasks


def _threads_note(study: Study, threads: int) -> str | None:
    """One line when finished runs of the study were trained with another torch thread count than this
    session's: their numbers may differ from a rerun in the last digits (results.csv has a column)."""
    used = set()
    for name in study.runs:
        try:
            used.add(records.read_config(study.run_dir(name)).get("threads_used"))
        except (storage.RecordError, AttributeError):
            continue
    used.discard(None)
    if used and used != {threads}:
        return (
            f"note: finished runs of this study used {', '.join(map(str, sorted(used)))} torch thread(s), "
            f"this session trains with {threads}; results depend on the thread count (column 'threads')"
        )
    return None


def _progress(study: Study, todo: int, progress: bool):
    return _bar(len(study.runs), "study", "run", enabled=progress, initial=len(study.runs) - todo)


def _collect_uninterrupted(study: Study) -> None:
    """Write the tables with SIGINT ignored, so a second Ctrl-C cannot leave them half-written."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        collect(study)
    finally:
        signal.signal(signal.SIGINT, old)


# --------------------------------------------------------------------------- one run, in a worker or here
def default_threads(workers: int) -> int:
    """Torch threads per worker so that ``workers`` processes do not oversubscribe the cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, workers))


def _interrupt_when_parent_dies() -> None:  # pragma: no cover - runs in a child process
    """Linux: SIGINT this process when its parent dies (a killed study leaves no orphan training on)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGINT))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(conn, task_fn: TaskFn = run_task) -> None:  # pragma: no cover - a child
    """A worker process: train the runs the parent sends (with ``task_fn``) until it sends ``None``.

    SIGINT is ignored while idle (the parent tells idle workers to stop); while a run trains, SIGINT (and
    SIGTERM) ask it to stop at the next step boundary with a checkpoint (``oblique.train.StopOnSignal``),
    so the run is recorded as interrupted and resumable, and the worker exits quietly.
    """
    from oblique.train import StopOnSignal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    StopOnSignal.second_signal_stops = False  # stop requests come from the study process, maybe twice
    _interrupt_when_parent_dies()
    try:
        while True:
            task = conn.recv()
            if task is None:
                return
            signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                msg = task_fn(task)
            except KeyboardInterrupt:
                msg = ("interrupted", task["name"], None)
            finally:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            conn.send(msg)
            if msg[0] == "interrupted":
                return
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        return


class _Worker:
    def __init__(self, ctx, task_fn: TaskFn, gpu: str | None = None):
        self.conn, child = ctx.Pipe()
        self.gpu = gpu
        self.proc = ctx.Process(target=_worker_main, args=(child, task_fn), daemon=True)
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the child starts with SIGINT ignored
        try:
            with _environment(CUDA_VISIBLE_DEVICES=gpu):  # a spawned child starts with this environment
                self.proc.start()
        finally:
            signal.signal(signal.SIGINT, old)
        child.close()
        self.current: str | None = None

    def send(self, task: dict | None) -> None:
        self.current = task["name"] if task else None
        try:
            self.conn.send(task)
        except (BrokenPipeError, OSError):
            pass


def _line(study: Study, name: str, msg: tuple) -> str:
    g = study.runs[name]["grid"]
    lam = f" λ={g['strength']:g}" if g.get("strength") is not None else ""
    extra = "".join(f" {k}={_fmt(v)}" for k, v in g.items() if k not in BASIC_AXES + ("strength_applies",))
    head = f"{g['method']}{lam} bs={g['batch_size']}{extra} seed={g['seed']}:"
    kind, _, info = msg
    if kind == "error":
        return f"{head} failed ({info}); see {study.run_dir(name) / ERROR_FILE}"
    if kind == "interrupted":
        return f"{head} interrupted"
    if info["status"] == "diverged":
        return (
            f"{head} diverged at step {info['diverged_step']} (non-finite loss), {info['train_time_s']:.1f} s"
        )
    return (
        f"{head} test error {info['test_error']:.2f} %, drift {info['norm_dev_mean']:.3g} (norm_dev_mean), "
        f"{info['train_time_s']:.1f} s"
    )


def _run_pool(
    tasks: list[dict],
    workers: int,
    finished: Finished,
    *,
    task_fn: TaskFn = run_task,
    gpus: Sequence[str] = (),
) -> bool:
    """Train ``tasks`` on ``workers`` processes (worker i sees GPU ``gpus[i % len(gpus)]`` alone, when
    ``gpus`` are given); return True when stopped by SIGINT."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")  # never fork a process that holds torch's thread pools
    pending = list(reversed(tasks))
    tasks_by_name = {t["name"]: t for t in tasks}
    slots = [gpus[i % len(gpus)] if gpus else None for i in range(min(workers, len(tasks)))]
    pool = [_Worker(ctx, task_fn, gpu) for gpu in slots]
    try:
        while True:
            for w in pool:
                if w.current is None and pending and w.proc.is_alive():
                    w.send(pending.pop())
            busy = [w for w in pool if w.current is not None]
            if not busy and not pending:
                return False
            ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in pool], timeout=1.0)
            for w in list(pool):
                msg = None
                if w.conn in ready:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        msg = None
                if msg is not None:
                    name = w.current
                    w.current = None
                    if msg[0] == "interrupted":
                        raise KeyboardInterrupt
                    finished(name, msg)
                elif w.proc.sentinel in ready or not w.proc.is_alive():
                    w.proc.join(timeout=5)
                    if w.current is not None:  # a worker died mid-run (killed, out of memory)
                        name, w.current = w.current, None
                        why = f"worker process exited with code {w.proc.exitcode}"
                        finished(name, record_error(tasks_by_name[name], why))
                    pool.remove(w)
                    if pending:  # a new worker takes the dead one's GPU
                        pool.append(_Worker(ctx, task_fn, w.gpu))
    except KeyboardInterrupt:
        _stop(pool)
        return True
    finally:
        for w in pool:
            w.send(None)
        for w in pool:
            w.proc.join(timeout=60)  # a stopping run finishes its step and checkpoints
            if w.proc.is_alive():  # pragma: no cover - a stuck worker
                w.proc.kill()


def _stop(pool: list[_Worker]) -> None:
    """Stop every worker: SIGINT to those still training (if the group's SIGINT missed them), then wait."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and any(w.proc.is_alive() and w.current for w in pool):
            time.sleep(0.05)
        for w in pool:
            if w.proc.is_alive() and w.current is not None:
                os.kill(w.proc.pid, signal.SIGINT)
            w.current = None
    finally:
        signal.signal(signal.SIGINT, old)


# --------------------------------------------------------------------------- one GPU per local worker
def visible_gpus() -> list[str]:
    """The GPUs this process sees, as values for a child's ``CUDA_VISIBLE_DEVICES``: the entries of this
    process's own ``CUDA_VISIBLE_DEVICES`` when it is set (indices or UUIDs), else ``0 … N-1``; empty on a
    machine without CUDA. Asks torch how many there are without initializing CUDA in this process (NVML
    where torch has it), so spawned workers are free to choose theirs."""
    import torch

    try:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except (RuntimeError, AssertionError):  # pragma: no cover - a broken driver: behave as CPU-only
        count = 0
    if count == 0:
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        listed = [d.strip() for d in env.split(",") if d.strip()]
        return listed[:count]
    return [str(i) for i in range(count)]


def _pinned_gpus(tasks: Sequence[Mapping], gpus: list[str]) -> list[str]:
    """The GPUs to pin workers to: ``gpus`` when there are two or more and no task names a GPU by index
    (``cuda:1`` must mean what it says), else none (every worker sees what this process sees)."""
    devices = {str(t.get("settings", {}).get("device", "auto")) for t in tasks}
    if len(gpus) < 2 or not devices <= {"auto", "cuda", "cpu"}:
        return []
    return gpus


class _environment:
    """Set environment variables (``None``: leave it alone) for the duration of the block."""

    def __init__(self, **values: str | None):
        self.values = {k: v for k, v in values.items() if v is not None}
        self.old: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for k, v in self.values.items():
            self.old[k] = os.environ.get(k)
            os.environ[k] = v

    def __exit__(self, *exc) -> None:
        for k, v in self.old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
