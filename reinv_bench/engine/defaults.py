"""The run defaults, one set for ``reinv_bench.run()`` and ``reinv-bench run``.

Imports nothing heavy (no torch): the command line reads its option defaults from here before any
plugin or torch is loaded. The device-dependent ones (budget, executor) are functions of the
resolved device and of the number of CUDA devices, which the caller counts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunDefaults:
    workdir: str = "~/.reinv-bench"  # where results.db and the artifact cache live
    device: str = "auto"  # cuda when available, else cpu
    precision: str = "fp32"  # targets, priors and inversions (the evaluation model stays fp32)
    budget_cpu: str = "quick"  # minutes on a CPU
    budget_cuda: str = "paper"  # the published hyperparameters, on a GPU

    def budget(self, device_type: str) -> str:
        """Quick on CPU, paper on CUDA."""
        return self.budget_cuda if device_type == "cuda" else self.budget_cpu

    def executor(self, device_type: str, device_index: int | None, cuda_devices: int) -> str:
        """Local with one worker per GPU when the device is "cuda" (no index) and there are
        several, else inline (this process)."""
        n = cuda_devices if device_type == "cuda" and device_index is None else 0
        return f"local[gpus={'/'.join(map(str, range(n)))}]" if n > 1 else "inline"


DEFAULTS = RunDefaults()
