"""The world the command-line tests act on, and how they run ``oblique`` in it.

The world is a folder with a finished run, a finished study, a killed run and hostile files (the
session-scoped ``world`` fixture in ``conftest.py`` builds it once). :func:`outcome` and :func:`refused` run
``oblique ARGV`` in-process in that folder with the real work stubbed: the function that would train
(``oblique.train.fit``), run a study (``oblique.cli.study.run_study``), bench (``oblique.cli.bench.bench``
and ``run_sweep``) or draw (``analysis.write_figures``) is replaced by one that raises :class:`Accepted` —
the point is the validation at the edge, not the work behind it. After every command the finished run and
study must be byte-identical to what they were.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import event
from hypothesis.errors import InvalidArgument

from oblique.cli import main

#: every path an example may name (relative to the world folder, the examples' working directory)
PATHS = (
    "new",
    "new/sub/deeper",
    ".",
    "FILE",
    "FILE/sub",
    "EMPTY",
    "BINARY",
    "missing.json",
    "missing/x",
    "FINISHED",
    "STUDY",
    "STUDY/runs",
    "KILLED",
    "run.toml",
    "study.toml",
    "empty.toml",
    "binary.toml",
    "bench.json",
    "bench.csv",
    "garbage.csv",
    "badbench.json",
    "out.json",
    "out.csv",
    "sweep",
    "",
)

#: small real runs: MNIST-1D's CNN, batches of 1000 (6 steps an epoch)
QUICK_RUN = ["--model", "cnn", "--batch-size", "1000", "--no-progress"]
#: a small real study: baseline and Norm Loss, one seed, one epoch (two runs)
STUDY_ARGS = [
    "--methods",
    "baseline,nl",
    "--seeds",
    "1",
    "--epochs",
    "1",
    "--model",
    "cnn",
    "--batch-sizes",
    "1000",
    "--workers",
    "0",
    "--no-figures",
    "--no-bench",
    "--no-progress",
]


class Accepted(Exception):
    """Raised in place of the real work: the input got past every check at the edge."""


def _accept(*args, **kwargs):
    raise Accepted


def digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (its finished results), by relative path, with the sha256 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def results(study: Path) -> dict[str, str]:
    """A study's finished results: study.json and its run folders (the tables and figures are derived)."""
    return {k: v for k, v in digest(study).items() if k == "study.json" or k.startswith("runs/")}


def run_folders(study: Path) -> list[Path]:
    """The run folders of a study, in order: folders only (an example may name ``STUDY/runs`` as a run's or a
    study's ``--out``, which leaves its lock file there)."""
    return sorted(p for p in (study / "runs").iterdir() if p.is_dir())


@dataclass
class World:
    """The world folder and the digests of its finished run and study."""

    root: Path
    finished: dict[str, str]
    study: dict[str, str]

    def check_intact(self) -> None:
        """The finished run and the finished study are byte-identical to what they were (files may be added
        beside them, e.g. a lock, but none is changed or removed)."""
        now = digest(self.root / "FINISHED")
        assert {k: now.get(k) for k in self.finished} == self.finished, "a finished run was changed"
        now = results(self.root / "STUDY")
        assert {k: now.get(k) for k in self.study} == self.study, "a finished study was changed"


def quiet_main(argv: list[str]) -> tuple[int, str]:
    """``oblique ARGV`` in-process, stdout discarded: its exit status and its stderr."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


class _Killed(BaseException):
    pass


def _killed_after_first_checkpoint(out: Path) -> None:
    """A run killed right after writing its first checkpoint (as SIGKILL would leave it)."""
    from oblique import records

    real = records.RunWriter.checkpoint

    def checkpoint_then_die(self, state):
        real(self, state)
        raise _Killed

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(records.RunWriter, "checkpoint", checkpoint_then_die)
        with pytest.raises(_Killed):
            main(["run", *QUICK_RUN, "--epochs", "2", "--checkpoint-every", "1", "--out", str(out)])
    assert (out / records.CHECKPOINT).exists() and not (out / records.SUMMARY).exists()


def build_world(root: Path) -> World:
    """Fill ``root`` with a finished run, a finished study, an interrupted run and hostile files.

    The runs are built from inside ``root`` (their records name relative folders) and timed by a clock that
    advances 1 ms a reading, so their records are the same bytes on every build (the training is seeded):
    the corrupt-record examples, drawn from those bytes, are then the same on every run of the suite too.
    """
    run = ["run", *QUICK_RUN, "--epochs", "1"]
    ticks = itertools.count()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setattr(time, "perf_counter", lambda: next(ticks) * 1e-3)
        assert quiet_main([*run, "--out", "FINISHED"])[0] == 0
        assert quiet_main(["study", *STUDY_ARGS, "--out", "STUDY"])[0] == 0
        _killed_after_first_checkpoint(Path("KILLED"))
    (root / "FILE").write_text("a file, not a folder\n")
    (root / "EMPTY").mkdir()
    (root / "BINARY").write_bytes(bytes(range(256)) * 4)
    (root / "run.toml").write_text('method = "wd"\nepochs = 1\nmodel = "cnn"\n')
    (root / "study.toml").write_text('[study]\nmethods = ["nl"]\nseeds = 1\n[run]\nepochs = 1\n')
    (root / "empty.toml").write_text("")
    (root / "binary.toml").write_bytes(b"\xff\xfe\x00garbage\x80")
    (root / "bench.json").write_text(json.dumps({"schema": "oblique.bench/1", "methods": {}}))
    (root / "badbench.json").write_text(json.dumps({"schema": "oblique.bench/1", "methods": 5}))
    (root / "bench.csv").write_text("model,method\nresnet20,nl\n")
    (root / "garbage.csv").write_bytes(b'\x00\x01\xff,,\n"unclosed')
    return World(root, digest(root / "FINISHED"), results(root / "STUDY"))


@contextlib.contextmanager
def stubbed(world: World, study_folder: bool = False) -> Iterator[None]:
    """In the world folder, with the real work replaced by one that raises :class:`Accepted`. With
    ``study_folder`` the study runner is real (it reads and plans the study folder, writes its tables) and
    only a run's training is stubbed (``oblique.study.local.run_task``)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(world.root)
        mp.setattr("oblique.train.fit", _accept)
        if study_folder:
            mp.setattr("oblique.study.local.run_task", _accept)
        else:
            mp.setattr("oblique.cli.study.run_study", _accept)
        mp.setattr("oblique.cli.bench.bench", _accept)
        mp.setattr("oblique.cli.bench.run_sweep", _accept)
        mp.setattr("analysis.write_figures", _accept)
        yield


def outcome(world: World, argv: list[str], study_folder: bool = False) -> str:
    """Run ``oblique ARGV`` in the world folder, the real work stubbed; return ``accepted``, ``ok`` or
    ``refused``, after checking that a refusal is exit status 2 with one error line (after any warning
    lines), that nothing raised, and that nothing finished changed."""
    result = _outcome(world, argv, study_folder)
    with contextlib.suppress(InvalidArgument):  # outside a hypothesis test (a plain test)
        event(f"{argv[0] if argv else 'oblique'} {result}")  # --hypothesis-show-statistics counts them
    return result


def _outcome(world: World, argv: list[str], study_folder: bool) -> str:
    threads = torch.get_num_threads()
    try:
        with stubbed(world, study_folder):
            code, err = quiet_main(argv)
    except Accepted:
        return "accepted"
    except SystemExit as e:  # --help, --version
        assert e.code == 0, (argv, e.code)
        return "ok"
    finally:
        torch.set_num_threads(threads)  # --threads N of an accepted run changes the process's
        world.check_intact()
    lines = err.splitlines()
    problems = [line for line in lines if not line.startswith("oblique: warning: ")]
    if code == 0:
        assert not problems, (argv, err)
        return "ok"
    assert code == 2, (argv, code, err)
    assert len(problems) == 1 and problems[0].startswith("oblique: error: "), (argv, err)
    assert "Traceback" not in err and "\n" not in problems[0]
    return "refused"


def refused(world: World, argv: list[str], expect: str) -> None:
    """``oblique ARGV``, run in the world folder with the real work stubbed, is refused with one line that
    says ``expect``, and nothing finished changed."""
    with stubbed(world):
        code, err = quiet_main(argv)
    assert code == 2, (argv, err)
    assert err.count("oblique: error: ") == 1 and expect in err, (argv, err)
    world.check_intact()
