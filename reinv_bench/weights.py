"""Pretrained weight files: where they are looked for, how they are verified, how they are installed.

Nothing is downloaded at run time. A plugin declares each file it can use as a ``WeightsFile``
(hook ``register_weights``); the harness looks for it, in order,

1. in the reinv-bench weights folder: ``$REINV_BENCH_WEIGHTS``, else ``$REINV_BENCH_HOME/weights``,
   else ``~/.reinv-bench/weights`` (where ``reinv-bench weights add NAME FILE`` installs), then
2. where the upstream library keeps it: ``$TORCH_HOME/hub/checkpoints`` (torch.hub, torchvision,
   pytorch-fid) or ``$TORCH_HOME/checkpoints`` (facenet-pytorch); ``$TORCH_HOME`` defaults to
   ``~/.cache/torch``,

and accepts a file only when its SHA-256 matches. Where the publisher gives only the 8-hex prefix
that torch.hub file names carry (``resnet18-f37072fd.pth``), that prefix is what torch.hub itself
checks and what is checked here; a file without any published hash is reported ``unverified``
and used, and whoever loads it checks its tensors' names and shapes strictly.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path


class WeightsUnavailable(FileNotFoundError):
    """No usable file: the message lists every place looked at and what was found there."""


@dataclass(frozen=True)
class WeightsFile:
    name: str  # what ``weights add NAME`` and ``--arch "resnet18[weights=NAME]"`` use
    filename: str  # the upstream file name
    sha256: str  # full hex digest, the 8-hex prefix torch.hub names carry, or "" (none published)
    doc: str  # what it is and who uses it
    url: str = ""  # where the official file comes from (for the user; never fetched)
    torch_dir: str = "hub/checkpoints"  # where under $TORCH_HOME the upstream library looks; "" = nowhere


def weights_home() -> Path:
    if os.environ.get("REINV_BENCH_WEIGHTS"):
        return Path(os.environ["REINV_BENCH_WEIGHTS"]).expanduser()
    return Path(os.environ.get("REINV_BENCH_HOME", "~/.reinv-bench")).expanduser() / "weights"


def torch_home() -> Path:
    return Path(os.environ.get("TORCH_HOME", Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "torch")).expanduser()


def candidates(w: WeightsFile) -> list[Path]:
    places = [weights_home() / w.filename]
    if w.torch_dir:
        places.append(torch_home() / w.torch_dir / w.filename)
    return places


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    from reinv_bench.plan import file_sha256

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = file_sha256(path)
    return _HASHES[key]


def state_of(w: WeightsFile, path: Path) -> str:
    """``absent``, ``present``, ``unverified`` (no published hash) or ``bad (sha256 ...)``."""
    if not path.is_file():
        return "absent"
    if not w.sha256:
        return "unverified"
    digest = sha256_of(path)
    return "present" if digest.startswith(w.sha256.lower()) else f"bad (sha256 {digest[:16]}..., expected {w.sha256[:16]}...)"


def locate(w: WeightsFile) -> Path:
    """The first good file; ``WeightsUnavailable`` says where it looked and what it found."""
    seen = []
    for path in candidates(w):
        state = state_of(w, path)
        if state in ("present", "unverified"):
            return path
        seen.append(f"{path}: {state}")
    how = f"get {w.url} and " if w.url else "get the file and "
    raise WeightsUnavailable(
        f"weights {w.name!r} ({w.filename}) not available: {'; '.join(seen)}. "
        f"{how}run `reinv-bench weights add {w.name} FILE`"
    )


def install(w: WeightsFile, source: Path) -> Path:
    """Verify ``source`` against the expected hash and copy it into the reinv-bench weights folder."""
    source = Path(source).expanduser()
    if not source.is_file():
        raise WeightsUnavailable(f"{source} is not a file")
    state = state_of(w, source)
    if state.startswith("bad"):
        raise WeightsUnavailable(f"{source} is not {w.name} ({w.filename}): {state}")
    if state == "unverified":  # no published hash: at least it must be a loadable state dict
        try:
            load_state(source)
        except Exception as exc:  # noqa: BLE001 - any load failure means: not a weights file
            raise WeightsUnavailable(f"{source} is not a state dict torch can load safely: {exc}") from None
    from reinv_bench.artifacts import write_atomic

    return write_atomic(weights_home() / w.filename, lambda tmp: shutil.copyfile(source, tmp))


def load_state(path: Path) -> dict:
    """A state dict from a checkpoint file (``weights_only``: never unpickles code); a checkpoint
    that wraps it (``{"state_dict": ...}``, ``{"model": ...}``) is unwrapped."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}
