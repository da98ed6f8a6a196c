"""``oblique bench`` at tiny size: every registered method, the record's fields, the A/A control and the
targets, JSON/CSV (and records made before the A/A control), sweeps."""

from __future__ import annotations

import json
import re

import pytest
import torch
from hostile_world import refused

from oblique.cli import main
from oblique.cost import (
    CSV_COLUMNS,
    SCHEMA,
    SWEEPS,
    BenchError,
    bench,
    declared_targets,
    format_table,
    read_bench,
    run_sweep,
    write_csv,
)
from oblique.cost.targets import evaluate
from oblique.methods import CostTarget, list_methods
from oblique.storage import RecordError

TINY = dict(batch_size=4, rounds=4, warmup=1, micro_repeats=2, threads=1, progress=False)
#: the methods that declare a batched-form target (overhead bound, batched against per layer)
BATCHED = {name: t for name, t in declared_targets().items() if t.measure == "batched"}
FIELDS = ("step_ms", "overhead_pct", "regularizer_ms", "peak_mem_mb", "analytic_flops")


@pytest.fixture(scope="module")
def record():
    return bench(model="cnn", methods="all", **TINY)


def test_every_registered_method_is_benched(record):
    assert record["schema"] == SCHEMA
    assert list(record["methods"]) == list_methods() and not record["errors"]
    for name, r in record["methods"].items():
        for f in FIELDS:
            assert isinstance(r[f], float) and r[f] == r[f], (name, f)  # a number, not NaN
        assert r["step_ms"] > 0 and r["peak_mem_mb"] > 0
    assert record["methods"]["baseline"]["overhead_pct"] == 0.0
    assert record["methods"]["baseline"]["regularizer_ms"] == 0.0
    assert record["methods"]["baseline"]["analytic_flops"] == 0.0
    assert record["methods"]["nl"]["analytic_flops"] > 0


def test_regularizer_parts_follow_the_kind(record):
    m = record["methods"]
    assert "reparam_ms" in m["oni"]["regularizer_parts"] and m["oni"]["regularizer_ms"] > 0
    assert "optimizer_extra_ms" in m["oblique-rsgd"]["regularizer_parts"]
    assert set(m["nl"]["regularizer_parts"]) == {"in_step_ms"} and m["nl"]["regularizer_ms"] > 0
    for r in m.values():
        assert (
            r["regularizer_ms"] == pytest.approx(sum(r["regularizer_parts"].values())) or r["kind"] == "none"
        )


def test_peak_memory_counts_at_least_the_parameters_and_grads(record):
    from oblique.models import get_model

    params = sum(p.numel() * 4 for p in get_model("cnn").parameters())
    assert record["methods"]["baseline"]["peak_mem_mb"] * 2**20 >= 2 * params
    # a reparametrization holds its computed weights for backward: never less than plain training
    assert record["methods"]["oni"]["peak_mem_mb"] >= record["methods"]["baseline"]["peak_mem_mb"]


def test_targets_are_measured_and_printed(record):
    t = record["targets"]
    assert t["nl"]["ratio_to_foreach_norm"] > 0 and isinstance(t["nl"]["holds"], bool)
    assert t["oblique-rsgd"]["speedup"] > 0 and isinstance(t["oblique-rsgd"]["holds"], bool)
    for name in BATCHED:  # each batched form against its per-layer reference
        assert (
            t[name]["batched_ms"] > 0 and t[name]["per_layer_ms"] > 0 and isinstance(t[name]["holds"], bool)
        )
        assert t[name]["speedup"] == pytest.approx(t[name]["per_layer_ms"] / t[name]["batched_ms"])
        assert 0 < t[name]["speedup_q1"] <= t[name]["speedup_q3"]
        assert t[name]["overhead_pct"] == record["methods"][name]["overhead_pct"]
    table = format_table(record)
    for name in list_methods():
        assert f"\n{name} " in table
    lines = [ln for ln in table.splitlines() if ln.startswith("target ")]
    assert [ln.split(":")[0] for ln in lines] == [f"target {n}" for n in declared_targets()]
    # a verdict, then (where the A/A floor is wider than the bound) what it is worth
    assert all(re.search(r": (holds|does NOT hold)( \(not resolved: .*\))?$", ln) for ln in lines)
    by_name = dict(zip(declared_targets(), lines, strict=True))
    for name, target in declared_targets().items():
        line = by_name[name]
        want = {"foreach_norm_floor": "_foreach_norm", "fused_optimizer": "geoopt"}.get(target.measure)
        if want is not None:
            assert want in line, name
        else:  # batched and plain overhead targets: the step overhead against the A/A floor
            assert "step overhead" in line and "A/A floor" in line, name
            assert ("faster than per layer" in line) is (target.measure == "batched"), name


def test_aa_control_is_the_noise_floor(record):
    """The baseline stepped twice per round (Note [noise floor]): its paired difference and floor."""
    aa = record["aa"]
    assert aa["step_ms"] > 0 and aa["overhead_pct_se"] >= 0
    assert aa["floor_pct"] == pytest.approx(abs(aa["overhead_pct"]) + 2 * aa["overhead_pct_se"])
    for name, r in record["methods"].items():
        want = None if name == "baseline" else abs(r["overhead_pct"]) > aa["floor_pct"]
        assert r["overhead_resolved"] is want, name
    assert "A/A control (baseline stepped twice per round)" in format_table(record).splitlines()[1]
    nl = record["targets"]["nl"]
    assert set(nl["vs"]) == set(record["methods"]) - {"baseline", "nl"}
    assert set(nl["tied_with"]) | set(nl["resolvably_lower"]) <= set(nl["vs"])


def _methods(**overheads: float) -> dict[str, dict]:
    return {
        name: {"overhead_pct": o, "overhead_pct_se": 0.1, "regularizer_pct": 0.1}
        for name, o in {"baseline": 0.0, **overheads}.items()
    }


def test_lowest_claims_only_what_the_floor_resolves():
    nl = {"ratio_to_foreach_norm": 2.0, "nl_ms": 1.0, "floor_ms": 0.5}
    results = _methods(nl=0.5, wd=1.0, pbwn=3.0)
    cases = [  # (paired differences other − nl, floor) → lowest, tied, resolvably lower, holds
        ({"wd": 0.5, "pbwn": 2.5}, 1.0, False, ["wd"], [], True),  # wd inside the floor: a tie, not a loss
        ({"wd": 1.5, "pbwn": 2.5}, 1.0, True, [], [], True),
        ({"wd": -1.5, "pbwn": 2.5}, 1.0, False, [], ["wd"], False),
    ]
    for vs, floor, lowest, tied, lower, holds in cases:
        t = {**nl, "vs": vs}
        evaluate({"nl": t}, results, {"floor_pct": floor})
        assert (t["lowest_overhead"], t["tied_with"], t["resolvably_lower"], t["holds"]) == (
            lowest,
            tied,
            lower,
            holds,
        )
    t = {**nl, "vs": {"wd": 0.5, "pbwn": 2.5}}
    evaluate({"nl": t}, results, {"floor_pct": 1.0})
    assert "lowest not resolved: within the A/A floor ±1.00 % of wd" in t["figure"]


def test_every_target_is_declared_by_its_method_with_its_numbers():
    """The targets the methods declare, in registry order: the numbers the bench has always held them to."""
    closed = (("form", "closed"),)
    assert declared_targets() == {
        "nl": CostTarget("foreach_norm_floor", overhead_pct=1.0, ratio=4.0, when=closed),
        "fwn": CostTarget("overhead", overhead_pct=5.0),
        "oblique-rsgd": CostTarget("fused_optimizer", speedup=3.0),
        "stiefel-rsgd": CostTarget("fused_optimizer", speedup=2.0),
        "parseval": CostTarget("overhead", overhead_pct=5.0),
        "oni": CostTarget("batched", overhead_pct=15.0, speedup=3.0, when=(("batched", True),)),
        "olm": CostTarget("batched", overhead_pct=15.0, speedup=3.0, when=(("batched", True),)),
        "so": CostTarget("batched", overhead_pct=3.0, speedup=3.0, when=(("batched", True),)),
        "srip": CostTarget("batched", overhead_pct=3.0, speedup=3.0, when=(("batched", True),)),
    }
    with pytest.raises(ValueError, match="a batched target needs overhead_pct"):
        CostTarget("batched", speedup=3.0)
    with pytest.raises(ValueError, match="measure must be one of"):
        CostTarget("fastest")


def test_batched_targets_hold_on_both_conditions():
    for name, target in BATCHED.items():
        limit = target.overhead_pct
        for overhead, speedup, holds in (
            (limit - 0.5, 3.5, True),
            (limit + 0.5, 3.5, False),
            (1.0, 2.5, False),
        ):
            t = {"batched_ms": 1.0, "per_layer_ms": speedup, "speedup": speedup}
            evaluate({name: t}, _methods(**{name: overhead}), {"floor_pct": 2.0})
            assert t["holds"] is holds and t["overhead_resolved"] is (overhead > 2.0)
            assert f"overhead ≤ {limit:g} %" in t["target"] and t["caveat"] == ""
        t = {"batched_ms": 1.0, "per_layer_ms": 4.0, "speedup": 4.0}
        evaluate({name: t}, _methods(**{name: 1.0}), {"floor_pct": limit + 1})
        assert t["holds"] and t["caveat"].startswith("not resolved: the A/A floor")


def test_overhead_targets_hold_on_the_step_overhead_alone():
    """An ``overhead`` target (parseval, fwn) is read off the rounds: nothing more is measured, the verdict is
    the point estimate against the bound, resolved or not against the A/A floor (Note [noise floor])."""
    overhead = {name: t for name, t in declared_targets().items() if t.measure == "overhead"}
    assert set(overhead) >= {"parseval", "fwn"}
    for name, target in overhead.items():
        limit = target.overhead_pct
        for value, floor, holds, resolved_, caveat in (
            (limit - 0.5, 1.0, True, True, False),
            (limit + 0.5, 1.0, False, True, False),
            (0.5, 1.0, True, False, False),
            (limit - 0.5, limit + 1.0, True, False, True),  # a floor wider than the bound: not resolved
        ):
            t: dict = {}
            evaluate({name: t}, _methods(**{name: value}), {"floor_pct": floor})
            assert (t["holds"], t["overhead_resolved"], bool(t["caveat"])) == (holds, resolved_, caveat)
            assert t["target"] == f"overhead ≤ {limit:g} %" and t["overhead_pct"] == value
            assert f"step overhead {value:.2f} ± 0.10 %" in t["figure"] and "A/A floor" in t["figure"]
        t = {}
        evaluate({name: t}, _methods(**{name: 1.0}), None)  # a record without the A/A control
        assert t["holds"] and t["overhead_resolved"] is None and "A/A floor" not in t["figure"]
        t = {}
        evaluate({name: t}, _methods(**{name: 1.0}), {"floor_pct": 1.0}, device_type="cuda")
        assert t["holds"] is None and t["defined_on"] == "cpu"


def test_batched_speedup_spread_is_printed_and_caveats_a_straddled_target():
    # the quartiles of the paired ratios are printed; the verdict stays the point estimate's, with a caveat
    # when they lie on both sides of the target (Note [speedup spread])
    for q1, q3, caveat in ((3.2, 3.6, ""), (2.7, 3.3, "straddle 3×"), (2.0, 2.4, "")):
        t = {"batched_ms": 1.0, "per_layer_ms": 3.1, "speedup": 3.1, "speedup_q1": q1, "speedup_q3": q3}
        evaluate({"so": t}, _methods(so=1.0), {"floor_pct": 2.0})
        assert f"paired ratios {q1:.2f}–{q3:.2f}× (quartiles)" in t["figure"] and t["holds"]
        assert (caveat in t["caveat"]) if caveat else t["caveat"] == ""
    t = {"batched_ms": 1.0, "per_layer_ms": 3.1, "speedup": 3.1}  # a record from before the spread
    evaluate({"so": t}, _methods(so=1.0), {"floor_pct": 2.0})
    assert "paired ratios" not in t["figure"] and t["caveat"] == ""


def test_records_from_before_the_aa_control_still_read_and_print(record, tmp_path):
    old = json.loads(json.dumps(record))
    del old["aa"]
    for r in old["methods"].values():
        del r["overhead_resolved"]
    old["targets"] = {k: v for k, v in old["targets"].items() if k in ("nl", "oblique-rsgd")}
    for k in ("vs", "tied_with", "resolvably_lower", "floor_pct"):
        del old["targets"]["nl"][k]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    df = read_bench(path)
    assert list(df.columns) == list(CSV_COLUMNS) and list(df["method"]) == list_methods()
    table = format_table(old)
    assert not any(ln.startswith("A/A control") for ln in table.splitlines()) and "target nl:" in table


def test_cli_writes_json_and_csv_that_read_bench_reads(tmp_path, capsys):
    j, c = tmp_path / "out.json", tmp_path / "out.csv"
    argv = ["bench", "--model", "cnn", "--methods", "nl,wd", "--batch-size", "2", "--rounds", "2"]
    argv += ["--warmup", "0", "--micro-repeats", "2", "--threads", "1", "--no-progress", "--json", str(j)]
    assert main(argv + ["--csv", str(c)]) == 0
    out = capsys.readouterr().out
    assert "overhead %" in out and "target nl:" in out and "oblique-rsgd" not in out
    rec = json.loads(j.read_text())
    assert list(rec["methods"]) == ["baseline", "nl", "wd"]
    for df in (read_bench(j), read_bench(c)):
        assert list(df.columns) == list(CSV_COLUMNS) and list(df["method"]) == ["baseline", "nl", "wd"]
        assert (df["model"] == "cnn").all() and (df["num_params"] > 0).all()


def test_cli_errors_are_one_line(capsys):
    assert main(["bench", "--methods", "nl,nope", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown method(s) nope" in err
    assert main(["bench", "--model", "nope", "--no-progress"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    try:
        import torchvision  # noqa: F401
    except ImportError:
        assert main(["bench", "--model", "resnet50", "--methods", "nl", "--no-progress"]) == 2
        assert "install oblique[vision]" in capsys.readouterr().err
    # the library names the setting; the command line renders it as its flag
    with pytest.raises(BenchError, match="^rounds must be an integer >= 1; got 0$"):
        bench(model="cnn", rounds=0)
    assert main(["bench", "--model", "cnn", "--rounds", "0", "--no-progress"]) == 2
    assert capsys.readouterr().err == "oblique: error: --rounds must be an integer >= 1; got 0\n"


def test_sweeps_write_records(tmp_path):
    assert SWEEPS["width"] == [f"wrn28-{k}" for k in range(1, 11)]
    assert SWEEPS["depth"] == ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]
    kw = dict(methods="baseline,nl", batch_size=1, rounds=1, warmup=0, micro_repeats=1, threads=1)
    recs = run_sweep("depth", tmp_path / "depth", targets=False, progress=False, **kw)
    assert [r["depth"] for r in recs] == [20, 32, 44, 56, 110]
    df = read_bench(tmp_path / "depth")
    assert len(df) == 10 and df.groupby("model")["num_params"].first()["resnet110"] > 1.7e6
    assert len(read_bench(tmp_path / "depth" / "bench.csv")) == 10
    # the width sweep at toy widths (WRN-10-k), through the same code
    recs = run_sweep(
        "width", tmp_path / "width", models=["wrn10-1", "wrn10-2"], targets=False, progress=False, **kw
    )
    assert [r["width"] for r in recs] == [1, 2]
    assert recs[1]["num_params"] > recs[0]["num_params"]
    # a sweep folder is resumable: records already there are read back, not benched again
    again = run_sweep("width", tmp_path / "width", models=["wrn10-1", "wrn10-2"], **kw)
    assert again == recs


def test_read_bench_rejects_other_json(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"schema": "something else"}))
    with pytest.raises(RecordError, match="bench record"):
        read_bench(p)
    with pytest.raises(RecordError, match="no such file"):
        read_bench(tmp_path / "missing.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecordError, match="no bench records"):
        read_bench(tmp_path / "empty")
    assert torch.get_num_threads() >= 1


@pytest.mark.parametrize(
    "argv,expect",
    [
        (["--num-classes", "0"], "--num-classes must be an integer from 1 to 100000; got 0"),
        (["--batch-size", "1000000000"], "--batch-size must be an integer from 1 to 65536"),
        (["--time-budget", "nan"], "--time-budget must be a number of seconds > 0; got nan"),
        (["--methods", ""], "--methods must name at least one method"),
        (["--json", "EMPTY"], "--json EMPTY is a folder; give a file name in it"),
        (["--csv", "EMPTY"], "--csv EMPTY is a folder; give a file name in it"),
        (["--json", "FILE/b.json"], "--json FILE/b.json cannot be written (folder FILE:"),
        (["--csv", ""], "--csv must be a file name"),
        (["--sweep", "width", "--out", "FILE"], "--out FILE exists and is not a folder"),
    ],
)
def test_bench_refuses_bad_settings_and_outputs_before_benching(world, argv, expect):
    refused(world, ["bench", "--model", "cnn", *argv], expect)


def test_write_csv_leaves_no_temporary_file(tmp_path):
    write_csv([], tmp_path / "b.csv")
    assert [p.name for p in tmp_path.iterdir()] == ["b.csv"]
