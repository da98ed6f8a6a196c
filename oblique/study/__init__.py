"""Studies: grids of runs side by side (``oblique study``), one file per phase.

- :mod:`oblique.study.spec`: plan — the grid (:class:`StudySpec`), its runs (:func:`expand`), the study
  file's format (:func:`spec_from_tables`).
- :mod:`oblique.study.folder`: the study folder — ``study.json`` (:func:`plan_study`, :func:`load_study`)
  and the lock.
- :mod:`oblique.study.execute`: :func:`run_study` (plan, train the unfinished runs, write the tables) and
  :func:`executor_for`; :mod:`oblique.study.task`: one planned run as a task (:class:`Task`,
  :func:`run_task`), what every executor trains, and its :class:`Outcome`.
- :mod:`oblique.study.executor`: the executor contract (:class:`Executor`), one module per backend:
  :mod:`oblique.study.local` (in this process, local worker processes, one GPU each) and
  :mod:`oblique.study.ray_executor` (:class:`~oblique.study.ray_executor.RayExecutor`, the runs as Ray
  tasks on a local instance or a cluster; ``pip install "oblique[ray]"``; imported only when used).
- :mod:`oblique.study.tables`: ``results.csv`` and ``summary.md`` from the runs on disk.
- :mod:`oblique.study.published`: the Norm Loss poster's figures.
- :mod:`oblique.study.main_job`: the grids of the main job (``oblique study`` with no grid).
- :mod:`oblique.study.bench`: the study's own cost bench (``bench.json``), after its runs.
- :mod:`oblique.study.claims`: the poster's claims tested on the study's numbers (``summary.md``), with
  the statistics of :mod:`oblique.study.stats` (Welch's t-test, Holm, bootstrap; no SciPy).

In a notebook::

    from oblique.study import StudySpec, expand, run_study, summary_markdown
    result = run_study("studies/s", expand(StudySpec(methods=["nl", "wd"], seeds=[0, 1])), workers=0)
    print(summary_markdown(result.study))

The main job, in a notebook::

    from oblique.study import bench_study, collect, expand_all, main_job, run_study
    result = run_study("studies/default", expand_all(main_job()), workers=2)
    bench_study(result.study)   # alone on the machine, after the runs
    collect(result.study)       # summary.md again, with the cost claim
"""

from oblique.study.bench import BENCH_FILE, bench_study, read_study_bench
from oblique.study.claims import Claim, claims_markdown, evaluate_claims
from oblique.study.execute import StudyResult, execution_settings, executor_for, run_study
from oblique.study.executor import Executor
from oblique.study.folder import (
    ERROR_FILE,
    LOCK_FILE,
    RESULTS_FILE,
    STUDY_FILE,
    STUDY_SCHEMA,
    SUMMARY_FILE,
    Lock,
    Study,
    StudyLockedError,
    load_study,
    plan_study,
)
from oblique.study.local import InProcessExecutor, LocalPoolExecutor, default_threads
from oblique.study.main_job import expand_all, main_job
from oblique.study.published import PUBLISHED, published_cell
from oblique.study.spec import (
    BASIC_AXES,
    EXECUTION_FIELDS,
    STUDY_KEYS,
    PlannedRun,
    StudyError,
    StudySpec,
    expand,
    spec_from_tables,
)
from oblique.study.tables import collect, group_keys, results_frame, summary_frame, summary_markdown
from oblique.study.task import Outcome, Task, run_task

__all__ = [
    "BASIC_AXES",
    "BENCH_FILE",
    "ERROR_FILE",
    "EXECUTION_FIELDS",
    "LOCK_FILE",
    "PUBLISHED",
    "RESULTS_FILE",
    "STUDY_FILE",
    "STUDY_KEYS",
    "STUDY_SCHEMA",
    "SUMMARY_FILE",
    "Executor",
    "Claim",
    "InProcessExecutor",
    "LocalPoolExecutor",
    "Lock",
    "Outcome",
    "PlannedRun",
    "Study",
    "StudyError",
    "StudyLockedError",
    "StudyResult",
    "StudySpec",
    "Task",
    "bench_study",
    "claims_markdown",
    "collect",
    "default_threads",
    "execution_settings",
    "executor_for",
    "evaluate_claims",
    "expand",
    "expand_all",
    "group_keys",
    "load_study",
    "main_job",
    "plan_study",
    "published_cell",
    "read_study_bench",
    "results_frame",
    "run_study",
    "run_task",
    "spec_from_tables",
    "summary_frame",
    "summary_markdown",
]
