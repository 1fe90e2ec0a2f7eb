"""Pretrained weight files: where they are looked for, how they are verified, how they are installed.

Nothing is downloaded at run time. A plugin declares each file it can use as a ``WeightsFile``
(hook ``register_weights``); the harness looks for it, in order,

1. in the reinv-bench weights folder: ``$REINV_BENCH_WEIGHTS``, else ``$REINV_BENCH_HOME/weights``,
   else ``~/.reinv-bench/weights`` (where ``reinv-bench weights add NAME FILE`` installs), then
2. where the upstream library keeps it: ``$TORCH_HOME/hub/checkpoints`` (torch.hub, torchvision,
   pytorch-fid) or ``$TORCH_HOME/checkpoints`` (facenet-pytorch); ``$TORCH_HOME`` defaults to
   ``~/.cache/torch``,

and accepts a file only when its SHA-256 matches. Three levels, each reported as such:

- a full SHA-256 is known (``fid-inception``): the file must match it (state ``present``);
- only the 8-hex prefix that torch.hub file names carry is published (``resnet18-f37072fd.pth``,
  torchvision): that prefix is what torch.hub itself checks and what is checked here (state
  ``present (sha256 prefix f37072fd checked, no full hash published)``);
- no hash is published (face.evoLVe, facenet-pytorch): ``weights add`` records the full SHA-256
  of the first file added in a sidecar ``<weights folder>/<file name>.sha256`` (``sha256sum``
  format), and every later lookup, in any folder, must match it. Such a file is used but reported
  ``unverified (recorded sha256 ...)`` in the listing and, as an ``UnverifiedWeightsWarning``,
  whenever a run uses it; whoever loads it checks its tensors' names and shapes strictly.

A file that cannot be used is refused with a one-line reason (``file is empty``, the digest that
differs, why torch cannot load it as a state dict).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reinv_bench.contract.files import file_sha256, write_atomic


class WeightsUnavailable(FileNotFoundError):
    """No usable file: the message lists every place looked at and what was found there."""


class UnverifiedWeightsWarning(UserWarning):
    """A weights file without a published hash is used (checked only against the recorded one)."""


@dataclass(frozen=True)
class WeightsFile:
    name: str  # what ``weights add NAME`` and ``--arch "resnet18[weights=NAME]"`` use
    filename: str  # the upstream file name
    sha256: str  # full hex digest, the 8-hex prefix torch.hub names carry, or "" (none published)
    doc: str  # what it is and who uses it
    url: str = ""  # where the official file comes from (for the user; never fetched)
    torch_dir: str = "hub/checkpoints"  # where under $TORCH_HOME the upstream library looks; "" = nowhere
    # ``weights add``: convert(FILE, DEST) writes the file kept (``filename``) from a foreign format (e.g.
    # NVIDIA's pickles, read without running their code); the converted file is what is checked and recorded
    convert: Callable[[Path, Path], None] | None = None


def weights_home() -> Path:
    if os.environ.get("REINV_BENCH_WEIGHTS"):
        return Path(os.environ["REINV_BENCH_WEIGHTS"]).expanduser()
    return Path(os.environ.get("REINV_BENCH_HOME", "~/.reinv-bench")).expanduser() / "weights"


def torch_home() -> Path:
    return Path(
        os.environ.get("TORCH_HOME", Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "torch")
    ).expanduser()


def candidates(w: WeightsFile) -> list[Path]:
    places = [weights_home() / w.filename]
    if w.torch_dir:
        places.append(torch_home() / w.torch_dir / w.filename)
    return places


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = file_sha256(path)
    return _HASHES[key]


def check(w: WeightsFile) -> str:
    """How the entry's files are checked: ``full`` (SHA-256), ``prefix`` (its published 8-hex
    prefix only) or ``none`` (nothing published: checked against the recorded SHA-256, if any)."""
    if not w.sha256:
        return "none"
    return "full" if len(w.sha256) == 64 else "prefix"


def record_path(w: WeightsFile) -> Path:
    """The sidecar holding the SHA-256 recorded by ``weights add`` for an entry without a published hash."""
    return weights_home() / (w.filename + ".sha256")


def recorded(w: WeightsFile) -> str | None:
    """The SHA-256 recorded for ``w`` (None: nothing recorded); a malformed record is an error."""
    path = record_path(w)
    if not path.is_file():
        return None
    text = path.read_text(errors="replace").split()
    if not text or not re.fullmatch(r"[0-9a-f]{64}", text[0].lower()):
        raise WeightsUnavailable(
            f"{path} is not a sha256 record (delete it and run `reinv-bench weights add {w.name} FILE` again)"
        )
    return text[0].lower()


def usable(state: str) -> bool:
    """Whether a ``state_of`` answer means the file is used."""
    return state.startswith(("present", "unverified"))


def state_of(w: WeightsFile, path: Path) -> str:
    """``absent``; ``present`` (full SHA-256 matches); ``present (sha256 prefix ... checked, ...)``;
    ``unverified (recorded sha256 ...)`` or ``unverified (no sha256 published or recorded)`` for an
    entry without a published hash; ``bad (...)`` with the reason."""
    if not path.is_file():
        return "absent"
    if path.stat().st_size == 0:
        return "bad (file is empty)"
    digest = sha256_of(path)
    kind = check(w)
    if kind == "full":
        return (
            "present"
            if digest == w.sha256.lower()
            else f"bad (sha256 {digest[:16]}..., expected {w.sha256[:16]}...)"
        )
    if kind == "prefix":
        if digest.startswith(w.sha256.lower()):
            return f"present (sha256 prefix {w.sha256} checked, no full hash published)"
        return f"bad (sha256 {digest[:16]}..., expected prefix {w.sha256})"
    try:
        rec = recorded(w)
    except WeightsUnavailable as exc:
        return f"bad ({exc})"
    if rec is None:
        return "unverified (no sha256 published or recorded)"
    if digest != rec:
        return f"bad (sha256 {digest[:16]}..., recorded {rec[:16]}... when first added)"
    return f"unverified (recorded sha256 {rec[:16]}...)"


def hash_label(w: WeightsFile) -> str:
    """What the listing shows as the expected hash."""
    kind = check(w)
    if kind == "full":
        return w.sha256
    if kind == "prefix":
        return f"{w.sha256} (prefix)"
    try:
        rec = recorded(w)
    except WeightsUnavailable:
        return "(none published; bad record)"
    return f"(none published) recorded {rec[:16]}..." if rec else "(none published)"


def best_state(w: WeightsFile) -> str:
    """The state of the file a lookup uses, else of the first file found, else ``absent``."""
    states = [state_of(w, p) for p in candidates(w)]
    return next((s for s in states if usable(s)), None) or next(
        (s for s in states if s != "absent"), "absent"
    )


def locate(w: WeightsFile) -> Path:
    """The first good file; ``WeightsUnavailable`` says where it looked and what it found. Using a
    file of an entry without a published hash warns (``UnverifiedWeightsWarning``) with its state."""
    seen = []
    for path in candidates(w):
        state = state_of(w, path)
        if usable(state):
            if state.startswith("unverified"):
                hint = (
                    ""
                    if "recorded sha256" in state
                    else f"; `reinv-bench weights add {w.name} {path}` records it"
                )
                warnings.warn(
                    f"weights {w.name!r} at {path}: {state}{hint}", UnverifiedWeightsWarning, stacklevel=2
                )
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
    if w.convert is not None:
        weights_home().mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=weights_home()) as tmp:
            converted = Path(tmp) / w.filename
            w.convert(source, converted)
            try:
                return install(dataclasses.replace(w, convert=None), converted)
            except WeightsUnavailable as exc:
                raise WeightsUnavailable(str(exc).replace(str(converted), f"{source} (converted)")) from None
    state = state_of(w, source)
    if state.startswith("bad"):
        hint = f" (delete {record_path(w)} to record another file)" if "when first added" in state else ""
        raise WeightsUnavailable(f"{source} is not {w.name} ({w.filename}): {state}{hint}")
    if check(w) == "none":  # no published hash: at least it must be a loadable state dict
        load_state(source)  # BadWeightsFile: one line saying why not

    dest = write_atomic(weights_home() / w.filename, lambda tmp: shutil.copyfile(source, tmp))
    if check(w) == "none" and recorded(w) is None:  # the first file added: its digest is the reference
        line = f"{sha256_of(dest)}  {w.filename}\n"
        write_atomic(record_path(w), lambda tmp: Path(tmp).write_text(line))
    return dest


def load_state(path: Path) -> dict:
    """A state dict from a checkpoint file (``weights_only``: never unpickles code); a checkpoint
    that wraps it (``{"state_dict": ...}``, ``{"model": ...}``) is unwrapped."""
    import torch

    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise BadWeightsFile(path, "file is empty")
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol notices: noise here
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch's messages are many lines and advise weights_only=False
        raise BadWeightsFile(path, _load_failure(exc)) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise BadWeightsFile(path, f"it holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


class BadWeightsFile(WeightsUnavailable):
    """A file that is not a loadable state dict; ``reason`` is one line."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} is not a state dict torch can load safely: {reason}")
        self.reason = reason


def _load_failure(exc: Exception) -> str:
    """One line saying why torch.load (weights_only) refused a file, without torch's advice."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (
            f"it holds Python objects ({found.group(1)}), not only tensors: "
            "refused, loading them could run code"
        )
    if isinstance(exc, EOFError):
        return "file is truncated"
    if "zip archive" in text or "PytorchStreamReader" in text:
        return "corrupt or truncated torch checkpoint (unreadable zip archive)"
    if "Weights only load failed" in text or "load key" in text or "pickle" in text.lower():
        return "not a torch checkpoint (unreadable pickle data)"
    first = text.strip().splitlines()[0] if text.strip() else ""
    if "weights_only" in first:
        first = ""
    return f"{type(exc).__name__}" + (f": {first[:160]}" if first else "")
