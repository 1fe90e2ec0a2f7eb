"""Executors: scheduling overhead per step, and inline vs ``local`` worker processes.

1. Overhead: a grid of no-op steps (benchmarks/noop_plugin.py: zero-epoch training, an attack
   that returns its prior) run inline; wall time minus the steps' own seconds, per step. Goal:
   below 50 ms per step, whatever the machine.
2. The same real grid inline (torch's default threads) and with ``local[workers=2]`` (threads
   split between the workers); prints the wall-time ratio. Goal on 2 cores: >= 1.3x.

    python benchmarks/executors.py [--budget smoke|quick] [--cells 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))  # noop_plugin, importable by worker processes too

from reinv_bench.engine.plan import Request, expand  # noqa: E402
from reinv_bench.engine.runner import Runner  # noqa: E402
from reinv_bench.registry.lookup import load  # noqa: E402
from reinv_bench.results.store import Store  # noqa: E402


def timed_run(registry, req: Request, executor: str) -> tuple[float, float, int]:
    """(wall seconds, the steps' own seconds, steps + cells run)."""
    with tempfile.TemporaryDirectory(prefix="reinv-bench-exec-") as wd:
        runner = Runner(registry, Path(wd), torch.device("cpu"), executor)
        plan = expand(req, registry, data_digest=lambda s: runner.data(s, req.data_root).digest)
        t0 = time.perf_counter()
        summary = runner.run(plan, Store(Path(wd) / "results.db"))
        wall = time.perf_counter() - t0
        own = sum(
            (runner.artifacts.record(s.key) or {}).get("meta", {}).get("seconds", 0.0) for s in summary.ran
        )
        own += sum(r["timings"]["evaluate_s"] for r in summary.rows if r.get("timings"))
        assert not summary.failed, summary.failed[0]["error"]
        return wall, own, len(summary.ran) + len(summary.rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", default="smoke")
    ap.add_argument("--cells", type=int, default=60, help="no-op cells for the overhead figure")
    args = ap.parse_args()

    import noop_plugin

    registry = load(extra=(noop_plugin,))
    noop = Request(
        ["noop"],
        [f"re[p={0.01 * i:.2f}]" for i in range(1, args.cells)],
        scenarios=["noop"],
        budget="smoke",
        metrics=["natural_acc", "attack_acc"],
    )
    wall, own, n = timed_run(registry, noop, "inline")
    print(
        f"scheduling overhead (inline, {n} no-op steps and cells): {1000 * (wall - own) / n:.1f} ms per step "
        f"(goal < 50 ms)"
    )

    real = Request(["gmi"], ["none", "re", "mid", "bido"], seeds=2, budget=args.budget)
    inline, _, n = timed_run(registry, real, "inline")
    local, _, _ = timed_run(registry, real, "local[workers=2]")
    print(
        f"grid gmi x none/re/mid/bido x 2 seeds, budget {args.budget}, {n} steps and cells: "
        f"inline {inline:.1f}s ({torch.get_num_threads()} threads), local[workers=2] {local:.1f}s: "
        f"{inline / local:.2f}x (goal >= 1.3x)"
    )


if __name__ == "__main__":
    main()
