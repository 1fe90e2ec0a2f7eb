"""Expand a request into a plan: resolve its components per scenario, check what can be checked
before any data is read, and drive the builders (``reinv_bench.engine.builders``) over every
architecture x seed x defense, with the attacks' cells of each target."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from reinv_bench.contract.attack import Attack, EnsembleAttack
from reinv_bench.contract.config import ConfigError
from reinv_bench.contract.data import Scenario
from reinv_bench.contract.defense import Defense
from reinv_bench.contract.precision import check_precision
from reinv_bench.engine import recipes
from reinv_bench.engine.builders import (
    Scope,
    attack_cell,
    eval_steps,
    judge_steps,
    prior_steps,
    start_of,
    target_cells,
    target_step,
)
from reinv_bench.engine.canaries import JITTER, makes_canaries, source
from reinv_bench.engine.grid import MAX_SEEDS
from reinv_bench.engine.plan import Cell, Plan, Request, Step, digest
from reinv_bench.registry import spec as specs
from reinv_bench.registry.components import (
    default_metrics,
    resolve_arch,
    resolve_attack,
    resolve_defense,
    resolve_judge,
)
from reinv_bench.registry.lookup import Registry


def _with_defaults(text: str, scenario: Scenario) -> str:
    """The attack spec with the scenario's protocol values for parameters the user left unset
    (``Scenario.attack_defaults``, e.g. GMI's lr 0.01 on its MNIST protocol); they show in the label."""
    comps = specs.parse(text)
    for i, c in enumerate(comps):
        extra = {k: str(v) for k, v in scenario.attack_defaults.get(c.name, {}).items() if k not in c.params}
        comps[i] = specs.Component(c.name, {**c.params, **extra})
    return "+".join(map(str, comps))


def _unique(resolved: list[tuple]) -> list[tuple]:
    """One entry per resolved description: ``re[p=0.5]`` and ``re[p=.5]`` are one defense."""
    seen: dict[str, tuple] = {}
    for entry in resolved:
        seen.setdefault(digest(entry[1]), entry)
    return list(seen.values())


def _metric_names(req: Request, registry: Registry, scenario: Scenario) -> tuple[list[str], list[str]]:
    """The request's metrics, else the scenario's defaults (``components.applies``: those of its
    protocol and those it names); and ``name@version`` of each."""
    for m in scenario.default_metrics:  # a name the scenario gives must be installed
        registry.get("metric", m)
    names = (
        list(dict.fromkeys(req.metrics))
        if req.metrics is not None
        else [m.name for m in default_metrics(registry, scenario)[0]]
    )
    return names, sorted(f"{m}@{registry.get('metric', m).version}" for m in names)


def _ensembles(
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
            members.append(resolve_attack(registry, _with_defaults(text, scenario), budget))
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
        members = _unique(members)
        desc = {**ens[1], "members": [m[1] for m in members]}
        ensembles.append(((ens[0], desc, ens[2]), members))
    return _unique(plain + [m for _, ms in ensembles for m in ms]), ensembles


def _defenses(req: Request, registry: Registry) -> list[tuple[str, list[dict[str, Any]], list[Defense]]]:
    """The request's defenses resolved (sweeps expanded, the baseline added, duplicates dropped)."""
    defenses = list(dict.fromkeys(req.defenses))
    if req.baseline and any(d != "none" for d in defenses) and "none" not in defenses:
        defenses.insert(0, "none")
    return _unique(
        [resolve_defense(registry, d, req.budget, keep) for text in defenses for d, keep in specs.sweep(text)]
    )


def expand(req: Request, registry: Registry, data_digest: Callable[[str], str] | None = None) -> Plan:
    """The plan of ``req``. ``data_digest(scenario)`` gives the digest of a scenario's data as
    it will be read (default: load it); it enters every step key that reads data."""
    check_precision(req.precision)
    if req.convergence < 0:
        raise ConfigError(f"convergence: give a number of classes (0: no check), got {req.convergence}")
    if not 1 <= req.seeds <= MAX_SEEDS:  # from Python too: a typo of a few zeros is an error, not a hang
        raise ConfigError(f"seeds must be between 1 and {MAX_SEEDS} (seeds per cell), got {req.seeds}")
    if data_digest is None:

        def data_digest(name: str) -> str:
            root = None if req.data_root is None else Path(req.data_root)
            return registry.get("scenario", name).load(root).digest

    steps: dict[str, Step] = {}
    cells: list[Cell] = []
    notes: list[str] = []
    for m in req.metrics or ():
        registry.get("metric", m)
    judges = list(
        {j["label"]: j for j in (resolve_judge(registry, t, req.budget) for t in req.judges)}.values()
    )
    defenses = _defenses(req, registry)
    attack_texts = [(a, keep) for text in dict.fromkeys(req.attacks) for a, keep in specs.sweep(text)]
    for sname in dict.fromkeys(req.scenarios):
        cells += _scenario_cells(
            req, registry, steps, sname, data_digest, judges, defenses, attack_texts, notes
        )
    return Plan(steps, cells, list(dict.fromkeys(notes)))


def _scenario_cells(
    req: Request,
    registry: Registry,
    steps: dict[str, Step],
    sname: str,
    data_digest: Callable[[str], str],
    judges: list[dict[str, Any]],
    defenses: list[tuple],
    attack_texts: list[tuple[str, frozenset[str]]],
    notes: list[str],
) -> list[Cell]:
    """The cells of one scenario (their steps added to ``steps``): its components resolved and
    checked before any data is read, then every architecture x seed x defense."""
    scenario: Scenario = recipes.with_recipes(registry.get("scenario", sname), req.recipes)
    resolved = [
        resolve_attack(registry, _with_defaults(a, scenario), req.budget, keep) for a, keep in attack_texts
    ]
    attacks, ensembles = _ensembles(registry, _unique(resolved), scenario, req.budget, notes)
    canary = canary_spec(req, sc_name=sname, scenario=scenario, attacks=attacks) if req.canaries else None
    metrics, metric_versions = _metric_names(req, registry, scenario)
    archs = [resolve_arch(registry, t) for t in dict.fromkeys(req.archs or [scenario.default_arch])]
    for _, arch, arch_init in archs:  # plan-time errors before any data is read
        for *_, insts in defenses:
            start_of(registry, scenario, arch, arch_init, insts)
            _check_structure(registry, scenario, arch, insts)
    sc = Scope(
        req,
        registry,
        steps,
        scenario,
        {
            "scenario": sname,
            "scenario_version": scenario.version,
            "data_root": req.data_root,
            "data": data_digest(sname),
        },
        {} if req.precision == "fp32" else {"precision": req.precision},
        metrics=metrics,
        metric_versions=metric_versions,
    )
    eval_steps(sc)
    sc.judges = [judge_steps(sc, j) for j in judges]
    if canary is not None:
        canary["priors"] = prior_steps(sc, canary.pop("source"), "", "", 0)
    cells: list[Cell] = []
    for arch in archs:
        for seed in range(req.seeds):
            for defense in defenses:
                cells += _defense_cells(sc, arch, defense, seed, attacks, ensembles, canary, notes)
    return cells


def _defense_cells(
    sc: Scope,
    arch: tuple,
    defense: tuple,
    seed: int,
    attacks: list[tuple],
    ensembles: list[tuple[tuple, list[tuple]]],
    canary: dict[str, Any] | None,
    notes: list[str],
) -> list[Cell]:
    """The cells of one target arch x defense x seed: every attack's and ensemble's, their
    convergence checks (``--convergence``) and the same attacks on its canary twin (``--canaries``)."""
    steps = sc.steps
    target = target_step(sc, arch, defense, seed)
    if _trained_alike(steps[target[0]].spec, steps[sc.eval_key].spec):
        notes.append(_SELF_JUDGED.format(t=steps[target[0]].label, e=steps[sc.eval_key].label))
    cells = target_cells(sc, arch, defense, target, attacks, ensembles, seed)
    if sc.req.convergence:  # issue 29, opt-in: each attack again at twice its iterations
        for attack in attacks:
            if (doubled := convergence_cell(sc, arch, defense, target, attack, seed)) is None:
                notes.append(f"--convergence: {attack[0]} declares no iteration count; not checked")
            else:
                cells.append(doubled)
    if canary is not None:  # the same attacks on a target with planted canaries
        csc = replace(sc, protocol=f"{sc.protocol}, {canary['k']} canaries")
        ctarget = target_step(csc, arch, defense, seed, {**canary, "seed": seed})
        for cell in target_cells(csc, arch, defense, ctarget, attacks, ensembles, seed):
            cell.config["canaries"] = {k: canary[k] for k in ("k", "jitter")}
            cells.append(cell)
    return cells


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


# ---- issue 29: the convergence check ------------------------------------------------------------


def iteration_param(attack: Attack) -> tuple[int, str] | None:
    """(position in the attack's chain, wrapper first; parameter) of the attack's iteration count:
    the first attack of the chain that declares ``iterations_param``, or has an ``iters``
    parameter (a wrapper's own, like lomma's, replaces its base's); None when none does."""
    chain = [attack]
    while getattr(chain[-1], "base", None) is not None:
        chain.append(chain[-1].base)
    for i, a in enumerate(chain):
        name = getattr(a, "iterations_param", None) or ("iters" if "iters" in a.params else None)
        if name:
            return i, name
    return None


def subsample(classes: list[int], k: int) -> list[int]:
    """``k`` evenly spaced classes of ``classes`` (all of them when there are at most ``k``)."""
    n = len(classes)
    return list(classes) if k >= n else [classes[(i * n) // k] for i in range(k)]


def convergence_cell(
    sc: Scope, arch: tuple, defense: tuple, target: tuple, attack: tuple, seed: int
) -> Cell | None:
    """The convergence check of one cell (``run --convergence K``; Carlini et al. 2019: "doubling
    the iterations does not increase success"): the same attack with its iteration count doubled
    (``iteration_param``; a tuple of phases: each doubled), on ``K`` evenly spaced attacked
    classes, stored as a row of its own whose config holds ``convergence`` ({"of": the attack's
    label, "param", "from", "to", "classes", "attacked"}). The leaderboard pairs it with the
    standard cell (``reinv_bench.results.validity``); it never becomes an entry of its own. None: the
    attack declares no iteration count."""
    alabel, _, inst = attack
    found = iteration_param(inst)
    if found is None:
        return None
    i, param = found
    chain = [inst]
    while getattr(chain[-1], "base", None) is not None:
        chain.append(chain[-1].base)
    value = chain[i].config[param]
    doubled = tuple(2 * v for v in value) if isinstance(value, tuple) else 2 * value
    comps = specs.parse(alabel)
    comps[i] = specs.Component(comps[i].name, {**comps[i].params, param: _show_value(doubled)})
    twice = resolve_attack(sc.registry, "+".join(map(str, comps)), sc.req.budget, frozenset({param}))
    attacked = subsample(sc.scenario.target_classes(), sc.req.convergence)
    conv = {
        "of": alabel,
        "param": param,
        "from": _show_value(value),
        "to": _show_value(doubled),
        "classes": len(attacked),
        "attacked": attacked,
    }
    return attack_cell(sc, arch, defense, target, twice, seed, conv)


def _show_value(v: Any) -> str:
    """A parameter value as a spec writes it (a tuple of phases ``/``-separated)."""
    return "/".join(map(str, v)) if isinstance(v, tuple) else str(v)


_SELF_JUDGED = (
    "{t} is trained as the {e} is (architecture, start, recipe, seed, no defense): where the "
    "scenario trains its evaluation model on the private training data (mnist does), the target *is* "
    "the evaluation model and judges its own reconstructions; give another --eval-arch"
)


def _trained_alike(target: dict[str, Any], evaluation: dict[str, Any]) -> bool:
    """Whether a target's training spec is the evaluation model's (an undefended target of the
    evaluation model's architecture, recipe and seed)."""
    undefended = all(d["name"] == "none" for d in target.get("defense") or [])
    same = ("arch", "arch_version", "recipe", "seed", "init", "precision")
    return undefended and all(target.get(k) == evaluation.get(k) for k in same)


def _check_structure(registry: Registry, scenario: Scenario, arch: str, insts: list[Defense]) -> None:
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
