"""The poster's claims tested on a study (oblique.study.claims), their statistics (oblique.study.stats),
the main job's grids (oblique.study.main_job) and the study's own bench (oblique.study.bench)."""

from __future__ import annotations

import json
import math
import random
import shutil

import pytest

from oblique import records, storage
from oblique.study import (
    BENCH_FILE,
    SUMMARY_FILE,
    StudyError,
    StudySpec,
    bench_study,
    collect,
    evaluate_claims,
    expand_all,
    load_study,
    main_job,
    read_study_bench,
    results_frame,
)
from oblique.study.claims import NOT_SUPPORTED, NOT_TESTABLE, SUPPORTED
from oblique.study.main_job import BATCH_SIZES, STRENGTHS
from oblique.study.reference import reference_runs
from oblique.study.stats import bootstrap_ci, holm, student_t_ppf, student_t_sf, welch

VERDICTS = {SUPPORTED, NOT_SUPPORTED, NOT_TESTABLE}


# --------------------------------------------------------------------------- statistics
def test_student_t_and_welch_agree_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    for _ in range(100):
        t, df, q = rng.uniform(-9, 9), rng.uniform(0.7, 80), rng.uniform(0.005, 0.995)
        assert student_t_sf(t, df) == pytest.approx(stats.t.sf(t, df), rel=1e-9, abs=1e-14)
        assert student_t_ppf(q, df) == pytest.approx(stats.t.ppf(q, df), rel=1e-8, abs=1e-10)
    for _ in range(30):
        a = [rng.gauss(3, 0.3) for _ in range(rng.randint(2, 6))]
        b = [rng.gauss(3.2, 0.1) for _ in range(rng.randint(2, 6))]
        ref = stats.ttest_ind(a, b, equal_var=False)
        w = welch(a, b)
        assert w.t == pytest.approx(ref.statistic, rel=1e-9)
        assert w.p == pytest.approx(ref.pvalue, rel=1e-7)
        assert w.ci_low < w.diff < w.ci_high


def test_welch_edge_cases_and_holm():
    assert welch([1.0], [1.0, 2.0]) is None  # one seed: no test
    same = welch([2.0, 2.0], [2.0, 2.0])
    assert same.p == 1.0 and same.t == 0.0
    apart = welch([1.0, 1.0], [2.0, 2.0])
    assert apart.p == 0.0 and apart.t == -math.inf
    assert holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]
    assert math.isnan(holm([float("nan"), 0.5])[0])


def test_bootstrap_is_deterministic():
    spread = lambda gs: max(map(sum, gs)) - min(map(sum, gs))  # noqa: E731
    groups = [[1.0, 2.0, 3.0], [4.0, 5.0, 7.0]]
    assert bootstrap_ci(spread, groups) == bootstrap_ci(spread, groups)
    est, lo, hi = bootstrap_ci(spread, groups)
    assert lo <= est <= hi


# --------------------------------------------------------------------------- the main job
def test_main_job_tests_every_claim_in_one_folder():
    runs = expand_all(main_job())
    names = [r.name for r in runs]
    assert len(names) == len(set(names))  # a run two grids share is planned once
    grid = [r.grid for r in runs]
    methods = {g["method"] for g in grid}
    from oblique import list_methods

    assert methods == set(list_methods())
    for m in methods:  # every method at its default strength, 3 seeds
        assert len({g["seed"] for g in grid if g["method"] == m and g["batch_size"] == 100}) >= 3
    for m in ("nl", "wd"):
        lams = {g["strength"] for g in grid if g["method"] == m and g["batch_size"] == 100}
        assert math.log10(max(lams) / min(lams)) >= 4  # four decades of λ
        assert len({g["batch_size"] for g in grid if g["method"] == m}) >= 3  # three batch sizes
    assert set(STRENGTHS) <= {g["strength"] for g in grid if g["method"] == "nl"}
    assert set(BATCH_SIZES) == {g["batch_size"] for g in grid if g["method"] == "wd"}
    # every method × 3 seeds (39), λ grid (27 new), batch grid (18 new): the runs two grids share, once
    assert len(runs) == 3 * len(list_methods()) + 27 + 18 == 84
    with_epochs = expand_all(main_job({"epochs": 2}))
    assert {r.settings["epochs"] for r in with_epochs} == {2}


def test_expand_all_refuses_one_name_with_two_settings():
    a = StudySpec(methods=["nl"], seeds=[0], base={"epochs": 1})
    with pytest.raises(StudyError, match="different settings"):
        expand_all([a, StudySpec(methods=["nl"], seeds=[0], base={"epochs": 2, "lr": 0.05})])
    assert len(expand_all([a, a])) == 1


def test_oblique_study_without_a_grid_is_the_main_job():
    from oblique.cli import build_parser
    from oblique.cli.study import is_main_job, runs_from_spec, spec_from_args

    for argv, main in (
        (["study"], True),
        (["study", "--epochs", "2", "--out", "x"], True),
        (["study", "--methods", "nl"], False),
        (["study", "--seeds", "2"], False),
        (["study", "--grid", "lr=0.1,0.2"], False),
    ):
        args = build_parser().parse_args(argv)
        assert is_main_job(args) is main, argv
    args = build_parser().parse_args(["study", "--epochs", "2"])
    spec, _ = spec_from_args(args)
    runs = runs_from_spec(args, spec)
    assert len(runs) == 84 and {r.settings["epochs"] for r in runs} == {2}


# --------------------------------------------------------------------------- the claims
def _claims(study_dir, results=None, bench=None):
    study = load_study(study_dir)
    res = results_frame(study) if results is None else results
    return {c.number: c for c in evaluate_claims(study, res, bench)}


def test_every_claim_gets_a_verdict_and_summary_md_states_them(tiny_study):
    claims = _claims(tiny_study)
    assert sorted(claims) == [1, 2, 3, 4, 5]
    assert {c.verdict for c in claims.values()} <= VERDICTS
    assert claims[2].verdict == NOT_TESTABLE or read_study_bench(tiny_study) is not None
    for n in (1, 3, 4, 5):  # the tiny study has what they need
        assert claims[n].verdict in (SUPPORTED, NOT_SUPPORTED), claims[n].measured
        assert claims[n].measured and claims[n].statistics and claims[n].published
    text = (tiny_study / SUMMARY_FILE).read_text()
    assert "## The poster's claims, tested on this study" in text
    for c in claims.values():
        assert f"### {c.number}. {c.claim} — " in text
    assert "Norm Loss lower in 4 of 5" in text  # the poster's own numbers beside ours


def _set_errors(res, ref_runs, method, values):
    res = res.copy()
    names = sorted(ref_runs[ref_runs["method"] == method]["run"])
    for name, v in zip(names, values, strict=True):
        res.loc[res["run"] == name, "test_error"] = v
    return res


def test_claim_1_follows_the_errors(tiny_study):
    study = load_study(tiny_study)
    res = results_frame(study)
    ref = reference_runs(study, res)
    res = _set_errors(res, ref, "nl", [3.0, 3.1])
    res = _set_errors(res, ref, "wd", [3.05, 3.12])
    comparable = _set_errors(res, ref, "baseline", [3.02, 3.09])
    assert _claims(tiny_study, comparable)[1].verdict == SUPPORTED
    baseline_better = _set_errors(res, ref, "baseline", [1.0, 1.02])
    c = _claims(tiny_study, baseline_better)[1]
    assert c.verdict == NOT_SUPPORTED and c.values["better_than_nl"] == ["baseline"]
    assert "significantly lower error than Norm Loss: baseline" in c.statistics


def test_claims_4_and_5_follow_the_errors(tiny_study):
    res = results_frame(load_study(tiny_study))

    def at(res, method, column, value, errors):
        res = res.copy()
        rows = res[(res["method"] == method) & (res[column] == value)].index
        for i, e in zip(rows, errors * len(rows), strict=False):
            res.loc[i, "test_error"] = e
        return res

    flat = res.copy()
    flat.loc[flat["method"].isin(["nl", "wd"]), "test_error"] = 3.0 + 0.01 * (flat["seed"] % 2)
    assert _claims(tiny_study, flat)[4].verdict == NOT_SUPPORTED
    assert _claims(tiny_study, flat)[5].verdict == NOT_SUPPORTED
    wd_climbs = at(flat, "wd", "strength", 0.1, [40.0, 41.0])
    c4 = _claims(tiny_study, wd_climbs)[4]
    assert c4.verdict == SUPPORTED and c4.values["spread"]["wd"] > 30
    nl_climbs = at(flat, "nl", "strength", 0.1, [40.0, 41.0])
    assert _claims(tiny_study, nl_climbs)[4].verdict == NOT_SUPPORTED
    wd_batch = at(flat, "wd", "batch_size", 200, [20.0, 21.0])
    assert _claims(tiny_study, wd_batch)[5].verdict == SUPPORTED
    diverged = flat.copy()
    rows = diverged[(diverged["method"] == "wd") & (diverged["strength"] == 0.1)].index
    diverged.loc[rows, "status"] = "diverged"
    diverged.loc[rows, "test_error"] = float("nan")
    c4 = _claims(tiny_study, diverged)[4]
    assert c4.verdict == SUPPORTED and "wd diverged at 0.1" in c4.measured


def _fake_bench(nl_overhead: float) -> dict:
    def row(o):
        return {
            "step_ms": 5 * (1 + o / 100),
            "step_ms_q25": 4.9,
            "step_ms_q75": 5.2,
            "overhead_pct": o,
            "overhead_pct_se": 0.2,
            "regularizer_ms": o / 20,
        }

    methods = {"baseline": row(0.0), "nl": row(nl_overhead), "wd": row(4.0), "oni": row(60.0), "so": row(8.0)}
    return {
        "model": "resnet1d",
        "batch_size": 100,
        "device": "cpu",
        "threads": 2,
        "rounds": 100,
        "methods": methods,
    }


def test_claim_2_follows_the_bench(tiny_study):
    assert _claims(tiny_study, bench={})[2].verdict == NOT_TESTABLE
    c = _claims(tiny_study, bench=_fake_bench(1.0))[2]
    assert c.verdict == SUPPORTED and c.values["cheaper_than"] == ["wd", "oni", "so"]
    c = _claims(tiny_study, bench=_fake_bench(6.0))[2]  # cheaper than most, but not negligible
    assert c.verdict == NOT_SUPPORTED and not c.values["negligible"]
    c = _claims(tiny_study, bench=_fake_bench(30.0))[2]
    assert c.verdict == NOT_SUPPORTED and c.values["dearer_than"] == ["wd", "so"]


def _scale_losses(run_dir, factor: float) -> None:
    path = run_dir / "metrics.jsonl"
    lines = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec["type"] == "step":
            rec["loss"] *= factor
        lines.append(json.dumps(rec))
    path.write_text("\n".join(lines) + "\n")


def test_claim_3_follows_the_loss_curves_and_summary_md_follows_the_records(tiny_study, tmp_path):
    copy = tmp_path / "s"
    shutil.copytree(tiny_study, copy)
    study = load_study(copy)
    ref = reference_runs(study, results_frame(study))
    for name in ref[ref["method"] == "nl"]["run"]:
        _scale_losses(study.run_dir(name), 0.5)
    assert _claims(copy)[3].verdict == SUPPORTED
    for name in ref[ref["method"] == "nl"]["run"]:
        _scale_losses(study.run_dir(name), 4.0)  # now twice the original: slower than weight decay
    c = _claims(copy)[3]
    assert c.verdict == NOT_SUPPORTED and "significantly higher" in c.statistics

    # end to end: a result on disk changes, summary.md's verdict changes with it
    def write_errors(errors: dict[str, float]) -> str:
        for method, error in errors.items():
            for name in ref[ref["method"] == method]["run"]:
                s = records.read_summary(study.run_dir(name))
                storage.write_json_atomic(
                    study.run_dir(name) / "summary.json", {**s, "test_error": error + 0.01 * s["seed"]}
                )
        collect(study)
        return (copy / SUMMARY_FILE).read_text()

    heading = (
        "### 1. Comparable and sometimes better error than the state of the art on popular architectures. — "
    )
    assert heading + "supported" in write_errors({"nl": 3.0, "wd": 3.0, "baseline": 3.0})
    assert heading + "not supported" in write_errors({"baseline": 0.5})  # baseline far below Norm Loss


def test_a_study_without_weight_decay_cannot_test_claims_3_to_5(tiny_study):
    res = results_frame(load_study(tiny_study))
    claims = _claims(tiny_study, res[res["method"] != "wd"])
    assert [claims[n].verdict for n in (3, 4, 5)] == [NOT_TESTABLE] * 3
    assert "needs Norm Loss and weight decay" in claims[3].measured


# --------------------------------------------------------------------------- the study's bench
@pytest.mark.slow
def test_bench_study_writes_bench_json_and_claim_2_reads_it(tiny_study, tmp_path):
    copy = tmp_path / "s"
    shutil.copytree(tiny_study, copy)
    record = bench_study(copy, seconds=1.0)
    assert set(record["methods"]) == {"baseline", "nl", "wd"}
    assert record["model"] == "resnet1d" and record["batch_size"] == 100
    path = copy / BENCH_FILE
    mtime = path.stat().st_mtime_ns
    assert bench_study(copy, seconds=1.0) == read_study_bench(copy)  # fits the study: not measured again
    assert path.stat().st_mtime_ns == mtime
    c = _claims(copy)[2]  # read from bench.json (a 1-second bench may be too noisy to give a verdict)
    assert c.values["overhead_pct"] == pytest.approx(record["methods"]["nl"]["overhead_pct"])
