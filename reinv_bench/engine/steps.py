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

import contextlib
import os
import random
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reinv_bench.contract.attack import Attack, AttackContext, BlackBox, Inversion, LabelOnly, Reconstructions
from reinv_bench.contract.checkpoint import Checkpoint
from reinv_bench.contract.data import ScenarioData, Split, TrainRecipe
from reinv_bench.contract.defense import Defense
from reinv_bench.contract.judge import Verdicts
from reinv_bench.contract.metric import EvalContext, NotComputed, PerItem
from reinv_bench.contract.models import Classifier
from reinv_bench.contract.precision import set_tf32, step_precision
from reinv_bench.engine.artifacts import ArtifactError, Artifacts
from reinv_bench.engine.plan import Cell, Step, data_spec
from reinv_bench.engine.train import accuracy, compose, train_classifier
from reinv_bench.registry.lookup import Registry
from reinv_bench.results.judging import JudgeKey
from reinv_bench.results.outcomes import Items, Outcomes
from reinv_bench.results.validity import VALIDITY


@dataclass(frozen=True)
class Env:
    """What a worker needs to rebuild the driver's world; picklable."""

    workdir: str
    plugins: tuple[str, ...] = ()  # -p values and in-process plugin modules, in order
    load_plugins: str | None = None  # REINV_BENCH_LOAD_PLUGINS as the driver saw it
    device: str = "cpu"
    deterministic: bool = False
    precision: str = (
        "fp32"  # fp32 | bf16 | tf32 (--precision, config.PRECISIONS); each step computes at its spec's own
    )


def describe_device(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return f"{dev} ({torch.get_num_threads()} threads)"  # CPU float reductions depend on the thread count


PACKAGES = ("torch", "torchvision", "numpy", "scipy", "pillow")  # what a row's numbers depend on


def environment(executor: str, deterministic: bool = False) -> dict[str, Any]:
    """What computed a row besides its device and versions (the row's ``environment``): the
    executor, deterministic kernels or not, Python, the platform and the packages' versions."""
    import platform
    from importlib import metadata

    import reinv_bench

    packages = {"reinv-bench": reinv_bench.__version__, "torch": torch.__version__}  # (its build: +cu130)
    for name in PACKAGES[1:]:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {
        "executor": executor,
        "deterministic": deterministic,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": packages,
    }


@contextlib.contextmanager
def caught_warnings(meta: dict[str, Any], most: int = 5) -> Iterator[None]:
    """Warnings raised inside, each distinct one once, into ``meta["warnings"]`` (at most ``most``
    lines, ``Category: first line``) instead of the terminal, where they would print mid-table."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        yield
    texts = list(
        dict.fromkeys(
            f"{w.category.__name__}: {(str(w.message).strip().splitlines() or [''])[0][:200]}" for w in seen
        )
    )
    if texts:
        meta["warnings"] = texts[:most] + ([f"(+{len(texts) - most} more)"] if len(texts) > most else [])


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
        from reinv_bench.registry.lookup import load
        from reinv_bench.registry.plugins import ENV_LOAD

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


def run_cell(env: Env, cell: Cell, steps: dict[str, Step]) -> Evaluation:
    """Evaluate a cell (``steps``: the steps whose artifacts it reads)."""
    w = worker(env)
    w.steps.update(steps)
    t0 = time.perf_counter()
    ev = w.evaluate(cell)
    ev.seconds, ev.device = time.perf_counter() - t0, describe_device(w.device)
    return ev


class Worker:
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
        if not desc:
            return Defense()
        return compose([self.registry.get("defense", d["name"])(d["config"], budget) for d in desc])

    def _build(self, step: Step) -> tuple[Classifier, Defense]:
        scenario = self.registry.get("scenario", step.spec["scenario"])
        arch = self.registry.get("architecture", step.spec["arch"])
        classes = {"eval": scenario.eval_num_classes, "target": scenario.num_classes}.get(step.kind)
        if step.kind == "pretrain":
            classes = self._splits(step)[0].y.max().item() + 1
        defense = self.defense(step.spec.get("defense"))
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
        from reinv_bench.contract.weights import load_state

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
        from reinv_bench.engine.plan import build_attack

        return build_attack(self.registry, desc)

    def target_view(self, attack: Attack, key: str):
        """The target as the attack's threat model allows it to be seen."""
        model = self.load_model(key).requires_grad_(False)
        return {"white-box": model, "black-box": BlackBox(model), "label-only": LabelOnly(model)}[
            attack.threat_model
        ]

    def load_model(self, key: str) -> Classifier:
        model, _ = self._build(self.steps[key])
        model.load_state_dict(self.artifacts.load(key)["state_dict"])
        return model.to(self.device).eval()

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

    def target_defense(self, key: str) -> Defense:
        """The defense of target ``key``, rebuilt with its config and the secrets stored with it."""
        defense = self.defense(self.steps[key].spec.get("defense"))
        if secrets := self.artifacts.load(key).get("secrets"):
            defense.load_secrets(secrets)
        return defense

    def _plant(self, spec: dict[str, Any], train: Split) -> tuple[Split, dict[str, Any]]:
        """The canary target's training split and its canaries' record."""
        from reinv_bench.engine.canaries import plant

        c = spec["canaries"]
        scenario = self.registry.get("scenario", spec["scenario"])
        priors = {kind: self.artifacts.load(key)["prior"] for kind, key in c["priors"].items()}
        return plant(
            train, c, self.attack(c["attack"]), priors, scenario.target_classes(), scenario.image_shape
        )

    def pool(self, step: Step, data: ScenarioData) -> tuple[dict[str, Any], dict[str, Any]]:
        """The worst-case ensemble's reconstructions, pooled from its members' stored ones by the
        target's score (``reinv_bench.results.ensemble``)."""
        from reinv_bench.results.ensemble import pool

        spec = step.spec
        model = self.load_model(spec["target"]).requires_grad_(False)
        target = {"white-box": model, "black-box": BlackBox(model), "label-only": LabelOnly(model)}[
            spec["threat"]
        ]
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
        target = self.target_view(attack, spec["target"])
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
            defense=self.target_defense(spec["target"]),
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

    def evaluate(self, cell: Cell) -> Evaluation:
        """The cell's metric values, notes and per-reconstruction outcomes (class, the target's
        confidence in it, each metric's item values), computed at fp32 whatever the steps did."""
        from reinv_bench.engine.train import predict

        spec = self.steps[cell.target_key].spec
        scenario = self.registry.get("scenario", spec["scenario"])
        data = self.data(spec["scenario"], spec["data_root"])
        ctx = EvalContext(
            scenario,
            data,
            reconstructions(self.artifacts, cell.invert_key),
            self.load_model(cell.target_key),
            self.load_model(cell.eval_key),
            self.device,
            self._cache,
            budget=cell.labels.get("budget", "paper"),
            defense=self.defense(spec.get("defense"), cell.labels.get("budget", "paper")),
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
        from dataclasses import replace

        from reinv_bench.engine.plan import build_judge
        from reinv_bench.results.judging import record

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
        from reinv_bench.results import validity

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
        from dataclasses import replace

        from reinv_bench.engine import canaries
        from reinv_bench.results import ensemble

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
            undefended = all(
                d["name"] == "none" for d in self.steps[cell.target_key].spec.get("defense") or []
            )
            images = ctx.inversion.images
            values, note = canaries.recovery(planted, images, ctx.inversion.labels, success, undefended)
            for k, v in values.items():
                _record(ev, k, v)
            ev.notes["canary"] = note

    def _cache(self, name: str, key: Any, compute) -> dict[str, Any]:
        """Metric-side cache in the artifact store (e.g. FID statistics of the private images)."""
        from reinv_bench.engine.plan import digest

        akey = digest({"cache": name, "key": key})
        if self.artifacts.exists(akey):
            try:
                return self.artifacts.load(akey)
            except ArtifactError:  # a corrupt entry: load() moved it aside; recompute it
                pass
        obj = compute()
        self.artifacts.save(akey, obj)
        return obj


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
