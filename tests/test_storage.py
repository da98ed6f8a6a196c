"""oblique.storage: atomic writes, the JSON codec, torch files, the folder lock."""

import json
import math
import os
from pathlib import Path

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


# --------------------------------------------------------------------------- failed writes and corrupt files
def test_a_folder_that_cannot_be_written_is_named_not_a_temporary_file(tmp_path, monkeypatch):
    def denied(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(Path(dir) / ".x.tmp123"))

    monkeypatch.setattr("tempfile.mkstemp", denied)
    with pytest.raises(PermissionError) as e:
        storage.write_atomic(tmp_path / "summary.json", "{}")
    assert e.value.filename == str(tmp_path / "summary.json")


def _open_on(target: str) -> int:
    """How many of this process's file descriptors are open on ``target`` (Linux: ``/proc/self/fd``)."""
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == target)


def test_a_full_disk_names_the_file(tmp_path):
    (tmp_path / "metrics.jsonl").symlink_to("/dev/full")  # every write: ENOSPC
    before = _open_on("/dev/full")
    w = storage.JsonLinesWriter(tmp_path / "metrics.jsonl")
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
            got = storage.read_torch(tmp_path / "bad.pt")
        except storage.RecordError as e:
            assert "bad.pt" in str(e) and "\n" not in str(e)
            refusals[i % 3] += 1
            continue
        assert i % 3 == 1 and _read_as_saved(got, saved), f"garbage read from example {i}: {got!r}"
    assert refusals[0] == refusals[2] == 40 and refusals[1] > 0


def test_the_content_digest_of_a_torch_file_is_the_same_before_and_after(tmp_path):
    """Note [checkpoint identity] in oblique.records: a file can carry the digest of its contents."""
    opt = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))])
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    opt.step()
    state = {
        "w": torch.arange(6.0).reshape(2, 3).t(),  # not contiguous
        "half": torch.ones(2, dtype=torch.bfloat16),
        "flags": torch.tensor([True, False]),
        "optimizer": opt.state_dict(),
        "python": (3, tuple(range(5)), None),
        "nan": float("nan"),
    }
    digest = storage.content_digest(state)
    storage.save_torch(tmp_path / "s.pt", state)
    assert storage.content_digest(storage.read_torch(tmp_path / "s.pt")) == digest
    changed = storage.read_torch(tmp_path / "s.pt")
    changed["w"][0, 0] = -0.0  # one bit
    assert storage.content_digest(changed) != digest
    for other in ({**state, "half": state["half"].float()}, {**state, "nan": 0.0}, {**state, "extra": None}):
        assert storage.content_digest(other) != digest
    with pytest.raises(TypeError, match="tensors and plain containers"):
        storage.content_digest({"path": Path("x")})


def test_the_json_lines_writer_keeps_the_digest_of_its_file(tmp_path):
    import hashlib

    p = tmp_path / "m.jsonl"
    with storage.JsonLinesWriter(p) as w:
        w.write({"a": 1})
    with storage.JsonLinesWriter(p, mode="a") as w:  # appending: the digest of what was there, and more
        w.write({"b": float("inf")})
        assert w.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()


def test_remove_temporaries_removes_only_those_of_its_file(tmp_path):
    target = tmp_path / "checkpoint.pt"
    for name in (
        ".checkpoint.pt.abc.tmp",
        ".checkpoint.pt.x_y.tmp",
        ".model.pt.abc.tmp",
        "checkpoint.pt.tmp",
    ):
        (tmp_path / name).write_text("left")
    removed = storage.remove_temporaries(target)
    assert sorted(p.name for p in removed) == [".checkpoint.pt.abc.tmp", ".checkpoint.pt.x_y.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.pt.abc.tmp", "checkpoint.pt.tmp"]
