"""``atat`` and ``at`` against transcriptions of the official AT-AT code, written here (issue 18).

Source: github.com/BreuerLabs/Anti-Adversarial-Training @ec6069a, ``defenses/adversarial_train.py``
(``PGDAttack.__call__``, ``FGSM.__call__``, ``AdversarialTraining.train_one_epoch``) and
``configuration/classifier/defense/atat.yaml``, ``adversarial_train.yaml``,
``configuration/classifier/model/pretrained.yaml``.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from reinv_bench.api import ConfigError, Split, TrainRecipe
from reinv_bench.engine.train import train_classifier
from reinv_bench.registry.composed import compose

# configuration/classifier/defense/atat.yaml and adversarial_train.yaml, transcribed
ATAT_YAML = {
    "loss_weighting": {"standard": 1.0, "adversarial": 0.08},
    "targeted": True,
    "method": "pgd",
    "pgd": {"epsilon": 0.0005, "step_size": 0.0001, "iterations": 5, "random_start": True},
}
AT_YAML = {
    "loss_weighting": {"standard": 0.0, "adversarial": 1.0},
    "targeted": False,
    "method": "pgd",
    "pgd": {"epsilon": 0.01, "step_size": 0.001, "iterations": 10, "random_start": True},
}
# configuration/classifier/model/pretrained.yaml (hyper), transcribed
PRETRAINED_YAML = {
    "optimizer": "adam",
    "lr": 0.001,
    "epochs": 100,
    "batch_size": 128,
    "milestones": [75, 90],
    "gamma": 0.1,
}


class OfficialPGDAttack:
    """adversarial_train.py::PGDAttack (min_clamp -1, max_clamp 1 as the defense builds it)."""

    def __init__(
        self,
        model,
        loss_fn,
        epsilon,
        step_size,
        iterations,
        targeted,
        random_start,
        min_clamp=-1,
        max_clamp=1,
    ):
        self.model, self.loss_fn, self.epsilon, self.step_size = model, loss_fn, epsilon, step_size
        self.iterations, self.min_clamp, self.max_clamp = iterations, min_clamp, max_clamp
        self.targeted, self.random_start = targeted, random_start

    def __call__(self, images, labels):
        images = images.clone().detach()
        labels = labels.clone().detach()
        adv_images = images.clone().detach()
        if self.random_start:
            adv_images = adv_images + torch.empty_like(adv_images).uniform_(-self.epsilon, self.epsilon)
            adv_images = torch.clamp(adv_images, min=self.min_clamp, max=self.max_clamp).detach()
        for _ in range(self.iterations):
            adv_images.requires_grad = True
            outputs = self.model(adv_images)
            if self.targeted:
                cost = -self.loss_fn(outputs, labels)
            else:
                cost = self.loss_fn(outputs, labels)
            grad = torch.autograd.grad(cost, adv_images, retain_graph=False, create_graph=False)[0]
            adv_images = adv_images.detach() + self.step_size * grad.sign()
            delta = torch.clamp(adv_images - images, min=-self.epsilon, max=self.epsilon)
            adv_images = torch.clamp(images + delta, min=self.min_clamp, max=self.max_clamp).detach()
        return adv_images


def official_fgsm(model, loss_fn, epsilon, targeted, images, labels, min_clamp=-1, max_clamp=1):
    """adversarial_train.py::FGSM.__call__ (the returned images only)."""
    images = images.clone()
    images.requires_grad = True
    outputs = model(images)
    cost = -loss_fn(outputs, labels) if targeted else loss_fn(outputs, labels)
    grad = torch.autograd.grad(cost, images)[0]
    return torch.clamp(images + epsilon * grad.sign(), min_clamp, max_clamp).detach()


def official_batch_loss(model, data, target, cfg, n_classes):
    """adversarial_train.py::AdversarialTraining.train_one_epoch, one batch, up to ``loss``
    (``get_loss`` is cross-entropy for the pretrained classifier)."""
    get_loss = nn.CrossEntropyLoss()
    if cfg["loss_weighting"]["standard"]:
        output = model(data)
        loss_normal = get_loss(output, target)
    else:
        loss_normal = 0
    if cfg["targeted"]:
        attack_target = torch.randint(0, n_classes, (target.shape[0],))
        same_target = attack_target == target
        attack_target[same_target] = (attack_target[same_target] + 1) % n_classes
    else:
        attack_target = target
    p = cfg["pgd"]
    attack = OfficialPGDAttack(
        model,
        nn.CrossEntropyLoss(),
        p["epsilon"],
        p["step_size"],
        p["iterations"],
        cfg["targeted"],
        p["random_start"],
    )
    data_adv = attack(data, attack_target)
    output_adv = model(data_adv)
    loss_adv = get_loss(output_adv, attack_target if cfg["targeted"] else target)
    w = cfg["loss_weighting"]
    return w["standard"] * loss_normal + w["adversarial"] * loss_adv, data_adv


@pytest.fixture
def net(registry):
    torch.manual_seed(0)
    return registry.get("architecture", "resnet8").build(10, (1, 32, 32)).train()


def batch(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 32, 32, generator=g) * 2 - 1, torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("name, yaml", [("atat", ATAT_YAML), ("at", AT_YAML)])
def test_defaults_are_the_official_configs(registry, name, yaml):
    c = registry.get("defense", name)({}).config
    assert (c.w_std, c.w_adv) == (yaml["loss_weighting"]["standard"], yaml["loss_weighting"]["adversarial"])
    assert (c.targeted, c.method) == (yaml["targeted"], yaml["method"])
    p = yaml["pgd"]
    assert (c.eps, c.step, c.iterations, c.random_start) == (
        p["epsilon"],
        p["step_size"],
        p["iterations"],
        p["random_start"],
    )


@pytest.mark.parametrize("name, yaml", [("atat", ATAT_YAML), ("at", AT_YAML)])
def test_batch_loss_equals_the_official_training_step(registry, net, name, yaml):
    """Same seed, same model state (train mode, BatchNorm batch statistics): the same loss, the
    same adversarial images, and the same parameter gradients."""
    from reinv_defenses.atat import attack_targets

    x, y = batch()
    ref_net, our_net = copy.deepcopy(net), copy.deepcopy(net)
    torch.manual_seed(7)
    ref, ref_adv = official_batch_loss(ref_net, x, y, yaml, 10)
    ref.backward()
    defense = registry.get("defense", name)({})
    torch.manual_seed(7)
    ours = defense.batch_loss(our_net, x, y, defense.loss)
    ours.backward()
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    for a, b in zip(our_net.parameters(), ref_net.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    # BatchNorm running statistics saw the same passes (at skips the clean one, as the official code)
    for a, b in zip(our_net.buffers(), ref_net.buffers()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    eps = yaml["pgd"]["epsilon"]
    assert (ref_adv - x).abs().max() <= eps + 1e-6 and ref_adv.abs().max() <= 1
    if yaml["targeted"]:
        torch.manual_seed(3)
        t = attack_targets(y.repeat(50), 10)
        assert (t != y.repeat(50)).all() and set(t.tolist()) == set(range(10))


@pytest.mark.parametrize("targeted", [True, False])
def test_pgd_equals_the_official_pgd_attack(net, targeted):
    from reinv_defenses.atat import pgd

    x, y = batch(8, seed=2)
    net.eval()
    torch.manual_seed(5)
    ref = OfficialPGDAttack(net, nn.CrossEntropyLoss(), 0.05, 0.01, 7, targeted, True)(x, y)
    torch.manual_seed(5)
    ours = pgd(net, x, y, 0.05, 0.01, 7, targeted, True)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    assert (ours - x).abs().max() <= 0.05 + 1e-6 and not torch.equal(ours, x)


def test_fgsm_equals_the_official_fgsm(net):
    from reinv_defenses.atat import fgsm

    x, y = batch(8, seed=3)
    net.eval()
    ref = official_fgsm(net, nn.CrossEntropyLoss(), 0.03, True, x, y)
    torch.testing.assert_close(fgsm(net, x, y, 0.03, True), ref, rtol=0, atol=0)


def test_targeted_pgd_moves_towards_the_target_and_untargeted_away(net):
    from reinv_defenses.atat import pgd

    x, y = batch(32, seed=4)
    net.eval()
    t = (y + 3) % 10
    ce = nn.CrossEntropyLoss()
    with torch.no_grad():
        before_t, before_y = ce(net(x), t), ce(net(x), y)
    adv_t = pgd(net, x, t, 0.1, 0.02, 10, True, True)
    adv_u = pgd(net, x, y, 0.1, 0.02, 10, False, True)
    with torch.no_grad():
        assert ce(net(adv_t), t) < before_t
        assert ce(net(adv_u), y) > before_y


@pytest.mark.parametrize("name", ["atat", "at"])
def test_paper_budget_trains_with_the_official_schedule(registry, name):
    d = registry.get("defense", name)({})
    base = TrainRecipe(epochs=50, batch_size=64, optimizer="sgd", lr=1e-2, weight_decay=1e-4, augment="flip")
    r = d.recipe(base, "paper", "resnet18")
    h = PRETRAINED_YAML
    assert (r.optimizer, r.lr, r.epochs, r.batch_size, r.gamma) == (
        h["optimizer"],
        h["lr"],
        h["epochs"],
        h["batch_size"],
        h["gamma"],
    )
    assert [round(f * r.epochs) for f in r.milestones] == h["milestones"]
    assert r.weight_decay == 0.0 and r.augment == "flip"  # the scenario's augmentation is kept
    assert d.recipe(base, "quick", "resnet18") == base


def test_compositions(registry):
    d = lambda spec, **cfg: registry.get("defense", spec)(cfg)  # noqa: E731
    compose([d("re"), d("atat")])  # a transform and a batch loss
    compose([d("atat"), d("negls")])  # the batch loss calls the composed loss hook
    names = {e.name for e in registry.entries("defense")}
    for other in ("trapmid", "dpsgd"):  # another batch loss; DP-SGD's clipping excludes one
        if other in names:
            with pytest.raises(ConfigError, match="batch_loss"):
                compose([d(other), d("atat")])
    with pytest.raises(ConfigError, match="batch_loss"):
        compose([d("at"), d("atat")])


def test_bad_params_are_one_line_errors(registry):
    with pytest.raises(ConfigError, match="method"):
        registry.get("defense", "atat")({"method": "cw"})
    with pytest.raises(ConfigError, match="eps"):
        registry.get("defense", "atat")({"eps": -1})


def official_training(model, x, y, epochs, batch_size, lr, seed, cfg):
    """``AdversarialTraining.train_one_epoch`` for ``epochs`` with Adam(lr) (``pretrained.yaml``'s
    optimiser), its batches in the harness's order (a permutation per epoch from a generator seeded
    with ``seed``, the global generator seeded with it too); the mean loss per epoch."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))
    hist = []
    for _ in range(epochs):
        model.train()
        perm, total = torch.randperm(len(x), generator=gen), 0.0
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            optimizer.zero_grad()
            loss, _ = official_batch_loss(model, x[idx], y[idx], cfg, 10)
            loss.backward()
            optimizer.step()
            total += loss.item()
        hist.append(total / -(-len(x) // batch_size))
    return hist


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
@pytest.mark.parametrize("name, yaml", [("atat", ATAT_YAML), ("at", AT_YAML)])
def test_trains_a_target_end_to_end(registry, name, yaml):
    """Two epochs through the training loop equal the official training loop's: weights, BatchNorm
    statistics and losses (and the weights moved)."""
    torch.manual_seed(0)
    model = registry.get("architecture", "resnet8").build(10, (1, 32, 32))
    ref, start = copy.deepcopy(model), copy.deepcopy(model.state_dict())
    x, y = batch(40, seed=6)  # the last batch is smaller
    recipe = TrainRecipe(epochs=2, batch_size=16, lr=1e-3)
    hist = train_classifier(
        model, Split(x, y), recipe, registry.get("defense", name)({}), device=torch.device("cpu"), seed=0
    )
    want = official_training(ref, x, y, 2, 16, 1e-3, 0, yaml)
    assert hist == pytest.approx(want, rel=1e-5)
    for (k, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
    assert any(not torch.equal(v, start[k]) for k, v in model.state_dict().items() if v.is_floating_point())
