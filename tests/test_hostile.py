"""Hostile inputs: property-based tests over the command line, run configs, study files and records.

Every example ends in exit status 2 with exactly one line ``oblique: error: ...`` on stderr (after any
``oblique: warning: ...`` lines), or in a success; never a traceback; and the finished run and study kept
beside the examples stay byte-identical. An input that is *accepted* stops before the real work: the function
that would train (``oblique.train.fit``), run a study (``oblique.cli.study.run_study``), bench
(``oblique.cli.bench.bench`` and ``run_sweep``) or draw (``analysis.write_figures``) is replaced by one that
raises :class:`Accepted` — the point is the validation at the edge, not the work behind it.

Examples per test: ``OBLIQUE_HYPOTHESIS_EXAMPLES`` (default 60: the searches take about 20 s on 2 cores,
after the set-up of the world they act on); ``OBLIQUE_HYPOTHESIS_EXAMPLES=2000 python -m pytest
tests/test_hostile.py`` searches much longer.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from oblique.cli import main
from oblique.cli.run import RUN_FLAGS
from oblique.methods import REGISTRY, list_methods

EXAMPLES = int(os.environ.get("OBLIQUE_HYPOTHESIS_EXAMPLES", "60"))
HOSTILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


class Accepted(Exception):
    """Raised in place of the real work: the input got past every check at the edge."""


def _accept(*args, **kwargs):
    raise Accepted


# --------------------------------------------------------------------------- the world the examples act on
#: every path an example may name (relative to the world folder, the examples' working directory)
PATHS = (
    "new", "new/sub/deeper", ".", "FILE", "FILE/sub", "EMPTY", "BINARY", "missing.json", "missing/x",
    "FINISHED", "STUDY", "STUDY/runs", "KILLED", "run.toml", "study.toml", "empty.toml", "binary.toml",
    "bench.json", "bench.csv", "garbage.csv", "badbench.json", "out.json", "out.csv", "sweep", "",
)  # fmt: skip


def _digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (its finished results), by relative path, with the sha256 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _results(study: Path) -> dict[str, str]:
    """A study's finished results: study.json and its run folders (the tables and figures are derived)."""
    return {k: v for k, v in _digest(study).items() if k == "study.json" or k.startswith("runs/")}


@dataclass
class World:
    root: Path
    finished: dict[str, str]
    study: dict[str, str]

    def check_intact(self) -> None:
        """The finished run and the finished study are byte-identical to what they were (files may be added
        beside them, e.g. a lock, but none is changed or removed)."""
        now = _digest(self.root / "FINISHED")
        assert {k: now.get(k) for k in self.finished} == self.finished, "a finished run was changed"
        now = _results(self.root / "STUDY")
        assert {k: now.get(k) for k in self.study} == self.study, "a finished study was changed"


def _run_folders(study: Path) -> list[Path]:
    """The run folders of a study, in order: folders only (an example may name ``STUDY/runs`` as a run's or a
    study's ``--out``, which leaves its lock file there)."""
    return sorted(p for p in (study / "runs").iterdir() if p.is_dir())


def _quiet_main(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


#: small real runs: MNIST-1D's CNN, batches of 1000 (6 steps an epoch)
QUICK_RUN = ["--model", "cnn", "--batch-size", "1000", "--no-progress"]
STUDY_ARGS = ["--methods", "baseline,nl", "--seeds", "1", "--epochs", "1", "--model", "cnn", "--batch-sizes", "1000",
              "--workers", "0", "--no-figures", "--no-bench", "--no-progress"]  # fmt: skip


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


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A folder with a finished run, a finished study, an interrupted run and hostile files, in which
    :func:`outcome` runs the examples."""
    root = tmp_path_factory.mktemp("world")
    threads = torch.get_num_threads()
    run = ["run", *QUICK_RUN, "--epochs", "1"]
    assert _quiet_main([*run, "--out", str(root / "FINISHED")])[0] == 0
    assert _quiet_main(["study", *STUDY_ARGS, "--out", str(root / "STUDY")])[0] == 0
    _killed_after_first_checkpoint(root / "KILLED")
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
    yield World(root, _digest(root / "FINISHED"), _results(root / "STUDY"))
    torch.set_num_threads(threads)


@contextlib.contextmanager
def stubbed(world: World, study_folder: bool = False):
    """In the world folder, with the real work replaced by :func:`_accept`. With ``study_folder`` the study
    runner is real (it reads and plans the study folder, writes its tables) and only a run's training is
    stubbed (``oblique.study.local.run_task``)."""
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
    result = _outcome(world, argv, study_folder)
    with contextlib.suppress(InvalidArgument):  # outside a hypothesis test (the plain tests below)
        event(f"{argv[0] if argv else 'oblique'} {result}")  # --hypothesis-show-statistics counts them
    return result


def _outcome(world: World, argv: list[str], study_folder: bool) -> str:
    """Run ``oblique ARGV`` in-process in the world folder, the real work stubbed; return ``accepted``,
    ``ok`` or ``refused``, after checking that a refusal is exit status 2 with one error line (after any
    warning lines), that nothing raised, and that nothing finished changed."""
    threads = torch.get_num_threads()
    try:
        with stubbed(world, study_folder):
            code, err = _quiet_main(argv)
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


# --------------------------------------------------------------------------- strategies
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(
        [
            "0",
            "-0",
            "1",
            "2",
            "-1",
            "1.5",
            "1e308",
            "-1e308",
            "1e-320",
            "nan",
            "inf",
            "-inf",
            "NaN",
            "1_000",
            "0x10",
            "",
            " ",
            "true",
            "18446744073709551616",
            "9" * 30,
        ]
    ),  # fmt: skip
)
SMALL_INTS = st.integers(-2, 3).map(str)
#: text as a command line can hold it: no NUL byte (execve cannot pass one), no '/' (no absolute paths)
JUNK = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/"), max_size=10).filter(
    lambda s: s != ".."
)
PATH = st.sampled_from(PATHS)
HP_NAMES = sorted({h.name for cls in REGISTRY.values() for h in cls.hyperparameters} | {"x", "", "strength"})

CHOICES = {
    "method": [*list_methods(), "nope", "", "all", "NL"],
    "model": [
        "resnet1d",
        "cnn",
        "resnet20",
        "resnet110",
        "wrn16-1",
        "wrn0-0",
        "wrn28-10x",
        "wrn16-100000",
        "wrn100000-1",
        "nope",
        "",
    ],  # fmt: skip
    "dataset": ["mnist1d", "synthetic", "cifar10", "cifar100", "imagenet", "nope", ""],
    "targets": ["conv", "conv+linear", "all", ""],
    "optimizer": ["sgd", "adam", "lbfgs", ""],
    "schedule": ["constant", "multistep", "cosine", "linear", ""],
    "device": ["auto", "cpu", "cuda", "cuda:0", "cuda:-1", "mps", "cpu:0", ""],
}


def _run_value(dest: str, kw: dict) -> st.SearchStrategy:
    """A hostile value for one ``oblique run`` flag (None: a switch, no value)."""
    if kw.get("action") in ("store_true", "store_false"):
        return st.none()
    if dest in ("out", "data_root"):
        return st.one_of(PATH, JUNK)
    if dest in CHOICES:
        return st.one_of(st.sampled_from(CHOICES[dest]), JUNK)
    if dest == "hp":
        return st.builds(lambda k, v: f"{k}={v}", st.sampled_from(HP_NAMES), st.one_of(NUMBERS, JUNK)) | JUNK
    if dest == "milestones":
        return st.lists(st.one_of(NUMBERS, SMALL_INTS), max_size=3).map(",".join)
    if dest == "nesterov":
        return st.sampled_from(["true", "false", "yes", "maybe", ""])
    if dest == "threads":  # never a real thread count above the cores: the examples share this process
        return st.sampled_from(["-1", "0", "1", "2", "4097", "99999999999", "x", "1.5"])
    return st.one_of(SMALL_INTS, NUMBERS, JUNK)


RUN_OPTIONS = {name: _run_value(dest, kw) for name, dest, kw in RUN_FLAGS}
RUN_OPTIONS.update({"--config": PATH, "--resume": PATH})
RANDOM_FLAG = st.from_regex(r"--[a-z][a-z-]{0,10}", fullmatch=True)


def _argv(options: dict[str, st.SearchStrategy], max_flags: int = 5) -> st.SearchStrategy:
    """A command line of up to ``max_flags`` flags of ``options`` (and now and then an unknown flag or a
    stray word), each with a hostile value."""

    @st.composite
    def build(draw):
        argv: list[str] = []
        names = draw(st.lists(st.sampled_from(sorted(options)), max_size=max_flags))
        for name in names:
            argv.append(name)
            value = draw(options[name])
            if value is not None:
                argv.append(value)
        if draw(st.integers(0, 9)) == 0:
            argv.insert(draw(st.integers(0, len(argv))), draw(st.one_of(RANDOM_FLAG, JUNK)))
        return argv

    return build()


# --------------------------------------------------------------------------- the command line
@HOSTILE
@given(argv=_argv(RUN_OPTIONS))
def test_run_command_line(world, argv):
    outcome(world, ["run", *argv])


def test_run_command_line_accepts_and_refuses(world):
    """The examples above mean something only if both outcomes happen: a plain run is accepted."""
    assert outcome(world, ["run", "--model", "cnn", "--out", "new/plain"]) == "accepted"
    assert outcome(world, ["run", "--out", "FINISHED"]) == "refused"
    assert (
        outcome(world, ["run", "--out", "FINISHED", "--overwrite", "--warmup-epochs", "1e308"]) == "refused"
    )
    # accepted, and stopped before its end: the finished run it would replace is still there, unchanged
    assert outcome(world, ["run", "--model", "cnn", "--out", "FINISHED", "--overwrite"]) == "accepted"


STUDY_OPTIONS = {
    "--methods": st.one_of(st.lists(st.sampled_from(CHOICES["method"]), max_size=3).map(",".join), JUNK),
    "--strengths": st.lists(NUMBERS, max_size=3).map(",".join),
    "--seeds": st.one_of(SMALL_INTS, NUMBERS, st.lists(NUMBERS, max_size=3).map(lambda v: ",".join(v) + ",")),
    "--batch-sizes": st.lists(st.one_of(SMALL_INTS, NUMBERS), max_size=3).map(",".join),
    "--grid": st.builds(
        lambda k, v: f"{k}={v}",
        st.sampled_from(
            [
                "lr",
                "epochs",
                "warmup_epochs",
                "model",
                "targets",
                "hp.iters",
                "hp.x",
                "seed",
                "out",
                "threads",
                "milestones",
                "nope",
                "",
            ]
        ),  # fmt: skip
        st.lists(st.one_of(NUMBERS, st.sampled_from(CHOICES["model"])), max_size=3).map(",".join),
    )
    | JUNK,
    "--workers": st.one_of(SMALL_INTS, NUMBERS),
    "--out": st.one_of(PATH, JUNK),
    "--overwrite": st.none(),
    "--no-progress": st.none(),
    "--no-figures": st.none(),
    "--config": PATH,
    **{
        name: value
        for name, value in RUN_OPTIONS.items()
        if name
        not in (
            "--method",
            "--strength",
            "--seed",
            "--batch-size",
            "--out",
            "--overwrite",
            "--no-progress",
            "--config",
            "--resume",
        )
    },  # fmt: skip
}


@HOSTILE
@given(argv=_argv(STUDY_OPTIONS))
def test_study_command_line(world, argv):
    outcome(world, ["study", *argv])


def test_study_command_line_accepts(world):
    assert outcome(world, ["study", *STUDY_ARGS, "--out", "new/study"]) == "accepted"


BENCH_OPTIONS = {
    "--model": st.one_of(st.sampled_from(CHOICES["model"]), JUNK),
    "--batch-size": st.one_of(SMALL_INTS, NUMBERS),
    "--methods": STUDY_OPTIONS["--methods"],
    "--device": st.sampled_from(CHOICES["device"]),
    "--rounds": st.one_of(SMALL_INTS, NUMBERS),
    "--time-budget": NUMBERS,
    "--warmup": st.one_of(SMALL_INTS, NUMBERS),
    "--micro-repeats": st.one_of(SMALL_INTS, NUMBERS),
    "--threads": RUN_OPTIONS["--threads"],
    "--seed": st.one_of(SMALL_INTS, NUMBERS),
    "--num-classes": st.one_of(SMALL_INTS, NUMBERS),
    "--json": st.one_of(PATH, JUNK),
    "--csv": st.one_of(PATH, JUNK),
    "--sweep": st.sampled_from(["width", "depth", "nope", ""]),
    "--out": st.one_of(PATH, JUNK),
    "--no-targets": st.none(),
    "--no-progress": st.none(),
}


@HOSTILE
@given(argv=_argv(BENCH_OPTIONS))
def test_bench_command_line(world, argv):
    outcome(world, ["bench", *argv])


def test_bench_command_line_accepts(world):
    assert (
        outcome(world, ["bench", "--model", "cnn", "--json", "new/b.json", "--csv", "new/b.csv"])
        == "accepted"
    )


@HOSTILE
@given(study=PATH, argv=_argv({"--bench": PATH, "--per-layer": st.none()}, max_flags=2))
def test_plot_command_line(world, study, argv):
    outcome(world, ["plot", study, *argv])


@HOSTILE
@given(argv=st.lists(st.one_of(st.sampled_from(["run", "study", "bench", "plot", "methods", "-v", "--help",
                                                "--version", "-h"]), RANDOM_FLAG, JUNK), max_size=4))  # fmt: skip
def test_any_words(world, argv):
    outcome(world, argv)


# --------------------------------------------------------------------------- TOML files
def toml(value) -> str:
    """``value`` written as a TOML value (strings as JSON strings, which TOML reads the same way)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml(v)}" for k, v in value.items()) + "}"


TOML_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/"), max_size=8).filter(
    lambda s: s != ".."
)
SCALARS = st.one_of(
    st.booleans(),
    st.integers(-(2**66), 2**66),
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    TOML_TEXT,
    st.sampled_from(["no", "false", "0", "", "nl", "cnn", "conv", "cpu", "all", "\x00"]),
)


def _containers(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(inner, max_size=3) | st.dictionaries(TOML_TEXT, inner, max_size=3)


VALUES = st.recursive(SCALARS, _containers, max_leaves=6)
FIELDS = [dest for _, dest, _ in RUN_FLAGS]


def _plausible(key: str) -> st.SearchStrategy:
    """A value of about the right kind for run setting ``key`` (so that some files are accepted)."""
    if key in CHOICES:
        return st.sampled_from(CHOICES[key])
    if key in ("out", "data_root"):
        return PATH
    if key == "hp":
        return st.dictionaries(st.sampled_from(HP_NAMES), SCALARS, max_size=2)
    if key == "milestones":
        return st.lists(st.one_of(st.integers(-1, 5), st.floats()), max_size=3)
    if key == "threads":
        return st.sampled_from([-1, 0, 1, 2, 4097, 2**64, True, 1.5, "2"])
    return st.one_of(st.integers(-1, 3), st.floats(), st.booleans(), st.sampled_from(["yes", "no", ""]))


@st.composite
def run_tables(draw) -> dict:
    keys = draw(st.lists(st.one_of(st.sampled_from(FIELDS), st.sampled_from(FIELDS).map(lambda k: k.replace("_", "-")),
                                   TOML_TEXT), max_size=4, unique=True))  # fmt: skip
    return {k: draw(st.one_of(_plausible(k.replace("-", "_")), VALUES)) for k in keys}


def _document(tables: dict) -> str:
    """A TOML document: top-level keys first, then one ``[name]`` table per dict value."""
    lines = [f"{json.dumps(k)} = {toml(v)}" for k, v in tables.items() if not isinstance(v, dict)]
    for name, table in tables.items():
        if isinstance(table, dict):
            lines.append(f"[{json.dumps(name)}]")
            lines += [f"{json.dumps(k)} = {toml(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


FILE_BYTES = st.one_of(
    st.binary(max_size=64), st.sampled_from([b"", b"\xef\xbb\xbf", b"[[[", b"a = 1\na = 2\n"])
)


@HOSTILE
@given(doc=st.one_of(run_tables().map(_document).map(str.encode), FILE_BYTES), argv=_argv(RUN_OPTIONS, 2))
def test_run_config_files(world, doc, argv):
    (world.root / "hostile-run.toml").write_bytes(doc)
    outcome(world, ["run", "--config", "hostile-run.toml", *argv])


@st.composite
def study_tables(draw) -> dict:
    study = {
        k: draw(v)
        for k, v in {
            "methods": st.one_of(st.lists(st.sampled_from(CHOICES["method"]), max_size=3), SCALARS),
            "strengths": st.one_of(st.lists(st.floats(), max_size=3), SCALARS),
            "seeds": st.one_of(st.integers(-1, 3), st.lists(st.integers(-1, 2**64), max_size=3), SCALARS),
            "batch_sizes": st.one_of(st.lists(st.integers(-1, 300), max_size=2), SCALARS),
            "workers": st.one_of(st.integers(-1, 3), SCALARS),
            "out": st.one_of(PATH, SCALARS),
            "nope": SCALARS,
        }.items()
        if draw(st.integers(0, 2)) == 0
    }
    grid = draw(st.dictionaries(st.one_of(st.sampled_from([*FIELDS, "hp.iters", "hp.x"]), TOML_TEXT),
                                st.one_of(st.lists(SCALARS, max_size=3), SCALARS), max_size=2))  # fmt: skip
    tables = {"study": study, "run": draw(run_tables()), "grid": grid}
    for name in draw(st.lists(st.sampled_from(["study", "run", "grid", "other"]), max_size=2, unique=True)):
        tables[name] = draw(SCALARS)  # study = 5, run = "x": a key where a table belongs
    return {k: v for k, v in tables.items() if v != {} or draw(st.booleans())}


@HOSTILE
@given(doc=st.one_of(study_tables().map(_document).map(str.encode), FILE_BYTES), argv=_argv(STUDY_OPTIONS, 2))
def test_study_files(world, doc, argv):
    (world.root / "hostile-study.toml").write_bytes(doc)
    outcome(world, ["study", "--config", "hostile-study.toml", *argv])


def test_study_file_accepted(world):
    assert outcome(world, ["study", "--config", "study.toml", "--out", "new/s2"]) == "accepted"


# --------------------------------------------------------------------------- corrupt records
RECORD_FILES = ("study.json", "results.csv", "summary.json", "metrics.jsonl", "config.json")


@st.composite
def corruption(draw, original: bytes) -> bytes:
    """``original`` made hostile: emptied, cut, bytes flipped, lines shuffled in, replaced by binary noise or
    by a JSON value of another shape."""
    kind = draw(st.sampled_from(["empty", "cut", "flip", "line", "binary", "json", "shape"]))
    if kind == "empty" or not original:
        return b""
    if kind == "cut":
        return original[: draw(st.integers(0, len(original) - 1))]
    if kind == "flip":
        data = bytearray(original)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "line":
        lines = original.split(b"\n")
        at = draw(st.integers(0, len(lines)))
        new = draw(st.one_of(st.binary(max_size=20), VALUES.map(lambda v: json.dumps(v).encode())))
        return b"\n".join([*lines[:at], new, *lines[at:]])
    if kind == "binary":
        return draw(st.binary(min_size=1, max_size=200))
    if kind == "json":
        return json.dumps(draw(VALUES)).encode()
    try:  # the same keys, values of other kinds
        obj = json.loads(original)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        return json.dumps(draw(VALUES)).encode()
    for key in draw(st.lists(st.sampled_from(sorted(obj) or ["x"]), min_size=1, max_size=3)):
        obj[key] = draw(VALUES)
    return json.dumps(obj).encode()


@HOSTILE
@given(data=st.data(), which=st.sampled_from(RECORD_FILES), run=st.integers(0, 1))
def test_corrupt_study_records(world, data, which, run):
    """A copy of the finished study with one record corrupted: ``oblique plot`` and ``oblique study`` (its
    runner real, up to the training of a run) on it end in one line or go on (the corrupt run left out, or
    planned again), never a traceback."""
    copy = world.root / "corrupt-study"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(world.root / "STUDY", copy)
    runs = _run_folders(copy)
    target = copy / which if which in ("study.json", "results.csv") else runs[run] / which
    target.write_bytes(data.draw(corruption(target.read_bytes() if target.exists() else b"")))
    outcome(world, ["plot", str(copy)])
    outcome(world, ["study", *STUDY_ARGS, "--out", str(copy)], study_folder=True)


@HOSTILE
@given(data=st.data(), which=st.sampled_from(["checkpoint.pt", "metrics.jsonl", "config.json"]))
def test_corrupt_checkpoints(world, data, which):
    """A copy of a killed run with its checkpoint (or another record) corrupted, resumed."""
    copy = world.root / "corrupt-killed"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(world.root / "KILLED", copy)
    target = copy / which
    target.write_bytes(data.draw(corruption(target.read_bytes())))
    outcome(world, ["run", "--resume", str(copy)])


def test_a_killed_run_resumes(world, tmp_path):
    shutil.copytree(world.root / "KILLED", tmp_path / "k")
    assert outcome(world, ["run", "--resume", str(tmp_path / "k")]) == "accepted"


@HOSTILE
@given(data=st.data(), which=st.sampled_from(["summary.json", "metrics.jsonl", "config.json"]),
       overwrite=st.booleans())  # fmt: skip
def test_corrupt_run_records(world, data, which, overwrite):
    """A copy of the finished run with one record corrupted, as the ``--out`` of a new run."""
    copy = world.root / "corrupt-run"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(world.root / "FINISHED", copy)
    target = copy / which
    target.write_bytes(data.draw(corruption(target.read_bytes())))
    outcome(world, ["run", "--model", "cnn", "--out", str(copy), *(["--overwrite"] if overwrite else [])])


# --------------------------------------------------------------------------- the regressions, one by one
def refused(world: World, argv: list[str], expect: str) -> None:
    """``oblique ARGV`` is refused with one line that says ``expect``."""
    with stubbed(world):
        code, err = _quiet_main(argv)
    assert code == 2, (argv, err)
    assert err.count("oblique: error: ") == 1 and expect in err, (argv, err)
    world.check_intact()


@pytest.mark.parametrize("setting", ["overwrite", "progress", "save_model"])
def test_2_toml_booleans_are_type_checked(world, setting):
    (world.root / "bool.toml").write_text(f'{setting} = "no"\nmodel = "cnn"\n')
    refused(
        world,
        ["run", "--config", "bool.toml", "--out", "FINISHED"],
        f"--{setting.replace('_', '-')} must be true or false; got 'no'",
    )


@pytest.mark.parametrize(
    "setting,value,expect",
    [
        ("epochs", 1.5, "must be an integer from 1 to 1000000; got 1.5"),
        ("lr", "0.1", "must be a number > 0 and <= 1000; got '0.1'"),
        ("nesterov", 1, "must be true or false; got 1"),
        ("milestones", [1, "x"], "must be a list of numbers"),
        ("hp", [1, 2], "must be a table of NAME = VALUE"),
        ("model", 3, "must be text; got 3"),
        ("data_root", 5, "must be text; got 5"),
        ("seed", "x", r"must be an integer >= 0 and < 2\*\*63; got 'x'"),
        ("seed", True, r"must be an integer >= 0 and < 2\*\*63; got True"),
    ],
)
def test_2_7_17_every_run_setting_is_checked_against_its_kind(setting, value, expect):
    from oblique.config import ConfigError, RunConfig

    with pytest.raises(ConfigError, match=rf"^{setting} {expect}") as e:
        RunConfig(**{setting: value})
    assert e.value.settings == (setting,)


def test_4_plot_checks_its_inputs_before_writing_anything(world, tmp_path):
    study = tmp_path / "s"
    shutil.copytree(world.root / "STUDY", study)
    shutil.rmtree(study / "figures", ignore_errors=True)
    before = _digest(study)
    for bench in ("missing.json", "garbage.csv", "badbench.json", "BINARY", "EMPTY"):
        refused(world, ["plot", str(study), "--bench", bench], "oblique: error: ")
        assert _digest(study) == before and not (study / "figures").exists()


SUMMARIES = [b"[1, 2]", b'"ok"', b'{"drift": 5}', b'{"status": "ok", "drift": 5}', b"", b"\xff\xfe\x00",
             b'{"status": "ok", "steps": "x", "test_error": 1, "test_error_top5": 1, "train_time_s": 1, '
             b'"regularizer_time_s": 0, "drift": {"mean": {}, "layers": {}}}']  # fmt: skip
METRICS = [b"", b"garbage\n", b"\xff\xfe\x00\x80 binary\n", b"[1, 2]\n", b'{"type": "step"}\n']


@pytest.mark.parametrize(
    "which,content", [*(("summary.json", s) for s in SUMMARIES), *(("metrics.jsonl", m) for m in METRICS)]
)
def test_6_13_records_of_the_wrong_shape_are_left_out_with_a_warning(world, tmp_path, which, content):
    study = tmp_path / "s"
    shutil.copytree(world.root / "STUDY", study)
    (study / "results.csv").write_bytes(b"\x00garbage,\n\xff")  # rewritten by plot
    name = _run_folders(study)[0].name
    (study / "runs" / name / which).write_bytes(content)
    with stubbed(world):
        with pytest.raises(Accepted):  # the figures are the next step
            main(["plot", str(study)])
    from oblique import records
    from oblique.study import load_study, results_frame

    assert not records.is_finished(study / "runs" / name)  # so the next `oblique study` reruns it
    frame = results_frame(load_study(study))
    assert dict(zip(frame["run"], frame["status"], strict=True))[name] == "pending"
    assert (study / "results.csv").read_text().startswith("run,")


def test_6_13_plot_warns_one_line_per_unreadable_run(world, tmp_path, capsys):
    study = tmp_path / "s"
    shutil.copytree(world.root / "STUDY", study)
    a, b = _run_folders(study)
    (a / "summary.json").write_text("[1, 2]")
    (b / "metrics.jsonl").write_bytes(b"\xff\xfe binary")
    with stubbed(world), pytest.raises(Accepted):
        main(["plot", str(study)])
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("oblique: warning: ") for line in err), err
    assert f"{a.name} is left out" in err[0] and "summary.json: expected a run summary" in err[0]
    assert f"{b.name} is left out" in err[1] and "metrics.jsonl: corrupt or incomplete" in err[1]


def test_6_a_rerun_repairs_a_run_whose_metrics_are_corrupt(world, tmp_path, capsys):
    from oblique import records

    study = tmp_path / "s"
    shutil.copytree(world.root / "STUDY", study)
    a, b = _run_folders(study)
    (a / "metrics.jsonl").write_bytes((a / "metrics.jsonl").read_bytes()[:-200])  # cut short
    kept = _digest(b)
    assert main(["study", *STUDY_ARGS, "--out", str(study)]) == 0
    assert "1 runs trained, 2 of 2 finished" in capsys.readouterr().out
    assert records.is_finished(a) and _digest(b) == kept


@pytest.mark.parametrize(
    "content",
    [b"[1, 2]", b'{"schema": 1, "runs": {"r": 5}}', b'{"schema": 1, "runs": {}, "grid_variables": 5}',
     b'{"schema": 1, "runs": {"../../x": {"settings": {}, "grid": {}}}}', b"\xff binary", b""],
)  # fmt: skip
def test_6_a_corrupt_study_json_is_one_line(world, tmp_path, content):
    study = tmp_path / "s"
    shutil.copytree(world.root / "STUDY", study)
    (study / "study.json").write_bytes(content)
    refused(world, ["plot", str(study)], "study.json")
    code, err = _quiet_main(["study", *STUDY_ARGS, "--out", str(study)])  # the real study reads the folder
    assert code == 2 and err.count("oblique: error: ") == 1 and "study.json" in err, err


@pytest.mark.parametrize(
    "doc,expect",
    [
        ("study = 5", "study must be a table ([study]); got 5"),
        ("run = 5", "run must be a table ([run]); got 5"),
        ('grid = "x"', "grid must be a table ([grid]); got 'x'"),
        (
            "[study]\nmethods = 5",
            "--methods must be 'all', comma-separated method names or a list of them; got 5",
        ),
        ("[study]\nseeds = 1.5", "--seeds must be a count N >= 1 or a list of seeds (e.g. [1]); got 1.5"),
        ("[study]\nseeds = true", "--seeds must be a count N >= 1 or a list of seeds (e.g. [1]); got True"),
        ("[study]\nout = 5", "--out must be a folder name (not empty); got 5"),
        ("[study]\nstrengths = 0.1", "--strengths must be a list of numbers (e.g. [0.1]); got 0.1"),
        ("[study]\nworkers = true", "--workers must be an integer >= 0; got True"),
        ("[grid]\nmodel = [5]", "--model must be text; got 5"),
        ("[run]\nmodel = 3", "--model must be text; got 3"),
        ("[run]\nhp = [1, 2]", "'hp' must be a table of NAME = VALUE; got [1, 2]"),
        ("[run]\nseed = 'x'", "'seed' is a grid variable"),
        ("[run]\nthreads = 0", "--threads must be an integer from 1 to 4096; got 0"),
    ],
)
def test_7_wrong_typed_study_files_are_one_line(world, doc, expect):
    (world.root / "bad-study.toml").write_text(doc + "\n")
    refused(world, ["study", "--config", "bad-study.toml"], expect)


@pytest.mark.parametrize(
    "doc,expect",
    [('model = 3', "--model must be text; got 3"), ("hp = [1, 2]", "'hp' must be a table of NAME = VALUE"),
     ('seed = "x"', "--seed must be an integer >= 0 and < 2**63; got 'x'"), ("seed = 1.5", "--seed must be an integer >= 0 and < 2**63; got 1.5"),
     ("data_root = 5", "--data-root must be text; got 5"), ('out = ""', "--out must be a folder name")],
)  # fmt: skip
def test_7_17_wrong_typed_run_files_are_one_line(world, doc, expect):
    (world.root / "bad-run.toml").write_text(doc + "\n")
    refused(world, ["run", "--config", "bad-run.toml"], expect)


@pytest.mark.parametrize(
    "argv,expect",
    [
        (["run", "--seed", "18446744073709551616"], "--seed must be an integer >= 0 and < 2**63"),
        (["run", "--seed", "-1"], "--seed must be an integer >= 0 and < 2**63; got -1"),
        (["bench", "--seed", "18446744073709551616"], "--seed must be an integer >= 0 and < 2**63"),
        (["bench", "--seed", "-1"], "--seed must be an integer >= 0 and < 2**63; got -1"),
        (["study", "--seeds", "99999999999999999999999,"], "seeds must be integers >= 0 and < 2**63"),
        (["study", "--seeds=-1,"], "seeds must be integers >= 0"),
    ],
)
def test_8_seeds_are_range_checked_everywhere(world, argv, expect):
    refused(world, [*argv, "--out", "new/never"] if argv[0] != "bench" else argv, expect)


@pytest.mark.parametrize(
    "argv,expect",
    [
        (["--threads", "-1"], "--threads must be an integer"),
        (["--threads", "0"], "--threads must be an integer"),
        (["--dataset", "cifar10", "--model", "resnet20", "--data-root", "nonexistent"], "cifar10 not found"),
        (["--grid", "warmup_epochs=1e308"], "--warmup-epochs must be a number from 0 to 1000000"),
        (["--grid", "milestones=1e308"], "--milestones must be"),
        (["--seeds", "1000000000000"], "expected a count N from 1 to 100000"),
        (["--seeds", "20000", "--methods", "all"], "this grid has 200000 runs; a study plans at most 100000"),
    ],
)
def test_9_10_a_study_refuses_up_front_what_would_fail_every_run(world, argv, expect):
    refused(world, ["study", *argv, "--out", "new/never-study"], expect)
    assert not (world.root / "new" / "never-study").exists()


@pytest.mark.parametrize(
    "argv,expect",
    [
        (["--warmup-epochs", "1e308"], "--warmup-epochs must be a number from 0 to 1000000; got 1e+308"),
        (["--milestones", "1e308"], "--milestones must be a list of numbers from 0 to 1000000"),
        (["--gamma", "1e308", "--milestones", "0,0"], "--gamma must be a number > 0 and <= 1"),
        (["--epochs", "10000000000"], "--epochs must be an integer from 1 to 1000000"),
        # was a traceback
        (["--batch-size", "1" + "0" * 30], "--batch-size must be an integer from 1 to 1000000"),
        # overflowed the optimizer's step
        (["--lr", "1e308"], "--lr must be a number > 0 and <= 1000; got 1e+308"),
        (["--weight-decay", "1e308"], "--weight-decay must be a number from 0 to 1000"),
        (["--momentum", "2"], "--momentum must be a number from 0 to 1; got 2.0"),
    ],
)
def test_9_run_bounds_the_schedule(world, argv, expect):
    refused(world, ["run", *argv, "--out", "FINISHED", "--overwrite"], expect)


@pytest.mark.parametrize(
    "argv,expect",
    [
        (["--num-classes", "0"], "--num-classes must be an integer from 1 to 100000; got 0"),
        (["--batch-size", "1000000000"], "--batch-size must be an integer from 1 to 65536"),
        (["--time-budget", "nan"], "--time-budget must be a number of seconds > 0; got nan"),
        (["--methods", ""], "--methods must name at least one method"),
        (["--json", "EMPTY"], "--json EMPTY is a folder; give a file name in it"),
        (["--csv", "EMPTY"], "--csv EMPTY is a folder; give a file name in it"),
        (["--json", "FILE/b.json"], "--json FILE/b.json cannot be written (folder FILE:"),
        (["--csv", ""], "--csv must be a file name"),
        (["--sweep", "width", "--out", "FILE"], "--out FILE exists and is not a folder"),
    ],
)
def test_11_bench_refuses_before_benching(world, argv, expect):
    refused(world, ["bench", "--model", "cnn", *argv], expect)


def test_11_write_csv_leaves_no_temporary_file(tmp_path):
    from oblique.cost import write_csv

    write_csv([], tmp_path / "b.csv")
    assert [p.name for p in tmp_path.iterdir()] == ["b.csv"]


def test_16_messages_say_what_is_wrong(world):
    refused(world, ["run", "--out", "FILE"], "--out FILE exists and is not a folder")
    refused(world, ["study", "--out", "FILE"], "--out FILE exists and is not a folder")
    refused(world, ["run", "--foo"], "unrecognized arguments: --foo (see 'oblique run --help')")
    refused(
        world,
        ["run", "--hp", "iters=x", "--method", "oni"],
        "--hp iters must be an integer from 1 to 100; got 'x' (oni)",
    )


def test_16_a_folder_that_cannot_be_written_is_named_not_a_temporary_file(tmp_path, monkeypatch):
    from oblique import storage

    def denied(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(Path(dir) / ".x.tmp123"))

    monkeypatch.setattr("tempfile.mkstemp", denied)
    with pytest.raises(PermissionError) as e:
        storage.write_atomic(tmp_path / "summary.json", "{}")
    assert e.value.filename == str(tmp_path / "summary.json")


def test_16_a_full_disk_names_the_file(tmp_path):
    from oblique import storage

    w = storage.JsonLinesWriter(tmp_path / "metrics.jsonl")
    w._f.close()
    w._f = open("/dev/full", "w")  # every write: ENOSPC
    with pytest.raises(OSError) as e:
        w.write({"type": "meta"})
    assert e.value.filename == str(tmp_path / "metrics.jsonl") and "No space left" in e.value.strerror
    with pytest.raises(OSError) as e:
        w.close()  # the buffered line cannot be written either; the file is closed all the same
    assert e.value.filename == str(tmp_path / "metrics.jsonl") and w._f.closed


def test_16_an_unwritable_cache_warns_and_goes_on(tmp_path, monkeypatch):
    from oblique import data

    (tmp_path / "cache").write_text("a file where the cache folder should be")
    monkeypatch.setenv("OBLIQUE_CACHE", str(tmp_path / "cache"))
    with pytest.warns(data.DataWarning, match=r"MNIST-1D cache cannot be written .*\$OBLIQUE_CACHE"):
        x, y, xt, yt = data.load_mnist1d(num_samples=200)
    assert len(x) + len(xt) == 200


def test_16_17_the_cache_file_is_readable_by_everyone(tmp_path, monkeypatch):
    from oblique import data

    monkeypatch.setenv("OBLIQUE_CACHE", str(tmp_path))
    data.load_mnist1d(num_samples=200)
    (f,) = (tmp_path / "mnist1d").glob("*.npz")
    assert f.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    "argv,expect",
    [
        (["run", "--out", ""], "--out must be a folder name (not empty); got ''"),
        (["run", "--method", "baseline", "--strength", "5"], "--strength does not apply to method baseline"),
        (["study", "--workers", "-1"], "--workers must be an integer >= 0; got -1"),
        ([], "no command given"),
    ],
)
def test_17_minor(world, argv, expect):
    refused(world, argv, expect)


def test_17_version(capsys):
    from oblique import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"oblique {__version__}"


def test_an_error_line_escapes_control_characters(world):
    refused(world, ["run", "--a\nb"], "unrecognized arguments: --a\\nb")


def test_a_corrupt_torch_file_is_a_record_error(tmp_path):
    """Cut, flipped or random bytes of a torch file are refused in one line (torch's reader raises
    IndexError, BadZipFile, ... and warns about odd pickle protocols on some of them)."""
    import random

    from oblique import storage

    torch.save({"w": torch.ones(3), "metrics_offset": 5}, tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    rng = random.Random(0)
    for i in range(120):
        bad = bytearray(data)
        if i % 3 == 0:
            bad = bad[: rng.randrange(len(bad))]
        elif i % 3 == 1:
            for _ in range(3):
                bad[rng.randrange(len(bad))] = rng.randrange(256)
        else:
            bad = bytearray(rng.randrange(256) for _ in range(rng.randrange(1, 100)))
        (tmp_path / "bad.pt").write_bytes(bytes(bad))
        try:
            storage.read_torch(tmp_path / "bad.pt")
        except storage.RecordError as e:
            assert "bad.pt" in str(e)


@pytest.mark.parametrize(
    "argv,expect",
    [
        (
            ["run", "--model", "wrn16-100000", "--dataset", "synthetic"],
            "--model wrn16-100000: WRN width must be <= 32",
        ),
        (
            ["run", "--model", "wrn100000-1", "--dataset", "synthetic"],
            "--model wrn100000-1: WRN depth must be <= 1000",
        ),
        (["bench", "--model", "wrn16-100000"], "--model wrn16-100000: WRN width must be <= 32"),
        (["study", "--grid", "model=wrn16-100000", "--dataset", "synthetic"], "WRN width must be <= 32"),
        (["run", "--method", "oni", "--hp", "iters=1000000"], "--hp iters must be an integer from 1 to 100"),
        (["run", "--method", "olm", "--hp", "scale=1e308"], "--hp scale must be a number from 0 to 1000000"),
    ],
)
def test_a_model_or_hyperparameter_that_would_not_fit_or_never_end_is_refused(world, argv, expect):
    """Found by the searches above and by hand: WRN-16-100000 failed allocating 92 TB (a traceback),
    WRN-100000-1 took minutes to build, ONI with 10^6 Newton iterations never ended a step, a scale of
    1e308 overflowed float32 (a traceback)."""
    refused(world, argv, expect)
