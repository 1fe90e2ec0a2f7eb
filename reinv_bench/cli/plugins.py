"""What is installed: ``plugins`` (every registered item, or one described), ``protocol`` (a
scenario's card), ``weights`` (pretrained files: list, add) and ``data check``."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from tabulate import tabulate

from reinv_bench.cli.options import expand_home, workdir_option
from reinv_bench.cli.state import State
from reinv_bench.contract.datachecks import check_data
from reinv_bench.contract.datachecks import render as render_check
from reinv_bench.contract.weights import best_state, candidates, hash_label, install
from reinv_bench.registry.lookup import KINDS
from reinv_bench.results.judging import remarks
from reinv_bench.results.store import Store
from reinv_bench.views.describe import describe
from reinv_bench.views.protocol import card


@click.command()
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
    if name:
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


@click.command()
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
    db = expand_home(workdir) / "results.db"
    judged = remarks([r for r in Store(db).rows("ok") if r.scenario == scenario]) if db.is_file() else []
    click.echo(card(state.registry, scenario, str(data_root) if data_root else None, judged=judged))
    others = [n for n in state.registry.names("scenario") if n != scenario]
    if others:
        click.echo(f"\nOther scenarios: {', '.join(others)} (reinv-bench protocol NAME)")


@click.group(invoke_without_command=True)
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
    dest = install(state.registry.get("weights", name), file)
    click.echo(f"installed {name}: {dest}")


@click.group()
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
    report = check_data(
        state.registry.get("scenario", scenario), data_root.resolve() if data_root else None, sample
    )
    if report.ready and labels_file is not None:  # only where asked: never a file in the current folder
        labels_file.write_text(report.label_text())
    click.echo(render_check(report, labels_file if report.ready else None))
    if report.ready and labels_file is None:
        click.echo("(write the label order with --labels FILE)")
    if not report.ready:
        sys.exit(1)
