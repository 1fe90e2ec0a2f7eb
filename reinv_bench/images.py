"""Image sets read from files on demand, for scenarios too large to hold as one tensor.

``ImageFiles`` stands in for the (N, C, H, W) tensor of a ``Split`` wherever the harness reads
images: ``len``, ``shape``, indexing (int, slice, index list/tensor, boolean mask) returns a lazy
subset, and ``.to(device)`` decodes the images into a real tensor there. So the training loop
and the metrics fetch one batch at a time (``x[idx].to(device)``), while an attack that holds its
public data on the device (as the official GAN code holds it in memory) still writes
``public.to(device)``.

Files are decoded by a thread pool (PIL releases the GIL while decoding) and each decoded image
is kept as uint8 in a cache shared by all subsets, up to ``$REINV_BENCH_IMAGE_CACHE_GB`` (default
8) for all image sets of the process together: the second epoch over CelebA at 64 px reads
nothing from disk.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor


class DataError(FileNotFoundError):
    """A dataset folder is missing or incomplete; the message says what was expected where."""


_CACHED = {"bytes": 0}  # decoded bytes held by every ImageFiles cache of the process


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1), thread_name_prefix="reinv-decode")


class ImageFiles:
    """Lazily decoded images. ``decode(path) -> uint8 array (H, W, C)`` at the final size; the
    images come back as float32 in [-1, 1], like every image in the harness."""

    def __init__(self, paths: Sequence[str], decode: Callable[[str], np.ndarray], shape: tuple[int, int, int],
                 _index: np.ndarray | None = None, _cache: dict[int, Tensor] | None = None) -> None:
        self.paths = list(paths) if _index is None else paths
        self.decode = decode
        self.image_shape = tuple(shape)
        self.index = np.arange(len(self.paths)) if _index is None else _index
        self.cache: dict[int, Tensor] = {} if _cache is None else _cache
        self.cache_limit = float(os.environ.get("REINV_BENCH_IMAGE_CACHE_GB", "8")) * 2**30

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

    def _one(self, i: int) -> Tensor:
        img = self.cache.get(i)
        if img is None:
            arr = self.decode(self.paths[i])
            img = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()
            if tuple(img.shape) != self.image_shape:
                raise ValueError(f"{self.paths[i]} decoded to {tuple(img.shape)}, expected {self.image_shape}")
            if _CACHED["bytes"] + img.numel() <= self.cache_limit:
                self.cache[i] = img
                _CACHED["bytes"] += img.numel()
        return img

    def to(self, device: torch.device | str = "cpu") -> Tensor:
        """Decode every image of this (sub)set into one float tensor on ``device``."""
        out = torch.empty(self.shape, dtype=torch.float32)
        step = 256
        for s in range(0, len(self), step):
            part = list(_pool().map(self._one, self.index[s : s + step].tolist()))
            if part:
                out[s : s + len(part)] = torch.stack(part).float()
        return out.div_(127.5).sub_(1.0).to(device)

    def __repr__(self) -> str:
        return f"ImageFiles({len(self)} images of {self.image_shape})"
