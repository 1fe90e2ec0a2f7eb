"""Time the README main job (`reinv-bench run --attack gmi --defense re`) cold and warm.

cold: empty workdir (trains the evaluation model, two targets, the GAN prior; two inversions).
warm: evaluation model and prior cached; targets, inversions and evaluation recomputed (what a
      new defense cell costs). Targets on 2 CPU cores: cold <= 5 min, warm <= 1 min.

    python benchmarks/cold_warm.py [--budget quick] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", default="quick")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reinv-bench-bench-"))
    job = [
        "reinv-bench",
        "run",
        "--attack",
        "gmi",
        "--defense",
        "re",
        "--quiet",
        "--workdir",
        str(work),
        "--budget",
        args.budget,
        "--device",
        args.device,
    ]
    try:
        cold = run(job)
        from reinv_bench.engine.plan import Request, expand
        from reinv_bench.registry.lookup import load

        plan = expand(Request(["gmi"], ["re"], budget=args.budget), load())
        keep = {k for k, s in plan.steps.items() if s.kind in ("eval", "prior")}
        for f in (work / "artifacts").rglob("*.pt"):
            if f.stem not in keep:
                f.unlink()
        (work / "results.db").unlink()
        warm = run(job)
        out = subprocess.run(
            ["reinv-bench", "leaderboard", "--workdir", str(work), "--format", "json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        entries = {e["defense"]: e for e in json.loads(out)}
        on_cuda = torch.cuda.is_available() and args.device != "cpu"
        device = "cuda " + torch.cuda.get_device_name() if on_cuda else "cpu"
        print(f"device: {device}, torch threads {torch.get_num_threads()}, budget {args.budget}")
        print(f"cold: {cold:7.1f} s   (target <= 300 s on 2 CPU cores)")
        print(f"warm: {warm:7.1f} s   (target <=  60 s on 2 CPU cores)")
        for d, e in entries.items():
            print(
                f"{d:>5}: natural acc {e['natural_acc']:.3f}  attack acc {e['attack_acc']:.3f} "
                f"(chance 0.100)  top-5 {e['attack_acc5']:.3f}  KNN {e['knn_dist']:.2f}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
