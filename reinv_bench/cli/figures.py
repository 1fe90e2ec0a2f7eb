"""The figures of the stored results: ``plot`` (privacy-utility, feature space, per identity) and
``show`` (reconstruction grids)."""

from __future__ import annotations

from pathlib import Path

import click

from reinv_bench.cli.errors import warn
from reinv_bench.cli.options import Filters, expand_home, filter_options, workdir_option
from reinv_bench.cli.results import stored
from reinv_bench.cli.state import State
from reinv_bench.engine.loaders import private_loader, reconstruction_loader, target_loader
from reinv_bench.views import pictures, plots


def output_option(f):
    return click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        required=True,
        help="The file to write (.png, .svg or .pdf).",
    )(f)


@click.command()
@filter_options(baseline=True)
@output_option
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
    filters: Filters,
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
    workdir = expand_home(workdir)
    _, entries, columns = stored(state, workdir, filters, baseline_name)
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
    gs = plots.groups(entries)
    if len(gs) > 1:
        names = "; ".join(plots.group_title(g[0]) for g in gs)
        raise click.ClickException(
            f"{len(gs)} comparison groups match ({names}); pick one with -a/--arch/"
            "--scenario/--budget/--protocol"
        )
    return gs[0]


@click.command()
@filter_options(baseline=True)
@output_option
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
    filters: Filters,
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
    workdir = expand_home(workdir)
    _, entries, _ = stored(state, workdir, filters, baseline_name)
    group = _one_group(entries)
    try:
        _, (nrows, ncols), notes = pictures.reconstruction_grid(
            group,
            reconstruction_loader(workdir),
            private_loader(state.registry),
            output,
            classes,
            seed,
            restarts,
        )
    except plots.PlotError as exc:
        raise click.ClickException(str(exc)) from None
    for note in notes:
        warn(note)
    click.echo(f"wrote {output} ({nrows} classes x {ncols} columns)")
