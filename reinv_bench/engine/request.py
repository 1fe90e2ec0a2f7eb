"""What a run asks for (``Request``) and the unit a plan is made of: a ``Step``, identified by a
hash of its normalised spec plus the harness's artifact version (``ARTIFACT_VERSION``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from reinv_bench.engine.defaults import DEFAULTS

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
