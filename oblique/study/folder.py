"""The study folder: its files, its planned runs (``study.json``), and the lock one study process holds.

A study is a folder of ordinary run directories (``STUDY_DIR/runs/<name>``, see :mod:`oblique.records`)
plus what the study runner writes beside them:

``study.json``
    The planned runs: for each run name, every setting of the run and the values of the grid variables.
``results.csv``, ``summary.md``
    The tables (:mod:`oblique.study.tables`).
``.lock``
    Held by the process running the study; holds its PID.

A study folder is a *set* of runs: planning a grid into a folder adds the runs it lacks; a run name that is
already planned with *different* settings (e.g. the same grid with another ``--epochs``) is refused with a
one-line message: pass ``--overwrite`` to start the folder over, or choose another ``--out``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from oblique import records
from oblique.study.spec import BASIC_AXES, PlannedRun, StudyError

__all__ = [
    "ERROR_FILE",
    "LOCK_FILE",
    "RESULTS_FILE",
    "STUDY_FILE",
    "STUDY_SCHEMA",
    "SUMMARY_FILE",
    "Lock",
    "Study",
    "StudyLockedError",
    "load_study",
    "plan_study",
]

STUDY_FILE, RESULTS_FILE, SUMMARY_FILE, LOCK_FILE, ERROR_FILE = (
    "study.json",
    "results.csv",
    "summary.md",
    ".lock",
    "study_error.txt",
)
STUDY_SCHEMA = 1


class StudyLockedError(StudyError):
    """Another process holds the study folder's lock."""


@dataclass
class Study:
    """A study folder and its planned runs (``study.json``)."""

    root: Path
    runs: dict[str, dict]  # name -> {"settings": ..., "grid": ...}
    grid_variables: list[str]

    def run_dir(self, name: str) -> Path:
        return self.root / "runs" / name

    def status(self, name: str) -> str:
        """``ok``, ``diverged``, ``error`` (crashed; see ``study_error.txt``), ``interrupted`` or ``pending``."""
        d = self.run_dir(name)
        try:
            status = records.read_summary(d).get("status", "pending")
        except records.RecordError:
            status = "pending"
        if status not in records.FINISHED and (d / ERROR_FILE).exists():
            return "error"
        return status

    def unfinished(self) -> list[str]:
        return [n for n in self.runs if not records.is_finished(self.run_dir(n))]


def load_study(root: str | os.PathLike) -> Study:
    """Read ``STUDY_DIR/study.json``.

    Raises:
        StudyError: the folder holds no study, or its study.json is not one this version reads.
    """
    root = Path(root)
    if not (root / STUDY_FILE).exists():
        raise StudyError(
            f"{root} holds no study ({STUDY_FILE} missing); run 'oblique study --out {root}' first"
        )
    try:
        data = records.read_json(root / STUDY_FILE)
    except records.RecordError as e:
        raise StudyError(str(e)) from None
    if (
        not isinstance(data, dict)
        or data.get("schema") != STUDY_SCHEMA
        or not isinstance(data.get("runs"), dict)
    ):
        raise StudyError(
            f"{root / STUDY_FILE}: expected a study file of schema {STUDY_SCHEMA}; got something else"
        )
    return Study(root, data["runs"], list(data.get("grid_variables", BASIC_AXES)))


def _write_study(study: Study) -> None:
    records.write_json_atomic(
        study.root / STUDY_FILE,
        {"schema": STUDY_SCHEMA, "grid_variables": study.grid_variables, "runs": study.runs},
    )


def plan_study(
    root: str | os.PathLike, runs: Sequence[PlannedRun], *, overwrite: bool = False
) -> tuple[Study, int]:
    """Merge ``runs`` into the study at ``root`` (creating it); return the study and how many runs were new.

    Raises:
        StudyError: a run name already planned with different settings (unless ``overwrite``, which
            deletes the folder's runs and results first).
    """
    root = Path(root)
    if overwrite and (root / STUDY_FILE).exists():  # never wipe a folder that is not a study
        for name in ("runs", "figures"):
            shutil.rmtree(root / name, ignore_errors=True)
        for name in (STUDY_FILE, RESULTS_FILE, SUMMARY_FILE):
            (root / name).unlink(missing_ok=True)
    study = load_study(root) if (root / STUDY_FILE).exists() else Study(root, {}, list(BASIC_AXES))
    for run in runs:
        old = study.runs.get(run.name)
        if old is not None and old["settings"] != run.settings:
            diff = sorted(
                k
                for k in set(old["settings"]) | set(run.settings)
                if old["settings"].get(k) != run.settings.get(k)
            )
            raise StudyError(
                f"{root} already holds run {run.name} with other settings ({', '.join(diff)} differ); "
                "pass --overwrite to start this study folder over, or choose another --out"
            )
    new = 0
    for run in runs:
        if run.name not in study.runs:
            study.runs[run.name] = {"settings": run.settings, "grid": run.grid}
            new += 1
        for key in run.grid:
            if key not in study.grid_variables and key != "strength_applies":
                study.grid_variables.append(key)
    root.mkdir(parents=True, exist_ok=True)
    _write_study(study)
    return study, new


class Lock:
    """An exclusive ``fcntl.flock`` on ``STUDY_DIR/.lock`` (released when the process ends), with our PID."""

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / LOCK_FILE
        self._f = open(self.path, "a+")
        try:
            fcntl.flock(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._f.seek(0)
            pid = self._f.read().strip() or "unknown"
            self._f.close()
            raise StudyLockedError(
                f"study folder {root} is in use by another oblique study (pid {pid}); wait for it to end "
                "or choose another --out"
            ) from None
        self._f.seek(0)
        self._f.truncate()
        self._f.write(f"{os.getpid()}\n")
        self._f.flush()

    def release(self) -> None:
        if not self._f.closed:
            fcntl.flock(self._f, fcntl.LOCK_UN)
            self._f.close()

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
