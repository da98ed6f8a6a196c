"""``oblique study`` and ``oblique plot``: the grid from a study file and flags, the run, the figures.

The only module of the library that imports :mod:`analysis` (lazily, for the figures).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from oblique import records
from oblique.cli.parsing import parse_csv, parse_grid, parse_seeds
from oblique.cli.run import add_run_arguments, given_run_settings
from oblique.config import overlay, read_toml
from oblique.study import (
    ERROR_FILE,
    RESULTS_FILE,
    STUDY_KEYS,
    StudySpec,
    expand,
    load_study,
    run_study,
    spec_from_tables,
    summary_markdown,
)

__all__ = ["cmd_plot", "cmd_study", "setup_plot", "setup_study", "spec_from_args"]


def setup_study(p: argparse.ArgumentParser) -> None:
    """The ``oblique study`` flags."""
    p.add_argument("--config", help="TOML study file: [study] methods/strengths/seeds/batch_sizes/workers/out, "
                   "[run] fixed run settings, [grid] NAME = [values]; flags override it")  # fmt: skip
    p.add_argument("--methods", help="comma-separated method names, or 'all' (default: all)")
    p.add_argument(
        "--strengths", type=parse_csv(float, "numbers"), help="λ values; default: each method's own"
    )
    p.add_argument("--seeds", type=parse_seeds, help="N (seeds 0..N-1) or a comma list; default 3")
    p.add_argument(
        "--batch-sizes", dest="batch_sizes", type=parse_csv(int, "integers"), help="batch sizes; default 100"
    )
    p.add_argument("--grid", type=parse_grid, action="append", metavar="NAME=V1,V2",
                   help="any other run setting (or hp.NAME) as a grid axis; repeatable")  # fmt: skip
    p.add_argument("--workers", type=int, help="worker processes (0: this process); default 2")
    p.add_argument("--out", help="study folder; default studies/default")
    p.add_argument("--overwrite", action="store_true", help="delete the study folder's runs and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-figures", action="store_true", help="do not write the figures")
    add_run_arguments(
        p,
        exclude=("--method", "--strength", "--seed", "--batch-size", "--out", "--overwrite", "--no-progress"),
    )


def spec_from_args(args: argparse.Namespace) -> tuple[StudySpec, dict]:
    """The :class:`StudySpec` and the study options (workers, out): the study file's tables with the
    flags laid over them, read by :func:`oblique.study.spec_from_tables`."""
    tables: dict[str, Any] = read_toml(args.config) if getattr(args, "config", None) else {}
    tables = dict(tables)
    study_t = dict(tables.get("study", {}))
    study_t.update({k: getattr(args, k) for k in STUDY_KEYS if getattr(args, k, None) is not None})
    grid_t = dict(tables.get("grid", {}))
    grid_t.update(dict(getattr(args, "grid", None) or []))
    tables.update(study=study_t, grid=grid_t, run=overlay(tables.get("run", {}), given_run_settings(args)))
    return spec_from_tables(tables, source=str(getattr(args, "config", None) or "command line"))


def cmd_study(args: argparse.Namespace) -> int:
    """``oblique study``: run the grid, print the summary table, write the figures."""
    spec, opts = spec_from_args(args)
    runs = expand(spec)  # every run validated before anything is written
    t0 = time.perf_counter()

    def _terminate(signum, frame):  # SIGTERM (kill, a batch scheduler) stops the study as Ctrl-C does
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, _terminate)
    try:
        result = run_study(opts["out"], runs, workers=opts["workers"], threads=spec.base.get("threads"),
                           overwrite=args.overwrite, progress=not args.no_progress)  # fmt: skip
    finally:
        signal.signal(signal.SIGTERM, old_term)
    study = result.study
    done = sum(records.is_finished(study.run_dir(n)) for n in study.runs)
    if result.interrupted:
        print(f"oblique: study interrupted: {done} of {len(study.runs)} runs finished and kept in {study.root}; "
              "run the same command again to finish it", file=sys.stderr)  # fmt: skip
        return 130
    print(summary_markdown(study))
    print(f"{len(result.ran)} runs trained, {done} of {len(study.runs)} finished, in {time.perf_counter() - t0:.0f} s; "
          f"results: {study.root / RESULTS_FILE}")  # fmt: skip
    if not args.no_figures:
        _figures(study.root, None, False)
    if result.failed:
        print(f"oblique: {len(result.failed)} runs failed (see their {ERROR_FILE}); run the command again to retry them",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _figures(root: Path, bench: str | None, per_layer: bool) -> list[Path]:
    try:
        from analysis import write_figures  # the CLI face may import analysis, lazily (DESIGN.md)
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
    """``oblique plot STUDY_DIR``: write the figures and tables into ``STUDY_DIR/figures``."""
    load_study(args.study_dir)  # a folder that holds no study: one line
    _figures(Path(args.study_dir), args.bench, args.per_layer)
    return 0
