"""The study folder: its files, its planned runs (``study.json``), and the lock one study process holds.

A study is a folder of ordinary run directories (``STUDY_DIR/runs/<name>``, see :mod:`oblique.records`)
plus what the study runner writes beside them:

``study.json``
    The planned runs: for each run name, every setting of the run and the values of the grid variables.
``results.csv``, ``summary.md``
    The tables (:mod:`oblique.study.tables`).
``.lock``
    Held by the process running the study (``.lock.pid`` says which).

A study folder is a *set* of runs: planning a grid into a folder adds the runs it lacks; a run name that is
already planned with *different* settings (e.g. the same grid with another ``--epochs``) is refused with a
one-line message: pass ``--overwrite`` to start the folder over, or choose another ``--out``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

from oblique import records, storage
from oblique.config import RunConfig
from oblique.study.spec import BASIC_AXES, EXECUTION_FIELDS, PlannedRun, StudyError

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
            status = records.read_summary(d)["status"]
        except storage.RecordError:
            status = "pending"
        if status in records.FINISHED and not records.is_finished(d):
            status = "pending"  # its metrics.jsonl is corrupt or incomplete: the next study run redoes it
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
        data = storage.read_json(root / STUDY_FILE)
    except storage.RecordError as e:
        raise StudyError(str(e)) from None
    if (
        not isinstance(data, dict)
        or data.get("schema") != STUDY_SCHEMA
        or not isinstance(data.get("runs"), dict)
    ):
        raise StudyError(
            f"{root / STUDY_FILE}: expected a study file of schema {STUDY_SCHEMA}; got something else"
        )
    grid_variables = data.get("grid_variables", list(BASIC_AXES))
    if not (
        isinstance(grid_variables, list)
        and all(isinstance(k, str) for k in grid_variables)
        and set(BASIC_AXES) <= set(grid_variables)
        and len(set(grid_variables)) == len(grid_variables)
    ):
        raise StudyError(
            f"{root / STUDY_FILE}: grid_variables must be a list of distinct names holding "
            f"{', '.join(BASIC_AXES)}; got {grid_variables!r:.80}; the file is corrupt"
        )
    for name, entry in data["runs"].items():
        _drop_execution_settings(entry)
        problem = _entry_problem(name, entry)
        if problem:
            raise StudyError(f"{root / STUDY_FILE}: run {name!r:.80}: {problem}; the file is corrupt")
    return Study(root, data["runs"], list(grid_variables))


#: the grid values every planned run has, name -> check
_GRID_KEYS = {
    "method": lambda v: isinstance(v, str),
    "strength": lambda v: v is None or (isinstance(v, int | float) and not isinstance(v, bool)),
    "strength_applies": lambda v: isinstance(v, bool),
    "batch_size": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "seed": lambda v: isinstance(v, int) and not isinstance(v, bool),
}


def _drop_execution_settings(entry) -> None:
    """An older study.json planned settings that are execution settings now (``device``): they are not
    part of what a run is, so they are left out, as a new plan leaves them out."""
    if isinstance(entry, dict) and isinstance(entry.get("settings"), dict):
        entry["settings"] = {k: v for k, v in entry["settings"].items() if k not in EXECUTION_FIELDS}


def _entry_problem(name: str, entry) -> str | None:
    """Why a planned run of ``study.json`` cannot be one, or None. Its name must be a plain folder name
    (a run folder is deleted and rewritten: never outside the study)."""
    from oblique.config import ConfigError, RunConfig

    if not name or name in (".", "..") or any(not (c.isalnum() or c in "._+=-") for c in name):
        return "not a folder name of a planned run"
    if not isinstance(entry, dict) or not isinstance(entry.get("settings"), dict):
        return "expected a table with settings and grid"
    grid = entry.get("grid")
    if not isinstance(grid, dict):
        return "grid must be a table of grid values"
    for key, ok in _GRID_KEYS.items():
        if key not in grid or not ok(grid[key]):
            return f"grid {key} is missing or of the wrong kind"
    extra = sorted(set(entry["settings"]) - (set(RunConfig.field_names()) - set(EXECUTION_FIELDS)))
    if extra:
        return f"settings {', '.join(extra)} are not run settings"
    try:
        RunConfig(**entry["settings"])
    except ConfigError as e:
        return f"settings: {e}"
    return None


def _write_study(study: Study) -> None:
    storage.write_json_atomic(
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
        diff = _differing(old["settings"], run.settings) if old is not None else []
        if diff:
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


def _differing(stored: dict, planned: dict) -> list[str]:
    """The settings in which a stored run and a planned one differ. A setting the stored study.json does
    not know (it was written before the setting existed) counts as its default."""
    defaults = _defaults()
    return sorted(
        k
        for k in set(stored) | set(planned)
        if stored.get(k, defaults.get(k)) != planned.get(k, defaults.get(k))
    )


@cache
def _defaults() -> dict:
    """Every run setting's default (read only: shared by every call)."""
    return asdict(RunConfig())


class Lock(storage.FolderLock):
    """The study folder's lock (``STUDY_DIR/.lock``, through :mod:`filelock`; released when the process
    ends however it ends). Raises :class:`StudyLockedError` when another study holds it."""

    def __init__(self, root: str | os.PathLike):
        super().__init__(root, "study folder", "study")

    def __enter__(self) -> Lock:
        try:
            super().__enter__()
        except storage.FolderLockedError as e:
            raise StudyLockedError(str(e)) from None
        return self
