"""PPDG-MI (``ppdg+gmi``, ``ppdg+kedmi``) against transcriptions of its official code.

Sources (tmlr-group/PPDG-MI @b8e73b6, read 2026-12):
- ``low_resolution/utils.py::scores_by_transform``, ``perform_final_selection``, ``gradient_penalty``
  (the pseudo-private selection and its transforms);
- ``low_resolution/whitebox_recovery.py`` (``samples_per_target = num_candidates // 2``,
  ``--num_round``, ``--num_epoch`` = 10);
- ``low_resolution/engine.py::tune_general_gan`` (gmi) and ``tune_specific_gan`` (kedmi), with
  ``config/celeba/training_GAN/{general,specific}_gan/celeba.json`` (lr 2e-4, batch 64,
  n_critic 5).
The official DataLoaders (``shuffle=True``) are transcribed with their permutation drawn
explicitly from one generator, one per loader and epoch in the order the loaders are first read.
"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as transforms
from torch import nn
from torch.autograd import grad

from reinv_attacks._gan import Critic, Generator, frozen, wgan_gp_losses
from reinv_attacks.gmi import GMI
from reinv_attacks.kedmi import KEDMI, KDiscriminator
from reinv_attacks.lomma import LOMMA
from reinv_attacks.ppdg import (
    PPDG,
    TUNED,
    fine_tune,
    kedmi_losses,
    select,
    selection_scores,
)
from reinv_bench.api import AttackContext, ConfigError, Split
from reinv_bench.engine.plan import Request, expand
from reinv_bench.registry.lookup import load

CPU = torch.device("cpu")
SHAPE = (1, 32, 32)


# ---- transcriptions of the official code ------------------------------------------------------


def official_transformation(size):  # utils.py::perform_final_selection (64 -> the test's size)
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(size=(size, size), scale=(0.8, 1.0), ratio=(1.0, 1.0)),
            transforms.ColorJitter(brightness=0.2, contrast=0.2),
            transforms.RandomHorizontalFlip(0.5),
            transforms.RandomRotation(5),
        ]
    )


def official_scores_by_transform(imgs, targets, target_model, transforms, iterations=100):  # utils.py
    score = torch.zeros_like(targets, dtype=torch.float32).to(imgs.device)
    with torch.no_grad():
        for _ in range(iterations):
            imgs_transformed = transforms(imgs)
            output = target_model(imgs_transformed)
            if type(output) is tuple:
                output = target_model(imgs_transformed)[1]
            prediction_vector = output.softmax(dim=1)
            score += torch.gather(prediction_vector, 1, targets.unsqueeze(1)).squeeze()
        score = score / iterations
    return score


def official_selection(candidates, target, T, num_candidates, size, batch_size=100):
    """perform_final_selection for one target, on the generator's [0, 1] images, and
    whitebox_recovery's ``final_z[:samples_per_target]`` with samples_per_target = num_candidates // 2."""
    targets = torch.full((len(candidates),), target)
    scores = []
    for i in range(0, len(candidates), batch_size):
        imgs, t = candidates[i : i + batch_size], targets[i : i + batch_size]
        scores.append(official_scores_by_transform(imgs, t, T, official_transformation(size)))
    scores = torch.cat(scores, dim=0)
    indices = torch.sort(scores, descending=True).indices
    return indices[: num_candidates // 2], scores


def official_gradient_penalty(x, y, DG):  # utils.py::gradient_penalty (.cuda() dropped)
    shape = [x.size(0)] + [1] * (x.dim() - 1)
    alpha = torch.rand(shape)
    z = x + alpha * (y - x)
    z.requires_grad = True
    o = DG(z)
    g = grad(o, z, grad_outputs=torch.ones(o.size()), create_graph=True)[0].view(z.size(0), -1)
    return ((g.norm(p=2, dim=1) - 1) ** 2).mean()


def toogle_grad(model, flag=True):  # utils.py::toogle_grad
    for p in model.parameters():
        p.requires_grad = flag


def loader(data, batch_size, gen):
    """DataLoader(data, batch_size, shuffle=True) for one epoch, its permutation from ``gen``."""
    perm = torch.randperm(len(data), generator=gen)
    return iter([data[perm[i : i + batch_size]] for i in range(0, len(data), batch_size)])


def official_tune_general_gan(generator, discriminator, combined, epochs, gen):  # engine.py
    lr, batch_size, z_dim, n_critic = 0.0002, 64, 100, 5  # general_gan/celeba.json
    toogle_grad(generator, True)
    toogle_grad(discriminator, True)
    dg_optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=lr, betas=(0.5, 0.999))
    step = 0
    for _epoch in range(epochs):
        for _i, imgs in enumerate(loader(combined, batch_size, gen)):
            step += 1
            bs = imgs.size(0)
            toogle_grad(generator, False)
            toogle_grad(discriminator, True)
            z = torch.randn(bs, z_dim)
            f_imgs = generator(z)
            r_logit = discriminator(imgs)
            f_logit = discriminator(f_imgs)
            wd = r_logit.mean() - f_logit.mean()  # Wasserstein-1 Distance
            gp = official_gradient_penalty(imgs.data, f_imgs.data, DG=discriminator)
            dg_loss = -wd + gp * 10.0
            dg_optimizer.zero_grad()
            dg_loss.backward()
            dg_optimizer.step()
            if step % n_critic == 0:
                toogle_grad(discriminator, False)
                toogle_grad(generator, True)
                z = torch.randn(bs, z_dim)
                f_imgs = generator(z)
                logit_dg = discriminator(f_imgs)
                g_loss = -logit_dg.mean()
                g_optimizer.zero_grad()
                g_loss.backward()
                g_optimizer.step()
    return generator, discriminator


def log_sum_exp(x, axis=1):  # utils.py::log_sum_exp
    m = torch.max(x, dim=1)[0]
    return m + torch.log(torch.sum(torch.exp(x - m.unsqueeze(1)), dim=axis))


def softXEnt(input, target):  # utils.py::softXEnt
    targetprobs = nn.functional.softmax(target, dim=1)
    logprobs = nn.functional.log_softmax(input, dim=1)
    return -(targetprobs * logprobs).sum() / input.shape[0]


def HLoss(x):  # utils.py::HLoss.forward
    b = F.softmax(x, dim=1) * F.log_softmax(x, dim=1)
    return -1.0 * b.sum()


def official_tune_specific_gan(generator, discriminator, T, combined, epochs, gen):  # engine.py
    lr, batch_size, z_dim, n_critic = 0.0002, 64, 100, 5  # specific_gan/celeba.json, "VGG16"
    toogle_grad(generator, True)
    toogle_grad(discriminator, True)
    dg_optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=lr, betas=(0.5, 0.999))
    step = 0
    for _epoch in range(epochs):
        # the three loaders' permutations, in the order they are first read
        combined_loader = loader(combined, batch_size, gen)
        unlabel_loader1 = loader(combined, batch_size, gen)
        unlabel_loader2 = loader(combined, batch_size, gen)
        for _i, imgs in enumerate(combined_loader):
            step += 1
            bs = imgs.size(0)
            x_unlabel = next(unlabel_loader1)
            x_unlabel2 = next(unlabel_loader2)
            toogle_grad(generator, False)
            toogle_grad(discriminator, True)
            z = torch.randn(bs, z_dim)
            f_imgs = generator(z)
            y_prob = T(imgs)  # the official T returns (feature, logits): [-1]
            _, output_label = discriminator(imgs)
            _, output_unlabel = discriminator(x_unlabel)
            _, output_fake = discriminator(f_imgs)
            loss_lab = softXEnt(output_label, y_prob)
            loss_unlab = 0.5 * (
                torch.mean(F.softplus(log_sum_exp(output_unlabel)))
                - torch.mean(log_sum_exp(output_unlabel))
                + torch.mean(F.softplus(log_sum_exp(output_fake)))
            )
            dg_loss = loss_lab + loss_unlab
            dg_optimizer.zero_grad()
            dg_loss.backward()
            dg_optimizer.step()
            if step % n_critic == 0:
                toogle_grad(discriminator, False)
                toogle_grad(generator, True)
                z = torch.randn(bs, z_dim)
                f_imgs = generator(z)
                mom_gen, output_fake = discriminator(f_imgs)
                mom_unlabel, _ = discriminator(x_unlabel2)
                mom_gen = torch.mean(mom_gen, dim=0)
                mom_unlabel = torch.mean(mom_unlabel, dim=0)
                Hloss = HLoss(output_fake)
                g_loss = torch.mean((mom_gen - mom_unlabel).abs()) + 1e-4 * Hloss
                g_optimizer.zero_grad()
                g_loss.backward()
                g_optimizer.step()
    return generator, discriminator


# ---- helpers -----------------------------------------------------------------------------------


def _target():
    torch.manual_seed(1)
    return load().get("architecture", "cnn").build(10, SHAPE).eval().requires_grad_(False)


def _ppdg(base, **cfg) -> PPDG:
    return PPDG(cfg, "paper", base=base)


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(
        torch.allclose(x, y, atol=1e-5) for x, y in zip(a.state_dict().values(), b.state_dict().values())
    )


# ---- the selection -----------------------------------------------------------------------------


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_selection_is_perform_final_selection():
    """Scores and pick equal the official ones on the same random draws; images in [-1, 1] here,
    [0, 1] (the official sigmoid generator) there, the target reading [-1, 1]."""
    T = _target()
    x = torch.rand(130, *SHAPE) * 2 - 1  # two selection batches (100 + 30), as the official loader
    torch.manual_seed(5)
    ours = selection_scores(T, x, 3, iters=100, device=CPU)
    pick = select(ours, 0.5)
    torch.manual_seed(5)
    official, scores = official_selection(x * 0.5 + 0.5, 3, lambda p: T((p - 0.5) / 0.5), 130, SHAPE[-1])
    assert torch.allclose(ours, scores, atol=1e-6)
    assert pick.tolist() == official.tolist() and len(pick) == 65
    assert PPDG.params["keep"].default == 0.5 and PPDG.params["select_iters"].default == 100


def test_selection_keeps_at_least_one():
    assert select(torch.tensor([0.1, 0.9, 0.5]), 0.5).tolist() == [1]
    assert select(torch.tensor([0.2]), 0.5).tolist() == [0]


# ---- the fine-tuning objectives ----------------------------------------------------------------


@pytest.mark.parametrize("epochs", [2])
def test_gmi_fine_tune_is_tune_general_gan(epochs):
    torch.manual_seed(0)
    G0, D0 = Generator(SHAPE, 100, 8), Critic(SHAPE, 8)
    G0.eval(), D0.eval()  # as the official attack leaves them; the fine-tune never calls train()
    data = torch.rand(140, *SHAPE) * 2 - 1  # public + pseudo-private: 3 batches, the last of 12
    G1, D1 = (
        frozen(Generator(SHAPE, 100, 8), G0.state_dict(), CPU),
        frozen(Critic(SHAPE, 8), D0.state_dict(), CPU),
    )
    c = _ppdg(GMI({}, "paper"), tune_epochs=float(epochs)).config

    torch.manual_seed(7)
    fine_tune(G1, D1, wgan_gp_losses(G1, D1, 100, c.gp, CPU), data, 1, c, seed=11, device=CPU)
    torch.manual_seed(7)
    official_tune_general_gan(G0, D0, data, epochs, torch.Generator().manual_seed(11))
    assert _same(G0, G1) and _same(D0, D1)
    assert not G1.training and not any(p.requires_grad for p in G1.parameters())


@pytest.fixture
def float64():
    """Float64: the convolution biases before InstanceNorm get (analytically zero) rounding-noise
    gradients, which Adam blows up to steps of ~lr in float32 in whichever order they are summed."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def test_kedmi_fine_tune_is_tune_specific_gan(float64):
    torch.manual_seed(0)
    G0, D0 = Generator(SHAPE, 100, 8), KDiscriminator(SHAPE, 8, 10)
    G0.eval(), D0.eval()
    T = _target().double()
    data = torch.rand(70, *SHAPE) * 2 - 1
    G1 = frozen(Generator(SHAPE, 100, 8), G0.state_dict(), CPU)
    D1 = frozen(KDiscriminator(SHAPE, 8, 10), D0.state_dict(), CPU)
    c = _ppdg(KEDMI({}, "paper"), tune_epochs=3.0).config

    torch.manual_seed(7)
    fine_tune(G1, D1, kedmi_losses(G1, D1, T, 100, CPU), data, 3, c, seed=11, device=CPU)
    torch.manual_seed(7)
    official_tune_specific_gan(G0, D0, T, data, 3, torch.Generator().manual_seed(11))
    assert _same(G0, G1) and _same(D0, D1)


def test_official_defaults():
    c = _ppdg(GMI({}, "paper")).config
    assert (c.rounds, c.tune_epochs, c.tune_batch, c.tune_lr, c.n_critic, c.gp) == (
        2,
        10.0,
        64,
        2e-4,
        5,
        10.0,
    )


# ---- the rounds, the prior and the plan ---------------------------------------------------------


def _ctx(data=None, T=None):
    return AttackContext(load().get("scenario", "mnist"), data, T if T is not None else _target(), CPU, 0)


def test_per_class_round_is_the_batched_base_attack():
    """Round 2 attacks one class at a time; with every class's networks equal to the base's it
    gives the base's batched inversion (gmi: lr / identity-batch size keeps each latent's step)."""
    torch.manual_seed(0)
    G, D = Generator(SHAPE, 100, 8), Critic(SHAPE, 8)
    prior = {"G": G.state_dict(), "D": D.state_dict()}
    gmi = GMI({"gan_dim": 8, "iters": 15, "restarts": 2, "batch_ids": 3}, "paper")
    ctx = _ctx()
    classes = [0, 3, 7, 9]
    batched = gmi.invert(ctx, {"gmi-gan": prior}, classes)
    ppdg = _ppdg(gmi)
    per_class = ppdg._round(ctx, {"gmi-gan": prior}, classes, 0, {str(c): prior for c in classes})
    assert per_class.labels.tolist() == batched.labels.tolist()
    assert torch.allclose(per_class.images, batched.images, atol=1e-5)


def test_unsupported_bases_are_refused():
    for base in (load().get("attack", "plgmi")({}, "smoke"), load().get("attack", "ppa")({}, "smoke")):
        with pytest.raises(ConfigError, match="ppdg wraps gmi or kedmi"):
            PPDG({}, "smoke", base=base)


def test_prior_is_keyed_by_target_and_base_prior():
    reg = load()
    plan = expand(
        Request(["ppdg+gmi", "gmi[iters=7]", "ppdg+gmi[iters=7]"], ["none", "re"], budget="smoke"), reg
    )
    steps = plan.steps
    tuned = [s for s in steps.values() if s.kind == "prior" and s.spec["kind"] == TUNED]
    gans = [s.key for s in steps.values() if s.kind == "prior" and s.spec["kind"] == "gmi-gan"]
    assert len(gans) == 1 and len(tuned) == 4  # 2 targets x 2 base configurations
    for s in tuned:
        assert s.spec["target"] is not None and s.spec["from"] == {"gmi-gan": gans[0]}
        assert gans[0] in s.deps and s.spec["target"] in s.deps
        assert steps[s.spec["target"]].kind == "target"
    # the first round follows the base's inversion settings: they enter the key
    assert len({s.key for s in tuned}) == 4


def _digits():
    reg = load()
    scenario = reg.get("scenario", "mnist")
    data = scenario.load(None)
    return dataclasses.replace(data, public=Split(data.public.x[:128], None))


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
@pytest.mark.parametrize("base", ["gmi", "kedmi", "lomma+gmi"])
def test_smoke_on_the_digits(base):
    data = _digits()
    T = _target()
    ctx = AttackContext(
        load().get("scenario", "mnist"), data, T, CPU, 0, architecture=lambda n: load().get("architecture", n)
    )
    cfg = {"gan_steps": 5, "gan_batch": 16, "iters": 5}
    b = (
        LOMMA({"iters": 5}, "smoke", base=GMI(cfg, "smoke"))
        if base == "lomma+gmi"
        else {"gmi": GMI, "kedmi": KEDMI}[base](cfg, "smoke")
    )
    attack = PPDG({}, "smoke", base=b)
    priors = {}
    for spec in attack.priors():
        ctx.priors = {k: priors[k] for k in spec.needs}
        priors[spec.kind] = attack.prepare(ctx, spec.kind)
    tuned = priors[TUNED]["tuned"]
    assert sorted(tuned, key=int) == [str(c) for c in range(10)]
    gan_kind = attack.gan.prior_kind
    assert any(not torch.equal(tuned["3"]["G"][k], v) for k, v in priors[gan_kind]["G"].items())
    inv = attack.invert(ctx, priors, [0, 3, 7])
    n = len(inv.labels) // 3
    assert inv.images.shape == (3 * n, *SHAPE) and inv.labels.tolist() == [0, 3, 7] * n
    assert torch.isfinite(inv.images).all() and inv.images.abs().max() <= 1
    assert 0 <= inv.info["pseudo_private_conf"] <= 1
