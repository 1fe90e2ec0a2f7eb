"""What a stored row holds besides the metrics: the answers of judges outside the run kept from
the row before (``keep_answers``) and what the cell attacked (``attacked``)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from reinv_bench.registry.components import build_attack
from reinv_bench.registry.lookup import Registry
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
        if k.startswith("judge[") and k not in per and k in (old.metrics or {})
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
