"""Files written whole or not at all, and their digests (the artifact cache, checkpoints and
weights files share them)."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


class ArtifactError(RuntimeError):
    pass


def disk_error(path: Path, exc: OSError) -> ArtifactError:
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
        raise disk_error(path, exc) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return path


def write_bytes(data: bytes) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return write


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
