"""Every hook a reinv-bench plugin can implement.

Named after what a plugin contributes (datasette's convention). The ``register_*`` hooks are
collect-all: each implementation returns a list, and the registry gathers them all. Each hook is
documented with its exact signature in docs/plugins.md (a test keeps the two in step).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from reinv_bench.contract.attack import Attack
    from reinv_bench.contract.data import Scenario
    from reinv_bench.contract.defense import Defense
    from reinv_bench.contract.executor import Executor
    from reinv_bench.contract.judge import Judge
    from reinv_bench.contract.metric import Metric
    from reinv_bench.contract.models import Architecture
    from reinv_bench.contract.weights import WeightsFile
    from reinv_bench.engine.plan import Cell
    from reinv_bench.results.store import Row

hookspec = pluggy.HookspecMarker("reinv_bench")


@hookspec
def register_attacks() -> list[type[Attack]]:
    """Return Attack subclasses (each with a unique ``name``)."""


@hookspec
def register_defenses() -> list[type[Defense]]:
    """Return Defense subclasses (each with a unique ``name``)."""


@hookspec
def register_architectures() -> list[Architecture]:
    """Return Architecture instances that build classifiers for a scenario."""


@hookspec
def register_datasets() -> list[Scenario]:
    """Return Scenario instances: private and public data, image shape, evaluation protocol."""


@hookspec
def register_metrics() -> list[Metric]:
    """Return Metric instances computed on every attack cell."""


@hookspec
def register_judges() -> list[type[Judge]]:
    """Return Judge subclasses (each with a unique ``name``): per-reconstruction yes/no answers."""


@hookspec
def register_executors() -> list[type[Executor]]:
    """Return Executor subclasses that run the steps of a plan."""


@hookspec
def register_weights() -> list[WeightsFile]:
    """Return WeightsFile entries: pretrained files the plugin can use (never downloaded)."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands to the ``reinv-bench`` command group."""


@hookspec
def on_result(cell: Cell, result: Row) -> None:
    """Observe a cell just stored: loggers, notifiers (in the process that runs the grid).

    ``cell``: the ``reinv_bench.engine.plan.Cell`` (``cell_id``, ``labels``, resolved ``config``, artifact
    keys, ``metrics`` names). ``result``: the row as stored (``reinv_bench.results.store.Row``; its
    fields read as attributes or as a mapping, ``result["metrics"]``):
    ``cell_id``, the labels, ``status`` ("ok" or "failed") and ``error``, ``config``, ``metrics``
    (key -> value or None) and ``notes``, ``timings`` (seconds), ``outcomes``, ``artifacts``
    ({"eval", "target", "priors", "invert"}: artifact-cache keys), provenance (``device``,
    ``data_digest``, versions, ``created_at``). Cells already stored are not reported again; an
    implementation that raises is named in a warning and the run goes on.
    """
