"""A study on Ray: every planned run is one plain Ray task (``oblique study --executor ray``).

Not Ray Tune: Tune would impose its own trial folders and its own resume; here Ray only places the
tasks, and the study is the same as with the local executor: the same folder (``runs/<name>``),
``study.json``, ``results.csv`` and ``summary.md``, the same lock (held by the study process, the
driver) and the same resume rules (:func:`oblique.study.run_study` plans, skips the finished runs and
hands the rest to :class:`RayExecutor`). Each task runs :func:`oblique.study.task.run_task` (or the
``task_fn`` given), inside :func:`oblique.study.task.run_in_worker` as a local pool's workers do, with
``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs as its Ray resources; Ray sets
``CUDA_VISIBLE_DEVICES`` for every task, so ``--device auto`` (or ``cuda``) trains on the task's GPU.

- **Where**: ``ray.init()`` starts a local Ray instance when no ``address`` is given (one machine, all
  its cores and GPUs), else connects to the cluster at ``address`` (``auto``: the one this machine is
  part of; ``ray://HOST:10001``: Ray Client). When Ray was already initialized (a notebook, the tests),
  its connection is used and left open.
- **Files**: the tasks write their run folders themselves, on whatever node runs them: the study folder
  must be on a filesystem every node sees at the same path (NFS, Lustre, a mounted bucket with POSIX
  semantics). Its path is made absolute here; other paths in the run settings (``--data-root``) are read
  on each node as they are given, and every node needs ``oblique`` (and its data) installed.
- **Ctrl-C / SIGTERM** in the study process cancels the tasks: Ray raises KeyboardInterrupt in a running
  task (``ray.cancel`` without force), which the trainer turns into a checkpoint and an ``interrupted``
  summary at the next step boundary; a task not yet started is dropped. ``run`` then returns True, and the
  same command later resumes those runs from their checkpoints. A task still running ``stop_timeout_s``
  after the cancel is killed (its run resumes from its last periodic checkpoint, if any).
- **A worker that dies** (``os._exit``, killed, out of memory, its node lost) fails its task; the run's
  ``study_error.txt`` says so and the study goes on (Ray does not retry: ``max_retries=0``; rerunning the
  study retries it). A study process that is killed outright takes its tasks with it (Ray's ownership):
  they resume from their last periodic checkpoint.
- **A local instance dies with the study process**, however it ends. Ray's own agents
  (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) outlive a study process killed with SIGKILL by a
  minute (they try to report the death to the Ray instance that died with it); so the study process
  starts a watchdog beside the local instance (:data:`_WATCHDOG`, on Linux), which, the moment the study
  process is gone, kills what is left of the processes that instance started. A cluster it connects to
  is never touched.

Ray is an optional extra (``pip install "oblique[ray]"``); only this module imports it, and only when
an executor runs (:func:`import_ray`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oblique.study.executor import Executor
from oblique.study.spec import StudyError
from oblique.study.task import Finished, Outcome, Task, TaskFn, record_error, run_in_worker, run_task

__all__ = ["RAY_INSTALL", "RayExecutor", "import_ray"]

#: how to install what this module needs
RAY_INSTALL = 'pip install "oblique[ray]"'


def import_ray():
    """The ``ray`` module.

    Raises:
        StudyError: Ray is not installed (one line naming the extra)."""
    try:
        import ray
    except ImportError as e:
        raise StudyError(
            f"executor ray needs Ray, which cannot be imported here ({e}); install it: {RAY_INSTALL}",
            settings=("executor",),
        ) from None
    return ray


@dataclass
class RayExecutor(Executor):
    """Train a study's runs as Ray tasks (see the module docstring).

    Attributes:
        address: the Ray cluster to connect to; ``None`` = a local Ray instance (``ray.init()``).
        cpus_per_run: CPUs each task reserves (default 1); a run uses as many torch threads.
        gpus_per_run: GPUs each task reserves (fractions share a GPU); ``None`` = 1 when the cluster has
            GPUs and the runs' device is not ``cpu``, else 0.
        task_fn: trains one task in a Ray worker (default :func:`oblique.study.task.run_task`); it must be
            importable on the workers, or registered with ``ray.cloudpickle.register_pickle_by_value``.
        init_options: more keyword arguments of ``ray.init`` (``num_cpus`` for a local instance, ...).
        stop_timeout_s: after Ctrl-C, how long the cancelled tasks may take to checkpoint and stop.
        echo: receives one line saying where the runs go (default: nothing).
    """

    address: str | None = None
    cpus_per_run: float | None = None
    gpus_per_run: float | None = None
    task_fn: TaskFn | None = None
    init_options: dict[str, Any] = field(default_factory=dict)
    stop_timeout_s: float = 300.0
    echo: Callable[[str], None] | None = None
    _started: bool = field(default=False, init=False, repr=False)
    _watchdog: subprocess.Popen | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.address is not None and (not isinstance(self.address, str) or not self.address.strip()):
            raise StudyError(
                f"address must be a Ray address (HOST:PORT, auto, ray://HOST:PORT); got {self.address!r}",
                settings=("address",),
            )
        for name, least in (("cpus_per_run", 0.0), ("gpus_per_run", 0.0)):
            value = getattr(self, name)
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            if value is not None and not (ok and value >= least and (name == "gpus_per_run" or value > 0)):
                what = "a number > 0" if name == "cpus_per_run" else "a number >= 0"
                raise StudyError(f"{name} must be {what}; got {value!r}", settings=(name,))
        import_ray()  # not installed: one line now, before the study folder is touched

    @property
    def threads_per_run(self) -> int:
        """The torch threads of a run: the CPUs it reserves (at least 1)."""
        return max(1, int(self.cpus_per_run or 1))

    def run(self, tasks: list[Task], finished: Finished) -> bool:
        """Train ``tasks`` as Ray tasks; call ``finished`` per ended task; True when stopped by Ctrl-C
        (or when a task was interrupted on its node, e.g. by a SIGTERM there). Ray is disconnected (a
        local instance stopped) afterwards when :meth:`connect` (or this call) initialized it."""
        if not tasks:
            self.disconnect()
            return False
        ray = import_ray()
        self.connect()
        try:
            return self._run(ray, tasks, finished)
        finally:
            self.disconnect()

    def connect(self) -> None:
        """``ray.init`` (a local instance, or the cluster at ``address``) unless Ray is initialized
        already, e.g. to fail early, before the study folder is planned. Ray's own SIGTERM handler (which
        exits at once) is replaced again by the one it found (the study's: stop gracefully).

        Raises:
            StudyError: the cluster cannot be reached (one line)."""
        ray = import_ray()
        if ray.is_initialized():
            return
        main = threading.current_thread() is threading.main_thread()
        old_term = signal.getsignal(signal.SIGTERM) if main else None
        options = {"logging_level": logging.WARNING, "log_to_driver": True, **self.init_options}
        try:
            context = ray.init(address=self.address, **options)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
            where = self.address or "a local Ray instance"
            raise StudyError(
                f"ray: cannot connect to {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                settings=("address",),
            ) from None
        finally:
            if main and old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
        self._started = True
        session = (getattr(context, "address_info", None) or {}).get("session_dir")
        if self.address is None and session:
            self._watchdog = _start_watchdog(session)

    def disconnect(self) -> None:
        """``ray.shutdown`` when :meth:`connect` initialized Ray (a caller's own connection stays); then
        the watchdog of a local instance ends, killing what Ray left of it."""
        if self._started:
            self._started = False
            with _sigint_ignored():
                import_ray().shutdown()
        if self._watchdog is not None:
            watchdog, self._watchdog = self._watchdog, None
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                watchdog.stdin.close()
                watchdog.wait(timeout=10)

    # ----------------------------------------------------------------------------------------- internals

    def _resources(self, ray, tasks: Sequence[Task]) -> tuple[float, float]:
        cpus = self.cpus_per_run or 1
        gpus = self.gpus_per_run
        total = ray.cluster_resources()
        if gpus is None:
            wants = any(str(t.settings.get("device", "auto")) != "cpu" for t in tasks)
            gpus = 1 if wants and total.get("GPU", 0) > 0 else 0
        if self.echo is not None:
            self.echo(
                f"ray: {len(tasks)} runs on {total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} GPUs "
                f"({self.address or 'a local instance'}), {cpus:g} CPU and {gpus:g} GPU per run"
            )
        return cpus, gpus

    def _run(self, ray, tasks: list[Task], finished: Finished) -> bool:
        cpus, gpus = self._resources(ray, tasks)
        remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(run_in_worker)
        fn = self.task_fn or run_task
        pending: dict[Any, Task] = {}
        interrupted = False
        try:
            with _stop_request() as stop:
                for task in tasks:  # every node writes to the same path of the shared filesystem
                    task = dataclasses.replace(task, out=str(Path(task.out).resolve()))
                    pending[remote.options(name=f"oblique-{task.name}"[:200]).remote(fn, task)] = task
                while pending and not stop.requested:
                    ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                    for ref in ready:
                        outcome = _result(ray, ref, pending.pop(ref))
                        if outcome is None or outcome.kind == "interrupted":  # stopped on its node (SIGTERM)
                            interrupted = True
                        else:
                            finished(outcome)
            if not stop.requested:
                return interrupted
        except KeyboardInterrupt:  # raised outside the main thread's handler (a caller's own thread)
            pass
        self._cancel(ray, pending, finished)
        return True

    def _cancel(self, ray, pending: dict[Any, Task], finished: Finished) -> None:
        """Cancel every pending task and wait (Ctrl-C ignored) until the running ones have checkpointed;
        report those that finished meanwhile; kill the ones still running after ``stop_timeout_s``."""
        with _sigint_ignored():
            for ref in pending:
                ray.cancel(ref, force=False)
            deadline = time.monotonic() + self.stop_timeout_s
            while pending and time.monotonic() < deadline:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=1.0)
                for ref in ready:
                    outcome = _result(ray, ref, pending.pop(ref))
                    if outcome is not None and outcome.kind != "interrupted":
                        finished(outcome)
            for ref in pending:  # pragma: no cover - a run that does not reach a step boundary in time
                ray.cancel(ref, force=True)


#: The watchdog of a local Ray instance (a Python program, run beside the study process): while the study
#: process lives it notes, every second, the processes of the instance (the study process's children that
#: name its session folder, and all their descendants: raylet, GCS, the agents, the workers, each with its
#: start time); when the study process is gone (its end of the watchdog's stdin closed: it disconnected,
#: or died), it kills those still running, unless their number now belongs to another process.
_WATCHDOG = r"""
import os, select, signal, sys
owner, session = int(sys.argv[1]), sys.argv[2]

def table():
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            procs[int(name)] = (int(rest[1]), rest[19])  # parent, start time
    return procs

def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""

known = {}
while True:
    procs = table()
    frontier = [p for p, (parent, _) in procs.items() if parent == owner and session in cmdline(p)]
    while frontier:
        pid = frontier.pop()
        if pid not in known and pid != os.getpid():
            known[pid] = procs[pid][1]
            frontier += [c for c, (parent, _) in procs.items() if parent == pid]
    if select.select([sys.stdin], [], [], 1.0)[0] and not os.read(sys.stdin.fileno(), 4096):
        break
procs = table()
for pid, started in known.items():
    if pid in procs and procs[pid][1] == started:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""


def _start_watchdog(session: str) -> subprocess.Popen | None:
    """The :data:`_WATCHDOG` of the local Ray instance whose session folder is ``session``, in a session
    of its own (a Ctrl-C at the terminal is the study process's to handle); None where there is no
    ``/proc`` to watch from."""
    if not os.path.isdir("/proc/self"):
        return None
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), session],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _result(ray, ref, task: Task) -> Outcome | None:
    """The outcome of a finished Ray task; a failed task as an error recorded in ``study_error.txt``;
    None for a task cancelled before it ran."""
    try:
        return ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        return None
    except ray.exceptions.RayTaskError as e:  # the task function raised (run_task itself never does)
        cause = e.cause if isinstance(e.cause, BaseException) else e
        return record_error(task, f"{type(cause).__name__}: {cause}".splitlines()[0], str(e))
    except ray.exceptions.RayError as e:  # its worker died (os._exit, killed, out of memory) or its node
        first = str(e).splitlines()[0] if str(e) else ""
        return record_error(
            task, f"Ray worker died while training this run ({type(e).__name__}: {first})", str(e)
        )


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT and SIGTERM ignored in the block (in the main thread; elsewhere a no-op), so a second
    Ctrl-C (or a scheduler's SIGTERM after it) cannot cut a clean stop short."""
    main = threading.current_thread() is threading.main_thread()
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _stop_request():
    """An :class:`oblique.train.StopOnSignal` whose every SIGINT and SIGTERM only sets ``requested``
    (never raises): the executor's loop sees the request within a second, wherever the signal lands. A
    KeyboardInterrupt raised inside Ray's own calls can be swallowed there (its driver checks Python's
    signals while it waits), and a Ctrl-C would then be lost; a flag cannot be."""
    from oblique.train import StopOnSignal

    stop = StopOnSignal()
    stop.second_signal_stops = False  # this instance only: the class stays as it is
    return stop
