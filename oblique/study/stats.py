"""The statistics of the claims (:mod:`oblique.study.claims`), in plain Python: no SciPy.

Seeds are the samples: a group of runs that differ only in their seed gives one number per seed (test
error, mean train cross-entropy, …). Two groups are compared with **Welch's t-test** (unequal variances),
two-sided; several comparisons against one reference are corrected with **Holm's** step-down method. A
statistic that is not a mean (the spread of mean errors over strengths or batch sizes) gets a
**bootstrap** confidence interval, resampling the seeds within every group, with a fixed generator so
that the same study always gives the same interval.

Student's t distribution comes from the regularized incomplete beta function (continued fraction,
Numerical Recipes §6.4 / Lentz), accurate to about 1e-12; SciPy is not a dependency of ``oblique``
(``tests/test_study_claims.py`` checks these against ``scipy.stats`` where SciPy happens to be installed).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "Welch",
    "bootstrap_ci",
    "holm",
    "normal_sf",
    "student_t_ppf",
    "student_t_sf",
    "welch",
]


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function :math:`I_x(a, b)`."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom.

    .. math:: P(T > t) = \\tfrac12 I_{df/(df+t^2)}(df/2, 1/2) \\quad (t \\ge 0)

    >>> round(2 * student_t_sf(2.0, 10), 6)  # two-sided p of t = 2 with 10 degrees of freedom
    0.073388
    """
    if math.isnan(t) or math.isnan(df) or df <= 0:
        return float("nan")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def student_t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t (bisection on :func:`student_t_sf`).

    >>> round(student_t_ppf(0.975, 4), 4)
    2.7764
    """
    if not 0.0 < q < 1.0 or df <= 0:
        return float("nan")
    if q < 0.5:
        return -student_t_ppf(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while student_t_sf(hi, df) > 1.0 - q:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if student_t_sf(mid, df) > 1.0 - q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z.

    >>> round(normal_sf(1.959964), 4)
    0.025
    """
    return 0.5 * math.erfc(z / math.sqrt(2.0))


@dataclass(frozen=True)
class Welch:
    """Welch's t-test of ``mean(a) − mean(b)``: the difference, its standard error, Welch–Satterthwaite
    degrees of freedom, t, the two-sided p-value and the 95 % confidence interval of the difference."""

    diff: float
    se: float
    df: float
    t: float
    p: float
    ci_low: float
    ci_high: float
    n_a: int
    n_b: int


def _mean_var(x: Sequence[float]) -> tuple[float, float]:
    m = sum(x) / len(x)
    return m, sum((v - m) ** 2 for v in x) / (len(x) - 1)


def welch(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Welch | None:
    """Welch's two-sample t-test of ``a`` against ``b`` (two-sided); ``None`` when either has < 2 values.

    .. math:: t = \\frac{\\bar a - \\bar b}{\\sqrt{s_a^2/n_a + s_b^2/n_b}}, \\quad
              \\nu = \\frac{(s_a^2/n_a + s_b^2/n_b)^2}{\\frac{(s_a^2/n_a)^2}{n_a-1} + \\frac{(s_b^2/n_b)^2}{n_b-1}}

    Two groups without any spread: p = 1 if their means are equal, else 0.

    >>> w = welch([3.1, 3.2, 3.0], [2.9, 2.8, 2.85])
    >>> round(w.diff, 3), round(w.t, 3), round(w.df, 2), round(w.p, 4)
    (0.25, 3.873, 2.94, 0.0316)
    """
    a = [float(v) for v in a if not math.isnan(float(v))]
    b = [float(v) for v in b if not math.isnan(float(v))]
    if len(a) < 2 or len(b) < 2:
        return None
    (ma, va), (mb, vb) = _mean_var(a), _mean_var(b)
    qa, qb = va / len(a), vb / len(b)
    diff, se = ma - mb, math.sqrt(qa + qb)
    if se == 0.0:
        p = 1.0 if diff == 0.0 else 0.0
        t = 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
        return Welch(diff, 0.0, float(len(a) + len(b) - 2), t, p, diff, diff, len(a), len(b))
    df = (qa + qb) ** 2 / ((qa * qa / (len(a) - 1) if qa else 0.0) + (qb * qb / (len(b) - 1) if qb else 0.0))
    t = diff / se
    p = min(1.0, 2.0 * student_t_sf(abs(t), df))
    half = student_t_ppf(0.5 + confidence / 2.0, df) * se
    return Welch(diff, se, df, t, p, diff - half, diff + half, len(a), len(b))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the order given; NaN stays NaN.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    idx = sorted((i for i, p in enumerate(pvalues) if not math.isnan(p)), key=lambda i: pvalues[i])
    m, out, running = len(idx), [float("nan")] * len(pvalues), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = round(running, 12)
    return out


def bootstrap_ci(
    statistic: Callable[[list[list[float]]], float],
    groups: Sequence[Sequence[float]],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """The statistic of ``groups`` and its percentile bootstrap interval, resampling within every group.

    Args:
        statistic: a function of the groups (each a list of per-seed values) to one number.
        groups: the per-seed values of every group.
        resamples: bootstrap resamples.
        confidence: the interval's coverage.
        seed: the generator's seed (the same data always gives the same interval).

    Returns:
        ``(estimate, low, high)``.

    >>> spread = lambda gs: max(sum(g) / len(g) for g in gs) - min(sum(g) / len(g) for g in gs)
    >>> est, lo, hi = bootstrap_ci(spread, [[1.0, 1.2, 1.1], [3.0, 3.1, 2.9]])
    >>> round(est, 3), lo > 1.5, hi < 2.5
    (1.9, True, True)
    """
    groups = [list(map(float, g)) for g in groups]
    estimate = statistic(groups)
    rng = random.Random(seed)
    values = []
    for _ in range(resamples):
        values.append(statistic([[g[rng.randrange(len(g))] for _ in g] for g in groups]))
    values.sort()
    lo_i = int(math.floor((1.0 - confidence) / 2.0 * (resamples - 1)))
    hi_i = int(math.ceil((1.0 + confidence) / 2.0 * (resamples - 1)))
    return estimate, values[lo_i], values[hi_i]
