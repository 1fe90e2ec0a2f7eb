"""What the executors that run steps in other processes or on other machines (``ray``,
``submitit``) share: the workers' PYTHONPATH, their torch threads, the device check, the
worker-side traceback and one-line errors."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from reinv_bench.api import ConfigError


def plugin_paths(plugins) -> list[str]:
    """Directories that hold the plugin modules named in a selection (``-p`` values and
    in-process plugin modules), outside site-packages: what a worker that did not inherit the
    driver's ``sys.path`` needs on its PYTHONPATH to import them."""
    out: list[str] = []
    for name in plugins:
        if name.startswith("no:"):
            continue
        top = name.split(".")[0]
        origin = getattr(sys.modules.get(top), "__file__", None)
        if origin is None:
            try:
                spec = importlib.util.find_spec(top)
            except (ImportError, ValueError):
                spec = None
            origin = spec.origin if spec is not None else None
        if not origin or not os.path.isfile(origin):
            continue
        path = Path(origin).resolve().parent
        if Path(origin).name == "__init__.py":
            path = path.parent
        if {"site-packages", "dist-packages"} & set(path.parts) or str(path) in out:
            continue
        out.append(str(path))
    return out


def worker_pythonpath(plugins) -> str:
    """PYTHONPATH for workers: the plugin modules' directories, then the driver's PYTHONPATH."""
    given = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(dict.fromkeys(plugin_paths(plugins) + given))


def set_threads(threads: int) -> None:
    """In a worker: ``threads`` torch threads (0: as the process has them)."""
    if threads:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def cuda_device(executor: str, device: str, unit: str) -> bool:
    """Whether the run is on CUDA; refuses a CUDA device other than the first (each ``unit``, a
    task or a job, sees its own GPUs from cuda:0)."""
    cuda = device.startswith("cuda")
    if cuda and device not in ("cuda", "cuda:0"):
        raise ConfigError(f"{executor}: use --device cuda (each {unit} sees its GPU as cuda:0)")
    return cuda


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class RemoteTraceback(Exception):
    """The worker-side traceback of a step's exception (its ``__cause__``)."""

    def __str__(self) -> str:
        return self.args[0]
