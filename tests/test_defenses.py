"""Defense plugins against hand-computed values on tiny tensors, and their training wiring."""

import math

import pytest
import torch
import torch.nn.functional as F

from reinv_bench.api import ConfigError, Split, TrainRecipe
from reinv_bench.engine.plan import Request, expand
from reinv_bench.engine.runner import Runner
from reinv_bench.engine.train import train_classifier
from reinv_bench.registry.composed import compose
from reinv_bench.registry.lookup import load
from reinv_bench.results.store import Store
from reinv_defenses.bido import coco_normalized_cca, hsic_normalized_cca, kernel
from reinv_defenses.mid import VIBHead, vib_kl
from reinv_defenses.negls import alpha_at, smoothed_ce

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def reg():
    return load()


def _model(reg, arch="cnn", classes=10):
    torch.manual_seed(0)
    return reg.get("architecture", arch).build(classes, (1, 32, 32))


# ---- MID ------------------------------------------------------------------------------------


def test_mid_kl_matches_the_closed_form():
    mu = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    std = torch.tensor([[1.0, 0.5], [2.0, 1.0]])
    # per dim: 0.5 * (mu^2 + std^2 - 1 - 2 log std)
    per = 0.5 * (mu**2 + std**2 - 1 - 2 * std.log())
    assert vib_kl(mu, std).item() == pytest.approx(per.sum(1).mean().item())
    assert vib_kl(torch.zeros(3, 4), torch.ones(3, 4)).item() == pytest.approx(0.0)


def test_mid_bottleneck_is_stochastic_in_training_and_at_test(reg):
    model = reg.get("defense", "mid")({}).wrap_model(_model(reg))
    assert isinstance(model.head, VIBHead) and model.head.k == 128  # half of cnn's 256-d features
    x = torch.randn(4, 1, 32, 32)
    model.eval()
    assert not torch.equal(model(x), model(x))  # the official models sample at test time too
    model.train()
    a, b = model.forward_all(x), model.forward_all(x)
    assert not torch.equal(a.logits, b.logits)
    assert torch.allclose(a.extras["std"], F.softplus(model.head.st_layer(a.features)[:, 128:] - 5))


def test_mid_loss_is_ce_plus_beta_kl(reg):
    mid = reg.get("defense", "mid")({"beta": "0.5"})
    model = mid.wrap_model(_model(reg)).train()
    x, y = torch.randn(4, 1, 32, 32), torch.tensor([0, 1, 2, 3])
    out = model.forward_all(x)
    want = F.cross_entropy(out.logits, y) + 0.5 * vib_kl(out.extras["mu"], out.extras["std"])
    assert mid.loss(out, x, y).item() == pytest.approx(want.item())


# ---- BiDO -----------------------------------------------------------------------------------


def test_hsic_matches_a_hand_computation():
    torch.manual_seed(0)
    x, y = torch.randn(6, 3).double(), torch.randn(6, 2).double()
    m = 6
    H = torch.eye(m).double() - 1 / m

    def gauss(a):
        d = ((a[:, None] - a[None]) ** 2).sum(-1)
        return torch.exp(-d / (2 * 25 * a.shape[1])) @ H

    def R(K):
        return K @ torch.linalg.inv(K + 1e-5 * m * torch.eye(m).double())

    want = (R(gauss(x)) * R(gauss(y)).T).sum()
    assert hsic_normalized_cca(x, y, 5.0).item() == pytest.approx(want.item(), rel=1e-4)


def test_hsic_is_larger_for_dependent_than_for_independent_inputs():
    torch.manual_seed(0)
    for scale in (0.1, 1.0):
        x = torch.randn(64, 10) * scale
        indep = hsic_normalized_cca(x, torch.randn(64, 10) * scale, 5.0)
        assert hsic_normalized_cca(x, x, 5.0) > 1.5 * indep
        assert hsic_normalized_cca(x, 2 * x + 0.01 * torch.randn_like(x), 5.0) > 1.5 * indep
        assert hsic_normalized_cca(x, torch.ones(64, 3), 5.0) == pytest.approx(
            0.0, abs=1e-6
        )  # no information
        assert coco_normalized_cca(x, x) > coco_normalized_cca(x, torch.randn(64, 10) * scale)


def test_linear_label_kernel():
    y = F.one_hot(torch.tensor([0, 1, 1]), 2).float()
    K = kernel(y, 5.0, "linear")
    assert torch.allclose(K.float(), (y @ y.T) @ (torch.eye(3) - 1 / 3))


def test_bido_loss_sign_and_hidden_blocks(reg):
    bido = reg.get("defense", "bido")({"a1": "1.0", "a2": "0.0"})
    model = _model(reg).train()
    x, y = torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,))
    out = model.forward_all(x, hidden=True)
    ce = F.cross_entropy(out.logits, y)
    layers = out.hidden[:-2] + out.hidden[-1:]  # all but the block the penultimate feature is made from
    dx = sum(hsic_normalized_cca(z, x * 0.5 + 0.5) for z in layers)  # X in [0, 1]
    assert bido.loss(out, x, y).item() == pytest.approx((ce + dx).item(), rel=1e-5)
    minus = reg.get("defense", "bido")({"a1": "0", "a2": "1"})
    onehot = F.one_hot(y, 10).float()
    dy = sum(hsic_normalized_cca(z, onehot, 5.0, "linear") for z in layers)
    assert minus.loss(out, x, y).item() == pytest.approx((ce - dy).item(), rel=1e-5)
    with pytest.raises(ConfigError, match="must be one of hsic, coco"):
        reg.get("defense", "bido")({"measure": "cka"})


# ---- NegLS ----------------------------------------------------------------------------------


def test_negls_loss_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    y = torch.tensor([0])
    logp = torch.log_softmax(logits, 1)[0]
    want = (1 + 0.05) * -logp[0] + (-0.05) * -logp.mean()
    assert smoothed_ce(logits, y, -0.05).item() == pytest.approx(want.item())
    assert smoothed_ce(logits, y, 0.0).item() == pytest.approx(F.cross_entropy(logits, y).item())


def test_negls_schedule_matches_the_official_at_100_epochs():
    a = -0.05
    assert alpha_at(a, 0, 100) == 0 and alpha_at(a, 49, 100) == 0
    assert alpha_at(a, 50, 100) == pytest.approx(a * 1 / 50)
    assert alpha_at(a, 74, 100) == pytest.approx(a * 25 / 50)  # alpha/2, then the jump
    assert alpha_at(a, 75, 100) == a and alpha_at(a, 99, 100) == a
    assert alpha_at(a, 3, 8) == 0 and alpha_at(a, 4, 8) == pytest.approx(a * 1 / 4) and alpha_at(a, 6, 8) == a


# ---- TL -------------------------------------------------------------------------------------


def test_tl_freezes_exactly_the_declared_blocks(reg):
    tl = reg.get("defense", "tl")({})
    model = _model(reg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = Split(torch.randn(32, 1, 32, 32), torch.randint(0, 10, (32,)))
    train_classifier(model, data, TrainRecipe(epochs=1, batch_size=16, lr=1e-2), tl, device=CPU, seed=0)
    assert model.freeze_point == 2
    for name, p in model.named_parameters():
        frozen = name.startswith(("blocks.0.", "blocks.1."))
        assert p.requires_grad is not frozen, name
        assert (p.grad is None) is frozen, name
        assert torch.equal(p.detach(), before[name]) is frozen, name


def test_tl_pretrains_once_per_arch_and_loads_local_weights(reg, tmp_path):
    plan = expand(Request(["gmi"], ["tl"], budget="smoke", seeds=2), reg)
    kinds = [s.kind for s in plan.steps.values()]
    assert kinds.count("pretrain") == 1
    weights = tmp_path / "w.pt"
    torch.save(_model(reg).state_dict(), weights)
    plan = expand(Request(["gmi"], [f"tl[weights={weights}]"], budget="smoke"), reg)
    target = next(s for s in plan.steps.values() if s.kind == "target" and s.spec["init"])
    assert target.spec["init"]["sha256"] and "pretrain" not in [s.kind for s in plan.steps.values()]
    with pytest.raises(ConfigError, match="neither a file nor a weights name"):
        expand(Request(["gmi"], ["tl[weights=/no/such.pt]"], budget="smoke"), reg)


# ---- RE ablation and composition ------------------------------------------------------------


def test_re_fixed_location_always_erases_the_same_pixels(reg):
    re = reg.get("defense", "re")({"location": "fixed"})
    x = torch.full((50, 1, 32, 32), -1.0)
    masks = re.train_transform(x) != x
    assert masks.any() and (masks == masks[0]).all()
    side = round(math.sqrt(0.25 * 1024))
    assert masks[0].sum() == side * side


def test_composition_applies_both_and_rejects_conflicts(reg):
    re, bido, mid, negls = (reg.get("defense", n)({}) for n in ("re", "bido", "mid", "negls"))
    both = compose([re, bido])
    assert both.needs_hidden
    x = torch.full((4, 1, 32, 32), -1.0)
    assert (both.train_transform(x) != x).any()  # RE's transform
    model = _model(reg).train()
    out = model.forward_all(x, hidden=True)
    y = torch.tensor([0, 1, 2, 3])
    assert both.loss(out, x, y).item() == pytest.approx(bido.loss(out, x, y).item())  # BiDO's loss
    with pytest.raises(ConfigError, match="cannot compose bido \\+ negls.*loss"):
        compose([bido, negls])
    with pytest.raises(ConfigError, match="cannot compose mid \\+ negls"):
        compose([mid, negls])


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_every_defense_trains_a_target_on_the_smoke_budget(reg, tmp_path):
    defenses = [
        "none",
        "re",
        "mid",
        "bido",
        "negls",
        "tl",
        "re+bido",
        "re[location=fixed]",
        "bido[measure=coco]",
    ]
    plan = expand(Request(["gmi"], defenses, budget="smoke", metrics=["natural_acc", "attack_acc"]), reg)
    store = Store(tmp_path / "results.db")
    Runner(reg, tmp_path, CPU).run(plan, store)
    rows = {r["defense"]: r for r in store.rows()}
    assert set(rows) == set(defenses)
    for name, r in rows.items():
        assert r["status"] == "ok", (name, r["error"])
        assert 0 <= r["metrics"]["natural_acc"] <= 1
    assert [d["name"] for d in rows["re+bido"]["config"]["defense"]] == ["re", "bido"]
    from reinv_bench.results.aggregate import aggregate, declared_columns

    board = {e["defense"]: e for e in aggregate(store.rows(), columns=declared_columns(load()))}
    assert set(board) == set(defenses)
    for e in board.values():  # every defense is compared with the undefended baseline
        assert e["d_natural_acc"] == pytest.approx(e["natural_acc"] - board["none"]["natural_acc"])
        assert e["d_attack_acc"] == pytest.approx(e["attack_acc"] - board["none"]["attack_acc"])


def test_recipe_augmentations_act_per_image_and_stay_in_range():
    import colorsys

    from reinv_bench.engine.train import _shift_hue, augment

    x = torch.rand(64, 3, 16, 16) * 2 - 1
    g = torch.Generator().manual_seed(0)
    assert augment(x, "", g) is x
    flipped = augment(x, "flip", g)
    same = (flipped == x).flatten(1).all(1)
    mirrored = (flipped == x.flip(3)).flatten(1).all(1)
    assert (same | mirrored).all() and 10 < mirrored.sum() < 54  # about half, image by image
    out = augment(x, "ppa", torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    assert not torch.equal(out, augment(x, "ppa", torch.Generator().manual_seed(2)))
    # the hue rotation is the HSV one (colorsys), per image
    p, h = torch.rand(2, 3, 2, 2), torch.tensor([0.07, -0.1])
    rot = _shift_hue(p, h)
    for n in range(2):
        hh, ss, vv = colorsys.rgb_to_hsv(*p[n, :, 1, 0].tolist())
        assert rot[n, :, 1, 0].tolist() == pytest.approx(
            colorsys.hsv_to_rgb((hh + h[n].item()) % 1, ss, vv), abs=1e-5
        )
    with pytest.raises(ValueError, match="unknown augmentation 'jitter'"):
        augment(x, "jitter", g)
