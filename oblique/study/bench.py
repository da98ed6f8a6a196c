"""The study's own cost measurement: one short :func:`oblique.cost.bench` of the study's model, written
into the study folder as ``bench.json``.

The training time of a study's runs is wall time of runs that shared the cores with each other (two
workers on two cores), so it cannot say what a method costs. After the runs, the study process — alone on
the machine by then — benches one training step of every method of the study on the study's model at its
reference batch size, with the torch threads its runs used (interleaved rounds, paired overhead against
``baseline``, the regularizer's isolated time; :mod:`oblique.cost`). The claims (claim 2,
:mod:`oblique.study.claims`) and figure 5 (a) read it.

``bench.json`` is an ordinary bench record (schema ``oblique.bench/1``, :mod:`oblique.cost`). It is
measured again only when it is missing or was made for other methods, another model, batch size, device
or thread count.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from typing import Any

from oblique import records, storage
from oblique.study.folder import Study, load_study
from oblique.study.reference import method_order

__all__ = ["BENCH_FILE", "BENCH_SECONDS", "bench_study", "read_study_bench", "study_bench_settings"]

#: the study's bench record, in the study folder
BENCH_FILE = "bench.json"
#: the bench's time budget for its timed rounds (seconds): about 200 rounds of every method on resnet1d
BENCH_SECONDS = 15.0


def _study(study: Study | str | os.PathLike) -> Study:
    return study if isinstance(study, Study) else load_study(study)


def study_bench_settings(study: Study | str | os.PathLike) -> dict[str, Any]:
    """The bench a study needs: its methods (``baseline`` first), its most frequent model and device, the
    model's standard batch size (its recipe's) or else the study's most frequent one, and the torch threads
    its runs used (``threads_used`` of a run's ``config.json``; 1 when none says)."""
    from oblique.config import RunConfig

    study = _study(study)
    settings = [r["settings"] for r in study.runs.values()]
    model = Counter(s["model"] for s in settings).most_common(1)[0][0]
    device, threads = _runs_used(study)
    sizes = Counter(s["batch_size"] for s in settings if s["model"] == model)
    recipe = RunConfig(model=model).resolved().batch_size
    batch = recipe if recipe in sizes else sizes.most_common(1)[0][0]
    methods = method_order({s["method"] for s in settings} | {"baseline"})
    return {
        "model": model,
        "batch_size": int(batch),
        "device": device,
        "methods": methods,
        "threads": threads,
    }


def _runs_used(study: Study) -> tuple[str, int]:
    """The device and the torch threads the study's runs trained with, from the runs' ``config.json``:
    the most frequent ``device_used`` (``cpu``, ``cuda:N``; ``cpu`` when none says: the device is an
    execution setting, study.json does not hold it) and the first finished run's ``threads_used`` (1
    when none says)."""
    used: Counter = Counter()
    threads = None
    for name in study.runs:
        try:
            config = records.read_config(study.run_dir(name))
            device, run_threads = config.get("device_used"), config.get("threads_used")
        except (storage.RecordError, AttributeError):
            continue
        if isinstance(device, str) and device.split(":")[0] in ("cpu", "cuda"):
            used[device] += 1
        if threads is None and isinstance(run_threads, int) and run_threads >= 1:
            threads = run_threads
    return (used.most_common(1)[0][0] if used else "cpu"), (threads or 1)


def read_study_bench(study: Study | str | os.PathLike) -> dict | None:
    """The study's ``bench.json``, or ``None`` when it has none (or an unreadable one)."""
    path = _study(study).root / BENCH_FILE
    if not path.exists():
        return None
    try:
        record = storage.read_json(path)
    except storage.RecordError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("methods"), dict) else None


def _matches(record: dict | None, wanted: dict[str, Any]) -> bool:
    if record is None:
        return False
    benched = set(record["methods"]) | set(record.get("errors") or {})
    device = str(record.get("device", "")).split(" ")[0]  # "cuda:0 (NVIDIA H100)" -> "cuda:0"
    same_device = wanted["device"] == "auto" or device == wanted["device"]
    return (
        record.get("model") == wanted["model"]
        and record.get("batch_size") == wanted["batch_size"]
        and benched == set(wanted["methods"])
        and record.get("threads") == wanted["threads"]
        and same_device
    )


def bench_study(
    study: Study | str | os.PathLike,
    *,
    seconds: float = BENCH_SECONDS,
    force: bool = False,
    echo: Callable[[str], None] | None = None,
) -> dict:
    """Bench the study's methods on its model (see the module docstring); write and return ``bench.json``.

    Run it when nothing else uses the cores (after the study's runs). It uses as many torch threads as the
    study's runs did (one per run with two workers on two cores), so a step costs what it cost in a run;
    a busy machine makes it noisy, which claim 2 then says (delete ``bench.json`` and run again).

    Args:
        study: the study (or its folder).
        seconds: the time budget of the timed rounds (:class:`oblique.cost.BenchConfig`'s
            ``time_budget_s``); the isolated measurements follow (a few seconds on resnet1d).
        force: measure again even when ``bench.json`` already fits the study.
        echo: receives one line when the bench is done.

    Returns:
        The bench record.
    """
    from oblique.cost import bench

    study = _study(study)
    wanted = study_bench_settings(study)
    old = read_study_bench(study)
    if not force and _matches(old, wanted):
        return old
    record = bench(
        model=wanted["model"],
        methods=wanted["methods"],
        batch_size=wanted["batch_size"],
        device=wanted["device"],
        threads=wanted["threads"],
        targets=False,
        progress=False,
        time_budget_s=seconds,
        micro_repeats=20,
    )
    storage.write_json_atomic(study.root / BENCH_FILE, record)
    if echo is not None:
        echo(
            f"cost: one training step of {len(record['methods'])} methods benched in this process alone "
            f"({record['rounds']} interleaved rounds, {record['seconds']:.0f} s): {study.root / BENCH_FILE}"
        )
    return record
