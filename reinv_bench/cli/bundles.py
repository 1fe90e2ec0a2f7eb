"""Results that travel: ``pack`` (a bundle of stored cells), ``verify``, ``merge`` (bundles and
workdirs into this one) and ``zoo`` (trained targets installed from bundles)."""

from __future__ import annotations

from pathlib import Path

import click

from reinv_bench.cli.errors import warn
from reinv_bench.cli.options import Filters, expand_home, filter_options, results_db, workdir_option
from reinv_bench.cli.state import State
from reinv_bench.engine.artifacts import Artifacts
from reinv_bench.engine.bundles import merge as merge_rows
from reinv_bench.engine.bundles import read as read_bundle
from reinv_bench.engine.bundles import zoo_add as zoo_install
from reinv_bench.engine.bundles import zoo_list as zoo_models
from reinv_bench.engine.bundles.packing import pack as pack_rows
from reinv_bench.results.aggregate import filter_rows
from reinv_bench.results.store import Store
from reinv_bench.views.protocol import card


@click.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The bundle to write (.tar.gz).",
)
@filter_options
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
def pack(state: State, output: Path, with_models: bool, samples: int, workdir: Path, filters: Filters):
    """Write the stored successful cells (filtered as the leaderboard's) as one bundle: rows with
    their per-reconstruction outcomes and judges' answers, the protocol cards of their scenarios,
    the environment that computed them and a manifest of every file's and artifact's SHA-256;
    optionally the models (--with-models) and reconstructions (--with-samples N)."""
    db = results_db(workdir)
    wanted = filters.as_dict()
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


@click.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def verify(state: State, bundle: Path):
    """Check BUNDLE against its manifest: every file's SHA-256 and size, every row's columns and
    artifact digests, every checkpoint's record and bytes (loaded without running code). Exit 1
    with one line on the first problem."""
    b = read_bundle(bundle)
    click.echo(
        f"{bundle}: OK, {len(b.rows)} row(s) of schema {b.meta['schema_version']}, {len(b.records)} "
        f"checkpoint(s), {b.samples} sample image(s), scenarios "
        f"{', '.join(map(str, b.meta.get('scenarios') or [])) or '-'}; "
        f"manifest sha256 {b.digest}"
    )


@click.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@workdir_option
@click.pass_obj
def merge(state: State, sources: tuple[Path, ...], workdir: Path):
    """Bring the rows of bundles and other workdirs (SOURCES) into --workdir: a cell not here is
    stored; one here with the same numbers counts as reproduced; one with other numbers is a
    reproducibility conflict, reported and kept apart (merges/conflicts/), never written over.
    Rows of an older schema migrate; every source is checked before anything is written."""
    report = merge_rows(sources, expand_home(workdir))
    for conflict in report.conflicts:
        click.echo(conflict.describe())
    for note in report.notes:
        warn(note)
    click.echo(
        f"merged {report.rows} row(s) from {len(sources)} source(s): {len(report.added)} added, "
        f"{len(report.reproduced)} reproduced, {len(report.conflicts)} conflict(s), "
        f"{report.skipped} failed row(s) skipped"
    )


@click.group()
def zoo():
    """Trained targets that travel: `zoo add BUNDLE` installs a bundle's checkpoints (packed
    --with-models) so that `run` attacks them without training them; `zoo list` shows them."""


@zoo.command("add")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@workdir_option
@click.pass_obj
def zoo_add(state: State, bundle: Path, workdir: Path):
    """Verify BUNDLE and install its checkpoints into --workdir's artifact cache under their own keys."""
    _, models = zoo_install(bundle, expand_home(workdir))
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
    models = zoo_models(expand_home(workdir))
    if not models:
        click.echo("no zoo models in this workdir (`reinv-bench zoo add BUNDLE`)")
    for m in models:
        click.echo(f"{m.kind:8s} {m.label}  ({m.key}, from {m.bundle})")
