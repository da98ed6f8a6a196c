"""The Norm Loss poster's claims, tested on a study's own numbers: the claims section of ``summary.md``.

The poster (Georgiou et al., ICPR 2020, arXiv 2103.06583; ``docs/reference/norm_loss_poster.md``) makes
five claims. Each is tested here on whatever the study holds, and gets a verdict —
**supported**, **not supported**, or **not testable here** (the study lacks the runs, or the bench, that
the test needs) — with the numbers and the statistical statement behind it, beside the poster's own numbers
where it gives any. Seeds are the samples; α = :data:`ALPHA`; the tests are in :mod:`oblique.study.stats`.

1. **Comparable and sometimes better error.** Every method at its *reference setting*
   (:func:`oblique.study.reference.reference_runs`: its default strength, the model's standard batch
   size). Welch's t-test of each method against ``baseline`` (does the difference exceed the seed
   spread?) and against Norm Loss, Holm-corrected within each family. Supported when no method's error is significantly lower than Norm Loss's.
2. **Lower computational complexity than most weight regularization methods (negligible overhead).** From
   the study's bench (``bench.json``, :mod:`oblique.study.bench`): each method's paired step overhead over
   ``baseline`` ± its standard error; a one-sided z-test of every other method's overhead against Norm
   Loss's. Supported when Norm Loss is significantly cheaper than most (more than half) of the other
   methods *and* its overhead is at most :data:`NEGLIGIBLE_PCT` % of a step; not testable when the bench
   is too noisy to resolve that (Norm Loss's 95 % interval wider than ± :data:`NEGLIGIBLE_PCT` %).
3. **High convergence speed.** Norm Loss against weight decay at the reference setting: the mean train
   cross-entropy per batch over the whole run (the area under the loss curve, divided by the steps: lower
   is faster), Welch's t-test. Supported when Norm Loss's is significantly lower.
4. **Less sensitive to the regularization factor.** Norm Loss and weight decay at the reference batch size,
   over the strengths both were run at: the spread (max − min) of the mean test error over λ, and a
   bootstrap interval of weight decay's spread minus Norm Loss's (seeds resampled within every λ).
   Supported when that interval lies above 0.
5. **Less sensitive to batch size.** The same over the batch sizes, each method at its reference strength.

A diverged run counts as 100 % test error in claims 4 and 5 (it learned nothing; leaving it out would hide
the least robust setting) and is named in the numbers.

:func:`claims_markdown` is what :func:`oblique.study.summary_markdown` appends to the table when the
study holds Norm Loss runs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from oblique import records
from oblique.cost import device_label
from oblique.study.bench import read_study_bench
from oblique.study.folder import Study, load_study
from oblique.study.published import PUBLISHED
from oblique.study.reference import (
    at_first_extras,
    at_reference_strengths,
    method_order,
    reference_batch_size,
    reference_runs,
)
from oblique.study.stats import Welch, bootstrap_ci, holm, normal_sf, welch

__all__ = [
    "ALPHA",
    "NEGLIGIBLE_PCT",
    "NOT_SUPPORTED",
    "NOT_TESTABLE",
    "SUPPORTED",
    "Claim",
    "claims_markdown",
    "evaluate_claims",
]

#: significance level of every test
ALPHA = 0.05
#: claim 2: an overhead at or below this share of a baseline step (%) is "negligible"
NEGLIGIBLE_PCT = 5.0
#: claims 4 and 5: the test error a diverged run counts as (%)
DIVERGED_ERROR = 100.0
SUPPORTED, NOT_SUPPORTED, NOT_TESTABLE = "supported", "not supported", "not testable here"
#: the two methods the poster compares in its figures
NL, WD = "nl", "wd"


@dataclass
class Claim:
    """One claim of the poster, tested on a study.

    Attributes:
        number: 1–5, the order of the poster's list.
        claim: the poster's words.
        test: what this study tests, in one sentence.
        verdict: :data:`SUPPORTED`, :data:`NOT_SUPPORTED` or :data:`NOT_TESTABLE`.
        measured: the study's numbers, one line of markdown.
        statistics: the statistical statement, one line of markdown.
        published: the poster's numbers (or what it shows instead), one line.
        details: markdown lines (a table of the numbers), possibly empty.
        values: the numbers behind the verdict, by name (for tests and notebooks).
    """

    number: int
    claim: str
    test: str
    verdict: str
    measured: str
    statistics: str
    published: str
    details: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers
def _ms(values: Sequence[float], spec: str = ".2f") -> str:
    """``mean ± std`` of ``values`` (std over seeds, n − 1)."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    m = sum(values) / len(values)
    if len(values) < 2:
        return format(m, spec)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
    return f"{format(m, spec)} ± {format(sd, spec)}"


def _p(p: float) -> str:
    if math.isnan(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _names(methods: Sequence[str]) -> str:
    return ", ".join(methods) if methods else "none"


def _welch_text(w: Welch | None, unit: str = " points") -> str:
    if w is None:
        return "–"
    return f"Δ = {w.diff:+.3g}{unit} (95 % CI {w.ci_low:+.3g} … {w.ci_high:+.3g}), t = {w.t:.2f}, df = {w.df:.1f}, p = {_p(w.p)}"


def _published_error() -> str:
    """The poster's Norm Loss and weight-decay errors, every published setting (means where given)."""
    names = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet"}
    models = {"resnet110": "ResNet-110", "wrn28-10": "WRN-28-10", "resnet50": "ResNet-50"}
    parts, lower = [], 0
    for (dataset, model), methods in PUBLISHED.items():
        nl = methods.get(NL, {}).get("")
        wd = methods.get(WD, {}).get("repr")
        if nl is None or wd is None:
            continue
        nl_v = nl[1] if nl[1] is not None else nl[0]
        wd_v = wd[1] if wd[1] is not None else wd[0]
        lower += nl_v < wd_v
        parts.append(f"{names.get(dataset, dataset)} {models.get(model, model)}: nl {nl_v:g} vs wd {wd_v:g}")
    return (
        f"test error %, mean where given, wd as the authors reproduced it — {'; '.join(parts)} "
        f"(Norm Loss lower in {lower} of {len(parts)})"
    )


# --------------------------------------------------------------------------- claim 1: error
def _claim_error(study: Study, ref) -> Claim:
    claim = Claim(
        1,
        "Comparable and sometimes better error than the state of the art on popular architectures.",
        "every method at its default strength: is any method's test error significantly lower than "
        "Norm Loss's, and which differences to baseline exceed the seed spread",
        NOT_TESTABLE,
        "",
        "",
        _published_error(),
    )
    errors = {
        m: [float(v) for v in ref[ref["method"] == m]["test_error"] if not math.isnan(v)]
        for m in method_order(ref["method"])
    }
    others = [m for m in errors if m != NL and len(errors[m]) >= 2]
    if len(errors.get(NL, [])) < 2 or not others:
        claim.measured = "needs Norm Loss and at least one other method with 2 or more finished seeds each"
        return claim
    vs_nl = {m: welch(errors[m], errors[NL]) for m in others}
    holm_nl = dict(zip(others, holm([vs_nl[m].p for m in others]), strict=True))
    better = [m for m in others if holm_nl[m] < ALPHA and vs_nl[m].diff < 0]
    worse = [m for m in others if holm_nl[m] < ALPHA and vs_nl[m].diff > 0]
    base = errors.get("baseline", [])
    vs_base, holm_base = {}, {}
    if len(base) >= 2:
        tested = [m for m in errors if m != "baseline" and len(errors[m]) >= 2]
        vs_base = {m: welch(errors[m], base) for m in tested}
        holm_base = dict(zip(tested, holm([vs_base[m].p for m in tested]), strict=True))
    beyond = [m for m, p in holm_base.items() if p < ALPHA]
    claim.verdict = SUPPORTED if not better else NOT_SUPPORTED
    means = {m: _mean(v) for m, v in errors.items() if v}
    lo, hi = min(means, key=means.get), max(means, key=means.get)
    n = len(errors[NL])
    claim.measured = (
        f"Norm Loss {_ms(errors[NL])} % over {n} seeds; all {len(means)} methods between "
        f"{means[lo]:.2f} % ({lo}) and {means[hi]:.2f} % ({hi})"
    )
    claim.statistics = (
        f"Welch t-tests over seeds, Holm-corrected within each family: significantly lower error than Norm "
        f"Loss: {_names(better)}; significantly higher: {_names(worse)}"
        + (f"; differences to baseline beyond the seed spread: {_names(beyond)}" if holm_base else "")
    )
    claim.details = [
        "| method | test error % (mean ± std) | Δ to baseline, 95 % CI | p | Holm p | Δ to nl | Holm p vs nl |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in errors:
        wb, wn = vs_base.get(m), vs_nl.get(m)
        ci = f"{wb.diff:+.2f} ({wb.ci_low:+.2f} … {wb.ci_high:+.2f})" if wb else "–"
        claim.details.append(
            f"| {m} | {_ms(errors[m])} | {ci} | {_p(wb.p) if wb else '–'} | {_p(holm_base.get(m, math.nan))} | "
            f"{f'{wn.diff:+.2f}' if wn else '–'} | {_p(holm_nl.get(m, math.nan))} |"
        )
    claim.values = {
        "better_than_nl": better,
        "worse_than_nl": worse,
        "beyond_seed_spread": beyond,
        "means": means,
        "holm_vs_nl": holm_nl,
    }
    return claim


# --------------------------------------------------------------------------- claim 2: cost
def _claim_cost(study: Study, bench: dict | None) -> Claim:
    claim = Claim(
        2,
        "Lower computational complexity than most weight regularization methods (negligible overhead).",
        f"per-step cost of every method benched alone (bench.json): is Norm Loss's step overhead over "
        f"baseline significantly lower than most other methods' and at most {NEGLIGIBLE_PCT:g} % of a step",
        NOT_TESTABLE,
        "",
        "",
        "stated, not measured: the poster gives no timing",
    )
    methods = (bench or {}).get("methods") or {}
    if NL not in methods or "baseline" not in methods:
        claim.measured = (
            "needs the study's bench with Norm Loss and baseline (run 'oblique study' without --no-bench)"
        )
        return claim
    nl = methods[NL]
    base_ms = methods["baseline"]["step_ms"]
    others = [m for m in method_order(methods) if m not in ("baseline", NL)]
    if not others:
        claim.measured = "needs the bench of at least one other regularization method"
        return claim
    nl_o, nl_se = float(nl["overhead_pct"]), float(nl.get("overhead_pct_se") or 0.0)
    if 1.96 * nl_se > NEGLIGIBLE_PCT:  # the bench cannot tell negligible from not: say so, do not guess
        claim.measured = (
            f"the bench was too noisy to tell: Norm Loss {nl_o:+.1f} ± {1.96 * nl_se:.1f} % of a step at 95 % "
            f"({bench.get('rounds')} rounds; a busy machine); delete bench.json and run the study command again "
            "on a quiet machine"
        )
        claim.values = {"overhead_pct": nl_o, "overhead_pct_se": nl_se}
        return claim
    tests = {}
    for m in others:
        o, se = float(methods[m]["overhead_pct"]), float(methods[m].get("overhead_pct_se") or 0.0)
        s = math.hypot(se, nl_se)
        z = (o - nl_o) / s if s > 0 else math.copysign(math.inf, o - nl_o) if o != nl_o else 0.0
        tests[m] = (o, se, z, normal_sf(z), normal_sf(-z))  # p: other dearer than nl; p: nl dearer
    cheaper = [m for m in others if tests[m][3] < ALPHA]
    dearer = [m for m in others if tests[m][4] < ALPHA]
    most = len(cheaper) > len(others) / 2
    negligible = nl_o <= NEGLIGIBLE_PCT
    claim.verdict = SUPPORTED if most and negligible else NOT_SUPPORTED
    claim.measured = (
        f"Norm Loss {nl_o:+.2f} ± {nl_se:.2f} % of a baseline step ({base_ms:.2f} ms; {bench['model']}, batch "
        f"{bench['batch_size']}, {device_label(bench)}, {bench['threads']} threads, {bench['rounds']} rounds); its "
        f"own work {nl['regularizer_ms']:.3f} ms; the other methods {min(t[0] for t in tests.values()):+.1f} … "
        f"{max(t[0] for t in tests.values()):+.1f} %"
    )
    floor = ((bench or {}).get("aa") or {}).get("floor_pct")
    if isinstance(floor, int | float):  # the bench's A/A control: baseline against itself
        claim.measured += f"; the bench's own noise floor (baseline against itself) {floor:.2f} %"
    claim.statistics = (
        f"paired overhead (median over interleaved rounds ± robust se); one-sided z-test of each method's overhead "
        f"against Norm Loss's: Norm Loss significantly cheaper than {len(cheaper)} of {len(others)} "
        f"({_names(cheaper)}), significantly dearer than {_names(dearer)}; "
        f"negligible (≤ {NEGLIGIBLE_PCT:g} %): {'yes' if negligible else 'no'}"
    )
    claim.details = [
        "| method | step ms | overhead % ± se | own work ms | z vs nl | p (dearer than nl) |",
        "|---|---|---|---|---|---|",
        f"| baseline | {base_ms:.3f} | 0 (ref) | – | – | – |",
        f"| nl | {nl['step_ms']:.3f} | {nl_o:+.2f} ± {nl_se:.2f} | {nl['regularizer_ms']:.3f} | – | – |",
    ]
    for m in others:
        o, se, z, p, _ = tests[m]
        claim.details.append(
            f"| {m} | {methods[m]['step_ms']:.3f} | {o:+.2f} ± {se:.2f} | {methods[m]['regularizer_ms']:.3f} | "
            f"{z:+.2f} | {_p(p)} |"
        )
    claim.values = {
        "overhead_pct": nl_o,
        "cheaper_than": cheaper,
        "dearer_than": dearer,
        "negligible": negligible,
    }
    return claim


# --------------------------------------------------------------------------- claim 3: convergence
def _loss_curve(study: Study, run: str) -> list[tuple[int, float, float]]:
    """``(step, epoch, loss)`` of every step record of a run."""
    return [
        (r["step"], float(r["epoch"]), float(r["loss"]))
        for r in records.read_metrics(study.run_dir(run), "step")
    ]


def _claim_convergence(study: Study, ref) -> Claim:
    claim = Claim(
        3,
        "High convergence speed.",
        "train cross-entropy per batch over the steps, Norm Loss against weight decay at their default "
        "strengths: is Norm Loss's mean over the run (the area under its loss curve) significantly lower",
        NOT_TESTABLE,
        "",
        "",
        "a plot, no numbers: per-batch train cross-entropy over 280 epochs of CIFAR-10, wd vs nl, "
        "raw and smoothed",
    )
    runs = {m: list(ref[ref["method"] == m]["run"]) for m in (NL, WD)}
    if len(runs[NL]) < 2 or len(runs[WD]) < 2:
        claim.measured = "needs Norm Loss and weight decay with 2 or more finished seeds each"
        return claim
    auc, first, last = {}, {}, {}
    for m, names in runs.items():
        auc[m], first[m], last[m] = [], [], []
        for name in names:
            curve = _loss_curve(study, name)
            if not curve:
                continue
            epochs = max(1, math.ceil(curve[-1][1] - 1e-9))
            auc[m].append(_mean([c[2] for c in curve]))
            first[m].append(_mean([c[2] for c in curve if c[1] <= 1 + 1e-9]))
            last[m].append(_mean([c[2] for c in curve if c[1] > epochs - 1 + 1e-9]))
    w = welch(auc[NL], auc[WD])
    if w is None:
        claim.measured = "needs the step records of 2 or more runs of each"
        return claim
    claim.verdict = SUPPORTED if w.diff < 0 and w.p < ALPHA else NOT_SUPPORTED
    claim.measured = (
        f"mean train cross-entropy over the run: Norm Loss {_ms(auc[NL], '.4f')}, weight decay {_ms(auc[WD], '.4f')} nats "
        f"(first epoch {_ms(first[NL], '.3f')} vs {_ms(first[WD], '.3f')}; last epoch {_ms(last[NL], '.4f')} vs "
        f"{_ms(last[WD], '.4f')})"
    )
    side = "lower" if w.diff < 0 else "higher"
    claim.statistics = f"Welch t-test over seeds, nl − wd: {_welch_text(w, ' nats')}: Norm Loss's is " + (
        f"significantly {side}" if w.p < ALPHA else "not significantly different"
    )
    claim.values = {"welch": w, "auc": auc}
    return claim


# --------------------------------------------------------------------------- claims 4 and 5: sensitivity
def _cells(rows, x: str) -> dict[float, list[float]]:
    """x value -> per-seed test errors (diverged runs as :data:`DIVERGED_ERROR`, other statuses left out)."""
    cells: dict[float, list[float]] = {}
    for v, g in rows.groupby(x):
        errs = [float(e) for e in g[g["status"] == "ok"]["test_error"] if not math.isnan(e)]
        errs += [DIVERGED_ERROR] * int((g["status"] == "diverged").sum())
        if errs:
            cells[float(v)] = errs
    return cells


def _spread(cells: Sequence[Sequence[float]]) -> float:
    means = [_mean(c) for c in cells]
    return max(means) - min(means)


def _claim_sensitivity(
    number: int,
    claim_text: str,
    what: str,
    x: str,
    rows,
    fmt: Callable[[float], str],
    published: str,
    poster_range: tuple[float, float] | None = None,
) -> Claim:
    claim = Claim(
        number,
        claim_text,
        f"Norm Loss and weight decay over the {what}s both were run at: is the spread (max − min) of "
        f"weight decay's mean test error over them significantly larger than Norm Loss's",
        NOT_TESTABLE,
        "",
        "",
        published,
    )
    cells = {m: _cells(rows[rows["method"] == m], x) for m in (NL, WD)}
    common = sorted(set(cells[NL]) & set(cells[WD]))
    if len(common) < 2 or any(len(cells[m][v]) < 2 for m in (NL, WD) for v in common):
        have = {m: len(cells[m]) for m in (NL, WD)}
        claim.measured = (
            f"needs Norm Loss and weight decay at 2 or more common {what}s with 2 or more seeds each "
            f"(this study: {have[NL]} and {have[WD]} {what}s)"
        )
        return claim
    groups = [cells[NL][v] for v in common] + [cells[WD][v] for v in common]
    k = len(common)

    def diff(gs: list[list[float]]) -> float:  # weight decay's spread minus Norm Loss's
        return _spread(gs[k:]) - _spread(gs[:k])

    est, lo, hi = bootstrap_ci(diff, groups)
    claim.verdict = SUPPORTED if lo > 0 else NOT_SUPPORTED
    diverged = {m: [fmt(v) for v in common if DIVERGED_ERROR in cells[m][v]] for m in (NL, WD)}
    spread = {m: _spread([cells[m][v] for v in common]) for m in (NL, WD)}

    def span(m: str) -> str:
        means = [_mean(cells[m][v]) for v in common]
        return f"{min(means):.2f}–{max(means):.2f} % (spread {spread[m]:.2f} points)"

    claim.measured = (
        f"mean test error over {what} ∈ {{{', '.join(fmt(v) for v in common)}}}: Norm Loss {span(NL)}, "
        f"weight decay {span(WD)}"
        + "".join(f"; {m} diverged at {', '.join(d)}" for m, d in diverged.items() if d)
    )
    if poster_range is not None:
        inside = [v for v in common if poster_range[0] <= v <= poster_range[1]]
        if len(inside) >= 2:
            sub = {m: _spread([cells[m][v] for v in inside]) for m in (NL, WD)}
            claim.measured += (
                f"; within the poster's range ({fmt(poster_range[0])} … {fmt(poster_range[1])}): spread "
                f"{sub[NL]:.2f} (nl) vs {sub[WD]:.2f} (wd) points"
            )
    where = "above" if lo > 0 else "below" if hi < 0 else "across"
    claim.statistics = (
        f"wd's spread − nl's = {est:+.2f} points, 95 % bootstrap interval {lo:+.2f} … {hi:+.2f} "
        f"(2000 resamples of the seeds within every {what}; diverged = {DIVERGED_ERROR:g} %): the interval lies "
        f"{where} 0"
    )
    claim.details = [f"| {what} | nl test error % | wd test error % |", "|---|---|---|"]
    for v in common:
        claim.details.append(f"| {fmt(v)} | {_ms(cells[NL][v])} | {_ms(cells[WD][v])} |")
    claim.values = {"spread": spread, "difference": (est, lo, hi), "values": common}
    return claim


def _claim_strength(study: Study, res) -> Claim:
    rows = at_first_extras(study, res[res["batch_size"] == reference_batch_size(res)])
    rows = rows[rows["method"].isin([NL, WD])]
    return _claim_sensitivity(
        4,
        "Less sensitive to the regularization factor.",
        "strength λ",
        "strength",
        rows,
        lambda v: f"{v:g}",
        "a plot, no numbers: test error against λ from 1e-2 to 5e-1 (log axis), wd vs nl",
        poster_range=(1e-2, 5e-1),
    )


def _claim_batch_size(study: Study, res) -> Claim:
    rows = at_reference_strengths(at_first_extras(study, res[res["method"].isin([NL, WD])]))
    return _claim_sensitivity(
        5,
        "Less sensitive to batch size.",
        "batch size",
        "batch_size",
        rows,
        lambda v: f"{v:g}",
        "stated, no numbers or plot for batch size",
    )


# --------------------------------------------------------------------------- all of them
def evaluate_claims(study: Study | str | os.PathLike, results, bench: dict | None = None) -> list[Claim]:
    """Test the poster's five claims on the study (module docstring).

    Args:
        study: the study (or its folder).
        results: its :func:`oblique.study.results_frame` (a modified copy asks "what if").
        bench: its bench record (default: the study's ``bench.json``, if any).
    """
    study = study if isinstance(study, Study) else load_study(study)
    res = results
    if bench is None:
        bench = read_study_bench(study)
    if res.empty:
        ref = res
    else:
        ref = reference_runs(study, res)
    return [
        _claim_error(study, ref) if not res.empty else _empty(1),
        _claim_cost(study, bench),
        _claim_convergence(study, ref) if not res.empty else _empty(3),
        _claim_strength(study, res) if not res.empty else _empty(4),
        _claim_batch_size(study, res) if not res.empty else _empty(5),
    ]


def _empty(number: int) -> Claim:
    return Claim(number, "", "", NOT_TESTABLE, "the study has no runs", "", "")


def claims_markdown(study: Study | str | os.PathLike, results, bench: dict | None = None) -> str:
    """The claims section of ``summary.md``: an overview table, then each claim with its numbers."""
    study = study if isinstance(study, Study) else load_study(study)
    claims = evaluate_claims(study, results, bench)
    base = next(iter(study.runs.values()))["settings"] if study.runs else {}
    lines = [
        "## The poster's claims, tested on this study",
        "",
        "Each claim of the Norm Loss poster (Georgiou et al., ICPR 2020), what this study measured, and whether its "
        f"numbers support it (α = {ALPHA:g}; seeds are the samples; generated from the study's own records). The "
        f"poster measured CIFAR-10/100 and ImageNet; this study, {base.get('model')} on {base.get('dataset')} "
        f"({base.get('epochs')} epochs): the published numbers stand beside ours, only the direction of each claim "
        "compares.",
        "",
        "| # | claim | verdict |",
        "|---|---|---|",
    ]
    lines += [f"| {c.number} | {c.claim} | **{c.verdict}** |" for c in claims]
    for c in claims:
        lines += ["", f"### {c.number}. {c.claim} — {c.verdict}", ""]
        lines += [f"- Test: {c.test}." if c.test else "- Test: –"]
        lines += [f"- Measured: {c.measured}."]
        if c.statistics:
            lines += [f"- Statistics: {c.statistics}."]
        lines += [f"- Published (poster): {c.published}."]
        if c.details:
            lines += ["", *c.details]
    return "\n".join(lines) + "\n"
