"""What a plan needs and what running it would do: the steps a cell reads (``cell_keys``), the
closure of steps over their dependencies, whether a cell is settled in the store, and the
``--dry-run`` preview with its time estimates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reinv_bench.contract.data import ScenarioData
from reinv_bench.engine import estimates
from reinv_bench.engine.artifacts import Artifacts
from reinv_bench.engine.plan import Cell, Plan, Step, data_spec
from reinv_bench.results.judging import verdict_key
from reinv_bench.results.store import Store


def closure(plan: Plan, keys: list[str]) -> set[str]:
    """These steps and every step they depend on."""
    needed: set[str] = set()
    stack = list(keys)
    while stack:
        key = stack.pop()
        if key not in needed:
            needed.add(key)
            stack.extend(plan.steps[key].deps)
    return needed


def cell_keys(cell: Cell) -> tuple[str, ...]:
    """The steps whose artifacts a cell's evaluation reads."""
    return (cell.eval_key, cell.target_key, *cell.prior_keys, cell.invert_key, *evaluators(cell))


def evaluators(cell: Cell) -> list[str]:
    """The further evaluation models and the judges' networks of a cell (none by default)."""
    return [*cell.extra_evals.values(), *(j["public"] for j in cell.judges if "public" in j)]


def cells_closure(plan: Plan, cells: list[Cell]) -> set[str]:
    return closure(plan, [k for c in cells for k in (c.invert_key, c.eval_key, *evaluators(c))])


def preview(
    plan: Plan,
    store: Store,
    artifacts: Artifacts,
    device: str | None = None,
    data: Callable[[str, str | None], ScenarioData] | None = None,
) -> dict[str, Any]:
    """What ``run`` would do (``--dry-run``): per step kind, how many steps run and how many
    are reused, with an estimate from the timings of steps of the same kind and scenario
    already in the cache; where there are none, from the table shipped with the package
    (``reinv_bench.engine.estimates``, for ``device``: cpu or cuda, scaled by each step's size; ``data``
    gives a scenario's data for the sizes of training steps). ``seconds`` None: nothing to go by;
    ``source`` per kind: "workdir", "table" or "table, scaled from budget B"."""
    todo = [c for c in plan.cells if not settled(store, c)]
    budget = plan.cells[0].labels.budget if plan.cells else ""
    past: dict[tuple[str, str], list[float]] = {}
    for rec_path in artifacts.root.glob("*/*.json"):
        meta = (artifacts.record(rec_path.stem) or {}).get("meta", {})
        if "kind" in meta:
            past.setdefault((meta["kind"], meta["scenario"]), []).append(float(meta["seconds"]))
    kinds: dict[str, dict[str, Any]] = {}
    for key in sorted(cells_closure(plan, todo), key=list(plan.steps).index):
        step = plan.steps[key]
        k = kinds.setdefault(step.kind, {"run": 0, "cached": 0, "seconds": 0.0, "sources": set()})
        if artifacts.exists(key):  # (verified when the run reaches it)
            k["cached"] += 1
            if from_zoo(artifacts, key):  # "zoo": of the cached, installed by `zoo add` (absent: none)
                k["zoo"] = k.get("zoo", 0) + 1
            continue
        k["run"] += 1
        spec = data_spec(plan.steps, step)
        times = sorted(past.get((step.kind, spec["scenario"]), []))
        seconds, source = (
            (times[len(times) // 2], "workdir") if times else _from_table(step, spec, budget, device, data)
        )
        k["seconds"] = None if k["seconds"] is None or seconds is None else k["seconds"] + seconds
        k["sources"].add(source)
    for k in kinds.values():
        k["source"] = "; ".join(sorted(k.pop("sources") - {""}))
    return {"kinds": kinds, "cells": len(todo), "stored": len(plan.cells) - len(todo), "device": device}


def from_zoo(artifacts: Artifacts, key: str) -> dict[str, Any] | None:
    """Where the artifact ``key`` came from when ``zoo add`` installed it (its record's
    ``meta["zoo"]``: bundle, manifest digest, label), else None."""
    zoo = ((artifacts.record(key) or {}).get("meta") or {}).get("zoo")
    return zoo if isinstance(zoo, dict) else None


def _from_table(step: Step, spec: dict, budget: str, device: str | None, data) -> tuple[float | None, str]:
    """(seconds, source) of ``step`` from the shipped table (``reinv_bench.engine.estimates``); (None, "")
    without a figure for it."""
    if not (device and data):
        return None, ""
    est = estimates.estimate(
        step, spec["scenario"], budget, device, lambda: data(spec["scenario"], spec["data_root"])
    )
    if est is None:
        return None, ""
    return est.seconds, "table" if est.budget == budget else f"table, scaled from budget {est.budget}"


def settled(store: Store, cell: Cell) -> bool:
    """Whether the cell is stored as ok with an answer from each of its judges: a judge that
    stored null (its server was down, its network missing) is asked again by the next run."""
    if not cell.judges:
        return store.done(cell.cell_id)
    row = store.get(cell.cell_id)
    if row is None or row.status != "ok":
        return False
    metrics = row.metrics or {}
    return all(metrics.get(verdict_key(j["label"])) is not None for j in cell.judges)
