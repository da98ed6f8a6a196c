"""Files on disk, whatever they hold: atomic writes, strict JSON, torch files, folder locks.

The generic layer under every file the project writes (the run folder's schema is :mod:`oblique.records`,
the study folder's :mod:`oblique.study.folder`, the bench's :mod:`oblique.cost.record`):

- :func:`write_atomic` (the one atomic writer), :func:`write_text_atomic`, :func:`write_json_atomic`:
  readers see the old file or the new one, never half of it.
- The JSON codec (:func:`dumps_json`, :func:`loads_json`): strict JSON, with non-finite floats written
  as the strings ``"nan"``, ``"inf"``, ``"-inf"`` and read back as floats; :func:`read_json` reads a
  file with it; :class:`JsonLinesWriter` appends one object per line, flushed at once.
- :func:`save_torch` and :func:`read_torch`: ``torch.save`` through the atomic writer, and
  ``torch.load(..., weights_only=True)`` of an untrusted file; :func:`content_digest`, the SHA-256 of what
  such a file holds (tensors and plain containers), the same before it is saved and after it is read.
- :func:`remove_temporaries`: the temporary files a killed :func:`write_atomic` left beside a file.
- :class:`FolderLock`: the exclusive lock of a run or study folder (``.lock``, the holder's PID in
  ``.lock.pid``).

Every reader treats its file as untrusted: a file that is missing, unreadable or corrupt is a
:class:`RecordError` that names it, never a traceback. :class:`RecordError` is the error of every reader of
the project's files; :mod:`oblique.records` names it too, as the error of the run folder's readers.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import math
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from oblique.errors import ObliqueError

__all__ = [
    "LOCK_FILE",
    "FolderLock",
    "FolderLockedError",
    "JsonLinesWriter",
    "RecordError",
    "content_digest",
    "dumps_json",
    "loads_json",
    "read_json",
    "read_torch",
    "remove_temporaries",
    "save_torch",
    "write_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

#: The lock file of a locked folder (:class:`FolderLock`); ``LOCK_FILE + ".pid"`` holds the holder's PID.
LOCK_FILE = ".lock"


class RecordError(ObliqueError, ValueError):
    """A record cannot be read; the message names the file and what is wrong with it."""


class FolderLockedError(RecordError):
    """Another process holds the folder's lock."""


# --------------------------------------------------------------------------- the JSON codec
def _clean(obj: Any) -> Any:
    """Make ``obj`` strict JSON: non-finite floats become strings ("nan", "inf")."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


_NONFINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def _restore(obj: Any) -> Any:
    """Undo :func:`_clean`: the strings "nan", "inf", "-inf" become floats again."""
    if isinstance(obj, str):
        return _NONFINITE.get(obj, obj)
    if isinstance(obj, dict):
        return {k: _restore(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore(v) for v in obj]
    return obj


def dumps_json(obj: Any, *, indent: int | None = None) -> str:
    """``obj`` as strict JSON text: non-finite floats as the strings "nan", "inf", "-inf", keys as text.

    >>> dumps_json({"loss": float("nan"), "steps": [1, 2]})
    '{"loss": "nan", "steps": [1, 2]}'
    """
    return json.dumps(_clean(obj), indent=indent, allow_nan=False)


def loads_json(text: str) -> Any:
    """Undo :func:`dumps_json`: parse ``text``, the strings "nan", "inf", "-inf" read back as floats.

    >>> loads_json('{"loss": "inf"}')
    {'loss': inf}

    Raises:
        ValueError: not JSON (``json.JSONDecodeError``).
        RecursionError: nested too deep.
    """
    return _restore(json.loads(text))


# --------------------------------------------------------------------------- atomic writes
def write_atomic(path: str | os.PathLike, content: bytes | str | Callable[[BinaryIO], Any]) -> Path:
    """Write a file atomically: readers see the old file or the new one, never half of it.

    The one writer of every file the project writes (records, tables, bench CSV, ``model.pt``, the
    MNIST-1D cache, figures). ``content`` is the bytes, the text (UTF-8), or a function that writes into
    the open binary file (``lambda f: torch.save(state, f)``). The data goes to a temporary file in the
    same folder, is flushed to disk (``fsync``) and then renamed over ``path``; on any failure the
    temporary file is removed and ``path`` is left as it was. An ``OSError`` names ``path``, not the
    temporary file. The file is readable by everyone (mode 0644), as records are meant to be shared.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    try:  # a folder that cannot be made or written: the error names the target, not a temporary file
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".tmp")
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; records are for everyone to read
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that :func:`write_atomic` left beside ``path`` when its process was
    killed mid-write (``.NAME.*.tmp``); return them. Call it only where no other process writes ``path``
    (under the folder's :class:`FolderLock`): a write in progress has such a file too."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f"{glob.escape(_temporary_prefix(path))}*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`write_atomic`)."""
    write_atomic(path, text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as strict JSON to ``path`` atomically (non-finite floats as strings)."""
    write_atomic(path, dumps_json(obj, indent=2) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; raise :class:`RecordError` naming the file when it is missing, unreadable (a
    folder, no permission) or corrupt (not UTF-8, not JSON, nested too deep)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return _restore(json.load(f))
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file") from None
    except OSError as e:
        raise RecordError(f"{path}: cannot be read ({e.strerror or e})") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RecordError(f"{path}: not valid JSON ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text if len(text) <= 120 else text[:117] + "..."


class JsonLinesWriter:
    """Appends JSON objects to a file, one line each (:func:`dumps_json`), flushed at once, and keeps the
    SHA-256 of everything the file holds (:attr:`sha256`).

    Args:
        path: the file.
        mode: ``"w"`` starts it over, ``"a"`` appends to what it holds (read once, for the digest).
    """

    def __init__(self, path: str | os.PathLike, mode: str = "w"):
        self.path = Path(path)
        self._sha = hashlib.sha256()
        if mode == "a" and self.path.exists():
            with open(self.path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    self._sha.update(chunk)
        self._f = open(self.path, mode)

    def write(self, record: dict) -> None:
        line = dumps_json(record) + "\n"
        try:
            self._f.write(line)
            self._f.flush()
        except OSError as e:  # a full disk: say which file (the bare error names none)
            raise OSError(e.errno, e.strerror or str(e), str(self.path)) from e
        self._sha.update(line.encode())

    @property
    def sha256(self) -> str:
        """The SHA-256 (hex) of the file's bytes so far: what it held when opened, and every line since."""
        return self._sha.hexdigest()

    @property
    def offset(self) -> int:
        """The bytes of the file written so far (flushed first)."""
        self._f.flush()
        return self._f.tell()

    def close(self) -> None:
        try:
            self._f.close()
        except OSError as e:  # the last buffered line cannot be written (a full disk)
            raise OSError(e.errno, e.strerror or str(e), str(self.path)) from e

    def __enter__(self) -> JsonLinesWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- torch files
def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` through :func:`write_atomic`. A failed write (a full disk: torch raises
    ``RuntimeError``, not ``OSError``) becomes an ``OSError`` that names ``path``."""
    import torch

    path = Path(path)

    def write(f: BinaryIO) -> None:
        try:
            torch.save(obj, f)
        except RuntimeError as e:  # torch's zip writer reports a failed write as RuntimeError
            raise OSError(errno.EIO, f"cannot be written ({str(e).splitlines()[0]})", str(path)) from e

    write_atomic(path, write)


def content_digest(obj: Any) -> str:
    """The SHA-256 (hex) of what ``obj`` holds: every tensor's dtype, shape and bytes, every plain value
    (numbers, text, bytes, None, true and false) with its type, mappings key by key in sorted order, and
    lists and tuples alike. The digest of an object is the digest of what :func:`read_torch` reads back
    after :func:`save_torch`, wherever its tensors were (a GPU's are read on the CPU), so a file can carry
    the digest of its own contents and a reader can tell whether they are what was written.

    >>> content_digest({"a": [1, 2.0]}) == content_digest({"a": (1, 2.0)})
    True
    >>> content_digest({"a": 1}) == content_digest({"a": 1.0})
    False

    Raises:
        TypeError: something other than tensors and plain containers.
    """
    sha = hashlib.sha256()
    _digest_into(sha, obj)
    return sha.hexdigest()


def _digest_into(sha, obj: Any) -> None:
    import torch

    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        sha.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        sha.update(t.reshape(-1).view(torch.uint8).numpy())  # the tensor's bytes, whatever its dtype
    elif isinstance(obj, dict):
        items = sorted(obj.items(), key=lambda kv: (type(kv[0]).__name__, repr(kv[0])))
        sha.update(f"D{len(items)}:".encode())
        for key, value in items:
            _digest_into(sha, key)
            _digest_into(sha, value)
    elif isinstance(obj, list | tuple):  # torch.Size too
        sha.update(f"L{len(obj)}:".encode())
        for value in obj:
            _digest_into(sha, value)
    elif obj is None or isinstance(obj, bool | int | float | str | bytes | complex):
        sha.update(f"{type(obj).__name__}:{obj!r};".encode())  # repr: a float's every bit
    elif isinstance(obj, torch.dtype | torch.device):
        sha.update(f"{type(obj).__name__}:{obj};".encode())
    else:
        raise TypeError(f"content_digest takes tensors and plain containers; got {type(obj).__name__}")


def read_torch(path: str | os.PathLike) -> Any:
    """A ``.pt`` file written by this project, loaded with ``torch.load(..., weights_only=True)``: tensors
    and plain containers only. Anything else (a pickled object, a corrupt or truncated file) is refused.

    Raises:
        RecordError: the file is missing, corrupt, or holds more than tensors and containers.
    """
    import pickle

    import torch

    path = Path(path)
    try:
        _check_crcs(path)
        # a corrupt file makes torch warn (an odd pickle protocol): it is refused below
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file") from None
    except pickle.UnpicklingError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RecordError(
            f"{path}: holds something other than tensors and plain containers; refusing to load it "
            f"(torch.load weights_only: {first[:160]})"
        ) from None
    except Exception as e:  # an untrusted file: whatever torch's reader trips on (BadZipFile, ...)
        raise RecordError(
            f"{path}: not a readable torch file ({type(e).__name__}); it is corrupt or truncated"
        ) from None


def _check_crcs(path: Path) -> None:
    """Every record of the zip archive that ``torch.save`` writes matches its CRC-32. torch's reader does
    not check them: a flipped byte in a tensor's data would be read back as another number.

    Raises:
        zipfile.BadZipFile: not a zip archive, or a record whose bytes do not match its CRC-32.
    """
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise zipfile.BadZipFile(f"bad CRC-32 for {bad}")


# --------------------------------------------------------------------------- the folder lock
class FolderLock:
    """An exclusive lock on a run or study folder (``FOLDER/.lock``, through :mod:`filelock`), released
    when the process ends however it ends. The holder's PID is written beside it (``.lock.pid``) so that a
    refused process can say who holds it.

    Args:
        root: the folder (created if missing).
        what: what the folder is, in messages (``"run folder"``, ``"study folder"``).
        holder: what holds it, in messages (``"run"``, ``"study"``).

    Raises (on enter):
        FolderLockedError: another process holds it.
        RecordError: the folder's filesystem cannot lock files.
    """

    def __init__(self, root: str | os.PathLike, what: str = "run folder", holder: str = "run"):
        self.root, self.what, self.holder = Path(root), what, holder
        self._lock = None

    def __enter__(self) -> FolderLock:
        import filelock

        self.root.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(self.root / LOCK_FILE), timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            try:
                pid = (self.root / (LOCK_FILE + ".pid")).read_text().strip() or "unknown"
            except OSError:
                pid = "unknown"
            raise FolderLockedError(
                f"{self.what} {self.root} is in use by another oblique {self.holder} (pid {pid}); wait for it "
                "to end or choose another --out"
            ) from None
        except OSError as e:
            raise RecordError(
                f"{self.root}: this filesystem cannot lock files ({e.strerror or e}); put the {self.what} on a "
                "local or lock-capable filesystem"
            ) from None
        self._lock = lock
        write_atomic(self.root / (LOCK_FILE + ".pid"), f"{os.getpid()}\n")
        return self

    def release(self) -> None:
        if self._lock is not None:
            (self.root / (LOCK_FILE + ".pid")).unlink(missing_ok=True)
            self._lock.release()
            self._lock = None

    def __exit__(self, *exc) -> None:
        self.release()
