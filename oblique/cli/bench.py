"""``oblique bench``: its flags, and the command that benches, prints the table and writes the records.

The bench itself is the library's (:mod:`oblique.cost`): the flags become a
:class:`~oblique.cost.BenchConfig`, whose errors name the setting (``rounds``); :func:`oblique.cli.main`
prints them with the flag (``--rounds``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from oblique.cost import SWEEPS, BenchConfig, BenchError, bench, format_table, run_sweep, write_csv
from oblique.storage import write_json_atomic

__all__ = ["bench_config_from_args", "check_target", "cmd_bench", "setup_bench"]


def setup_bench(p: argparse.ArgumentParser) -> None:
    """The ``oblique bench`` flags."""
    p.add_argument("--model", default="resnet110", help="model name (see oblique.models); default resnet110")
    p.add_argument("--batch-size", type=int, default=32, help="synthetic batch size; default 32")
    p.add_argument("--methods", default="all", help="all, or comma-separated method names; default all")
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu, cuda, cuda:N or auto; default cpu (a --sweep resumed reuses the records made on the same "
        "device type and card, whatever was asked)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="timed rounds, interleaved across methods; default: as many as fit in --time-budget",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=420.0,
        help="seconds for set-up, warm-up and the timed rounds when --rounds is not given; default 420",
    )
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up rounds; default 2")
    p.add_argument(
        "--micro-repeats", type=int, default=40, help="repeats of the isolated measurements; default 40"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads; default torch's")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the models, the batch and the order; default 0"
    )
    p.add_argument("--num-classes", type=int, default=10, help="classifier outputs; default 10")
    p.add_argument("--json", help="write the record to this JSON file")
    p.add_argument("--csv", help="write one row per method to this CSV file")
    p.add_argument("--sweep", choices=tuple(SWEEPS), help="width: WRN-28-1…10; depth: ResNet-20…110")
    p.add_argument(
        "--out", default="bench", help="sweep folder (a JSON per model and bench.csv); default bench"
    )
    p.add_argument("--no-targets", action="store_true", help="skip the target measurements")
    p.add_argument("--no-progress", action="store_true", help="no progress on stderr")


def bench_config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The bench settings of the parsed flags (for a sweep, ``--model`` is left out: the sweep names the
    models).

    Raises:
        oblique.cost.BenchError: a bad setting (the message names it).
    """
    return BenchConfig(
        model=SWEEPS[args.sweep][0] if args.sweep else args.model,
        methods=args.methods,
        batch_size=args.batch_size,
        device=args.device,
        rounds=args.rounds,
        warmup=args.warmup,
        micro_repeats=args.micro_repeats,
        threads=args.threads,
        seed=args.seed,
        num_classes=args.num_classes,
        targets=not args.no_targets,
        progress=not args.no_progress,
        time_budget_s=args.time_budget,
    )


def check_target(path: str, setting: str, folder: bool = False) -> None:
    """Refuse, before the bench runs (minutes), an output the bench could not write at its end: an empty
    name, a folder where a file is asked for (or a file where a folder is), a folder that cannot be made or
    written. The target's folder is created, as writing it would.

    Raises:
        BenchError: naming the setting (rendered as its flag) and the file.
    """
    if not path.strip() or "\0" in path:
        raise BenchError(
            f"{setting} must be a {'folder' if folder else 'file'} name; got {path!r}", settings=(setting,)
        )
    p = Path(path)
    if folder and p.exists() and not p.is_dir():
        raise BenchError(
            f"{setting} {p} exists and is not a folder; choose another {setting}", settings=(setting,)
        )
    if not folder and p.is_dir():
        raise BenchError(f"{setting} {p} is a folder; give a file name in it", settings=(setting,))
    where = p if folder else p.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as e:
        raise BenchError(
            f"{setting} {p} cannot be written (folder {where}: {e.strerror or e})", settings=(setting,)
        ) from None


def cmd_bench(args: argparse.Namespace) -> int:
    """``oblique bench``: print the table (and the target lines); write JSON/CSV if asked."""
    config = bench_config_from_args(args)
    if args.sweep:
        check_target(args.out, "out", folder=True)
        recs = run_sweep(args.sweep, args.out, config=config)
        for rec in recs:
            print(format_table(rec))
            print()
        print(f"wrote {len(recs)} records and {Path(args.out) / 'bench.csv'}")
        return 0
    for setting in ("json", "csv"):
        if getattr(args, setting) is not None:
            check_target(getattr(args, setting), setting)
    record = bench(config)
    print(format_table(record))
    if args.json:
        write_json_atomic(args.json, record)
    if args.csv:
        write_csv([record], args.csv)
    return 0
