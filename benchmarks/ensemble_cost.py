"""The worst-case ensemble's cost against its members' (issue 29): run ``auto`` (by default with
a cheap member list) on a small grid in a fresh workdir and print, per target, the seconds of
every member's inversion and evaluation, their sum, and the ensemble's own pool step (it reads the
members' stored reconstructions and scores them with the target) and evaluation (its metrics and
the permuted-identity null). The ensemble should add little beyond its members. Prints figures;
asserts nothing.

    python benchmarks/ensemble_cost.py                                 # gmi and brepmi, smoke
    python benchmarks/ensemble_cost.py --members gmi/brepmi/rlbmi --budget quick -d none -d re
    python benchmarks/ensemble_cost.py --members ""                    # the documented ensemble

``-p reinv_attacks.auto`` is implied (the ``auto`` plugin is loaded whether or not it is installed).
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict

import torch

import reinv_bench
from reinv_bench.registry.lookup import load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--members", default="gmi/brepmi", help='members separated by / ("": the documented list)'
    )
    ap.add_argument("--budget", default="smoke")
    ap.add_argument("--scenario", default="mnist")
    ap.add_argument("-d", "--defense", action="append", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workdir", default=None, help="default: a fresh temporary folder")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from reinv_attacks import auto as auto_plugin

    registry = load(extra=(auto_plugin,))
    attack = f"auto[members={args.members}]" if args.members else "auto"
    workdir = args.workdir or tempfile.mkdtemp(prefix="reinv-ensemble-cost-")
    res = reinv_bench.run(
        attacks=[attack],
        defenses=args.defense or ["none"],
        scenarios=[args.scenario],
        budget=args.budget,
        metrics=["attack_acc"],
        registry=registry,
        workdir=workdir,
        device=args.device,
        check=False,
    )
    by_target: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in res.rows:
        by_target[(r.defense, r.seed)][r.attack] = r.timings or {}
    ens_label = next(c.labels.attack for c in res.plan.cells if "members" in c.config["attack"])
    print(f"device {args.device}, {args.threads} thread(s), budget {args.budget}, workdir {workdir}")
    print(f"{'target':<24}{'member':<22}{'invert s':>10}{'evaluate s':>12}")
    for (defense, seed), timings in sorted(by_target.items()):
        members = {a: t for a, t in timings.items() if a != ens_label}
        ens = timings.get(ens_label, {})
        for a, t in members.items():
            print(
                f"{defense + ' seed ' + str(seed):<24}{a:<22}"
                f"{t.get('invert_s', 0):>10.2f}{t.get('evaluate_s', 0):>12.2f}"
            )
        inv = sum(t.get("invert_s", 0) for t in members.values())
        ev = sum(t.get("evaluate_s", 0) for t in members.values())
        print(f"{'':<24}{'members, sum':<22}{inv:>10.2f}{ev:>12.2f}")
        pool, ens_ev = ens.get("invert_s", float("nan")), ens.get("evaluate_s", float("nan"))
        print(f"{'':<24}{'ensemble (pool, eval)':<22}{pool:>10.2f}{ens_ev:>12.2f}")
        total = inv + ev
        print(
            f"{'':<24}ensemble adds {pool + ens_ev:.2f} s to the members' {total:.2f} s "
            f"({100 * (pool + ens_ev) / total if total else float('nan'):.1f} %)"
        )


if __name__ == "__main__":
    main()
