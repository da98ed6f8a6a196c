"""Hostile inputs: property-based tests over the command line, run configs, study files and records.

Every example ends in exit status 2 with exactly one line ``oblique: error: ...`` on stderr (after any
``oblique: warning: ...`` lines), or in a success; never a traceback; and the finished run and study kept
beside the examples stay byte-identical. An input that is *accepted* stops before the real work (see
``hostile_world``, which builds the world the examples act on and runs them in it).

The default run draws the same examples every time (the ``fixed`` hypothesis profile of ``conftest.py``:
60 per test, derandomized, no example database); ``OBLIQUE_HYPOTHESIS_EXAMPLES=2000 python -m pytest
tests/test_hostile.py`` is a random search, 2000 new examples per test on every run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

from hostile_world import PATHS, STUDY_ARGS, outcome, run_folders
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oblique.cli.run import RUN_FLAGS
from oblique.methods import REGISTRY, list_methods

#: the examples' own needs (a slow world, filtered text); how many examples, and whether they are drawn at
#: random, is the loaded profile's (conftest.py)
HOSTILE = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)

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
    ),
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
    ],
    "dataset": ["mnist1d", "synthetic", "cifar10", "cifar100", "imagenet", "nope", ""],
    "targets": ["conv", "conv+linear", "all", ""],
    "optimizer": ["sgd", "adam", "adamw", "muon", "lbfgs", ""],
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
    "--optimizers": st.one_of(
        st.lists(st.sampled_from(CHOICES["optimizer"]), max_size=3).map(",".join), JUNK
    ),
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
        ),
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
    },
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
@given(
    argv=st.lists(
        st.one_of(
            st.sampled_from(["run", "study", "bench", "plot", "methods", "-v", "--help", "--version", "-h"]),
            RANDOM_FLAG,
            JUNK,
        ),
        max_size=4,
    )
)
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
    keys = draw(
        st.lists(
            st.one_of(
                st.sampled_from(FIELDS), st.sampled_from(FIELDS).map(lambda k: k.replace("_", "-")), TOML_TEXT
            ),
            max_size=4,
            unique=True,
        )
    )
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
            "optimizers": st.one_of(st.lists(st.sampled_from(CHOICES["optimizer"]), max_size=2), SCALARS),
            "workers": st.one_of(st.integers(-1, 3), SCALARS),
            "out": st.one_of(PATH, SCALARS),
            "nope": SCALARS,
        }.items()
        if draw(st.integers(0, 2)) == 0
    }
    grid = draw(
        st.dictionaries(
            st.one_of(st.sampled_from([*FIELDS, "hp.iters", "hp.x"]), TOML_TEXT),
            st.one_of(st.lists(SCALARS, max_size=3), SCALARS),
            max_size=2,
        )
    )
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
    runs = run_folders(copy)
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
@given(
    data=st.data(),
    which=st.sampled_from(["summary.json", "metrics.jsonl", "config.json"]),
    overwrite=st.booleans(),
)
def test_corrupt_run_records(world, data, which, overwrite):
    """A copy of the finished run with one record corrupted, as the ``--out`` of a new run."""
    copy = world.root / "corrupt-run"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(world.root / "FINISHED", copy)
    target = copy / which
    target.write_bytes(data.draw(corruption(target.read_bytes())))
    outcome(world, ["run", "--model", "cnn", "--out", str(copy), *(["--overwrite"] if overwrite else [])])


# --------------------------------------------------------------------------- the default run is fixed
#: the command-line searches above, run in a fresh interpreter with each example recorded instead of run
_DRAW = """
import json, sys
sys.path[:0] = ["tests"]
import conftest  # registers and loads the profile, as pytest does
import test_hostile as h
drawn = []
h.outcome = lambda world, argv, study_folder=False: drawn.append(argv)
searches = (h.test_run_command_line, h.test_study_command_line, h.test_bench_command_line,
            h.test_plot_command_line, h.test_any_words)
for test in searches:
    test(None)  # the world: unused, outcome records the example
print(json.dumps(drawn))
"""


def _drawn(hash_seed: str) -> list[list[str]]:
    """The command lines the default run's searches draw, in a fresh interpreter with ``PYTHONHASHSEED``."""
    env = {k: v for k, v in os.environ.items() if k != "OBLIQUE_HYPOTHESIS_EXAMPLES"}
    env["PYTHONHASHSEED"] = hash_seed
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", _DRAW], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_default_run_draws_the_same_examples_every_time():
    """Two runs of the default suite search the same command lines: drawn in two fresh interpreters (with
    different hash seeds), the examples of the command-line searches are the same, in the same order."""
    from conftest import FIXED_EXAMPLES

    first, second = _drawn("1"), _drawn("2")
    assert len(first) >= 4 * FIXED_EXAMPLES and len({json.dumps(a) for a in first}) > FIXED_EXAMPLES
    assert first == second
