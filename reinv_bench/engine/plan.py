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
from dataclasses import dataclass, field
from typing import Any

from reinv_bench.registry.components import FileInit, RandomInit
from reinv_bench.results.store import Labels

ARTIFACT_VERSION = 2  # 2: data digest and every plugin's version in the keys; verified artifacts


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
    budget: str = "quick"
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
    precision: str = (
        "fp32"  # fp32 | bf16 | tf32: targets, priors and inversions (the evaluation model stays fp32)
    )
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


# ---- where a target's weights start: RandomInit, FileInit (registry.components) or a pretrain step --


@dataclass(frozen=True)
class PretrainedInit:
    """Weights of a pretrain step of this plan (on the scenario's public data), by its key."""

    key: str

    def record(self) -> dict[str, str]:
        return {"pretrained": self.key}


Init = RandomInit | FileInit | PretrainedInit  # ``record()``: what the step specs (so the keys) hold
