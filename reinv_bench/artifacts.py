"""Content-addressed cache of trained models, priors and reconstructions.

An artifact is a dict of tensors and plain values saved with ``torch.save`` and written
atomically (temporary file, then rename), so a crash never leaves a half-written artifact under
its final name. It is loaded with ``weights_only=True``: never unpickles arbitrary objects. A file
that fails to load is moved aside (``.corrupt``) and reported, so the next run recomputes it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


class ArtifactError(RuntimeError):
    pass


def write_atomic(path: Path, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` a temporary file beside ``path``, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class Artifacts:
    def __init__(self, root: Path) -> None:
        self.root = Path(root) / "artifacts"

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pt"

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def save(self, key: str, obj: dict[str, Any]) -> Path:
        return write_atomic(self.path(key), lambda tmp: torch.save(obj, tmp))

    def load(self, key: str) -> dict[str, Any]:
        path = self.path(key)
        if not path.is_file():
            raise ArtifactError(f"artifact {key} is missing ({path}); rerun to recompute it")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            bad = path.with_suffix(".corrupt")
            os.replace(path, bad)
            first = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else ""
            raise ArtifactError(
                f"artifact {path} could not be loaded ({type(exc).__name__}: {first}); moved it to {bad}. "
                "Rerun the same command to recompute it; stored results are untouched."
            ) from exc
