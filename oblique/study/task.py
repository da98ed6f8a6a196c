"""One planned run as a *task*: what every executor trains, what it reports back, and how a worker runs it.

A :class:`Task` holds plain values only (its name, its run folder, its RunConfig settings, its torch
threads, whether to resume), so it is pickled as it is across a process or a machine boundary.
:func:`run_task` trains it and returns its :class:`Outcome` for the study process: done (with the
summary's headline) or an error (one line; a run that crashes leaves ``study_error.txt`` in its folder,
:func:`record_error`). :func:`run_in_worker` is the body every executor's worker runs around a task: a
SIGINT there stops the run at a step boundary, with a checkpoint, reported as interrupted. The executors
(:mod:`oblique.study.local`, :mod:`oblique.study.ray_executor`) decide only where and when a task runs.
"""

from __future__ import annotations

import signal
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from oblique import storage
from oblique.study.folder import ERROR_FILE

__all__ = ["Finished", "Outcome", "Task", "TaskFn", "record_error", "run_in_worker", "run_task"]


@dataclass(frozen=True)
class Task:
    """One planned run for an executor to train.

    Attributes:
        name: the run's name in the study.
        out: its run folder.
        settings: its RunConfig settings (the planned ones, this session's execution settings over them).
        threads: torch threads for the run.
        resume: continue from the folder's checkpoint (else the run starts from the beginning).
    """

    name: str
    out: str
    settings: dict[str, Any]
    threads: int
    resume: bool = False


@dataclass(frozen=True)
class Outcome:
    """How a task ended, as the study process hears it.

    Attributes:
        kind: ``"done"`` (trained to its end: ok or diverged), ``"error"`` (it crashed, or its worker
            died) or ``"interrupted"`` (stopped by a signal, with a checkpoint).
        name: the task's name.
        brief: for ``done``, the summary's headline (``status``, ``test_error``, ``diverged_step``,
            ``train_time_s``, ``norm_dev_mean``); else None.
        why: for ``error``, what went wrong in one line (``study_error.txt`` has the rest); else ``""``.
    """

    kind: Literal["done", "error", "interrupted"]
    name: str
    brief: Mapping[str, Any] | None = None
    why: str = ""

    @classmethod
    def done(cls, name: str, brief: Mapping[str, Any]) -> Outcome:
        return cls("done", name, brief=brief)

    @classmethod
    def error(cls, name: str, why: str) -> Outcome:
        return cls("error", name, why=why)

    @classmethod
    def interrupted(cls, name: str) -> Outcome:
        return cls("interrupted", name)


#: ``finished(outcome)``: called once per task that ended (see :class:`oblique.study.executor.Executor`).
Finished = Callable[[Outcome], None]
#: Trains one task and returns its outcome (:func:`run_task`, or a test's own).
TaskFn = Callable[[Task], Outcome]


def run_task(task: Task) -> Outcome:
    """Train one planned run (in a worker or in this process): resume it from its checkpoint if the task
    says so (a checkpoint that cannot be used: start over), else train it; return its outcome, done or
    an error; a KeyboardInterrupt propagates.
    """
    from oblique.config import RunConfig
    from oblique.train import remove_run, resume, train

    out = Path(task.out)
    try:
        if task.resume:
            try:
                device = task.settings.get("device")
                return Outcome.done(task.name, _brief(resume(out, progress=False, device=device)))
            except storage.RecordError:  # a corrupt or foreign checkpoint: this run starts over
                remove_run(out)
        cfg = RunConfig(**task.settings, out=str(out), threads=task.threads, progress=False)
        return Outcome.done(task.name, _brief(train(cfg)))
    except KeyboardInterrupt:
        raise
    except Exception as e:  # a crashed run must not stop the study; the file says why
        storage.write_text_atomic(out / ERROR_FILE, traceback.format_exc())
        return Outcome.error(task.name, f"{type(e).__name__}: {e}".splitlines()[0])


def record_error(task: Task, why: str, detail: str = "") -> Outcome:
    """Write ``study_error.txt`` for a task that ended without an outcome of its own (its worker died);
    return its error outcome."""
    storage.write_text_atomic(Path(task.out) / ERROR_FILE, why + "\n" + (detail + "\n" if detail else ""))
    return Outcome.error(task.name, why)


def run_in_worker(task_fn: TaskFn, task: Task) -> Outcome:
    """Train ``task`` with ``task_fn`` in an executor's worker process: SIGINT raises KeyboardInterrupt
    while it trains (in the main thread), which the trainer turns into a checkpoint at the next step
    boundary and this reports as interrupted; the SIGINT handler the worker had is restored after.

    Stop requests come from the study process (a local pool's SIGINT, ``ray.cancel``) and may arrive
    twice, so a second one does not stop the run at once (``StopOnSignal.second_signal_stops``).
    """
    from oblique.train import StopOnSignal

    StopOnSignal.second_signal_stops = False
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.default_int_handler) if main else None
    try:
        return task_fn(task)
    except KeyboardInterrupt:
        return Outcome.interrupted(task.name)
    finally:
        if main:
            signal.signal(signal.SIGINT, old)


def _brief(summary: Mapping) -> dict:
    keep = ("status", "test_error", "diverged_step", "train_time_s")
    out = {k: summary.get(k) for k in keep}
    out["norm_dev_mean"] = summary.get("drift", {}).get("mean", {}).get("norm_dev_mean")
    return out
