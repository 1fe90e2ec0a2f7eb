"""Measure the step costs of ``reinv_bench/engine/estimates.py``: run a small grid twice in fresh workdirs,
the second time with every size doubled (epochs, GAN steps, iterations), and print, per (device,
scenario, step kind, what), the fixed seconds and the seconds per unit (a training image-epoch, a
GAN step, a class-iteration: see that module) fitted through the two runs, as lines to paste into
its ``TABLE``. Prints figures; asserts nothing.

    python benchmarks/step_costs.py --scenario mnist --budget smoke --threads 1
    python benchmarks/step_costs.py --device cuda --budget quick -a gmi -a kedmi
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

import reinv_bench
from reinv_bench.engine import estimates
from reinv_bench.engine.artifacts import Artifacts
from reinv_bench.engine.plan import data_spec
from reinv_bench.registry.lookup import load


def _sized(registry, name: str, budget: str, factor: int) -> str:
    """The attack ``name`` with its GAN steps and iterations times ``factor``."""
    config = registry.get("attack", name).resolve({}, budget)
    keys = [k for k in (*estimates.GAN_STEPS, *estimates.ITERATIONS) if isinstance(config.get(k), int)]
    params = ",".join(f"{k}={config[k] * factor}" for k in keys)
    return f"{name}[{params}]" if params and factor != 1 else name


def measure(registry, args, attacks: list[str], factor: int) -> dict[tuple[str, str, str], list[tuple]]:
    """(scenario, kind, what) -> [(units, seconds)] of one run with every size times ``factor``."""
    budget = args.budget
    sized = ["+".join(_sized(registry, name, budget, factor) for name in text.split("+")) for text in attacks]
    scenario = registry.get("scenario", args.scenario)
    recipes = {r: {"epochs": scenario.recipe(r, budget).epochs * factor} for r in ("target", "eval")}
    data = scenario.load(args.data_root and Path(args.data_root))
    out: dict[tuple[str, str, str], list[tuple]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as work:
        res = reinv_bench.run(
            attacks=sized,
            defenses=["none"],
            scenarios=[args.scenario],
            budget=budget,
            baseline=False,
            metrics=["attack_acc"],
            data_root=args.data_root,
            recipes=recipes,
            registry=registry,
            workdir=work,
            device=args.device,
        )
        assert res.summary is not None and not res.summary.failed, res.summary
        art = Artifacts(work)
        for key, step in res.plan.steps.items():
            meta = (art.record(key) or {}).get("meta", {})
            units = estimates.units(step, lambda: data)
            if "seconds" in meta and units:
                kind = (data_spec(res.plan.steps, step)["scenario"], step.kind, estimates.what(step))
                out[kind].append((units, meta["seconds"]))
    return out


def fit(one: list[tuple], two: list[tuple]) -> tuple[float, float]:
    """(fixed seconds, seconds per unit) through the medians of the two runs; a difference lost in
    the noise (not positive) gives all the time to the units."""
    (u1, t1), (u2, t2) = (
        (statistics.median(u for u, _ in r), statistics.median(t for _, t in r)) for r in (one, two)
    )
    per = (t2 - t1) / (u2 - u1) if u2 != u1 else 0.0
    if per <= 0 or per * u1 > t1:
        return 0.0, t1 / u1
    return t1 - per * u1, per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="mnist")
    ap.add_argument("--budget", default="smoke")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: as the process has them)")
    ap.add_argument("-a", "--attack", action="append", help="default: gmi kedmi plgmi brepmi lomma+gmi")
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    registry = load()
    attacks = args.attack or ["gmi", "kedmi", "plgmi", "brepmi", "lomma+gmi"]
    one, two = (measure(registry, args, attacks, factor) for factor in (1, 2))
    device = torch.device(args.device).type
    print(f"# {device}, {args.scenario}, budget {args.budget}, {torch.get_num_threads()} torch thread(s)")
    print("# (fixed seconds, seconds per unit)")
    for (scenario, kind, what), runs in sorted(one.items()):
        fixed, per = fit(runs, two.get((scenario, kind, what), runs))
        key = f'("{device}", "{scenario}", "{kind}", "{what}")'
        print(f'    {key}: {{"{args.budget}": ({fixed:.3g}, {per:.3g})}},')


if __name__ == "__main__":
    main()
