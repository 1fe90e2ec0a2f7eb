"""What a stored row holds besides the metrics: the answers of judges outside the run kept from
the row before (``keep_answers``), what the cell attacked (``attacked``), the seconds of its steps
(``timings``) and the CPU thread counts that computed it (``threads``)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from reinv_bench.engine.artifacts import Artifacts
from reinv_bench.engine.plan import Cell
from reinv_bench.engine.preview import cell_keys
from reinv_bench.registry.components import build_attack
from reinv_bench.registry.lookup import Registry
from reinv_bench.results.judging import is_verdict
from reinv_bench.results.reported import class_ranges
from reinv_bench.results.store import Row


def keep_answers(old: Row | None, new: Row) -> Row:
    """``new`` (a cell evaluated again) with the answers of judges that are not part of the run
    (people's, ``reinv-bench judge import``) kept from ``old``, when both judged the same
    reconstructions."""
    if old is None or old.status != "ok" or old.outcomes is None or new.outcomes is None:
        return new
    same = (old.artifacts or {}).get("invert") == (new.artifacts or {}).get("invert")
    if not same or len(old.outcomes) != len(new.outcomes):
        return new
    per = new.outcomes.per_reconstruction
    kept = {
        k: v
        for k, v in old.outcomes.per_reconstruction.items()
        if is_verdict(k) and k not in per and k in (old.metrics or {})
    }
    if not kept:
        return new
    per.update(kept)
    new.metrics = {**(new.metrics or {}), **{k: old.metrics[k] for k in kept}}
    new.notes = {**(new.notes or {}), **{k: old.notes[k] for k in kept if k in (old.notes or {})}}
    versions = (old.config or {}).get("metrics") or {}
    new.config["metrics"] = {**new.config["metrics"], **{k: versions[k] for k in kept if k in versions}}
    return new


THREADS = re.compile(r"\((\d+) threads\)")  # describe_device's CPU form


def attacked(registry: Registry, config: dict[str, Any], outcomes: Any) -> dict[str, Any]:
    """``{"attacked": ...}``: what an evaluated cell attacked, from its outcomes (identities, which
    ones as ranges, reconstructions evaluated per identity: None when classes differ, and in all)
    and its attack (``Attack.selection``: "none" when every optimised reconstruction is evaluated;
    ``Attack.optimisation``: its optimiser and iterations); ``{}`` for a
    cell without outcomes. Not part of the setting digest: it follows from the config."""
    if outcomes is None or not len(outcomes):
        return {}
    counts = set(Counter(outcomes.classes).values())
    attack = build_attack(registry, config["attack"])
    return {
        "attacked": {
            "classes": len(set(outcomes.classes)),
            "class_ids": class_ranges(outcomes.classes),
            "per_class": counts.pop() if len(counts) == 1 else None,
            "reconstructions": len(outcomes),
            "selection": attack.selection() or "none",
            **attack.optimisation(),  # the attack's optimiser and iterations (or epochs)
        }
    }


def timings(artifacts: Artifacts, cell: Cell, evaluate_s: float) -> dict[str, float]:
    """Seconds of each step, from the artifacts' records (no artifact is loaded)."""

    def meta(key: str) -> dict[str, Any]:
        return (artifacts.record(key) or {}).get("meta", {})

    def seconds(key: str) -> float:
        return float(meta(key).get("seconds", float("nan")))

    invert = meta(cell.invert_key)  # a merge of class chunks: their seconds
    t = {
        "target_s": seconds(cell.target_key),
        "prior_s": sum(seconds(k) for k in cell.prior_keys),
        "invert_s": invert.get("chunk_seconds", 0.0) + seconds(cell.invert_key),
    }
    if "queries" in invert:
        t["queries"] = invert["queries"]
    t["evaluate_s"] = evaluate_s
    t["cell_s"] = t["prior_s"] + t["invert_s"] + evaluate_s
    return t


def threads(artifacts: Artifacts, cell: Cell, evaluated_on: str | None) -> dict[str, Any]:
    """``{"threads": [...]}``: the CPU thread counts that computed the cell's steps and its
    evaluation (from each artifact's record and the evaluating worker's device): float reductions
    depend on them, so rows of one key computed with others differ in their last digits. Not part
    of the setting; the leaderboard says when an entry mixes them (issue 30, item 14)."""
    devices = [evaluated_on] + [
        (rec.get("meta") or {}).get("device") for k in cell_keys(cell) if (rec := artifacts.record(k))
    ]
    counts = sorted({int(m.group(1)) for d in devices if d and (m := THREADS.search(str(d)))})
    return {"threads": counts} if counts else {}
