"""Executing a study: :func:`run_study` plans the runs, hands the unfinished ones to an executor as
tasks, and writes the tables; :func:`executor_for` picks the executor.

Every executor follows :class:`oblique.study.executor.Executor` (``run(tasks, finished) -> interrupted``;
``finished(outcome)`` once per task that ended; see :mod:`oblique.study.task` for the task, its outcome
and what trains it). One module per backend:

- :mod:`oblique.study.local`: :class:`~oblique.study.local.InProcessExecutor` (``workers = 0``: one run
  after the other in this process) and :class:`~oblique.study.local.LocalPoolExecutor` (``workers >= 1``:
  local worker processes, one GPU each on a machine with several).
- :mod:`oblique.study.ray_executor`: :class:`~oblique.study.ray_executor.RayExecutor`
  (``oblique study --executor ray``): plain Ray tasks on a local Ray instance or a cluster, each with
  ``--cpus-per-run`` CPUs and ``--gpus-per-run`` GPUs as its resources (Ray sets ``CUDA_VISIBLE_DEVICES``
  per task). Ray is imported only by that module (``pip install "oblique[ray]"``); :func:`executor_for`
  imports it only when asked for.

A run that crashes, or whose worker dies, leaves ``study_error.txt`` in its folder and the study goes on.
Ctrl-C stops the executor, which records the runs in flight as ``interrupted`` (with a checkpoint);
:func:`run_study` then writes the tables of the finished runs and says so.

Resuming: :func:`run_study` skips the finished runs of the folder (status ``ok`` or ``diverged``,
:func:`oblique.records.is_finished`); an unfinished run with a checkpoint (stopped by Ctrl-C, SIGTERM, or
its study process killed — the workers are then signalled) continues from it (:func:`oblique.train.resume`);
one without (crashed, killed before its first checkpoint) is removed and rerun from the start.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from oblique import records, storage
from oblique.config import RunConfig
from oblique.progress import progress as _bar
from oblique.study.executor import Executor
from oblique.study.folder import ERROR_FILE, Lock, Study, plan_study
from oblique.study.local import InProcessExecutor, LocalPoolExecutor, default_threads
from oblique.study.spec import BASIC_AXES, PlannedRun, StudyError
from oblique.study.tables import collect
from oblique.study.task import Outcome, Task
from oblique.text import value as _fmt

__all__ = ["StudyResult", "execution_settings", "executor_for", "run_study"]

#: The executors :func:`executor_for` knows.
EXECUTORS = ("local", "ray")
#: Execution settings the study itself decides (the run folder, threads, no progress bar, no overwrite of
#: a run, a download done once at planning: each RunConfig field's :class:`oblique.config.Execution`); the
#: other ones given to a study reach every run.
_STUDY_DECIDES = RunConfig.execution_settings(study_decides=True)


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
        raise StudyError(
            f"{', '.join(given)} apply to the ray executor only; add --executor ray", settings=tuple(given)
        )
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
        threads: torch threads per run; ``None`` = the executor's ``threads_per_run`` when it says
            (Ray: the CPUs of a run), else :func:`oblique.study.local.default_threads` of ``workers``.
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
    threads = threads or executor.threads_per_run or default_threads(workers)
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

        def finished(outcome: Outcome) -> None:
            say(_line(study, outcome))
            (failed if outcome.kind == "error" else ran).append(outcome.name)
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
        raise StudyError(
            f"execution: {', '.join(map(str, bad))} cannot be given to a study's runs this way; "
            f"only {passed} (the others change what a run computes, or the study decides them)"
        )
    return dict(execution)


def _unfinished_tasks(study: Study, threads: int, execution: Mapping) -> list[Task]:
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
        tasks.append(Task(name, str(run_dir), settings, threads, resume=resume))
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


def _line(study: Study, outcome: Outcome) -> str:
    """The line a finished run gets on stderr: its grid values and how it ended."""
    name, info = outcome.name, outcome.brief
    g = study.runs[name]["grid"]
    lam = f" λ={g['strength']:g}" if g.get("strength") is not None else ""
    extra = "".join(f" {k}={_fmt(v)}" for k, v in g.items() if k not in BASIC_AXES + ("strength_applies",))
    head = f"{g['method']}{lam} bs={g['batch_size']}{extra} seed={g['seed']}:"
    if outcome.kind == "error":
        return f"{head} failed ({outcome.why}); see {study.run_dir(name) / ERROR_FILE}"
    if outcome.kind == "interrupted":
        return f"{head} interrupted"
    if info["status"] == "diverged":
        return (
            f"{head} diverged at step {info['diverged_step']} (non-finite loss), {info['train_time_s']:.1f} s"
        )
    return (
        f"{head} test error {info['test_error']:.2f} %, drift {info['norm_dev_mean']:.3g} (norm_dev_mean), "
        f"{info['train_time_s']:.1f} s"
    )
