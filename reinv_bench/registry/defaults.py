"""The metrics a run of a scenario computes by default (no ``--metric``): those of every protocol,
those that name the scenario's protocol, and those the scenario names (``default_metrics``); and
the note that says which metrics a default run leaves out (the rule ``plan`` applies; shown on
the protocol card and before a run)."""

from __future__ import annotations

from typing import Any

from reinv_bench.contract.data import Scenario
from reinv_bench.registry.lookup import Registry


def applies(metric: Any, scenario: Scenario) -> bool:
    """Whether ``metric`` runs on ``scenario`` by default (the rule of ``plan.expand``): it runs on
    every protocol, names the scenario's, or the scenario names it in ``default_metrics``."""
    return (
        not metric.protocols
        or scenario.protocol in metric.protocols
        or metric.name in scenario.default_metrics
    )


def default_metrics(registry: Registry, scenario: Scenario) -> tuple[list[Any], list[Any]]:
    """(metrics run by default, metrics of other protocols only)."""
    metrics = [e.obj for e in registry.entries("metric")]
    return [m for m in metrics if applies(m, scenario)], [m for m in metrics if not applies(m, scenario)]


def claimed(registry: Registry, scenario: Scenario) -> bool:
    """Whether a metric of the scenario's default run names its protocol (every builtin scenario's
    does; a third-party scenario with a protocol of its own runs builtin metrics by other names)."""
    return any(scenario.protocol in m.protocols for m in default_metrics(registry, scenario)[0])


def left_out(registry: Registry, scenario: Scenario) -> str | None:
    """A note naming each metric a default run of ``scenario`` leaves out and why (it belongs to
    other protocols), first saying so when no metric but those that run everywhere applies."""
    run, others = default_metrics(registry, scenario)
    if not others:
        return None
    unclaimed = not any(m.protocols for m in run)
    return (
        f"scenario {scenario.name}: "
        + (
            f"no metric names its protocol {scenario.protocol!r}, so by default only "
            f"{', '.join(m.name for m in run) or 'no metric'} run; "
            if unclaimed
            else ""
        )
        + f"left out by default (metrics of other protocols): "
        f"{', '.join(f'{m.name} ({join(m.protocols)})' for m in others)}; add one with --metric NAME "
        "(a scenario plugin: name it in default_metrics)"
    )


def join(items) -> str:
    """Items as text: ``a, b``."""
    return ", ".join(map(str, items))


# --------------------------------------------------------------------------------------------
