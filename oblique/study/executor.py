"""The executor contract: how a study's runs are trained, whatever trains them.

An executor trains a list of :class:`~oblique.study.task.Task` (one planned run each) and reports each
one that ended; *what* a task computes is :func:`oblique.study.task.run_task`, a plain function whose
results land on disk; *how* it runs (here, in local worker processes, on a Ray cluster) is the
executor's business. One module per backend: :mod:`oblique.study.local` (this process, local worker
processes) and :mod:`oblique.study.ray_executor` (Ray tasks). :func:`oblique.study.run_study` drives
any of them through this class alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from oblique.study.task import Finished, Task

__all__ = ["Executor"]


class Executor(ABC):
    """How a study's runs are trained. A backend implements :meth:`run`; the rest has defaults.

    Attributes:
        threads_per_run: the torch threads the executor gives each run when the study names none (Ray: the
            CPUs a task reserves); None (the default) lets the study choose
            (:func:`oblique.study.default_threads`).
    """

    threads_per_run: int | None = None

    @abstractmethod
    def run(self, tasks: list[Task], finished: Finished) -> bool:
        """Train ``tasks``; call ``finished(outcome)`` once per task that ended (done or an error; a run
        that crashes, or whose worker dies, leaves ``study_error.txt`` in its folder and the others go on).

        Returns:
            True when SIGINT (Ctrl-C) stopped it: the runs in flight are then recorded ``interrupted``,
            with a checkpoint, and the tasks not started are left for the next session.
        """

    def connect(self) -> None:  # noqa: B027 - a default that does nothing, not an abstract method
        """Reach whatever the executor trains on before the study folder is touched, so that an
        unreachable cluster is one line up front. Nothing to reach by default (a local executor)."""
