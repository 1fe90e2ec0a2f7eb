"""Issue 30's fidelity fixes to the round-3 plugins that have no test file of their own:
``robust_acc`` on file-backed scenarios and the AutoAttack masks it reads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reinv_bench.api import EvalContext, ImageFiles, Inversion, ScenarioData, Split
from reinv_bench.registry import load
from reinv_bench.testing import make_face_tree

ta = pytest.importorskip("torchattacks", reason="robust_acc needs the [robust] extra (torchattacks)")


@pytest.fixture(scope="module")
def face_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    make_face_tree(root)
    return root


def _linear(num_classes, shape, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(shape).prod()), num_classes)).eval()


def _ctx(scenario, data, model, budget="smoke"):
    inv = Inversion(torch.zeros(1, *data.private_test.x.shape[1:]), torch.zeros(1, dtype=torch.long))
    return EvalContext(scenario, data, inv, model, model, torch.device("cpu"), budget=budget)


@pytest.mark.parametrize("name", ["celeba64", "facescrub224-ffhq"])
def test_robust_acc_runs_on_the_file_backed_face_scenarios(face_root, name):
    """Issue 30.1: the face scenarios' test split is an ``ImageFiles`` (no ``.float()``); the
    metric decodes its batches and gives what it gives on the same images held as a tensor."""
    registry = load()
    scenario = registry.get("scenario", name)
    data = scenario.load(face_root)
    test = data.private_test
    assert isinstance(test.x, ImageFiles)
    model = _linear(scenario.num_classes, test.x.shape[1:])
    metric = registry.get("metric", "robust_acc")
    out = metric.compute(_ctx(scenario, data, model))
    r = out["robust_acc"]
    assert 0 <= r.value <= 1 and len(list(r.items)) == min(64, len(test.y))
    held = ScenarioData(
        data.private_train,
        Split(test.x.to("cpu"), test.y),
        data.public,
        data.eval_train,
        data.eval_test,
        digest=data.digest,
        source=data.source,
    )
    again = metric.compute(_ctx(scenario, held, model))["robust_acc"]
    assert list(again.items) == list(r.items) and again.value == r.value
