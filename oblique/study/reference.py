"""The reference setting of a study, and the one order of its methods.

A study may run each method at several strengths and batch sizes, and over other grid variables; the
claims (:mod:`oblique.study.claims`) and the figures that show one curve per method (:mod:`analysis`)
compare the methods at one *reference setting* (:func:`reference_runs`):

- the batch size is the model's standard one (its recipe's, :mod:`oblique.recipes`) when the study has
  it, else its most frequent one (:func:`reference_batch_size`);
- each method's strength is the one nearest (in log) to the method's default (:func:`reference_strength`;
  the middle one for a method without a default);
- any other grid variable takes its first value (:func:`at_first_extras`).

Methods appear in the registry's order (:func:`method_order`, after
:data:`oblique.methods.REGISTRY`) in every table, claim and figure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from oblique.study.folder import Study

__all__ = [
    "at_first_extras",
    "at_reference_strengths",
    "method_order",
    "reference_batch_size",
    "reference_runs",
    "reference_strength",
]


def method_order(methods: Iterable[str]) -> list[str]:
    """The distinct ``methods`` in the registry's order (:func:`oblique.methods.list_methods`); names the
    registry does not know come after, alphabetically.

    >>> method_order(["nl", "zz", "baseline", "nl"])
    ['baseline', 'nl', 'zz']
    """
    from oblique.methods import list_methods

    order = {m: i for i, m in enumerate(list_methods())}
    return sorted(set(methods), key=lambda m: (order.get(m, len(order)), m))


def _default_strength(method: str) -> float | None:
    from oblique.methods import REGISTRY

    cls = REGISTRY.get(method)
    return cls.default_strength if cls is not None and cls.uses_strength else None


def reference_batch_size(results) -> int | None:
    """The model's standard batch size (its recipe's) when the study has it, else its most frequent one."""
    from oblique.config import RunConfig

    if results.empty:
        return None
    sizes = results["batch_size"].value_counts()
    recipe = RunConfig(model=results["model"].iloc[0]).resolved().batch_size
    if recipe in sizes.index:
        return int(recipe)
    return int(sorted(sizes.index, key=lambda b: (-sizes[b], b))[0])


def reference_strength(method: str, strengths) -> float | None:
    """Of ``strengths``, the one nearest (in log) to the method's default; the middle one when it has
    none."""
    values = sorted(
        {float(s) for s in strengths if s is not None and not (isinstance(s, float) and math.isnan(s))}
    )
    if not values:
        return None
    default = _default_strength(method)
    if default is None or default <= 0:
        return values[len(values) // 2]
    return min(values, key=lambda s: abs(math.log(max(s, 1e-300)) - math.log(default)))


def _extras(study: Study) -> list[str]:
    return [k for k in study.grid_variables if k not in ("method", "strength", "batch_size", "seed")]


def at_first_extras(study: Study, results):
    """``results`` at the first value of every grid variable other than method, strength, batch size; a
    method the study ran without that value at its own first (an optimizer axis runs a Riemannian method
    only with the optimizers it takes: ``--optimizers muon,sgd`` runs ``oblique-rsgd`` with sgd alone)."""
    for key in _extras(study):
        if key in results and len(results):
            keep = results[key] == results[key].iloc[0]
            for method in results["method"].unique():
                mine = results["method"] == method
                if not (keep & mine).any():
                    keep |= mine & (results[key] == results.loc[mine, key].iloc[0])
            results = results[keep]
    return results


def at_reference_strengths(results):
    """Each method's rows at its reference strength (all its rows when it has no strength)."""
    import pandas as pd

    parts = []
    for method in method_order(results["method"]):
        r = results[results["method"] == method]
        if bool(r["strength_applies"].iloc[0]):
            r = r[r["strength"] == reference_strength(method, r["strength"])]
        parts.append(r)
    return pd.concat(parts) if parts else results


def reference_runs(study: Study, results, statuses: Sequence[str] = ("ok",)):
    """The runs of every method at its reference setting: the reference batch size, the strength nearest
    its default, the first value of any other grid variable; only those with ``statuses``.

    Args:
        study: the study.
        results: its :func:`oblique.study.results_frame`.
        statuses: the run statuses to keep.
    """
    res = results
    if res.empty:
        return res
    res = at_reference_strengths(at_first_extras(study, res[res["batch_size"] == reference_batch_size(res)]))
    return res[res["status"].isin(list(statuses))]
