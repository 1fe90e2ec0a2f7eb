"""The ``reinv-bench`` command line. Thin: parse, call the core, render."""

from __future__ import annotations

import collections
import functools
import os
import re
import signal
import sys
from pathlib import Path

import click

from reinv_bench import __version__
from reinv_bench.contract.config import BUDGETS, PRECISIONS, ConfigError
from reinv_bench.engine.artifacts import ArtifactError
from reinv_bench.engine.bundles import BundleError
from reinv_bench.engine.grid import MAX_SEEDS
from reinv_bench.registry.lookup import Registry, UnknownNameError
from reinv_bench.registry.plugins import PluginError, call_each
from reinv_bench.registry.spec import SpecError
from reinv_bench.results.store import StoreError

DEFAULT_HOME = "~/.reinv-bench"
USER_ERRORS = (
    ConfigError,
    SpecError,
    UnknownNameError,
    PluginError,
    StoreError,
    ArtifactError,
    BundleError,
    FileNotFoundError,
)
TABLE_WIDTH_MAX = 1000  # characters of a --format table written to a file (rich's default: 80)
INTERRUPTED = "interrupted: finished steps and results are kept; rerun the same command to resume."
TERMINATED = "terminated (SIGTERM): finished steps and results are kept; rerun the same command to resume."


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's stop): unwinds as Ctrl-C does (locks released, workers
    stopped, results kept), with its own message and exit status 143."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def _stopped(exc: KeyboardInterrupt) -> None:
    """The message and exit status of a command stopped by Ctrl-C or SIGTERM."""
    terminated = isinstance(exc, Terminated)
    click.echo(TERMINATED if terminated else INTERRUPTED, err=True)
    sys.exit(143 if terminated else 130)


def warn(text: str) -> None:
    click.echo(f"warning: {text}", err=True)


def workdir_option(f):
    return click.option(
        "--workdir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="REINV_BENCH_HOME",
        default=DEFAULT_HOME,
        show_default=True,
        help="Where results.db and the artifact cache live (env REINV_BENCH_HOME).",
    )(f)


class State:
    def __init__(self, plugin_args: tuple[str, ...]) -> None:
        self.plugin_args = plugin_args
        self._registry: Registry | None = None
        self._pm = None

    @property
    def pm(self):
        if self._pm is None:
            from reinv_bench.registry.plugins import get_plugin_manager

            self._pm = get_plugin_manager(self.plugin_args)
            for message in self._pm.failed.values():  # once per command: it goes on without them
                warn(message)
        return self._pm

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self.pm)
        return self._registry


class Cli(click.Group):
    """Turns user errors (unknown names, bad parameters, missing data) into clean messages."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            failed = getattr(getattr(ctx.obj, "_pm", None), "failed", None)
            if isinstance(exc, UnknownNameError) and failed:
                raise click.ClickException(
                    f"{exc} (plugins that failed to import: {', '.join(failed)})"
                ) from None
            raise click.ClickException(str(exc)) from None


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-p",
    "plugin_args",
    multiple=True,
    metavar="NAME",
    help="-p no:NAME blocks plugin NAME; -p module.path loads a module as a plugin.",
)
@click.version_option(__version__, prog_name="reinv-bench")
@click.pass_context
def cli(ctx: click.Context, plugin_args: tuple[str, ...]) -> None:
    """Benchmark model-inversion attacks against defenses: train, attack, store, rank."""
    if not isinstance(ctx.obj, State):
        ctx.obj = State(plugin_args)


class ExecutorOption(click.Option):
    """``--executor``: its help ends with every executor registered (builtins and plugins)."""

    def get_help_record(self, ctx: click.Context):
        record = super().get_help_record(ctx)
        state = ctx.find_object(State)
        if record is None or state is None:
            return record
        try:
            names = state.registry.names("executor")
        except Exception:  # noqa: BLE001 - help must show even when a plugin is broken
            return record
        return record[0], f"{record[1]} Registered: {', '.join(names)}."


def _executor(spec: str | None, workers: int | None, gpus: str | None, dev) -> str:
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
    import torch

    n = torch.cuda.device_count() if dev.type == "cuda" and dev.index is None else 0
    return f"local[gpus={'/'.join(map(str, range(n)))}]" if n > 1 else "inline"


def _from_grid(state: State, path: Path) -> tuple:
    """``run``'s options with the grid file's values where the command line gave none."""
    from click.core import ParameterSource

    from reinv_bench.engine.grid import installed, load

    ctx = click.get_current_context()
    grid = load(path)

    def pick(param: str, key: str, convert=lambda v: v):
        given = ctx.get_parameter_source(param) not in (ParameterSource.DEFAULT, None)
        return ctx.params[param] if given or key not in grid else convert(grid[key])

    attacks = pick("attacks", "attacks", lambda v: tuple(installed(state.registry, "attack", v, warn)))
    defenses = pick("defenses", "defenses", lambda v: tuple(installed(state.registry, "defense", v, warn)))
    if not attacks or not defenses:
        raise click.ClickException(f"grid {path}: no attack or no defense of it is installed here")
    data_root = pick("data_root", "data_root", lambda v: Path(v).expanduser())
    return (
        attacks,
        defenses,
        pick("archs", "archs", tuple),
        pick("eval_arch", "eval_arch", lambda v: (v,) if isinstance(v, str) else tuple(v or ())),
        pick("scenarios", "scenarios", tuple),
        pick("seeds", "seeds"),
        pick("budget", "budget"),
        pick("device", "device"),
        data_root,
        pick("metrics", "metrics", tuple),
        pick("recipe_texts", "recipes", tuple),
        pick("executor", "executor"),
        pick("no_baseline", "baseline", lambda v: not v),
        pick("deterministic", "deterministic"),
        pick("precision", "precision"),
        pick("judges", "judges", tuple),
        pick("class_chunk", "class_chunk", str),
        pick("convergence", "convergence"),
        pick("canaries", "canaries"),
    )


def _class_chunk(text: str) -> int | str:
    if text == "auto" or re.fullmatch(r"[0-9]+", text):  # not str.isdigit: "²" is a digit to it
        return text if text == "auto" else int(text)
    raise click.UsageError(f"--class-chunk {text!r}: give a number of classes, 0 (off) or auto")


def _preview(p: dict, cells: int) -> str:
    """The --dry-run table."""
    from tabulate import tabulate

    from reinv_bench.engine.estimates import SOURCES

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


def _expand_home(path: Path) -> Path:
    return Path(os.path.expanduser(str(path)))


def results_db(workdir: Path) -> Path:
    """The workdir's results database, or a usage error saying there are no results yet."""
    db = _expand_home(workdir) / "results.db"
    if not db.is_file():
        raise click.ClickException(f"no results at {db}; run `reinv-bench run` first (or pass --workdir)")
    return db


def _resumable(f):
    """Ctrl-C anywhere in the command (planning, data loading, the run) -> the resume message, exit 130."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except KeyboardInterrupt as exc:
            _stopped(exc)

    return wrapper


def _set_threads(threads: int | None) -> None:
    """Torch's thread count for the run: ``threads``, else the free cores (a busy machine says so
    on the run's first line: reinv_bench.engine.threads)."""
    import torch

    from reinv_bench.engine.threads import free_threads

    if threads is None:
        threads, why = free_threads(torch.get_num_threads())
        if why:
            warn(why)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _device(name: str):
    """--device checked before any work: auto, cpu, cuda or cuda:N of a device present here."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise click.ClickException(f"--device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    import torch

    from reinv_bench.engine.runner import resolve_device

    try:
        dev = resolve_device(name)
    except (RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise click.ClickException(
            f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return dev


def _select_loggers(state: State, names: tuple[str, ...]) -> None:
    """--log: each name a plugin implementing on_result whose package is installed (its ``ready()``);
    the selection goes to REINV_BENCH_LOG, where logger plugins read it (unselected, they log nothing)."""
    names = tuple(dict.fromkeys(n for text in names for n in re.split(r"[,\s]+", text) if n))
    if not names:
        return
    loggers = {impl.plugin_name: impl.plugin for impl in state.pm.hook.on_result.get_hookimpls()}
    for name in names:
        if name not in loggers:
            raise click.BadParameter(
                f"no logger plugin {name!r} (installed: {', '.join(sorted(loggers)) or 'none'})",
                param_hint="--log",
            )
        try:
            getattr(loggers[name], "ready", lambda: None)()
        except Exception as exc:  # noqa: BLE001 - a missing extra: its one line, before any work
            raise click.BadParameter(str(exc), param_hint="--log") from None
    os.environ["REINV_BENCH_LOG"] = ",".join(names)


_GRID_KEYS = (
    "attacks",
    "defenses",
    "archs",
    "eval_arch",
    "scenarios",
    "seeds",
    "budget",
    "device",
    "data_root",
    "metrics",
    "recipe_texts",
    "executor",
    "no_baseline",
    "deterministic",
    "precision",
    "judges",
    "class_chunk",
    "convergence",
    "canaries",
)


@cli.command()
@click.option(
    "-a",
    "--attack",
    "attacks",
    multiple=True,
    default=("gmi",),
    show_default=True,
    help='Attack spec, repeatable: NAME or NAME[key=value,...], e.g. "gmi[iters=300]".',
)
@click.option(
    "-d",
    "--defense",
    "defenses",
    multiple=True,
    default=("re",),
    show_default=True,
    help='Defense spec, repeatable: "re", "re[scale=0.1-0.8,p=0.5]", "re+bido".',
)
@click.option(
    "--arch",
    "archs",
    multiple=True,
    help='Target architecture, repeatable (default: the scenario\'s): NAME or "NAME[weights=imagenet|PATH]".',
)
@click.option(
    "--eval-arch",
    multiple=True,
    help='Evaluation model instead of the scenario\'s, e.g. "ir50_112[weights=ms1m]" (the official '
    "evaluation models start from pretrained weights); its rows are ranked as another protocol. "
    "Repeatable: each further one judges the same reconstructions too (attack_acc[NAME], and the "
    "leaderboard's eval_agree[NAME]: how often it agrees with the first).",
)
@click.option(
    "--judge",
    "judges",
    multiple=True,
    metavar="SPEC",
    help="Judge, repeatable: confirms each reconstruction without the target or the evaluation model, "
    'e.g. "verification" or "verification[far=0.001]" (see `reinv-bench plugins --kind judge`); the '
    "leaderboard adds its confirmed accuracy and the evaluation model's false-positive rate.",
)
@click.option(
    "-s",
    "--scenario",
    "scenarios",
    multiple=True,
    default=("mnist",),
    show_default=True,
    help="Scenario (dataset protocol), repeatable.",
)
@click.option(
    "--seeds",
    type=click.IntRange(1, MAX_SEEDS),
    default=1,
    show_default=True,
    help=f"Seeds 0..N-1 per cell (at most {MAX_SEEDS}).",
)
@click.option(
    "--budget",
    type=click.Choice(BUDGETS),
    default=None,
    help="smoke (seconds), quick (minutes on CPU), paper (published hyperparameters). "
    "Default: quick on CPU, paper on CUDA.",
)
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option(
    "--data-root",
    type=click.Path(path_type=Path),
    envvar="REINV_BENCH_DATA",
    default=None,
    help="Root of local datasets (env REINV_BENCH_DATA); the embedded scenario needs none.",
)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="Metrics to compute, repeatable (default: those of each scenario's protocol).",
)
@click.option(
    "--log",
    "loggers",
    multiple=True,
    metavar="NAME",
    envvar="REINV_BENCH_LOG",
    expose_value=False,
    callback=lambda ctx, _, names: _select_loggers(ctx.obj, names),
    help="Log each stored cell as a run of an experiment tracker, repeatable: mlflow or wandb (extras "
    "[mlflow], [wandb]; wandb offline unless WANDB_MODE says otherwise). Env REINV_BENCH_LOG "
    "(comma list).",
)
@click.option(
    "--recipe",
    "recipe_texts",
    multiple=True,
    metavar="ROLE:KEY=VALUE,...",
    help="Override a training recipe, repeatable: ROLE is target, eval or pretrain, KEY a TrainRecipe "
    'field, e.g. "target:epochs=100,lr=0.01" (defaults: `reinv-bench protocol SCENARIO`).',
)
@click.option(
    "--executor",
    default=None,
    cls=ExecutorOption,
    help='How steps run: "inline" (this process), "local[workers=N]" or "local[gpus=0/1]" (worker '
    "processes). Default: local with one worker per GPU when there are several, else inline.",
)
@click.option(
    "--workers", type=click.IntRange(1), default=None, help="Shorthand for --executor local[workers=N]."
)
@click.option(
    "--convergence",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    metavar="K",
    help="Opt-in validity check (costs a second inversion of K classes per cell): every attack again at "
    "twice its iterations on K evenly spaced attacked classes; the leaderboard flags 'not converged' "
    "when that raises attack accuracy beyond its interval (0: off).",
)
@click.option(
    "--class-chunk",
    default="0",
    show_default=True,
    metavar="N|auto",
    help="Classes per inversion step: a many-class attack becomes cached chunks that spread over "
    "workers and resume chunk by chunk (0: one step; auto: the attack's identity batch, else as many "
    "classes as fit in 2 GiB by the attack's memory estimate, else 60).",
)
@click.option("--gpus", default=None, help="Shorthand for --executor local[gpus=...], e.g. --gpus 0,1,2,3.")
@click.option(
    "--canaries",
    type=click.IntRange(0),
    default=0,
    metavar="K",
    help="Also attack each target retrained with K planted canary identities (their training images "
    "replaced by an attack prior's own samples): an attack unit test with a known answer; rows "
    "rank apart ('..., K canaries').",
)
@click.option("--no-baseline", is_flag=True, help="Do not add the undefended 'none' baseline automatically.")
@click.option(
    "--baseline",
    "baseline_name",
    default="none",
    show_default=True,
    metavar="DEFENSE",
    help="The defense every other is compared with (differences with 95% intervals, the closing sentences).",
)
@click.option("--quiet", is_flag=True, help="Log lines instead of the live display.")
@click.option(
    "--grid",
    "grid_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A grid file (TOML: attacks, defenses, archs, scenarios, seeds, budget, ...); options given "
    "here override it. Examples in benchmarks/grids/.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the plan (steps to run and reused, cells, time estimate) without running it.",
)
@click.option(
    "--deterministic",
    is_flag=True,
    help="Deterministic CUDA kernels (slower): bit-identical GPU runs. CPU runs are deterministic anyway.",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="fp32",
    show_default=True,
    help="Targets, priors and inversions at fp32, bf16 (autocast) or tf32 (TF32 matmuls on Ampere+); "
    "the evaluation model stays fp32. Rows of another precision are ranked apart.",
)
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=None,
    envvar="REINV_BENCH_THREADS",
    help="Torch threads every step computes with, here and in every local worker (env "
    "REINV_BENCH_THREADS; default: the cores free when the run starts, torch's default on a quiet "
    "machine). CPU numbers depend on it: README, Reproducibility.",
)
@click.option(
    "--break-locks",
    is_flag=True,
    help="First remove every step lock in the workdir (locks left by a killed run; one not refreshed "
    "for 60 s is taken over anyway). Only when no other run uses the workdir.",
)
@workdir_option
@click.pass_obj
@_resumable
def run(state: State, **o):
    """Run the cross product of attacks x defenses x architectures x scenarios x seeds.

    Each step (evaluation model, target, prior, inversion) is cached by the hash of its spec, so
    a second identical run trains nothing and an interrupted run resumes where it stopped. Every
    step is seeded from its spec: the same command gives the same numbers (same torch, device and
    thread count).
    """
    from reinv_bench.engine.progress import LogReporter, RichReporter
    from reinv_bench.engine.runner import run as run_grid

    _check_environment()
    if o["grid_file"] is not None:
        o.update(zip(_GRID_KEYS, _from_grid(state, o["grid_file"]), strict=True))
    for key, option in (("judges", "--judge"), ("eval_arch", "--eval-arch")):
        o[key] = _once(o[key], option)
    dev = _device(o["device"])
    workdir = _expand_home(o["workdir"])
    _set_threads(o["threads"])  # before any step: inline steps and local workers all compute with it
    if o["break_locks"] and not o["dry_run"]:
        from reinv_bench.engine.artifacts import Artifacts

        removed = Artifacts(workdir).break_locks()
        click.echo(f"removed {len(removed)} step lock(s) from {workdir / 'artifacts'}", err=True)
    req = _request(state, o, budget=o["budget"] or ("paper" if dev.type == "cuda" else "quick"))
    _check_prerequisites(state, req, o)
    interactive = not o["quiet"] and sys.stderr.isatty()
    reporter = RichReporter() if interactive else LogReporter()
    try:
        result = run_grid(
            req,
            registry=state.registry,
            workdir=workdir,
            device=dev,
            executor=_executor(o["executor"], o["workers"], o["gpus"], dev),
            reporter=reporter,
            deterministic=o["deterministic"],
            dry_run=o["dry_run"],
            check=False,  # _check_prerequisites printed the checklist
            # each observer on its own: one that raises is named in a warning and the run goes on
            on_result=functools.partial(call_each, state.pm, "on_result", warn),
        )
    except KeyboardInterrupt:
        reporter.close()
        raise
    if o["dry_run"]:
        click.echo(_preview(result.preview, len(result.plan.cells)))
        return
    _show_run(state, result, o["baseline_name"], reporter.console if interactive else None)


def _check_environment() -> None:
    """Every numeric REINV_BENCH_* variable a run reads, checked before any step: one line for all
    the bad ones (else each step, in every cell, would fail on it)."""
    from reinv_bench.contract.checkpoint import every_seconds
    from reinv_bench.contract.images import cache_limit_bytes, decode_process_min
    from reinv_bench.engine.artifacts import lock_stale_seconds
    from reinv_bench.engine.progress import heartbeat_seconds

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


def _request(state: State, o: dict, budget: str):
    """The run's Request from its options (after a grid file's)."""
    from reinv_bench.engine.plan import Request
    from reinv_bench.engine.prerequisites import metric_names
    from reinv_bench.engine.recipes import parse as parse_recipes

    data_root = o["data_root"]
    return Request(
        list(o["attacks"]),
        list(o["defenses"]),
        list(o["archs"]),
        list(o["scenarios"]),
        o["seeds"],
        budget,
        not o["no_baseline"],
        str(data_root.resolve()) if data_root else None,
        metric_names(state.registry, o["metrics"]) or None,
        o["eval_arch"][0] if o["eval_arch"] else None,
        extra_eval_archs=list(o["eval_arch"][1:]),
        judges=list(o["judges"]),
        recipes=parse_recipes(o["recipe_texts"]),
        class_chunk=_class_chunk(o["class_chunk"]),
        precision=o["precision"],
        convergence=o["convergence"],
        canaries=o["canaries"],
    )


def _check_prerequisites(state: State, req, o: dict) -> None:
    """Say what the scenarios' protocols leave out, and list every missing weights file, data
    folder and extra of the whole plan at once, before any step (exit 1 if one is required)."""
    from reinv_bench.engine.prerequisites import checklist, missing_prerequisites
    from reinv_bench.views.protocol import claimed, left_out

    if not o["metrics"]:  # a scenario of its own protocol: what its defaults leave out, and why
        scenarios = (state.registry.get("scenario", s) for s in dict.fromkeys(o["scenarios"]))
        notes = (left_out(state.registry, sc) for sc in scenarios if not claimed(state.registry, sc))
        for note in filter(None, notes):
            warn(note)
    missing = missing_prerequisites(req, state.registry, o["executor"], optional=o["dry_run"])
    if missing:
        click.echo(checklist(missing), err=not o["dry_run"])
        if any(m.required for m in missing):
            sys.exit(1)


def _show_run(state: State, result, baseline_name: str, console) -> None:
    """After ``run``: the leaderboard of the plan's rows (rich on ``console``, else markdown), the
    verdict sentences, what ran, and the failed cells (exit 1 if any)."""
    from reinv_bench.results.aggregate import aggregate, declared_columns, sort_entries, verdicts

    summary = result.summary
    columns = declared_columns(state.registry)
    entries = sort_entries(aggregate(result.rows, baseline=baseline_name, columns=columns), columns=columns)
    if entries:
        if console is not None:
            from reinv_bench.views.tables import rich_table

            console.print(rich_table(entries, columns))
        else:
            from reinv_bench.views.tables import render

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


def _filter_options(f):
    """-a/-d/--arch/--scenario/--budget/--protocol filters and --baseline, as the leaderboard's."""
    return _cell_filters(f, baseline=True)


def _cell_filters(f, baseline: bool = False):
    """-a/-d/--arch/--scenario/--budget/--protocol filters (and --baseline)."""
    for opt in reversed(
        [
            click.option(
                "-a", "--attack", "attacks", multiple=True, help="Only these attacks (label as shown)."
            ),
            click.option("-d", "--defense", "defenses", multiple=True, help="Only these defenses."),
            click.option("--arch", "archs", multiple=True, help="Only these architectures."),
            click.option("-s", "--scenario", "scenarios", multiple=True, help="Only these scenarios."),
            click.option("--budget", "budgets", multiple=True, help="Only these budgets."),
            click.option(
                "--protocol",
                "protocols",
                multiple=True,
                help="Only these evaluation protocols (64px, 224px, ...).",
            ),
            *(
                [
                    click.option(
                        "--baseline",
                        "baseline_name",
                        default="none",
                        show_default=True,
                        metavar="DEFENSE",
                        help="The defense every other is compared with (Δ columns with 95% intervals).",
                    )
                ]
                if baseline
                else []
            ),
        ]
    ):
        f = opt(f)
    return f


@cli.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "md", "csv", "json", "latex"]),
    default=None,
    help="table (rich, default on a terminal) | md | csv | json | latex",
)
@click.option(
    "--sort",
    "sort_by",
    default=None,
    help="Column to rank defenses by (default: the privacy axis the metrics declare, attack accuracy).",
)
@_filter_options
@click.option(
    "--reported",
    is_flag=True,
    help="Show the published numbers the plugins declare beside the measured ones of the same setting "
    "(paper budget), and the others in a table of their own; each with its source.",
)
@click.option(
    "--attack-baseline",
    "attack_baseline",
    default=None,
    metavar="ATTACK",
    help="Pair every attacker with this one on the same targets, seeds and classes: a 'Δ attack vs "
    "ATTACK' column with its 95% interval (paired bootstrap) and one verdict sentence per attacker.",
)
@click.option(
    "--view",
    type=click.Choice(["cells", "defenses"]),
    default="cells",
    show_default=True,
    help="cells: one line per attack and defense; defenses: one line per defense with its standard, "
    "adaptive and worst-case (ensemble, with its null) attack accuracy, judge-confirmed and reported "
    'numbers, whether it is "checked", the attacker that broke it and its flags.',
)
@workdir_option
@click.pass_obj
def leaderboard(
    state: State,
    fmt,
    sort_by,
    attacks,
    defenses,
    archs,
    scenarios,
    budgets,
    protocols,
    reported,
    baseline_name,
    view,
    workdir,
    attack_baseline=None,
):
    """Rank defenses by the privacy-utility trade-off (seeds aggregated: mean ± std)."""
    from reinv_bench.results.aggregate import aggregate, filter_rows, sort_entries
    from reinv_bench.results.store import Store
    from reinv_bench.views.tables import render, rich_table

    db = _expand_home(workdir) / "results.db"
    if not db.is_file() and not reported:
        raise click.ClickException(f"no results at {db}; run `reinv-bench run` first (or pass --workdir)")
    filters = dict(
        attack=attacks, defense=defenses, arch=archs, scenario=scenarios, budget=budgets, protocol=protocols
    )
    rows = filter_rows(Store(db).rows(), **filters) if db.is_file() else []
    from reinv_bench.results.aggregate import declared_columns

    columns = declared_columns(state.registry)
    _check_baseline(rows, baseline_name)
    try:
        entries = sort_entries(
            aggregate(rows, baseline=baseline_name, columns=columns), sort_by, columns=columns
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    attack_lines = _attack_baseline(rows, entries, attack_baseline, columns)
    unmatched: list = []
    if reported:
        entries, unmatched = _with_reported(state, entries, filters)
    if not entries and not unmatched:
        raise click.ClickException("no successful results match the filters")
    fmt = fmt or ("table" if sys.stdout.isatty() else "md")
    if view == "defenses":
        from reinv_bench.views import defense_board

        board = defense_board.build(rows, entries, columns)
        if fmt == "table":
            from rich.console import Console

            Console().print(defense_board.rich_table(board))
        else:
            click.echo(defense_board.render(board, fmt))
        return
    if fmt == "table":
        from rich.console import Console

        from reinv_bench.results.reported import rich_unmatched

        # to a file or a pipe: the table's own width, not squeezed into rich's 80 columns
        console = Console() if sys.stdout.isatty() else Console(width=TABLE_WIDTH_MAX)
        if entries:
            console.print(rich_table(entries, columns))
        if unmatched:
            console.print(rich_unmatched(unmatched, columns))
    else:
        click.echo(render(entries, fmt, columns, unmatched))
    if fmt in ("table", "md"):  # sentences only where they do not break a machine-read format
        for line in attack_lines:
            click.echo(line)


def _with_reported(state: State, entries, filters: dict) -> tuple[list, list]:
    """``--reported``: the published numbers the plugins declare that match ``filters``, attached
    beside the measured ``entries`` of their setting; (entries, the published rows of no setting here)."""
    from reinv_bench.engine.loaders import paper_label
    from reinv_bench.results.aggregate import filter_rows
    from reinv_bench.results.reported import attach_reported, reported_rows

    published = reported_rows(state.registry, paper_label(state.registry))
    return attach_reported(entries, filter_rows(published, **filters))


def _attack_baseline(rows, entries, attack_baseline: str | None, columns) -> list[str]:
    """``leaderboard --attack-baseline``: every entry paired with that attacker on its targets
    (``aggregate.compare_attacks``); returns the verdict sentences."""
    if not attack_baseline:
        return []
    from reinv_bench.results.aggregate import attack_verdicts, check_attack_baseline, compare_attacks

    try:
        check_attack_baseline(rows, attack_baseline)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    compare_attacks(entries, attack_baseline, columns)
    return attack_verdicts(entries, columns)


@cli.command("export")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--private-per-class",
    type=click.IntRange(1),
    default=None,
    help="Private training images written per attacked class (default: all of them).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Write into a DIR that holds an earlier export: cells exported again replace their folders.",
)
@_cell_filters
@workdir_option
@click.pass_obj
def export_cmd(state: State, out: Path, private_per_class, force: bool, workdir, **filters):
    """Write the stored cells' reconstructions, the private images they are judged against and every
    verdict (evaluation models, judges) in the MI-Reconstruction-Collection layout (MI-Eval-MLLM)."""
    from reinv_bench.engine.loaders import private_loader, reconstruction_loader
    from reinv_bench.results.aggregate import declared_columns, default_sort, filter_rows
    from reinv_bench.results.store import Store
    from reinv_bench.views.export import ExportError, export

    db = results_db(workdir)
    rows = filter_rows(Store(db).rows(status="ok"), **{k.removesuffix("s"): v for k, v in filters.items()})
    if not rows:
        raise click.ClickException("no successful results match the filters")
    success = default_sort(declared_columns(state.registry))
    try:
        manifest, notes = export(
            rows,
            reconstruction_loader(db.parent),
            private_loader(state.registry),
            out,
            success,
            private_per_class,
            force,
        )
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror or exc}; pass another DIR") from None
    for note in notes:
        click.echo(f"warning: {note}", err=True)
    click.echo(
        f"wrote {len(manifest['cells'])} cell(s) and "
        f"{sum(manifest['private_images'].values())} private image(s) to {out} (manifest.json)"
    )


@cli.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The bundle to write (.tar.gz).",
)
@_cell_filters
@click.option(
    "--with-models",
    is_flag=True,
    help="Add the target and evaluation-model checkpoints (and what they were trained from), for `zoo add`.",
)
@click.option(
    "--with-samples",
    "samples",
    type=click.IntRange(0),
    default=0,
    metavar="N",
    help="Add the first N reconstructions of each cell as PNG images.",
)
@workdir_option
@click.pass_obj
def pack(state: State, output: Path, with_models: bool, samples: int, workdir: Path, **filters):
    """Write the stored successful cells (filtered as the leaderboard's) as one bundle: rows with
    their per-reconstruction outcomes and judges' answers, the protocol cards of their scenarios,
    the environment that computed them and a manifest of every file's and artifact's SHA-256;
    optionally the models (--with-models) and reconstructions (--with-samples N)."""
    from reinv_bench.engine.artifacts import Artifacts
    from reinv_bench.engine.bundles.packing import pack as pack_rows
    from reinv_bench.results.aggregate import filter_rows
    from reinv_bench.results.store import Store
    from reinv_bench.views.protocol import card

    db = results_db(workdir)
    wanted = {k.removesuffix("s"): v for k, v in filters.items()}
    rows = filter_rows(Store(db).rows(status="ok"), **wanted)
    names = set(state.registry.names("scenario"))
    cards = {s: card(state.registry, s, load_data=False) for s in {r.scenario for r in rows} if s in names}
    packed = pack_rows(
        rows, Artifacts(db.parent), output, cards, with_models=with_models, samples=samples, filters=wanted
    )
    for note in packed.notes:
        warn(note)
    click.echo(
        f"wrote {output}: {packed.rows} row(s), {len(packed.models)} checkpoint(s), {packed.samples} "
        f"sample image(s); manifest sha256 {packed.digest}"
    )


@cli.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def verify(state: State, bundle: Path):
    """Check BUNDLE against its manifest: every file's SHA-256 and size, every row's columns and
    artifact digests, every checkpoint's record and bytes (loaded without running code). Exit 1
    with one line on the first problem."""
    from reinv_bench.engine.bundles import read

    b = read(bundle)
    click.echo(
        f"{bundle}: OK, {len(b.rows)} row(s) of schema {b.meta['schema_version']}, {len(b.records)} "
        f"checkpoint(s), {b.samples} sample image(s), scenarios "
        f"{', '.join(map(str, b.meta.get('scenarios') or [])) or '-'}; "
        f"manifest sha256 {b.digest}"
    )


@cli.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@workdir_option
@click.pass_obj
def merge(state: State, sources: tuple[Path, ...], workdir: Path):
    """Bring the rows of bundles and other workdirs (SOURCES) into --workdir: a cell not here is
    stored; one here with the same numbers counts as reproduced; one with other numbers is a
    reproducibility conflict, reported and kept apart (merges/conflicts/), never written over.
    Rows of an older schema migrate; every source is checked before anything is written."""
    from reinv_bench.engine.bundles import merge as merge_rows

    report = merge_rows(sources, _expand_home(workdir))
    for conflict in report.conflicts:
        click.echo(conflict.describe())
    for note in report.notes:
        warn(note)
    click.echo(
        f"merged {report.rows} row(s) from {len(sources)} source(s): {len(report.added)} added, "
        f"{len(report.reproduced)} reproduced, {len(report.conflicts)} conflict(s), "
        f"{report.skipped} failed row(s) skipped"
    )


@cli.group()
def zoo():
    """Trained targets that travel: `zoo add BUNDLE` installs a bundle's checkpoints (packed
    --with-models) so that `run` attacks them without training them; `zoo list` shows them."""


@zoo.command("add")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@workdir_option
@click.pass_obj
def zoo_add(state: State, bundle: Path, workdir: Path):
    """Verify BUNDLE and install its checkpoints into --workdir's artifact cache under their own keys."""
    from reinv_bench.engine.bundles import zoo_add as add

    _, models = add(bundle, _expand_home(workdir))
    for m in models:
        click.echo(f"{m.status:12s} {m.kind:8s} {m.label}  ({m.key})")
    click.echo(
        f"{sum(m.status == 'installed' for m in models)} checkpoint(s) installed from {bundle.name}; "
        "`reinv-bench run` reuses them (its steps say 'from zoo'); `reinv-bench merge` adds the bundle's rows"
    )


@zoo.command("list")
@workdir_option
@click.pass_obj
def zoo_list(state: State, workdir: Path):
    """The checkpoints installed from bundles in --workdir."""
    from reinv_bench.engine.bundles import zoo_list as listed

    models = listed(_expand_home(workdir))
    if not models:
        click.echo("no zoo models in this workdir (`reinv-bench zoo add BUNDLE`)")
    for m in models:
        click.echo(f"{m.kind:8s} {m.label}  ({m.key}, from {m.bundle})")


@cli.command()
@click.argument("name", required=False)
@click.option(
    "--kind",
    type=click.Choice(
        ["attack", "defense", "architecture", "scenario", "metric", "judge", "executor", "weights"]
    ),
    default=None,
    help="Only this kind (where NAME is several).",
)
@click.pass_obj
def plugins(state: State, name: str | None, kind: str | None):
    """List every registered plugin item with the package it comes from; with NAME, describe one:
    its docstring (paper, official code, deliberate differences), threat model, every parameter
    with default, range and help, the smoke/quick overrides and its published numbers."""
    from tabulate import tabulate

    from reinv_bench.registry.lookup import KINDS

    if name:
        from reinv_bench.views.describe import describe

        if kind:
            state.registry.get(kind, name)  # unknown: did-you-mean among that kind
        click.echo(describe(state.registry, name, kind))
        return
    rows = []
    for kind in KINDS:
        for e in state.registry.entries(kind):
            obj = e.obj
            detail = getattr(obj, "threat_model", "") if kind == "attack" else ""
            if kind == "scenario":
                detail = getattr(obj, "description", "")
            rows.append([kind, e.name, e.plugin, e.source, detail])
    for name in state.pm.failed:
        rows.append(
            ["FAILED", name, name, state.pm.sources[name], f"failed to import; -p no:{name} hides it"]
        )
    click.echo(tabulate(rows, ["kind", "name", "plugin", "from", "details"], tablefmt="simple"))


@cli.command()
@click.argument("scenario", required=False, default="mnist")
@click.option(
    "--data-root",
    type=click.Path(path_type=Path),
    envvar="REINV_BENCH_DATA",
    default=None,
    help="Root of local datasets: with it, the card shows the split sizes and the data digest.",
)
@workdir_option
@click.pass_obj
def protocol(state: State, scenario: str, data_root: Path | None, workdir: Path):
    """Print SCENARIO's protocol card (default: mnist): splits and their seed, identities attacked,
    resolution, public data, evaluation model and its initialisation, samples per class, each
    metric's definition and which run by default, training recipes per role and budget, and the
    published numbers of the setting. Everything is read from the plugins; the judges' measured
    rates on real pairs from the results in --workdir, where there are some."""
    from reinv_bench.results.judging import remarks
    from reinv_bench.results.store import Store
    from reinv_bench.views.protocol import card

    db = _expand_home(workdir) / "results.db"
    judged = remarks([r for r in Store(db).rows("ok") if r.scenario == scenario]) if db.is_file() else []
    click.echo(card(state.registry, scenario, str(data_root) if data_root else None, judged=judged))
    others = [n for n in state.registry.names("scenario") if n != scenario]
    if others:
        click.echo(f"\nOther scenarios: {', '.join(others)} (reinv-bench protocol NAME)")


@cli.group(invoke_without_command=True)
@click.pass_context
def weights(ctx: click.Context):
    """List the pretrained files the plugins can use: where each was looked for and its state.

    Nothing is downloaded. A file is found in the reinv-bench weights folder ($REINV_BENCH_WEIGHTS,
    else $REINV_BENCH_HOME/weights, else ~/.reinv-bench/weights) or where torch's libraries keep
    it ($TORCH_HOME/hub/checkpoints or $TORCH_HOME/checkpoints), and is used only when its SHA-256
    matches the published one (or its published prefix). For a file without a published hash, the
    SHA-256 of the first file added is recorded and later files must match it; such files are
    reported as "unverified". Install one with `reinv-bench weights add NAME FILE`.
    """
    if ctx.invoked_subcommand is not None:
        return
    from tabulate import tabulate

    from reinv_bench.contract.weights import best_state, candidates, hash_label

    rows = []
    for e in ctx.obj.registry.entries("weights"):
        w = e.obj
        rows.append(
            [w.name, w.filename, hash_label(w), best_state(w), "\n".join(map(str, candidates(w))), e.plugin]
        )
    click.echo(tabulate(rows, ["name", "file", "sha256", "state", "looked in", "plugin"], tablefmt="simple"))


@weights.command("add")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def weights_add(state: State, name: str, file: Path):
    """Verify FILE as the weights NAME and copy it into the reinv-bench weights folder."""
    from reinv_bench.contract.weights import install

    dest = install(state.registry.get("weights", name), file)
    click.echo(f"installed {name}: {dest}")


@cli.group()
def data():
    """Check a scenario's data before a run (`data check SCENARIO`)."""


@data.command("check")
@click.argument("scenario")
@click.option(
    "--data-root",
    type=click.Path(path_type=Path),
    envvar="REINV_BENCH_DATA",
    default=None,
    help="Root of local datasets (env REINV_BENCH_DATA).",
)
@click.option(
    "--sample",
    type=click.IntRange(0),
    default=1000,
    show_default=True,
    help="Image files decoded per image set, drawn with a fixed seed (0: every file).",
)
@click.option(
    "--labels",
    "labels_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the label order, one 'INDEX<TAB>NAME' line per class (default: not written; "
    "its hash and first classes are printed).",
)
@click.pass_obj
def data_check(state: State, scenario: str, data_root: Path | None, sample: int, labels_file: Path | None):
    """Read what SCENARIO would read and report every problem at once, each with what to do; write
    the label order and print the data digest that keys the cache. Exit 0 when ready, 1 otherwise."""
    from reinv_bench.contract.datachecks import check_data, render

    report = check_data(
        state.registry.get("scenario", scenario), data_root.resolve() if data_root else None, sample
    )
    if report.ready and labels_file is not None:  # only where asked: never a file in the current folder
        labels_file.write_text(report.label_text())
    click.echo(render(report, labels_file if report.ready else None))
    if report.ready and labels_file is None:
        click.echo("(write the label order with --labels FILE)")
    if not report.ready:
        sys.exit(1)


def _plugin_args(args: list[str]) -> tuple[str, ...]:
    """The -p values, parsed by click itself (``-p X``, ``-pX``, ``-p=X``), before the plugins'
    commands exist: the group's options only, the rest of the line left alone."""
    try:
        ctx = cli.make_context("reinv-bench", list(args), resilient_parsing=True)
    except click.exceptions.Exit:
        return ()
    return tuple(ctx.params.get("plugin_args") or ())


def _stored(
    state: State,
    workdir: Path,
    attacks,
    defenses,
    archs,
    scenarios,
    budgets,
    protocols,
    baseline_name,
    failed: bool = False,
):
    """(rows, entries, columns) of the stored results that match the filters."""
    from reinv_bench.results.aggregate import aggregate, declared_columns, filter_rows, sort_entries
    from reinv_bench.results.store import Store

    rows = filter_rows(
        Store(results_db(workdir)).rows(),
        attack=attacks,
        defense=defenses,
        arch=archs,
        scenario=scenarios,
        budget=budgets,
        protocol=protocols,
    )
    columns = declared_columns(state.registry)
    _check_baseline(rows, baseline_name)
    entries = sort_entries(aggregate(rows, baseline=baseline_name, columns=columns), columns=columns)
    if not entries and not (failed and rows):
        raise click.ClickException("no successful results match the filters")
    return rows, entries, columns


def _check_baseline(rows, baseline_name: str) -> None:
    """A --baseline given on the command line must name a defense of the selected results."""
    from reinv_bench.results.aggregate import check_baseline

    if (
        click.get_current_context().get_parameter_source("baseline_name")
        == click.core.ParameterSource.DEFAULT
    ):
        return
    try:
        check_baseline(rows, baseline_name)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _output_option(f):
    return click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        required=True,
        help="The file to write (.png, .svg or .pdf).",
    )(f)


@cli.command()
@_filter_options
@_output_option
@click.option("--x", "x_key", default=None, help="Column on x (default: the utility axis, natural accuracy).")
@click.option("--y", "y_key", default=None, help="Column on y (default: the privacy axis, attack accuracy).")
@click.option(
    "--features",
    is_flag=True,
    help="Instead: the seed paper's feature-space figure for one comparison group (per class and "
    "defense, the target's features of private, defense-transformed private and reconstructed images).",
)
@click.option(
    "--identities",
    is_flag=True,
    help="Instead: per comparison group, each defense's per-identity curve (identities sorted from most "
    "to least leaked, the top 10 % marked).",
)
@click.option(
    "--classes", type=click.IntRange(1), default=4, show_default=True, help="--features: the first K classes."
)
@click.option(
    "--seed", type=int, default=None, help="--features: which seed (default: the lowest common one)."
)
@workdir_option
@click.pass_obj
def plot(
    state: State,
    attacks,
    defenses,
    archs,
    scenarios,
    budgets,
    protocols,
    baseline_name,
    output,
    x_key,
    y_key,
    identities,
    features,
    classes,
    seed,
    workdir,
):
    """Privacy-utility scatter per comparison group: 95% interval error bars, the baseline marked,
    the Pareto front drawn, a defense swept over one parameter drawn as a curve. With --features:
    the feature-space projection of one group. With --identities: the per-identity curves."""
    from reinv_bench.engine.loaders import private_loader, target_loader
    from reinv_bench.views import pictures, plots

    workdir = _expand_home(workdir)
    _, entries, columns = _stored(
        state, workdir, attacks, defenses, archs, scenarios, budgets, protocols, baseline_name
    )
    try:
        if identities and features:
            raise click.UsageError("--identities and --features draw different figures: give one")
        if identities:
            plots.identity_curves(entries, output, columns, y_key)
            click.echo(f"wrote {output}")
            return
        if not features:
            plots.privacy_utility(entries, output, columns, x_key, y_key)
            click.echo(f"wrote {output}")
            return
        group = _one_group(entries)
        load_target = target_loader(state.registry, workdir)
        _, (nrows, ncols), notes = pictures.feature_projection(
            group, private_loader(state.registry), load_target, output, classes, seed
        )
    except plots.PlotError as exc:
        raise click.ClickException(str(exc)) from None
    for note in notes:
        warn(note)
    click.echo(f"wrote {output} ({nrows} classes x {ncols} defenses)")


def _one_group(entries):
    """The one comparison group ``entries`` make, or a usage error naming them."""
    from reinv_bench.views.plots import group_title, groups

    gs = groups(entries)
    if len(gs) > 1:
        names = "; ".join(group_title(g[0]) for g in gs)
        raise click.ClickException(
            f"{len(gs)} comparison groups match ({names}); pick one with -a/--arch/"
            "--scenario/--budget/--protocol"
        )
    return gs[0]


@cli.command()
@_filter_options
@_output_option
@click.option(
    "--classes", type=click.IntRange(1), default=8, show_default=True, help="The first K attacked classes."
)
@click.option(
    "--seed", type=int, default=None, help="Which seed's reconstructions (default: the lowest common one)."
)
@click.option(
    "--restarts",
    "restarts",
    default=None,
    metavar="DEFENSE",
    help="Every reconstruction (restart) of this defense's cell instead of one per defense.",
)
@workdir_option
@click.pass_obj
def show(
    state: State,
    attacks,
    defenses,
    archs,
    scenarios,
    budgets,
    protocols,
    baseline_name,
    output,
    classes,
    seed,
    restarts,
    workdir,
):
    """Reconstruction grid of one comparison group: rows = attacked classes, first column a private
    training image of the class, then per defense the reconstruction the target is most confident
    in (or, with --restarts, every reconstruction of one cell)."""
    from reinv_bench.engine.loaders import private_loader, reconstruction_loader
    from reinv_bench.views.pictures import reconstruction_grid
    from reinv_bench.views.plots import PlotError

    workdir = _expand_home(workdir)
    _, entries, _ = _stored(
        state, workdir, attacks, defenses, archs, scenarios, budgets, protocols, baseline_name
    )
    group = _one_group(entries)
    try:
        _, (nrows, ncols), notes = reconstruction_grid(
            group,
            reconstruction_loader(workdir),
            private_loader(state.registry),
            output,
            classes,
            seed,
            restarts,
        )
    except PlotError as exc:
        raise click.ClickException(str(exc)) from None
    for note in notes:
        warn(note)
    click.echo(f"wrote {output} ({nrows} classes x {ncols} columns)")


@cli.command()
@_filter_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="The HTML file to write.",
)
@click.option(
    "--classes",
    type=click.IntRange(1),
    default=6,
    show_default=True,
    help="Attacked classes in each reconstruction grid.",
)
@workdir_option
@click.pass_obj
def report(
    state: State,
    attacks,
    defenses,
    archs,
    scenarios,
    budgets,
    protocols,
    baseline_name,
    output,
    classes,
    workdir,
):
    """One self-contained HTML file (images embedded, no network, no script): leaderboards with
    intervals per group, privacy-utility plots, reconstruction grids, each cell's config and
    timings, failed cells, metric gaps and the environment."""
    from reinv_bench.engine.loaders import workdir_loaders
    from reinv_bench.views.report import build

    workdir = _expand_home(workdir)
    rows, _, columns = _stored(
        state, workdir, attacks, defenses, archs, scenarios, budgets, protocols, baseline_name, failed=True
    )
    text = build(rows, workdir, workdir_loaders(state.registry, workdir), columns, baseline_name, classes)
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:  # read-only disk, no permission, full disk, missing folder
        raise click.ClickException(
            f"cannot write {output}: {exc.strerror or exc}; pass -o a path that can be written"
        ) from None
    click.echo(f"wrote {output} ({len(text.encode()) / 1024:.0f} KiB)")


@cli.command()
@_filter_options
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The folder to write the site into (index.html and its pages).",
)
@click.option("--force", is_flag=True, help="Write into a folder that already holds files.")
@click.option(
    "--reported", is_flag=True, help="Published numbers beside the measured ones, as leaderboard --reported."
)
@click.option("--no-plots", is_flag=True, help="Leave out the privacy-utility plots (faster).")
@workdir_option
@click.pass_obj
def site(
    state: State,
    attacks,
    defenses,
    archs,
    scenarios,
    budgets,
    protocols,
    baseline_name,
    output,
    force,
    reported,
    no_plots,
    workdir,
):
    """A static leaderboard site: plain HTML pages (no server, no network; open index.html from the
    folder or put it on any static host), one leaderboard per protocol, a page per defense and per
    attack, every number linked to its cells' configuration and environment."""
    from reinv_bench.views.site import build

    if output.exists() and any(output.iterdir()) and not force:
        raise click.ClickException(f"{output} is not empty; pass --force to write into it, or another -o")
    workdir = _expand_home(workdir)
    _, entries, columns = _stored(
        state, workdir, attacks, defenses, archs, scenarios, budgets, protocols, baseline_name
    )
    if reported:
        filters = dict(attack=attacks, defense=defenses, arch=archs, scenario=scenarios, budget=budgets)
        entries, _ = _with_reported(state, entries, {**filters, "protocol": protocols})
    try:
        pages = build(entries, columns, output, plots=not no_plots)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"wrote {len(pages)} pages into {output}; open {output / 'index.html'}")


def main() -> None:
    """Console entry point: loads plugin commands (register_commands), maps user errors to clean messages."""
    args = sys.argv[1:]
    signal.signal(signal.SIGTERM, _on_sigterm)  # a message and a clean unwind, as for Ctrl-C
    state = State(_plugin_args(args))
    try:  # a plugin whose register_commands raises is named and skipped; the other commands work
        call_each(state.pm, "register_commands", lambda text: click.echo(f"Error: {text}", err=True), cli=cli)
    except USER_ERRORS as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt as exc:
        click.echo("terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted", err=True)
        sys.exit(143 if isinstance(exc, Terminated) else 130)
    cli.main(args=args, prog_name="reinv-bench", obj=state)
