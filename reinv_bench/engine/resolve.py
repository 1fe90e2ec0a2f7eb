"""What a request names, resolved for one scenario before any step is built: its attacks (with
the scenario's protocol defaults, ensembles and their members), its defenses, its metrics, its
canaries; and the checks that need no data (a defense's model structure, a self-judged target)."""

from __future__ import annotations

from typing import Any

import torch

from reinv_bench.contract.attack import EnsembleAttack
from reinv_bench.contract.config import ConfigError
from reinv_bench.contract.data import Scenario
from reinv_bench.contract.defense import Defense
from reinv_bench.engine.canaries import JITTER, makes_canaries, source
from reinv_bench.engine.request import Request, digest
from reinv_bench.registry import spec as specs
from reinv_bench.registry.components import resolve_attack, resolve_defense, undefended
from reinv_bench.registry.defaults import default_metrics
from reinv_bench.registry.lookup import Registry


def with_defaults(text: str, scenario: Scenario) -> str:
    """The attack spec with the scenario's protocol values for parameters the user left unset
    (``Scenario.attack_defaults``, e.g. GMI's lr 0.01 on its MNIST protocol); they show in the label."""
    comps = specs.parse(text)
    for i, c in enumerate(comps):
        extra = {k: str(v) for k, v in scenario.attack_defaults.get(c.name, {}).items() if k not in c.params}
        comps[i] = specs.Component(c.name, {**c.params, **extra})
    return "+".join(map(str, comps))


def unique(resolved: list[tuple]) -> list[tuple]:
    """One entry per resolved description: ``re[p=0.5]`` and ``re[p=.5]`` are one defense."""
    seen: dict[str, tuple] = {}
    for entry in resolved:
        seen.setdefault(digest(entry[1]), entry)
    return list(seen.values())


def metric_names(req: Request, registry: Registry, scenario: Scenario) -> tuple[list[str], list[str]]:
    """The request's metrics, else the scenario's defaults (``registry.defaults.applies``: those of its
    protocol and those it names); and ``name@version`` of each."""
    for m in scenario.default_metrics:  # a name the scenario gives must be installed
        registry.get("metric", m)
    names = (
        list(dict.fromkeys(req.metrics))
        if req.metrics is not None
        else [m.name for m in default_metrics(registry, scenario)[0]]
    )
    return names, sorted(f"{m}@{registry.get('metric', m).version}" for m in names)


def resolve_ensembles(
    registry: Registry, resolved: list[tuple], scenario: Scenario, budget: str, notes: list[str]
) -> tuple[list[tuple], list[tuple[tuple, list[tuple]]]]:
    """(the attacks to run: the plain ones and every ensemble's members, once each; each ensemble
    with its resolved members). A member not installed here is left out with a note; an ensemble
    with none is an error."""
    plain = [a for a in resolved if not isinstance(a[2], EnsembleAttack)]
    ensembles = []
    for ens in (a for a in resolved if isinstance(a[2], EnsembleAttack)):
        members, missing = [], []
        for text in ens[2].members(scenario.name):
            if any(c.name not in registry.names("attack") for c in specs.parse(text)):
                missing.append(text)
                continue
            members.append(resolve_attack(registry, with_defaults(text, scenario), budget))
        if missing:
            notes.append(
                f"{ens[0]} on {scenario.name}: members {', '.join(missing)} are not installed here and are "
                "left out of the ensemble (its row records the members it pooled)"
            )
        if not members:
            raise ConfigError(
                f"{ens[0]} on {scenario.name}: none of its members "
                f"({', '.join(ens[2].members(scenario.name))}) is installed here"
            )
        members = unique(members)
        desc = {**ens[1], "members": [m[1] for m in members]}
        ensembles.append(((ens[0], desc, ens[2]), members))
    return unique(plain + [m for _, ms in ensembles for m in ms]), ensembles


def defenses_of(req: Request, registry: Registry) -> list[tuple[str, list[dict[str, Any]], list[Defense]]]:
    """The request's defenses resolved (sweeps expanded, the baseline added, duplicates dropped)."""
    defenses = list(dict.fromkeys(req.defenses))
    if req.baseline and any(d != "none" for d in defenses) and "none" not in defenses:
        defenses.insert(0, "none")
    return unique(
        [resolve_defense(registry, d, req.budget, keep) for text in defenses for d, keep in specs.sweep(text)]
    )


def canary_spec(req: Request, *, sc_name: str, scenario: Scenario, attacks: list[tuple]) -> dict[str, Any]:
    """``--canaries K``: the planted-canary spec of this scenario's canary targets (without the
    seed), sampled from the prior of the first attack whose prior can make them; a one-line error
    when none can, or when K exceeds the attacked classes."""
    classes = scenario.target_classes()
    if not 1 <= req.canaries <= len(classes):
        raise ConfigError(
            f"--canaries {req.canaries}: scenario {sc_name} attacks {len(classes)} classes; "
            f"give 1 to {len(classes)}"
        )
    first = next((a for a in attacks if makes_canaries(a[2])), None)
    if first is None:
        raise ConfigError(
            f"--canaries on scenario {sc_name}: no attack of the run "
            f"({', '.join(a[0] for a in attacks)}) has a target-independent generator prior to draw "
            "canaries from; add e.g. -a gmi"
        )
    drawer = source(first)
    return {"k": req.canaries, "jitter": JITTER, "attack": drawer[1], "source": drawer}


SELF_JUDGED = (
    "{t} is trained as the {e} is (architecture, start, recipe, seed, no defense): where the "
    "scenario trains its evaluation model on the private training data (mnist does), the target *is* "
    "the evaluation model and judges its own reconstructions; give another --eval-arch"
)


def trained_alike(target: dict[str, Any], evaluation: dict[str, Any]) -> bool:
    """Whether a target's training spec is the evaluation model's (an undefended target of the
    evaluation model's architecture, recipe and seed)."""
    same = ("arch", "arch_version", "recipe", "seed", "init", "precision")
    return undefended(target.get("defense")) and all(target.get(k) == evaluation.get(k) for k in same)


def check_structure(registry: Registry, scenario: Scenario, arch: str, insts: list[Defense]) -> None:
    """The architecture takes the scenario's images, and a defense that changes the model's
    structure (``wrap_model``) can change it (rolss needs residual blocks): checked at plan time on
    a model built on the meta device, without memory or data."""
    with torch.device("meta"):
        try:
            model = registry.get("architecture", arch).build(scenario.num_classes, scenario.image_shape)
        except ValueError as e:
            raise ConfigError(f"--arch {arch} on scenario {scenario.name}: {e}") from None
    for d in insts:
        if "wrap_model" in d.overridden():
            d.wrap_model(model)
