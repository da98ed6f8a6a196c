"""``oblique export tensorboard|csv RUN_OR_STUDY``: run records in the formats the field's tools read.

The conversion is the library's (:mod:`oblique.export`, which reads the records only); this module is its
flags and what it prints. TensorBoard's writer is the optional extra ``oblique[tensorboard]``; without it
the command says so in one line (status 2). The CSV needs nothing.
"""

from __future__ import annotations

import argparse

from oblique.export import export_csv, export_tensorboard, find_runs

__all__ = ["FORMATS", "cmd_export", "setup_export"]

#: format -> what it writes, for the help
FORMATS = {
    "tensorboard": "event files, one folder per run (default RUN_OR_STUDY/tensorboard; needs oblique[tensorboard])",
    "csv": "one flat CSV, a row per step of every run (default RUN_OR_STUDY/steps.csv)",
}


def setup_export(p: argparse.ArgumentParser) -> None:
    """The ``oblique export`` arguments."""
    p.add_argument("format", choices=tuple(FORMATS), help="; ".join(f"{k}: {v}" for k, v in FORMATS.items()))
    p.add_argument(
        "path", metavar="RUN_OR_STUDY", help="a run folder, or a folder with runs under it (a study)"
    )
    p.add_argument("--out", help="where to write (a log folder for tensorboard, a file for csv)")


def cmd_export(args: argparse.Namespace) -> int:
    """``oblique export``: convert the records, print where they went."""
    runs = len(find_runs(args.path))
    if args.format == "csv":
        path = export_csv(args.path, args.out)
        print(f"csv: {runs} run{'s' * (runs != 1)} -> {path}")
    else:
        folders = export_tensorboard(args.path, args.out)
        logdir = folders[0] if len(folders) == 1 else folders[0].parent
        print(f"tensorboard: {runs} run{'s' * (runs != 1)} -> {logdir} (view: tensorboard --logdir {logdir})")
    return 0
