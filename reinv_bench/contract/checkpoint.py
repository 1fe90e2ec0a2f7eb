"""Checkpoints of long steps (GAN priors, classifier training): a step killed half-way (Slurm
preemption, a crash, Ctrl-C) resumes where it was and ends with the same artifact bytes as an
uninterrupted run.

A training loop names what its next iteration depends on (modules, optimizers, schedulers,
``torch.Generator``s, lists and dicts it fills, a defense) and calls::

    start = checkpoint.resume(n, state)          # 0, or the iteration a checkpoint was saved at
    for i in range(start, n):
        ...                                      # one iteration
        checkpoint.reached(i + 1, n, state)      # saves when REINV_BENCH_CHECKPOINT_EVERY has passed
    return checkpoint.finish(result)

Besides ``state``, a checkpoint holds the global random generators (Python's, NumPy's, torch's
CPU and CUDA ones), so the iterations after a resume draw what they would have drawn. It is
written at an iteration boundary once ``REINV_BENCH_CHECKPOINT_EVERY`` seconds (default 600;
0: none written or read) have passed since the last one, inside the step's lock, beside the
step's artifact as ``KEY.<sha256 prefix>.ckpt``: the name carries the digest of the bytes, so a
file damaged on disk is recognised and ignored (with a one-line warning; the step starts from
scratch), as is one made from other dependencies or whose tensors have other shapes than the
step's (another model: checked before anything is restored, and the file removed). ``discard``
removes it once the artifact is saved. A step that runs several loops one after another (a
defense's fine-tune phase) calls ``resume`` and ``finish`` once per loop: loops finished before
the checkpoint are skipped and give back the result they had.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reinv_bench.contract.files import ArtifactError, file_sha256, write_atomic

ENV_EVERY = "REINV_BENCH_CHECKPOINT_EVERY"
EVERY_S = 600.0  # seconds between checkpoints of a long step (a fraction of a Slurm job's time limit)
FORMAT = 1


def every_seconds() -> float:
    """Seconds between two checkpoints (``REINV_BENCH_CHECKPOINT_EVERY``; 0: none)."""
    text = os.environ.get(ENV_EVERY, "").strip()
    if not text:
        return EVERY_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ArtifactError(f"{ENV_EVERY}={text!r}: give a number of seconds (0 turns checkpoints off)")
    return value


def _stderr(text: str) -> None:
    print(f"[reinv-bench] {text}", file=sys.stderr, flush=True)


def _capture(obj: Any) -> Any:
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if isinstance(obj, (list, dict)):
        return obj.copy()
    return obj.state_dict()  # modules, optimizers, schedulers, defenses


def _restore(obj: Any, value: Any) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(value)
    elif isinstance(obj, list):
        obj[:] = value
    elif isinstance(obj, dict):
        obj.clear()
        obj.update(value)
    else:
        obj.load_state_dict(value)


def _misfit(obj: Any, saved: Any) -> str:
    """Where the saved state of ``obj`` has a tensor of another shape, or a module misses or adds
    entries ('' when it fits): checked before anything is restored, so a checkpoint of another model
    is set aside whole, never half loaded."""
    if isinstance(obj, (torch.Generator, list, dict)):
        return ""
    return _tensor_misfit(_capture(obj), saved, strict=isinstance(obj, torch.nn.Module))


def _tensor_misfit(have: Any, saved: Any, strict: bool = False, where: str = "") -> str:
    if isinstance(have, torch.Tensor):
        if not isinstance(saved, torch.Tensor):
            return f"{where}: not a tensor"
        if have.shape != saved.shape:
            return f"{where}: {tuple(saved.shape)} saved, {tuple(have.shape)} now"
        return ""
    if isinstance(have, dict) and isinstance(saved, dict):
        if strict and set(have) != set(saved):
            odd = sorted(map(str, set(have) ^ set(saved)))
            return f"{where}: entries differ ({', '.join(odd[:3])})"
        for k in (k for k in have if k in saved):  # in the state dict's order: the first misfit named
            if why := _tensor_misfit(have[k], saved[k], where=f"{where}.{k}"):
                return why
        return ""
    if isinstance(have, (list, tuple)) and isinstance(saved, (list, tuple)) and len(have) == len(saved):
        for i, (a, b) in enumerate(zip(have, saved)):  # (a list that grows, a history, has no shape)
            if why := _tensor_misfit(a, b, where=f"{where}[{i}]"):
                return why
    return ""


def rng_state() -> dict[str, Any]:
    """The global random generators' states (in a form ``torch.load(weights_only=True)`` reads)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)


class Checkpoint:
    """The checkpoint of one step. ``path``: the step's artifact path (None: never saved, as in
    a direct call of a training function); ``label``: the step, for messages; ``deps``: the
    sha256 of each artifact the step reads (a checkpoint made from others is not used);
    ``every``: seconds between checkpoints (default ``REINV_BENCH_CHECKPOINT_EVERY``)."""

    def __init__(
        self,
        path: Path | None = None,
        label: str = "step",
        deps: dict[str, str] | None = None,
        every: float | None = None,
        notify: Callable[[str], None] = _stderr,
    ) -> None:
        self.path = None if path is None else Path(path)
        self.label = label
        self.deps = dict(deps or {})
        self.every = every_seconds() if every is None else every
        self.notify = notify
        self._loop = -1  # the loop being run (resume() calls so far, minus one)
        self._done: list[Any] = []  # results of the loops finished
        self._saved: dict[str, Any] | None = None
        self._read = False
        self._last = time.monotonic()

    @property
    def enabled(self) -> bool:
        return self.path is not None and self.every > 0

    def _files(self) -> list[Path]:
        """This step's checkpoint files, newest first."""
        if self.path is None or not self.path.parent.is_dir():
            return []
        files = self.path.parent.glob(f"{self.path.stem}.*.ckpt")
        return sorted(files, key=lambda p: p.stat().st_mtime_ns, reverse=True)

    def _read_saved(self) -> dict[str, Any] | None:
        """The newest intact checkpoint of this step made from the same dependencies, or None."""
        for f in self._files():
            try:
                digest = f.suffixes[-2][1:]
                intact = len(digest) == 16 and file_sha256(f).startswith(digest)
                saved = torch.load(f, map_location="cpu", weights_only=True) if intact else None
            except Exception as exc:  # noqa: BLE001 - any unreadable file is ignored, with the reason
                why = f"it cannot be read ({type(exc).__name__}: {str(exc).strip()[:80]})"
            else:
                why = "" if intact else "its bytes do not match the digest in its name (damaged)"
                if saved is not None and (not isinstance(saved, dict) or saved.get("format") != FORMAT):
                    why = "it is not a checkpoint of this version of reinv-bench"
                elif saved is not None and saved.get("deps") != self.deps:
                    why = "it was made from other versions of the step's inputs"
            if not why:
                return saved
            self.notify(f"ignoring the checkpoint {f} of {self.label}: {why}")
        return None

    def resume(self, n: int, state: dict[str, Any]) -> int:
        """Start the next loop of ``n`` iterations: restore ``state`` (and the global random
        generators) from the checkpoint if it was saved in this loop. Returns the iteration to
        start from: 0 without a checkpoint, ``n`` for a loop finished before it."""
        self._loop += 1
        if not self.enabled:
            return 0
        if not self._read:
            self._read = True
            self._saved = self._read_saved()
            if self._saved is not None:
                self._done = list(self._saved["done"])
        saved = self._saved
        if saved is None or saved["loop"] < self._loop:
            return 0
        if saved["loop"] > self._loop:
            return n
        if saved["n"] != n or set(saved["state"]) != set(state):
            why = f"the checkpoint of {self.label}: it was saved by another training loop (the code changed)"
            if self._loop:  # the loops before this one were skipped on its word: start the step again
                self.discard()
                raise ArtifactError(f"{why}; it was removed: rerun to compute the step from the start")
            self.notify(f"ignoring {why}")
            self._saved, self._done = None, []
            return 0
        misfit = next(
            (
                f"{name}{where}"
                for name, obj in state.items()
                if (where := _misfit(obj, saved["state"][name]))
            ),
            None,
        )
        if misfit is not None:  # a checkpoint of another model (the code or a default changed): unusable
            why = f"the checkpoint of {self.label}: its tensors do not fit the step's ({misfit})"
            self.discard()
            if self._loop:
                raise ArtifactError(f"{why}; it was removed: rerun to compute the step from the start")
            self.notify(f"ignoring {why}; it was removed and the step starts from scratch")
            self._saved, self._done = None, []
            return 0
        try:
            for name, obj in state.items():
                _restore(obj, saved["state"][name])
            set_rng_state(saved["rng"])
        except Exception as exc:  # half restored: only a fresh start is sound, on the next run
            self.discard()
            raise ArtifactError(
                f"the checkpoint of {self.label} could not be restored ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ''}); it was removed: "
                "rerun to compute the step from the start"
            ) from None
        loop = f" of training loop {self._loop + 1}" if self._loop else ""  # a defense's fine-tune phase
        self.notify(f"resuming {self.label} from checkpoint at iteration {saved['i']}/{n}{loop}")
        self._last = time.monotonic()
        return saved["i"]

    def reached(self, i: int, n: int, state: dict[str, Any]) -> None:
        """Iteration ``i`` of ``n`` is done: save a checkpoint if one is due (never after the last
        iteration: the artifact follows)."""
        if i < n and self.enabled and time.monotonic() - self._last >= self.every:
            self.save(i, n, state)

    def save(self, i: int, n: int, state: dict[str, Any]) -> Path:
        """Write the checkpoint of iteration ``i`` of ``n`` now (atomically), replacing older ones."""
        assert self.path is not None
        old = self._files()
        payload = {
            "format": FORMAT,
            "label": self.label,
            "deps": self.deps,
            "loop": self._loop,
            "done": self._done,
            "i": i,
            "n": n,
            "state": {name: _capture(obj) for name, obj in state.items()},
            "rng": rng_state(),
        }

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())

        new = write_atomic(self.path.with_suffix(".ckpt.new"), write)
        final = new.with_name(f"{self.path.stem}.{file_sha256(new)[:16]}.ckpt")
        os.replace(new, final)
        for f in old:
            if f != final:
                f.unlink(missing_ok=True)
        self._last = time.monotonic()
        return final

    def finish(self, result: Any) -> Any:
        """The current loop ended with ``result`` (plain values: kept in later checkpoints);
        a loop skipped by ``resume`` gets back the result it had."""
        if not self.enabled:
            return result
        if self._loop < len(self._done):
            return self._done[self._loop]
        self._done.append(result)
        return result

    def discard(self) -> None:
        """Remove this step's checkpoint files (its artifact is saved)."""
        if self.path is not None and self.path.parent.is_dir():
            for f in self.path.parent.glob(f"{self.path.stem}.*ckpt*"):
                f.unlink(missing_ok=True)


NO_CHECKPOINT = Checkpoint(every=0)  # what a training function runs with when it is called directly
