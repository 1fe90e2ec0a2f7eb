"""Commands over the stored results: ``leaderboard``, ``report``, ``site`` and ``export``
(the figures, ``plot`` and ``show``, are in cli/figures.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.core import ParameterSource
from rich.console import Console

from reinv_bench.cli.errors import warn
from reinv_bench.cli.options import Filters, expand_home, filter_options, results_db, workdir_option
from reinv_bench.cli.state import State
from reinv_bench.engine.loaders import paper_label, private_loader, reconstruction_loader, workdir_loaders
from reinv_bench.results.aggregate import (
    aggregate,
    attack_verdicts,
    check_attack_baseline,
    compare_attacks,
    declared_columns,
    default_sort,
    filter_rows,
    sort_entries,
)
from reinv_bench.results.aggregate import check_baseline as check_baseline_of
from reinv_bench.results.reported import attach_reported, reported_rows, rich_unmatched
from reinv_bench.results.store import Store
from reinv_bench.views import defense_board
from reinv_bench.views.export import ExportError, export
from reinv_bench.views.report import build as build_report
from reinv_bench.views.site import build as build_site
from reinv_bench.views.tables import render, rich_table

TABLE_WIDTH_MAX = 1000  # characters of a --format table written to a file (rich's default: 80)


@click.command()
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
@filter_options(baseline=True)
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
    filters: Filters,
    reported,
    baseline_name,
    view,
    workdir,
    attack_baseline=None,
):
    """Rank defenses by the privacy-utility trade-off (seeds aggregated: mean ± std)."""
    db = expand_home(workdir) / "results.db"
    if not db.is_file() and not reported:
        raise click.ClickException(f"no results at {db}; run `reinv-bench run` first (or pass --workdir)")
    rows = filter_rows(Store(db).rows(), **filters.as_dict()) if db.is_file() else []
    columns = declared_columns(state.registry)
    check_baseline(rows, baseline_name)
    try:
        entries = sort_entries(
            aggregate(rows, baseline=baseline_name, columns=columns), sort_by, columns=columns
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    attack_lines = _attack_baseline(rows, entries, attack_baseline, columns)
    unmatched: list = []
    if reported:
        entries, unmatched = with_reported(state, entries, filters)
    if not entries and not unmatched:
        raise click.ClickException("no successful results match the filters")
    fmt = fmt or ("table" if sys.stdout.isatty() else "md")
    if view == "defenses":
        board = defense_board.build(rows, entries, columns)
        if fmt == "table":
            Console().print(defense_board.rich_table(board))
        else:
            click.echo(defense_board.render(board, fmt))
        return
    _print_board(entries, unmatched, columns, fmt)
    if fmt in ("table", "md"):  # sentences only where they do not break a machine-read format
        for line in attack_lines:
            click.echo(line)


def _print_board(entries, unmatched, columns, fmt: str) -> None:
    """The leaderboard in ``fmt`` (the published rows of no setting here after it)."""
    if fmt != "table":
        click.echo(render(entries, fmt, columns, unmatched))
        return
    # to a file or a pipe: the table's own width, not squeezed into rich's 80 columns
    console = Console() if sys.stdout.isatty() else Console(width=TABLE_WIDTH_MAX)
    if entries:
        console.print(rich_table(entries, columns))
    if unmatched:
        console.print(rich_unmatched(unmatched, columns))


def stored(state: State, workdir: Path, filters: Filters, baseline_name: str, failed: bool = False):
    """(rows, entries, columns) of the stored results that match the filters."""
    rows = filter_rows(Store(results_db(workdir)).rows(), **filters.as_dict())
    columns = declared_columns(state.registry)
    check_baseline(rows, baseline_name)
    entries = sort_entries(aggregate(rows, baseline=baseline_name, columns=columns), columns=columns)
    if not entries and not (failed and rows):
        raise click.ClickException("no successful results match the filters")
    return rows, entries, columns


def check_baseline(rows, baseline_name: str) -> None:
    """A --baseline given on the command line must name a defense of the selected results."""
    if click.get_current_context().get_parameter_source("baseline_name") == ParameterSource.DEFAULT:
        return
    try:
        check_baseline_of(rows, baseline_name)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def with_reported(state: State, entries, filters: Filters) -> tuple[list, list]:
    """``--reported``: the published numbers the plugins declare that match ``filters``, attached
    beside the measured ``entries`` of their setting; (entries, the published rows of no setting here)."""
    published = reported_rows(state.registry, paper_label(state.registry))
    return attach_reported(entries, filter_rows(published, **filters.as_dict()))


def _attack_baseline(rows, entries, attack_baseline: str | None, columns) -> list[str]:
    """``leaderboard --attack-baseline``: every entry paired with that attacker on its targets
    (``aggregate.compare_attacks``); returns the verdict sentences."""
    if not attack_baseline:
        return []
    try:
        check_attack_baseline(rows, attack_baseline)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    compare_attacks(entries, attack_baseline, columns)
    return attack_verdicts(entries, columns)


@click.command()
@filter_options(baseline=True)
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
def report(state: State, filters: Filters, baseline_name, output, classes, workdir):
    """One self-contained HTML file (images embedded, no network, no script): leaderboards with
    intervals per group, privacy-utility plots, reconstruction grids, each cell's config and
    timings, failed cells, metric gaps and the environment."""
    workdir = expand_home(workdir)
    rows, _, columns = stored(state, workdir, filters, baseline_name, failed=True)
    text = build_report(
        rows, workdir, workdir_loaders(state.registry, workdir), columns, baseline_name, classes
    )
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:  # read-only disk, no permission, full disk, missing folder
        raise click.ClickException(
            f"cannot write {output}: {exc.strerror or exc}; pass -o a path that can be written"
        ) from None
    click.echo(f"wrote {output} ({len(text.encode()) / 1024:.0f} KiB)")


@click.command()
@filter_options(baseline=True)
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
def site(state: State, filters: Filters, baseline_name, output, force, reported, no_plots, workdir):
    """A static leaderboard site: plain HTML pages (no server, no network; open index.html from the
    folder or put it on any static host), one leaderboard per protocol, a page per defense and per
    attack, every number linked to its cells' configuration and environment."""
    if output.exists() and any(output.iterdir()) and not force:
        raise click.ClickException(f"{output} is not empty; pass --force to write into it, or another -o")
    workdir = expand_home(workdir)
    _, entries, columns = stored(state, workdir, filters, baseline_name)
    if reported:
        entries, _ = with_reported(state, entries, filters)
    try:
        pages = build_site(entries, columns, output, plots=not no_plots)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"wrote {len(pages)} pages into {output}; open {output / 'index.html'}")


@click.command("export")
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
@filter_options
@workdir_option
@click.pass_obj
def export_cmd(state: State, out: Path, private_per_class, force: bool, workdir, filters: Filters):
    """Write the stored cells' reconstructions, the private images they are judged against and every
    verdict (evaluation models, judges) in the MI-Reconstruction-Collection layout (MI-Eval-MLLM)."""
    db = results_db(workdir)
    rows = filter_rows(Store(db).rows(status="ok"), **filters.as_dict())
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
        warn(note)
    click.echo(
        f"wrote {len(manifest['cells'])} cell(s) and "
        f"{sum(manifest['private_images'].values())} private image(s) to {out} (manifest.json)"
    )
