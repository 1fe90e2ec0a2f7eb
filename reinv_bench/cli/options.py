"""Options shared by several commands: ``--workdir`` and the filters of the stored results."""

from __future__ import annotations

import functools
import os
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import click

from reinv_bench.engine.defaults import DEFAULTS

DEFAULT_HOME = DEFAULTS.workdir


def workdir_option(f):
    return click.option(
        "--workdir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="REINV_BENCH_HOME",
        default=DEFAULT_HOME,
        show_default=True,
        help="Where results.db and the artifact cache live (env REINV_BENCH_HOME).",
    )(f)


def expand_home(path: Path) -> Path:
    return Path(os.path.expanduser(str(path)))


def results_db(workdir: Path) -> Path:
    """The workdir's results database, or a usage error saying there are no results yet."""
    db = expand_home(workdir) / "results.db"
    if not db.is_file():
        raise click.ClickException(f"no results at {db}; run `reinv-bench run` first (or pass --workdir)")
    return db


@dataclass(frozen=True)
class Filters:
    """-a/-d/--arch/--scenario/--budget/--protocol of a command over stored results: each a tuple
    of the labels to keep (empty: all)."""

    attack: tuple[str, ...] = ()
    defense: tuple[str, ...] = ()
    arch: tuple[str, ...] = ()
    scenario: tuple[str, ...] = ()
    budget: tuple[str, ...] = ()
    protocol: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, tuple[str, ...]]:
        """The keywords of ``results.aggregate.filter_rows`` (and a bundle's recorded filters)."""
        return dict(zip((f.name for f in fields(self)), astuple(self), strict=True))


# each filter: its click parameter name, then its option (the names are the leaderboard's since v0.1)
_FILTERS = (
    (
        "attacks",
        click.option("-a", "--attack", "attacks", multiple=True, help="Only these attacks (label as shown)."),
    ),
    ("defenses", click.option("-d", "--defense", "defenses", multiple=True, help="Only these defenses.")),
    ("archs", click.option("--arch", "archs", multiple=True, help="Only these architectures.")),
    ("scenarios", click.option("-s", "--scenario", "scenarios", multiple=True, help="Only these scenarios.")),
    ("budgets", click.option("--budget", "budgets", multiple=True, help="Only these budgets.")),
    (
        "protocols",
        click.option(
            "--protocol",
            "protocols",
            multiple=True,
            help="Only these evaluation protocols (64px, 224px, ...).",
        ),
    ),
)
_BASELINE = click.option(
    "--baseline",
    "baseline_name",
    default="none",
    show_default=True,
    metavar="DEFENSE",
    help="The defense every other is compared with (Δ columns with 95% intervals).",
)


def filter_options(f=None, *, baseline: bool = False):
    """The filters as options, handed to the command as one ``filters: Filters`` argument; with
    ``baseline``, --baseline too (its ``baseline_name`` argument: a comparison, not a filter)."""
    if f is None:
        return functools.partial(filter_options, baseline=baseline)

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        filters = Filters(*(kwargs.pop(name) for name, _ in _FILTERS))
        return f(*args, filters=filters, **kwargs)

    options = [opt for _, opt in _FILTERS] + ([_BASELINE] if baseline else [])
    for opt in reversed(options):
        wrapper = opt(wrapper)
    return wrapper
