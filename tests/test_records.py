"""oblique.records: the run folder's schema, tolerant reading."""

import json

import pytest
import torch

from oblique import records, storage


def _write_metrics(run, lines):
    run.mkdir(exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(lines))


META = {
    "type": "meta",
    "schema_version": records.SCHEMA_VERSION,
    "steps_per_epoch": 2,
    "total_steps": 2,
    "targets": "conv",
    "layers": ["c"],
}


def _step(n: int) -> dict:
    return {"type": "step", "step": n, "epoch": n / 2, "loss": 2.0 / n, "lr": 0.1, "reg": None}


def test_truncated_last_line_is_tolerated(tmp_path):
    run = tmp_path / "run"
    with storage.JsonLinesWriter(run.mkdir() or run / "metrics.jsonl") as w:
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
    storage.write_json_atomic(run / "summary.json", {"status": "interrupted"})
    assert not records.is_finished(run)
    nan = float("nan")
    diverged = {
        "status": "diverged",
        "test_error": nan,
        "test_error_top5": nan,
        "train_time_s": 1.0,
        "regularizer_time_s": 0.0,
        "drift": {"mean": {}, "layers": {}},
    }
    storage.write_json_atomic(run / "summary.json", diverged)
    assert not records.is_finished(run)  # no metrics.jsonl: its records are not whole
    _write_metrics(
        run, [json.dumps(META) + "\n", json.dumps({"type": "diverged", "step": 1, "loss": "nan"}) + "\n"]
    )
    assert records.is_finished(run)
    (run / "summary.json").write_text("{half")
    assert not records.is_finished(run)


def test_the_readers_raise_the_one_record_error_and_records_holds_no_storage_name():
    """``records.RecordError`` is the storage layer's (one class: ``except records.RecordError`` catches a
    file the storage layer cannot read); nothing else of :mod:`oblique.storage` is reachable through
    :mod:`oblique.records` (one path per name)."""
    assert records.RecordError is storage.RecordError
    assert set(records.__all__) & set(storage.__all__) == {"RecordError"}
    assert [n for n in storage.__all__ if n != "RecordError" and hasattr(records, n)] == []


def test_a_corrupt_summary_is_a_record_error_of_both_paths(tmp_path):
    (tmp_path / "summary.json").write_text("{half")
    with pytest.raises(records.RecordError, match="summary.json: not valid JSON"):
        records.read_summary(tmp_path)


def test_a_resumed_writer_never_writes_past_the_end_of_its_file(tmp_path):
    """A position beyond the end of metrics.jsonl is refused, never padded (Note [checkpoint identity])."""
    run = tmp_path / "run"
    _write_metrics(run, [json.dumps(META) + "\n"])
    before = (run / records.METRICS).read_bytes()
    for at in (len(before) + 1, 10**9):
        with pytest.raises(storage.RecordError, match="it is not written past its end"):
            records.RunWriter(run, resume_at=at)
        assert (run / records.METRICS).read_bytes() == before
    with records.RunWriter(run, resume_at=len(before)) as w:  # its end: appended to
        w.step(1, 0.5, loss=1.0, lr=0.1, reg=None)
    assert [r["type"] for r in records.read_metrics(run)] == ["meta", "step"]


def test_a_checkpoint_holds_the_identity_it_is_checked_by(tmp_path):
    run = tmp_path / "run"
    identity = {"config": {"method": "nl", "seed": 4}, "seed": 4}
    with records.RunWriter(run, run=identity) as w:
        w.meta(steps_per_epoch=2, total_steps=2, targets="conv", layers=["c"])
        w.checkpoint({"step": 0, "w": torch.ones(2)})
        w.step(1, 0.5, loss=1.0, lr=0.1, reg=None)  # written after it: a resume cuts it off
    ckpt = records.read_checkpoint(run)
    records.check_checkpoint(run, ckpt, identity)
    with pytest.raises(storage.RecordError, match=r"belongs to another run \(seed 4\)"):
        records.check_checkpoint(run, ckpt, {**identity, "seed": 5})
    with pytest.raises(storage.RecordError, match=r'\(method "nl" in the checkpoint, "wd" in config.json\)'):
        records.check_checkpoint(run, ckpt, {"config": {"method": "wd", "seed": 4}, "seed": 4})
    ckpt["w"] += 1
    with pytest.raises(storage.RecordError, match="do not match their digest"):
        records.check_checkpoint(run, ckpt, identity)
