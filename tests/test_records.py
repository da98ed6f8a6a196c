"""oblique.records: atomic writes, the metrics schema, tolerant reading."""

import json
import math
import os
from pathlib import Path

import pytest
import torch

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


# --------------------------------------------------------------------------- failed writes and corrupt files
def test_a_folder_that_cannot_be_written_is_named_not_a_temporary_file(tmp_path, monkeypatch):
    def denied(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(Path(dir) / ".x.tmp123"))

    monkeypatch.setattr("tempfile.mkstemp", denied)
    with pytest.raises(PermissionError) as e:
        records.write_atomic(tmp_path / "summary.json", "{}")
    assert e.value.filename == str(tmp_path / "summary.json")


def _open_on(target: str) -> int:
    """How many of this process's file descriptors are open on ``target`` (Linux: ``/proc/self/fd``)."""
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == target)


def test_a_full_disk_names_the_file(tmp_path):
    (tmp_path / "metrics.jsonl").symlink_to("/dev/full")  # every write: ENOSPC
    before = _open_on("/dev/full")
    w = records.MetricsWriter(tmp_path / "metrics.jsonl")
    assert _open_on("/dev/full") == before + 1
    with pytest.raises(OSError) as e:
        w.write({"type": "meta"})
    assert e.value.filename == str(tmp_path / "metrics.jsonl") and "No space left" in e.value.strerror
    with pytest.raises(OSError) as e:
        w.close()  # the buffered line cannot be written either; the file is closed all the same
    assert e.value.filename == str(tmp_path / "metrics.jsonl") and _open_on("/dev/full") == before


def _read_as_saved(got, saved: dict) -> bool:
    return (
        isinstance(got, dict)
        and got.keys() == saved.keys()
        and torch.equal(got["w"], saved["w"])
        and got["metrics_offset"] == saved["metrics_offset"]
    )


def test_a_corrupt_torch_file_is_a_record_error(tmp_path):
    """Cut, flipped or random bytes of a torch file are refused in one line that names it (torch's reader
    raises IndexError, BadZipFile, ... and warns about odd pickle protocols on some of them). Garbage is
    never read: a cut or random file is always refused, a file with flipped bytes is refused or, where the
    flips missed every byte that is read, reads back exactly what was saved."""
    import random

    saved = {"w": torch.ones(3), "metrics_offset": 5}
    torch.save(saved, tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    rng = random.Random(0)
    refusals = [0, 0, 0]  # cut, flipped, random
    for i in range(120):
        bad = bytearray(data)
        if i % 3 == 0:
            bad = bad[: rng.randrange(len(bad))]
        elif i % 3 == 1:
            for _ in range(3):
                bad[rng.randrange(len(bad))] = rng.randrange(256)
        else:
            bad = bytearray(rng.randrange(256) for _ in range(rng.randrange(1, 100)))
        (tmp_path / "bad.pt").write_bytes(bytes(bad))
        try:
            got = records.read_torch(tmp_path / "bad.pt")
        except records.RecordError as e:
            assert "bad.pt" in str(e) and "\n" not in str(e)
            refusals[i % 3] += 1
            continue
        assert i % 3 == 1 and _read_as_saved(got, saved), f"garbage read from example {i}: {got!r}"
    assert refusals[0] == refusals[2] == 40 and refusals[1] > 0
