"""Expand a request (attacks x defenses x architectures x scenarios x seeds) into a DAG of steps.

Each step is identified by a hash of its normalised spec (plugin names, every plugin's
``version``, fully resolved hyperparameters, the data's digest, seed) plus the harness's artifact
version: changing data, a plugin's version or a hyperparameter gives new keys, never a stale
reuse. Identical
steps collapse to one, so a grid that shares targets trains each once, and a second run of the
same request finds every artifact already there.

    eval      the scenario's evaluation model           once per scenario (and budget)
    pretrain  a model pretrained on public data         for defenses that start pretrained (TL)
    target    arch x defense x scenario x seed          shared by all attacks
    prior     an attack's prior (GAN, ...), by kind      once per scenario, or per target
    invert    attack x target x seed -> reconstructions (or one step per class chunk, --class-chunk)
    merge     the chunks of one inversion: a manifest of their artifacts, read chunk by chunk
and a *cell* (one results row) = invert + evaluation by the metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reinv_bench.contract.attack import Attack
from reinv_bench.contract.config import ConfigError
from reinv_bench.contract.data import Scenario
from reinv_bench.contract.precision import check_precision
from reinv_bench.engine import recipes
from reinv_bench.engine.builders import (
    Init,
    Scope,
    eval_steps,
    invert_step,
    judge_steps,
    prior_steps,
    start_of,
    target_step,
)
from reinv_bench.engine.chunks import reshaping_chunk
from reinv_bench.engine.grid import MAX_SEEDS
from reinv_bench.engine.request import ARTIFACT_VERSION, Request, Step, data_spec, digest
from reinv_bench.engine.resolve import (
    SELF_JUDGED,
    canary_spec,
    check_structure,
    defenses_of,
    metric_names,
    resolve_ensembles,
    trained_alike,
    unique,
    with_defaults,
)
from reinv_bench.registry import spec as specs
from reinv_bench.registry.components import judge_identity, resolve_arch, resolve_attack, resolve_judge
from reinv_bench.registry.lookup import Registry
from reinv_bench.results.store import Labels
from reinv_bench.results.validity import CONVERGENCE

__all__ = ["ARTIFACT_VERSION", "Cell", "Plan", "Request", "Step", "data_spec", "digest", "expand"]


@dataclass
class Cell:
    cell_id: str
    labels: Labels  # scenario, protocol, arch, defense, attack, threat model, seed, budget
    config: dict[str, Any]  # every resolved hyperparameter
    eval_key: str
    target_key: str
    prior_keys: list[str]
    invert_key: str
    metrics: list[str]
    # the judges run on the cell (--judge): {"label", "name", "version", "config"} each
    judges: list[dict[str, Any]] = field(default_factory=list)
    # further evaluation models (--eval-arch given again): label -> their eval step's key
    extra_evals: dict[str, str] = field(default_factory=dict)


@dataclass
class Plan:
    steps: dict[str, Step]
    cells: list[Cell]
    notes: list[str] = field(default_factory=list)  # what the run should say before it starts


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
    defenses = defenses_of(req, registry)
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
        resolve_attack(registry, with_defaults(a, scenario), req.budget, keep) for a, keep in attack_texts
    ]
    attacks, ensembles = resolve_ensembles(registry, unique(resolved), scenario, req.budget, notes)
    canary = canary_spec(req, sc_name=sname, scenario=scenario, attacks=attacks) if req.canaries else None
    metrics, metric_versions = metric_names(req, registry, scenario)
    archs = [resolve_arch(registry, t) for t in dict.fromkeys(req.archs or [scenario.default_arch])]
    for _, arch, arch_init in archs:  # plan-time errors before any data is read
        for *_, insts in defenses:
            start_of(registry, scenario, arch, arch_init, insts)
            check_structure(registry, scenario, arch, insts)
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
    if trained_alike(steps[target[0]].spec, steps[sc.eval_key].spec):
        notes.append(SELF_JUDGED.format(t=steps[target[0]].label, e=steps[sc.eval_key].label))
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


# ---- the cells of one target -------------------------------------------------------------------


def attack_cell(
    sc: Scope,
    arch: tuple[str, str, Init],
    defense: tuple,
    target: tuple[str, Init, dict],
    attack: tuple,
    seed: int,
    convergence: dict[str, Any] | None = None,
) -> Cell:
    """One results row to be: the attack's priors and inversion of ``target`` (``target_step``)
    and its evaluation. ``convergence``: the row of a convergence check (``convergence_cell``),
    which attacks the classes it names and records it in its config and its cell id."""
    arch_label, dlabel, alabel = arch[0], defense[0], attack[0]
    priors = prior_steps(sc, attack, target[0], dlabel, seed)
    invert_key = invert_step(
        sc,
        attack,
        target[0],
        priors,
        f"invert {alabel} -> {arch_label} / {dlabel} / seed {seed}"
        + (" (convergence check)" if convergence else ""),
        seed,
        None if convergence is None else convergence["attacked"],
    )
    return _make_cell(sc, arch, defense, target, attack, seed, list(priors.values()), invert_key, convergence)


def _make_cell(
    sc: Scope,
    arch: tuple[str, str, Init],
    defense: tuple,
    target: tuple[str, Init, dict],
    attack: tuple,
    seed: int,
    prior_keys: list[str],
    invert_key: str,
    convergence: dict[str, Any] | None = None,
) -> Cell:
    """The results row to be of ``attack``'s reconstructions ``invert_key`` of ``target``."""
    arch_label, name, _ = arch
    dlabel, ddesc, _ = defense
    alabel, adesc, inst = attack
    target_key, init, recipe = target
    labels = Labels(
        sc.scenario.name, sc.protocol, arch_label, dlabel, alabel, inst.threat_model, seed, sc.req.budget
    )
    config = {
        "scenario": {**sc.data, "classes": sc.scenario.target_classes()},
        "arch": {"name": name, "init": init.record()},
        "target_recipe": recipe,
        "eval": sc.eval_desc,
        "defense": ddesc,
        "attack": adesc,
        "precision": sc.req.precision,
        # the user's --recipe overrides: what the comparisons hold equal (a defense's own schedule,
        # TL's or BiDO's at the paper budget, is in target_recipe and not part of the setting)
        "recipes": sc.req.recipes,
    }
    if chunk := reshaping_chunk(sc.req.class_chunk, inst, sc.scenario):
        config["class_chunk"] = chunk
    ident = {"invert": invert_key, "eval": sc.eval_key, "metrics": sc.metric_versions}
    if convergence is not None:  # (ordinary cells keep their ids)
        config[CONVERGENCE] = ident[CONVERGENCE] = convergence
    if sc.judges:  # (a run without judges or further evaluation models keeps its cell ids)
        ident["judges"] = [judge_identity(sc.registry, j) for j in sc.judges]
    if sc.extra_evals:
        ident["extra_evals"] = sc.extra_evals
    return Cell(
        digest(ident),
        labels,
        config,
        sc.eval_key,
        target_key,
        list(prior_keys),
        invert_key,
        list(sc.metrics),
        list(sc.judges),
        dict(sc.extra_evals),
    )


def _ensemble_cell(
    sc: Scope,
    arch: tuple[str, str, Init],
    defense: tuple,
    target: tuple[str, Init, dict],
    ensemble: tuple,
    members: list[tuple[tuple, Cell]],
    seed: int,
) -> Cell:
    """The ensemble's row to be (``reinv_bench.results.ensemble``): a ``pool`` step over its members'
    inversions of ``target`` (each also a cell of its own), keeping candidates by the target's
    score under the ensemble's threat model."""
    alabel, _, inst = ensemble
    spec = {
        "ensemble": {"name": inst.name, "version": inst.version},
        "members": {m[0]: cell.invert_key for m, cell in members},
        "target": target[0],
        "threat": inst.threat_model,
        "keep": inst.keep(),
        "classes": sc.scenario.target_classes(),
        "seed": seed,
        **sc.prec,
    }
    key = sc.add(
        Step(
            "pool",
            spec,
            deps=(target[0], *spec["members"].values()),
            label=f"pool {alabel} -> {arch[0]} / {defense[0]} / seed {seed}",
        )
    )
    return _make_cell(sc, arch, defense, target, ensemble, seed, [], key)


def target_cells(
    sc: Scope,
    arch: tuple[str, str, Init],
    defense: tuple,
    target: tuple[str, Init, dict],
    attacks: list[tuple],
    ensembles: list[tuple[tuple, list[tuple]]],
    seed: int,
) -> list[Cell]:
    """The cells of one target: one per attack, then one per ensemble over its members' cells."""
    cells = [attack_cell(sc, arch, defense, target, attack, seed) for attack in attacks]
    by_attack = {digest(a[1]): c for a, c in zip(attacks, cells)}
    for ens, members in ensembles:
        member_cells = [(m, by_attack[digest(m[1])]) for m in members]
        cells.append(_ensemble_cell(sc, arch, defense, target, ens, member_cells, seed))
    return cells


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
