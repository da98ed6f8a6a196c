"""``oblique run`` and ``oblique methods``; the run flags, generated from :class:`oblique.config.RunConfig`.

Every RunConfig field is a flag (``batch_size`` → ``--batch-size``), with the help text of the field's
metadata and a parser chosen from its annotation (:func:`oblique.config.setting_kind`): a boolean that
defaults to False is a switch (``--overwrite``), one that defaults to True a ``--no-`` switch
(``--no-progress``), one that defaults to None takes a true/false word (the words of every true/false
value: :func:`oblique.options.parse_bool`). Flags not given are left out of the namespace, so config-file
values and RunConfig defaults apply. A bad value is refused with one line that names its flag (the
setting's declared valid values, :data:`oblique.config.RUN_OPTIONS`; a hyperparameter's: ``--hp NAME``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from oblique.cli.parsing import flag, parse_bool, parse_floats, parse_hp
from oblique.config import ConfigError, RunConfig, overlay, read_toml, run_config_from, setting_kind

__all__ = [
    "RUN_FLAGS",
    "add_run_arguments",
    "cmd_methods",
    "cmd_run",
    "run_config_from_args",
    "setup_methods",
    "setup_run",
]

_TYPES = {"int": int, "float": float, "floats": parse_floats, "str": str}


def _run_flags() -> list[tuple[str, str, dict]]:
    out = []
    for f in fields(RunConfig):
        kind, kw = setting_kind(f), {"help": f.metadata.get("help", "")}
        name = flag(f.name)
        if kind == "bool" and f.default is False:
            kw["action"] = "store_true"
        elif kind == "bool" and f.default is True:
            name, kw["action"] = "--no-" + name[2:], "store_false"
        elif kind == "bool":
            kw.update(type=parse_bool, metavar="BOOL")
        elif kind == "table":
            kw.update(type=parse_hp, action="append", metavar=f.metadata.get("metavar", "NAME=VALUE"))
        elif kind == "texts":  # repeatable: --exclude fc --exclude 'layer1.*'
            kw.update(type=str, action="append", metavar=f.metadata.get("metavar", "TEXT"))
        else:
            kw["type"] = _TYPES[kind]
        out.append((name, f.name, kw))
    return out


#: The ``oblique run`` flags: (flag, RunConfig field, argparse kwargs), one per RunConfig field.
RUN_FLAGS: list[tuple[str, str, dict]] = _run_flags()


def add_run_arguments(parser: argparse.ArgumentParser, exclude: Sequence[str] = ()) -> None:
    """Add the ``oblique run`` flags (except ``exclude``) to ``parser``, all defaulting to 'not given'."""
    for name, dest, kw in RUN_FLAGS:
        if name not in exclude:
            parser.add_argument(name, dest=dest, default=argparse.SUPPRESS, **kw)


def given_run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run settings given as flags (RunConfig field → value)."""
    return {dest: getattr(args, dest) for _, dest, _ in RUN_FLAGS if hasattr(args, dest)}


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    """RunConfig defaults, overridden by ``--config FILE``, overridden by the flags given."""
    values = read_toml(args.config) if getattr(args, "config", None) else {}
    values = overlay(values, given_run_settings(args))
    return run_config_from(values, source=str(getattr(args, "config", None) or "command line"))


def setup_run(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    p.add_argument("--config", help="TOML file of run settings (flags override it)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the killed or interrupted run in RUN_DIR from its last checkpoint, with the "
        "settings of its config.json (a flag that contradicts them is refused)",
    )


def cmd_run(args: argparse.Namespace) -> int:
    from oblique.train import RESUME_OVERRIDES, resume, train

    if args.resume is not None:
        given = _settings_given(args)
        _refuse_contradictions(Path(args.resume), given)
        summary = resume(args.resume, **{k: given[k] for k in RESUME_OVERRIDES if k in given})
        out = Path(args.resume)
    else:
        cfg = run_config_from_args(args)
        summary = train(cfg)
        out = cfg.resolved_out()
    if summary.get("rank", 0) != 0:  # another rank of a torchrun: rank 0 reports
        return 0 if summary["status"] == "ok" else 1
    return _report(out, summary)


def _settings_given(args: argparse.Namespace) -> dict[str, Any]:
    values = read_toml(args.config) if getattr(args, "config", None) else {}
    return {k.replace("-", "_"): v for k, v in overlay(values, given_run_settings(args)).items()}


def _refuse_contradictions(run_dir: Path, given: dict[str, Any]) -> None:
    """A setting given with ``--resume`` must agree with the run's recorded one, but for how the run
    executes (:data:`oblique.train.RESUME_OVERRIDES`)."""
    from oblique.records import CONFIG, read_config
    from oblique.train import RESUME_OVERRIDES

    if not given.keys() - set(RESUME_OVERRIDES) or not (run_dir / CONFIG).is_file():
        return  # nothing to compare (train.resume says what is missing)
    recorded = read_config(run_dir)
    if not isinstance(recorded, dict):
        return
    fields_ = set(RunConfig.field_names())
    mine = run_config_from({k: v for k, v in recorded.items() if k in fields_}, source=str(run_dir / CONFIG))
    theirs = run_config_from(overlay(asdict(mine), given), source="command line")
    mine, theirs = mine.resolved(), theirs.resolved()
    for key in sorted(given.keys() - set(RESUME_OVERRIDES)):
        a, b = getattr(mine, key), getattr(theirs, key)
        if key == "hp":
            a, b = mine.checked_method().hp, theirs.checked_method().hp
        if a != b:
            raise ConfigError(
                f"{key} {b!r} contradicts the run's recorded {key} {a!r} ({run_dir / CONFIG}); resume continues "
                "a run with its own settings: leave the setting out",
                settings=(key,),
            )


def _report(out: Path, summary: dict) -> int:
    """The one line ``oblique run`` prints about a finished run; exit status 1 when it diverged."""
    from oblique.methods import get_method_class

    d = summary["drift"]["mean"]
    if summary["status"] == "diverged":
        print(f"{out}: diverged at step {summary['diverged_step']} (non-finite loss)")
        return 1
    lam = f" λ={summary['strength']:g}" if get_method_class(summary["method"]).uses_strength else ""
    print(
        f"{out}: {summary['method']}{lam} test error {summary['test_error']:.2f} % "
        f"(top-5 {summary['test_error_top5']:.2f} %), norm_dev_mean {d['norm_dev_mean']:.3g}, "
        f"offdiag_dev {d['offdiag_dev']:.3g}, {summary['train_time_s']:.1f} s "
        f"(regularizer {summary['regularizer_time_s']:.2f} s)"
    )
    return 0


def setup_methods(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="also describe every hyperparameter")
    p.add_argument(
        "--markdown",
        action="store_true",
        help="print the README's methods table instead (kind, paper, formula, what oblique does differently)",
    )


def cmd_methods(args: argparse.Namespace) -> int:
    from oblique.methods import REGISTRY, markdown_table

    if args.markdown:
        print(markdown_table(), end="")
        return 0
    rows = []
    for name, cls in REGISTRY.items():
        hps = [f"strength={cls.default_strength:g}"] if cls.uses_strength else []
        hps += [
            f"{h.name}={h.default:.6g}" if isinstance(h.default, float) else f"{h.name}={h.default}"
            for h in cls.hyperparameters
        ]
        rows.append((name, cls.kind, ", ".join(hps) or "—", cls.summary))
    w0, w1, w2 = (max(len(r[i]) for r in rows) for i in range(3))
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
