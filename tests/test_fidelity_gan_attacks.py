"""GMI, KEDMI and LOMMA against transcriptions of their official code (issue 10, items 1-3 and
the GAN budgets of item 10). Each ``official_*`` function below is transcribed from the file it
cites and kept as close to the original as the tiny test networks allow; the plugin must agree
with it on small random tensors.

Sources (read 2026-11):
- SCccc21/Knowledge-Enriched-DMI: ``attack.py::inversion``, ``attack.py::dist_inversion``,
  ``recovery.py`` (identity batches of 60), ``discri.py::MinibatchDiscriminator``,
  ``discri.py::MinibatchDiscrimination``, ``k+1_gan.py`` (losses), ``utils.py::softXEnt``,
  ``HLoss``, ``log_sum_exp``, ``utils.py::init_dataloader`` (drop_last), ``config/celeba.json``.
- sutd-visual-computing-group/Re-thinking_MI (LOMMA): ``attack.py::iden_loss``, ``reg_loss``,
  ``get_act_reg``, ``dist_inversion`` (clipz), ``utils.py::get_attack_model`` (loader of 50),
  ``engine.py::train_augmodel``, ``config/celeba/attacking/{celeba,ffhq}.json``,
  ``models/discri.py::MinibatchDiscriminator_MNIST``.
- LetheSec/PLG-MI-Attack: ``data_files/celeba_ganset.txt`` (30,000 lines).
"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
import torch.nn.init as init
from torch import nn

from reinv_attacks._gan import Critic, Generator, batch_stream, train_wgan_gp
from reinv_attacks._latent import class_generator, latent_init
from reinv_attacks.gmi import GMI
from reinv_attacks.kedmi import (
    KEDMI,
    NOISE_STREAM,
    KDiscriminator,
    kedmi_d_loss,
    kedmi_g_loss,
    kedmi_optimize,
    sample,
    train_kedmi_gan,
)
from reinv_attacks.lomma import LOMMA, STUDENTS, distill, logit_identity, public_feature_mean
from reinv_bench.api import AttackContext, Classifier, Split
from reinv_bench.registry.lookup import load

CPU = torch.device("cpu")


# ---- transcriptions of the official code ------------------------------------------------------


def official_log_sum_exp(x, axis=1):  # KEDMI utils.py / k+1_gan.py::log_sum_exp
    m = torch.max(x, dim=1)[0]
    return m + torch.log(torch.sum(torch.exp(x - m.unsqueeze(1)), dim=axis))


def official_softXEnt(input, target):  # KEDMI utils.py::softXEnt
    targetprobs = nn.functional.softmax(target, dim=1)
    logprobs = nn.functional.log_softmax(input, dim=1)
    return -(targetprobs * logprobs).sum() / input.shape[0]


def official_HLoss(x):  # KEDMI utils.py::HLoss.forward
    b = F.softmax(x, dim=1) * F.log_softmax(x, dim=1)
    return -1.0 * b.sum()


class OfficialMinibatchDiscrimination(nn.Module):  # KEDMI discri.py::MinibatchDiscrimination
    def __init__(self, in_features, out_features, kernel_dims, mean=False):
        super().__init__()
        self.in_features, self.out_features, self.kernel_dims, self.mean = (
            in_features,
            out_features,
            kernel_dims,
            mean,
        )
        self.T = nn.Parameter(torch.Tensor(in_features, out_features, kernel_dims))
        init.normal_(self.T, 0, 1)

    def forward(self, x):
        matrices = x.mm(self.T.view(self.in_features, -1))
        matrices = matrices.view(-1, self.out_features, self.kernel_dims)
        M = matrices.unsqueeze(0)
        M_T = M.permute(1, 0, 2, 3)
        norm = torch.abs(M - M_T).sum(3)
        expnorm = torch.exp(-norm)
        o_b = expnorm.sum(0) - 1
        if self.mean:
            o_b /= x.size(0) - 1
        return torch.cat([x, o_b], 1)


class OfficialMinibatchDiscriminator(nn.Module):
    """KEDMI discri.py::MinibatchDiscriminator (64 px); ``spatial=2`` is LOMMA's
    models/discri.py::MinibatchDiscriminator_MNIST (32 px: fc on dim*4*4 = dim*4 x 2 x 2)."""

    def __init__(self, in_dim=3, dim=64, n_classes=1000, spatial=4):
        super().__init__()

        def conv_ln_lrelu(in_dim, out_dim, k, s, p):
            return nn.Sequential(
                nn.Conv2d(in_dim, out_dim, k, s, p),
                nn.InstanceNorm2d(out_dim, affine=True),
                nn.LeakyReLU(0.2),
            )

        self.layer1 = conv_ln_lrelu(in_dim, dim, 5, 2, 2)
        self.layer2 = conv_ln_lrelu(dim, dim * 2, 5, 2, 2)
        self.layer3 = conv_ln_lrelu(dim * 2, dim * 4, 5, 2, 2)
        self.layer4 = conv_ln_lrelu(dim * 4, dim * 4, 3, 2, 1)
        self.mbd1 = OfficialMinibatchDiscrimination(dim * 4 * spatial * spatial, 64, 50)
        self.fc_layer = nn.Linear(dim * 4 * spatial * spatial + 64, n_classes)

    def forward(self, x):
        bs = x.shape[0]
        feat4 = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        feat = feat4.view(bs, -1)
        mb_out = self.mbd1(feat)
        y = self.fc_layer(mb_out)
        return feat, y


def official_d_loss(DG, T, imgs, x_unlabel, f_imgs):  # KEDMI k+1_gan.py, D step
    y_prob = T(imgs)
    _, output_label = DG(imgs)
    _, output_unlabel = DG(x_unlabel)
    _, output_fake = DG(f_imgs)
    loss_lab = official_softXEnt(output_label, y_prob)
    loss_unlab = 0.5 * (
        torch.mean(F.softplus(official_log_sum_exp(output_unlabel)))
        - torch.mean(official_log_sum_exp(output_unlabel))
        + torch.mean(F.softplus(official_log_sum_exp(output_fake)))
    )
    return loss_lab + loss_unlab


def official_g_loss(DG, f_imgs, x_unlabel2):  # KEDMI k+1_gan.py, G step
    mom_gen, output_fake = DG(f_imgs)
    mom_unlabel, _ = DG(x_unlabel2)
    mom_gen = torch.mean(mom_gen, dim=0)
    mom_unlabel = torch.mean(mom_unlabel, dim=0)
    Hloss = official_HLoss(output_fake)
    return torch.mean((mom_gen - mom_unlabel).abs()) + 1e-4 * Hloss


def official_gmi_inversion(G, D, T, iden, z, lr=2e-2, momentum=0.9, lamda=100, iter_times=1500, clip_range=1):
    """KEDMI attack.py::inversion (= GMI Celeba/attack.py::inversion), one restart, z given."""
    criterion = nn.CrossEntropyLoss()
    bs = iden.shape[0]
    z = z.clone()
    z.requires_grad = True
    v = torch.zeros(bs, z.shape[1])
    for _i in range(iter_times):
        fake = G(z)
        label = D(fake)
        out = T(fake)
        if z.grad is not None:
            z.grad.data.zero_()
        Prior_Loss = -label.mean()
        Iden_Loss = criterion(out, iden)
        Total_Loss = Prior_Loss + lamda * Iden_Loss
        Total_Loss.backward()
        v_prev = v.clone()
        gradient = z.grad.data
        v = momentum * v - lr * gradient
        z = z + (-momentum * v_prev + (1 + momentum) * v)
        z = torch.clamp(z.detach(), -clip_range, clip_range).float()
        z.requires_grad = True
    return z.detach()


def official_dist_inversion(
    G, D, T, iden, eps, lr=2e-2, lamda=100, iter_times=1500, clipz=False, clip_range=1.0
):
    """KEDMI attack.py::dist_inversion (clipz=False) and LOMMA attack.py::dist_inversion (clipz),
    with ``reparameterize``'s randn_like replaced by the given eps[i]."""
    criterion = nn.CrossEntropyLoss()
    bs = iden.shape[0]
    mu = torch.zeros(bs, 100, requires_grad=True)
    log_var = torch.ones(bs, 100, requires_grad=True)
    params = [mu, log_var]
    solver = torch.optim.Adam(params, lr=lr)
    for i in range(iter_times):
        z = eps[i] * torch.exp(0.5 * log_var) + mu
        if clipz:
            z = torch.clamp(z, -clip_range, clip_range).float()
        fake = G(z)
        _, label = D(fake)
        out = T(fake)
        for p in params:
            if p.grad is not None:
                p.grad.data.zero_()
        Prior_Loss = torch.mean(F.softplus(official_log_sum_exp(label))) - torch.mean(
            official_log_sum_exp(label)
        )
        Iden_Loss = criterion(out, iden)
        Total_Loss = Prior_Loss + lamda * Iden_Loss
        Total_Loss.backward()
        solver.step()
        z = torch.clamp(z.detach(), -clip_range, clip_range).float()  # dead: never used again
    return mu.detach(), log_var.detach()


def official_iden_loss(T, fake, iden, fea_mean, lam):
    """LOMMA attack.py::iden_loss with used_loss='logit_loss' (criterion NLLLoss) and reg_loss."""
    criterion = nn.NLLLoss()
    Iden_Loss, loss_reg = 0, 0
    for tn in T:
        feat, out = tn(fake)
        if Iden_Loss == 0:
            loss_sdt = criterion(out, iden)
            fea_reg = fea_mean.repeat(feat.shape[0], 1)
            loss_reg = lam * torch.mean((feat - fea_reg).pow(2))
            Iden_Loss = Iden_Loss + loss_sdt
        else:
            Iden_Loss = Iden_Loss + criterion(out, iden)
    return Iden_Loss / len(T) + loss_reg


def official_loader_steps(n, batch_size, epochs):
    """Steps of the official loops: ``for epoch in range(epochs): for imgs in DataLoader(...,
    drop_last=True)`` (KEDMI/LOMMA utils.py::init_dataloader, mode 'gan')."""
    loader = torch.utils.data.DataLoader(range(n), batch_size=batch_size, shuffle=True, drop_last=True)
    return epochs * len(loader)


def official_act_reg_count(n, Nsample=5000):
    """Images LOMMA attack.py::get_act_reg averages: a drop_last loader of 50 (utils.py::
    get_attack_model), stopped once batch_idx * len(data) > Nsample."""
    seen = 0
    loader = torch.utils.data.DataLoader(range(n), batch_size=50, shuffle=True, drop_last=True)
    for batch_idx, data in enumerate(loader):
        if batch_idx * len(data) > Nsample:
            break
        seen += len(data)
    return seen


# ---- tiny networks ------------------------------------------------------------------------------

SHAPE = (1, 32, 32)


def _frozen(*nets):
    for n in nets:
        n.eval().requires_grad_(False)
    return nets


def _tiny():
    torch.manual_seed(0)
    G, D = Generator(SHAPE, 100, 8), Critic(SHAPE, 8)
    T = load().get("architecture", "cnn").build(10, SHAPE)
    KD = KDiscriminator(SHAPE, 8, 10)
    return _frozen(G, D, T, KD)


def _ctx(T, seed=0):
    return AttackContext(load().get("scenario", "mnist"), None, T, CPU, seed)


# ---- item 1: GMI identity batches ---------------------------------------------------------------


def _recording_gmi_optimize(monkeypatch):
    """Record the latents each identity batch ends with (the images of these tiny untrained
    generators hardly depend on z, so the comparison is made on z)."""
    import reinv_attacks.gmi as gmi

    calls, real = [], gmi.gmi_optimize

    def record(*args, **kw):
        z, hist = real(*args, **kw)
        calls.append((args[4].tolist(), z))
        return z, hist

    monkeypatch.setattr(gmi, "gmi_optimize", record)
    return calls


def test_gmi_identity_batches_reproduce_the_official_update(monkeypatch):
    """Every identity batch (here 3 classes, official 60) runs the official inversion of
    KEDMI recovery.py / attack.py::inversion: the loss is the batch mean, so each latent's step
    is 1/len(batch) of its gradient; a scale over all classes (1/7 here) fails."""
    G, D, T = _tiny()[:3]
    calls = _recording_gmi_optimize(monkeypatch)
    classes, k, iters = [0, 1, 2, 3, 4, 5, 6], 3, 3
    attack = GMI({"iters": iters, "restarts": 2, "batch_ids": k, "gan_dim": 8})
    inv = attack.invert(_ctx(T, seed=4), {"gmi-gan": {"G": G.state_dict(), "D": D.state_dict()}}, classes)
    assert inv.labels.tolist() == classes * 2
    assert [ys for ys, _ in calls] == [[0, 1, 2] * 2, [3, 4, 5] * 2, [6] * 2]
    for b, (_, z) in zip(range(0, len(classes), k), calls):
        ids = classes[b : b + k]
        z0, _ = latent_init(4, ids, 2, 100)
        for r in range(2):
            want = official_gmi_inversion(
                G, D, T, torch.tensor(ids), z0.view(2, len(ids), 100)[r], iter_times=iters
            )
            assert torch.allclose(z.view(2, len(ids), 100)[r], want, atol=1e-5)
            assert torch.allclose(G(want), inv.images.view(2, len(classes), *SHAPE)[r, b : b + k], atol=1e-5)


def test_gmi_first_step_is_the_official_per_class_step(monkeypatch):
    """lr * (1 + momentum) / 60 times the class's own gradient, with the default batch of 60."""
    G, D, T = _tiny()[:3]
    calls = _recording_gmi_optimize(monkeypatch)
    classes = list(range(10)) * 7  # 70 rows: identity batches of 60 and 10
    lr = 2.0  # a step well above float32 resolution
    attack = GMI({"iters": 1, "restarts": 1, "clip": 100.0, "gan_dim": 8, "lr": lr})
    assert attack.config.batch_ids == 60  # KEDMI/LOMMA recovery.py, PLG-MI reconstruct.py: 60 per batch
    attack.invert(_ctx(T), {"gmi-gan": {"G": G.state_dict(), "D": D.state_dict()}}, classes)
    z0, y = latent_init(0, classes, 1, 100)
    for (_, z), first, size in zip(calls, (0, 60), (60, 10), strict=True):
        zc = z0[first : first + 1].clone().requires_grad_(True)
        loss = -D(G(zc)).mean() + 100 * F.cross_entropy(T(G(zc)), y[first : first + 1])
        (g,) = torch.autograd.grad(loss, zc)
        step = lr * 1.9 * g[0]  # the first Nesterov step: lr * (1 + momentum) * gradient
        assert torch.allclose(z0[first] - z[0], step / size, rtol=1e-3, atol=1e-6)
        assert not torch.allclose(z0[first] - z[0], step / 70, rtol=1e-3, atol=1e-6)  # 1/all classes


def test_gmi_chunking_does_not_change_a_class():
    G, D, T = _tiny()[:3]
    priors = {"gmi-gan": {"G": G.state_dict(), "D": D.state_dict()}}
    cfg = {"iters": 4, "restarts": 2, "gan_dim": 8}
    chunked = GMI({**cfg, "batch_ids": 3}).invert(_ctx(T), priors, list(range(6)))
    alone = GMI(cfg).invert(_ctx(T), priors, [3, 4, 5])  # one batch of its own
    for r in range(2):
        assert torch.allclose(
            chunked.images[r * 6 + 3 : r * 6 + 6], alone.images[r * 3 : r * 3 + 3], atol=1e-6
        )


# ---- item 10 (part): GAN budgets in steps ------------------------------------------------------


def test_paper_gan_budget_is_the_official_step_count():
    # KEDMI config/celeba.json, LOMMA config/celeba/training_GAN/*/celeba.json: 120 epochs, batch 64,
    # n_critic 5; PLG-MI data_files/celeba_ganset.txt: 30,000 images
    d_steps = official_loader_steps(30_000, 64, 120)
    assert d_steps == 56_160
    for cls in (GMI, KEDMI):
        c = cls({}, "paper").config
        assert c.gan_steps == d_steps and c.gan_batch == 64 and c.n_critic == 5 and c.gan_lr == 2e-4
        assert not any("epoch" in k for k in cls.params)
        assert c.gan_steps // c.n_critic == 11_232  # generator steps


def test_batch_stream_is_a_reshuffled_drop_last_loader():
    stream = list(batch_stream(10, 4, 5, torch.Generator().manual_seed(0), streams=2))
    assert len(stream) == 5 and all(len(s) == 2 and len(s[0]) == 4 for s in stream)
    for p in (0, 2):  # two batches per pass (10 // 4), disjoint within a pass
        assert len(set(stream[p][0].tolist()) | set(stream[p + 1][0].tolist())) == 8
    assert not torch.equal(stream[0][0], stream[0][1])  # independent streams
    assert [len(s[0]) for s in batch_stream(3, 64, 2, torch.Generator())] == [3, 3]  # tiny set: one batch


def test_gan_trainers_run_the_step_budget():
    x = torch.rand(10, *SHAPE) * 2 - 1
    calls = []
    _, _, info = train_wgan_gp(
        x,
        SHAPE,
        dim=4,
        z_dim=100,
        steps=7,
        batch_size=4,
        lr=2e-4,
        n_critic=5,
        gp=10.0,
        device=CPU,
        seed=0,
        progress=lambda i, n: calls.append((i, n)),
    )
    assert (info["critic_steps"], info["generator_steps"]) == (7, 1) and calls[-1] == (7, 7)
    T = _tiny()[2]
    calls.clear()
    train_kedmi_gan(
        x,
        T,
        SHAPE,
        10,
        dim=4,
        z_dim=100,
        steps=6,
        batch_size=4,
        lr=2e-4,
        n_critic=5,
        device=CPU,
        seed=0,
        progress=lambda i, n: calls.append((i, n)),
    )
    assert len(calls) == 6 and calls[-1] == (6, 6)


# ---- item 3: KEDMI ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,spatial", [((3, 64, 64), 4), ((1, 32, 32), 2)])
def test_kedmi_discriminator_is_the_official_one(shape, spatial):
    torch.manual_seed(1)
    off = OfficialMinibatchDiscriminator(shape[0], 4, 5, spatial)
    ours = KDiscriminator(shape, 4, 5)

    def leaves(net):
        return [
            (type(m).__name__.removeprefix("Official"), [p.shape for p in m.parameters(recurse=False)])
            for m in net.modules()
            if not list(m.children()) and not isinstance(m, nn.Flatten)
        ]

    assert leaves(ours) == leaves(off)
    convs = [m for m in ours.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size, c.stride, c.padding) for c in convs] == [((5, 5), (2, 2), (2, 2))] * 3 + [
        ((3, 3), (2, 2), (1, 1))
    ]
    assert sum(isinstance(m, nn.InstanceNorm2d) and m.affine for m in ours.modules()) == 4
    with torch.no_grad():
        for p, q in zip(ours.parameters(), off.parameters(), strict=True):
            p.copy_(q)
    x = torch.randn(3, *shape)
    (f1, y1), (f2, y2) = ours(x), off(x)
    assert torch.allclose(f1, f2, atol=1e-5) and torch.allclose(y1, y2, rtol=1e-4, atol=1e-4)


def test_kedmi_minibatch_tensor_is_standard_normal():
    t = KDiscriminator((3, 64, 64), 4, 5).mbd.T  # init.normal(self.T, 0, 1) in discri.py
    assert t.shape == (256, 64, 50)
    assert abs(t.mean().item()) < 0.01 and abs(t.std().item() - 1) < 0.01


def test_kedmi_gan_losses_are_the_official_ones():
    torch.manual_seed(2)
    off = OfficialMinibatchDiscriminator(1, 4, 10, spatial=2)
    D = KDiscriminator(SHAPE, 4, 10)
    D.load_state_dict({k: v for k, v in zip(D.state_dict(), off.state_dict().values())})
    T = _tiny()[2]
    lab, unl, fake, unl2 = (torch.rand(4, *SHAPE) * 2 - 1 for _ in range(4))
    assert torch.allclose(
        kedmi_d_loss(D, T, lab, unl, fake), official_d_loss(off, T, lab, unl, fake), rtol=1e-5
    )
    # feature matching on the conv features before minibatch discrimination
    assert torch.allclose(kedmi_g_loss(D, fake, unl2), official_g_loss(off, fake, unl2), rtol=1e-5)


@pytest.mark.parametrize("clamp", [0.0, 1.0])
def test_kedmi_recovery_is_the_official_one_unclamped_and_lommas_clamped(clamp):
    G, _, T, KD = _tiny()
    y, iters = torch.tensor([1, 4, 8]), 3
    eps = torch.randn(iters, 3, 100, generator=torch.Generator().manual_seed(3)) * 3  # |z| well beyond 1
    mu, lv, _ = kedmi_optimize(
        G,
        KD,
        T,
        torch.zeros(3, 100),
        torch.ones(3, 100),
        y,
        iters=iters,
        lr=0.02,
        lam=100.0,
        clip=clamp,
        scale=1 / 3,
        noise=eps.__getitem__,
    )
    m, v = official_dist_inversion(G, KD, T, y, eps, iter_times=iters, clipz=clamp > 0)
    assert torch.allclose(mu, m, atol=1e-5) and torch.allclose(lv, v, atol=1e-5)
    other, _ = official_dist_inversion(G, KD, T, y, eps, iter_times=iters, clipz=clamp == 0)
    assert not torch.allclose(mu, other, atol=1e-3)  # the clamp matters here


def test_kedmi_default_is_no_clamp_and_invert_follows_the_official_batches():
    G, _, T, KD = _tiny()
    assert KEDMI({}).config.clamp == 0 and KEDMI({}).config.batch_ids == 60
    priors = {"kedmi-gan": {"G": G.state_dict(), "D": KD.state_dict()}}
    cfg = {"iters": 2, "samples": 2, "gan_dim": 8}
    classes = [0, 1, 2, 3, 4]
    inv = KEDMI({**cfg, "batch_ids": 2}).invert(_ctx(T, seed=5), priors, classes)
    assert inv.labels.tolist() == classes * 2
    got = inv.images.view(2, 5, *SHAPE)
    for b in range(0, 5, 2):  # official dist_inversion on each identity batch, each class's noise stream
        ids = classes[b : b + 2]
        eps = torch.stack(
            [torch.randn(4, 100, generator=class_generator(5, c, NOISE_STREAM)) for c in ids], 1
        )
        m, v = official_dist_inversion(G, KD, T, torch.tensor(ids), eps, iter_times=2)
        want = G((eps[2:] * torch.exp(0.5 * v) + m).flatten(0, 1)).view(
            2, len(ids), *SHAPE
        )  # unclamped samples
        assert torch.allclose(got[:, b : b + 2], want, atol=1e-5)
    alone = KEDMI(cfg).invert(_ctx(T, seed=5), priors, [2, 3])
    assert torch.allclose(alone.images.view(2, 2, *SHAPE), got[:, 2:4], atol=1e-6)
    clamped = KEDMI({**cfg, "clamp": 1.0}).invert(_ctx(T, seed=5), priors, [2, 3])
    assert not torch.allclose(clamped.images, alone.images, atol=1e-4)


def test_kedmi_sample_clamps_only_when_asked():
    mu, lv, eps = torch.zeros(2, 3), torch.ones(2, 3), torch.tensor([[2.0, -3.0, 0.5], [0.1, 0.2, -4.0]])
    assert torch.equal(sample(mu, lv, eps), eps * torch.exp(torch.tensor(0.5)))
    assert sample(mu, lv, eps, 1.0).abs().max() == 1.0


# ---- item 2: LOMMA ------------------------------------------------------------------------------


def test_lomma_runs_the_official_iterations_on_either_base():
    iters_mi = {"celeba.json": 2400, "ffhq.json": 2400}  # LOMMA config/celeba/attacking/*.json
    seen = []

    class Base:
        name, threat_model, accepts_identity = "base", "white-box", True

        def invert(self, ctx, priors, classes, identity=None):
            seen.append(identity.iters)

    for base in (GMI({}), KEDMI({}), Base()):
        lomma = LOMMA({}, "paper", base=base)
        assert lomma.config.iters in set(iters_mi.values())
    lomma.invert(_ctx(_tiny()[2]), {STUDENTS: {"mu_pub": torch.zeros(256), "students": {}}}, [0])
    assert seen == [2400]


def test_lomma_identity_is_the_official_iden_loss():
    torch.manual_seed(6)
    T = Classifier([nn.Flatten(), nn.Linear(16, 6)], nn.Linear(6, 4), 6, 4).eval().requires_grad_(False)
    students = [nn.Sequential(nn.Flatten(), nn.Linear(16, 4)) for _ in range(2)]
    mu_pub, x, y = torch.randn(6), torch.randn(5, 1, 4, 4), torch.tensor([0, 3, 1, 2, 3])
    nets = [lambda v: (T.features(v), T(v))] + [lambda v, s=s: (None, s(v)) for s in students]
    want = official_iden_loss(nets, x, y, mu_pub, lam=1.0)
    assert torch.allclose(logit_identity(T, students, mu_pub, 1.0)(x, y).mean(), want, atol=1e-6)


def test_lomma_mu_pub_averages_the_official_number_of_public_images():
    assert LOMMA.params["reg_samples"].default == official_act_reg_count(30_000) == 5050
    T = Classifier([nn.Flatten()], nn.Identity(), 4, 4).eval()
    x = torch.randn(12, 1, 2, 2)
    assert torch.allclose(public_feature_mean(T, x, 5050, 0, CPU), x.flatten(1).mean(0))  # fewer: all
    one = public_feature_mean(T, x, 1, 0, CPU)
    assert any(torch.equal(one, r) for r in x.flatten(1))


def test_lomma_distillation_step_is_the_official_one():
    """engine.py::train_augmodel: SGD(lr, momentum 0.9, weight_decay 1e-4), KLDivLoss(sum) / T^2 /
    batch on temperature-1 softmaxes; float64 so that the weight decay's effect is visible."""
    torch.manual_seed(7)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).double().eval().requires_grad_(False)
    x = torch.randn(8, 1, 4, 4, dtype=torch.float64)
    c = LOMMA.params

    def student():
        torch.manual_seed(8)
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).double()

    ours = distill(
        student(),
        teacher,
        x,
        epochs=2,
        lr=c["distill_lr"].default,
        weight_decay=c["distill_wd"].default,
        batch_size=8,
        device=CPU,
        seed=0,
    )
    off, temperature = student(), 1.0
    optimizer = torch.optim.SGD(off.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loss_function = nn.KLDivLoss(reduction="sum")
    for _ in range(2):
        optimizer.zero_grad()
        output_t, output = teacher(x), off(x)
        loss = (
            loss_function(
                F.log_softmax(output / temperature, dim=-1), F.softmax(output_t / temperature, dim=-1)
            )
            / (temperature * temperature)
            / len(x)
        )
        loss.backward()
        optimizer.step()
    no_wd = distill(
        student(), teacher, x, epochs=2, lr=0.01, weight_decay=0.0, batch_size=8, device=CPU, seed=0
    )
    for p, q, r in zip(ours.parameters(), off.parameters(), no_wd.parameters()):
        assert torch.allclose(p, q, atol=1e-12, rtol=0)
        assert not torch.allclose(r, q, atol=1e-9, rtol=0)


# ---- smoke: the attacks end to end on the digits ------------------------------------------------


def test_kedmi_and_lomma_kedmi_smoke():
    reg = load()
    scenario = reg.get("scenario", "mnist")
    data = scenario.load(None)
    data = dataclasses.replace(data, public=Split(data.public.x[:256], None))  # seconds, not minutes
    T = reg.get("architecture", "cnn").build(10, scenario.image_shape).eval().requires_grad_(False)
    # lomma builds its surrogate students through the context's architecture lookup
    ctx = AttackContext(scenario, data, T, CPU, 0, architecture=lambda n: reg.get("architecture", n))
    attack = LOMMA({}, "smoke", base=KEDMI({"gan_steps": 5, "gan_batch": 16}, "smoke"))
    priors = {spec.kind: attack.prepare(ctx, spec.kind) for spec in attack.priors()}
    for a in (attack.base, attack):
        inv = a.invert(ctx, priors, [0, 3, 7])
        assert inv.images.shape == (3 * 5, *scenario.image_shape) and inv.labels.tolist() == [0, 3, 7] * 5
        assert torch.isfinite(inv.images).all() and inv.images.abs().max() <= 1
