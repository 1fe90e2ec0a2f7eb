"""The driver: walk a plan's DAG through an executor, store each cell the moment it is evaluated.

Scheduling is dependency-driven: a step is submitted as soon as its dependencies are done (no
barrier per kind), results stream back, and only this process writes the results database.
Ready work is taken cell by cell in plan order (everything the first cell needs, then the
second's, ...), so one executor slot fills the database target by target and several slots
work ahead on the next cells. Steps run through ``reinv_bench.steps`` (``run_step``,
``run_cell``) in whatever process the executor chooses.

Resume is a consequence of content addressing: an artifact that exists, verifies and was built
from the current dependencies is not recomputed, and a cell stored as ``ok`` is not
re-evaluated, so rerunning an interrupted command continues where it stopped. A failing step
fails only the cells that depend on it; a step whose worker died (``Executor.lost``) is retried
once.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import reinv_bench
from reinv_bench import spec as specs
from reinv_bench.api import Classifier, Executor, ScenarioData
from reinv_bench.artifacts import ArtifactError, Artifacts
from reinv_bench.plan import Cell, Plan, Request, Step, data_spec, expand
from reinv_bench.progress import Reporter
from reinv_bench.registry import Registry
from reinv_bench.steps import Env, Worker, describe_device, fresh, run_cell, run_step, seed_everything
from reinv_bench.store import Row, Store

__all__ = ["Result", "Runner", "Summary", "describe_device", "resolve_device", "run", "seed_everything"]


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); use cpu or auto")
    return dev


@dataclass
class Summary:
    ran: list[Step] = field(default_factory=list)  # steps computed in this run
    cached: list[Step] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)  # cells stored in this run
    skipped_cells: int = 0  # already stored as ok

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.status != "ok"]


def build_executor(registry: Registry, text: str) -> Executor:
    """An executor from its spec, e.g. ``inline`` or ``local[workers=2]``."""
    (comp,) = specs.parse(text)
    return registry.get("executor", comp.name)(comp.params)


class Runner:
    def __init__(self, registry: Registry, workdir: Path, device: torch.device, executor: str | Executor = "inline",
                 reporter: Reporter | None = None, deterministic: bool = False, precision: str = "fp32") -> None:
        from reinv_bench.api import ConfigError
        from reinv_bench.plan import PRECISIONS

        if precision not in PRECISIONS:
            raise ConfigError(f"precision {precision!r}: give one of {', '.join(PRECISIONS)}")
        if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16; use tf32 or fp32")
        self.registry = registry
        self.workdir = Path(workdir)
        self.artifacts = Artifacts(self.workdir)
        self.artifacts.check_writable()  # a read-only or full workdir fails now, not after a step's work
        self.device = device
        from reinv_bench.plugins import ENV_LOAD

        self.env = Env(str(self.workdir.resolve()), registry.selection, os.environ.get(ENV_LOAD), str(device),
                       deterministic, precision)
        self.worker = Worker(self.env, registry)  # this process's: inline steps, data digests, tests
        self.executor = build_executor(registry, executor) if isinstance(executor, str) else executor
        self.reporter = reporter or Reporter()
        self.worker.progress = self.reporter.step_progress
        self.steps: dict[str, Step] = self.worker.steps

    def data(self, scenario: str, data_root: str | None) -> ScenarioData:
        return self.worker.data(scenario, data_root)

    def load_model(self, key: str) -> Classifier:
        return self.worker.load_model(key)

    def preview(self, plan: Plan, store: Store) -> dict[str, Any]:
        """What ``run`` would do (``--dry-run``): per step kind, how many steps run and how many
        are reused, with an estimate from the timings of steps of the same kind and scenario
        already in the cache (None: no timing to go by)."""
        todo = [c for c in plan.cells if not store.done(c.cell_id)]
        past: dict[tuple[str, str], list[float]] = {}
        for rec_path in self.artifacts.root.glob("*/*.json"):
            meta = (self.artifacts.record(rec_path.stem) or {}).get("meta", {})
            if "kind" in meta:
                past.setdefault((meta["kind"], meta["scenario"]), []).append(float(meta["seconds"]))
        kinds: dict[str, dict[str, Any]] = {}
        for key in sorted(self._closure(plan, todo), key=list(plan.steps).index):
            step = plan.steps[key]
            k = kinds.setdefault(step.kind, {"run": 0, "cached": 0, "seconds": 0.0})
            if self.artifacts.exists(key):  # (verified when the run reaches it)
                k["cached"] += 1
                continue
            k["run"] += 1
            scenario = data_spec(plan.steps, step)["scenario"]
            times = sorted(past.get((step.kind, scenario), []))
            k["seconds"] = None if k["seconds"] is None or not times else k["seconds"] + times[len(times) // 2]
        return {"kinds": kinds, "cells": len(todo), "stored": len(plan.cells) - len(todo)}

    # ---- the walk ---------------------------------------------------------------------------

    def run(self, plan: Plan, store: Store, on_result=None) -> Summary:
        """Run what is missing and store every cell as soon as it is evaluated."""
        self.steps.update(plan.steps)
        summary = Summary()
        todo = []
        for cell in plan.cells:
            if store.done(cell.cell_id):
                summary.skipped_cells += 1
            else:
                todo.append(cell)
        # priority: the first cell that needs it, then plan order (dependencies come first)
        rank: dict[str, tuple[int, int]] = {}
        order = {key: i for i, key in enumerate(plan.steps)}
        for ci, cell in enumerate(todo):
            for key in sorted(self._closure(plan, [cell]), key=order.__getitem__):
                rank.setdefault(key, (ci, order[key]))
        for ci, cell in enumerate(todo):
            rank[cell.cell_id] = (ci, len(order))  # a cell after its own steps
        waiting = sorted((k for k in rank if k in plan.steps), key=rank.__getitem__)  # steps whose dependencies are not all settled
        cells = list(todo)  # cells whose steps are not all settled
        ready: list[tuple[tuple[int, int], str, Any]] = []  # (priority, "step"|"cell", what)
        settled: set[str] = set()
        failed: dict[str, str] = {}
        running: dict[Future, tuple[str, Any, int]] = {}
        self.reporter.start(sum(not self.artifacts.exists(k) for k in waiting) + len(todo))
        self.executor.start(self.env)
        try:
            while waiting or cells or ready or running:
                waiting, cells = self._settle(plan, store, waiting, cells, settled, failed, ready, rank, summary,
                                              on_result)
                ready.sort(key=lambda r: r[0])
                while ready and len(running) < self.executor.slots:
                    _, what, obj = ready.pop(0)
                    running[self._submit(what, obj, plan)] = (what, obj, 0)
                if not running:
                    continue
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in done:
                    what, obj, tries = running.pop(fut)
                    err = fut.exception()
                    if err is not None and self.executor.lost(err) and tries == 0:
                        self.reporter.message(f"worker lost during {self._label(what, obj)} ({err!r}); retrying once")
                        running[self._submit(what, obj, plan)] = (what, obj, 1)
                    elif what == "step":
                        self._step_done(obj, fut, err, failed, summary)
                        settled.add(obj.key)
                    else:
                        self._cell_done(obj, fut, err, store, summary, on_result)
        except BaseException:
            self.executor.close(cancel=True)
            raise
        finally:
            self.reporter.close()
        self.executor.close()
        return summary

    def _settle(self, plan, store, waiting, cells, settled, failed, ready, rank, summary, on_result):
        """Move steps whose dependencies are settled to failed, cached or ready; store failed
        cells and queue cells whose steps are all done. Repeats until nothing moves."""
        moved = True
        while moved:
            moved = False
            still = []
            for key in waiting:
                step = plan.steps[key]
                if not all(d in settled for d in step.deps):
                    still.append(key)
                    continue
                moved = True
                bad = next((d for d in step.deps if d in failed), None)
                if bad:
                    failed[key] = f"depends on failed step '{plan.steps[bad].label}'"
                    self.reporter.step_end(step.label, "failed", error=failed[key])
                    settled.add(key)
                elif fresh(self.artifacts, step):
                    summary.cached.append(step)
                    settled.add(key)
                else:
                    ready.append((rank[key], "step", step))
            waiting = still
            pending = []
            for cell in cells:
                keys = (cell.eval_key, cell.target_key, *cell.prior_keys, cell.invert_key)
                if not all(k in settled for k in keys):
                    pending.append(cell)
                    continue
                moved = True
                bad = next((k for k in keys if k in failed), None)
                if bad:
                    row = self._row(cell, status="failed",
                                    error=f"step '{plan.steps[bad].label}' failed: {failed[bad]}")
                    self._store(row, cell, store, summary, on_result)
                else:
                    ready.append((rank[cell.cell_id], "cell", cell))
            cells = pending
        return waiting, cells

    def _submit(self, what: str, obj: Any, plan: Plan) -> Future:
        self.reporter.step_start(self._label(what, obj))
        if what == "step":
            return self.executor.submit(run_step, self.env, obj, self._deps(plan, [obj.key]))
        keys = [obj.eval_key, obj.target_key, *obj.prior_keys, obj.invert_key]
        return self.executor.submit(run_cell, self.env, obj, self._deps(plan, keys))

    @staticmethod
    def _label(what: str, obj: Any) -> str:
        if what == "step":
            return obj.label
        return f"cell {obj.labels['attack']} vs {obj.labels['defense']} seed {obj.labels['seed']}"

    def _deps(self, plan: Plan, keys: list[str]) -> dict[str, Step]:
        """The steps a worker needs to know to run these (them and their dependencies)."""
        return {k: plan.steps[k] for k in self._closure_of(plan, keys)}

    def _step_done(self, step: Step, fut: Future, err: BaseException | None, failed: dict[str, str],
                   summary: Summary) -> None:
        if err is None:
            meta = fut.result()
            if meta.get("reused"):  # another process computed it meanwhile
                summary.cached.append(step)
                self.reporter.step_end(step.label, "cached")
            else:
                summary.ran.append(step)
                self.reporter.step_end(step.label, "done", meta.get("seconds", 0.0))
            return
        failed[step.key] = f"{type(err).__name__}: {err}"
        self.reporter.step_end(step.label, "failed", error=failed[step.key])
        if not isinstance(err, ArtifactError):
            self.reporter.message("".join(traceback.format_exception(err)[-3:]).rstrip())

    def _cell_done(self, cell: Cell, fut: Future, err: BaseException | None, store: Store, summary: Summary,
                   on_result) -> None:
        if err is None:
            out = fut.result()
            seconds = out.pop("seconds")
            row = self._row(cell, status="ok", **out)  # metrics, notes, outcomes, the worker's device
        else:  # the cell fails, the grid goes on
            row = self._row(cell, status="failed", error=f"evaluation failed: {type(err).__name__}: {err}")
            seconds = 0.0
        row.timings = self._timings(cell, seconds)
        self._store(row, cell, store, summary, on_result, seconds)

    def _store(self, row: Row, cell: Cell, store: Store, summary: Summary, on_result,
               seconds: float = 0.0) -> None:
        store.put(row)
        summary.rows.append(row)
        self.reporter.step_end(self._label("cell", cell), "failed" if row.status == "failed" else "done",
                               seconds, row.error)
        if on_result is not None:
            on_result(cell=cell, result=row)

    @staticmethod
    def _closure(plan: Plan, cells: list[Cell]) -> set[str]:
        return Runner._closure_of(plan, [k for c in cells for k in (c.invert_key, c.eval_key)])

    @staticmethod
    def _closure_of(plan: Plan, keys: list[str]) -> set[str]:
        needed: set[str] = set()
        stack = list(keys)
        while stack:
            key = stack.pop()
            if key not in needed:
                needed.add(key)
                stack.extend(plan.steps[key].deps)
        return needed

    def _timings(self, cell: Cell, evaluate_s: float) -> dict[str, float]:
        """Seconds of each step, from the artifacts' records (no artifact is loaded)."""
        def meta(key: str) -> dict[str, Any]:
            return (self.artifacts.record(key) or {}).get("meta", {})

        def seconds(key: str) -> float:
            return float(meta(key).get("seconds", float("nan")))

        invert = meta(cell.invert_key)  # a merge of class chunks: their seconds
        t = {"target_s": seconds(cell.target_key), "prior_s": sum(seconds(k) for k in cell.prior_keys),
             "invert_s": invert.get("chunk_seconds", 0.0) + seconds(cell.invert_key)}
        if "queries" in meta(cell.invert_key):
            t["queries"] = meta(cell.invert_key)["queries"]
        t["evaluate_s"] = evaluate_s
        t["cell_s"] = t["prior_s"] + t["invert_s"] + evaluate_s
        return t

    def _row(self, cell: Cell, **values: Any) -> Row:
        return Row(**{
            "cell_id": cell.cell_id, **cell.labels, "config": cell.config, "device": describe_device(self.device),
            "data_digest": self.steps[cell.target_key].spec.get("data"), "torch_version": torch.__version__,
            "reinv_version": reinv_bench.__version__,
            "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            # where the cell's artifacts are (reinv-bench show reads the reconstructions)
            "artifacts": {"eval": cell.eval_key, "target": cell.target_key, "priors": list(cell.prior_keys),
                          "invert": cell.invert_key},
            **values,  # status, error; an evaluation's metrics, notes, outcomes and the worker's device
        })


@dataclass
class Result:
    """What ``run`` did: the plan, the summary (None for a dry run), the stored rows of the
    plan's cells, the dry run's preview (``Runner.preview``)."""

    plan: Plan
    summary: Summary | None
    rows: list[Row]
    preview: dict[str, Any] | None
    workdir: Path


def run(request: Request | None = None, *, registry: Registry | None = None, workdir: str | Path = "~/.reinv-bench",
        device: str | torch.device = "auto", executor: str | Executor = "inline", reporter: Reporter | None = None,
        deterministic: bool = False, on_result=None, dry_run: bool = False, precision: str | None = None,
        **fields: Any) -> Result:
    """Run a grid from Python, as ``reinv-bench run`` does (the CLI only calls this)::

        import reinv_bench
        res = reinv_bench.run(attacks=["gmi"], defenses=["re"], budget="smoke", workdir="/tmp/rb")
        res.rows  # one store.Row per cell: labels, config, metrics, timings (reads as a dict too)

    ``request`` or its fields as keywords (``reinv_bench.plan.Request``); ``registry``: the
    plugins (default: the installed ones, as the CLI loads them). ``precision`` (fp32, bf16,
    tf32; default the request's, fp32) is the request's ``precision``: it enters the keys of
    the targets, priors and inversions it changes and every row's config.
    """
    from reinv_bench.registry import load

    req = request or Request(**fields)
    if precision is not None:
        req = dataclasses.replace(req, precision=precision)
    registry = registry or load()
    dev = resolve_device(device) if isinstance(device, str) else device
    workdir = Path(workdir).expanduser()
    runner = Runner(registry, workdir, dev, executor, reporter, deterministic, req.precision)
    # a missing dataset fails now, before any training; the data's digest enters every step key
    plan = expand(req, registry, data_digest=lambda s: runner.data(s, req.data_root).digest)
    store = Store(workdir / "results.db")
    if dry_run:
        return Result(plan, None, [], runner.preview(plan, store), workdir)
    runner.reporter.message(f"{len(plan.cells)} cell(s), budget {req.budget}, device {describe_device(dev)}, "
                            + (f"precision {req.precision}, " if req.precision != "fp32" else "") +
                            f"workdir {workdir}")
    summary = runner.run(plan, store, on_result)
    ids = {c.cell_id for c in plan.cells}
    return Result(plan, summary, [r for r in store.rows() if r.cell_id in ids], None, workdir)
