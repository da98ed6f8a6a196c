"""Executing a study: the executors behind one small interface, and :func:`run_study`.

An executor trains a list of *tasks* (one planned run each: its name, its run folder, its settings and its
torch thread count) and reports each finished one; what to run is a plain function of the task whose
results land on disk (:func:`run_task`), how to run it is the executor's business:

- :class:`InProcessExecutor` (``workers = 0``): one run after the other in this process (notebooks,
  debugging).
- :class:`LocalPoolExecutor` (``workers >= 1``): local worker processes (spawned, never forked), each
  with ``max(1, cores // workers)`` torch threads unless ``threads`` says otherwise.

Every executor has the same contract: ``run(tasks, finished) -> interrupted``; ``finished(name, message)``
is called once per task that ended, with ``("done", name, brief)`` or ``("error", name, why)``. A run that
crashes leaves ``study_error.txt`` in its folder and the study goes on. Ctrl-C (SIGINT to the process
group, or to the study process alone) stops the workers, records the runs in flight as ``interrupted``
and returns True.

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
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from oblique import records
from oblique.progress import progress as _bar
from oblique.study.folder import ERROR_FILE, Lock, Study, plan_study
from oblique.study.spec import BASIC_AXES, PlannedRun, StudyError
from oblique.study.tables import collect
from oblique.text import value as _fmt

__all__ = [
    "Executor",
    "InProcessExecutor",
    "LocalPoolExecutor",
    "StudyResult",
    "default_threads",
    "executor_for",
    "run_study",
    "run_task",
]

#: ``finished(name, message)``: called once per task that ended (see the module docstring).
Finished = Callable[[str, tuple], None]


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
    """Train on ``workers`` local worker processes (spawned)."""

    workers: int

    def run(self, tasks: list[dict], finished: Finished) -> bool:
        try:
            return _run_pool(tasks, self.workers, finished)
        except KeyboardInterrupt:
            return True


def executor_for(workers: int) -> Executor:
    """The local executor for ``workers``: 0 = this process, N = N worker processes."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise StudyError(f"workers must be an integer >= 0; got {workers!r}", settings=("workers",))
    return InProcessExecutor() if workers == 0 else LocalPoolExecutor(workers)


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
) -> StudyResult:
    """Plan ``runs`` into the study at ``root``, train every unfinished run, write the tables.

    Args:
        root: the study folder.
        runs: from :func:`oblique.study.expand`.
        workers: worker processes; 0 trains in this process (ignored when ``executor`` is given).
        threads: torch threads per run; ``None`` = :func:`default_threads`.
        overwrite: start the folder over (see :func:`oblique.study.plan_study`).
        progress: a tqdm bar over runs.
        echo: called with one line per finished run (default: ``tqdm.write``).
        executor: how to train the runs (default: :func:`executor_for` ``workers``).

    Returns:
        The :class:`StudyResult`. ``interrupted`` is true when SIGINT stopped the study (the tables are
        written from the finished runs either way).

    Raises:
        StudyLockedError: another process runs a study in ``root``.
        StudyError: the runs conflict with the study already in ``root``.
    """
    executor = executor or executor_for(workers)
    threads = threads or default_threads(workers)
    root = Path(root)
    with Lock(root):
        study, _ = plan_study(root, runs, overwrite=overwrite)
        tasks = _unfinished_tasks(study, threads)
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


def _unfinished_tasks(study: Study, threads: int) -> list[dict]:
    """A task for every unfinished run: resumed from its checkpoint when it has one, else started over
    (its old folder — crashed, or killed before its first checkpoint — removed first)."""
    from oblique.train import remove_run

    tasks = []
    for name in study.unfinished():
        run_dir = study.run_dir(name)
        resume = (run_dir / records.CHECKPOINT).is_file() and (run_dir / records.CONFIG).is_file()
        if not resume:
            remove_run(run_dir)
        tasks.append({"name": name, "out": str(run_dir), "settings": study.runs[name]["settings"],
                      "threads": threads, "resume": resume})  # fmt: skip
    return tasks


def _threads_note(study: Study, threads: int) -> str | None:
    """One line when finished runs of the study were trained with another torch thread count than this
    session's: their numbers may differ from a rerun in the last digits (results.csv has a column)."""
    used = set()
    for name in study.runs:
        try:
            used.add(records.read_config(study.run_dir(name)).get("threads_used"))
        except (records.RecordError, AttributeError):
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


def run_task(task: dict) -> tuple:
    """Train one planned run (in a worker or in this process): resume it from its checkpoint if the task
    says so (a checkpoint that cannot be used: start over), else train it; return the message for the
    parent: ``("done", name, brief)`` or ``("error", name, message)``; a KeyboardInterrupt propagates.
    """
    from oblique.train import RunConfig, remove_run, resume, train

    name, out = task["name"], Path(task["out"])
    try:
        if task.get("resume"):
            try:
                return ("done", name, _brief(resume(out, progress=False)))
            except records.RecordError:  # a corrupt or foreign checkpoint: this run starts over
                remove_run(out)
        cfg = RunConfig(**task["settings"], out=str(out), threads=task["threads"], progress=False)
        return ("done", name, _brief(train(cfg)))
    except KeyboardInterrupt:
        raise
    except Exception as e:  # a crashed run must not stop the study; the file says why
        records.write_text_atomic(out / ERROR_FILE, traceback.format_exc())
        return ("error", name, f"{type(e).__name__}: {e}".splitlines()[0])


def _brief(summary: Mapping) -> dict:
    keep = ("status", "test_error", "diverged_step", "train_time_s")
    out = {k: summary.get(k) for k in keep}
    out["norm_dev_mean"] = summary.get("drift", {}).get("mean", {}).get("norm_dev_mean")
    return out


def _interrupt_when_parent_dies() -> None:  # pragma: no cover - runs in a child process
    """Linux: SIGINT this process when its parent dies (a killed study leaves no orphan training on)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGINT))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(conn) -> None:  # pragma: no cover - runs in a child process (tested end to end)
    """A worker process: train the runs the parent sends until it sends ``None``.

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
                msg = run_task(task)
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
    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child,), daemon=True)
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the child starts with SIGINT ignored
        try:
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


def _run_pool(tasks: list[dict], workers: int, finished: Finished) -> bool:
    """Train ``tasks`` on ``workers`` processes; return True when stopped by SIGINT."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")  # never fork a process that holds torch's thread pools
    pending = list(reversed(tasks))
    tasks_by_name = {t["name"]: t for t in tasks}
    pool = [_Worker(ctx) for _ in range(min(workers, len(tasks)))]
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
                        records.write_text_atomic(Path(tasks_by_name[name]["out"]) / ERROR_FILE, why + "\n")
                        finished(name, ("error", name, why))
                    pool.remove(w)
                    if pending:
                        pool.append(_Worker(ctx))
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
