"""``oblique presets``: the published settings by name, each with its source; ``oblique presets NAME`` prints
one, resolved, as a TOML run config to copy into ``oblique run --config FILE`` (reading it back gives the
same resolved config)."""

from __future__ import annotations

import argparse
import json
import math
import textwrap
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from oblique.config import RunConfig, run_config_from
from oblique.errors import UsageError
from oblique.presets import PRESETS, get_preset

__all__ = ["cmd_presets", "preset_toml", "setup_presets", "toml_text"]

_WIDTH = 100


def setup_presets(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="print this preset's settings, resolved, as a TOML run config for --config",
    )


def cmd_presets(args: argparse.Namespace) -> int:
    if args.name is not None:
        print(preset_toml(args.name), end="")
        return 0
    width = max(len(name) for name in PRESETS)
    for p in PRESETS.values():
        print(f"{p.name:<{width}}  {p.settings['model']} on {p.settings['dataset']}: {p.summary}")
        for line in textwrap.wrap(f"source: {p.source}", _WIDTH - width - 2, break_on_hyphens=False):
            print(" " * (width + 2) + line)
    print(
        "\n'oblique presets NAME' prints one as a TOML run config; 'oblique run --preset NAME' (or 'oblique study "
        "--preset NAME') runs it, a config file and the flags over it."
    )
    return 0


def preset_toml(name: str) -> str:
    """Preset ``name``, resolved (the model's recipe filled in), as a TOML run config with its source as
    comments: its data set, model, every recipe setting and its data options.

    Raises:
        UsageError: an unknown preset (the message lists the valid ones).
    """
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r:.80}; valid: {', '.join(PRESETS)}")
    preset = get_preset(name)
    cfg = run_config_from({"preset": name}, source=f"preset {name}").resolved()
    recipe = {f.name for f in fields(RunConfig) if f.default is None and getattr(cfg, f.name) is not None}
    keys = {"dataset", "model", *recipe, *preset.settings}  # recipe: the preset's name and the recipe's
    settings = {f.name: getattr(cfg, f.name) for f in fields(RunConfig) if f.name in keys}
    head = [f"oblique presets {name}: {preset.summary}", f"source: {preset.source}"]
    if preset.notes:
        head.append(f"notes: {preset.notes}")
    head.append("the method, its strength and the seed are yours: --method, --strength, --seed")
    comments = [
        f"# {line}" for text in head for line in textwrap.wrap(text, _WIDTH - 2, break_on_hyphens=False)
    ]
    return "\n".join(comments) + "\n" + toml_text(settings)


def toml_text(settings: Mapping[str, Any]) -> str:
    """Run settings as TOML: plain values first, then each table (``data_options``, ``hp``) as ``[NAME]``.

    >>> print(toml_text({"lr": 0.1, "milestones": [100, 150], "data_options": {"augment": True}}), end="")
    lr = 0.1
    milestones = [100, 150]
    <BLANKLINE>
    [data_options]
    augment = true
    """
    plain = [
        f"{k} = {_toml_value(v)}" for k, v in settings.items() if v is not None and not isinstance(v, dict)
    ]
    tables = [
        "\n".join([f"\n[{k}]", *(f"{_toml_key(n)} = {_toml_value(x)}" for n, x in v.items())])
        for k, v in settings.items()
        if isinstance(v, dict) and v
    ]
    return "\n".join(plain + tables) + "\n"


def _toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "_-" for c in key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else f"{value:+}")
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")
