"""``oblique targets MODEL``: the census of a registered model — every weight-bearing parameter, its layer
kind, shape and filter layout, and whether ``--targets`` / ``--exclude`` target it or why not
(:func:`oblique.layers.census`)."""

from __future__ import annotations

import argparse

from oblique.config import RUN_OPTIONS
from oblique.layers import census, parse_targets

__all__ = ["cmd_targets", "setup_targets"]


def setup_targets(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="a registered model name (see 'oblique run --help')")
    p.add_argument("--targets", default="conv", help=RUN_OPTIONS["targets"].help)
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB", help=RUN_OPTIONS["exclude"].help)


def cmd_targets(args: argparse.Namespace) -> int:
    from oblique.models import get_model, input_shape

    targets = parse_targets(args.targets)
    model = get_model(args.model, num_classes=10, in_channels=input_shape(args.model)[0])
    rows = census(model, targets, args.exclude)
    table = [
        (r.name or "(the model)", r.kind or "-", "x".join(map(str, r.shape)), r.layout or "-", r.why)
        for r in rows
    ]
    heads = ("parameter", "kind", "shape", "filters", "targeted?")
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(heads)]
    for row in (heads, *table):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    n = sum(r.targeted for r in rows)
    print(f"\n{args.model} with targets={targets}: {n} of {len(rows)} weight-bearing parameters targeted")
    return 0
