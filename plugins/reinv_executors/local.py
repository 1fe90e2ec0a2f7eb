"""``local``: a pool of worker processes on this machine.

    --executor "local[workers=2]"        CPU: two workers
    --executor "local[gpus=0/1/2/3]"     one worker per GPU, pinned with CUDA_VISIBLE_DEVICES
    (the CLI's --workers N and --gpus 0,1,2,3 say the same)

Each worker computes with the driver's torch thread count (``torch.get_num_threads()`` when the
pool starts: torch's default, or ``run --threads N``), the count an inline run computes with, so
every executor writes the same bytes under a cache key (CPU float reductions depend on the thread
count). Two workers on two cores then share the cores; ``run --threads 1 --workers 2`` splits them
(and an inline ``run --threads 1`` computes the same bytes as that). ``threads=N`` overrides the
count for the workers alone: their CPU numbers then differ from an inline run's (the rows' device
column records each worker's count).

Workers are spawned (never forked: CUDA does not survive a fork) and rebuild the registry from
the driver's plugin selection; each keeps its data and networks loaded between steps. A worker
that dies (kill -9, out of memory) breaks the pool: the pool is rebuilt and the driver retries
the steps that were in flight once.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from reinv_bench import hookimpl
from reinv_bench.api import ConfigError, Executor, Param


def _init_worker(devices, threads: int) -> None:
    """Pin this worker to one GPU (the first free id) and to the run's torch thread count."""
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(devices.get())
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _driver_threads() -> int:
    """The torch thread count this process (the driver, which runs inline steps) computes with."""
    import torch

    return torch.get_num_threads()


class Local(Executor):
    name = "local"
    params = {
        "workers": Param(0, "worker processes (0: one per GPU given, else 2)", low=0),
        "gpus": Param("", "GPU ids, one worker each, e.g. 0/1/2/3 (empty: CPU workers)"),
        "threads": Param(
            0,
            "torch threads per worker (0: the driver's count, so that workers compute the "
            "same bytes as an inline run)",
            low=0,
        ),
    }

    def __init__(self, config=None, budget: str = "paper") -> None:
        super().__init__(config, budget)
        ids = [g for g in str(self.config.gpus).replace(",", "/").split("/") if g.strip()]
        if any(not g.strip().isdigit() for g in ids):
            raise ConfigError(f"local: gpus={self.config.gpus!r}: give GPU ids like 0/1/2/3")
        self.gpus = [int(g) for g in ids]
        self.slots = self.config.workers or len(self.gpus) or 2
        if self.gpus and self.slots != len(self.gpus):
            raise ConfigError(
                f"local: {len(self.gpus)} GPU(s) given, workers={self.slots}: one worker per GPU"
            )
        self.threads = self.config.threads  # 0: the driver's count when the pool starts
        self.pool: ProcessPoolExecutor | None = None

    def start(self, env) -> None:
        if self.gpus and not env.device.startswith("cuda"):
            raise ConfigError(f"local: gpus given but the device is {env.device}; use --device cuda")
        if self.gpus and env.device not in ("cuda", "cuda:0"):
            raise ConfigError("local: with gpus, use --device cuda (each worker sees its GPU as cuda:0)")

    def _pool(self) -> ProcessPoolExecutor:
        if self.pool is None:
            ctx = multiprocessing.get_context("spawn")
            devices = None
            if self.gpus:
                devices = ctx.Manager().Queue()
                for g in self.gpus:
                    devices.put(g)
            threads = self.threads or _driver_threads()
            self.pool = ProcessPoolExecutor(
                self.slots, mp_context=ctx, initializer=_init_worker, initargs=(devices, threads)
            )
        return self.pool

    def submit(self, fn, *args) -> Future:
        try:
            return self._pool().submit(fn, *args)
        except BrokenProcessPool:  # a worker died: the pool stopped the others; start a new one
            self.pool.shutdown(wait=False)
            self.pool = None
            return self._pool().submit(fn, *args)

    def lost(self, exc: BaseException) -> bool:
        return isinstance(exc, BrokenProcessPool)

    def close(self, cancel: bool = False) -> None:
        if self.pool is not None:
            pool, self.pool = self.pool, None
            if cancel:
                for proc in list((pool._processes or {}).values()):  # stop running steps now
                    proc.terminate()
            pool.shutdown(wait=True, cancel_futures=cancel)


@hookimpl
def register_executors():
    return [Local]
