"""The worst-case ensemble (``--attack auto``, issue 29 item 3): members planned as cells of their
own, a pool step over their stored reconstructions keeping candidates by the target's score only,
the permuted-identity null, "broken by", and one-line errors."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import reinv_bench
from reinv_bench import ensemble
from reinv_bench.api import ConfigError, Inversion, Param, Reconstructions, hookimpl
from reinv_bench.plan import Request, expand

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from conftest import MeanAttack  # noqa: E402


class NoisyAttack(MeanAttack):
    """A second cheap member: the mean image with seeded noise, two candidates per class (it
    makes other candidates than meanimg, some better, some worse for the target)."""

    name = "noisyimg"
    params = {**MeanAttack.params, "scale": Param(0.5, "noise std")}

    def invert(self, ctx, priors, classes):
        mean = priors["noisyimg"]["mean"]
        gen = torch.Generator().manual_seed(ctx.seed)
        y = torch.tensor(classes * 2)
        x = (mean.expand(len(y), *mean.shape) + self.config.scale * torch.randn(len(y), *mean.shape, generator=gen))
        return Inversion(x.clamp(-1, 1), y, {})

    def canary_images(self, priors, n, seed, image_shape):
        mean = priors["noisyimg"]["mean"]
        gen = torch.Generator().manual_seed(seed)
        return (mean + self.config.scale * torch.randn(n, *image_shape, generator=gen)).clamp(-1, 1)


@hookimpl
def register_attacks():
    return [NoisyAttack]


@pytest.fixture
def reg():
    import conftest
    from reinv_attacks import auto

    from reinv_bench.registry import load

    return load(extra=(conftest, sys.modules[__name__], auto))


AUTO = "auto[members=meanimg/noisyimg]"


def _req(attacks=(AUTO,), defenses=("none",), **kw):
    return Request(
        list(attacks), list(defenses), archs=["tiny"], eval_arch="tiny", budget="smoke",
        metrics=["attack_acc"], **kw
    )
