"""The driver: walk a plan's DAG through an executor, store each cell the moment it is evaluated.

Scheduling is dependency-driven: a step is submitted as soon as its dependencies are done (no
barrier per kind), results stream back, and only this process writes the results database.
Ready work is taken cell by cell in plan order (everything the first cell needs, then the
second's, ...), so one executor slot fills the database target by target and several slots
work ahead on the next cells. Steps run through ``reinv_bench.engine.steps`` (``run_step``,
``run_cell``) in whatever process the executor chooses.

Resume is a consequence of content addressing: an artifact that exists, verifies and was built
from the current dependencies is not recomputed, and a cell stored as ``ok`` is not
re-evaluated, so rerunning an interrupted command continues where it stopped. A cell is
evaluated under a lock, as a step is computed, so a second driver on the same workdir waits and
reuses the first one's stored row. A failing step fails only the cells that depend on it; a step
whose worker died (``Executor.lost``) is retried once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import os
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from reinv_bench.contract.data import ScenarioData
from reinv_bench.contract.executor import Executor
from reinv_bench.contract.models import Classifier
from reinv_bench.contract.precision import check_precision
from reinv_bench.engine.artifacts import ArtifactError, Artifacts
from reinv_bench.engine.defaults import DEFAULTS
from reinv_bench.engine.evaluation import Evaluation
from reinv_bench.engine.host import describe_device, environment, seed_everything
from reinv_bench.engine.plan import Cell, Plan, Request, Step, expand
from reinv_bench.engine.prerequisites import MissingPrerequisites, missing_prerequisites
from reinv_bench.engine.preview import (
    cell_keys,
    cells_closure,
    closure,
    from_zoo,
    preview,
    settled,
)
from reinv_bench.engine.progress import Reporter
from reinv_bench.engine.rows import attacked, keep_answers, threads, timings
from reinv_bench.engine.steps import Env, Worker, attach, reusable, run_cell, run_step
from reinv_bench.registry import spec as specs
from reinv_bench.registry.lookup import Registry, load
from reinv_bench.registry.plugins import ENV_LOAD
from reinv_bench.results.judging import JudgeKey, verdict_key
from reinv_bench.results.store import Row, Store
from reinv_bench.version import __version__

__all__ = [
    "Result",
    "Runner",
    "Summary",
    "describe_device",
    "preview",
    "resolve_device",
    "run",
    "seed_everything",
]


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"--device {name}: CUDA is not available here (torch {torch.__version__}); use cpu or auto"
        )
    return dev


@dataclass
class Summary:
    ran: list[Step] = field(default_factory=list)  # steps computed in this run
    cached: list[Step] = field(default_factory=list)
    zoo: list[Step] = field(default_factory=list)  # of the cached: models installed by `zoo add`, not trained
    rows: list[Row] = field(default_factory=list)  # cells stored in this run
    skipped_cells: int = 0  # already stored as ok (before the run, or by another driver during it)

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.status != "ok"]


def default_executor(dev: torch.device) -> str:
    """The executor of a run that names none, ``reinv-bench run``'s and ``run()``'s (engine.defaults)."""
    return DEFAULTS.executor(dev.type, dev.index, torch.cuda.device_count() if dev.type == "cuda" else 0)


def build_executor(registry: Registry, text: str) -> Executor:
    """An executor from its spec, e.g. ``inline`` or ``local[workers=2]``."""
    comps = specs.parse(text)
    if len(comps) != 1:
        raise specs.SpecError(
            f"--executor {text!r}: give one executor ({', '.join(registry.names('executor'))}), "
            "not a composition"
        )
    return registry.get("executor", comps[0].name)(comps[0].params)


@dataclass
class Walk:
    """The state of one run's walk over the DAG: what waits for dependencies, what is ready, what
    runs, what is settled (done, cached or failed) and which cells this driver holds locked."""

    plan: Plan
    store: Store
    summary: Summary
    on_result: Callable[..., Any] | None
    rank: dict[str, tuple[int, int]]  # priority: the first cell that needs it, then plan order
    waiting: list[str]  # steps whose dependencies are not all settled
    cells: list[Cell]  # cells whose steps are not all settled
    counted: set[str]  # steps the progress total counts (absent when the run started)
    ready: list[tuple[tuple[int, int], str, Any]] = field(
        default_factory=list
    )  # (priority, "step"|"cell", what)
    settled: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)  # step key -> why
    running: dict[Future, tuple[str, Any, int]] = field(default_factory=dict)  # -> (what, obj, tries)
    held: dict[str, contextlib.ExitStack] = field(default_factory=dict)  # cell id -> its lock

    @classmethod
    def of(cls, plan: Plan, store: Store, on_result, summary: Summary, artifacts: Artifacts) -> Walk:
        todo = []
        for cell in plan.cells:
            if settled(store, cell):
                summary.skipped_cells += 1
            else:
                todo.append(cell)
        rank: dict[str, tuple[int, int]] = {}
        order = {key: i for i, key in enumerate(plan.steps)}
        for ci, cell in enumerate(todo):
            for key in sorted(cells_closure(plan, [cell]), key=order.__getitem__):
                rank.setdefault(key, (ci, order[key]))
        for ci, cell in enumerate(todo):
            rank[cell.cell_id] = (ci, len(order))  # a cell after its own steps
        waiting = sorted((k for k in rank if k in plan.steps), key=rank.__getitem__)
        counted = {k for k in waiting if not artifacts.exists(k)}
        return cls(plan, store, summary, on_result, rank, waiting, list(todo), counted)

    def busy(self) -> bool:
        return bool(self.waiting or self.cells or self.ready or self.running)


class Runner:
    def __init__(
        self,
        registry: Registry,
        workdir: Path,
        device: torch.device,
        executor: str | Executor = "inline",
        reporter: Reporter | None = None,
        deterministic: bool = False,
        precision: str = "fp32",
    ) -> None:
        check_precision(precision, device)
        self.registry = registry
        self.workdir = Path(workdir)
        self.artifacts = Artifacts(self.workdir)
        self.artifacts.check_writable()  # a read-only or full workdir fails now, not after a step's work
        self.device = device
        self.env = Env(
            str(self.workdir.resolve()),
            registry.selection,
            os.environ.get(ENV_LOAD),
            str(device),
            deterministic,
        )
        # this process's worker (inline steps, data digests, tests), the one run_step/run_cell find here
        self.worker = attach(Worker(self.env, registry))
        self.executor = build_executor(registry, executor) if isinstance(executor, str) else executor
        name = executor if isinstance(executor, str) else getattr(executor, "name", type(executor).__name__)
        self.environment = environment(name, deterministic)  # every row's (steps.environment)
        self.reporter = reporter or Reporter()
        self.worker.progress = self.reporter.step_progress
        self.steps: dict[str, Step] = self.worker.steps

    def data(self, scenario: str, data_root: str | None) -> ScenarioData:
        return self.worker.data(scenario, data_root)

    def load_model(self, key: str) -> Classifier:
        return self.worker.load_model(key)

    def preview(self, plan: Plan, store: Store) -> dict[str, Any]:
        return preview(plan, store, self.artifacts, self.device.type, self.data)

    # ---- the walk ---------------------------------------------------------------------------

    def run(self, plan: Plan, store: Store, on_result=None) -> Summary:
        """Run what is missing and store every cell as soon as it is evaluated."""
        self.steps.update(plan.steps)
        summary = Summary()
        walk = Walk.of(plan, store, on_result, summary, self.artifacts)
        self.reporter.start(len(walk.counted) + len(walk.cells))
        self.executor.start(self.env)
        try:
            while walk.busy():
                self._settle(walk)
                walk.ready.sort(key=lambda r: r[0])
                while walk.ready and len(walk.running) < self.executor.slots:
                    _, what, obj = walk.ready.pop(0)
                    self._submit(walk, what, obj, 0)
                if walk.running:
                    self._collect(walk)
        except BaseException:
            self.executor.close(cancel=True)
            raise
        finally:
            for hold in walk.held.values():  # cells of this driver not stored (interrupted): unlocked
                hold.close()
            self.reporter.close()
        self.executor.close()
        return summary

    def _collect(self, walk: Walk) -> None:
        """Wait for the first running step or cell to finish and record what it gave."""
        done, _ = wait(list(walk.running), return_when=FIRST_COMPLETED)
        for fut in done:
            what, obj, tries = walk.running.pop(fut)
            err = fut.exception()
            if err is not None and self.executor.lost(err) and tries == 0:
                self.reporter.message(
                    f"worker lost during {_progress_label(what, obj)} ({err!r}); retrying once"
                )
                self._submit(walk, what, obj, 1)
            elif what == "step":
                self._step_done(walk, obj, fut, err)
                walk.settled.add(obj.key)
            else:
                self._cell_done(walk, obj, fut, err)

    def _settle(self, walk: Walk) -> None:
        """Move steps whose dependencies are settled to failed, cached or ready; store failed
        cells and queue cells whose steps are all done. Repeats until nothing moves."""
        while self._settle_steps(walk) | self._settle_cells(walk):
            pass

    def _settle_steps(self, walk: Walk) -> bool:
        moved, still = False, []
        for key in walk.waiting:
            step = walk.plan.steps[key]
            if not all(d in walk.settled for d in step.deps):
                still.append(key)
                continue
            moved = True
            bad = next((d for d in step.deps if d in walk.failed), None)
            if bad:
                walk.failed[key] = f"depends on failed step '{walk.plan.steps[bad].label}'"
                self._count(walk, key, True)
                self.reporter.step_end(step.label, "failed", error=walk.failed[key])
                walk.settled.add(key)
            elif reusable(self.artifacts, step):
                self._count(walk, key, False)  # built meanwhile by another driver: not reported
                walk.summary.cached.append(step)
                if zoo := from_zoo(self.artifacts, key):  # installed by `zoo add`: said once, as such
                    walk.summary.zoo.append(step)
                    self.reporter.message(f"from zoo: {step.label} (bundle {zoo.get('bundle', '?')})")
                walk.settled.add(key)
            else:
                self._count(walk, key, True)  # present but stale or corrupt: rebuilt, so reported
                walk.ready.append((walk.rank[key], "step", step))
        walk.waiting = still
        return moved

    def _count(self, walk: Walk, key: str, reported: bool) -> None:
        """Keep the progress total equal to what is reported: a step counted at the start that
        turns out reusable leaves it, one rebuilt though its artifact existed joins it."""
        if reported != (key in walk.counted):
            self.reporter.expect(1 if reported else -1)
            (walk.counted.add if reported else walk.counted.discard)(key)

    def _settle_cells(self, walk: Walk) -> bool:
        moved, pending = False, []
        for cell in walk.cells:
            keys = cell_keys(cell)
            if not all(k in walk.settled for k in keys):
                pending.append(cell)
                continue
            moved = True
            bad = next((k for k in keys if k in walk.failed), None)
            if bad:
                row = self._row(
                    cell,
                    status="failed",
                    error=f"step '{walk.plan.steps[bad].label}' failed: {walk.failed[bad]}",
                )
                self._store(walk, row, cell)
            else:
                walk.ready.append((walk.rank[cell.cell_id], "cell", cell))
        walk.cells = pending
        return moved

    def _submit(self, walk: Walk, what: str, obj: Any, tries: int) -> None:
        if what == "cell" and tries == 0 and not self._lock_cell(walk, obj):
            return
        self.reporter.step_start(_progress_label(what, obj))
        if what == "step":
            fut = self.executor.submit(run_step, self.env, obj, self._deps(walk.plan, [obj.key]))
        else:
            fut = self.executor.submit(run_cell, self.env, obj, self._deps(walk.plan, list(cell_keys(obj))))
        walk.running[fut] = (what, obj, tries)

    def _lock_cell(self, walk: Walk, cell: Cell) -> bool:
        """Take the cell's lock (waiting while another driver evaluates it); False when that
        driver has stored it meanwhile: its row is reused, nothing is evaluated twice."""
        hold = contextlib.ExitStack()
        hold.enter_context(self.artifacts.lock(cell.cell_id, notify=self.reporter.message))
        if settled(walk.store, cell):
            hold.close()
            walk.summary.skipped_cells += 1
            self.reporter.step_end(_progress_label("cell", cell), "cached")
            return False
        walk.held[cell.cell_id] = hold
        return True

    def _deps(self, plan: Plan, keys: list[str]) -> dict[str, Step]:
        """The steps a worker needs to know to run these (them and their dependencies)."""
        return {k: plan.steps[k] for k in closure(plan, keys)}

    def _step_done(self, walk: Walk, step: Step, fut: Future, err: BaseException | None) -> None:
        if err is None:
            meta = fut.result()
            if meta.get("reused"):  # another process computed it meanwhile
                walk.summary.cached.append(step)
                self.reporter.step_end(step.label, "cached")
            else:
                walk.summary.ran.append(step)
                self.reporter.step_end(step.label, "done", meta.get("seconds", 0.0))
            return
        walk.failed[step.key] = f"{type(err).__name__}: {err}"
        self.reporter.step_end(step.label, "failed", error=walk.failed[step.key])
        if not isinstance(err, ArtifactError):
            self.reporter.message("".join(traceback.format_exception(err)[-3:]).rstrip())

    def _cell_done(self, walk: Walk, cell: Cell, fut: Future, err: BaseException | None) -> None:
        if err is None:
            ev: Evaluation = fut.result()
            row = self._row(
                cell, status="ok", metrics=ev.metrics, notes=ev.notes, outcomes=ev.outcomes, device=ev.device
            )
            row = keep_answers(walk.store.get(cell.cell_id), row)
            seconds = ev.seconds
        else:  # the cell fails, the grid goes on
            row = self._row(cell, status="failed", error=f"evaluation failed: {type(err).__name__}: {err}")
            seconds = 0.0
        row.timings = timings(self.artifacts, cell, seconds)
        self._store(walk, row, cell, seconds)

    def _store(self, walk: Walk, row: Row, cell: Cell, seconds: float = 0.0) -> None:
        try:
            walk.store.put(row)
        finally:  # stored (or failed to be): another driver waiting for the cell may go on
            hold = walk.held.pop(cell.cell_id, None)
            if hold is not None:
                hold.close()
        walk.summary.rows.append(row)
        self.reporter.step_end(
            _progress_label("cell", cell), "failed" if row.status == "failed" else "done", seconds, row.error
        )
        if walk.on_result is not None:
            walk.on_result(cell=cell, result=row)

    def _threads(self, cell: Cell, evaluated_on: str | None) -> dict[str, Any]:
        """``{"threads": [...]}`` of the cell (``rows.threads``)."""
        return threads(self.artifacts, cell, evaluated_on)

    def _row(self, cell: Cell, **values: Any) -> Row:
        return Row(
            **{
                "cell_id": cell.cell_id,
                **cell.labels,
                "device": describe_device(self.device),
                # the metrics' versions: the leaderboard marks and never compares rows of other versions
                "config": {
                    **cell.config,
                    "metrics": {m: self.registry.get("metric", m).version for m in cell.metrics}
                    | {verdict_key(j["label"]): j["version"] for j in cell.judges}
                    | {JudgeKey("eval", label).key: key[:12] for label, key in cell.extra_evals.items()},
                    **attacked(self.registry, cell.config, values.get("outcomes")),
                    **self._threads(cell, values.get("device")),
                },
                "data_digest": self.steps[cell.target_key].spec.get("data"),
                "torch_version": torch.__version__,
                "reinv_version": __version__,
                "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "environment": self.environment,
                # where the cell's artifacts are (reinv-bench show reads the reconstructions)
                "artifacts": {
                    "eval": cell.eval_key,
                    "target": cell.target_key,
                    "priors": list(cell.prior_keys),
                    "invert": cell.invert_key,
                    # the bytes the cell was computed against: a row of an artifact rebuilt since is stale
                    "sha256": {
                        k: rec["sha256"]
                        for k in cell_keys(cell)
                        if (rec := self.artifacts.record(k)) and rec.get("sha256")
                    },
                },
                **values,  # status, error; an evaluation's metrics, notes, outcomes and the worker's device
            }
        )


def _progress_label(what: str, obj: Any) -> str:
    """A step's label, or a cell's as the progress display shows it."""
    if what == "step":
        return obj.label
    return f"cell {obj.labels['attack']} vs {obj.labels['defense']} seed {obj.labels['seed']}"


@dataclass
class Result:
    """What ``run`` did: the plan, the summary (None for a dry run), the stored rows of the
    plan's cells, the dry run's preview (``preview``)."""

    plan: Plan
    summary: Summary | None
    rows: list[Row]
    preview: dict[str, Any] | None
    workdir: Path


def run(
    request: Request | None = None,
    *,
    registry: Registry | None = None,
    workdir: str | Path = DEFAULTS.workdir,
    device: str | torch.device = DEFAULTS.device,
    executor: str | Executor | None = None,
    reporter: Reporter | None = None,
    deterministic: bool = False,
    on_result=None,
    dry_run: bool = False,
    precision: str | None = None,
    check: bool = True,
    **fields: Any,
) -> Result:
    """Run a grid from Python, as ``reinv-bench run`` does (the CLI only calls this)::

        import reinv_bench
        res = reinv_bench.run(attacks=["gmi"], defenses=["re"], budget="smoke", workdir="/tmp/rb")
        res.rows  # one store.Row per cell: labels, config, metrics, timings (reads as a dict too)

    ``request`` or its fields as keywords (``reinv_bench.engine.plan.Request``; budget and executor default
    to the CLI's, ``engine.defaults``); ``registry``: the plugins (default: the installed ones).
    ``precision`` (fp32, bf16, tf32; default the request's, fp32) is the request's: it enters the keys of
    the targets, priors and inversions it changes and every row's config. ``check``: first collect every
    missing prerequisite of the plan (weights files, data folders, extras) and raise one
    ``MissingPrerequisites`` listing them all with their fixes (the CLI passes False and prints them).
    """
    dev = resolve_device(device) if isinstance(device, str) else device
    executor = default_executor(dev) if executor is None else executor
    req = request or Request(**{"budget": DEFAULTS.budget(dev.type), **fields})  # the CLI's defaults
    if precision is not None:
        req = dataclasses.replace(req, precision=precision)
    registry = registry or load()
    if check:
        name = executor if isinstance(executor, str) else None
        need = [m for m in missing_prerequisites(req, registry, name, optional=False) if m.required]
        if need:
            raise MissingPrerequisites(need)
    workdir = Path(workdir).expanduser()
    runner = Runner(registry, workdir, dev, executor, reporter, deterministic, req.precision)
    # a missing dataset fails now, before any training; the data's digest enters every step key
    plan = expand(req, registry, data_digest=lambda s: runner.data(s, req.data_root).digest)
    store = Store(workdir / "results.db")
    for note in plan.notes:
        runner.reporter.message(f"warning: {note}")
    if dry_run:
        return Result(plan, None, [], runner.preview(plan, store), workdir)
    runner.reporter.message(
        f"{len(plan.cells)} cell(s), budget {req.budget}, device {describe_device(dev)}, "
        + (f"precision {req.precision}, " if req.precision != "fp32" else "")
        + f"workdir {workdir}"
    )
    summary = runner.run(plan, store, on_result)
    ids = {c.cell_id for c in plan.cells}
    return Result(plan, summary, [r for r in store.rows() if r.cell_id in ids], None, workdir)
