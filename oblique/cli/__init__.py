"""The ``oblique`` command: ``run``, ``methods``, ``presets``, ``study``, ``plot``, ``bench``, ``export``.

The command line is a face on the library: it imports the library and is never imported by it. Each
command lives in a module of its own (:mod:`oblique.cli.run`, :mod:`oblique.cli.presets`,
:mod:`oblique.cli.study`, :mod:`oblique.cli.bench`, :mod:`oblique.cli.export`); this module builds the
parser and runs the command.

User errors (every :class:`oblique.errors.ObliqueError`: an unknown name, a bad value, an unreadable
config, a finished run in the way, a missing data folder) print one line ``oblique: error: …`` on stderr,
with the library's setting names rendered as flags (``lr`` → ``--lr``), and exit with status 2, without a
traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import unicodedata
import warnings
from collections.abc import Callable, Sequence

from oblique.cli.bench import cmd_bench, setup_bench
from oblique.cli.export import cmd_export, setup_export
from oblique.cli.parsing import Parser, flag
from oblique.cli.presets import cmd_presets, setup_presets
from oblique.cli.run import (
    RUN_FLAGS,
    add_run_arguments,
    cmd_methods,
    cmd_run,
    run_config_from_args,
    setup_methods,
    setup_run,
)
from oblique.cli.study import cmd_plot, cmd_study, setup_plot, setup_study
from oblique.cli.targets import cmd_targets, setup_targets
from oblique.config import read_toml, run_config_from
from oblique.errors import ObliqueError, ObliqueWarning, UsageError
from oblique.progress import log_every_seconds

__all__ = [
    "COMMANDS",
    "RUN_FLAGS",
    "UsageError",
    "add_run_arguments",
    "build_parser",
    "main",
    "read_toml",
    "run_config_from",
    "run_config_from_args",
]

#: name -> (setup(parser), handler(args) -> exit code, one-line help).
COMMANDS: dict[
    str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]
] = {
    "run": (setup_run, cmd_run, "train one network with one method; write a run folder"),
    "methods": (setup_methods, cmd_methods, "list every method with its kind and hyperparameters"),
    "presets": (setup_presets, cmd_presets, "list the published settings (--preset NAME) with their sources"),
    "study": (setup_study, cmd_study, "run a grid of runs (methods x strengths x seeds x ...) side by side"),
    "plot": (setup_plot, cmd_plot, "write the figures and tables of a study folder"),
    "bench": (setup_bench, cmd_bench, "time one training step of every method side by side (interleaved)"),
    "export": (setup_export, cmd_export, "run records as TensorBoard event files or a per-step CSV"),
    "targets": (
        setup_targets,
        cmd_targets,
        "list a model's weight-bearing parameters: targeted or not, and why",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    from oblique import __version__

    parser = Parser(prog="oblique", description="Norm Loss and every other way onto the oblique manifold.")
    parser.add_argument("--version", action="version", version=f"oblique {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    parser.commands = {}  # name -> its parser, so an unknown flag of a command is reported by that command
    for name, (setup, _, help_) in COMMANDS.items():
        parser.commands[name] = sub.add_parser(name, help=help_, description=help_)
        setup(parser.commands[name])
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, but an unknown flag after a command points to that command's ``--help``."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        where = getattr(parser, "commands", {}).get(getattr(args, "command", None), parser)
        where.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    """Project warnings (:class:`oblique.errors.ObliqueWarning`) as one line ``oblique: warning: …``."""
    if issubclass(category, ObliqueWarning):
        print(f"oblique: warning: {one_line(str(message))}", file=sys.stderr)
    else:
        _default(message, category, filename, lineno, file, line)


def one_line(text: str) -> str:
    """``text`` as one line of a terminal: line breaks and other control characters (which a file name or a
    flag given by the user may hold) escaped as Python writes them (``\\n``, ``\\x1e``).

    >>> one_line("unknown flag --a\\nb")
    'unknown flag --a\\\\nb'
    """
    return "".join(
        ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch
        for ch in text
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``oblique`` command; returns the exit status."""
    with warnings.catch_warnings():  # restores the caller's filters and showwarning afterwards
        warnings.simplefilter("always", ObliqueWarning)
        warnings.showwarning = _show_warning
        code = _main(argv)
    _leave_the_process_group(code)
    return code


def _leave_the_process_group(code: int) -> None:
    """Note [exit under torchrun]: a rank of a torchrun run that lets the interpreter tear down with gloo's
    process group alive (or even destroyed: DDP's reducer keeps its work objects) can abort in C++ at exit,
    "terminate called without an active exception" (SIGABRT; measured here in 2 to 4 of 8 runs of the
    DDP check, torch 2.13, before this), after every record is written: torchrun then reports the run
    failed. So a rank, its work done and its files closed, destroys the group, flushes its output and leaves
    with its exit status at once (``os._exit``), before the interpreter's finalization."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    try:
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - leaving anyway: a peer may already be gone
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _main(argv: Sequence[str] | None) -> int:
    try:
        parser = build_parser()
        args = _parse(parser, argv)
        if not args.command:
            parser.print_help()
            raise UsageError(f"no command given; one of {', '.join(COMMANDS)} (see 'oblique --help')")
        log_every_seconds()  # a bad $OBLIQUE_LOG_EVERY: one line, before any work
        return COMMANDS[args.command][1](args)
    except ObliqueError as e:
        print(f"oblique: error: {one_line(e.render(flag))}", file=sys.stderr)
        return 2
    except OSError as e:  # a folder that cannot be written, a full disk: say which file and why
        where = f"{e.filename}: " if e.filename else ""
        print(f"oblique: error: {one_line(f'{where}{e.strerror or e}')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        run_dir = getattr(e, "run_dir", None)
        if getattr(e, "rank", 0) != 0:  # another rank of a torchrun: rank 0 reports
            pass
        elif run_dir is not None:  # a run stopped by a signal, with its checkpoint written
            command = getattr(e, "resume", None) or f"oblique run --resume {run_dir}"
            print(
                f"oblique: interrupted; the run's checkpoint is in {run_dir}: continue it with '{command}'",
                file=sys.stderr,
            )
        else:
            print("oblique: interrupted; finished results are on disk", file=sys.stderr)
        return 128 + getattr(e, "signum", signal.SIGINT)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
