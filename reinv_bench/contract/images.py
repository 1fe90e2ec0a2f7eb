"""Image sets read from files on demand, for scenarios too large to hold as one tensor.

``ImageFiles`` stands in for the (N, C, H, W) tensor of a ``Split`` wherever the harness reads
images: ``len``, ``shape``, indexing (int, slice, index list/tensor, boolean mask) returns a lazy
subset, and ``.to(device)`` decodes the images into a real tensor there. So the training loop
and the metrics fetch one batch at a time (``x[idx].to(device)``), while an attack that holds its
public data on the device (as the official GAN code holds it in memory) still writes
``public.to(device)``.

Decoding a face image is mostly Python work (PIL parses headers in Python), so threads do not
scale: many images at once (``to()``, ``warm()``: at least ``$REINV_BENCH_DECODE_PROCESS_MIN``,
default 1024) are decoded by worker processes, a training batch by threads. Each decoded image
is kept as uint8 in a cache shared by all subsets, up to ``$REINV_BENCH_IMAGE_CACHE_GB`` (default
8) for all image sets of the process together: the second epoch over CelebA at 64 px reads
nothing from disk.

``to_pil`` goes the other way: one image tensor of the harness as a Pillow image (export, judges).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import lru_cache
from itertools import repeat
from multiprocessing.util import Finalize

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from reinv_bench.contract.config import env_number


def to_pil(x: Tensor):
    """A (C, H, W) image in [-1, 1] as an 8-bit Pillow image: mode L for one channel, else RGB."""

    arr = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte()
    if arr.shape[0] == 1:
        return Image.fromarray(arr[0].numpy(), "L")
    return Image.fromarray(arr.permute(1, 2, 0).numpy(), "RGB")


class DataError(FileNotFoundError):
    """A dataset folder is missing or incomplete; the message says what was expected where."""


_CACHED = {"bytes": 0}  # decoded bytes held by every ImageFiles cache of the process
_BROKEN: list[BaseException] = []  # worker processes failed once: threads from then on


WORKERS = min(16, os.cpu_count() or 1)
CHUNK = 64  # images per task sent to a worker process
BULK = 8192  # images decoded per call of _images() by to() and warm()


@lru_cache(maxsize=1)
def _threads() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="reinv-decode")


@lru_cache(maxsize=1)
def _processes() -> ProcessPoolExecutor:

    # spawn: safe beside CUDA and threads; workers import only what the decode function needs
    pool = ProcessPoolExecutor(
        max_workers=WORKERS,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_exit_with,
        initargs=(os.getpid(),),
    )
    # stopped when this process exits, also when it is itself a worker process (a local executor's):
    # multiprocessing's exit joins non-daemonic children, and these would wait for work forever.
    # Priority above 10, that of the call queue's own finalizer, which stops the thread that
    # would carry the pool's stop messages to its workers
    Finalize(pool, pool.shutdown, kwargs={"cancel_futures": True}, exitpriority=100)
    return pool


def _exit_with(parent: int) -> None:
    """A decode worker ends when the process that started it is gone (killed, say), instead of
    waiting forever on a queue nobody writes to."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="reinv-parent-watch").start()


def cache_limit_bytes() -> float:
    """Decoded bytes all image sets of a process may cache (``REINV_BENCH_IMAGE_CACHE_GB``, default 8)."""
    return env_number("REINV_BENCH_IMAGE_CACHE_GB", 8.0) * 2**30


def decode_process_min() -> int:
    """Images decoded at once from which worker processes decode (``REINV_BENCH_DECODE_PROCESS_MIN``)."""
    return env_number("REINV_BENCH_DECODE_PROCESS_MIN", 1024, minimum=1, whole=True)


def _decode_many(decode: Callable[[str], np.ndarray], paths: list[str]) -> list[np.ndarray]:
    """Runs in a worker process."""
    return [np.asarray(decode(p)) for p in paths]


class ImageFiles:
    """Lazily decoded images. ``decode(path) -> uint8 array (H, W, C)`` at the final size; the
    images come back as float32 in [-1, 1], like every image in the harness."""

    def __init__(
        self,
        paths: Sequence[str],
        decode: Callable[[str], np.ndarray],
        shape: tuple[int, int, int],
        _index: np.ndarray | None = None,
        _cache: dict[int, Tensor] | None = None,
    ) -> None:
        self.paths = list(paths) if _index is None else paths
        self.decode = decode
        self.image_shape = tuple(shape)
        self.index = np.arange(len(self.paths)) if _index is None else _index
        self.cache: dict[int, Tensor] = {} if _cache is None else _cache
        self.cache_limit = cache_limit_bytes()

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.image_shape)

    def __getitem__(self, key) -> ImageFiles:
        if isinstance(key, Tensor):
            key = key.cpu().numpy()
        if isinstance(key, (int, np.integer)):
            key = [key]
        sub = self.index[key]
        return ImageFiles(self.paths, self.decode, self.image_shape, np.atleast_1d(sub), self.cache)

    def _images(self, idx: list[int]) -> list[Tensor]:
        """uint8 (C, H, W) images of the files ``idx`` (positions in ``paths``): cached ones from
        the cache, the others decoded (by processes when many) and cached while the budget lasts."""
        got = {i: self.cache[i] for i in idx if i in self.cache}
        missing = [i for i in dict.fromkeys(idx) if i not in got]
        decoded = None
        if WORKERS > 1 and not _BROKEN and len(missing) >= decode_process_min():
            chunks = [[self.paths[i] for i in missing[k : k + CHUNK]] for k in range(0, len(missing), CHUNK)]
            try:
                decoded = [
                    a for part in _processes().map(_decode_many, repeat(self.decode), chunks) for a in part
                ]
            except BrokenProcessPool as exc:  # e.g. a __main__ that spawned workers cannot import
                _BROKEN.append(exc)
                warnings.warn(
                    f"image decoding falls back to threads: worker processes failed ({exc})", stacklevel=2
                )
        if decoded is None:
            decoded = _threads().map(lambda i: self.decode(self.paths[i]), missing)
        for i, arr in zip(missing, decoded):
            img = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()
            if tuple(img.shape) != self.image_shape:
                raise ValueError(
                    f"{self.paths[i]} decoded to {tuple(img.shape)}, expected {self.image_shape}"
                )
            if _CACHED["bytes"] + img.numel() <= self.cache_limit:
                self.cache[i] = img
                _CACHED["bytes"] += img.numel()
            got[i] = img
        return [got[i] for i in idx]

    def to(self, device: torch.device | str = "cpu") -> Tensor:
        """Decode every image of this (sub)set into one float tensor on ``device``."""
        out = torch.empty(self.shape, dtype=torch.float32)
        for s in range(0, len(self), BULK):
            part = self._images(self.index[s : s + BULK].tolist())
            if part:
                out[s : s + len(part)] = torch.stack(part).float()
        return out.div_(127.5).sub_(1.0).to(device)

    def warm(self) -> None:
        """Decode into the cache now, in bulk, as much of this (sub)set as the cache can hold
        (the training loop calls it, so the first epoch does not decode batch by batch)."""
        room = int((self.cache_limit - _CACHED["bytes"]) // int(np.prod(self.image_shape)))
        todo = [i for i in dict.fromkeys(self.index.tolist()) if i not in self.cache][: max(0, room)]
        for s in range(0, len(todo), BULK):
            self._images(todo[s : s + BULK])

    def __repr__(self) -> str:
        return f"ImageFiles({len(self)} images of {self.image_shape})"
