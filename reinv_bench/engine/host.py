"""What a step runs on and under: the device as a row records it, the row's environment (executor,
Python, packages), the global generators seeded from a step's seed, and warnings caught for the row."""

from __future__ import annotations

import contextlib
import platform
import random
import warnings
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import numpy as np
import torch

from reinv_bench.version import __version__


def describe_device(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return f"{dev} ({torch.get_num_threads()} threads)"  # CPU float reductions depend on the thread count


PACKAGES = ("torch", "torchvision", "numpy", "scipy", "pillow")  # what a row's numbers depend on


def environment(executor: str, deterministic: bool = False) -> dict[str, Any]:
    """What computed a row besides its device and versions (the row's ``environment``): the
    executor, deterministic kernels or not, Python, the platform and the packages' versions."""
    packages = {"reinv-bench": __version__, "torch": torch.__version__}  # (its build: +cu130)
    for name in PACKAGES[1:]:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {
        "executor": executor,
        "deterministic": deterministic,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": packages,
    }


@contextlib.contextmanager
def caught_warnings(meta: dict[str, Any], most: int = 5) -> Iterator[None]:
    """Warnings raised inside, each distinct one once, into ``meta["warnings"]`` (at most ``most``
    lines, ``Category: first line``) instead of the terminal, where they would print mid-table."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        yield
    texts = list(
        dict.fromkeys(
            f"{w.category.__name__}: {(str(w.message).strip().splitlines() or [''])[0][:200]}" for w in seen
        )
    )
    if texts:
        meta["warnings"] = texts[:most] + ([f"(+{len(texts) - most} more)"] if len(texts) > most else [])


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
