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

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from reinv_bench.contract.attack import Attack, EnsembleAttack, WrapperAttack
from reinv_bench.contract.config import PRECISIONS, ConfigError
from reinv_bench.contract.data import Scenario
from reinv_bench.contract.defense import Defense
from reinv_bench.engine import recipes
from reinv_bench.engine.defaults import DEFAULTS
from reinv_bench.engine.grid import MAX_SEEDS
from reinv_bench.registry import spec as specs
from reinv_bench.registry.lookup import Registry
from reinv_bench.results.store import Labels
from reinv_bench.results.validity import CONVERGENCE

ARTIFACT_VERSION = 2  # 2: data digest and every plugin's version in the keys; verified artifacts


def check_precision(precision: str, device: Any = None) -> None:
    """The one check of ``--precision``: a known name, and bf16 only on a device that has it."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: give one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and device is not None and device.type == "cuda":
        import torch

        if not torch.cuda.is_bf16_supported():
            raise ConfigError(
                f"precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16; use tf32 or fp32"
            )


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


@dataclass
class Step:
    kind: str
    spec: dict[str, Any]
    deps: tuple[str, ...] = ()
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # not hashed: e.g. which attack prepares a prior
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = digest({"kind": self.kind, "v": ARTIFACT_VERSION, **self.spec})


def data_spec(steps: dict[str, Step], step: Step) -> dict[str, Any]:
    """The spec naming the scenario and data ``step`` reads: its own, else its target's (an
    inversion), else its first chunk's target's (a merge)."""
    while "scenario" not in step.spec:
        step = steps[step.spec["target"] if "target" in step.spec else step.spec["chunks"][0]]
    return step.spec


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
class Request:
    attacks: list[str]
    defenses: list[str]
    archs: list[str] = field(default_factory=list)  # empty: each scenario's default
    scenarios: list[str] = field(default_factory=lambda: ["mnist"])
    seeds: int = 1
    budget: str = DEFAULTS.budget_cpu  # run() without a request: DEFAULTS.budget(device)
    baseline: bool = True
    data_root: str | None = None
    metrics: list[str] | None = None  # None: the metrics of each scenario's protocol
    eval_arch: str | None = None  # None: each scenario's evaluation model
    # further evaluation models: each judges the same reconstructions (attack_acc[LABEL]); the
    # first, eval_arch, stays the one the protocol and the comparisons use
    extra_eval_archs: list[str] = field(default_factory=list)
    judges: list[str] = field(default_factory=list)  # judge specs (--judge), e.g. "verification"
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> TrainRecipe overrides
    class_chunk: int | str = (
        0  # classes per inversion step (0: all in one; "auto": the attack's identity batch)
    )
    # fp32 | bf16 | tf32: targets, priors and inversions (the evaluation model stays fp32)
    precision: str = DEFAULTS.precision
    # issue 29, opt-in (it costs a second inversion of K classes per cell): each cell's attack again at
    # twice its iterations on K evenly spaced attacked classes (``convergence_cell``); 0: none
    convergence: int = 0
    # --canaries K: besides the ordinary cells, each target again with K planted canary identities
    # (reinv_bench.engine.canaries), attacked by the same attacks; their rows rank apart (protocol label)
    canaries: int = 0


@dataclass
class Plan:
    steps: dict[str, Step]
    cells: list[Cell]
    notes: list[str] = field(default_factory=list)  # what the run should say before it starts


def _component_label(
    name: str,
    cls: type,
    overrides: dict[str, str],
    config: dict,
    budget: str,
    keep: frozenset[str] = frozenset(),
) -> str:
    """The component as the leaderboard shows it: the parameters that differ from the budget's
    defaults, written from their parsed values (``p=.5`` and ``p=0.50`` both read ``p=0.5``)."""
    base = cls.resolve({}, budget)
    shown = {k: _show(config[k]) for k in overrides if config[k] != base[k] or k in keep}
    return str(specs.Component(name, shown))


def _show(v: Any) -> str:
    if isinstance(v, tuple):
        return ("-" if len(v) == 2 and min(v) >= 0 else "/").join(map(str, v))
    return str(v)


def resolve_defense(
    registry: Registry, text: str, budget: str, keep: frozenset[str] = frozenset()
) -> tuple[str, list[dict[str, Any]], list[Defense]]:
    """Parse and validate a defense spec; returns (label, normalised spec, instances)."""
    from reinv_bench.engine.train import compose

    labels, desc, insts = [], [], []
    comps = specs.parse(text)
    names = [c.name for c in comps]
    if dup := next((n for n in names if names.count(n) > 1), None):
        raise ConfigError(f"defense {text!r}: {dup} appears twice; give each defense once")
    if len(comps) > 1:  # none is the identity: none+re is re
        comps = [c for c in comps if c.name != "none" or c.params]
    for comp in comps:
        cls: type[Defense] = registry.get("defense", comp.name)
        inst = cls(comp.params, budget)
        insts.append(inst)
        labels.append(_component_label(comp.name, cls, comp.params, inst.config, budget, keep))
        desc.append({"name": comp.name, "version": cls.version, "config": dict(inst.config)})
    compose(insts)  # refuses conflicting compositions
    return "+".join(labels), desc, insts


def resolve_attack(
    registry: Registry, text: str, budget: str, keep: frozenset[str] = frozenset()
) -> tuple[str, dict[str, Any], Attack]:
    """Parse ``NAME[...]`` or ``WRAPPER[...]+NAME[...]`` (e.g. ``lomma+gmi``): a wrapper attack
    (a ``WrapperAttack``) modifies the attack to its right, which it receives as ``base``."""
    comps = specs.parse(text)
    desc: dict[str, Any] | None = None
    labels = []
    for i, comp in enumerate(reversed(comps)):
        cls: type[Attack] = registry.get("attack", comp.name)
        wraps = issubclass(cls, WrapperAttack)
        if i == 0 and wraps:
            raise specs.SpecError(f"attack {comp.name!r} wraps a base attack: write e.g. {comp.name}+gmi")
        if i > 0 and not wraps:
            raise specs.SpecError(
                f"{text!r}: {comp.name!r} is not a wrapper attack; only wrappers (like lomma) "
                "may stand left of '+'"
            )
        inst = (
            cls(comp.params, budget)
            if desc is None
            else cls(comp.params, budget, base=build_attack(registry, desc))
        )
        labels.insert(0, _component_label(comp.name, cls, comp.params, inst.config, budget, keep))
        desc = {
            "name": comp.name,
            "version": cls.version,
            "config": keyed(cls, inst.config),
            **({"base": desc} if desc is not None else {}),
        }
    return "+".join(labels), desc, inst


def keyed(cls: type, config: dict[str, Any]) -> dict[str, Any]:
    """The config as step keys hold it: a ``Param(new=True)`` at its default is left out."""
    params = cls.params
    return {k: v for k, v in config.items() if not (params[k].new and v == params[k].default)}


def build_attack(registry: Registry, desc: dict[str, Any]) -> Attack:
    """Rebuild an attack (and the attack it wraps) from its stored description."""
    cls = registry.get("attack", desc["name"])
    if "base" in desc:
        return cls(desc["config"], base=build_attack(registry, desc["base"]))
    return cls(desc["config"])


AUTO_CHUNK_BYTES = 2 * 2**30  # --class-chunk auto: host memory one inversion step's classes may hold
AUTO_CHUNK_CLASSES = 60  # auto, for an attack that estimates neither: the official scripts' identity batch


def _chunk(class_chunk: int | str, attack: Attack, image_shape: tuple[int, ...]) -> int:
    """Classes per inversion step. ``auto``: the attack's identity batch (``batch_ids``: the
    official scripts attack 60 identities at a time, and chunks aligned with it give the unchunked
    reconstructions); else as many classes as fit in ``AUTO_CHUNK_BYTES`` by the attack's
    ``memory_per_class`` estimate (PPA, IF-GMI); else ``AUTO_CHUNK_CLASSES``."""
    if class_chunk != "auto":
        return int(class_chunk)
    if batch := _batch_ids(attack):
        return batch
    chain = _chain(attack)
    per_class = next((b for a in chain if (b := a.memory_per_class(tuple(image_shape)))), None)
    return max(1, AUTO_CHUNK_BYTES // per_class) if per_class else AUTO_CHUNK_CLASSES


def _chain(attack: Attack) -> list[Attack]:
    """A wrapper attack, then the attack it wraps, and so on."""
    chain = [attack]
    while getattr(chain[-1], "base", None) is not None:
        chain.append(chain[-1].base)
    return chain


def _batch_ids(attack: Attack) -> int:
    """The attack's identity batch (``batch_ids``; 0: it has none)."""
    return int(next((a.config["batch_ids"] for a in _chain(attack) if a.config.get("batch_ids")), 0))


def reshaping_chunk(class_chunk: int | str, attack: Attack, scenario: Scenario) -> int:
    """The classes per inversion step when chunking changes the reconstructions, else 0: the step
    is chunked and its chunks are not whole identity batches of the attack (each class draws from
    its own random stream, but an identity batch's loss is their mean, so a chunk that splits one
    optimises other batches; an attack without identity batches draws one stream over every class
    it attacks, PPA's crops say). Such a cell records ``class_chunk`` in its config: its rows are
    another setting, never averaged nor compared with unchunked ones (issue 30, item 13)."""
    classes = scenario.target_classes()
    chunk = _chunk(class_chunk, attack, scenario.image_shape)
    if attack.uses_eval_model() or not chunk or len(classes) <= chunk:
        return 0
    batch = _batch_ids(attack)
    return 0 if batch and chunk % batch == 0 else chunk


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


# ---- where a network's weights start ------------------------------------------------------------


@dataclass(frozen=True)
class RandomInit:
    """Random initialisation (the architecture's own)."""

    def record(self) -> None:
        return None


@dataclass(frozen=True)
class FileInit:
    """Weights from a local file, identified by its SHA-256 (``--arch NAME[weights=...]``, a
    pretrained defense's ``weights=``)."""

    path: str
    sha256: str

    def record(self) -> dict[str, str]:
        return {"weights": self.path, "sha256": self.sha256}


@dataclass(frozen=True)
class PretrainedInit:
    """Weights of a pretrain step of this plan (on the scenario's public data), by its key."""

    key: str

    def record(self) -> dict[str, str]:
        return {"pretrained": self.key}


Init = RandomInit | FileInit | PretrainedInit  # ``record()``: what the step specs (so the keys) hold


# ---- the builders: one per step kind ------------------------------------------------------------


@dataclass
class _Scope:
    """What the builders of one scenario share: the request, the registry, the plan's steps so far,
    the scenario (with the user's recipes), its data spec, its evaluation step and its metrics."""

    req: Request
    registry: Registry
    steps: dict[str, Step]
    scenario: Scenario
    data: dict[str, Any]  # scenario, version, data root and digest: in every key that reads data
    prec: dict[str, str]  # {"precision": ...} unless fp32 (fp32 keys stay as they were)
    protocol: str = ""
    eval_key: str = ""
    eval_desc: dict[str, Any] = field(default_factory=dict)  # the cell config's "eval" entry
    metrics: list[str] = field(default_factory=list)
    metric_versions: list[str] = field(default_factory=list)
    judges: list[dict[str, Any]] = field(default_factory=list)
    extra_evals: dict[str, str] = field(default_factory=dict)

    def add(self, step: Step) -> str:
        self.steps.setdefault(step.key, step)
        return step.key


def _eval_step(sc: _Scope) -> None:
    """The scenario's evaluation model (another one is another protocol: its rows rank apart), and
    the further ones the request names (they judge the same reconstructions, in columns of their own)."""
    req, scenario = sc.req, sc.scenario
    label, sc.eval_key, sc.eval_desc = _eval_model(sc, req.eval_arch or scenario.eval_arch)
    sc.protocol = scenario.protocol if label == scenario.eval_arch else f"{scenario.protocol}, eval {label}"
    for text in dict.fromkeys(req.extra_eval_archs):
        extra, key, _ = _eval_model(sc, text)
        if extra != label:
            sc.extra_evals[extra] = key


# The evaluation models' training seed: a stream of their own, apart from every target's (targets
# take seeds 0 .. seeds-1 and a defense's later phases seed + i), so that no target is trained as
# the evaluation model is (issue 30: on the digits, the seed-0 undefended resnet8 target *was* the
# evaluation model, bit for bit). Was 0 until then: every stored evaluation model changed once.
EVAL_SEED = 2**31 - 1


def _eval_model(sc: _Scope, text: str) -> tuple[str, str, dict[str, Any]]:
    """An evaluation model's (label, step key, description in the cell config); trained with
    ``EVAL_SEED``."""
    req, scenario = sc.req, sc.scenario
    label, arch, init = resolve_arch(sc.registry, text)
    recipe = scenario.recipe("eval", req.budget, arch).spec()
    key = sc.add(
        Step(
            "eval",
            {
                **sc.data,
                "arch": arch,
                "arch_version": sc.registry.get("architecture", arch).version,
                "recipe": recipe,
                "seed": EVAL_SEED,
                "init": init.record(),
            },
            label=f"eval model {label} on {scenario.name}",
        )
    )
    # the seed in the setting: rows judged by the seed-0 evaluation models of before rank apart
    return label, key, {"arch": label, "init": init.record(), "recipe": recipe, "seed": EVAL_SEED}


def resolve_judge(registry: Registry, text: str, budget: str) -> dict[str, Any]:
    """Parse and validate a judge spec ``NAME[key=value,...]``: its label, name, version, config."""
    comps = specs.parse(text)
    if len(comps) != 1:
        raise ConfigError(f"--judge {text!r}: one judge per --judge (repeat the option for several judges)")
    (comp,) = comps
    cls = registry.get("judge", comp.name)
    if cls.external:
        raise ConfigError(
            f"--judge {comp.name}: its answers come from outside a run "
            f"(reinv-bench judge export / import), not from --judge"
        )
    inst = cls(comp.params, budget)
    try:
        found = inst.check(None)  # e.g. mllm's url and model, the model read from the environment
    except ValueError as exc:
        raise ConfigError(f"--judge {comp.name}: {str(exc).removeprefix(comp.name + ': ')}") from None
    inst.config.update(found)
    # transport options (how answers are fetched: an endpoint's URL, timeouts) are in neither the
    # label nor the identity: changing one never re-evaluates a cell under a new column
    shown = {k: v for k, v in {**comp.params, **found}.items() if k not in cls.transport}
    label = _component_label(comp.name, cls, shown, inst.config, budget, keep=frozenset(found))
    config = keyed(cls, dict(inst.config))  # a Param(new=True) at its default keeps the cell ids
    return {"label": label, "name": comp.name, "version": cls.version, "config": config}


def judge_identity(registry: Registry, desc: dict[str, Any]) -> dict[str, Any]:
    """A cell's ``judges`` entry as the cell id holds it: without the judge's transport options."""
    transport = registry.get("judge", desc["name"]).transport
    if not transport:
        return desc
    return {**desc, "config": {k: v for k, v in desc["config"].items() if k not in transport}}


def build_judge(registry: Registry, desc: dict[str, Any]):
    """The judge a cell's ``judges`` entry describes."""
    return registry.get("judge", desc["name"])(desc["config"])


def _metric_names(req: Request, registry: Registry, scenario: Scenario) -> tuple[list[str], list[str]]:
    """The request's metrics, else the scenario's defaults (``registry.defaults.applies``: those of its
    protocol and those it names); and ``name@version`` of each."""
    from reinv_bench.registry.defaults import default_metrics

    for m in scenario.default_metrics:  # a name the scenario gives must be installed
        registry.get("metric", m)
    names = (
        list(dict.fromkeys(req.metrics))
        if req.metrics is not None
        else [m.name for m in default_metrics(registry, scenario)[0]]
    )
    return names, sorted(f"{m}@{registry.get('metric', m).version}" for m in names)


def _target_recipe(sc: _Scope, arch: str, insts: list[Defense]) -> dict[str, Any]:
    """The scenario's target recipe, as each defense changes it (a paper's own schedule: tl,
    bido), with the user's values last."""
    recipe = sc.scenario.recipe("target", sc.req.budget, arch)
    for d in insts:
        recipe = d.recipe(recipe, sc.req.budget, arch)
    return recipes.apply(recipe, sc.req.recipes, "target").spec()


def _target_step(
    sc: _Scope, arch: tuple[str, str, Init], defense: tuple, seed: int, canary: dict | None = None
) -> tuple[str, Init, dict]:
    """The target arch x defense x seed (after its pretrain step, if it starts from one); returns
    (key, where its weights start, its recipe). ``canary``: the planted-canary spec of a canary
    target (``reinv_bench.engine.canaries``; its own key, built after the prior it samples)."""
    arch_label, name, arch_init = arch
    dlabel, ddesc, insts = defense
    recipe = _target_recipe(sc, name, insts)
    init = _init(sc, name, arch_init, insts)
    deps = (init.key,) if isinstance(init, PretrainedInit) else ()
    if canary is not None:
        deps += tuple(canary["priors"].values())
    key = sc.add(
        Step(
            "target",
            {
                **sc.data,
                "arch": name,
                "arch_version": sc.registry.get("architecture", name).version,
                "defense": ddesc,
                "recipe": recipe,
                "seed": seed,
                "init": init.record(),
                **sc.prec,
                **({"canaries": canary} if canary is not None else {}),
            },
            deps=deps,
            label=f"target {arch_label} / {dlabel} / seed {seed}"
            + (f" / {canary['k']} canaries" if canary is not None else ""),
        )
    )
    return key, init, recipe


def _prior_steps(sc: _Scope, attack: tuple, target_key: str, dlabel: str, seed: int) -> dict[str, str]:
    """The attack's priors, by kind: once per scenario, or per target for those that use it."""
    _, adesc, inst = attack
    priors = {}
    for ps in inst.priors():
        unknown = [k for k in ps.needs if k not in priors]
        if unknown:
            raise ConfigError(f"prior {ps.kind!r} needs {unknown}, not among the attack's earlier priors")
        built_from = {k: priors[k] for k in ps.needs}  # PriorSpec.needs: keys enter this one's key
        spec = {
            **sc.data,
            "kind": ps.kind,
            "version": ps.version,
            "params": ps.params,
            "target": target_key if ps.uses_target else None,
            "seed": seed if ps.uses_target else 0,
            **sc.prec,
            **({"from": built_from} if built_from else {}),
        }
        label = f"prior {ps.kind} on {sc.scenario.name}" + (
            f" for {dlabel} seed {seed}" if ps.uses_target else ""
        )
        priors[ps.kind] = sc.add(
            Step(
                "prior",
                spec,
                deps=((target_key,) if ps.uses_target else ()) + tuple(built_from.values()),
                label=label,
                extra={"attack": adesc},
            )
        )
    return priors


def _invert_step(
    sc: _Scope,
    attack: tuple,
    target_key: str,
    priors: dict[str, str],
    label: str,
    seed: int,
    classes: list[int] | None = None,
) -> str:
    """The inversion of the attacked classes (``classes``: a subsample of them, for the convergence
    check): one step, or one cached step per chunk of classes (they spread over workers and resume
    chunk by chunk) and a ``merge`` step listing them."""
    spec = {"attack": attack[1], "target": target_key, "priors": priors, "seed": seed, **sc.prec}
    classes = sc.scenario.target_classes() if classes is None else classes
    chunk = _chunk(sc.req.class_chunk, attack[2], sc.scenario.image_shape)
    deps = (target_key, *priors.values())
    if attack[2].uses_eval_model():  # it chooses with the evaluation model, over every class at once
        spec["eval"], deps, chunk = sc.eval_key, (*deps, sc.eval_key), 0
    if not chunk or len(classes) <= chunk:
        return sc.add(Step("invert", {**spec, "classes": classes}, deps=deps, label=label))
    parts = [
        sc.add(
            Step(
                "invert",
                {**spec, "classes": classes[i : i + chunk]},
                deps=deps,
                label=f"{label} / classes {classes[i]}-{classes[min(i + chunk, len(classes)) - 1]}",
            )
        )
        for i in range(0, len(classes), chunk)
    ]
    return sc.add(Step("merge", {"chunks": parts, "seed": seed}, deps=tuple(parts), label=f"merge {label}"))


def _cell(
    sc: _Scope,
    arch: tuple[str, str, Init],
    defense: tuple,
    target: tuple[str, Init, dict],
    attack: tuple,
    seed: int,
    convergence: dict[str, Any] | None = None,
) -> Cell:
    """One results row to be: the attack's priors and inversion of ``target`` (``_target_step``)
    and its evaluation. ``convergence``: the row of a convergence check (``convergence_cell``),
    which attacks the classes it names and records it in its config and its cell id."""
    arch_label, dlabel, alabel = arch[0], defense[0], attack[0]
    priors = _prior_steps(sc, attack, target[0], dlabel, seed)
    invert_key = _invert_step(
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
    sc: _Scope,
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
    sc: _Scope,
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
        scenario: Scenario = recipes.with_recipes(registry.get("scenario", sname), req.recipes)
        attacks, ensembles = _ensembles(
            registry,
            _unique(
                [
                    resolve_attack(registry, _with_defaults(a, scenario), req.budget, keep)
                    for a, keep in attack_texts
                ]
            ),
            scenario,
            req.budget,
            notes,
        )
        canary = canary_spec(req, sc_name=sname, scenario=scenario, attacks=attacks) if req.canaries else None
        metrics, metric_versions = _metric_names(req, registry, scenario)
        archs = [resolve_arch(registry, t) for t in dict.fromkeys(req.archs or [scenario.default_arch])]
        for _, arch, arch_init in archs:  # plan-time errors before any data is read
            for *_, insts in defenses:
                _start(registry, scenario, arch, arch_init, insts)
                _check_structure(registry, scenario, arch, insts)
        sc = _Scope(
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
        _eval_step(sc)
        sc.judges = [_judge_steps(sc, j) for j in judges]
        if canary is not None:
            canary["priors"] = _prior_steps(sc, canary.pop("source"), "", "", 0)
        for arch in archs:
            for seed in range(req.seeds):
                for defense in defenses:
                    target = _target_step(sc, arch, defense, seed)
                    if _trained_alike(steps[target[0]].spec, steps[sc.eval_key].spec):
                        notes.append(
                            _SELF_JUDGED.format(t=steps[target[0]].label, e=steps[sc.eval_key].label)
                        )
                    cells += _target_cells(sc, arch, defense, target, attacks, ensembles, seed)
                    if req.convergence:  # issue 29, opt-in: each attack again at twice its iterations
                        for attack in attacks:
                            if (doubled := convergence_cell(sc, arch, defense, target, attack, seed)) is None:
                                notes.append(
                                    f"--convergence: {attack[0]} declares no iteration count; not checked"
                                )
                            else:
                                cells.append(doubled)
                    if canary is not None:  # the same attacks on a target with planted canaries
                        csc = replace(sc, protocol=f"{sc.protocol}, {canary['k']} canaries")
                        ctarget = _target_step(csc, arch, defense, seed, {**canary, "seed": seed})
                        for cell in _target_cells(csc, arch, defense, ctarget, attacks, ensembles, seed):
                            cell.config["canaries"] = {k: canary[k] for k in ("k", "jitter")}
                            cells.append(cell)
    return Plan(steps, cells, list(dict.fromkeys(notes)))


def _target_cells(
    sc: _Scope,
    arch: tuple[str, str, Init],
    defense: tuple,
    target: tuple[str, Init, dict],
    attacks: list[tuple],
    ensembles: list[tuple[tuple, list[tuple]]],
    seed: int,
) -> list[Cell]:
    """The cells of one target: one per attack, then one per ensemble over its members' cells."""
    cells = [_cell(sc, arch, defense, target, attack, seed) for attack in attacks]
    by_attack = {digest(a[1]): c for a, c in zip(attacks, cells)}
    for ens, members in ensembles:
        member_cells = [(m, by_attack[digest(m[1])]) for m in members]
        cells.append(_ensemble_cell(sc, arch, defense, target, ens, member_cells, seed))
    return cells


def canary_spec(req: Request, *, sc_name: str, scenario: Scenario, attacks: list[tuple]) -> dict[str, Any]:
    """``--canaries K``: the planted-canary spec of this scenario's canary targets (without the
    seed), sampled from the prior of the first attack whose prior can make them; a one-line error
    when none can, or when K exceeds the attacked classes."""
    from reinv_bench.engine.canaries import JITTER, makes_canaries, source

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
    sc: _Scope, arch: tuple, defense: tuple, target: tuple, attack: tuple, seed: int
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
    return _cell(sc, arch, defense, target, twice, seed, conv)


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


def resolve_arch(registry: Registry, text: str) -> tuple[str, str, Init]:
    """Parse ``NAME`` or ``NAME[weights=W]``; returns (label, name, init). ``W`` is one of the
    architecture's pretrained short names (``imagenet``), a registered weights name, or a path."""
    comps = specs.parse(text)
    if len(comps) != 1:
        raise specs.SpecError(f"--arch {text!r}: one architecture per --arch (repeat the option for several)")
    comp = comps[0]
    arch = registry.get("architecture", comp.name)
    unknown = sorted(set(comp.params) - {"weights"})
    if unknown:
        raise ConfigError(
            f"architecture {comp.name}: unknown parameter(s) {', '.join(unknown)}; the only one is "
            f"weights=NAME|PATH (NAME: {', '.join(arch.pretrained) or 'none registered'})"
        )
    if not comp.params.get("weights"):
        return str(comp), comp.name, RandomInit()
    return str(comp), comp.name, file_init(registry, arch, comp.params["weights"], f"--arch {text}")


def file_init(registry: Registry, arch, value: str, where: str) -> FileInit:
    """Where a network's pretrained weights come from: a file (found by weights name or path)
    and its SHA-256."""
    from reinv_bench.contract.weights import WeightsUnavailable, locate, sha256_of

    name = arch.pretrained.get(value, value)
    if name in registry.names("weights"):
        try:
            path = locate(registry.get("weights", name))
        except WeightsUnavailable as exc:
            raise ConfigError(f"{where}: {exc}") from None
    else:
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"{where}: {value!r} is neither a file nor a weights name (for {arch.name}: "
                f"{', '.join(arch.pretrained) or 'none'}; all of them: `reinv-bench weights`)"
            )
    path = path.resolve()
    return FileInit(str(path), sha256_of(path))


def weights_init(registry: Registry, arch, value: str, where: str) -> dict[str, str]:
    """``file_init``'s record: {"weights": path, "sha256": digest}."""
    return file_init(registry, arch, value, where).record()


def _init(sc: _Scope, arch: str, arch_init: Init, insts: list[Defense]) -> Init:
    """Where a target's weights start: random, a local file (the architecture's ``weights=``, or
    a pretrained defense's), or a pretrain step on the public data (added to the plan)."""
    start = _start(sc.registry, sc.scenario, arch, arch_init, insts)
    if start != "pretrain":
        return start
    return PretrainedInit(_pretrain_step(sc, arch))


def _pretrain_step(sc: _Scope, arch: str) -> str:
    """A classifier of ``arch`` trained on the scenario's labelled public data (TL's start, a
    judge's network); its key."""
    return sc.add(
        Step(
            "pretrain",
            {
                **sc.data,
                "arch": arch,
                "arch_version": sc.registry.get("architecture", arch).version,
                "recipe": sc.scenario.recipe("pretrain", sc.req.budget, arch).spec(),
                "seed": 0,
            },
            label=f"pretrain {arch} on public {sc.data['scenario']}",
        )
    )


def _judge_steps(sc: _Scope, judge: dict[str, Any]) -> dict[str, Any]:
    """A judge of this scenario's cells, with the key of the network it wants trained on the
    public data (``Judge.public_arch``) as ``public``."""
    inst = build_judge(sc.registry, judge)
    try:
        inst.check(sc.scenario)  # what the scenario declares its classes to be, for one
    except ValueError as exc:
        raise ConfigError(f"--judge {judge['label']}: {exc}") from None
    arch = inst.public_arch(sc.scenario)
    if arch is None:
        return judge
    if not sc.scenario.public_labels:
        raise ConfigError(
            f"--judge {judge['label']}: it needs labelled public data, which scenario "
            f"{sc.scenario.name} does not have; choose its other backbone"
        )
    return {**judge, "public": _pretrain_step(sc, arch)}


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


def _start(
    registry: Registry, scenario: Scenario, arch: str, arch_init: Init, insts: list[Defense]
) -> Init | str:
    """``_init``'s decision without the data: an ``Init``, or "pretrain"."""
    pre = next((d for d in insts if d.pretrained), None)
    if pre is None:
        return arch_init
    if pre.config.get("weights"):
        return file_init(registry, registry.get("architecture", arch), pre.config["weights"], pre.name)
    if not isinstance(arch_init, RandomInit):
        return arch_init
    if not scenario.public_labels:
        raise ConfigError(
            f"{pre.name} starts from pretrained weights, and scenario {scenario.name} has no labelled "
            f"public data to pretrain on: give {pre.name}[weights=PATH|NAME] or "
            f'--arch "{arch}[weights=...]" (`reinv-bench weights` lists the files)'
        )
    return "pretrain"
