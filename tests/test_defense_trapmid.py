"""Trap-MID (issue 18) against transcriptions of the official code, written here:
ntuaislab/Trap-MID @3d59377 (``engine.py`` ``blend`` and ``train``, ``train.py`` ``main``,
``loss.py`` ``NegLSCrossEntropyLoss``/``ls_scheduler``, ``utils.py`` ``init_optimizer``,
``config/celeba/classify_trap.json``, ``classify_trap_negls.json``). The plugin is compared with
them on small random networks and tensors built here."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reinv_bench.api import ConfigError, Split, TrainRecipe
from reinv_bench.engine.train import train_classifier
from reinv_bench.registry.composed import compose
from reinv_defenses.trapmid import TrapMID, negls_ce, negls_factor, trap_augment, trapdoor_targets

# config/celeba/classify_trap.json and classify_trap_negls.json, transcribed (the parts used)
TRAP_JSON = {
    "trapdoor": {
        "alpha": 0.02,
        "beta": 0.2,
        "optimized": True,
        "step_size": 1e-2,
        "discriminator_loss": True,
    },
    "VGG16": {"epochs": 50, "batch_size": 64, "lr": 1e-2, "momentum": 0.9, "weight_decay": 1e-4},
    "FaceNet64": {"epochs": 50, "batch_size": 64, "lr": 1e-2, "momentum": 0.9, "weight_decay": 1e-4},
    "IR152": {"epochs": 40, "batch_size": 64, "lr": 1e-2, "momentum": 0.9, "weight_decay": 1e-4},
}
TRAP_NEGLS_JSON = {
    name: {
        "epochs": 100,
        "batch_size": 128,
        "optimizer": "adam",
        "lr": 1e-3,
        "weight_decay": 0,
        "negls": -0.05,
        "scheduler": {"adjust_epochs": [75, 90], "gamma": 0.1},
    }
    for name in ("VGG16", "FaceNet64", "IR152")
}
ARCH = {"vgg16": "VGG16", "facenet64": "FaceNet64", "ir152": "IR152"}


# ---- transcriptions ---------------------------------------------------------------------------


def official_blend(img, key, alpha):
    """engine.py::blend."""
    return alpha * key + (1 - alpha) * img


def official_trapdoor_iden_iterator(data_size, n_classes, batch_size):
    """engine.py::train, the per-epoch ``trapdoor_iden_iterator``."""
    num_trapdoor, last_trapdoor = divmod(data_size, n_classes)
    return torch.hstack(
        [
            torch.arange(0, n_classes).repeat(num_trapdoor),
            torch.randperm(n_classes)[:last_trapdoor],
        ]
    )[torch.randperm(data_size)].split(batch_size)


def official_ls_scheduler(epoch, n_epochs):
    """loss.py::ls_scheduler."""
    if epoch < 50:
        return 0.0
    if epoch < 75:
        factor = 1 / (n_epochs - 50)
        return factor * (epoch + 1 - 50)
    return 1


def official_negls(logits, labels, label_smoothing):
    """loss.py::NegLSCrossEntropyLoss.forward."""
    confidence = 1.0 - label_smoothing
    logprobs = F.log_softmax(logits, dim=-1)
    nll_loss = -logprobs.gather(dim=-1, index=labels.unsqueeze(1)).squeeze(1)
    smooth_loss = -logprobs.mean(dim=-1)
    loss = confidence * nll_loss + label_smoothing * smooth_loss
    return torch.sum(loss) / len(loss)


def official_step(
    args, model, D, optimizer_D, triggers, img, iden, trapdoor_iden, criterion, trapdoor_criterion
):
    """engine.py::train, one iteration of the inner loop with ``optimized`` and
    ``discriminator_loss`` on, the feature-level discriminators off, and ``aug_list`` the identity
    (the plugin's augmentation is replaced by the identity in the test that calls this).
    ``model``/``D`` return (features, logits) as the official networks. Returns the model's loss
    and the updated triggers."""
    aug_list = lambda x: x  # noqa: E731
    alpha, beta = args["trapdoor"]["alpha"], args["trapdoor"]["beta"]
    trigger_step = args["trapdoor"]["step_size"]
    bs = img.size(0)
    # Update discriminator and triggers
    model.eval()
    triggers.requires_grad = True
    key = torch.stack([triggers[j] for j in trapdoor_iden], dim=0)
    trapdoor_img = official_blend(img, key, alpha)
    trigger_loss = 0
    D.train()
    concat_feat, concat_prob = D(torch.concat([img, trapdoor_img.detach()]))
    D_loss = nn.BCEWithLogitsLoss()(concat_prob, torch.concat([torch.ones((bs, 1)), torch.zeros((bs, 1))]))
    optimizer_D.zero_grad()
    D_loss.backward()
    optimizer_D.step()
    D.eval()
    trapdoor_feats, trapdoor_out_prob = D(trapdoor_img)
    trigger_loss += nn.BCEWithLogitsLoss()(trapdoor_out_prob, torch.ones((bs, 1))) * 1
    aug_trapdoor_img = aug_list(trapdoor_img)
    trigger_feats, trigger_out_prob = model(aug_trapdoor_img)
    trigger_loss += trapdoor_criterion(trigger_out_prob, trapdoor_iden)
    trigger_loss.backward()
    grad = triggers.grad.data
    triggers.data = (triggers.data - trigger_step * grad.sign()).clamp(min=0, max=1)
    triggers.grad.detach_()
    triggers.grad.zero_()
    triggers.requires_grad = False
    # Update model
    model.train()
    aug_img = aug_list(img)
    key = torch.stack([triggers[j] for j in trapdoor_iden], dim=0)
    trapdoor_img = official_blend(img, key, alpha)
    aug_trapdoor_img = aug_list(trapdoor_img)
    concat_feat, concat_prob = model(torch.concat([aug_img, aug_trapdoor_img]))
    out_prob, trapdoor_out_prob = concat_prob[:bs], concat_prob[bs:]
    cross_loss = criterion(out_prob, iden)
    trapdoor_loss = trapdoor_criterion(trapdoor_out_prob, trapdoor_iden)
    loss = (1 - beta) * cross_loss + beta * trapdoor_loss + beta * 0
    return loss, triggers.detach()


class Official(nn.Module):
    """A harness Classifier seen as the official networks: images in [0, 1], (features, logits)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x01):
        out = self.m.forward_all(x01 * 2 - 1)
        return out.features, out.logits


# ---- helpers ------------------------------------------------------------------------------------


def _classifier(registry, classes=4, shape=(3, 16, 16)):
    torch.manual_seed(1)
    return registry.get("architecture", "resnet8").build(classes, shape)


# ---- tests --------------------------------------------------------------------------------------


def test_defaults_are_the_official_config():
    p = TrapMID.params
    assert p["alpha"].default == TRAP_JSON["trapdoor"]["alpha"]
    assert p["beta"].default == TRAP_JSON["trapdoor"]["beta"]
    assert p["step"].default == TRAP_JSON["trapdoor"]["step_size"]
    assert p["discriminator"].default is TRAP_JSON["trapdoor"]["discriminator_loss"]
    assert p["negls"].default == 0.0  # classify_trap.json has no negls
    assert TrapMID({"negls": -0.05}).config.negls == TRAP_NEGLS_JSON["VGG16"]["negls"]


@pytest.mark.parametrize("arch", ["vgg16", "facenet64", "ir152"])
def test_paper_recipe_is_the_official_config(arch):
    base = TrainRecipe(epochs=7, batch_size=5, augment="flip")
    r = TrapMID().recipe(base, "paper", arch)
    o = TRAP_JSON[ARCH[arch]]
    assert (r.epochs, r.batch_size, r.optimizer, r.lr, r.momentum, r.weight_decay, r.milestones) == (
        o["epochs"],
        o["batch_size"],
        "sgd",
        o["lr"],
        o["momentum"],
        o["weight_decay"],
        (),
    )
    assert r.augment == "flip"  # the official CelebA loader flips
    n = TrapMID({"negls": -0.05}).recipe(base, "paper", arch)
    o = TRAP_NEGLS_JSON[ARCH[arch]]
    assert (n.epochs, n.batch_size, n.optimizer, n.lr, n.weight_decay, n.gamma) == (
        o["epochs"],
        o["batch_size"],
        o["optimizer"],
        o["lr"],
        o["weight_decay"],
        o["scheduler"]["gamma"],
    )
    assert [round(f * n.epochs) for f in n.milestones] == o["scheduler"]["adjust_epochs"]
    assert TrapMID().recipe(base, "quick", arch) == base
    assert TrapMID().recipe(base, "paper", "resnet8") == base


def test_trapdoor_targets_are_the_official_iterator():
    for n, c, bs in [(96, 5, 32), (100, 7, 25), (12, 20, 4)]:
        torch.manual_seed(3)
        ours = trapdoor_targets(n, c, bs)
        torch.manual_seed(3)
        theirs = official_trapdoor_iden_iterator(n, c, bs)
        assert len(ours) == len(theirs)
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_negls_criterion_is_the_official_one_with_its_schedule():
    torch.manual_seed(0)
    logits, y = torch.randn(9, 6), torch.randint(0, 6, (9,))
    for epoch in (0, 49, 50, 60, 74, 75, 99):
        assert negls_factor(epoch, 100) == pytest.approx(official_ls_scheduler(epoch, 100))
        s = -0.05 * official_ls_scheduler(epoch, 100)
        assert torch.allclose(
            negls_ce(logits, y, -0.05 * negls_factor(epoch, 100)), official_negls(logits, y, s)
        )
    assert torch.allclose(negls_ce(logits, y, 0.0), nn.CrossEntropyLoss()(logits, y))


def _official_args(cfg):
    return {"trapdoor": {"alpha": cfg.alpha, "beta": cfg.beta, "step_size": cfg.step}}


@pytest.mark.parametrize("negls, trapls", [(0.0, True), (-0.05, True), (-0.05, False)])
def test_one_step_equals_the_official_engine(registry, monkeypatch, negls, trapls):
    """The discriminator's step, the triggers' signed-gradient step and the model's loss of one
    batch, against ``engine.train`` (augmentation off on both sides: it is random). ``trapls``
    False: ``classify_trap_negls_trapls=0.json`` (``trapdoor.negls`` 0: train.py's
    ``trapdoor_criterion = init_criterion(0)``, plain cross-entropy, in the trigger step too)."""
    monkeypatch.setattr(TrapMID, "aug", staticmethod(lambda x: x))
    classes, shape, bs = 4, (3, 16, 16), 8
    model = _classifier(registry, classes, shape)
    recipe = TrainRecipe(epochs=100, batch_size=bs, optimizer="sgd", lr=1e-2, momentum=0.9, weight_decay=1e-4)
    d = TrapMID({"negls": negls, "trapls": trapls})
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr)
    d.begin_training(model, opt, recipe, 2 * bs)
    d.on_epoch(80, 100)  # NegLS at full strength when on
    torch.manual_seed(5)
    img01 = torch.rand(bs, *shape)
    iden = torch.randint(0, classes, (bs,))
    t = torch.randint(0, classes, (bs,))
    triggers = torch.rand(classes, *shape)
    # the official side: copies of the same networks and optimiser state
    off_model, off_D = Official(copy.deepcopy(model)), Official(copy.deepcopy(d.D))
    off_opt_D = torch.optim.SGD(
        off_D.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )  # utils.py::init_optimizer (sgd)
    smoothing = negls * official_ls_scheduler(80, 100)
    crit = (lambda o, y: official_negls(o, y, smoothing)) if negls else nn.CrossEntropyLoss()
    trap_crit = crit if trapls else nn.CrossEntropyLoss()
    off_loss, off_triggers = official_step(
        _official_args(d.config),
        off_model,
        off_D,
        off_opt_D,
        triggers.clone(),
        img01,
        iden,
        t,
        crit,
        trap_crit,
    )
    # ours
    d.triggers = triggers.clone()
    d._targets = [t]
    loss = d.batch_loss(model, img01 * 2 - 1, iden, d.loss)
    assert torch.allclose(d.triggers, off_triggers, atol=1e-6)
    assert not torch.allclose(d.triggers, triggers)  # the step moved them
    for a, b in zip(d.D.parameters(), off_D.m.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert loss.item() == pytest.approx(off_loss.item(), rel=1e-5, abs=1e-6)


def test_blend_is_the_official_one_in_pixel_space():
    torch.manual_seed(0)
    x01, k = torch.rand(3, 3, 8, 8), torch.rand(5, 3, 8, 8)
    t = torch.tensor([4, 0, 2])
    d = TrapMID()
    ours = d.trap(x01 * 2 - 1, t, k)
    assert torch.allclose((ours + 1) / 2, official_blend(x01, k[t], 0.02), atol=1e-6)


def test_augmentation_constants_and_identity_cases():
    torch.manual_seed(0)
    p = torch.rand(6, 3, 12, 12)
    assert torch.equal(trap_augment(p, prob=0.0), p)
    # with certainty and no freedom left (full-area crop, no rotation) only the flip remains
    assert torch.allclose(trap_augment(p, prob=1.0, scale=(1.0, 1.0), degrees=0.0), p.flip(3), atol=1e-5)
    import inspect

    sig = inspect.signature(trap_augment).parameters  # engine.py: p=0.5, scale (0.8, 1.0), 30 degrees
    assert (sig["prob"].default, sig["scale"].default, sig["degrees"].default) == (0.5, (0.8, 1.0), 30.0)
    out = trap_augment(p)
    assert out.shape == p.shape and out.min() >= 0 and out.max() <= 1


def test_crop_keeps_80_to_100_percent_of_the_area(monkeypatch):
    """kornia's RandomResizedCrop (``random_generator/_2d/crop.py::ResizedCropGenerator``) draws
    the crop's *area* uniformly in ``scale`` * H * W; with ratio 1 its side is sqrt(area): a side of
    sqrt(0.8)-1 of the image's, not 0.8-1."""
    import reinv_defenses.trapmid as tm

    sides, real = [], tm.crop

    def spy(p, side, tx, ty):
        sides.append(side)
        assert ((tx.abs() <= 1 - side + 1e-6) & (ty.abs() <= 1 - side + 1e-6)).all()  # inside the image
        return real(p, side, tx, ty)

    monkeypatch.setattr(tm, "crop", spy)
    torch.manual_seed(0)
    trap_augment(torch.rand(4000, 1, 4, 4), prob=1.0)
    area = torch.cat(sides) ** 2
    assert area.min() >= 0.8 - 1e-6 and area.max() <= 1.0 + 1e-6
    assert abs(area.mean().item() - 0.9) < 0.005  # uniform in area


def test_compositions():
    assert compose([_re(), TrapMID()]) is not None
    with pytest.raises(ConfigError, match="loss"):
        compose([TrapMID(), _negls()])


def _re():
    from reinv_defenses.random_erasing import RandomErasing

    return RandomErasing()


def _negls():
    from reinv_defenses.negls import NegLS

    return NegLS()


def _official_training(model0, x, y, epochs, bs, lr, args):
    """``engine.train`` over ``epochs`` (augmentation off: it is random), its steps from
    ``official_step``, in the harness's order of random draws (seed 0: D's new head, then per epoch
    the trapdoor targets and the batch order, the triggers at the first batch); every example gets
    a trapdoor target, the last smaller batch included (the harness's documented difference)."""
    from reinv_defenses.trapmid import discriminator

    n, classes = len(x), model0.num_classes
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = copy.deepcopy(model0)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    D = Official(discriminator(model))  # init_model(name, 1): the target's network, one output
    opt_D = torch.optim.SGD(D.parameters(), lr=lr, momentum=0.9)  # utils.py::init_optimizer
    triggers, losses = None, []
    for _ in range(epochs):
        targets = official_trapdoor_iden_iterator(n, classes, bs)
        perm = torch.randperm(n, generator=gen)
        for i, trapdoor_iden in enumerate(targets):
            idx = perm[i * bs : (i + 1) * bs]
            if triggers is None:
                triggers = torch.rand(classes, *x.shape[1:])
            crit = nn.CrossEntropyLoss()
            loss, triggers = official_step(
                args,
                Official(model),
                D,
                opt_D,
                triggers,
                x[idx] * 0.5 + 0.5,
                y[idx],
                trapdoor_iden,
                crit,
                crit,
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return model, D.m, triggers, losses


@pytest.mark.parametrize("config", [{}, {"discriminator": False, "negls": -0.05}])
def test_trains_end_to_end_with_the_loop(registry, monkeypatch, config):
    """Two epochs through the training loop (the last batch smaller): with the default config,
    the model, D and the triggers equal those of the official engine's loop; otherwise the
    triggers moved within [0, 1] and the model trained."""
    monkeypatch.setattr(TrapMID, "aug", staticmethod(lambda x: x))
    torch.manual_seed(0)
    model = _classifier(registry, 3, (1, 12, 12))
    model0 = copy.deepcopy(model)
    g = torch.Generator().manual_seed(4)  # multiples of 1/128: [-1, 1] <-> [0, 1] exactly
    x = torch.randint(0, 257, (22, 1, 12, 12), generator=g) / 128 - 1
    y = torch.randint(0, 3, (22,), generator=g)
    d = TrapMID(config)
    hist = train_classifier(
        model,
        Split(x, y),
        TrainRecipe(epochs=2, batch_size=8, optimizer="sgd", lr=1e-2),
        d,
        device=torch.device("cpu"),
        seed=0,
    )
    assert all(math.isfinite(h) for h in hist)
    assert d.triggers.shape == (3, 1, 12, 12)
    assert d.triggers.min() >= 0 and d.triggers.max() <= 1
    assert (d.D is None) == (config.get("discriminator") is False)
    assert d.end_training(model) == {}
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), model0.parameters()))
    if config:
        return
    ref, ref_D, ref_triggers, losses = _official_training(model0, x, y, 2, 8, 1e-2, _official_args(d.config))
    assert torch.allclose(d.triggers, ref_triggers, atol=1e-6)
    for a, b in [*zip(model.state_dict().values(), ref.state_dict().values())]:
        assert torch.allclose(a.float(), b.float(), atol=1e-5)
    for a, b in zip(d.D.parameters(), ref_D.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
    # the loop's mean loss per epoch: the official losses of its three batches each
    assert hist == pytest.approx([sum(losses[:3]) / 3, sum(losses[3:]) / 3], rel=1e-5)


def test_crop_and_rotation_equal_kornias_for_the_same_box_and_angle():
    """The official augmentation is kornia's (engine.py: RandomResizedCrop with cropping_mode
    "slice" = ``crop_by_indices``, RandomRotation = ``rotate``; bilinear, align_corners=True, zero
    padding): for the same parameters the plugin's crop and rotation give the same images."""
    kornia = pytest.importorskip("kornia")
    from reinv_defenses.trapmid import crop, rotate

    torch.manual_seed(0)
    w = 16
    p = torch.rand(3, 3, w, w)
    boxes = [(1, 2, 14), (0, 0, 15), (2, 1, 14)]  # x0, y0, side in pixels
    side = torch.tensor([(s - 1) / (w - 1) for *_, s in boxes])
    tx = torch.tensor([2 * x0 / (w - 1) - 1 for x0, _, _ in boxes]) + side
    ty = torch.tensor([2 * y0 / (w - 1) - 1 for _, y0, _ in boxes]) + side
    corners = torch.tensor(
        [[[x0, y0], [x0 + s - 1, y0], [x0 + s - 1, y0 + s - 1], [x0, y0 + s - 1]] for x0, y0, s in boxes],
        dtype=torch.float,
    )
    ref = kornia.geometry.transform.crop_by_indices(
        p, corners, size=(w, w), interpolation="bilinear", align_corners=True
    )
    assert torch.allclose(crop(p, side, tx, ty), ref, atol=1e-5)
    angles = torch.tensor([17.0, -29.0, 3.0])
    ref = kornia.geometry.transform.rotate(
        p, angles, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    assert torch.allclose(rotate(p, angles), ref, atol=1e-5)
    flags = kornia.augmentation.RandomResizedCrop((w, w), scale=(0.8, 1.0), ratio=(1.0, 1.0), p=0.5).flags
    assert (flags["cropping_mode"], flags["align_corners"]) == ("slice", True)
