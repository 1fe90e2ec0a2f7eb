"""The feature-space metrics (issue 19; MIDRE's analysis) on constructed features with known
distances: a target whose penultimate features are its 2-D inputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from reinv_bench.api import Defense, EvalContext, Inversion, Split
from reinv_bench.contract.data import ScenarioData
from reinv_bench.contract.models import Classifier
from reinv_metrics.feature_space import FeatureSpace, distances_to_class, separation

# class 0 at (0,0), (2,0): centroid (1,0), spread 1; class 1 at (10,0), (12,0): centroid (11,0), spread 1;
# class 2 at (0,10), (0,14): centroid (0,12), spread 2
PRIV_X = torch.tensor([[0.0, 0], [2, 0], [10, 0], [12, 0], [0, 10], [0, 14]])
PRIV_Y = torch.tensor([0, 0, 1, 1, 2, 2])


def identity_target() -> Classifier:
    return Classifier([nn.Flatten()], nn.Linear(2, 3), feature_dim=2, num_classes=3)


class Shift(Defense):
    """A defense whose training transform moves every image by (0, 3)."""

    name = "shift"

    def train_transform(self, x):
        return x + torch.tensor([0.0, 3.0])


def context(recon_x, recon_y, defense=None) -> EvalContext:
    priv = Split(PRIV_X, PRIV_Y)
    data = ScenarioData(priv, priv, priv, priv, priv, digest="d", source="constructed")
    model = identity_target()
    return EvalContext(
        None, data, Inversion(recon_x, recon_y), model, model, torch.device("cpu"), defense=defense
    )


def test_distances_are_normalised_by_the_class_spread():
    nearest, centroid = distances_to_class(
        torch.tensor([[1.0, 3.0], [0.0, 13.0]]), torch.tensor([0, 2]), PRIV_X, PRIV_Y
    )
    # (1,3): nearest (0,0) or (2,0) at sqrt(10), spread 1; centroid (1,0) at 3
    # (0,13): nearest (0,14) at 1, spread 2 -> 0.5; centroid (0,12) at 1 -> 0.5
    assert nearest.tolist() == pytest.approx([math.sqrt(10), 0.5])
    assert centroid.tolist() == pytest.approx([3.0, 0.5])


def test_separation_is_the_margin_to_the_nearest_other_centroid():
    sep = separation(PRIV_X, PRIV_Y)
    # (0,0): own centroid at 1, nearest other: (0,12) at 12 (vs (11,0) at 11 -> 11); margin 10 / 1
    # (2,0): own 1, (11,0) at 9 -> 8; (10,0): own 1, (1,0) at 9 -> 8; (12,0): own 1, (1,0) at 11 -> 10
    # (0,10): own 2, (1,0) at sqrt(101); (0,14): own 2, (1,0) at sqrt(197); spread 2
    expected = [10.0, 8.0, 8.0, 10.0, (math.sqrt(101) - 2) / 2, (math.sqrt(197) - 2) / 2]
    assert sep.tolist() == pytest.approx(expected)


def test_metric_reports_private_and_defended_distances():
    recon = torch.tensor([[1.0, 3.0], [11.0, 0.0]])
    out = FeatureSpace().compute(context(recon, torch.tensor([0, 1]), Shift()))
    assert out["feat_nn_priv"].items == pytest.approx([math.sqrt(10), 1.0], rel=1e-5)
    assert out["feat_centroid_priv"].items == pytest.approx([3.0, 0.0])
    # the shifted private images of class 0 sit at (0,3), (2,3): (1,3) is 1 from each, centroid 0;
    # class 1's at (10,3), (12,3): (11,0) is sqrt(10) from each, 3 from their centroid (11,3)
    assert out["feat_nn_defended"].items == pytest.approx([1.0, math.sqrt(10)], rel=1e-5)
    assert out["feat_centroid_defended"].items == pytest.approx([0.0, 3.0])
    assert out["feat_separation"].value == pytest.approx(separation(PRIV_X, PRIV_Y).mean().item())
    assert list(out["feat_separation"].classes) == PRIV_Y.tolist()


@pytest.mark.parametrize("defense", [None, Defense()])
def test_without_a_training_transform_the_defended_distances_are_null_with_the_reason(defense):
    out = FeatureSpace().compute(context(torch.tensor([[1.0, 3.0]]), torch.tensor([0]), defense))
    assert "no training transform" in out["feat_nn_defended"].reason
    assert "no training transform" in out["feat_centroid_defended"].reason
    assert out["feat_nn_priv"].value == pytest.approx(math.sqrt(10))


def test_random_erasing_is_the_transform_of_re(registry):
    """``re`` changes images: its erased private images give other distances than the clean ones."""
    from reinv_bench.registry.composed import compose

    re = registry.get("defense", "re")({})
    assert re.transforms_images() and compose([registry.get("defense", "negls")({}), re]).transforms_images()
    assert not registry.get("defense", "mid")({}).transforms_images()
