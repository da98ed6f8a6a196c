"""One planned run as a *task*: what every executor trains and what it reports back.

A task is a plain dict (``name``, ``out``: the run folder, ``settings``: RunConfig settings, ``threads``,
``resume``: whether to continue from the folder's checkpoint), so it crosses a process or a machine
boundary as it is. :func:`run_task` trains it and returns the message for the study process:
``("done", name, brief)`` or ``("error", name, why)``; a run that crashes leaves ``study_error.txt``
(:func:`record_error`) in its folder. The executors (:mod:`oblique.study.execute`,
:mod:`oblique.study.ray_executor`) decide only where and when a task runs.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from pathlib import Path

from oblique import storage
from oblique.study.folder import ERROR_FILE

__all__ = ["Finished", "TaskFn", "record_error", "run_task"]

#: ``finished(name, message)``: called once per task that ended (see :mod:`oblique.study.execute`).
Finished = Callable[[str, tuple], None]
#: Trains one task and returns its message (:func:`run_task`, or a test's own).
TaskFn = Callable[[dict], tuple]


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
                device = task["settings"].get("device")
                return ("done", name, _brief(resume(out, progress=False, device=device)))
            except storage.RecordError:  # a corrupt or foreign checkpoint: this run starts over
                remove_run(out)
        cfg = RunConfig(**task["settings"], out=str(out), threads=task["threads"], progress=False)
        return ("done", name, _brief(train(cfg)))
    except KeyboardInterrupt:
        raise
    except Exception as e:  # a crashed run must not stop the study; the file says why
        storage.write_text_atomic(out / ERROR_FILE, traceback.format_exc())
        return ("error", name, f"{type(e).__name__}: {e}".splitlines()[0])


def record_error(task: Mapping, why: str, detail: str = "") -> tuple:
    """Write ``study_error.txt`` for a task that ended without a message of its own (its worker died);
    return the ``("error", name, why)`` message."""
    storage.write_text_atomic(Path(task["out"]) / ERROR_FILE, why + "\n" + (detail + "\n" if detail else ""))
    return ("error", task["name"], why)


def _brief(summary: Mapping) -> dict:
    keep = ("status", "test_error", "diverged_step", "train_time_s")
    out = {k: summary.get(k) for k in keep}
    out["norm_dev_mean"] = summary.get("drift", {}).get("mean", {}).get("norm_dev_mean")
    return out
