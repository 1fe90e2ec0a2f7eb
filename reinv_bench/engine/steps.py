"""Step execution: what a worker does with one step of a plan.

A step is a picklable record (``plan.Step``); a worker process rebuilds everything else from a
picklable ``Env`` (workdir, plugin selection, device, ...): its own registry, artifact cache and
data. ``run_step(env, step, steps)`` and ``run_cell(env, cell, steps)`` are the top-level
functions every executor calls, in the driver process (``inline``) or in a worker (``local``,
third-party executors). Each kind of step has one function: ``train`` (evaluation model,
pretraining, target), ``prior``, ``invert``, and ``evaluate`` for a cell.

A step is a pure function of its spec: data are loaded first (cached per process), then every
random number generator is seeded from the step's seed, so what else ran in the process changes
nothing. A per-step lock in the workdir keeps two processes (two drivers, two workers) from
computing the same step: the second waits and reuses the first one's artifact.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reinv_bench.contract.attack import Attack, AttackContext, BlackBox, LabelOnly
from reinv_bench.contract.checkpoint import Checkpoint
from reinv_bench.contract.data import ScenarioData, Split, TrainRecipe
from reinv_bench.contract.defense import Defense
from reinv_bench.contract.models import Classifier
from reinv_bench.contract.precision import set_tf32, step_precision
from reinv_bench.contract.weights import load_state
from reinv_bench.engine.artifacts import ArtifactError, Artifacts
from reinv_bench.engine.canaries import plant
from reinv_bench.engine.evaluation import Evaluating, Evaluation, reconstructions
from reinv_bench.engine.host import caught_warnings, describe_device, seed_everything
from reinv_bench.engine.plan import Cell, Step, data_spec, digest
from reinv_bench.engine.train import accuracy, train_classifier
from reinv_bench.registry.components import build_attack, build_defense
from reinv_bench.registry.lookup import Registry, load
from reinv_bench.registry.plugins import ENV_LOAD
from reinv_bench.results.ensemble import pool


@dataclass(frozen=True)
class Env:
    """What a worker needs to rebuild the driver's world; picklable."""

    workdir: str
    plugins: tuple[str, ...] = ()  # -p values and in-process plugin modules, in order
    load_plugins: str | None = None  # REINV_BENCH_LOAD_PLUGINS as the driver saw it
    device: str = "cpu"
    deterministic: bool = False  # (each step computes at its spec's own precision: contract.precision)


def reusable(artifacts: Artifacts, step: Step) -> bool:
    """Whether the step's artifact can be reused: present, intact (its SHA-256 verified; a
    corrupt or swapped file is moved aside) and built from the dependencies as they are now."""
    rec = artifacts.record(step.key)
    if rec is None or artifacts.digest(step.key) is None:
        return False
    return all(rec["deps"].get(d) == artifacts.digest(d) for d in step.deps)


_WORKERS: dict[Env, Worker] = {}


def attach(w: Worker) -> Worker:
    """Make ``w`` this process's worker for its env (the driver's, with its registry and
    progress display: what ``run_step``/``run_cell`` use for inline steps). Returns it."""
    _WORKERS[w.env] = w
    return w


def worker(env: Env) -> Worker:
    """This process's worker for ``env`` (built once: registry, data and caches are reused)."""
    if env not in _WORKERS:
        if env.load_plugins is None:
            os.environ.pop(ENV_LOAD, None)
        else:
            os.environ[ENV_LOAD] = env.load_plugins
        attach(Worker(env, load(env.plugins)))
    return _WORKERS[env]


def run_step(env: Env, step: Step, steps: dict[str, Step]) -> dict[str, Any]:
    """Compute ``step`` (``steps``: its dependencies) unless another process has; returns its
    record's meta, with ``reused`` set when the artifact was already there."""
    w = worker(env)
    w.steps.update(steps)
    with w.artifacts.lock(step.key):
        if reusable(w.artifacts, step):  # computed meanwhile by another driver or worker
            return {**w.artifacts.record(step.key)["meta"], "reused": True}
        return w.execute(step)


def run_cell(env: Env, cell: Cell, steps: dict[str, Step]) -> Evaluation:
    """Evaluate a cell (``steps``: the steps whose artifacts it reads)."""
    w = worker(env)
    w.steps.update(steps)
    t0 = time.perf_counter()
    ev = w.evaluate(cell)
    ev.seconds, ev.device = time.perf_counter() - t0, describe_device(w.device)
    return ev


class Worker(Evaluating):
    """Executes steps in one process: its registry, artifact cache and loaded data."""

    def __init__(self, env: Env, registry: Registry) -> None:
        self.env = env
        self.registry = registry
        self.artifacts = Artifacts(Path(env.workdir))
        self.device = torch.device(env.device)
        self.progress = lambda done, total: None  # the driver's reporter, in-process
        if env.deterministic:  # CUDA kernels without run-to-run variation (slower); CPU steps are already
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        if self.device.type == "cpu":
            # denormal floats (below ~1e-38, e.g. exp(-large) in KEDMI's minibatch discrimination)
            # make x86 arithmetic up to 10x slower; flushing them to zero changes no result that matters
            torch.set_flush_denormal(True)
        self._data: dict[tuple[str, str | None], ScenarioData] = {}
        self.steps: dict[str, Step] = {}

    def data(self, scenario: str, data_root: str | None) -> ScenarioData:
        if (scenario, data_root) not in self._data:
            s = self.registry.get("scenario", scenario)
            self._data[(scenario, data_root)] = s.load(None if data_root is None else Path(data_root))
        return self._data[(scenario, data_root)]

    def defense(self, desc: list[dict[str, Any]] | None, budget: str = "paper") -> Defense:
        return build_defense(self.registry, desc, budget)

    def _build(self, step: Step, budget: str = "paper") -> tuple[Classifier, Defense]:
        """The step's network and its defense (built once: the model is wrapped by it)."""
        scenario = self.registry.get("scenario", step.spec["scenario"])
        arch = self.registry.get("architecture", step.spec["arch"])
        classes = {"eval": scenario.eval_num_classes, "target": scenario.num_classes}.get(step.kind)
        if step.kind == "pretrain":
            classes = self._splits(step)[0].y.max().item() + 1
        defense = self.defense(step.spec.get("defense"), budget)
        return defense.wrap_model(arch.build(classes, scenario.image_shape)), defense

    def _splits(self, step: Step) -> tuple[Split, Split]:
        """(train, test) data of a training step: eval model, pretrained model or target."""
        data = self.data(step.spec["scenario"], step.spec["data_root"])
        if step.kind == "eval":
            return data.eval_train, data.eval_test
        if step.kind == "target":
            return data.private_train, data.private_test
        if data.pretrain is None:
            raise ValueError(
                f"scenario {step.spec['scenario']} declares labelled public data but loaded none"
            )
        return data.pretrain, data.pretrain

    def _init_weights(self, model: Classifier, arch: str, init: dict[str, str]) -> str:
        """Load the weights ``init`` names (a pretrain step's, or a file's) into ``model``
        (``Classifier.load_checkpoint``). Returns where they came from."""
        if "pretrained" in init:
            state, origin = self.artifacts.load(init["pretrained"])["state_dict"], "pretrained on public data"
        else:
            state = self.registry.get("architecture", arch).adapt_checkpoint(
                load_state(Path(init["weights"]))
            )
            origin = f"{init['weights']} (sha256 {init['sha256'][:12]})"
        model.load_checkpoint(state, f"{origin} do not fit architecture {arch}")
        return origin

    def _architecture(self, name: str):
        return self.registry.get("architecture", name)

    def attack(self, desc: dict[str, Any]) -> Attack:
        return build_attack(self.registry, desc)

    def target_view(self, attack: Attack, key: str):
        """The target as the attack's threat model allows it to be seen."""
        return view(self.load_model(key), attack.threat_model)

    def load_model(self, key: str) -> Classifier:
        return self.load_built(key)[0]

    def load_built(
        self, key: str, budget: str = "paper", secrets: bool = False
    ) -> tuple[Classifier, Defense]:
        """The trained network of step ``key`` (eval mode, on the device) and its defense, built once
        (the network is wrapped by it); ``secrets``: given the secrets stored with the network
        (``Defense.secrets``: what an attacker that knows them may use)."""
        model, defense = self._build(self.steps[key], budget)
        obj = self.artifacts.load(key)
        model.load_state_dict(obj["state_dict"])
        if secrets and (stored := obj.get("secrets")):
            defense.load_secrets(stored)
        return model.to(self.device).eval(), defense

    # ---- steps ------------------------------------------------------------------------------

    def execute(self, step: Step) -> dict[str, Any]:
        """Run one step and save its artifact, bound to the artifacts it read."""
        t0 = time.perf_counter()
        spec = step.spec
        deps = {}
        for key in step.deps:  # what this step reads, bound by content: a rebuilt dependency invalidates it
            sha = self.artifacts.digest(key)
            if sha is None:
                raise ArtifactError(
                    f"step '{self.steps[key].label}' has no valid artifact; rerun to rebuild it"
                )
            deps[key] = sha
        dspec = data_spec(self.steps, step)
        data = self.data(dspec["scenario"], dspec["data_root"])
        if dspec.get("data") not in (None, data.digest):
            raise ValueError(
                f"the data of scenario {dspec['scenario']} changed since the run was planned "
                f"(digest {data.digest}, planned {dspec['data']}); rerun the command"
            )
        seed_everything(spec["seed"])
        set_tf32(step_precision(spec))
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        obj, meta = {
            "eval": self.train,
            "pretrain": self.train,
            "target": self.train,
            "prior": self.prior,
            "invert": self.invert,
            "merge": self.merge,
            "pool": self.pool,
        }[step.kind](step, data)
        meta.update(
            kind=step.kind,
            scenario=dspec["scenario"],
            seconds=time.perf_counter() - t0,
            device=describe_device(self.device),
        )
        if self.device.type == "cuda":  # what the step needed, for sizing GPUs (in its record)
            meta["peak_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        self.artifacts.save(step.key, obj, deps=deps, meta=meta)
        Checkpoint(self.artifacts.path(step.key), every=0).discard()  # the artifact is saved
        return meta

    def checkpoint(self, step: Step) -> Checkpoint:
        """The checkpoint of a long step, beside its artifact, bound to the artifacts it reads."""
        deps = {d: self.artifacts.digest(d) for d in step.deps}
        return Checkpoint(self.artifacts.path(step.key), step.label, deps)

    def train(self, step: Step, data: ScenarioData) -> tuple[dict[str, Any], dict[str, Any]]:
        """An evaluation model, a model pretrained on public data, or a target."""
        spec = step.spec
        model, defense = self._build(step)
        train, test = self._splits(step)
        meta, planted = {}, {}
        if "canaries" in spec:  # a canary target: K identities' images replaced (reinv_bench.engine.canaries)
            train, planted = self._plant(spec, train)
        if spec.get("init"):
            meta["init"] = self._init_weights(model, spec["arch"], spec["init"])
        recipe = TrainRecipe(**spec["recipe"])
        checkpoint = self.checkpoint(step)  # one for the main loop and the defense's phases
        with caught_warnings(meta):  # a library's warnings (Opacus) go to the rows' notes, not mid-table
            history, stats = self._train_loops(spec, model, train, test, recipe, defense, checkpoint)
        if stats:
            meta["stats"] = {k: float(v) for k, v in stats.items()}
        meta.update(test_acc=accuracy(model, test, self.device), history=history)
        obj = {"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}
        if secrets := defense.secrets():  # what an attacker that knows them may use (adaptive+)
            obj["secrets"] = secrets
        if planted:
            obj["canaries"] = planted
        return obj, meta

    def _train_loops(self, spec, model, train, test, recipe, defense, checkpoint) -> tuple[list, dict]:
        """The training loop and the defense's phases; (history, what the defense reports)."""
        history = train_classifier(
            model,
            train,
            recipe,
            defense,
            device=self.device,
            seed=spec["seed"],
            progress=self.progress,
            precision=step_precision(spec),
            checkpoint=checkpoint,
            test=test,  # recipe select="best_test" keeps the epoch of the best test accuracy
        )
        for i, phase in enumerate(defense.phases(recipe), 1):  # a defense's fine-tune (calor): same loop
            defense.on_phase(i)
            history += train_classifier(
                model,
                train,
                phase,
                defense,
                device=self.device,
                seed=spec["seed"] + i,
                progress=self.progress,
                precision=step_precision(spec),
                checkpoint=checkpoint,
                test=test,
            )
        return history, defense.end_training(model)  # numbers a defense reports (DP-SGD's epsilon): rows

    def _plant(self, spec: dict[str, Any], train: Split) -> tuple[Split, dict[str, Any]]:
        """The canary target's training split and its canaries' record."""
        c = spec["canaries"]
        scenario = self.registry.get("scenario", spec["scenario"])
        priors = {kind: self.artifacts.load(key)["prior"] for kind, key in c["priors"].items()}
        return plant(
            train, c, self.attack(c["attack"]), priors, scenario.target_classes(), scenario.image_shape
        )

    def pool(self, step: Step, data: ScenarioData) -> tuple[dict[str, Any], dict[str, Any]]:
        """The worst-case ensemble's reconstructions, pooled from its members' stored ones by the
        target's score (``reinv_bench.results.ensemble``)."""
        spec = step.spec
        target = view(self.load_model(spec["target"]), spec["threat"])
        members = {label: reconstructions(self.artifacts, key) for label, key in spec["members"].items()}
        return pool(members, target, spec["threat"], spec["classes"], spec["keep"], spec["seed"], self.device)

    def prior(self, step: Step, data: ScenarioData) -> tuple[dict[str, Any], dict[str, Any]]:
        """An attack's prior (a GAN, ...), built on the public data (and the target's outputs)."""
        spec = step.spec
        attack = self.attack(step.extra["attack"])
        target = self.target_view(attack, spec["target"]) if spec["target"] else None
        ctx = AttackContext(
            self.registry.get("scenario", spec["scenario"]),
            data,
            target,
            self.device,
            spec["seed"],
            self.progress,
            step_precision(spec),
            self._architecture,
            priors={kind: self.artifacts.load(key)["prior"] for kind, key in spec.get("from", {}).items()},
            checkpoint=self.checkpoint(step),
        )
        with ctx.autocast():
            prior = attack.prepare(ctx, spec["kind"])
        return {"prior": prior}, {}

    def merge(self, step: Step, data: ScenarioData) -> tuple[dict[str, Any], dict[str, Any]]:
        """The chunks of one inversion in class order, as a manifest: each chunk's artifact (key and
        SHA-256), every label and the chunks' info; not the images, which evaluation reads chunk by
        chunk (``reconstructions``), so that no step holds all of them."""
        keys = step.spec["chunks"]
        parts = [self.artifacts.load(k) for k in keys]  # memory-mapped: the images are not read
        info: dict[str, Any] = {"chunks": [p["info"] for p in parts]}
        records = [self.artifacts.record(k)["meta"] for k in keys]
        meta = {"chunk_seconds": sum(m.get("seconds", 0.0) for m in records)}
        if any("queries" in p["info"] for p in parts):
            info["queries"] = meta["queries"] = sum(p["info"].get("queries", 0) for p in parts)
        obj = {
            "chunks": [{"key": k, "sha256": self.artifacts.digest(k)} for k in keys],
            "labels": torch.cat([p["labels"] for p in parts]),
            "info": info,
        }
        return obj, meta

    def invert(self, step: Step, data: ScenarioData) -> tuple[dict[str, Any], dict[str, Any]]:
        """Reconstructions of the attacked classes from the target."""
        spec = step.spec
        attack = self.attack(spec["attack"])
        scenario = self.registry.get("scenario", self.steps[spec["target"]].spec["scenario"])
        priors = {kind: self.artifacts.load(key)["prior"] for kind, key in spec["priors"].items()}
        model, defense = self.load_built(spec["target"], secrets=True)  # its defense, built once
        target = view(model.requires_grad_(False), attack.threat_model)
        ctx = AttackContext(
            scenario,
            data,
            target,
            self.device,
            spec["seed"],
            self.progress,
            step_precision(spec),
            self._architecture,
            eval_model=self.load_model(spec["eval"]).requires_grad_(False) if "eval" in spec else None,
            defense=defense,
        )
        with ctx.autocast():
            inv = attack.invert(ctx, priors, spec["classes"])
        if isinstance(target, BlackBox):
            inv.info["queries"] = target.queries
        lo, hi = inv.images.min().item(), inv.images.max().item()
        if not torch.isfinite(inv.images).all() or lo < -1.0001 or hi > 1.0001:
            raise ValueError(f"attack {attack.name} returned images outside [-1, 1] ({lo:.3f}..{hi:.3f})")
        obj = {"images": inv.images.cpu().float(), "labels": inv.labels.cpu(), "info": inv.info}
        return obj, ({"queries": inv.info["queries"]} if "queries" in inv.info else {})

    def _cache(self, name: str, key: Any, compute) -> dict[str, Any]:
        """Metric-side cache in the artifact store (e.g. FID statistics of the private images)."""
        akey = digest({"cache": name, "key": key})
        if self.artifacts.exists(akey):
            try:
                return self.artifacts.load(akey)
            except ArtifactError:  # a corrupt entry: load() moved it aside; recompute it
                pass
        obj = compute()
        self.artifacts.save(akey, obj)
        return obj


def view(model: Classifier, threat_model: str):
    """``model`` (gradients off) as a threat model allows it to be seen: itself (white-box), its
    outputs (black-box, queries counted) or its labels (label-only)."""
    model = model.requires_grad_(False)
    return {"white-box": model, "black-box": BlackBox(model), "label-only": LabelOnly(model)}[threat_model]
