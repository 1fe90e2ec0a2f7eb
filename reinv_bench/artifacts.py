"""Content-addressed cache of trained models, priors and reconstructions.

An artifact is a dict of tensors and plain values saved with ``torch.save`` under its step key,
beside a small JSON *record* written last (the commit marker):

    artifacts/ab/abcdef....pt      the payload, which also holds its own key
    artifacts/ab/abcdef....json    {"key", "sha256" of the .pt bytes, "deps": {key: sha256}, "meta"}

- **Verified on load.** The payload's SHA-256 must equal the record's and the key stored inside it
  must be its own, so a flipped byte or an artifact copied over another is detected, never used.
  A file that fails is moved aside (``.corrupt``) and the step is recomputed.
- **Bound to what it was built from.** ``deps`` records the SHA-256 of every artifact the step
  read; when a dependency is rebuilt (other bytes), its dependents no longer match and are
  rebuilt too (``Runner`` checks before reusing anything).
- **Atomic.** Files are written to a temporary name and renamed; a payload without its record
  counts as absent. Temporaries left by a killed process are removed when the cache is opened.
- Loaded with ``weights_only=True``: never unpickles arbitrary objects.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class ArtifactError(RuntimeError):
    pass


def _disk_error(path: Path, exc: OSError) -> ArtifactError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why = "no space left on the device; free some space or pass --workdir on another disk"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        why = "the folder is not writable; pass a writable --workdir"
    else:
        why = f"{exc.strerror or exc}; pass a --workdir that can be written"
    return ArtifactError(f"cannot write {path}: {why}")


def write_atomic(path: Path, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` a temporary file beside ``path``, then rename it to ``path``. Disk errors
    (full, read-only) become one-line ``ArtifactError``s that say what to do."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise _disk_error(path, exc) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return path


def _write_bytes(data: bytes) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return write


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_TMP = re.compile(r"\.tmp(\d+)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Artifacts:
    def __init__(self, root: Path) -> None:
        self.root = Path(root) / "artifacts"
        self._verified: dict[str, tuple[int, int, str]] = {}  # key -> (size, mtime_ns, sha256)
        self.clean_temporaries()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pt"

    def _record_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def clean_temporaries(self) -> list[Path]:
        """Remove ``*.tmpPID`` files whose writing process is gone (killed between write and rename)."""
        removed = []
        if self.root.is_dir():
            for tmp in self.root.glob("*/*.tmp*"):
                m = _TMP.search(tmp.name)
                if m and not _alive(int(m.group(1))):
                    try:
                        tmp.unlink()
                        removed.append(tmp)
                    except OSError:
                        pass
        return removed

    def check_writable(self) -> None:
        """Raise a one-line ``ArtifactError`` when the cache cannot be written (read-only, full)."""
        write_atomic(self.root / f".probe{os.getpid()}", _write_bytes(b"ok")).unlink()

    @contextmanager
    def lock(self, key: str, poll: float = 0.2) -> Iterator[None]:
        """Hold the per-step lock ``KEY.lock`` (created atomically; holds "host pid"). A lock whose
        process is gone (killed, on this host) is taken over; another live holder is waited for."""
        path = self.root / key[:2] / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{socket.gethostname()} {os.getpid()}"
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    holder = path.read_text()
                except OSError:
                    continue  # released meanwhile
                host, _, pid = holder.partition(" ")
                if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                    stale = path.with_name(f"{path.name}.stale{os.getpid()}")
                    try:  # take it over only if it is still the dead holder's
                        os.replace(path, stale)
                        if stale.read_text() != holder:
                            os.replace(stale, path)  # a live one arrived meanwhile: give it back
                    except OSError:
                        pass
                    stale.unlink(missing_ok=True)
                    continue
                time.sleep(poll)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me)
            break
        try:
            yield
        finally:
            path.unlink(missing_ok=True)

    def record(self, key: str) -> dict[str, Any] | None:
        """The artifact's record (sha256, deps, meta), or None when it is absent or unreadable."""
        try:
            rec = json.loads(self._record_path(key).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(rec, dict) or rec.get("key") != key or not self.path(key).is_file():
            return None
        return rec

    def exists(self, key: str) -> bool:
        return self.record(key) is not None

    def save(self, key: str, obj: dict[str, Any], deps: dict[str, str] | None = None,
             meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write ``obj`` under ``key``; ``deps`` maps each artifact it was built from to that
        artifact's sha256. Returns the record."""
        import torch  # here, not at import: the CLI maps ArtifactError without loading torch

        buf = io.BytesIO()
        torch.save({**obj, "key": key}, buf)
        data = buf.getvalue()
        rec = {"key": key, "sha256": sha256_bytes(data), "deps": dict(deps or {}), "meta": meta or {}}
        self._record_path(key).unlink(missing_ok=True)  # the payload changes: no record until it is whole
        path = write_atomic(self.path(key), _write_bytes(data))
        st = path.stat()
        write_atomic(self._record_path(key), _write_bytes(json.dumps(rec, default=str).encode()))
        self._verified[key] = (st.st_size, st.st_mtime_ns, rec["sha256"])
        return rec

    def _reject(self, key: str, why: str) -> ArtifactError:
        path = self.path(key)
        bad = path.with_suffix(".corrupt")
        try:
            os.replace(path, bad)
            moved = f"moved it to {bad}"
        except OSError:
            moved = "could not move it aside"
        self._record_path(key).unlink(missing_ok=True)
        self._verified.pop(key, None)
        return ArtifactError(f"artifact {path} {why}; {moved}. It is recomputed on the next run; "
                             "stored results are untouched.")

    def _read_verified(self, key: str) -> tuple[bytes, dict[str, Any]]:
        rec = self.record(key)
        path = self.path(key)
        if rec is None:
            raise ArtifactError(f"artifact {key} is missing ({path}); rerun to recompute it")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ArtifactError(f"artifact {path} cannot be read: {exc.strerror or exc}") from None
        if sha256_bytes(data) != rec["sha256"]:
            raise self._reject(key, "does not match its recorded SHA-256 (corrupted or replaced)")
        return data, rec

    def digest(self, key: str) -> str | None:
        """The artifact's verified sha256, or None when it is absent or fails verification (then
        it is moved aside). Each file is hashed once per process unless it changes."""
        rec = self.record(key)
        if rec is None:
            return None
        try:
            st = self.path(key).stat()
        except OSError:
            return None
        if self._verified.get(key) == (st.st_size, st.st_mtime_ns, rec["sha256"]):
            return rec["sha256"]
        try:
            self._read_verified(key)
        except ArtifactError:
            return None
        self._verified[key] = (st.st_size, st.st_mtime_ns, rec["sha256"])
        return rec["sha256"]

    def load(self, key: str) -> dict[str, Any]:
        import torch

        data, _ = self._read_verified(key)
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else ""
            raise self._reject(key, f"could not be loaded ({type(exc).__name__}: {first})") from None
        if not isinstance(obj, dict) or obj.get("key") != key:
            raise self._reject(key, f"holds another artifact ({obj.get('key') if isinstance(obj, dict) else '?'})")
        del obj["key"]
        return obj
