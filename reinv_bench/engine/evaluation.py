"""Evaluating a cell: what a worker does with a cell once its steps are done.

``Evaluating.evaluate`` (a part of ``reinv_bench.engine.steps.Worker``) runs the cell's metrics
on its reconstructions at fp32, asks its further evaluation models and its judges, computes the
target's validity checks, an ensemble's null and a canary target's recovery; ``reconstructions``
reads an inversion's artifact (chunk by chunk for a merge).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from reinv_bench.contract.attack import Inversion, Reconstructions
from reinv_bench.contract.judge import Verdicts
from reinv_bench.contract.metric import EvalContext, NotComputed, PerItem
from reinv_bench.contract.precision import set_tf32
from reinv_bench.engine import canaries
from reinv_bench.engine.artifacts import ArtifactError, Artifacts
from reinv_bench.engine.host import seed_everything
from reinv_bench.engine.plan import Cell
from reinv_bench.engine.train import predict
from reinv_bench.registry.components import build_judge, undefended
from reinv_bench.results import ensemble, validity
from reinv_bench.results.judging import JudgeKey, record
from reinv_bench.results.outcomes import Items, Outcomes
from reinv_bench.results.validity import VALIDITY


@dataclass
class Evaluation:
    """What evaluating a cell gives the driver: the metric values (None where one could not be
    computed), notes on those (why), the per-reconstruction outcomes, the seconds it took and the
    device it ran on (as the worker sees it: its GPU, its CPU threads)."""

    metrics: dict[str, float | None]
    notes: dict[str, Any]  # metric key -> why it is None (str); "validity": the target checks (dict)
    outcomes: Outcomes | None
    seconds: float = 0.0
    device: str | None = None


class Evaluating:
    """The evaluation half of a worker (``reinv_bench.engine.steps.Worker``): it reads the worker's
    registry, artifacts, device, steps, data, models and cache."""

    def evaluate(self, cell: Cell) -> Evaluation:
        """The cell's metric values, notes and per-reconstruction outcomes (class, the target's
        confidence in it, each metric's item values), computed at fp32 whatever the steps did."""
        spec = self.steps[cell.target_key].spec
        scenario = self.registry.get("scenario", spec["scenario"])
        data = self.data(spec["scenario"], spec["data_root"])
        budget = cell.labels.get("budget", "paper")
        target, defense = self.load_built(cell.target_key, budget)  # the target's defense, built once
        ctx = EvalContext(
            scenario,
            data,
            reconstructions(self.artifacts, cell.invert_key),
            target,
            self.load_model(cell.eval_key),
            self.device,
            self._cache,
            budget=budget,
            defense=defense,
        )
        set_tf32("fp32")  # the judge (evaluation model, metrics) computes at fp32 whatever the steps did

        def confidence(chunk: Inversion) -> torch.Tensor:  # the target's, in each reconstruction's class
            probs = predict(ctx.target, chunk.images, self.device).softmax(1)
            return probs.gather(1, chunk.labels.long()[:, None])[:, 0]

        with torch.no_grad():
            conf = ctx.inversion.map(confidence)  # chunk by chunk
        ev = Evaluation({}, {}, Outcomes(ctx.inversion.labels.tolist(), [round(v, 6) for v in conf.tolist()]))
        ev.notes.update(attack_notes(ctx.inversion.info))
        for name in cell.metrics:
            seed_everything(cell.labels["seed"])  # each metric alike, whatever ran (or was cached) before it
            try:
                result = self.registry.get("metric", name).compute(ctx)
            except Exception as exc:  # noqa: BLE001 - stored as null with the reason
                ev.metrics[name], ev.notes[name] = None, f"metric {name} failed: {type(exc).__name__}: {exc}"
                continue
            for k, v in result.items():
                _record(ev, k, v)
        self._judge(cell, ctx, ev)
        ev.notes[VALIDITY] = self._validity(cell, ctx)
        self._worst_case(cell, ctx, ev)
        # what the target's defense reported after training (DP-SGD's epsilon, delta): columns of the row;
        # never in place of a computed metric (a target from a bundle's zoo is another lab's record)
        target_meta = (self.artifacts.record(cell.target_key) or {}).get("meta") or {}
        for k, v in (target_meta.get("stats") or {}).items():
            ev.metrics.setdefault(k, v)
        if target_meta.get("warnings"):  # what a library warned while training the target (Opacus)
            ev.notes["target_warnings"] = "; ".join(target_meta["warnings"])
        return ev

    def _judge(self, cell: Cell, ctx: EvalContext, ev: Evaluation) -> None:
        """The cell's further evaluation models (each metric that reads the evaluation model again,
        its keys suffixed ``[LABEL]``) and its judges' answers (``reinv_bench.results.judging``)."""
        uses_eval = [n for n in cell.metrics if self.registry.get("metric", n).uses_eval_model]
        for label, key in cell.extra_evals.items():
            other = replace(ctx, eval_model=self.load_model(key))
            for name in uses_eval:
                seed_everything(cell.labels["seed"])
                try:
                    result = self.registry.get("metric", name).compute(other)
                except Exception as exc:  # noqa: BLE001 - stored as null with the reason
                    result = {name: NotComputed(f"metric {name} failed: {type(exc).__name__}: {exc}")}
                for k, v in result.items():
                    _record(ev, JudgeKey(k, label).key, v)
        for desc in cell.judges:
            seed_everything(cell.labels["seed"])
            try:
                public = self.load_model(desc["public"]).requires_grad_(False) if "public" in desc else None
                verdicts = build_judge(self.registry, desc).judge(replace(ctx, public_model=public))
                if len(verdicts.answers) != len(ev.outcomes):
                    raise ValueError(
                        f"{len(verdicts.answers)} answers for {len(ev.outcomes)} reconstructions"
                    )
            except Exception as exc:  # noqa: BLE001 - stored as null with the reason
                verdicts = Verdicts([None] * len(ev.outcomes), f"judge failed: {type(exc).__name__}: {exc}")
            record(ev.metrics, ev.notes, ev.outcomes, desc["label"], verdicts)

    def _validity(self, cell: Cell, ctx: EvalContext) -> dict[str, Any]:
        """The target's validity checks (``reinv_bench.results.validity.target_checks``), computed once per
        target and cached as an artifact of their own (no step key or cell id changes); a failure
        is recorded as such, never as a pass."""
        classes = sorted(set(ctx.inversion.labels.tolist()))
        key = {"target": cell.target_key, "classes": classes, "version": validity.CHECKS_VERSION}
        try:
            return self._cache(
                "validity",
                key,
                lambda: validity.target_checks(
                    self.load_model(cell.target_key),
                    ctx.data.public.x,
                    classes,
                    self.device,
                    cell.labels["seed"],
                ),
            )
        except Exception as exc:  # noqa: BLE001 - stored as a failed check with the reason
            return {"version": validity.CHECKS_VERSION, "error": f"{type(exc).__name__}: {exc}"}

    def _worst_case(self, cell: Cell, ctx: EvalContext, ev: Evaluation) -> None:
        """An ensemble cell's null (each metric that reads the evaluation model, on the candidates
        chosen for the permuted identity, keys suffixed ``ensemble.NULL``) and which member broke
        it; a canary target's recovery (``reinv_bench.engine.canaries``)."""
        success = next(
            (
                ev.outcomes.per_reconstruction.get(c.key)
                for m in cell.metrics
                for c in getattr(self.registry.get("metric", m), "columns", ()) or ()
                if c.axis == "privacy"
            ),
            None,
        )
        if self.steps[cell.invert_key].kind == "pool":
            obj = self.artifacts.load(cell.invert_key)
            null = obj["null"] and replace(ctx, inversion=Reconstructions.of(Inversion(**obj["null"])))
            for name in cell.metrics:
                if not self.registry.get("metric", name).uses_eval_model:
                    continue
                seed_everything(cell.labels["seed"])
                try:
                    if not null:
                        raise ValueError("one attacked identity: no other to permute it with")
                    result = self.registry.get("metric", name).compute(null)
                except Exception as exc:  # noqa: BLE001 - stored as null with the reason
                    result = {name: NotComputed(f"metric {name} failed: {type(exc).__name__}: {exc}")}
                for k, v in result.items():
                    _record(ev, k + ensemble.NULL, v)
            sources = obj["info"]["sources"]
            ev.notes[ensemble.SOURCES] = ensemble.sources_note(sources)
            ev.notes[ensemble.BROKEN_BY] = ensemble.broken_by(sources, success)
        if "canaries" in self.steps[cell.target_key].spec:
            planted = self.artifacts.load(cell.target_key)["canaries"]
            plain = undefended(self.steps[cell.target_key].spec.get("defense"))
            images = ctx.inversion.images
            values, note = canaries.recovery(planted, images, ctx.inversion.labels, success, plain)
            for k, v in values.items():
                _record(ev, k, v)
            ev.notes["canary"] = note


def reconstructions(artifacts: Artifacts, key: str) -> Reconstructions:
    """The reconstructions of an ``invert`` or ``merge`` artifact; a merge's chunks are loaded one
    at a time as they are iterated, each checked against the SHA-256 the merge recorded."""
    obj = artifacts.load(key)
    if "chunks" not in obj:  # one inversion step (or a merge stored before manifests: the images)
        return Reconstructions.of(Inversion(obj["images"], obj["labels"], obj["info"]))

    def chunks():
        for part in obj["chunks"]:
            if artifacts.digest(part["key"]) != part["sha256"]:
                raise ArtifactError(
                    f"the reconstructions {part['key']} merged into {key} are missing or were rebuilt "
                    "since; rerun to merge them again"
                )
            p = artifacts.load(part["key"])
            yield Inversion(p["images"], p["labels"], p["info"])

    return Reconstructions(obj["labels"], chunks, obj["info"])


def attack_notes(info: dict[str, Any]) -> dict[str, str]:
    """Remarks the attack left for the row (``Inversion.info["notes"]``: ppdg's pseudo-private
    count), of every class chunk of a merge (the first chunk's remark under each key)."""
    notes = dict(info.get("notes") or {})
    for part in info.get("chunks", ()):
        for k, v in (part.get("notes") or {}).items():
            notes.setdefault(k, v)
    return {str(k): str(v) for k, v in notes.items()}


def _record(ev: Evaluation, key: str, value: Any) -> None:
    """One value a metric returned: a number, ``NotComputed`` (null and why) or ``PerItem`` (the
    mean, and its items in the outcomes: per reconstruction, or per item of its own with classes)."""
    if isinstance(value, NotComputed):
        ev.metrics[key], ev.notes[key] = None, value.reason
    elif isinstance(value, PerItem):
        ev.metrics[key] = float(value.value)
        items = [float(x) for x in value.items]
        if value.classes is None and len(items) == len(ev.outcomes):
            ev.outcomes.per_reconstruction[key] = items
        elif value.classes is not None:
            ev.outcomes.per_item[key] = Items([int(c) for c in value.classes], items)
    else:
        ev.metrics[key] = float(value)
