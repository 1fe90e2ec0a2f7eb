"""A scenario names its default metrics: a third-party scenario of its own protocol asks for a
builtin metric (``knn_dist``, which names the digits32 and 64px protocols) without claiming another
protocol's name; ``run`` says which metrics its defaults leave out and why."""

from __future__ import annotations

import pytest
import torch

from reinv_bench import hookimpl
from reinv_bench.api import Scenario, ScenarioData, Split, TrainRecipe
from reinv_bench.engine.plan import Request, expand
from reinv_bench.registry.lookup import UnknownNameError


class OwnProtocol(Scenario):
    """36 random grey 8-px images in 3 classes, a protocol of its own, knn_dist by default."""

    name = "own-proto"
    num_classes = eval_num_classes = 3
    image_shape = (1, 8, 8)
    default_arch = eval_arch = "tiny"
    protocol = "own"
    default_metrics = ("knn_dist",)

    def load(self, data_root):
        x = torch.rand(36, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
        y = torch.arange(36) % 3
        train, test = Split(x[:24], y[:24]), Split(x[24:], y[24:])
        return ScenarioData(train, test, Split(x, None), train, test, digest="own-proto", source="random")

    def recipe(self, role, budget, arch=""):
        return TrainRecipe(epochs=1, batch_size=12)


class Plugin:
    @hookimpl
    def register_datasets(self):
        return [OwnProtocol()]


@pytest.fixture
def own_registry():
    import conftest

    from reinv_bench.registry.lookup import load

    return load(extra=(conftest, Plugin()))


def _metrics(registry, **fields):
    plan = expand(Request(["meanimg"], ["none"], scenarios=["own-proto"], budget="smoke", **fields), registry)
    (metrics,) = {tuple(c.metrics) for c in plan.cells}
    return metrics


def test_the_scenario_default_metrics_run_besides_those_of_every_protocol(own_registry):
    metrics = _metrics(own_registry)
    everywhere = [e.name for e in own_registry.entries("metric") if not e.obj.protocols]
    assert "knn_dist" in metrics and set(everywhere) <= set(metrics)
    assert not {"fid", "eval_dist", "robust_acc"} & set(metrics)  # other protocols' stay out
    assert _metrics(own_registry, metrics=["attack_acc"]) == ("attack_acc",)  # --metric picks exactly


def test_an_unknown_default_metric_is_refused_at_plan_time(own_registry, monkeypatch):
    monkeypatch.setattr(OwnProtocol, "default_metrics", ("knn_dits",))
    with pytest.raises(UnknownNameError, match="knn_dits"):
        _metrics(own_registry)


def test_run_says_which_metrics_are_left_out_and_computes_the_named_one(own_registry, tmp_path, invoke):
    result = invoke(
        "run",
        "--scenario",
        "own-proto",
        "-a",
        "meanimg",
        "-d",
        "none",
        "--budget",
        "smoke",
        "--quiet",
        "--workdir",
        tmp_path,
        registry=own_registry,
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    (line,) = [ln for ln in result.output.splitlines() if "left out by default" in ln]
    assert line.startswith("warning: scenario own-proto: left out by default (metrics of other protocols)")
    assert "fid (64px, 224px)" in line and "eval_dist (224px)" in line and "robust_acc (on request)" in line
    assert "knn_dist" not in line and "no metric names its protocol" not in line
    from reinv_bench.results.store import Store

    rows = [r for r in Store(tmp_path / "results.db").rows() if r["attack"] == "meanimg"]
    assert rows and all(r["metrics"]["knn_dist"] is not None for r in rows)  # computed, not just planned


def test_the_protocol_card_says_the_scenario_names_it(own_registry, invoke):
    result = invoke("protocol", "own-proto", registry=own_registry, ok=True)
    out = " ".join(result.output.split())
    assert "knn_dist [digits32, 64px; named by the scenario's default_metrics]" in out
