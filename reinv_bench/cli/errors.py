"""What the command line does with errors and stops: user errors become one clean line, Ctrl-C
and SIGTERM the resume message and their exit status."""

from __future__ import annotations

import functools
import sys

import click

from reinv_bench.contract.config import ConfigError
from reinv_bench.engine.artifacts import ArtifactError
from reinv_bench.engine.bundles import BundleError
from reinv_bench.registry.lookup import UnknownNameError
from reinv_bench.registry.plugins import PluginError
from reinv_bench.registry.spec import SpecError
from reinv_bench.results.store import StoreError

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
INTERRUPTED = "interrupted: finished steps and results are kept; rerun the same command to resume."
TERMINATED = "terminated (SIGTERM): finished steps and results are kept; rerun the same command to resume."


class PluginsFailed(click.ClickException):
    """The plugins could not be loaded (a -p value, REINV_BENCH_LOAD_PLUGINS, a malformed plugin):
    its one line and exit status 2, whichever command loaded them."""

    exit_code = 2


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's stop): unwinds as Ctrl-C does (locks released, workers
    stopped, results kept), with its own message and exit status 143."""


def on_sigterm(signum, frame) -> None:
    raise Terminated()


def stopped(exc: KeyboardInterrupt) -> None:
    """The message and exit status of a command stopped by Ctrl-C or SIGTERM."""
    terminated = isinstance(exc, Terminated)
    click.echo(TERMINATED if terminated else INTERRUPTED, err=True)
    sys.exit(143 if terminated else 130)


def resumable(f):
    """Ctrl-C anywhere in the command (planning, data loading, the run) -> the resume message, exit 130."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except KeyboardInterrupt as exc:
            stopped(exc)

    return wrapper


def warn(text: str) -> None:
    click.echo(f"warning: {text}", err=True)
