"""The local executors: the runs in this process, or on local worker processes with one GPU each.

- :class:`InProcessExecutor` (``workers = 0``): one run after the other in this process (notebooks,
  debugging).
- :class:`LocalPoolExecutor` (``workers >= 1``): local worker processes (spawned, never forked), each
  with ``max(1, cores // workers)`` torch threads (:func:`default_threads`) unless ``threads`` says
  otherwise. On a machine with several GPUs each worker sees one (``CUDA_VISIBLE_DEVICES``, round-robin
  over the visible GPUs, :func:`visible_gpus`), so ``--device auto`` (or ``cuda``) puts the workers on
  different GPUs; a run that names ``cuda:N`` keeps every GPU visible, and a CPU-only machine is left
  alone.

Both follow :class:`oblique.study.executor.Executor`. A worker trains each task through
:func:`oblique.study.task.run_in_worker` (as Ray's workers do). Ctrl-C (SIGINT to the process group, or to
the study process alone) stops the workers, which record their runs in flight as ``interrupted`` (with a
checkpoint); a worker that dies mid-run (killed, out of memory) leaves ``study_error.txt`` in its run's
folder, and a new worker takes its place. The pool takes the function that trains one task
(``task_fn``, default :func:`oblique.study.task.run_task`): a test can pass its own, which must be
importable by the workers (a module-level function).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

from oblique.study.executor import Executor
from oblique.study.task import Finished, Task, TaskFn, record_error, run_in_worker, run_task

__all__ = ["InProcessExecutor", "LocalPoolExecutor", "default_threads", "visible_gpus"]


class InProcessExecutor(Executor):
    """Train one run after the other in this process."""

    def run(self, tasks: list[Task], finished: Finished) -> bool:
        try:
            for task in tasks:
                finished(run_task(task))
        except KeyboardInterrupt:
            return True
        return False


@dataclass
class LocalPoolExecutor(Executor):
    """Train on ``workers`` local worker processes (spawned).

    Attributes:
        workers: how many worker processes.
        task_fn: trains one task in a worker (default :func:`oblique.study.task.run_task`); a module-level
            function.
        gpus: the GPUs to pin the workers to, round-robin (``CUDA_VISIBLE_DEVICES`` values); ``None`` = the
            GPUs visible here (:func:`visible_gpus`); empty = no pinning.
    """

    workers: int
    task_fn: TaskFn | None = None
    gpus: Sequence[str] | None = None

    def run(self, tasks: list[Task], finished: Finished) -> bool:
        gpus = _pinned_gpus(tasks, visible_gpus() if self.gpus is None else list(self.gpus))
        try:
            return _run_pool(tasks, self.workers, finished, task_fn=self.task_fn or run_task, gpus=gpus)
        except KeyboardInterrupt:
            return True


def default_threads(workers: int) -> int:
    """Torch threads per worker so that ``workers`` processes do not oversubscribe the cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, workers))


# --------------------------------------------------------------------------- a worker process
def _interrupt_when_parent_dies() -> None:  # pragma: no cover - runs in a child process
    """Linux: SIGINT this process when its parent dies (a killed study leaves no orphan training on)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGINT))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(conn, task_fn: TaskFn = run_task) -> None:  # pragma: no cover - a child
    """A worker process: train the tasks the parent sends (with ``task_fn``) until it sends ``None``.

    SIGINT is ignored while idle (the parent tells idle workers to stop); while a run trains, SIGINT (and
    SIGTERM) ask it to stop at the next step boundary with a checkpoint (:func:`run_in_worker`), so the
    run is recorded as interrupted and resumable, and the worker exits quietly.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _interrupt_when_parent_dies()
    try:
        while True:
            task = conn.recv()
            if task is None:
                return
            outcome = run_in_worker(task_fn, task)  # SIGINT ignored again after it
            conn.send(outcome)
            if outcome.kind == "interrupted":
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
        self.current: Task | None = None

    def send(self, task: Task | None) -> None:
        self.current = task
        try:
            self.conn.send(task)
        except (BrokenPipeError, OSError):
            pass


# --------------------------------------------------------------------------- the pool
def _run_pool(
    tasks: list[Task],
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
                outcome = None
                if w.conn in ready:
                    try:
                        outcome = w.conn.recv()
                    except (EOFError, OSError):
                        outcome = None
                if outcome is not None:
                    w.current = None
                    if outcome.kind == "interrupted":
                        raise KeyboardInterrupt
                    finished(outcome)
                elif w.proc.sentinel in ready or not w.proc.is_alive():
                    w.proc.join(timeout=5)
                    if w.current is not None:  # a worker died mid-run (killed, out of memory)
                        task, w.current = w.current, None
                        finished(record_error(task, f"worker process exited with code {w.proc.exitcode}"))
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


def _pinned_gpus(tasks: Sequence[Task], gpus: list[str]) -> list[str]:
    """The GPUs to pin workers to: ``gpus`` when there are two or more and no task names a GPU by index
    (``cuda:1`` must mean what it says), else none (every worker sees what this process sees)."""
    devices = {str(t.settings.get("device", "auto")) for t in tasks}
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
