"""The ``oblique`` command: ``run``, ``methods`` (and the commands later modules add).

User errors (an unknown name, a bad value, an unreadable config, a finished run in the way, a missing data
folder) print one line ``oblique: error: …`` on stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from oblique.cost import cmd_bench, setup_bench
from oblique.study import cmd_plot, cmd_study, setup_plot, setup_study
from oblique.train import ConfigError, RunConfig

__all__ = ["UsageError", "add_run_arguments", "main", "run_config_from_args"]


class UsageError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the message names the valid choices) and exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _int_list_or_float(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _hp(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


#: The ``oblique run`` flags: (flag, RunConfig field, argparse kwargs). Flags not given on the command line
#: are left out of the namespace (default SUPPRESS), so config-file values and RunConfig defaults apply.
RUN_FLAGS: list[tuple[str, str, dict]] = [
    ("--method", "method", dict(help="method name (see 'oblique methods'); default nl")),
    ("--strength", "strength", dict(type=float, help="regularization factor λ; default: the method's own")),
    (
        "--targets",
        "targets",
        dict(help="which weights the method acts on: conv or conv+linear; default conv"),
    ),
    (
        "--hp",
        "hp",
        dict(type=_hp, action="append", metavar="NAME=VALUE", help="a method hyperparameter; repeatable"),
    ),
    ("--model", "model", dict(help="model name; default resnet1d")),
    ("--dataset", "dataset", dict(help="dataset name; default mnist1d")),
    ("--data-root", "data_root", dict(help="folder holding on-disk data sets (CIFAR, ImageNet)")),
    ("--optimizer", "optimizer", dict(help="sgd or adam; default: the model's recipe (oblique.recipes)")),
    ("--lr", "lr", dict(type=float, help="peak learning rate; default: the model's recipe")),
    ("--momentum", "momentum", dict(type=float, help="SGD momentum; default: the model's recipe")),
    (
        "--nesterov",
        "nesterov",
        dict(type=_bool, metavar="BOOL", help="Nesterov momentum; default: the model's recipe"),
    ),
    (
        "--weight-decay",
        "weight_decay",
        dict(type=float, help="optimizer L2 on untargeted parameters (never the targets); default 0"),
    ),
    ("--schedule", "schedule", dict(help="constant, multistep or cosine; default: the model's recipe")),
    ("--milestones", "milestones", dict(type=_int_list_or_float, help="multistep epochs, comma-separated")),
    ("--gamma", "gamma", dict(type=float, help="multistep factor; default: the model's recipe")),
    (
        "--warmup-epochs",
        "warmup_epochs",
        dict(type=float, help="linear warm-up epochs; default: the model's recipe"),
    ),
    ("--epochs", "epochs", dict(type=int, help="epochs; default: the model's recipe (15 for resnet1d)")),
    (
        "--batch-size",
        "batch_size",
        dict(type=int, help="batch size; default: the model's recipe (100 for resnet1d)"),
    ),
    ("--seed", "seed", dict(type=int, help="random seed; default 0")),
    ("--device", "device", dict(help="auto, cpu, cuda or cuda:N; default auto")),
    ("--threads", "threads", dict(type=int, help="torch CPU threads; default torch's")),
    ("--drift-every", "drift_every", dict(type=int, help="record drift every N steps; default 20")),
    ("--eval-every", "eval_every", dict(type=int, help="test error every N epochs; default 1")),
    ("--out", "out", dict(help="run folder; default runs/METHOD-MODEL-DATASET-seedSEED")),
]


def add_run_arguments(parser: argparse.ArgumentParser, exclude: Sequence[str] = ()) -> None:
    """Add the ``oblique run`` flags (except ``exclude``) to ``parser``, all defaulting to 'not given'."""
    for flag, dest, kw in RUN_FLAGS:
        if flag not in exclude:
            parser.add_argument(flag, dest=dest, default=argparse.SUPPRESS, **kw)


def read_toml(path: str | Path) -> dict:
    """Read a TOML config file; raise :class:`UsageError` with one line if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"config file {path} cannot be read: {e}") from None


def run_config_from(values: Mapping[str, Any], source: str = "config") -> RunConfig:
    """A :class:`RunConfig` from a mapping of its fields (``-`` or ``_`` in keys; ``[hp]`` a table)."""
    valid = RunConfig.field_names()
    kw: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in valid:
            raise UsageError(f"{source}: unknown setting {key!r}; valid: {', '.join(valid)}")
        kw[name] = value
    if "hp" in kw:
        hp = kw["hp"]
        if isinstance(hp, list):  # --hp k=v pairs
            hp = dict(hp)
        if not isinstance(hp, dict):
            raise UsageError(f"{source}: 'hp' must be a table of NAME = VALUE; got {hp!r}")
        kw["hp"] = hp
    try:
        return RunConfig(**kw)
    except TypeError as e:
        raise UsageError(f"{source}: {e}") from None


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    """RunConfig defaults, overridden by ``--config FILE``, overridden by the flags given."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(read_toml(args.config))
    given = {dest: getattr(args, dest) for _, dest, _ in RUN_FLAGS if hasattr(args, dest)}
    if "hp" in given and isinstance(values.get("hp"), dict):
        given["hp"] = {**values["hp"], **dict(given["hp"])}
    values.update(given)
    if getattr(args, "overwrite", False):
        values["overwrite"] = True
    if getattr(args, "no_progress", False):
        values["progress"] = False
    return run_config_from(values, source=str(getattr(args, "config", None) or "command line"))


# --------------------------------------------------------------------------- commands
def cmd_run(args: argparse.Namespace) -> int:
    from oblique.train import train

    cfg = run_config_from_args(args)
    summary = train(cfg)
    d = summary["drift"]["mean"]
    if summary["status"] == "diverged":
        print(f"{cfg.resolved_out()}: diverged at step {summary['diverged_step']} (non-finite loss)")
        return 1
    from oblique.methods import get_method_class

    lam = f" λ={summary['strength']:g}" if get_method_class(summary["method"]).uses_strength else ""
    print(
        f"{cfg.resolved_out()}: {summary['method']}{lam} test error {summary['test_error']:.2f} % "
        f"(top-5 {summary['test_error_top5']:.2f} %), norm_dev_mean {d['norm_dev_mean']:.3g}, "
        f"offdiag_dev {d['offdiag_dev']:.3g}, {summary['train_time_s']:.1f} s "
        f"(regularizer {summary['regularizer_time_s']:.2f} s)"
    )
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from oblique.methods import REGISTRY

    rows = []
    for name, cls in REGISTRY.items():
        hps = [f"strength={cls.default_strength:g}"] if cls.uses_strength else []
        hps += [
            f"{h.name}={h.default:.6g}" if isinstance(h.default, float) else f"{h.name}={h.default}"
            for h in cls.hyperparameters
        ]
        rows.append((name, cls.kind, ", ".join(hps) or "—", cls.summary))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    print(f"{'method':<{w0}}  {'kind':<{w1}}  {'hyperparameters (defaults)':<{w2}}  description")
    for r in rows:
        print(f"{r[0]:<{w0}}  {r[1]:<{w1}}  {r[2]:<{w2}}  {r[3]}")
    if args.verbose:
        print()
        for name, cls in REGISTRY.items():
            for h in cls.hyperparameters:
                extra = f" (one of {', '.join(map(str, h.choices))})" if h.choices else ""
                print(f"{name}.{h.name} = {h.default!r}: {h.help}{extra}")
    return 0


#: name -> (setup(parser), handler(args) -> exit code). Later modules add commands here.
COMMANDS: dict[
    str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]
] = {}


def _setup_run(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    p.add_argument("--config", help="TOML file of run settings (flags override it)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _setup_methods(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="also describe every hyperparameter")


COMMANDS["run"] = (_setup_run, cmd_run, "train one network with one method; write a run folder")
COMMANDS["methods"] = (_setup_methods, cmd_methods, "list every method with its kind and hyperparameters")
COMMANDS["study"] = (
    setup_study,
    cmd_study,
    "run a grid of runs (methods x strengths x seeds x ...) side by side",
)
COMMANDS["plot"] = (setup_plot, cmd_plot, "write the figures and tables of a study folder")
COMMANDS["bench"] = (
    setup_bench,
    cmd_bench,
    "time one training step of every method side by side (interleaved)",
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="oblique", description="Norm Loss and every other way onto the oblique manifold.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (setup, _, help_) in COMMANDS.items():
        setup(sub.add_parser(name, help=help_, description=help_))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``oblique`` command; returns the exit status."""
    from oblique.data import DataError, UnknownDatasetError
    from oblique.methods import UnknownMethodError
    from oblique.models import UnknownModelError
    from oblique.records import RecordError

    user_errors = (
        UsageError,
        ConfigError,
        DataError,
        UnknownDatasetError,
        UnknownMethodError,
        UnknownModelError,
        RecordError,
    )
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 2
        return COMMANDS[args.command][1](args)
    except user_errors as e:
        print(f"oblique: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a folder that cannot be written, a full disk: say which file and why
        where = f"{e.filename}: " if e.filename else ""
        print(f"oblique: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("oblique: interrupted; finished results are on disk", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
