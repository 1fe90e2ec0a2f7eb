"""``reinv-bench run``: parse its options (and a grid file), check the environment, the device and
the prerequisites, call ``engine.runner.run``, render the plan's leaderboard or its --dry-run table."""

from __future__ import annotations

import collections
import dataclasses
import functools
import re
import sys
from pathlib import Path

import click
import torch
from tabulate import tabulate

from reinv_bench.cli.errors import resumable, warn
from reinv_bench.cli.options import expand_home
from reinv_bench.cli.run_options import RunOptions, run_options, with_grid
from reinv_bench.cli.state import State
from reinv_bench.contract.checkpoint import every_seconds
from reinv_bench.contract.config import ConfigError
from reinv_bench.contract.images import cache_limit_bytes, decode_process_min
from reinv_bench.engine.artifacts import ArtifactError, Artifacts, lock_stale_seconds
from reinv_bench.engine.defaults import DEFAULTS
from reinv_bench.engine.estimates import SOURCES
from reinv_bench.engine.plan import Request
from reinv_bench.engine.prerequisites import checklist, metric_names, missing_prerequisites
from reinv_bench.engine.progress import LogReporter, RichReporter, heartbeat_seconds
from reinv_bench.engine.recipes import parse as parse_recipes
from reinv_bench.engine.runner import default_executor, resolve_device
from reinv_bench.engine.runner import run as run_grid
from reinv_bench.engine.threads import free_threads
from reinv_bench.registry.plugins import call_each
from reinv_bench.results.aggregate import aggregate, declared_columns, sort_entries, verdicts
from reinv_bench.views.protocol import claimed, left_out
from reinv_bench.views.tables import render, rich_table


@click.command()
@run_options
@click.pass_obj
@resumable
def run(state: State, **params):
    """Run the cross product of attacks x defenses x architectures x scenarios x seeds.

    Each step (evaluation model, target, prior, inversion) is cached by the hash of its spec, so
    a second identical run trains nothing and an interrupted run resumes where it stopped. Every
    step is seeded from its spec: the same command gives the same numbers (same torch, device and
    thread count).
    """
    _check_environment()
    o = RunOptions(**params)
    if o.grid_file is not None:
        o = with_grid(state, o)
    o = dataclasses.replace(o, judges=_once(o.judges, "--judge"), eval_arch=_once(o.eval_arch, "--eval-arch"))
    dev = _device(o.device)
    workdir = expand_home(o.workdir)
    _set_threads(o.threads)  # before any step: inline steps and local workers all compute with it
    if o.break_locks and not o.dry_run:
        removed = Artifacts(workdir).break_locks()
        click.echo(f"removed {len(removed)} step lock(s) from {workdir / 'artifacts'}", err=True)
    req = _request(state, o, budget=o.budget or DEFAULTS.budget(dev.type))
    _check_prerequisites(state, req, o)
    interactive = not o.quiet and sys.stderr.isatty()
    reporter = RichReporter() if interactive else LogReporter()
    try:
        result = run_grid(
            req,
            registry=state.registry,
            workdir=workdir,
            device=dev,
            executor=_executor(o.executor, o.workers, o.gpus, dev),
            reporter=reporter,
            deterministic=o.deterministic,
            dry_run=o.dry_run,
            check=False,  # _check_prerequisites printed the checklist
            # each observer on its own: one that raises is named in a warning and the run goes on
            on_result=functools.partial(call_each, state.pm, "on_result", warn),
        )
    except KeyboardInterrupt:
        reporter.close()
        raise
    if o.dry_run:
        click.echo(_preview(result.preview, len(result.plan.cells)))
        return
    _show_run(state, result, o.baseline_name, reporter.console if interactive else None)


def _check_environment() -> None:
    """Every numeric REINV_BENCH_* variable a run reads, checked before any step: one line for all
    the bad ones (else each step, in every cell, would fail on it)."""
    bad = []
    for read in (lock_stale_seconds, every_seconds, heartbeat_seconds, cache_limit_bytes, decode_process_min):
        try:
            read()
        except (ArtifactError, ConfigError) as exc:
            bad.append(str(exc))
    if bad:
        raise click.ClickException("; ".join(bad) + " (nothing was run)")


def _once(values: tuple[str, ...], option: str) -> tuple[str, ...]:
    """``values`` of a repeatable option without repeats (each said once in a warning)."""
    twice = [v for v, n in collections.Counter(values).items() if n > 1]
    for v in twice:
        warn(f"{option} {v} given more than once: used once")
    return tuple(dict.fromkeys(values))


def _device(name: str) -> torch.device:
    """--device checked before any work: auto, cpu, cuda or cuda:N of a device present here."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise click.ClickException(f"--device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    try:
        dev = resolve_device(name)
    except (RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise click.ClickException(
            f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return dev


def _set_threads(threads: int | None) -> None:
    """Torch's thread count for the run: ``threads``, else the free cores (a busy machine says so
    on the run's first line: reinv_bench.engine.threads)."""
    if threads is None:
        threads, why = free_threads(torch.get_num_threads())
        if why:
            warn(why)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _executor(spec: str | None, workers: int | None, gpus: str | None, dev: torch.device) -> str:
    """The executor spec from --executor and its shorthands --workers / --gpus."""
    if workers is not None or gpus is not None:
        if spec not in (None, "local"):
            raise click.UsageError(
                "--workers/--gpus are options of the local executor; drop --executor or "
                'write its options in the spec, e.g. "local[workers=2]"'
            )
        opts = ([f"workers={workers}"] if workers else []) + (
            [f"gpus={gpus.replace(',', '/')}"] if gpus else []
        )
        return f"local[{','.join(opts)}]"
    if spec is not None:
        return spec
    return default_executor(dev)


def _class_chunk(text: str) -> int | str:
    if text == "auto" or re.fullmatch(r"[0-9]+", text):  # not str.isdigit: "²" is a digit to it
        return text if text == "auto" else int(text)
    raise click.UsageError(f"--class-chunk {text!r}: give a number of classes, 0 (off) or auto")


def _request(state: State, o: RunOptions, budget: str) -> Request:
    """The run's Request from its options (after a grid file's)."""
    data_root: Path | None = o.data_root
    return Request(
        list(o.attacks),
        list(o.defenses),
        list(o.archs),
        list(o.scenarios),
        o.seeds,
        budget,
        not o.no_baseline,
        str(data_root.resolve()) if data_root else None,
        metric_names(state.registry, o.metrics) or None,
        o.eval_arch[0] if o.eval_arch else None,
        extra_eval_archs=list(o.eval_arch[1:]),
        judges=list(o.judges),
        recipes=parse_recipes(o.recipe_texts),
        class_chunk=_class_chunk(o.class_chunk),
        precision=o.precision,
        convergence=o.convergence,
        canaries=o.canaries,
    )


def _check_prerequisites(state: State, req: Request, o: RunOptions) -> None:
    """Say what the scenarios' protocols leave out, and list every missing weights file, data
    folder and extra of the whole plan at once, before any step (exit 1 if one is required)."""
    if not o.metrics:  # a scenario of its own protocol: what its defaults leave out, and why
        scenarios = (state.registry.get("scenario", s) for s in dict.fromkeys(o.scenarios))
        notes = (left_out(state.registry, sc) for sc in scenarios if not claimed(state.registry, sc))
        for note in filter(None, notes):
            warn(note)
    missing = missing_prerequisites(req, state.registry, o.executor, optional=o.dry_run)
    if missing:
        click.echo(checklist(missing), err=not o.dry_run)
        if any(m.required for m in missing):
            sys.exit(1)


def _preview(p: dict, cells: int) -> str:
    """The --dry-run table."""
    rows, total, sources = [], 0.0, set()
    for kind, k in p["kinds"].items():
        est = "unknown" if k["seconds"] is None else f"{k['seconds'] / 60:.1f} min"
        total = None if total is None or k["seconds"] is None else total + k["seconds"]
        known = k["run"] and k["seconds"] is not None
        reused = f"{k['cached']} ({k['zoo']} from zoo)" if k.get("zoo") else k["cached"]
        rows.append([kind, k["run"], reused, est if k["run"] else "", k["source"] if known else ""])
        sources |= set(k["source"].split("; ")) - {""} if known else set()
    device = p.get("device") or "-"
    how = []
    if "workdir" in sources:
        how.append("medians of the timings of steps of the same kind and scenario in this workdir")
    if sources - {"workdir"}:
        how.append(f"estimate from the shipped table (device {device}: {SOURCES.get(device, '')})")
    if any("scaled from budget" in s for s in sources):
        how.append("a figure of another budget is rough: widths and fixed costs differ")
    unknown = [kind for kind, k in p["kinds"].items() if k["run"] and k["seconds"] is None]
    if unknown:
        how.append(f"{', '.join(unknown)}: no timing in this workdir yet nor a table figure for {device}")
    lines = [
        tabulate(rows, ["step", "to run", "reused", "estimate", "from"], tablefmt="simple"),
        f"{p['cells']} of {cells} cell(s) to evaluate ({p['stored']} already stored); estimated time: "
        + ("unknown" if total is None else f"{total / 60:.1f} min")
        + f" ({'; '.join(how)})",
    ]
    return "\n".join(lines)


def _show_run(state: State, result, baseline_name: str, console) -> None:
    """After ``run``: the leaderboard of the plan's rows (rich on ``console``, else markdown), the
    verdict sentences, what ran, and the failed cells (exit 1 if any)."""
    summary = result.summary
    columns = declared_columns(state.registry)
    entries = sort_entries(aggregate(result.rows, baseline=baseline_name, columns=columns), columns=columns)
    if entries:
        if console is not None:
            console.print(rich_table(entries, columns))
        else:
            click.echo(render(entries, "md", columns))
        for line in verdicts(entries, columns):  # one plain sentence per defense: effect or noise
            click.echo(line)
    click.echo(
        f"ran {len(summary.ran)} step(s) and evaluated {len(summary.rows)} cell(s), reused "
        f"{len(summary.cached)} cached step(s)"
        + (f" ({len(summary.zoo)} from zoo: trained elsewhere, not here)" if summary.zoo else "")
        + f", {summary.skipped_cells} cell(s) already stored; "
        f"results in {result.workdir / 'results.db'}",
        err=True,
    )
    if summary.failed:
        for r in summary.failed:
            click.echo(f"FAILED {r['attack']} vs {r['defense']} seed {r['seed']}: {r['error']}", err=True)
        sys.exit(1)
