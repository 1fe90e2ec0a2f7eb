"""Walk a plan through an executor: skip what is cached, run what is missing, store results.

Resume is a consequence of content addressing: artifacts that exist are not recomputed and cells
whose row is stored as ``ok`` are not re-evaluated, so rerunning an interrupted command continues
where it stopped, and a failed cell is retried. A failing step fails only the cells that depend
on it; the others run and are stored.
"""

from __future__ import annotations

import datetime as _dt
import os
import random
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import reinv_bench
from reinv_bench.api import (
    Attack,
    AttackContext,
    BlackBox,
    Classifier,
    Defense,
    EvalContext,
    Inversion,
    LabelOnly,
    NotComputed,
    ScenarioData,
    Split,
    TrainRecipe,
)
from reinv_bench.artifacts import ArtifactError, Artifacts
from reinv_bench.plan import Cell, Plan, Step
from reinv_bench.progress import Reporter
from reinv_bench.registry import Registry
from reinv_bench.store import Store
from reinv_bench.train import accuracy, compose, train_classifier

KIND_ORDER = ("eval", "pretrain", "target", "prior", "invert")


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); use cpu or auto")
    return dev


def describe_device(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return f"{dev} ({torch.get_num_threads()} threads)"  # CPU float reductions depend on the thread count


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Summary:
    ran: list[Step] = field(default_factory=list)  # steps computed in this run
    cached: list[Step] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # cells stored in this run
    skipped_cells: int = 0  # already stored as ok

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] != "ok"]


class Runner:
    def __init__(self, registry: Registry, workdir: Path, device: torch.device, executor: str = "inline",
                 reporter: Reporter | None = None, deterministic: bool = False) -> None:
        self.registry = registry
        self.workdir = Path(workdir)
        self.artifacts = Artifacts(self.workdir)
        self.artifacts.check_writable()  # a read-only or full workdir fails now, not after a step's work
        if deterministic:  # CUDA kernels without run-to-run variation (slower); CPU steps are already
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        self.device = device
        self.executor = registry.get("executor", executor)()
        self.reporter = reporter or Reporter()
        if device.type == "cpu":
            # denormal floats (below ~1e-38, e.g. exp(-large) in KEDMI's minibatch discrimination)
            # make x86 arithmetic up to 10x slower; flushing them to zero changes no result that matters
            torch.set_flush_denormal(True)
        self._data: dict[tuple[str, str | None], ScenarioData] = {}
        self.steps: dict[str, Step] = {}

    # ---- data and models ------------------------------------------------------------------

    def data(self, scenario: str, data_root: str | None) -> ScenarioData:
        if (scenario, data_root) not in self._data:
            s = self.registry.get("scenario", scenario)
            self._data[(scenario, data_root)] = s.load(None if data_root is None else Path(data_root))
        return self._data[(scenario, data_root)]

    def _defense(self, desc: list[dict[str, Any]] | None, budget: str = "paper") -> Defense:
        if not desc:
            return Defense()
        return compose([self.registry.get("defense", d["name"])(d["config"], budget) for d in desc])

    def _build(self, step: Step) -> tuple[Classifier, Defense]:
        scenario = self.registry.get("scenario", step.spec["scenario"])
        arch = self.registry.get("architecture", step.spec["arch"])
        classes = {"eval": scenario.eval_num_classes, "target": scenario.num_classes}.get(step.kind)
        if step.kind == "pretrain":
            classes = self._splits(step)[0].y.max().item() + 1
        defense = self._defense(step.spec.get("defense"))
        return defense.wrap_model(arch.build(classes, scenario.image_shape)), defense

    def _splits(self, step: Step) -> tuple[Split, Split]:
        """(train, test) data of a training step: eval model, pretrained model or target."""
        data = self.data(step.spec["scenario"], step.spec["data_root"])
        if step.kind == "eval":
            return data.eval_train, data.eval_test
        if step.kind == "target":
            return data.private_train, data.private_test
        if data.pretrain is None:
            raise ValueError(f"scenario {step.spec['scenario']} declares labelled public data but loaded none")
        return data.pretrain, data.pretrain

    def _init_weights(self, model: Classifier, arch: str, init: dict[str, str]) -> str:
        """Load pretrained weights into ``model``: all but the layers the architecture adds
        (``model.fresh``: the head, ...). An upstream checkpoint (torchvision, face.evoLVe,
        facenet-pytorch names) is renamed to the Classifier's. Returns where they came from."""
        from reinv_bench.weights import load_state

        if "pretrained" in init:
            state, origin = self.artifacts.load(init["pretrained"])["state_dict"], "pretrained on public data"
        else:
            state = self.registry.get("architecture", arch).adapt_checkpoint(load_state(Path(init["weights"])))
            origin = f"{init['weights']} (sha256 {init['sha256'][:12]})"
            if not any(k.startswith("blocks.") for k in state):
                state = {model.upstream_names[k]: v for k, v in state.items() if k in model.upstream_names}
        own = model.state_dict()
        fresh = model.fresh
        state = {k: v for k, v in state.items()
                 if not (k.startswith(fresh) and (k not in own or own[k].shape != v.shape))}
        wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
                 if k in own and own[k].shape != v.shape]
        missing = [k for k in own if k not in state and not k.startswith(fresh)
                   and not k.endswith("num_batches_tracked")]  # absent from older checkpoints
        unexpected = [k for k in state if k not in own]
        if missing or unexpected or wrong:
            raise ValueError(f"pretrained weights from {origin} do not fit architecture {arch}: "
                             f"missing {missing[:4]}, unexpected {unexpected[:4]}, shapes differ {wrong[:4]}"
                             f" ({len(missing)}/{len(unexpected)}/{len(wrong)} in all)")
        model.load_state_dict(state, strict=False)
        return origin

    def attack(self, desc: dict[str, Any]) -> Attack:
        from reinv_bench.plan import build_attack

        return build_attack(self.registry, desc)

    def target_view(self, attack: Attack, key: str):
        """The target as the attack's threat model allows it to be seen."""
        model = self.load_model(key).requires_grad_(False)
        return {"white-box": model, "black-box": BlackBox(model), "label-only": LabelOnly(model)}[attack.threat_model]

    def load_model(self, key: str) -> Classifier:
        model, _ = self._build(self.steps[key])
        model.load_state_dict(self.artifacts.load(key)["state_dict"])
        return model.to(self.device).eval()

    # ---- steps ------------------------------------------------------------------------------

    def execute(self, step: Step) -> dict[str, Any]:
        """Run one step and save its artifact. A step is a pure function of its spec: data are
        loaded first (the loads are cached per process), then every random number generator is
        seeded from the step's seed, so what else ran in the process changes nothing."""
        self.reporter.step_start(step.label)
        t0 = time.perf_counter()
        spec = step.spec
        progress = self.reporter.step_progress
        deps = {}
        for key in step.deps:  # what this step reads, bound by content: a rebuilt dependency invalidates it
            sha = self.artifacts.digest(key)
            if sha is None:
                raise ArtifactError(f"step '{self.steps[key].label}' has no valid artifact; rerun to rebuild it")
            deps[key] = sha
        data = self.data(spec["scenario"], spec["data_root"]) if "scenario" in spec else None
        if data is not None and spec.get("data") not in (None, data.digest):
            raise ValueError(f"the data of scenario {spec['scenario']} changed since the run was planned "
                             f"(digest {data.digest}, planned {spec['data']}); rerun the command")
        seed_everything(spec["seed"])
        if step.kind in ("eval", "pretrain", "target"):
            model, defense = self._build(step)
            train, test = self._splits(step)
            meta = {}
            if spec.get("init"):
                meta["init"] = self._init_weights(model, spec["arch"], spec["init"])
            history = train_classifier(model, train, TrainRecipe(**spec["recipe"]), defense, device=self.device,
                                       seed=spec["seed"], progress=progress)
            meta.update(test_acc=accuracy(model, test, self.device), history=history)
            obj = {"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}
        elif step.kind == "prior":
            attack = self.attack(step.extra["attack"])
            target = self.target_view(attack, spec["target"]) if spec["target"] else None
            ctx = AttackContext(self.registry.get("scenario", spec["scenario"]), data, target, self.device,
                                spec["seed"], progress)
            obj, meta = {"prior": attack.prepare(ctx, spec["kind"])}, {}
        elif step.kind == "invert":
            attack = self.attack(spec["attack"])
            tstep = self.steps[spec["target"]]
            scenario = self.registry.get("scenario", tstep.spec["scenario"])
            data = self.data(tstep.spec["scenario"], tstep.spec["data_root"])
            priors = {kind: self.artifacts.load(key)["prior"] for kind, key in spec["priors"].items()}
            target = self.target_view(attack, spec["target"])
            ctx = AttackContext(scenario, data, target, self.device, spec["seed"], progress)
            inv = attack.invert(ctx, priors, spec["classes"])
            if isinstance(target, BlackBox):
                inv.info["queries"] = target.queries
            lo, hi = inv.images.min().item(), inv.images.max().item()
            if not torch.isfinite(inv.images).all() or lo < -1.0001 or hi > 1.0001:
                raise ValueError(f"attack {attack.name} returned images outside [-1, 1] ({lo:.3f}..{hi:.3f})")
            obj = {"images": inv.images.cpu().float(), "labels": inv.labels.cpu(), "info": inv.info}
            meta = {"queries": inv.info["queries"]} if "queries" in inv.info else {}
        else:
            raise ValueError(f"unknown step kind {step.kind}")
        meta.update(seconds=time.perf_counter() - t0, device=describe_device(self.device))
        self.artifacts.save(step.key, obj, deps=deps, meta=meta)
        return meta

    def evaluate(self, cell: Cell) -> tuple[dict[str, Any], dict[str, str]]:
        spec = self.steps[cell.target_key].spec
        scenario = self.registry.get("scenario", spec["scenario"])
        data = self.data(spec["scenario"], spec["data_root"])
        inv = self.artifacts.load(cell.invert_key)
        ctx = EvalContext(scenario, data, Inversion(inv["images"], inv["labels"], inv["info"]),
                          self.load_model(cell.target_key), self.load_model(cell.eval_key), self.device,
                          self._cache)
        values: dict[str, Any] = {}
        notes: dict[str, str] = {}
        for name in cell.metrics:
            metric = self.registry.get("metric", name)
            seed_everything(cell.labels["seed"])  # each metric alike, whatever ran (or was cached) before it
            try:
                result = metric.compute(ctx)
            except Exception as exc:  # noqa: BLE001 - stored as null with the reason
                values[name], notes[name] = None, f"metric {name} failed: {type(exc).__name__}: {exc}"
                continue
            for k, v in result.items():
                if isinstance(v, NotComputed):
                    values[k], notes[k] = None, v.reason
                else:
                    values[k] = float(v)
        return values, notes

    def _cache(self, name: str, key: Any, compute) -> dict[str, Any]:
        """Metric-side cache in the artifact store (e.g. FID statistics of the private images)."""
        from reinv_bench.plan import digest

        akey = digest({"cache": name, "key": key})
        if self.artifacts.exists(akey):
            try:
                return self.artifacts.load(akey)
            except ArtifactError:  # a corrupt entry: load() moved it aside; recompute it
                pass
        obj = compute()
        self.artifacts.save(akey, obj)
        return obj

    # ---- the walk ---------------------------------------------------------------------------

    def fresh(self, step: Step) -> bool:
        """Whether the step's artifact can be reused: present, intact (its SHA-256 verified; a
        corrupt or swapped file is moved aside) and built from the dependencies as they are now."""
        rec = self.artifacts.record(step.key)
        if rec is None or self.artifacts.digest(step.key) is None:
            return False
        return all(rec["deps"].get(d) == self.artifacts.digest(d) for d in step.deps)

    def run(self, plan: Plan, store: Store, on_result=None) -> Summary:
        """Run what is missing, target by target: each target's cells are evaluated and stored
        as soon as their steps are done, so a long grid fills the results database as it goes.
        Within a target, steps of one kind go to the executor together; whether a step's artifact
        can be reused is decided when its turn comes, after its dependencies were (re)built."""
        self.steps.update(plan.steps)
        summary = Summary()
        todo = []
        for cell in plan.cells:
            if store.done(cell.cell_id):
                summary.skipped_cells += 1
            else:
                todo.append(cell)
        needed = self._closure(plan, todo)
        ordered = [s for s in plan.steps.values() if s.key in needed]
        self.reporter.start(sum(not self.artifacts.exists(s.key) for s in ordered) + len(todo))
        failed: dict[str, str] = {}
        settled: set[str] = set()  # steps reused, run or failed in this run
        groups: dict[str, list[Cell]] = {}
        for cell in todo:
            groups.setdefault(cell.target_key, []).append(cell)
        for cells in groups.values():
            keys = self._closure(plan, cells) - settled
            self._run_steps([s for s in ordered if s.key in keys], plan, failed, summary)
            settled |= keys
            for cell in cells:
                row = self._evaluate_cell(cell, plan, store, failed)
                summary.rows.append(row)
                if on_result is not None:
                    on_result(cell=cell, result=row)
        self.reporter.close()
        return summary

    @staticmethod
    def _closure(plan: Plan, cells: list[Cell]) -> set[str]:
        needed: set[str] = set()
        stack = [k for c in cells for k in (c.invert_key, c.eval_key)]
        while stack:
            key = stack.pop()
            if key not in needed:
                needed.add(key)
                stack.extend(plan.steps[key].deps)
        return needed

    def _run_steps(self, steps: list[Step], plan: Plan, failed: dict[str, str], summary: Summary) -> None:
        for kind in KIND_ORDER:
            batch = []
            for step in (s for s in steps if s.kind == kind):
                bad = next((d for d in step.deps if d in failed), None)
                if bad:
                    failed[step.key] = f"depends on failed step '{plan.steps[bad].label}'"
                    self.reporter.step_end(step.label, "failed", error=failed[step.key])
                elif self.fresh(step):
                    summary.cached.append(step)
                else:
                    batch.append(step)
            for step, meta, err in self.executor.map(self.execute, batch):
                if err is None:
                    summary.ran.append(step)
                    self.reporter.step_end(step.label, "done", meta.get("seconds", 0.0))
                else:
                    failed[step.key] = f"{type(err).__name__}: {err}"
                    self.reporter.step_end(step.label, "failed", error=failed[step.key])
                    if not isinstance(err, ArtifactError):
                        self.reporter.message("".join(traceback.format_exception(err)[-3:]).rstrip())

    def _evaluate_cell(self, cell: Cell, plan: Plan, store: Store, failed: dict[str, str]) -> dict[str, Any]:
        t0 = time.perf_counter()
        row = self._row(cell, store)
        bad = next((k for k in (cell.eval_key, cell.target_key, *cell.prior_keys, cell.invert_key) if k in failed), None)
        if bad:
            row.update(status="failed", error=f"step '{plan.steps[bad].label}' failed: {failed[bad]}")
        else:
            try:
                row["metrics"], row["notes"] = self.evaluate(cell)
                row["status"] = "ok"
            except Exception as exc:  # noqa: BLE001 - the cell fails, the grid goes on
                row.update(status="failed", error=f"evaluation failed: {type(exc).__name__}: {exc}")
            row["timings"] = self._timings(cell, time.perf_counter() - t0)
        store.put(row)
        self.reporter.step_end(f"cell {cell.labels['attack']} vs {cell.labels['defense']} seed {cell.labels['seed']}",
                               row["status"] if row["status"] == "failed" else "done",
                               time.perf_counter() - t0, row.get("error"))
        return row

    def _timings(self, cell: Cell, evaluate_s: float) -> dict[str, float]:
        """Seconds of each step, from the artifacts' records (no artifact is loaded)."""
        def meta(key: str) -> dict[str, Any]:
            return (self.artifacts.record(key) or {}).get("meta", {})

        def seconds(key: str) -> float:
            return float(meta(key).get("seconds", float("nan")))

        t = {"target_s": seconds(cell.target_key), "prior_s": sum(seconds(k) for k in cell.prior_keys),
             "invert_s": seconds(cell.invert_key)}
        if "queries" in meta(cell.invert_key):
            t["queries"] = meta(cell.invert_key)["queries"]
        t["evaluate_s"] = evaluate_s
        t["cell_s"] = t["prior_s"] + t["invert_s"] + evaluate_s
        return t

    def _row(self, cell: Cell, store: Store) -> dict[str, Any]:
        spec = self.steps[cell.target_key].spec
        try:
            digest = self.data(spec["scenario"], spec["data_root"]).digest
        except Exception:  # noqa: BLE001 - the data error is the cell's error already
            digest = None
        return {
            "cell_id": cell.cell_id, **cell.labels, "status": None, "error": None, "config": cell.config,
            "metrics": None, "notes": None, "timings": None, "device": describe_device(self.device),
            "data_digest": digest, "torch_version": torch.__version__, "reinv_version": reinv_bench.__version__,
            "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
