"""scripts/gpu_check.sh: the prepared GPU check, run with its commands replaced by recorders.

The script is run for real, with ``python`` and ``oblique`` on its ``PATH`` replaced by stubs that write down
their arguments (and ``OBLIQUE_TEST_DEVICE``) and exit with a chosen status: what it would run, at which
size and on which device, and what it reports, without running any of it.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.sh"

#: a stand-in for a command: appends its name, the test device and its arguments to $CALLS (NUL-separated,
#: a record separator after each call), then exits with $FAIL_<NAME>_<FIRST ARGUMENT> (non-word characters
#: as ``_``: ``FAIL_oblique_bench``, ``FAIL_python__m``), 0 when unset
STUB = r"""#!/bin/bash
name=$(basename "$0")
printf '%s\0' "$name" "OBLIQUE_TEST_DEVICE=${OBLIQUE_TEST_DEVICE:-}" "$@" $'\x1e' >> "$CALLS"
key=FAIL_$(printf '%s_%s' "$name" "$1" | tr -c 'A-Za-z0-9_' '_')
exit "${!key:-0}"
"""


def _check(
    tmp_path: Path, *args: str, **fail: int
) -> tuple[subprocess.CompletedProcess, list[list[str]], str]:
    """Run the script with stubbed commands; ``fail`` maps a stub's key (``oblique_bench``, see :data:`STUB`)
    to its exit status. Returns the finished process, the recorded calls and the status file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("python", "oblique"):
        (bin_dir / name).write_text(STUB)
        (bin_dir / name).chmod(0o755)
    calls, out = tmp_path / "calls.txt", tmp_path / "out"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "OUT": str(out), "CALLS": str(calls)}
    env.update({f"FAIL_{k}": str(v) for k, v in fail.items()})
    done = subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)
    text = calls.read_text() if calls.exists() else ""
    recorded = [call.strip("\0").split("\0") for call in text.split("\x1e") if call.strip("\0")]
    return done, recorded, (out / "status.txt").read_text()


def _parts(calls: list[list[str]]) -> dict[str, list[str]]:
    """The recorded calls by part: the device report, the tests, the training study and the bench."""
    by = {}
    for call in calls:
        name, device, args = call[0], call[1], call[2:]
        if name == "python" and args[:1] == ["-c"]:
            by["device"] = args
        elif name == "python" and args[:2] == ["-m", "pytest"]:
            by["tests"] = [device, *args]
        elif name == "oblique":
            by[args[0]] = args
    return by


def _results(status: str) -> list[str]:
    """The status file's result lines (``NAME: ok`` or ``NAME: exit N``), in order."""
    return [line for line in status.splitlines() if re.fullmatch(r"\w+: (ok|exit \d+)", line)]


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_the_gpu_check_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_the_dry_run_runs_every_part_on_the_cpu_at_toy_size(tmp_path):
    done, calls, status = _check(tmp_path, "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    parts = _parts(calls)
    assert set(parts) == {"device", "tests", "study", "bench"}
    assert parts["tests"][0] == "OBLIQUE_TEST_DEVICE=cpu"
    assert "tests/test_methods_contract.py" in parts["tests"] and "tests/test_cuda.py" in parts["tests"]
    study, bench = parts["study"], parts["bench"]
    assert _flag(study, "--device") == "cpu" and _flag(study, "--epochs") == "1"
    assert _flag(study, "--out").startswith(str(tmp_path / "out"))
    assert _flag(bench, "--device") == "cpu" and _flag(bench, "--model") == "resnet20"
    assert _flag(bench, "--batch-size") == "8" and _flag(bench, "--rounds") == "2"
    assert not any(arg == "cuda" or arg.startswith("cuda:") for call in calls for arg in call)
    assert _results(status) == [
        "device: ok",
        "tests: ok",
        "train: ok",
        "bench: ok",
    ]


def test_the_full_check_runs_on_cuda_at_full_size(tmp_path):
    done, calls, _ = _check(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    parts = _parts(calls)
    assert parts["tests"][0] == "OBLIQUE_TEST_DEVICE=cuda"
    assert _flag(parts["study"], "--device") == "cuda" and _flag(parts["study"], "--epochs") == "40"
    bench = parts["bench"]
    assert _flag(bench, "--device") == "cuda" and _flag(bench, "--model") == "resnet110"
    assert _flag(bench, "--batch-size") == "128" and _flag(bench, "--time-budget") == "240"


@pytest.mark.parametrize(("stub", "part"), [("oblique_bench", "bench"), ("python__m", "tests")])
def test_a_failed_part_is_reported_the_others_still_run_and_the_check_fails(tmp_path, stub, part):
    done, calls, status = _check(tmp_path, "--dry-run", **{stub: 3})
    assert done.returncode != 0
    results = _results(status)
    assert len(results) == 4 and f"{part}: exit 3" in results
    assert set(_parts(calls)) == {"device", "tests", "study", "bench"}  # every part ran all the same
    assert sum(line.endswith(": ok") for line in results) == 3
    assert os.path.exists(tmp_path / "out" / f"{part}.txt")
