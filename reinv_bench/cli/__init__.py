"""The ``reinv-bench`` command line. Thin: parse, call the core, render.

One module per command group: run (its options in run_options), results (leaderboard, report,
site, export), figures (plot, show), bundles (pack, verify, merge, zoo), plugins (plugins,
protocol, weights, data); options holds what several share (--workdir, the filters). The top
group (group.Cli) lists the commands from the table below and imports a command's module only
when it runs: ``reinv-bench --help`` loads neither the plugins nor torch (the plugins' own
commands are listed from their cache: plugin_commands).
"""

from __future__ import annotations

import signal
import sys

import click

from reinv_bench import __version__
from reinv_bench.cli import plugin_commands
from reinv_bench.cli.errors import USER_ERRORS, Terminated, on_sigterm
from reinv_bench.cli.group import Cli
from reinv_bench.cli.options import DEFAULT_HOME, results_db, workdir_option
from reinv_bench.cli.state import State

# the core commands: name -> ("module:attribute", the first 100 characters of its help, as much as
# --help lists; tests/test_cli_lazy.py checks them against the command's own)
COMMANDS = {
    "run": (
        "reinv_bench.cli.run:run",
        "Run the cross product of attacks x defenses x architectures x scenarios x seeds.",
    ),
    "leaderboard": (
        "reinv_bench.cli.results:leaderboard",
        "Rank defenses by the privacy-utility trade-off (seeds aggregated: mean ± std).",
    ),
    "plot": (
        "reinv_bench.cli.figures:plot",
        "Privacy-utility scatter per comparison group: 95% interval "
        "error bars, the baseline marked, the Pareto",
    ),
    "show": (
        "reinv_bench.cli.figures:show",
        "Reconstruction grid of one comparison group: rows = "
        "attacked classes, first column a private training",
    ),
    "report": (
        "reinv_bench.cli.results:report",
        "One self-contained HTML file (images embedded, no network, "
        "no script): leaderboards with intervals per",
    ),
    "site": (
        "reinv_bench.cli.results:site",
        "A static leaderboard site: plain HTML pages (no server, no "
        "network; open index.html from the folder or",
    ),
    "export": (
        "reinv_bench.cli.results:export_cmd",
        "Write the stored cells' reconstructions, the private images "
        "they are judged against and every verdict",
    ),
    "pack": (
        "reinv_bench.cli.bundles:pack",
        "Write the stored successful cells (filtered as the "
        "leaderboard's) as one bundle: rows with their per-reconstruction",
    ),
    "verify": (
        "reinv_bench.cli.bundles:verify",
        "Check BUNDLE against its manifest: every file's SHA-256 and "
        "size, every row's columns and artifact digests,",
    ),
    "merge": (
        "reinv_bench.cli.bundles:merge",
        "Bring the rows of bundles and other workdirs (SOURCES) into "
        "--workdir: a cell not here is stored; one",
    ),
    "zoo": (
        "reinv_bench.cli.bundles:zoo",
        "Trained targets that travel: `zoo add BUNDLE` installs a "
        "bundle's checkpoints (packed --with-models)",
    ),
    "plugins": (
        "reinv_bench.cli.plugins:plugins",
        "List every registered plugin item with the package it comes "
        "from; with NAME, describe one: its docstring",
    ),
    "protocol": (
        "reinv_bench.cli.plugins:protocol",
        "Print SCENARIO's protocol card (default: mnist): splits and "
        "their seed, identities attacked, resolution,",
    ),
    "weights": (
        "reinv_bench.cli.plugins:weights",
        "List the pretrained files the plugins can use: where each was looked for and its state.",
    ),
    "data": (
        "reinv_bench.cli.plugins:data",
        "Check a scenario's data before a run (`data check SCENARIO`).",
    ),
}


@click.group(cls=Cli, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
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


def _parsed(args: list[str]) -> tuple[tuple[str, ...], str | None, bool]:
    """The -p values, the command's name (None: none given) and whether the top group's help is
    asked, parsed by click itself (``-p X``, ``-pX``, ``-p=X``) before the plugins' commands exist:
    the group's options only, the rest of the line left alone."""
    try:
        ctx = cli.make_context("reinv-bench", list(args), resilient_parsing=True)
    except click.exceptions.Exit:
        return (), None, True
    protected = vars(ctx).get("_protected_args", vars(ctx).get("protected_args", []))  # click 8.2+, 8.1
    rest = [*protected, *ctx.args]
    before = args[: len(args) - len(rest)]
    top_help = not rest or any(a in ("-h", "--help") for a in before)
    return tuple(ctx.params.get("plugin_args") or ()), (rest[0] if rest else None), top_help


def _plugin_args(args: list[str]) -> tuple[str, ...]:
    """The -p values of a command line (see ``_parsed``)."""
    return _parsed(args)[0]


def _load_plugin_commands(state: State) -> None:
    """Every plugin's commands added to ``cli`` (register_commands), as the command line needs
    them (a command not of the core, the listing without a valid cache); the cache rewritten."""
    key = plugin_commands.selection_key(state.plugin_args)
    # a plugin whose register_commands raises is named and skipped; the other commands work
    if plugin_commands.register(state.pm, cli, lambda text: click.echo(f"Error: {text}", err=True)):
        plugin_commands.write(key, {n: c for n, c in cli.commands.items() if n not in COMMANDS})


def main() -> None:
    """Console entry point: the plugins' commands where needed, user errors as clean messages."""
    args = sys.argv[1:]
    signal.signal(signal.SIGTERM, on_sigterm)  # a message and a clean unwind, as for Ctrl-C
    plugin_args, name, top_help = _parsed(args)
    state = State(plugin_args)
    try:
        if name in COMMANDS and not top_help:  # the plugins load if and when the command needs them
            state.refresh_commands = set(COMMANDS)
        elif top_help and (listed := _cached_listing(plugin_args)) is not None:
            cli.cached = listed
        else:
            _load_plugin_commands(state)
    except USER_ERRORS as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except click.ClickException as exc:  # PluginsFailed: the plugins could not be loaded
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        click.echo("terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted", err=True)
        sys.exit(143 if isinstance(exc, Terminated) else 130)
    cli.main(args=args, prog_name="reinv-bench", obj=state)


def _cached_listing(plugin_args: tuple[str, ...]) -> dict | None:
    """The plugins' commands as --help lists them, from a valid cache (plugin_commands)."""
    return plugin_commands.read(plugin_commands.selection_key(plugin_args))


__all__ = ["DEFAULT_HOME", "State", "cli", "main", "results_db", "workdir_option"]
