"""Issue 30 item 12: a scenario declares what its classes are (``Scenario.class_kind``), and the
judges' network and question follow from that declaration, never from its name. A third-party
Fashion-MNIST-like scenario named "fmnist" (no declaration, no labelled public data) is refused at
plan time by ``verification`` (it fell back to the face network and failed after the run), by
``mllm`` and by ``judge export`` (whose question read "same digit": "mnist" is inside "fmnist");
once it declares "object", the question is the object one. What a judge needs (the face network's
weights) is on the dry run's checklist."""

from __future__ import annotations

from types import SimpleNamespace

import click
import pytest
import torch
from reinv_judges import _panel, human
from reinv_judges.mllm import MLLMJudge
from reinv_judges.verification import Verification

from reinv_bench import hookimpl
from reinv_bench.api import Scenario, ScenarioData, Split, TrainRecipe
from reinv_bench.contract.config import ConfigError
from reinv_bench.engine.plan import Request, expand


class FMNIST(Scenario):
    """36 random grey 8-px images in 3 classes; says nothing of what they are."""

    name = "fmnist"
    num_classes = eval_num_classes = 3
    image_shape = (1, 8, 8)
    default_arch = eval_arch = "tiny"
    protocol = "own"

    def load(self, data_root):
        x = torch.rand(36, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
        y = torch.arange(36) % 3
        train, test = Split(x[:24], y[:24]), Split(x[24:], y[24:])
        return ScenarioData(train, test, Split(x, None), train, test, digest="fmnist", source="random")

    def recipe(self, role, budget, arch=""):
        return TrainRecipe(epochs=1, batch_size=12)


class Objects(FMNIST):
    name = "fmnist-declared"
    class_kind = "object"


class FaceLike(FMNIST):
    name = "faces-undeclared-by-name"  # its name says nothing; its declaration does
    class_kind = "face"


class Plugin:
    @hookimpl
    def register_datasets(self):
        return [FMNIST(), Objects(), FaceLike()]


@pytest.fixture
def reg():
    import conftest

    from reinv_bench.registry.lookup import load

    return load(extra=(conftest, Plugin()))


def plan(reg, scenario, judge):
    return expand(Request(["meanimg"], ["none"], scenarios=[scenario], budget="smoke", judges=[judge]), reg)


def test_the_kind_comes_from_the_declaration_never_the_name(reg):
    assert _panel.kind_of(reg.get("scenario", "fmnist")) is None  # "mnist" in its name: no matter
    assert _panel.kind_of(SimpleNamespace(name="celeba64")) is None  # a name alone says nothing
    assert _panel.kind_of(reg.get("scenario", "fmnist-declared")) == "object"
    assert _panel.kind_of(reg.get("scenario", "mnist")) == "digit"
    assert _panel.kind_of(reg.get("scenario", "celeba64-ffhq")) == "face"
    assert _panel.kind_of(reg.get("scenario", "facescrub224-ffhq")) == "face"


def test_verification_on_an_undeclared_scenario_is_refused_at_plan_time(reg):
    with pytest.raises(ConfigError, match=r"--judge verification: .*'fmnist'.*not declared.*facenet"):
        plan(reg, "fmnist", "verification")
    with pytest.raises(ConfigError, match="verifies faces only"):
        plan(reg, "fmnist-declared", "verification[backbone=facenet]")  # declared objects
    p = plan(reg, "faces-undeclared-by-name", "verification")  # declared faces: the face network
    assert Verification({}).backbone(reg.get("scenario", "faces-undeclared-by-name")) == "facenet"
    assert p.cells and "public" not in p.cells[0].judges[0]
    assert Verification({}).backbone(reg.get("scenario", "mnist")) == "public"  # labelled public data


def test_mllm_on_an_undeclared_scenario_is_refused_at_plan_time(reg, monkeypatch):
    monkeypatch.setenv("REINV_BENCH_MLLM_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("REINV_BENCH_MLLM_MODEL", "vl")
    with pytest.raises(ConfigError, match=r"'fmnist' does not declare.*mllm\[kind=\.\.\.\]"):
        plan(reg, "fmnist", "mllm")
    assert plan(reg, "fmnist", "mllm[kind=object]").cells
    judge = MLLMJudge({"url": "http://127.0.0.1:1/v1", "model": "vl"})
    assert _panel.QUESTIONS["object"] in judge.protocol_note(reg.get("scenario", "fmnist-declared"))


def test_the_human_page_asks_what_the_declaration_says(reg):
    rows = [SimpleNamespace(scenario="fmnist")]
    with pytest.raises(click.ClickException, match="'fmnist' does not declare"):
        human.build(rows, None, None, 1, 0, scenario_of=lambda n: reg.get("scenario", n))
    note = human.HumanJudge().protocol_note(reg.get("scenario", "fmnist-declared"))
    assert _panel.QUESTIONS["object"] in note and "digit" not in note


def test_the_dry_run_lists_the_weights_a_judge_reads(reg, monkeypatch):
    import reinv_bench.contract.weights as weights
    from reinv_bench.engine import prerequisites as doctor

    monkeypatch.setattr(weights, "best_state", lambda w: "absent")
    monkeypatch.setattr(weights, "usable", lambda state: False)
    req = Request(
        ["meanimg"],
        ["none"],
        scenarios=["faces-undeclared-by-name"],
        metrics=["attack_acc"],
        judges=["verification"],
    )
    found = [m for m in doctor.missing_prerequisites(req, reg) if "judge verification" in m.what]
    assert len(found) == 1 and "facenet-vggface2" in found[0].what and not found[0].required
    assert "without it the judge stores null" in found[0].what
    req.scenarios = ["mnist"]  # the public-data network: no weights file
    assert not [m for m in doctor.missing_prerequisites(req, reg) if "judge verification" in m.what]
