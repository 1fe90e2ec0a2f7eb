"""The builders of a plan: one per step kind (``reinv_bench.engine.plan.expand`` drives them).

Each adds its step to the scope's steps (identical steps collapse to one) and returns its key;
The cells that read them are built in ``reinv_bench.engine.plan``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reinv_bench.contract.config import ConfigError
from reinv_bench.contract.data import Scenario
from reinv_bench.contract.defense import Defense
from reinv_bench.engine import recipes
from reinv_bench.engine.chunks import _chunk
from reinv_bench.engine.request import Request, Step
from reinv_bench.registry.components import FileInit, RandomInit, build_judge, file_init, resolve_arch
from reinv_bench.registry.lookup import Registry


@dataclass(frozen=True)
class PretrainedInit:
    """Weights of a pretrain step of this plan (on the scenario's public data), by its key."""

    key: str

    def record(self) -> dict[str, str]:
        return {"pretrained": self.key}


Init = RandomInit | FileInit | PretrainedInit  # ``record()``: what the step specs (so the keys) hold


@dataclass
class Scope:
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


def eval_steps(sc: Scope) -> None:
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


def _eval_model(sc: Scope, text: str) -> tuple[str, str, dict[str, Any]]:
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


def _pretrain_step(sc: Scope, arch: str) -> str:
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


def judge_steps(sc: Scope, judge: dict[str, Any]) -> dict[str, Any]:
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


def _init(sc: Scope, arch: str, arch_init: Init, insts: list[Defense]) -> Init:
    """Where a target's weights start: random, a local file (the architecture's ``weights=``, or
    a pretrained defense's), or a pretrain step on the public data (added to the plan)."""
    start = start_of(sc.registry, sc.scenario, arch, arch_init, insts)
    if start != "pretrain":
        return start
    return PretrainedInit(_pretrain_step(sc, arch))


def start_of(
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


def _target_recipe(sc: Scope, arch: str, insts: list[Defense]) -> dict[str, Any]:
    """The scenario's target recipe, as each defense changes it (a paper's own schedule: tl,
    bido), with the user's values last."""
    recipe = sc.scenario.recipe("target", sc.req.budget, arch)
    for d in insts:
        recipe = d.recipe(recipe, sc.req.budget, arch)
    return recipes.apply(recipe, sc.req.recipes, "target").spec()


def target_step(
    sc: Scope, arch: tuple[str, str, Init], defense: tuple, seed: int, canary: dict | None = None
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


def prior_steps(sc: Scope, attack: tuple, target_key: str, dlabel: str, seed: int) -> dict[str, str]:
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


def invert_step(
    sc: Scope,
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
