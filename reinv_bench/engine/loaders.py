"""What the views load from a workdir and the registry, handed to them by their callers (the views
never import the engine): a row's reconstructions, the private training split of an entry's
scenario, a row's rebuilt target (its features, its defense, its reconstructions) and the
leaderboard label of a published number's attack or defense.

Each loader is a plain callable (the views take them as arguments):

    private_loader(registry)(entry)           the private training split (``.class_names(entry)``)
    reconstruction_loader(artifacts)(key)     a row's reconstructions (``.exists(key)``)
    target_loader(registry, workdir)(row)     (features, defense, reconstructions) or None
    paper_label(registry)(kind, text)         the label of a spec at the paper budget
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reinv_bench.contract.attack import Inversion, Reconstructions
from reinv_bench.engine import plan
from reinv_bench.engine.artifacts import Artifacts
from reinv_bench.engine.plan import Step
from reinv_bench.engine.steps import Env, Worker, reconstructions
from reinv_bench.engine.train import features


def private_loader(registry):
    """``load_private(entry)``: the private training split of the entry's scenario, from the data
    folder stored with its config (one load per scenario and folder)."""
    cache: dict[tuple, Any] = {}

    def load(e):
        root = (e.config.get("scenario") or {}).get("data_root")
        key = (e.scenario, root)
        if key not in cache:
            cache[key] = registry.get("scenario", e.scenario).load(None if root is None else Path(root))
        return cache[key].private_train

    def class_names(e) -> list[str] | None:
        """The scenario's names of its classes (``Scenario.class_names``), or None."""
        root = (e.config.get("scenario") or {}).get("data_root")
        try:
            return registry.get("scenario", e.scenario).class_names(None if root is None else Path(root))
        except Exception:  # noqa: BLE001 - a label, never worth failing a figure for
            return None

    load.class_names = class_names
    return load


@dataclass(frozen=True)
class StoredReconstructions:
    """``load(key)``: the reconstructions of an ``invert`` or ``merge`` artifact of a workdir's
    cache (``steps.reconstructions``); ``exists(key)``: whether the cache holds it."""

    artifacts: Artifacts

    def exists(self, key: str) -> bool:
        return self.artifacts.exists(key)

    def __call__(self, key: str) -> Reconstructions:
        return reconstructions(self.artifacts, key)


def reconstruction_loader(artifacts: Artifacts | Path | str) -> StoredReconstructions:
    """The reconstructions of a workdir (or of its artifact cache)."""
    if not isinstance(artifacts, Artifacts):
        artifacts = Artifacts(Path(artifacts))
    return StoredReconstructions(artifacts)


def target_loader(registry, workdir: Path):
    """``load_target(row)`` for ``pictures.feature_projection``: the row's target rebuilt as its
    config says (architecture, defense) with its stored weights, as ``features(x)`` (its
    penultimate features on the CPU), its defense and its reconstructions; None when the target
    or the reconstructions are not in the workdir's artifact cache."""
    worker = Worker(Env(str(workdir)), registry)
    cpu = torch.device("cpu")

    def load(row):
        keys = row.artifacts or {}
        target, invert = keys.get("target"), keys.get("invert")
        if not (target and invert and worker.artifacts.exists(target) and worker.artifacts.exists(invert)):
            return None
        cfg = row.config or {}
        spec = {"scenario": row.scenario, "arch": cfg["arch"]["name"], "defense": cfg.get("defense")}
        worker.steps[target] = Step("target", spec)
        defense = worker.defense(cfg.get("defense"), row.budget)
        recon = reconstructions(worker.artifacts, invert)
        model = worker.load_model(target)
        return (lambda x: features(model, x, cpu)), defense, Inversion(recon.images, recon.labels)

    return load


def paper_label(registry):
    """``label(kind, text)``: an attack's or defense's spec as the leaderboard labels it at the
    paper budget (defaults left out); the text itself where it cannot be resolved here (a plugin
    that is not installed, e.g. ppa); None for None."""

    def label(kind: str, text: str | None) -> str | None:
        if text is None:
            return None
        try:
            if kind == "defense":
                return plan.resolve_defense(registry, text, "paper")[0]
            return plan.resolve_attack(registry, text, "paper")[0]
        except Exception:  # a plugin that is not installed here (e.g. ppa): keep the published text
            return text

    return label


@dataclass(frozen=True)
class Loaders:
    """The loaders of one workdir, for the views that show its pictures (``report``)."""

    reconstructions: StoredReconstructions
    private: Any  # private_loader(registry)


def workdir_loaders(registry, workdir: Path) -> Loaders:
    return Loaders(reconstruction_loader(workdir), private_loader(registry))
