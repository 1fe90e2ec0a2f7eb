"""Shared fixtures: a tiny in-test attack plugin, and hermetic registries and workdirs."""

from __future__ import annotations

import pytest
import torch

from reinv_bench import hookimpl
from reinv_bench.api import Attack, Inversion, Param


class MeanAttack(Attack):
    """A test attack: the prior is the mean public image; inversion nudges it towards each class
    with a few gradient steps on the target's cross-entropy. Fast and deterministic."""

    name = "meanimg"
    prior_params = ("blur",)
    params = {"blur": Param(0, "unused prior parameter"), "steps": Param(3, "gradient steps")}

    def prepare(self, ctx, kind):
        return {"mean": ctx.data.public.x.mean(0)}

    def invert(self, ctx, priors, classes):
        prior = priors["meanimg"]
        x = prior["mean"].expand(len(classes), *prior["mean"].shape).clone().to(ctx.device).requires_grad_(True)
        y = torch.tensor(classes, device=ctx.device)
        for _ in range(self.config.steps):
            loss = torch.nn.functional.cross_entropy(ctx.target(x), y)
            (g,) = torch.autograd.grad(loss, x)
            x = (x - 0.1 * g.sign()).clamp(-1, 1).detach().requires_grad_(True)
        return Inversion(x.detach().cpu(), y.cpu(), {"queries": self.config.steps * len(classes)})


class TestPlugin:
    @hookimpl
    def register_attacks(self):
        return [MeanAttack]


@pytest.fixture
def registry():
    from reinv_bench.registry import load

    return load(extra=(TestPlugin(),))


@pytest.fixture
def workdir(tmp_path):
    return tmp_path / "work"
