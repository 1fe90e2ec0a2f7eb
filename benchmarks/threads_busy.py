"""How much a busy machine slows a small GAN training step, before and after reinv_bench.engine.threads.

Issue 28, item 7. Each setting runs in a fresh process (OpenMP reads its wait policy once, when
torch loads it) and times ``--steps`` steps of a DCGAN-sized generator/discriminator pair at 32 px
(the digits' GAN prior is of this size), once on a quiet machine and once with ``--spinners``
processes spinning on the cores (load ~``spinners``). Settings:

- before: torch's default threads (the cores), OpenMP's default wait policy: the harness until
  this change;
- 1 thread, and the cores with ``OMP_WAIT_POLICY=PASSIVE``: the two remedies measured apart;
- after: what ``reinv-bench run`` now does without ``--threads``: passive waiting (when busy) and
  ``free_threads`` (the free cores from the load average, read when the step starts).

    python benchmarks/threads_busy.py [--steps 20] [--spinners 5]

Prints milliseconds per step (median) quiet and busy and the ratio busy/quiet per setting. The load
average lags (one minute): the quiet phase waits until it falls under 0.5 (at most 150 s), the busy
phase until it reaches 80 % of the spinners (at most 90 s).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import time

STEP = r"""
import os, sys, time, statistics
mode, steps = sys.argv[1], int(sys.argv[2])
if mode == "after":
    import reinv_bench  # sets OMP_WAIT_POLICY=PASSIVE before torch loads OpenMP
import torch
if mode == "one":
    torch.set_num_threads(1)
elif mode == "after":
    from reinv_bench.engine.threads import free_threads
    threads, why = free_threads(torch.get_num_threads())
    torch.set_num_threads(threads)
torch.manual_seed(0)
nn = torch.nn
G = nn.Sequential(nn.Linear(100, 128 * 4 * 4), nn.Unflatten(1, (128, 4, 4)),
    nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),
    nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
    nn.ConvTranspose2d(32, 1, 4, 2, 1), nn.Tanh())
D = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(32, 64, 4, 2, 1),
    nn.LeakyReLU(0.2), nn.Conv2d(64, 128, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(2048, 1))
og, od = torch.optim.Adam(G.parameters(), 2e-4), torch.optim.Adam(D.parameters(), 2e-4)
real = torch.randn(64, 1, 32, 32)
times = []
for i in range(steps + 3):
    t = time.perf_counter()
    fake = G(torch.randn(64, 100))
    ld = D(fake.detach()).mean() - D(real).mean()
    od.zero_grad(); ld.backward(); od.step()
    lg = -D(fake).mean()
    og.zero_grad(); lg.backward(); og.step()
    if i >= 3:
        times.append(time.perf_counter() - t)
policy = os.environ.get("OMP_WAIT_POLICY", "-")
print(f"{statistics.median(times) * 1000:.1f} {torch.get_num_threads()} {policy}")
"""

SETTINGS = {
    "before (default threads, default wait)": ("default", {}),
    "1 thread": ("one", {}),
    "default threads, OMP_WAIT_POLICY=PASSIVE": ("default", {"OMP_WAIT_POLICY": "PASSIVE"}),
    "after (reinv-bench run's default)": ("after", {}),
}


def _spin() -> None:
    while True:
        pass


def measure(steps: int) -> dict[str, tuple[float, int, str]]:
    out = {}
    for label, (mode, extra) in SETTINGS.items():
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
        env.update(extra)
        res = subprocess.run(
            [sys.executable, "-c", STEP, mode, str(steps)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        ms, threads, policy = res.stdout.split()
        out[label] = (float(ms), int(threads), policy)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--spinners", type=int, default=5)
    args = parser.parse_args()
    t0 = time.time()  # the load average lags a minute: let an earlier run's load fade first
    while os.getloadavg()[0] > 0.5 and time.time() - t0 < 150:
        time.sleep(5)
    print(f"cores {os.cpu_count()}, load before the quiet phase {os.getloadavg()[0]:.1f}")
    quiet = measure(args.steps)
    spinners = [mp.Process(target=_spin, daemon=True) for _ in range(args.spinners)]
    for p in spinners:
        p.start()
    try:
        t0 = time.time()
        while os.getloadavg()[0] < 0.8 * args.spinners and time.time() - t0 < 90:
            time.sleep(2)
        print(f"busy phase: {args.spinners} spinners, load {os.getloadavg()[0]:.1f}")
        busy = measure(args.steps)
    finally:
        for p in spinners:
            p.terminate()
    width = max(map(len, SETTINGS))
    print(f"{'setting':<{width}}  quiet ms (thr)  busy ms (thr)  busy/quiet")
    for label in SETTINGS:
        (q, qt, _), (b, bt, _) = quiet[label], busy[label]
        print(f"{label:<{width}}  {q:8.1f} ({qt})  {b:8.1f} ({bt})  {b / q:8.1f}x")
    print(f"median of {args.steps} steps per setting (a DCGAN pair at 32 px, batch 64)")


if __name__ == "__main__":
    main()
