"""``transfer+ATTACK``: invert surrogates distilled from the target, never the target's gradient."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import reinv_attacks.adaptive as adaptive_module
import reinv_attacks.transfer as transfer_module
from reinv_attacks.gmi import GMI
from reinv_attacks.lomma import LOMMA
from reinv_attacks.transfer import Surrogates, Transfer
from reinv_bench.api import AttackContext, Classifier, ConfigError, Split
from reinv_bench.engine.plan import Request, expand
from reinv_bench.registry.lookup import load

CPU = torch.device("cpu")


class NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("the target's gradient was taken")


class Guarded(nn.Module):
    def forward(self, x):
        return NoBackward.apply(x)


def registry():
    reg = load()
    mods = [
        m
        for m, n in ((adaptive_module, "adaptive"), (transfer_module, "transfer"))
        if n not in reg.names("attack")
    ]
    return load(extra=tuple(mods)) if mods else reg


@pytest.fixture(scope="module")
def setting():
    reg = load()
    scenario = reg.get("scenario", "mnist")
    data = scenario.load(None)
    data = dataclasses.replace(data, public=Split(data.public.x[:128], None))
    torch.manual_seed(1)
    net = reg.get("architecture", "cnn").build(10, scenario.image_shape)
    # the target's logits pass through a layer whose backward raises
    T = Classifier(list(net.blocks), nn.Sequential(net.head, Guarded()), net.feature_dim, 10)
    T = T.eval().requires_grad_(False)
    ctx = AttackContext(scenario, data, T, CPU, 0, architecture=lambda n: reg.get("architecture", n))
    gmi = GMI({"gan_steps": 5, "gan_batch": 16, "iters": 5}, "smoke")
    priors = {s.kind: gmi.prepare(ctx, s.kind) for s in gmi.priors()}
    return ctx, gmi, priors


def test_the_guard_raises_on_the_plain_attack(setting):
    ctx, gmi, priors = setting
    with pytest.raises(RuntimeError, match="gradient was taken"):
        gmi.invert(ctx, priors, [0, 3])


def test_transfer_never_takes_the_targets_gradient(setting):
    ctx, gmi, priors = setting
    tr = Transfer({}, "smoke", base=gmi)
    priors = {**priors, **{s.kind: tr.prepare(ctx, s.kind) for s in tr.priors() if s.kind not in priors}}
    inv = tr.invert(ctx, priors, [0, 3])
    assert inv.images.shape == (4, 1, 32, 32) and torch.isfinite(inv.images).all()
    assert inv.info["transfer_students"] == 1


def test_surrogates_are_lommas_augmented_models_and_share_their_prior():
    gmi = GMI({}, "paper")
    tr, lo = Transfer({}, "paper", base=gmi), LOMMA({}, "paper", base=gmi)
    assert [s for s in tr.priors() if s.kind == "lomma-students"] == [
        s for s in lo.priors() if s.kind == "lomma-students"
    ]
    assert tr.config.students == "efficientnet_b0/efficientnet_b1/efficientnet_b2"
    assert Transfer({}, "smoke", base=gmi).config.students == "cnn"


def test_surrogates_average_the_students_logits():
    a, b = nn.Linear(2, 3), nn.Linear(2, 3)
    x = torch.randn(4, 2)
    s = Surrogates([a, b])
    assert torch.allclose(s(x), (a(x) + b(x)) / 2) and torch.equal(s.forward_all(x).logits, s(x))


def test_transfer_identity_is_the_mean_of_the_bases_term_over_the_students(setting, monkeypatch):
    ctx, gmi, priors = setting
    tr = Transfer({}, "smoke", base=gmi)
    seen = {}

    def fake_invert(c, p, classes, identity=None):
        seen["target"], seen["identity"] = c.target, identity
        return GMI.invert(gmi, c, p, classes, identity)

    monkeypatch.setattr(gmi, "invert", fake_invert)
    students = [nn.Sequential(nn.Flatten(), nn.Linear(1024, 10)) for _ in range(2)]
    monkeypatch.setattr(transfer_module, "load_students", lambda c, p: students)
    tr.invert(ctx, {**priors, "lomma-students": {}}, [0])
    x, y = torch.rand(2, 1, 32, 32), torch.tensor([0, 5])
    want = sum(nn.functional.cross_entropy(s(x), y, reduction="none") for s in students) / 2
    assert torch.allclose(seen["identity"].loss(x, y), want)
    assert isinstance(seen["target"], Surrogates)


def test_transfer_on_an_attack_without_identity_loss_is_one_line():
    with pytest.raises(ConfigError) as e:
        expand(Request(["transfer+brepmi"], ["none"], budget="smoke"), registry())
    assert "\n" not in str(e.value)
    assert expand(Request(["transfer+gmi"], ["none"], budget="smoke"), registry()).cells
