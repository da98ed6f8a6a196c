"""oblique.records: atomic writes, the metrics schema, tolerant reading."""

import json
import math

import pytest

from oblique import records


def test_write_json_atomic_roundtrip_and_no_temp_left(tmp_path):
    p = tmp_path / "sub" / "summary.json"
    records.write_json_atomic(p, {"a": 1.5, "nan": float("nan"), "nested": {"inf": float("inf")}})
    assert json.loads(p.read_text()) == {"a": 1.5, "nan": "nan", "nested": {"inf": "inf"}}  # strict JSON
    back = records.read_json(p)  # non-finite floats come back as floats
    assert back["a"] == 1.5 and math.isnan(back["nan"]) and back["nested"]["inf"] == math.inf
    assert [f.name for f in p.parent.iterdir()] == ["summary.json"]


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(records.RecordError, match="no such file"):
        records.read_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"status": "ok", ')
    with pytest.raises(records.RecordError, match="bad.json: not valid JSON"):
        records.read_json(bad)


def _write_metrics(run, lines):
    run.mkdir(exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(lines))


META = {"type": "meta", "schema_version": records.SCHEMA_VERSION, "steps_per_epoch": 2, "total_steps": 2,
        "targets": "conv", "layers": ["c"]}  # fmt: skip


def _step(n: int) -> dict:
    return {"type": "step", "step": n, "epoch": n / 2, "loss": 2.0 / n, "lr": 0.1, "reg": None}


def test_truncated_last_line_is_tolerated(tmp_path):
    run = tmp_path / "run"
    with records.MetricsWriter(run.mkdir() or run / "metrics.jsonl") as w:
        w.write(META)
        w.write(_step(1))
        w.write(_step(2))
    text = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(text[:-9])  # cut the last record mid-write
    steps = records.read_metrics(run, "step")
    assert [r["step"] for r in steps] == [1]


def test_corrupt_middle_line_is_skipped_with_a_warning_naming_file_and_line(tmp_path):
    run = tmp_path / "run"
    _write_metrics(run, [json.dumps(META) + "\n", "{garbage\n", json.dumps(_step(1)) + "\n"])
    with pytest.warns(
        records.RecordWarning, match=r"metrics.jsonl: skipped 1 corrupt line\(s\): line 2 \(not valid JSON\)"
    ):
        recs = records.read_metrics(run)
    assert [r["type"] for r in recs] == ["meta", "step"]


def test_newer_schema_is_refused(tmp_path):
    run = tmp_path / "run"
    _write_metrics(run, [json.dumps({"type": "meta", "schema_version": records.SCHEMA_VERSION + 1}) + "\n"])
    with pytest.raises(records.RecordError, match="upgrade oblique"):
        records.read_metrics(run)


def test_metrics_frame_flattens_drift(tmp_path):
    run = tmp_path / "run"
    d = {"norm_dev_mean": 0.1, "norm_dev_max": 0.2, "ddiag_dev": 0.3, "offdiag_dev": 0.4}
    _write_metrics(
        run,
        [
            json.dumps({"type": "drift", "step": s, "epoch": s / 10, "mean": d, "layers": {"c": d}}) + "\n"
            for s in (0, 5)
        ],
    )
    df = records.metrics_frame(run, "drift")
    assert list(df["step"]) == [0, 5]
    assert list(df["offdiag_dev"]) == [0.4, 0.4]


def test_is_finished(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert not records.is_finished(run)
    records.write_json_atomic(run / "summary.json", {"status": "interrupted"})
    assert not records.is_finished(run)
    nan = float("nan")
    diverged = {"status": "diverged", "test_error": nan, "test_error_top5": nan, "train_time_s": 1.0,
                "regularizer_time_s": 0.0, "drift": {"mean": {}, "layers": {}}}  # fmt: skip
    records.write_json_atomic(run / "summary.json", diverged)
    assert not records.is_finished(run)  # no metrics.jsonl: its records are not whole
    _write_metrics(
        run, [json.dumps(META) + "\n", json.dumps({"type": "diverged", "step": 1, "loss": "nan"}) + "\n"]
    )
    assert records.is_finished(run)
    (run / "summary.json").write_text("{half")
    assert not records.is_finished(run)
