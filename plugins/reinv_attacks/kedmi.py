"""``kedmi``: Knowledge-Enriched Distributional Model Inversion.

Paper: Chen, Jia, Wang, Wang, Li, Yu. "Knowledge-Enriched Distributional Model Inversion
Attacks." ICCV 2021. Code: github.com/SCccc21/Knowledge-Enriched-DMI (``k+1_gan.py``,
``recovery.py``/``attack.py::dist_inversion``, ``discri.py::MinibatchDiscriminator``,
``utils.py::softXEnt``, ``HLoss``).

Prior (target-dependent: one per target, cached): an inversion-specific GAN on the public data.
The discriminator has K logits (the (K+1)-th "fake" class is implicit: log-sum-exp trick of the
improved-GAN) over conv features plus minibatch discrimination. Its loss on public batches:
``softXEnt(D(x), softmax(T(x)))`` (the target's soft labels) ``+ 1/2 [softplus(LSE(D(x_u))) -
LSE(D(x_u)) + softplus(LSE(D(G(z))))]``. The generator minimises feature matching
``mean|E[f(G(z))] - E[f(x_u2)]|`` plus ``1e-4 * entropy`` of D's prediction on fakes (HLoss: summed
over the batch). Adam lr 2e-4, betas (0.5, 0.999), batch 64, a generator step every 5 D steps,
120 epochs in ``paper``.

Distributional recovery: per attacked class learn mu and log sigma^2 in R^100 (init 0 and 1);
each step z = mu + sigma * eps, clipped to [-1, 1]; loss ``softplus(LSE(D(G(z)))) - LSE(D(G(z)))
+ 100 * CE(T(G(z)), y)``; Adam lr 0.02, 2400 iterations in ``paper``. Reconstructions: 5
samples from each learned distribution. All classes are optimised as one batch (the loss is
the mean over classes, as the official identity batch).

Deliberate differences: none in the losses; the discriminator's depth follows the resolution as
for GMI's nets (capped at 4 x dim channels, as the official 64-px MinibatchDiscriminator).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reinv_bench import hookimpl
from reinv_bench.api import Attack, AttackContext, Inversion, Param, Progress, _no_progress

from ._gan import Generator, _stages, frozen


class MinibatchDiscrimination(nn.Module):
    """Salimans et al. 2016: L1 closeness of each sample to the others in learned projections."""

    def __init__(self, in_features: int, out_features: int = 64, kernel_dims: int = 50) -> None:
        super().__init__()
        self.out, self.kd = out_features, kernel_dims
        self.T = nn.Parameter(torch.randn(in_features, out_features * kernel_dims) * 0.1)

    def forward(self, x: Tensor) -> Tensor:
        m = (x @ self.T).view(-1, self.out, self.kd).transpose(0, 1)  # (out, N, kd)
        close = torch.exp(-torch.cdist(m, m, p=1))  # (out, N, N): L1 distances, one matrix per feature
        return torch.cat([x, close.sum(2).T - 1], dim=1)


class KDiscriminator(nn.Module):
    """Returns (features, K logits)."""

    def __init__(self, image_shape: tuple[int, int, int], dim: int, num_classes: int) -> None:
        super().__init__()
        c, h, _ = image_shape
        layers: list[nn.Module] = [nn.Conv2d(c, dim, 5, 2, 2), nn.LeakyReLU(0.2)]
        width = dim
        for _ in range(_stages(h) - 1):
            nxt = min(width * 2, dim * 4)
            layers += [nn.Conv2d(width, nxt, 5, 2, 2), nn.InstanceNorm2d(nxt, affine=True), nn.LeakyReLU(0.2)]
            width = nxt
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        self.mbd = MinibatchDiscrimination(width * 16)
        self.fc = nn.Linear(width * 16 + 64, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feat = self.mbd(self.trunk(x))
        return feat, self.fc(feat)


def soft_xent(logits: Tensor, target_logits: Tensor) -> Tensor:
    return -(F.softmax(target_logits, 1) * F.log_softmax(logits, 1)).sum() / len(logits)


def entropy(logits: Tensor) -> Tensor:
    return -(F.softmax(logits, 1) * F.log_softmax(logits, 1)).sum()


def prior_loss(d_logits: Tensor) -> Tensor:
    """Per-sample improved-GAN 'realness' loss: softplus(LSE) - LSE."""
    lse = torch.logsumexp(d_logits, 1)
    return F.softplus(lse) - lse


def kedmi_d_loss(D, T, x_lab: Tensor, x_unl: Tensor, fake: Tensor) -> Tensor:
    with torch.no_grad():
        soft = T(x_lab)
    _, out_lab = D(x_lab)
    _, out_unl = D(x_unl)
    _, out_fake = D(fake)
    lse_u, lse_f = torch.logsumexp(out_unl, 1), torch.logsumexp(out_fake, 1)
    unl = 0.5 * (F.softplus(lse_u).mean() - lse_u.mean() + F.softplus(lse_f).mean())
    return soft_xent(out_lab, soft) + unl


def train_kedmi_gan(public: Tensor, T, image_shape, num_classes: int, *, dim: int, z_dim: int, epochs: int,
                    batch_size: int, lr: float, n_critic: int, device, seed: int,
                    progress: Progress = _no_progress) -> tuple[Generator, KDiscriminator]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    G, D = Generator(image_shape, z_dim, dim).to(device), KDiscriminator(image_shape, dim, num_classes).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    x = public.to(device)
    n = len(x)
    per_epoch = math.ceil(n / batch_size)
    step = 0
    for epoch in range(epochs):
        perms = [torch.randperm(n, generator=gen).to(device) for _ in range(3)]
        for i in range(per_epoch):
            lab, unl, unl2 = (x[p[i * batch_size : (i + 1) * batch_size]] for p in perms)
            step += 1
            G.requires_grad_(False)
            D.requires_grad_(True)
            loss_d = kedmi_d_loss(D, T, lab, unl, G(torch.randn(len(lab), z_dim, device=device)))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            if step % n_critic == 0:
                G.requires_grad_(True)
                D.requires_grad_(False)
                f_fake, out_fake = D(G(torch.randn(len(lab), z_dim, device=device)))
                f_real, _ = D(unl2)
                loss_g = (f_fake.mean(0) - f_real.mean(0)).abs().mean() + 1e-4 * entropy(out_fake)
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
            progress(epoch * per_epoch + i + 1, epochs * per_epoch)
    return G.eval().requires_grad_(False), D.eval().requires_grad_(False)


def kedmi_optimize(G, D, T, mu: Tensor, logvar: Tensor, y: Tensor, *, iters: int, lr: float, lam: float,
                   clip: float, scale: float, noise=None, identity=None,
                   progress: Progress = _no_progress) -> tuple[Tensor, Tensor, list[float]]:
    """Learn one Gaussian per row. ``noise(it) -> eps`` (default: standard normal draws);
    ``identity(x, y) -> per-image loss`` replaces CE (LOMMA)."""
    mu, logvar = mu.clone().requires_grad_(True), logvar.clone().requires_grad_(True)
    opt = torch.optim.Adam([mu, logvar], lr=lr)
    hist = []
    for it in range(iters):
        eps = noise(it) if noise is not None else torch.randn_like(mu)
        z = (mu + torch.exp(0.5 * logvar) * eps).clamp(-clip, clip)
        x = G(z)
        _, d_logits = D(x)
        iden = F.cross_entropy(T(x), y, reduction="none") if identity is None else identity(x, y)
        per = prior_loss(d_logits) + lam * iden
        opt.zero_grad(set_to_none=True)
        (per.sum() * scale).backward()
        opt.step()
        hist.append(per.detach().mean())
        progress(it + 1, iters)
    return mu.detach(), logvar.detach(), [h.item() for h in hist]


class KEDMI(Attack):
    name = "kedmi"
    threat_model = "white-box"
    prior_kind = "kedmi-gan"
    prior_params = ("gan_dim", "gan_epochs", "gan_batch", "gan_lr", "n_critic")
    prior_uses_target = True
    z_dim = 100
    params = {
        "gan_dim": Param(64, "GAN base width (official: 64)", low=4),
        "gan_epochs": Param(120, "GAN epochs over the public data (official: 120)", low=1),
        "gan_batch": Param(64, "GAN batch size (official: 64)", low=1),
        "gan_lr": Param(2e-4, "Adam lr of G and D (official: 2e-4)", low=0.0),
        "n_critic": Param(5, "D steps per G step (official: 5)", low=1),
        "iters": Param(2400, "recovery iterations (official: 2400)", low=1),
        "lr": Param(0.02, "Adam lr of mu and log sigma^2 (official: 0.02)", low=0.0),
        "lam": Param(100.0, "identity-loss weight (official: 100)", low=0.0),
        "clip": Param(1.0, "latent clip (official: 1)", low=0.0),
        "samples": Param(5, "reconstructions drawn per learned distribution (official: 5)", low=1),
    }
    budgets = {
        "smoke": {"gan_dim": 8, "gan_epochs": 1, "iters": 20},
        "quick": {"gan_dim": 16, "gan_epochs": 50, "iters": 400},
    }

    def prepare(self, ctx: AttackContext, kind: str) -> dict:
        c = self.config
        G, D = train_kedmi_gan(
            ctx.data.public.x, ctx.target, ctx.scenario.image_shape, ctx.scenario.num_classes, dim=c.gan_dim,
            z_dim=self.z_dim, epochs=c.gan_epochs, batch_size=c.gan_batch, lr=c.gan_lr, n_critic=c.n_critic,
            device=ctx.device, seed=ctx.seed, progress=ctx.progress,
        )
        return {"G": G.state_dict(), "D": D.state_dict()}

    def load_prior(self, prior: dict, scenario, device) -> tuple[Generator, KDiscriminator]:
        G = Generator(scenario.image_shape, self.z_dim, self.config.gan_dim)
        D = KDiscriminator(scenario.image_shape, self.config.gan_dim, scenario.num_classes)
        return frozen(G, prior["G"], device), frozen(D, prior["D"], device)

    def invert(self, ctx: AttackContext, priors: dict, classes: list[int], identity=None) -> Inversion:
        c = self.config
        G, D = self.load_prior(priors[self.prior_kind], ctx.scenario, ctx.device)
        T = ctx.target
        torch.manual_seed(ctx.seed)
        k = len(classes)
        y = torch.tensor(classes, device=ctx.device)
        mu, logvar, hist = kedmi_optimize(
            G, D, T, torch.zeros(k, self.z_dim, device=ctx.device), torch.ones(k, self.z_dim, device=ctx.device), y,
            iters=c.iters, lr=c.lr, lam=c.lam, clip=c.clip, scale=1.0 / k, identity=identity, progress=ctx.progress,
        )
        with torch.no_grad():
            eps = torch.randn(c.samples, k, self.z_dim, device=ctx.device)
            z = (mu + torch.exp(0.5 * logvar) * eps).clamp(-c.clip, c.clip).reshape(-1, self.z_dim)
            images = G(z).cpu()
        return Inversion(images, y.repeat(c.samples).cpu(), {"loss_first": hist[0], "loss_last": hist[-1]})


@hookimpl
def register_attacks():
    return [KEDMI]
