"""CPU threads on a busy machine: passive OpenMP waiting and a thread count from the free cores.

Torch's CPU kernels run on an OpenMP pool whose threads, by default, spin while they wait for
work. On a machine whose cores are taken by other work, those spinning threads fight the other
processes and each other: a small GAN training step measured 240-265 ms with torch's default two
threads under a load of ~4.8 on two cores, 38 ms with ``OMP_WAIT_POLICY=PASSIVE`` and 19-24 ms
with one thread (issue 28; ``benchmarks/threads_busy.py`` measures it again). So:

- ``OMP_WAIT_POLICY=PASSIVE`` is set when ``reinv_bench`` is imported on a busy machine, unless
  the environment already sets it (OpenMP reads it once, when torch loads its runtime: a program
  that imported torch before ``reinv_bench`` keeps its policy). Waiting does not change what is
  computed; on a quiet machine spinning waits are faster, so they stay.
- ``reinv-bench run`` without ``--threads`` (or ``REINV_BENCH_THREADS``) computes with the cores
  that are free when it starts (``free_threads``): torch's default on a quiet machine, fewer on a
  busy one, said on the run's first line. CPU float reductions depend on the thread count, so
  each row records the count it was computed with (its device, e.g. ``cpu (1 threads)``); pass
  ``--threads N`` for the same bytes whatever the load.
"""

from __future__ import annotations

import math
import os


def passive_waiting(load: float | None = None) -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` for this process and its workers when the machine is busy
    (``free_threads``) and the environment does not choose: spinning threads cost a quiet machine
    nothing but steal a busy one's cores (``benchmarks/threads_busy.py``: a GAN step 13-16x slower
    under load with spinning waits; passive waits cost 15-35 % on a quiet machine)."""
    if "OMP_WAIT_POLICY" not in os.environ and free_threads(cores(), load)[1]:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def free_threads(default: int, load: float | None = None, ncores: int | None = None) -> tuple[int, str]:
    """The torch thread count for a run on this machine now, and the line that says why (``""``
    when the machine is not oversubscribed and ``default`` stands).

    ``load`` is the one-minute load average (``os.getloadavg``): runnable processes other than
    this one, which has not started computing. The free cores are those the load leaves (a
    part-busy core counts as free), at least one; the count is ``default`` (torch's: the cores)
    when they cover it."""
    ncores = cores() if ncores is None else ncores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # no load average: assume a quiet machine
            return default, ""
    free = max(1, math.ceil(ncores - load))
    if free >= default:
        return default, ""
    return free, (
        f"this machine is busy (load {load:.1f} on {ncores} cores): steps compute with {free} torch "
        f"thread{'s' * (free != 1)} instead of {default}; rows record the count (--threads N to choose one)"
    )
