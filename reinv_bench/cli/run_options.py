"""``reinv-bench run``'s options: their declarations, one ``RunOptions`` value of them, and a
grid file's values where the command line gave none."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import click
from click.core import ParameterSource

from reinv_bench.cli.errors import warn
from reinv_bench.cli.options import workdir_option
from reinv_bench.cli.state import State
from reinv_bench.contract.config import BUDGETS, PRECISIONS
from reinv_bench.engine.defaults import DEFAULTS
from reinv_bench.engine.grid import MAX_SEEDS, installed, load


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


def select_loggers(state: State, names: tuple[str, ...]) -> None:
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


_OPTIONS = (
    click.option(
        "-a",
        "--attack",
        "attacks",
        multiple=True,
        default=("gmi",),
        show_default=True,
        help='Attack spec, repeatable: NAME or NAME[key=value,...], e.g. "gmi[iters=300]".',
    ),
    click.option(
        "-d",
        "--defense",
        "defenses",
        multiple=True,
        default=("re",),
        show_default=True,
        help='Defense spec, repeatable: "re", "re[scale=0.1-0.8,p=0.5]", "re+bido".',
    ),
    click.option(
        "--arch",
        "archs",
        multiple=True,
        help="Target architecture, repeatable (default: the scenario's): "
        'NAME or "NAME[weights=imagenet|PATH]".',
    ),
    click.option(
        "--eval-arch",
        multiple=True,
        help='Evaluation model instead of the scenario\'s, e.g. "ir50_112[weights=ms1m]" (the official '
        "evaluation models start from pretrained weights); its rows are ranked as another protocol. "
        "Repeatable: each further one judges the same reconstructions too (attack_acc[NAME], and the "
        "leaderboard's eval_agree[NAME]: how often it agrees with the first).",
    ),
    click.option(
        "--judge",
        "judges",
        multiple=True,
        metavar="SPEC",
        help="Judge, repeatable: confirms each reconstruction without the target or the evaluation model, "
        'e.g. "verification" or "verification[far=0.001]" (see `reinv-bench plugins --kind judge`); the '
        "leaderboard adds its confirmed accuracy and the evaluation model's false-positive rate.",
    ),
    click.option(
        "-s",
        "--scenario",
        "scenarios",
        multiple=True,
        default=("mnist",),
        show_default=True,
        help="Scenario (dataset protocol), repeatable.",
    ),
    click.option(
        "--seeds",
        type=click.IntRange(1, MAX_SEEDS),
        default=1,
        show_default=True,
        help=f"Seeds 0..N-1 per cell (at most {MAX_SEEDS}).",
    ),
    click.option(
        "--budget",
        type=click.Choice(BUDGETS),
        default=None,
        help="smoke (seconds), quick (minutes on CPU), paper (published hyperparameters). "
        "Default: quick on CPU, paper on CUDA.",
    ),
    click.option("--device", default=DEFAULTS.device, show_default=True, help="auto | cpu | cuda | cuda:N"),
    click.option(
        "--data-root",
        type=click.Path(path_type=Path),
        envvar="REINV_BENCH_DATA",
        default=None,
        help="Root of local datasets (env REINV_BENCH_DATA); the embedded scenario needs none.",
    ),
    click.option(
        "--metric",
        "metrics",
        multiple=True,
        help="Metrics to compute, repeatable (default: those of each scenario's protocol).",
    ),
    click.option(
        "--log",
        "loggers",
        multiple=True,
        metavar="NAME",
        envvar="REINV_BENCH_LOG",
        expose_value=False,
        callback=lambda ctx, _, names: select_loggers(ctx.obj, names),
        help="Log each stored cell as a run of an experiment tracker, repeatable: mlflow or wandb (extras "
        "[mlflow], [wandb]; wandb offline unless WANDB_MODE says otherwise). Env REINV_BENCH_LOG "
        "(comma list).",
    ),
    click.option(
        "--recipe",
        "recipe_texts",
        multiple=True,
        metavar="ROLE:KEY=VALUE,...",
        help="Override a training recipe, repeatable: ROLE is target, eval or pretrain, KEY a TrainRecipe "
        'field, e.g. "target:epochs=100,lr=0.01" (defaults: `reinv-bench protocol SCENARIO`).',
    ),
    click.option(
        "--executor",
        default=None,
        cls=ExecutorOption,
        help='How steps run: "inline" (this process), "local[workers=N]" or "local[gpus=0/1]" (worker '
        "processes). Default: local with one worker per GPU when there are several, else inline.",
    ),
    click.option(
        "--workers", type=click.IntRange(1), default=None, help="Shorthand for --executor local[workers=N]."
    ),
    click.option(
        "--convergence",
        type=click.IntRange(0),
        default=0,
        show_default=True,
        metavar="K",
        help="Opt-in validity check (costs a second inversion of K classes per cell): every attack again at "
        "twice its iterations on K evenly spaced attacked classes; the leaderboard flags 'not converged' "
        "when that raises attack accuracy beyond its interval (0: off).",
    ),
    click.option(
        "--class-chunk",
        default="0",
        show_default=True,
        metavar="N|auto",
        help="Classes per inversion step: a many-class attack becomes cached chunks that spread over "
        "workers and resume chunk by chunk (0: one step; auto: the attack's identity batch, else as many "
        "classes as fit in 2 GiB by the attack's memory estimate, else 60).",
    ),
    click.option(
        "--gpus", default=None, help="Shorthand for --executor local[gpus=...], e.g. --gpus 0,1,2,3."
    ),
    click.option(
        "--canaries",
        type=click.IntRange(0),
        default=0,
        metavar="K",
        help="Also attack each target retrained with K planted canary identities (their training images "
        "replaced by an attack prior's own samples): an attack unit test with a known answer; rows "
        "rank apart ('..., K canaries').",
    ),
    click.option(
        "--no-baseline", is_flag=True, help="Do not add the undefended 'none' baseline automatically."
    ),
    click.option(
        "--baseline",
        "baseline_name",
        default="none",
        show_default=True,
        metavar="DEFENSE",
        help="The defense every other is compared with "
        "(differences with 95% intervals, the closing sentences).",
    ),
    click.option("--quiet", is_flag=True, help="Log lines instead of the live display."),
    click.option(
        "--grid",
        "grid_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="A grid file (TOML: attacks, defenses, archs, scenarios, seeds, budget, ...); options given "
        "here override it. Examples in benchmarks/grids/.",
    ),
    click.option(
        "--dry-run",
        is_flag=True,
        help="Print the plan (steps to run and reused, cells, time estimate) without running it.",
    ),
    click.option(
        "--deterministic",
        is_flag=True,
        help="Deterministic CUDA kernels (slower): bit-identical GPU runs. "
        "CPU runs are deterministic anyway.",
    ),
    click.option(
        "--precision",
        type=click.Choice(PRECISIONS),
        default=DEFAULTS.precision,
        show_default=True,
        help="Targets, priors and inversions at fp32, bf16 (autocast) or tf32 (TF32 matmuls on Ampere+); "
        "the evaluation model stays fp32. Rows of another precision are ranked apart.",
    ),
    click.option(
        "--threads",
        type=click.IntRange(1),
        default=None,
        envvar="REINV_BENCH_THREADS",
        help="Torch threads every step computes with, here and in every local worker (env "
        "REINV_BENCH_THREADS; default: the cores free when the run starts, torch's default on a quiet "
        "machine). CPU numbers depend on it: README, Reproducibility.",
    ),
    click.option(
        "--break-locks",
        is_flag=True,
        help="First remove every step lock in the workdir (locks left by a killed run; one not refreshed "
        "for 60 s is taken over anyway). Only when no other run uses the workdir.",
    ),
    workdir_option,
)


def run_options(f):
    """Every option of ``run``, in the order of its ``--help``."""
    for opt in reversed(_OPTIONS):
        f = opt(f)
    return f


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """``run``'s options as parsed (then with a grid file's values, ``with_grid``)."""

    attacks: tuple[str, ...]
    defenses: tuple[str, ...]
    archs: tuple[str, ...]
    eval_arch: tuple[str, ...]
    judges: tuple[str, ...]
    scenarios: tuple[str, ...]
    seeds: int
    budget: str | None  # None: DEFAULTS.budget(device)
    device: str
    data_root: Path | None
    metrics: tuple[str, ...]
    recipe_texts: tuple[str, ...]
    executor: str | None  # None: from --workers/--gpus, else DEFAULTS.executor(device)
    workers: int | None
    convergence: int
    class_chunk: str
    gpus: str | None
    canaries: int
    no_baseline: bool
    baseline_name: str
    quiet: bool
    grid_file: Path | None
    dry_run: bool
    deterministic: bool
    precision: str
    threads: int | None
    break_locks: bool
    workdir: Path


# run's option -> (the grid file's key, the value from the grid file's), in the order they are read
_GRID = {
    "archs": ("archs", tuple),
    "eval_arch": ("eval_arch", lambda v: (v,) if isinstance(v, str) else tuple(v or ())),
    "scenarios": ("scenarios", tuple),
    "seeds": ("seeds", None),
    "budget": ("budget", None),
    "device": ("device", None),
    "data_root": ("data_root", lambda v: Path(v).expanduser()),
    "metrics": ("metrics", tuple),
    "recipe_texts": ("recipes", tuple),
    "executor": ("executor", None),
    "no_baseline": ("baseline", lambda v: not v),
    "deterministic": ("deterministic", None),
    "precision": ("precision", None),
    "judges": ("judges", tuple),
    "class_chunk": ("class_chunk", str),
    "convergence": ("convergence", None),
    "canaries": ("canaries", None),
}


def with_grid(state: State, o: RunOptions) -> RunOptions:
    """``o`` with the grid file's values where the command line gave none."""
    ctx = click.get_current_context()
    path = o.grid_file
    grid = load(path)

    def pick(param: str, key: str, convert=None):
        given = ctx.get_parameter_source(param) not in (ParameterSource.DEFAULT, None)
        if given or key not in grid:
            return getattr(o, param)
        return grid[key] if convert is None else convert(grid[key])

    attacks = pick("attacks", "attacks", lambda v: tuple(installed(state.registry, "attack", v, warn)))
    defenses = pick("defenses", "defenses", lambda v: tuple(installed(state.registry, "defense", v, warn)))
    if not attacks or not defenses:
        raise click.ClickException(f"grid {path}: no attack or no defense of it is installed here")
    rest = {param: pick(param, key, convert) for param, (key, convert) in _GRID.items()}
    return dataclasses.replace(o, attacks=attacks, defenses=defenses, **rest)
