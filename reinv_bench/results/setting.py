"""What entries may be averaged, ranked and compared together: the resolved config that identifies
an entry, the *setting* its comparisons share, and the targets two attackers share; all read from
the row's typed config (``store.CellConfig``).

- ``config_text``: the resolved config less what does not change a cell's numbers (the metric
  set, what was attacked as recorded from the outcomes, the CPU thread counts, the data folder's
  path where the data digest identifies the data, the user's ``--recipe`` overrides: already in
  the resolved recipes); rows of one entry share it.
- ``setting_text``: the same less the defense and the target's initialisation (which a defense may
  choose, TL's pretrained weights; a user chooses it in the arch label); the target recipe is the
  user's ``--recipe`` overrides, not a schedule a defense sets itself (TL and BiDO at the paper
  budget; rows stored before the overrides were have their resolved recipe compared instead).
- ``target_setting``: every label but the attack, and the resolved config less the attack (and a
  convergence check's doubling): the same trained targets.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from reinv_bench.contract.config import precision_of
from reinv_bench.results.entries import GROUP, SEPARATE, Entry
from reinv_bench.results.store import ABSENT, CellConfig, Row


def resolved(c: CellConfig, data_digest: str | None, *, defense: bool = True, attack: bool = True) -> dict:
    """The parts of a row's resolved config that make its numbers: with the defense or without it
    (the setting), with the attack or without it (the targets)."""
    scenario, arch, target_recipe, recipes = c.scenario, c.arch, c.target_recipe, ABSENT
    if data_digest and isinstance(scenario, dict):  # the digest identifies the data, not its folder
        scenario = {k: v for k, v in scenario.items() if k != "data_root"}
    if not defense:  # the setting: what the defense does not choose (TL's pretrained init is its own)
        if c.recipes not in (ABSENT, None):  # the user's recipes, not the schedule a defense sets
            target_recipe, recipes = ABSENT, c.recipes
        if isinstance(arch, dict):  # user weights: in the arch label
            arch = {k: v for k, v in arch.items() if k != "init"}
    parts = {
        **c.other,
        "scenario": scenario,
        "arch": arch,
        "target_recipe": target_recipe,
        "recipes": recipes,
        "eval": c.eval,
        "defense": c.defense if defense else ABSENT,
        "attack": c.attack if attack else ABSENT,
        # rows from before --precision say nothing, and were fp32
        "precision": ABSENT if c.precision == "fp32" else c.precision,
        "class_chunk": c.class_chunk,
        "convergence": c.convergence if attack else ABSENT,
    }
    return {k: v for k, v in parts.items() if v is not ABSENT}


def _text(parts: dict[str, Any]) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


def config_text(r: Row) -> str:
    """The row's resolved config as it identifies an entry (module docstring)."""
    return _text(resolved(r.cell_config, r.data_digest))


def setting_text(r: Row) -> str:
    """The setting every comparison of the row's entry shares (module docstring)."""
    return _text(resolved(r.cell_config, r.data_digest, defense=False))


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def short(value: Any, n: int = 6) -> str:
    return str(value)[:n]


def precision(r: Row) -> str:
    """The precision a row was computed at (``--precision``; rows without one: fp32)."""
    return precision_of(r.config)


def rank_key(e: Entry) -> tuple:
    """Entries of one ranking (one table section): same protocol, scenario, budget, arch, attack,
    data, reinv-bench version and precision."""
    return (*(str(getattr(e, k)) for k in (*GROUP, *SEPARATE)), e.precision)


def comparison_key(e: Entry) -> tuple:
    """Entries compared with each other (baseline, Pareto front): one ranking, one setting."""
    return (*rank_key(e), e.setting)


def target_setting(e: Entry) -> tuple:
    """What makes entries "the same targets": every label but the attack, the data, version and
    precision, and the resolved config less the attack (and what follows from it). Entries of two
    attackers with the same key attacked the same trained targets, seed for seed."""
    row = e.rows[e.seeds[0]]
    parts = resolved(row.cell_config, row.data_digest, attack=False)
    labels = (e.protocol, e.scenario, e.budget, e.arch, e.defense, e.data_digest, e.reinv_version)
    return (*map(str, labels), e.precision, digest(_text(parts)))
