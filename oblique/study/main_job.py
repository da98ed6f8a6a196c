"""The main job: the grids ``oblique study`` runs when it is given no grid, planned into one study folder.

The main job tests each of the Norm Loss poster's claims (Georgiou et al., ICPR 2020; the claims section of
``summary.md``, :mod:`oblique.study.claims`) on the embedded MNIST-1D default, in about 10 minutes on
2 cores. It is three grids, merged into one study folder (a study folder is a *set* of runs, so a run two
grids share — Norm Loss at λ = 0.01, batch 100 — is trained once):

1. **every method** at its default strength, batch 100, seeds 0–2 (three runs per method): the side-by-side
   table, the drift curves, claim 1 (comparable error) and claim 3 (convergence, Norm Loss against weight
   decay);
2. **the regularization factor**: Norm Loss and weight decay at λ ∈ :data:`STRENGTHS` (five values,
   four decades, 1e-4 … 1), batch 100, seeds 0–2 (27 new runs): claim 4;
3. **the batch size**: Norm Loss and weight decay at their default strengths, batch ∈ :data:`BATCH_SIZES`,
   seeds 0–2 (18 new runs): claim 5.

Claim 2 (cost) is not a grid: after the runs, :func:`oblique.study.bench.bench_study` times one training
step of every method in the study process alone (``bench.json`` in the study folder).

Choices, where the poster is silent or our budget rules: every run keeps the model's standard recipe
(15 epochs of SGD + Nesterov, lr 0.1, cosine) — the batch-size grid keeps the epochs and the learning rate
fixed, so a larger batch takes fewer steps, as in the poster's setting of fixed epochs; three seeds are the
fewest that give a standard deviation and a band (and a Welch test with some power); the strength grid
spans four decades around both defaults (the poster's own axis, 1e-2 … 5e-1, lies inside it).

>>> from oblique.methods import list_methods
>>> grids = main_job()
>>> grids[0].methods == list_methods(), [s.methods for s in grids[1:]]
(True, [['nl', 'wd'], ['nl', 'wd']])
>>> STRENGTHS, BATCH_SIZES
([0.0001, 0.001, 0.01, 0.1, 1.0], [50, 100, 200, 400])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from oblique.study.spec import PlannedRun, StudyError, StudySpec, expand

__all__ = ["BATCH_SIZES", "SEEDS", "STRENGTHS", "expand_all", "main_job"]

#: λ of the strength grid (Norm Loss and weight decay): four decades, the poster's 1e-2 … 5e-1 inside.
STRENGTHS = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
#: batch sizes of the batch-size grid (Norm Loss and weight decay); 100 is the MNIST-1D recipe's.
BATCH_SIZES = [50, 100, 200, 400]
#: seeds of every grid.
SEEDS = [0, 1, 2]
#: the two methods the poster compares (its figures: Norm Loss against weight decay).
PAIR = ["nl", "wd"]


def main_job(base: Mapping[str, Any] | None = None) -> list[StudySpec]:
    """The main job's three grids (module docstring), each with the fixed run settings ``base``.

    Args:
        base: run settings every run shares (``RunConfig`` fields: ``epochs``, ``device``, …), as
            :class:`StudySpec`'s ``base``.
    """
    from oblique.methods import list_methods

    base = dict(base or {})
    return [
        StudySpec(methods=list_methods(), seeds=list(SEEDS), base=dict(base)),
        StudySpec(methods=list(PAIR), strengths=list(STRENGTHS), seeds=list(SEEDS), base=dict(base)),
        StudySpec(methods=list(PAIR), batch_sizes=list(BATCH_SIZES), seeds=list(SEEDS), base=dict(base)),
    ]


def expand_all(specs: Iterable[StudySpec]) -> list[PlannedRun]:
    """The runs of several grids, in order, each run once (a run two grids share is planned once).

    Raises:
        StudyError: two grids plan a run of the same name with different settings.
        (and whatever :func:`oblique.study.expand` raises)
    """
    runs: dict[str, PlannedRun] = {}
    for spec in specs:
        for run in expand(spec):
            old = runs.get(run.name)
            if old is None:
                runs[run.name] = run
            elif old.settings != run.settings:
                raise StudyError(f"two grids plan run {run.name} with different settings")
    return list(runs.values())
