"""``oblique bench`` at tiny size: every registered method, the record's fields, JSON/CSV, sweeps."""

from __future__ import annotations

import json

import pytest
import torch

from oblique.cli import main
from oblique.cost import CSV_COLUMNS, SCHEMA, SWEEPS, BenchError, bench, format_table, read_bench, run_sweep
from oblique.methods import list_methods
from oblique.records import RecordError

TINY = dict(batch_size=4, rounds=2, warmup=1, micro_repeats=2, threads=1, progress=False)
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
    table = format_table(record)
    for name in list_methods():
        assert f"\n{name} " in table
    lines = [ln for ln in table.splitlines() if ln.startswith("target ")]
    assert len(lines) == 2 and all(ln.endswith((": holds", ": does NOT hold")) for ln in lines)
    assert "_foreach_norm" in lines[0] and "geoopt" in lines[1]


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
