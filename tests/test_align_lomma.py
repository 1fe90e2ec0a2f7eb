"""AlignMI's official low-resolution setups: ``lomma+align+gmi`` / ``lomma+align+kedmi`` and the
official KEDMI base (issue 30, item 3), against transcriptions of the official code.

Sources (AlanPeng0897/AlignMI @3f7fff9, read 2026-12-07):
- ``low_resolution/attacks/optimize.py::Optimization.iden_loss`` (``logit_loss``: NLLLoss on the
  raw logits of every model of ``targetnets``, averaged, plus ``lam * reg_loss`` on the first
  model's features), ``find_criterion``, ``gmi_optimize_paa``, ``gmi_optimize_taa``,
  ``kedmi_optimize_taa``, ``kedmi_optimize``, ``reparameterize_batch`` (sigma + 5),
  ``compute_prior_loss``;
- ``low_resolution/losses/reg_loss.py::reg_loss``, ``reparameterize``;
- ``low_resolution/configs/attacking/ked_dcgan-celeba_vgg16-celeba.yaml`` (the KEDMI base:
  ``loss: logit_loss``, ``classid: '0,1,2,3'``, ``lam: 1.0``, ``identity_weight: 100.0``,
  ``num_iterations: 100 # (1) 200 for baseline and TAA (2) 100 for PAA``, ``optimizer: SGD lr
  0.01 momentum 0.9``; ``clipz`` is true for kedmi in ``utils/attack_config_parser.py``).
"""

import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import reinv_attacks._students as students_mod
from reinv_attacks import align as align_mod
from reinv_attacks._gan import Generator
from reinv_attacks.align import Align
from reinv_attacks.gmi import GMI
from reinv_attacks.kedmi import KEDMI, KDiscriminator, kedmi_optimize, sample
from reinv_attacks.lomma import LOMMA, STUDENTS
from reinv_bench.api import AttackContext, Classifier, ConfigError
from reinv_bench.registry.components import resolve_attack
from reinv_bench.registry.lookup import load

CPU = torch.device("cpu")
SIZE = 16

# ked_dcgan-celeba_vgg16-celeba.yaml, transcribed (the TAA / baseline count from its comment)
OFFICIAL_KED_CONFIG = {
    "loss": "logit_loss",
    "classid": "0,1,2,3",
    "lam": 1.0,
    "identity_weight": 100.0,
    "num_iterations_taa": 200,
    "num_iterations_paa": 100,
    "optimizer": {"SGD": {"lr": 0.01, "momentum": 0.9}},
    "clipz": True,  # attack_config_parser.py::clipz for method kedmi
}


# ---- transcriptions of the official code ------------------------------------------------------


def official_reparameterize(mu, logvar):  # low_resolution/losses/reg_loss.py::reparameterize
    std = torch.exp(0.5 * logvar)
    eps = torch.randn_like(std)
    return eps * std + mu


def official_reg_loss(featureT, fea_mean, fea_logvar):  # low_resolution/losses/reg_loss.py
    # the official draw is overwritten on the next line: it only advances the global random
    # stream; kept, under fork_rng so that both sides below see the same copies
    with torch.random.fork_rng():
        fea_reg = official_reparameterize(fea_mean, fea_logvar)
    fea_reg = fea_mean.repeat(featureT.shape[0], 1)
    loss_reg = torch.mean((featureT - fea_reg).pow(2))
    return loss_reg


def official_iden_loss(targetnets, imgs, iden, used_loss, criterion, fea_mean, fea_logvar, lam=0.1):
    """Optimization.iden_loss (``self.fea_mean``/``self.fea_logvar`` passed in)."""
    Iden_Loss = 0
    loss_reg = 0
    for target_model in targetnets:
        feat, out = target_model(imgs)
        if used_loss == "logit_loss":
            if Iden_Loss == 0:
                loss_sdt = criterion(out, iden)
                loss_reg = lam * official_reg_loss(feat, fea_mean[0], fea_logvar[0])
                Iden_Loss = Iden_Loss + loss_sdt
            else:
                loss_sdt = criterion(out, iden)
                Iden_Loss = Iden_Loss + loss_sdt
        else:
            loss_sdt = criterion(out, iden)
            Iden_Loss = Iden_Loss + loss_sdt
    Iden_Loss = Iden_Loss / len(targetnets) + loss_reg
    return Iden_Loss


def official_aligned_z_grad(generator, targetnets, z, iden, mode, base, fea_mean, fea_logvar, lam=1.0):
    """The averaging loop of gmi_optimize_paa / gmi_optimize_taa / kedmi_optimize_taa (PAA of
    kedmi alike) with ``attack_loss = 'logit_loss'`` (``find_criterion``: NLLLoss), identity_weight 1
    (the base's lambda multiplies both sides). Left out, deliberate differences tested in
    test_align.py: gmi's min-max rescaling of each copy, kedmi's averaged prior term."""
    criterion = nn.NLLLoss()
    if base == "gmi":
        num_samples, stdev_spread = (50, 0.003) if mode == "paa" else (30, None)
        transformations = align_mod.taa_transforms(SIZE, (0.9, 1.0), 3)  # build_transformations
    else:
        num_samples, stdev_spread = (50, 0.05) if mode == "paa" else (50, None)
        transformations = align_mod.taa_transforms(SIZE, (0.8, 1.0), 5)  # ked_build_transformations
    imgs = generator(z)
    sigma = stdev_spread * (imgs.max().item() - imgs.min().item()) if mode == "paa" else None
    smooth_grad = 0
    for _ in range(num_samples):
        copy = imgs + torch.randn_like(imgs) * sigma if mode == "paa" else transformations(imgs)
        loss = official_iden_loss(targetnets, copy, iden, "logit_loss", criterion, fea_mean, fea_logvar, lam)
        smooth_grad += torch.autograd.grad(loss, imgs, retain_graph=True)[0]
    smooth_grad /= num_samples
    return torch.autograd.grad(imgs, z, grad_outputs=smooth_grad)[0]


def official_kedmi_optimize(generator, discriminator, target, targets_batch, eps, num_iterations, lr):
    """Optimization.kedmi_optimize (AlignMI's KEDMI base), ``improved_flag`` and ``clipz`` true,
    ``ce_loss`` with one target, identity_weight 100, ``create_optimizer``: SGD(lr, momentum 0.9);
    ``reparameterize_batch``'s draws given as ``eps`` (one row per iteration)."""
    z_dim, clip_range, identity_weight = eps.shape[-1], 1.0, 100.0
    mu = torch.zeros(1, z_dim, requires_grad=True)
    log_var = torch.ones(1, z_dim, requires_grad=True)
    optimizer = torch.optim.SGD([mu, log_var], lr=lr, momentum=0.9)

    def reparameterize_batch(mu, logvar, it):
        std = torch.exp(0.5 * logvar) + 5
        return eps[it] * std + mu

    for i in range(num_iterations):
        z = reparameterize_batch(mu, log_var, i)
        z = torch.clamp(z, -clip_range, clip_range).float()
        imgs = generator(z)
        _, label = discriminator(imgs)
        lse = torch.logsumexp(label, 1)
        prior_loss = torch.mean(F.softplus(lse)) - torch.mean(lse)  # compute_prior_loss, improved
        iden_loss = nn.CrossEntropyLoss()(target(imgs), targets_batch)
        optimizer.zero_grad()
        loss = prior_loss + iden_loss * identity_weight
        loss.backward()
        optimizer.step()
    return mu.detach(), log_var.detach()


# ---- helpers -----------------------------------------------------------------------------------


def _nets(seed=0):
    torch.manual_seed(seed)
    A = torch.randn(8, SIZE * SIZE) * 0.3
    target = Classifier([nn.Flatten(), nn.Linear(SIZE * SIZE, 6), nn.ReLU()], nn.Linear(6, 5), 6, 5)
    students = [nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 5)) for _ in range(3)]
    for n in (target, *students):
        n.eval().requires_grad_(False)
    return (lambda w: torch.tanh(w @ A).view(len(w), 1, SIZE, SIZE)), target, students


class _Shape:
    def __init__(self, scenario, shape):
        self._s, self.image_shape = scenario, shape

    def __getattr__(self, name):
        return getattr(self._s, name)


def _lomma_align(base_cls, mode, students, monkeypatch):
    """``lomma+align[mode]+BASE`` whose students are ``students`` and whose base's invert records
    the identity it receives."""
    base = base_cls({}, "paper")
    seen = {}

    def invert(ctx, priors, classes, identity=None):
        seen["identity"] = identity
        return SimpleNamespace(info={})

    base.invert = invert
    attack = LOMMA({}, "paper", base=Align({"mode": mode}, "paper", base=base))
    it = iter(students)
    monkeypatch.setattr(students_mod, "build_student", lambda *a: next(it))  # load_students builds them
    return attack, seen


# ---- the composition ---------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["gmi", "kedmi"])
@pytest.mark.parametrize("mode", ["paa", "taa"])
def test_lomma_align_gradient_is_the_official_logit_loss_average(base, mode, monkeypatch):
    """``lomma+align+BASE``: the averaged identity is the official ``iden_loss`` with
    ``logit_loss`` over the target and three students, the regulariser on the target only, on each
    copy; the base receives LOMMA's iterations."""
    synthesize, target, students = _nets()
    attack, seen = _lomma_align({"gmi": GMI, "kedmi": KEDMI}[base], mode, students, monkeypatch)
    mu_pub = torch.randn(6)
    priors = {
        STUDENTS: {"mu_pub": mu_pub, "students": {f"{i}:s": s.state_dict() for i, s in enumerate(students)}}
    }
    ctx = AttackContext(_Shape(load().get("scenario", "mnist"), (1, SIZE, SIZE)), None, target, CPU, 0)
    attack.invert(ctx, priors, [0])
    identity = seen["identity"]
    assert identity.iters == LOMMA.params["iters"].default

    z = torch.randn(3, 8, requires_grad=True)
    y = torch.tensor([4, 0, 2])
    torch.manual_seed(3)
    ours = torch.autograd.grad(identity.loss(synthesize(z), y).mean(), z)[0]
    nets = [lambda v: (target.features(v), target(v))] + [lambda v, s=s: (None, s(v)) for s in students]
    torch.manual_seed(3)
    # KEDMI: the official [0, 1] generator and targets, composed to the same functions of z; GMI:
    # the official StyleGAN's [-1, 1] images as they are (test_align.py, issue 30)
    pixels = base == "kedmi"
    official = official_aligned_z_grad(
        (lambda z: synthesize(z) * 0.5 + 0.5) if pixels else synthesize,
        [lambda p, n=n: n((p - 0.5) / 0.5) for n in nets] if pixels else nets,
        z,
        y,
        mode,
        base,
        mu_pub[None],
        torch.zeros(1, 6),
    )
    assert torch.allclose(ours, official, rtol=1e-4, atol=1e-7)
    # the plain cross-entropy branch (align+BASE) is another gradient
    torch.manual_seed(3)
    ce = torch.autograd.grad(
        Align({"mode": mode}, "paper", base=GMI({})).identity(ctx).loss(synthesize(z), y).mean(), z
    )[0]
    assert not torch.allclose(ce, official, rtol=1e-2)


def test_the_official_reg_loss_draw_is_discarded():
    feat, mean = torch.randn(4, 6), torch.randn(6)
    torch.manual_seed(0)
    a = official_reg_loss(feat, mean, torch.zeros(6))
    torch.manual_seed(1)
    assert torch.equal(a, official_reg_loss(feat, mean, torch.zeros(6)))


def test_lomma_align_resolves_and_align_lomma_is_refused_with_the_hint():
    reg = load()
    for base in ("gmi", "kedmi"):
        label, desc, inst = resolve_attack(reg, f"lomma+align+{base}", "smoke")
        assert (desc["name"], desc["base"]["name"], desc["base"]["base"]["name"]) == ("lomma", "align", base)
        assert isinstance(inst.base, Align) and inst.base.base.name == base
    with pytest.raises(ConfigError, match=r"got 'lomma': write lomma\+align\+gmi"):
        resolve_attack(reg, "align+lomma+gmi", "smoke")


def test_the_documented_official_command_carries_the_official_kedmi_base():
    """The command ``align``'s docstring documents resolves to the official configuration."""
    doc = align_mod.__doc__
    command = re.search(r'-a "(lomma\[iters=\d+\]\+align\+kedmi\[[^"]+)"', doc).group(1)
    _, _, attack = resolve_attack(load(), command, "paper")
    kedmi, lomma = attack.base.base.config, attack.config
    sgd = OFFICIAL_KED_CONFIG["optimizer"]["SGD"]
    assert (kedmi.optimizer, kedmi.lr) == ("sgd", sgd["lr"])
    assert kedmi.std_offset == 5.0 and kedmi.clamp == 1.0 == OFFICIAL_KED_CONFIG["clipz"]
    assert kedmi.lam == OFFICIAL_KED_CONFIG["identity_weight"] and lomma.reg == OFFICIAL_KED_CONFIG["lam"]
    assert lomma.iters == OFFICIAL_KED_CONFIG["num_iterations_taa"]
    assert attack.base.config.mode == "taa"
    assert len(lomma.students.split("/")) + 1 == len(OFFICIAL_KED_CONFIG["classid"].split(","))
    assert f"lomma[iters={OFFICIAL_KED_CONFIG['num_iterations_paa']}]+align[mode=paa]" in doc


def test_kedmi_sgd_and_std_offset_are_alignmis_kedmi_base():
    torch.manual_seed(0)
    shape = (1, 32, 32)
    G = Generator(shape, 100, 8).eval().requires_grad_(False)
    KD = KDiscriminator(shape, 8, 10).eval().requires_grad_(False)
    T_ = load().get("architecture", "cnn").build(10, shape).eval().requires_grad_(False)
    iters, y = 4, torch.tensor([3])
    eps = torch.randn(iters, 1, 100, generator=torch.Generator().manual_seed(2)) * 0.2
    mu, lv, _ = kedmi_optimize(
        G,
        KD,
        T_,
        torch.zeros(1, 100),
        torch.ones(1, 100),
        y,
        iters=iters,
        lr=0.01,
        lam=100.0,
        clip=1.0,
        scale=1.0,
        optimizer="sgd",
        std_offset=5.0,
        noise=eps.__getitem__,
    )
    m, v = official_kedmi_optimize(G, KD, T_, y, eps, iters, lr=0.01)
    assert torch.allclose(mu, m, atol=1e-6) and torch.allclose(lv, v, atol=1e-6)
    adam, _, _ = kedmi_optimize(
        G, KD, T_, torch.zeros(1, 100), torch.ones(1, 100), y, iters=iters, lr=0.01, lam=100.0, clip=1.0,
        scale=1.0, std_offset=5.0, noise=eps.__getitem__,
    )  # fmt: skip
    assert not torch.allclose(adam, m, atol=1e-6)
    e = torch.tensor([[0.1, -0.2]])
    assert torch.allclose(
        sample(torch.zeros(1, 2), torch.ones(1, 2), e, 0.0, 5.0), e * (5 + torch.exp(torch.tensor(0.5)))
    )


def test_kedmi_defaults_keep_their_step_keys():
    from reinv_bench.registry.components import keyed

    k = KEDMI({}, "paper")
    assert "optimizer" not in keyed(KEDMI, k.config) and "std_offset" not in keyed(KEDMI, k.config)
    assert "optimizer" in keyed(KEDMI, KEDMI({"optimizer": "sgd"}).config)


def test_lomma_align_kedmi_runs_on_the_digits_with_the_official_base():
    """The documented combination end to end on a tiny KEDMI GAN (students left out: the logit
    loss on the target alone), against ``lomma+kedmi`` on the same priors and noise."""
    import dataclasses

    from reinv_bench.api import Split

    reg = load()
    scenario = reg.get("scenario", "mnist")
    data = scenario.load(None)
    data = dataclasses.replace(data, public=Split(data.public.x[:128], None))
    torch.manual_seed(1)
    T_ = reg.get("architecture", "cnn").build(10, scenario.image_shape).eval().requires_grad_(False)
    ctx = AttackContext(scenario, data, T_, CPU, 0)
    cfg = {"gan_steps": 5, "gan_dim": 8, "optimizer": "sgd", "lr": 0.01, "std_offset": 5, "clamp": 1}
    base = KEDMI(cfg, "smoke")
    priors = {s.kind: base.prepare(ctx, s.kind) for s in base.priors()}
    priors[STUDENTS] = {"mu_pub": T_.features(data.public.x[:64]).mean(0), "students": {}}
    plain = LOMMA({"iters": 3}, "smoke", base=base).invert(ctx, priors, [0, 3, 7])
    inv = LOMMA({"iters": 3}, "smoke", base=Align({}, "smoke", base=base)).invert(ctx, priors, [0, 3, 7])
    assert inv.images.shape == plain.images.shape and inv.labels.tolist() == plain.labels.tolist()
    assert torch.isfinite(inv.images).all() and inv.images.abs().max() <= 1
    assert not torch.allclose(inv.images, plain.images)
    assert inv.info["align_samples"] == 2
