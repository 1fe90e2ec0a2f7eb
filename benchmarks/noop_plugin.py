"""No-op plugins for benchmarks/executors.py: a scenario of random 8x8 images whose recipes train
for zero epochs, a one-layer network and an attack that returns the prior unchanged, so a grid's
wall time is the driver's and executor's own overhead."""

from __future__ import annotations

import torch

from reinv_bench import hookimpl
from reinv_bench.api import (
    Architecture,
    Attack,
    Classifier,
    Inversion,
    Scenario,
    ScenarioData,
    Split,
    TrainRecipe,
)


class NoopScenario(Scenario):
    name = "noop"
    num_classes = eval_num_classes = 10
    image_shape = (1, 8, 8)
    default_arch = eval_arch = "noop"
    protocol = "noop"

    def load(self, data_root):
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(100, 1, 8, 8, generator=g) * 2 - 1, torch.arange(100) % 10
        split = Split(x, y)
        return ScenarioData(split, split, Split(x, None), split, split, "noop-data", "random")

    def recipe(self, role, budget, arch=""):
        return TrainRecipe(epochs=0)


class NoopNet(Architecture):
    name = "noop"

    def build(self, num_classes, image_shape):
        return Classifier([torch.nn.Flatten()], torch.nn.Linear(64, num_classes), 64, num_classes)


class NoopAttack(Attack):
    name = "noop"

    def prepare(self, ctx, kind):
        return {"mean": ctx.data.public.x.mean(0)}

    def invert(self, ctx, priors, classes):
        return Inversion(
            priors["noop"]["mean"].expand(len(classes), 1, 8, 8).clone(), torch.tensor(classes), {}
        )


@hookimpl
def register_datasets():
    return [NoopScenario()]


@hookimpl
def register_architectures():
    return [NoopNet()]


@hookimpl
def register_attacks():
    return [NoopAttack]
