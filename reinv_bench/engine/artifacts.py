"""Content-addressed cache of trained models, priors and reconstructions.

An artifact is a dict of tensors and plain values saved with ``torch.save`` under its step key,
beside a small JSON *record* written last (the commit marker):

    artifacts/ab/abcdef....pt      the payload, which also holds its own key
    artifacts/ab/abcdef....json    {"key", "sha256" of the .pt bytes, "deps": {key: sha256}, "meta"}

- **Verified on load.** The payload's SHA-256 must equal the record's and the key stored inside it
  must be its own, so a flipped byte or an artifact copied over another is detected, never used.
  A file that fails is moved aside (``.corrupt``) and the step is recomputed. A file is hashed
  once per process unless it changes (size, mtime).
- **Streamed.** ``torch.save`` writes to the file and the SHA-256 is read back from it; loads are
  memory-mapped. No payload is ever held as a byte string beside the objects it holds.
- **Bound to what it was built from.** ``deps`` records the SHA-256 of every artifact the step
  read; when a dependency is rebuilt (other bytes), its dependents no longer match and are
  rebuilt too (``Runner`` checks before reusing anything).
- **Atomic.** Files are written to a temporary name and renamed; a payload without its record
  counts as absent. Temporaries left by a killed process are removed when the cache is opened.
- Loaded with ``weights_only=True``: never unpickles arbitrary objects.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reinv_bench.contract.files import ArtifactError, disk_error, file_sha256, write_atomic, write_bytes

_TMP = re.compile(r"\.tmp(\d+)$")
# what an artifact key can be (digests): a key read from a results database (another person's) is
# never a path
_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


LOCK_STALE_S = 60.0  # a step lock not refreshed for this long is stale, whatever its host and process
ENV_LOCK_STALE = "REINV_BENCH_LOCK_STALE"  # seconds, overrides LOCK_STALE_S (workers inherit it)


def lock_stale_seconds() -> float:
    """How long a step lock may go unrefreshed before another process takes it over."""
    text = os.environ.get(ENV_LOCK_STALE, "").strip()
    if not text:
        return LOCK_STALE_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ArtifactError(f"{ENV_LOCK_STALE}={text!r}: give a number of seconds above 0")
    return value


def _stderr(text: str) -> None:
    print(f"[reinv-bench] {text}", file=sys.stderr, flush=True)


def _kind(mode: int) -> str:
    """What a file of ``mode`` is, in words (for a message)."""
    kinds = [(stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket")]
    return next((name for test, name in kinds if test(mode)), "special file")


class StepLock:
    """A lock file that says who holds it and proves they still do.

    Created atomically (``O_EXCL``); it holds one JSON line: host, pid, since (UTC) and a random
    token. The holder refreshes its mtime every ``stale / 6`` seconds from a background thread (the
    *heartbeat*). A waiter takes the lock over when it is *stale*: its text and mtime unchanged for
    ``stale`` seconds while this process watched it (never the mtime against this host's clock: a
    skewed clock would take over a live lock), on any host and whatever its process id, so a lock
    left by a driver killed in another container or on a lost node is recovered without a human;
    a lock of this host whose process is gone is taken over at once. While waiting it prints, once,
    who holds the lock (a lock it cannot read, another user's say, is named and waited for, then
    refused; a damaged one is read with replacement characters; a directory or a dangling link in
    its place is refused at once). The holder removes the file on release only if it is still its
    own."""

    def __init__(
        self,
        path: Path,
        poll: float = 0.2,
        stale: float | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.poll = poll
        self.stale = lock_stale_seconds() if stale is None else stale
        self.notify = notify or _stderr
        self.text = ""
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> StepLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.text = json.dumps(
            {"host": socket.gethostname(), "pid": os.getpid(), "since": since, "token": secrets.token_hex(8)}
        )
        seen: tuple[str, int, float] | None = None  # (holder text, mtime_ns, when first seen unchanged)
        told = ""
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder, mtime_ns, why_unreadable = self._read_holder()
                if holder is None:
                    continue  # released meanwhile
                now = time.monotonic()
                if seen is None or seen[:2] != (holder, mtime_ns):  # the heartbeat changes its mtime
                    seen = (holder, mtime_ns, now)
                age = now - seen[2]  # unchanged while this process watched: no clock of another host read
                if why_unreadable:
                    if age >= self.stale:
                        raise ArtifactError(
                            f"the lock {self.path} cannot be read ({why_unreadable}) and has not changed for "
                            f"{age:.0f} s: remove it if no run holds it (or rerun with --break-locks)"
                        ) from None
                elif why := self._stale(holder, age):
                    if self._take_over(holder):
                        self.notify(
                            f"took over the lock {self.path.name} from {describe_holder(holder)}: {why}"
                        )
                    seen = None
                    continue
                if told != holder:
                    told = holder
                    who = (
                        f"which cannot be read ({why_unreadable})"
                        if why_unreadable
                        else f"held by {describe_holder(holder)}"
                    )
                    self.notify(
                        f"waiting for the lock {self.path}, {who}; it is taken over when unchanged for "
                        f"{self.stale:g} s (or stop that run, or rerun with --break-locks)"
                    )
                time.sleep(self.poll)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self.text)
            break
        self._beat = threading.Thread(target=self._heartbeat, name="reinv-lock-heartbeat", daemon=True)
        self._beat.start()
        return self

    def _read_holder(self) -> tuple[str | None, int, str | None]:
        """(the lock's text, its mtime, why it cannot be read); text None when it is gone (released). Its
        bytes are read as UTF-8 with replacement (a damaged lock is a lock of an unknown holder); a
        directory or a dangling symbolic link in its place is an ``ArtifactError`` at once (no run
        releases it); a file this user may not read is waited for like any lock."""
        try:
            st = os.lstat(self.path)
            if stat.S_ISLNK(st.st_mode):
                st = os.stat(self.path)
        except FileNotFoundError:
            if os.path.lexists(self.path):
                raise ArtifactError(
                    f"the lock {self.path} is a symbolic link to nothing: remove it (or rerun with "
                    "--break-locks)"
                ) from None
            return None, 0, None
        except OSError as exc:
            return f"stat {exc.errno}", 0, exc.strerror or str(exc)
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactError(
                f"the lock {self.path} is not a file (a {_kind(st.st_mode)}): remove it if no run uses this "
                "workdir (or rerun with --break-locks)"
            )
        try:
            return self.path.read_bytes().decode("utf-8", "replace"), st.st_mtime_ns, None
        except FileNotFoundError:
            return None, 0, None
        except OSError as exc:  # another user's lock, say: watched by its metadata
            return f"unreadable {st.st_size} {st.st_ino}", st.st_mtime_ns, exc.strerror or str(exc)

    def _stale(self, holder: str, age: float) -> str:
        """Why the lock held by ``holder``, last refreshed ``age`` seconds ago, is stale ('' if not)."""
        host, pid = parse_holder(holder)
        if host == socket.gethostname() and pid is not None and not _alive(pid):
            return f"process {pid} is gone"
        if age >= self.stale:
            return f"unchanged for {age:.0f} s while watched (stale after {self.stale:g} s)"
        return ""

    def _take_over(self, holder: str) -> bool:
        """Remove the lock if it still holds ``holder`` (renamed aside first, so that a lock created
        meanwhile by a live process is put back, not deleted)."""
        aside = self.path.with_name(f"{self.path.name}.stale{os.getpid()}")
        try:
            os.replace(self.path, aside)
            if aside.read_bytes().decode("utf-8", "replace") != holder:
                os.replace(aside, self.path)  # a live one arrived meanwhile: give it back
                return False
            return True
        except OSError:
            return False
        finally:
            aside.unlink(missing_ok=True)

    def _heartbeat(self) -> None:
        while not self._stop.wait(max(self.stale / 6, 0.01)):
            try:
                if self.path.read_text() != self.text:
                    return  # taken over (this process stalled past the stale time): not ours any more
                os.utime(self.path)
            except OSError:
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        try:
            if self.path.read_text() == self.text:
                self.path.unlink()
        except OSError:
            pass


def parse_holder(text: str) -> tuple[str, int | None]:
    """(host, pid) of a lock file's text: JSON, or "host pid" as written before heartbeats."""
    try:
        d = json.loads(text)
    except ValueError:
        d = None
    if isinstance(d, dict):
        pid = d.get("pid")
        return str(d.get("host", "?")), pid if isinstance(pid, int) else None
    host, _, pid = text.strip().partition(" ")
    return host, int(pid) if pid.isdigit() else None


def describe_holder(text: str) -> str:
    """'host H pid P since T' for a lock file's text."""
    host, pid = parse_holder(text)
    try:
        since = json.loads(text).get("since")
    except (ValueError, AttributeError):
        since = None
    return f"host {host} pid {pid if pid is not None else '?'}" + (f" since {since}" if since else "")


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
        write_atomic(self.root / f".probe{os.getpid()}", write_bytes(b"ok")).unlink()

    @contextmanager
    def lock(
        self,
        key: str,
        poll: float = 0.2,
        stale: float | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> Iterator[None]:
        """Hold the per-step lock ``KEY.lock`` while computing the step (see ``StepLock``)."""
        with StepLock(self.root / key[:2] / f"{key}.lock", poll, stale, notify):
            yield

    def locks(self) -> list[Path]:
        """The step lock files in the cache (held, or left by a killed process)."""
        return sorted(self.root.glob("*/*.lock")) if self.root.is_dir() else []

    def break_locks(self) -> list[Path]:
        """Remove every step lock (``run --break-locks``: no other run may be using this workdir).
        Returns the files removed."""
        removed = []
        for path in self.locks():
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise disk_error(path, exc) from None
        return removed

    def record(self, key: str) -> dict[str, Any] | None:
        """The artifact's record (sha256, deps, meta), or None when it is absent or unreadable (or
        ``key`` is not an artifact key)."""
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            return None
        try:
            rec = json.loads(self._record_path(key).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(rec, dict) or rec.get("key") != key or not self.path(key).is_file():
            return None
        return rec

    def exists(self, key: str) -> bool:
        return self.record(key) is not None

    def save(
        self,
        key: str,
        obj: dict[str, Any],
        deps: dict[str, str] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write ``obj`` under ``key``; ``deps`` maps each artifact it was built from to that
        artifact's sha256. Returns the record."""
        import torch  # here, not at import: the CLI maps ArtifactError without loading torch

        sha = ""

        def write(tmp: Path) -> None:  # streamed to the file: no copy of the payload in memory
            nonlocal sha
            with open(tmp, "wb") as f:  # a file object, not a path: the same bytes as torch.save to a buffer
                torch.save({**obj, "key": key}, f)
                f.flush()
                os.fsync(f.fileno())
            sha = file_sha256(tmp)

        self._record_path(key).unlink(missing_ok=True)  # the payload changes: no record until it is whole
        path = write_atomic(self.path(key), write)
        st = path.stat()
        rec = {"key": key, "sha256": sha, "deps": dict(deps or {}), "meta": meta or {}}
        write_atomic(self._record_path(key), write_bytes(json.dumps(rec, default=str).encode()))
        self._verified[key] = (st.st_size, st.st_mtime_ns, sha)
        return rec

    def install(
        self, key: str, src: Path, sha256: str, deps: dict[str, str], meta: dict[str, Any]
    ) -> dict[str, Any]:
        """Move the payload file ``src`` (on this cache's disk; its bytes hash to ``sha256`` and
        hold ``key``, as ``reinv_bench.engine.bundles`` checked) into the cache under ``key`` with its
        record, written last as ``save`` does. Returns the record."""
        if file_sha256(src) != sha256:
            raise ArtifactError(f"{src} does not match the SHA-256 given for artifact {key}; not installed")
        self._record_path(key).unlink(missing_ok=True)
        write_atomic(self.path(key), lambda tmp: os.replace(src, tmp))
        rec = {"key": key, "sha256": sha256, "deps": dict(deps), "meta": dict(meta)}
        write_atomic(self._record_path(key), write_bytes(json.dumps(rec, default=str).encode()))
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
        return ArtifactError(
            f"artifact {path} {why}; {moved}. It is recomputed on the next run; stored results are untouched."
        )

    def _verify(self, key: str) -> dict[str, Any]:
        """The artifact's record once its payload's SHA-256 is checked (streamed from the file; once
        per process unless the file changes); a payload that fails is moved aside."""
        rec = self.record(key)
        path = self.path(key)
        if rec is None:
            raise ArtifactError(f"artifact {key} is missing ({path}); rerun to recompute it")
        try:
            st = path.stat()
            if self._verified.get(key) == (st.st_size, st.st_mtime_ns, rec["sha256"]):
                return rec
            sha = file_sha256(path)
        except OSError as exc:
            raise ArtifactError(f"artifact {path} cannot be read: {exc.strerror or exc}") from None
        if sha != rec["sha256"]:
            raise self._reject(key, "does not match its recorded SHA-256 (corrupted or replaced)")
        self._verified[key] = (st.st_size, st.st_mtime_ns, sha)
        return rec

    def digest(self, key: str) -> str | None:
        """The artifact's verified sha256, or None when it is absent or fails verification (then
        it is moved aside). Each file is hashed once per process unless it changes."""
        if self.record(key) is None:
            return None
        try:
            return self._verify(key)["sha256"]
        except ArtifactError:
            return None

    def load(self, key: str) -> dict[str, Any]:
        import torch

        self._verify(key)
        try:  # memory-mapped: tensors are read from the file as they are used, not copied up front
            obj = torch.load(self.path(key), map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else ""
            raise self._reject(key, f"could not be loaded ({type(exc).__name__}: {first})") from None
        if not isinstance(obj, dict) or obj.get("key") != key:
            raise self._reject(
                key, f"holds another artifact ({obj.get('key') if isinstance(obj, dict) else '?'})"
            )
        del obj["key"]
        return obj
