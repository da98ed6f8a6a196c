"""``oblique study`` and ``oblique plot``: the grid from a study file and flags, the run, the cost bench,
the figures.

With no grid (no ``--config``, ``--methods``, ``--strengths``, ``--seeds``, ``--batch-sizes``,
``--optimizers`` or ``--grid``), ``oblique study`` runs **the main job** (:mod:`oblique.study.main_job`): every method at its
default strength, Norm Loss and weight decay over the strength and the batch size, three seeds each; the
run flags given (``--epochs 5``) apply to every run of it. Any grid flag makes the study that one grid.
After the runs, the study process benches one training step of every method of the study alone on the
machine (``bench.json``; ``--no-bench`` skips it) and writes the tables again, the claims section of
``summary.md`` included (:mod:`oblique.study.claims`).

The only module of the library that imports :mod:`analysis` (lazily, for the figures).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from oblique import records, storage
from oblique.cli.parsing import parse_csv, parse_grid, parse_seeds
from oblique.cli.run import add_run_arguments, given_run_settings
from oblique.config import overlay, read_toml
from oblique.errors import ObliqueError
from oblique.study import (
    ERROR_FILE,
    RESULTS_FILE,
    STUDY_KEYS,
    PlannedRun,
    StudySpec,
    collect,
    execution_settings,
    executor_for,
    expand,
    load_study,
    run_study,
    spec_from_tables,
    summary_markdown,
)
from oblique.study.bench import bench_study
from oblique.study.main_job import expand_all, main_job
from oblique.study.spec import study_table

__all__ = [
    "GRID_FLAGS",
    "cmd_plot",
    "cmd_study",
    "is_main_job",
    "runs_from_spec",
    "setup_plot",
    "setup_study",
    "spec_from_args",
]

#: the flags that say which grid to run; with none of them (and no --config), the main job runs
GRID_FLAGS = ("methods", "strengths", "seeds", "batch_sizes", "optimizers", "grid")


def setup_study(p: argparse.ArgumentParser) -> None:
    """The ``oblique study`` flags."""
    p.add_argument(
        "--config",
        help="TOML study file: [study] methods/strengths/seeds/batch_sizes/optimizers/workers/out, "
        "[run] fixed run settings, [grid] NAME = [values]; flags override it",
    )
    p.add_argument("--methods", help="comma-separated method names, or 'all' (default: all)")
    p.add_argument(
        "--strengths", type=parse_csv(float, "numbers"), help="λ values; default: each method's own"
    )
    p.add_argument("--seeds", type=parse_seeds, help="N (seeds 0..N-1) or a comma list; default 3")
    p.add_argument(
        "--batch-sizes", dest="batch_sizes", type=parse_csv(int, "integers"), help="batch sizes; default 100"
    )
    p.add_argument(
        "--optimizers",
        type=parse_csv(str, "optimizer names"),
        metavar="OPT1,OPT2",
        help="optimizers as a grid axis (sgd, adam, adamw, muon), the grid variable optimizer; a method with "
        "its own Riemannian optimizer runs with those of them it takes (sgd, adam); default: the run's",
    )
    p.add_argument(
        "--grid",
        type=parse_grid,
        action="append",
        metavar="NAME=V1,V2",
        help="any other run setting (or hp.NAME) as a grid axis; repeatable",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="local worker processes (0: this process), one GPU each on a machine with several; default 2",
    )
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="where the runs train: local worker processes (default), or Ray tasks on a local Ray "
        "instance or a cluster (pip install 'oblique[ray]'; the study folder on a filesystem "
        "every node sees)",
    )
    p.add_argument(
        "--address",
        help="ray: the cluster to connect to (HOST:PORT, auto, ray://HOST:PORT); "
        "default: start a local Ray instance",
    )
    p.add_argument(
        "--cpus-per-run",
        dest="cpus_per_run",
        type=float,
        metavar="N",
        help="ray: CPUs each run reserves (and its torch threads); default 1",
    )
    p.add_argument(
        "--gpus-per-run",
        dest="gpus_per_run",
        type=float,
        metavar="N",
        help="ray: GPUs each run reserves (fractions share one); default 1 on a cluster with GPUs "
        "unless --device cpu, else 0",
    )
    p.add_argument("--out", help="study folder; default studies/default")
    p.add_argument("--overwrite", action="store_true", help="delete the study folder's runs and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-figures", action="store_true", help="do not write the figures")
    p.add_argument(
        "--no-bench",
        action="store_true",
        help="do not bench the methods' per-step cost after the runs (bench.json; claim 2)",
    )
    add_run_arguments(
        p,
        exclude=("--method", "--strength", "--seed", "--batch-size", "--out", "--overwrite", "--no-progress"),
    )


def spec_from_args(args: argparse.Namespace) -> tuple[StudySpec, dict]:
    """The :class:`StudySpec` and the study options (workers, out): the study file's tables with the
    flags laid over them, read by :func:`oblique.study.spec_from_tables`."""
    tables: dict[str, Any] = read_toml(args.config) if getattr(args, "config", None) else {}
    tables = dict(tables)
    source = str(getattr(args, "config", None) or "command line")
    study_t, grid_t, run_t = (study_table(tables, name, source) for name in ("study", "grid", "run"))
    study_t.update({k: getattr(args, k) for k in STUDY_KEYS if getattr(args, k, None) is not None})
    grid_t.update(dict(getattr(args, "grid", None) or []))
    tables.update(study=study_t, grid=grid_t, run=overlay(run_t, given_run_settings(args)))
    return spec_from_tables(tables, source=source)


def is_main_job(args: argparse.Namespace) -> bool:
    """Whether ``oblique study`` was given no grid (no study file, no grid flag): the main job."""
    return not getattr(args, "config", None) and all(getattr(args, k, None) in (None, []) for k in GRID_FLAGS)


def runs_from_spec(args: argparse.Namespace, spec: StudySpec) -> list[PlannedRun]:
    """The planned runs, every one validated: the main job's grids with the run flags given
    (:func:`is_main_job`), else the one grid of the study file and flags."""
    return expand_all(main_job(spec.base)) if is_main_job(args) else expand(spec)


def cmd_study(args: argparse.Namespace) -> int:
    """``oblique study``: run the grid, bench the methods, print the summary and claims, write the figures."""
    spec, opts = spec_from_args(args)
    executor = _executor(args, opts)  # Ray missing, or a flag of the wrong executor: one line, up front
    execution = execution_settings(spec.base, device_here=getattr(args, "executor", "local") != "ray")
    runs = runs_from_spec(args, spec)  # every run validated before anything is written
    executor.connect()  # Ray: an unreachable cluster is one line, before the folder is touched
    t0 = time.perf_counter()

    def _terminate(signum, frame):  # SIGTERM (kill, a batch scheduler) stops the study as Ctrl-C does
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, _terminate)
    try:
        result = run_study(
            opts["out"],
            runs,
            workers=opts["workers"],
            threads=spec.base.get("threads"),
            overwrite=args.overwrite,
            progress=not args.no_progress,
            executor=executor,
            execution=execution,
        )
    finally:
        signal.signal(signal.SIGTERM, old_term)
    study = result.study
    done = sum(records.is_finished(study.run_dir(n)) for n in study.runs)
    if result.interrupted:
        print(
            f"oblique: study interrupted: {done} of {len(study.runs)} runs finished and kept in {study.root}; "
            "run the same command again to finish it",
            file=sys.stderr,
        )
        return 130
    t_runs = time.perf_counter() - t0
    if not args.no_bench:
        try:
            bench_study(study, echo=print)
        except (ObliqueError, RuntimeError, ValueError) as e:  # the runs are done: say why, go on
            print(
                f"oblique: the cost bench failed ({type(e).__name__}: {str(e).splitlines()[0]}); "
                "claim 2 is not testable",
                file=sys.stderr,
            )
        collect(study)  # the tables again, the cost claim included
    print(summary_markdown(study))
    print(
        f"{len(result.ran)} runs trained, {done} of {len(study.runs)} finished, in {t_runs:.0f} s; "
        f"results: {study.root / RESULTS_FILE}"
    )
    if not args.no_figures:
        _figures(study.root, None, False)
    print(f"oblique study: {time.perf_counter() - t0:.0f} s in all (runs, bench, tables and figures)")
    if result.failed:
        print(
            f"oblique: {len(result.failed)} runs failed (see their {ERROR_FILE}); run the command again to retry them",
            file=sys.stderr,
        )
        return 1
    return 0


def _executor(args: argparse.Namespace, opts: dict):
    """The executor of ``--executor`` (Ray imported only for ``ray``), its flags checked."""
    ray_options = {k: getattr(args, k, None) for k in ("address", "cpus_per_run", "gpus_per_run")}
    kind = getattr(args, "executor", None) or "local"
    if kind == "ray":
        ray_options["echo"] = lambda line: print(line, file=sys.stderr)
    return executor_for(opts["workers"], kind, **ray_options)


def _figures(root: Path, bench: str | None, per_layer: bool) -> list[Path]:
    try:
        from analysis import write_figures  # the CLI face may import analysis, lazily (docs/ARCHITECTURE.md)
    except ImportError as e:  # pragma: no cover - analysis ships in the same distribution
        print(f"oblique: figures not written: the analysis package cannot be imported ({e})", file=sys.stderr)
        return []
    paths = write_figures(root, bench=bench, per_layer=per_layer, echo=print)
    print(f"figures: {root / 'figures'} ({len(paths)} files)")
    return paths


def setup_plot(p: argparse.ArgumentParser) -> None:
    """The ``oblique plot`` flags."""
    p.add_argument("study_dir", metavar="STUDY_DIR", help="a study folder written by 'oblique study'")
    p.add_argument("--bench", help="bench records (file or folder) for the cost figure")
    p.add_argument("--per-layer", action="store_true", help="also draw the drift of every layer")


def cmd_plot(args: argparse.Namespace) -> int:
    """``oblique plot STUDY_DIR``: write the tables (``results.csv``, ``summary.md``) again from the runs on
    disk, and the figures and tables into ``STUDY_DIR/figures``. Every input is read before anything is
    written; a run whose records are unreadable is left out with a one-line warning."""
    study = load_study(args.study_dir)  # a folder that holds no study: one line
    if args.bench is not None:
        from oblique.cost import read_bench

        read_bench(args.bench)  # missing or unreadable bench records: one line, before any figure
    _warn_unreadable_runs(study)
    collect(study)  # a garbage results.csv (or summary.md) is replaced by the tables of the runs on disk
    _figures(Path(args.study_dir), args.bench, args.per_layer)
    return 0


def _warn_unreadable_runs(study) -> None:
    """One :class:`oblique.records.RecordWarning` line per run whose records say it ended but cannot be
    read (a summary of the wrong shape, a corrupt metrics.jsonl): the tables and figures leave it out."""
    import warnings

    for name in study.runs:
        d = study.run_dir(name)
        if not (d / records.SUMMARY).exists():
            continue
        try:
            ended = records.read_summary(d)["status"] in records.FINISHED
        except storage.RecordError as e:
            why = str(e)
        else:
            if not ended or records.is_finished(d):
                continue
            why = f"{d / records.METRICS}: corrupt or incomplete"
        note = f"{why}; run {name} is left out (run the study again to redo it)"
        warnings.warn(records.RecordWarning(note), stacklevel=2)
