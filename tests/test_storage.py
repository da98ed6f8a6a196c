"""oblique.storage: atomic writes, the JSON codec, torch files, the folder lock."""

import json
import math
import os

import pytest
import torch

from oblique import storage


def test_write_json_atomic_roundtrip_and_no_temp_left(tmp_path):
    p = tmp_path / "sub" / "summary.json"
    storage.write_json_atomic(p, {"a": 1.5, "nan": float("nan"), "nested": {"inf": float("inf")}})
    assert json.loads(p.read_text()) == {"a": 1.5, "nan": "nan", "nested": {"inf": "inf"}}  # strict JSON
    back = storage.read_json(p)  # non-finite floats come back as floats
    assert back["a"] == 1.5 and math.isnan(back["nan"]) and back["nested"]["inf"] == math.inf
    assert [f.name for f in p.parent.iterdir()] == ["summary.json"]


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(storage.RecordError, match="no such file"):
        storage.read_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"status": "ok", ')
    with pytest.raises(storage.RecordError, match="bad.json: not valid JSON"):
        storage.read_json(bad)


def test_the_json_lines_writer_appends_strict_json_and_counts_its_bytes(tmp_path):
    path = tmp_path / "log.jsonl"
    with storage.JsonLinesWriter(path) as w:
        w.write({"loss": float("nan"), "step": 1})
        first = w.offset
    with storage.JsonLinesWriter(path, mode="a") as w:
        w.write({"loss": float("-inf"), "step": 2})
        assert w.offset == path.stat().st_size
    lines = path.read_text().splitlines()
    assert (
        lines == ['{"loss": "nan", "step": 1}', '{"loss": "-inf", "step": 2}'] and first == len(lines[0]) + 1
    )
    assert storage.loads_json(lines[1]) == {"loss": -math.inf, "step": 2}


def test_write_atomic_takes_text_bytes_or_a_writer_and_leaves_no_temporary_file_on_failure(tmp_path):
    p = tmp_path / "f.bin"
    storage.write_atomic(p, "text")
    assert p.read_text() == "text" and oct(p.stat().st_mode & 0o777) == "0o644"
    storage.write_atomic(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"

    def fails(f):
        f.write(b"half")
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        storage.write_atomic(p, fails)
    assert p.read_bytes() == b"\x00\x01" and os.listdir(tmp_path) == ["f.bin"]


def test_torch_files_round_trip_and_a_pickled_object_is_refused(tmp_path):
    storage.save_torch(tmp_path / "w.pt", {"w": torch.arange(3.0)})
    assert torch.equal(storage.read_torch(tmp_path / "w.pt")["w"], torch.arange(3.0))
    torch.save({"f": storage.FolderLock}, tmp_path / "obj.pt")  # a class: not tensors and containers
    with pytest.raises(storage.RecordError, match="obj.pt: holds something other than tensors"):
        storage.read_torch(tmp_path / "obj.pt")
    with pytest.raises(storage.RecordError, match="missing.pt: no such file"):
        storage.read_torch(tmp_path / "missing.pt")


def test_a_folder_lock_is_exclusive_and_says_who_holds_it(tmp_path):
    with storage.FolderLock(tmp_path / "run"):
        assert (tmp_path / "run" / (storage.LOCK_FILE + ".pid")).read_text() == f"{os.getpid()}\n"
        with pytest.raises(
            storage.FolderLockedError,
            match=rf"run folder .* in use by another oblique run \(pid {os.getpid()}\)",
        ):
            with storage.FolderLock(tmp_path / "run"):
                pass
    assert not (tmp_path / "run" / (storage.LOCK_FILE + ".pid")).exists()
    with storage.FolderLock(tmp_path / "run"):  # released: free again
        pass
    assert issubclass(storage.FolderLockedError, storage.RecordError)
    assert json.loads(storage.dumps_json({1: (1.5, math.inf)})) == {"1": [1.5, "inf"]}
