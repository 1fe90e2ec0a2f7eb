"""The GANs of the attack plugins, shared: GMI's generator and critic (GMI, BREP-MI, LOMMA+GMI;
KEDMI's generator), the alternating training loop every GAN prior runs (``train_gan``), GMI's
WGAN-GP prior (``train_wgan_gp``, ``GMIPrior``), the official loaders' batch stream, and loading
a cached network frozen for inversion. The search in latent space is ``_latent.py``.

The shapes follow GMI's official code (sunblaze-ucb/GMI-attack, ``GeneratorMNIST``/``Generator``
and ``DGWGAN32``/``DGWGAN``): a linear layer to a 4x4 map, stride-2 5x5 transposed convolutions
with BatchNorm and ReLU, tanh output; the critic mirrors it with stride-2 5x5 convolutions,
InstanceNorm (affine) and LeakyReLU(0.2), and a final 4x4 convolution to one score. ``dim`` is
the base width (64 in the official code); the number of stages follows the resolution (32 px:
three, 64 px: four), which reproduces both official variants.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reinv_bench.api import (
    NO_CHECKPOINT,
    Attack,
    AttackContext,
    Checkpoint,
    Param,
    PriorSpec,
    Progress,
    no_progress,
)

# The official GAN budget of GMI's and KEDMI's 64-px GANs, in critic (discriminator) steps: 120
# epochs (KEDMI ``config/celeba.json``; LOMMA ``config/celeba/training_GAN/{general,specific}_gan/
# celeba.json``; PLG-MI ``baselines/config/celeba.json``) over the 30,000-image CelebA ``ganset``
# (PLG-MI ``data_files/celeba_ganset.txt``) in batches of 64, ``drop_last=True``
# (``utils.init_dataloader``): 120 * 468 = 56,160 critic steps, a generator step every 5th.
OFFICIAL_GAN_STEPS = 120 * (30_000 // 64)


def _stages(size: int) -> int:
    n = int(math.log2(size // 4))
    if 4 * 2**n != size:
        raise ValueError(
            f"GAN prior needs a square power-of-two resolution >= 8, got {size} (224-px protocols "
            "are attacked with a pretrained StyleGAN: ppa or ifgmi)"
        )
    return n


class Generator(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], z_dim: int = 100, dim: int = 64) -> None:
        super().__init__()
        c, h, _ = image_shape
        n = _stages(h)
        width = dim * 2 ** (n - 1)
        self.z_dim = z_dim
        self.fc = nn.Sequential(
            nn.Linear(z_dim, width * 16, bias=False), nn.BatchNorm1d(width * 16), nn.ReLU()
        )
        layers: list[nn.Module] = []
        for _ in range(n - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 5, 2, padding=2, output_padding=1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, c, 5, 2, padding=2, output_padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.width0 = dim * 2 ** (n - 1)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.fc(z).view(len(z), self.width0, 4, 4))


class Critic(nn.Module):
    """WGAN-GP critic (one score per image). ``out`` > 1 gives KEDMI's (K+1)-way head later."""

    def __init__(self, image_shape: tuple[int, int, int], dim: int = 64, out: int = 1) -> None:
        super().__init__()
        c, h, _ = image_shape
        n = _stages(h)
        layers: list[nn.Module] = [nn.Conv2d(c, dim, 5, 2, 2), nn.LeakyReLU(0.2)]
        width = dim
        for _ in range(n - 1):
            layers += [
                nn.Conv2d(width, width * 2, 5, 2, 2),
                nn.InstanceNorm2d(width * 2, affine=True),
                nn.LeakyReLU(0.2),
            ]
            width *= 2
        layers += [nn.Conv2d(width, out, 4)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten(1).squeeze(1)


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP: E[(||grad critic(x_hat)||_2 - 1)^2] on random interpolates (Gulrajani et al. 2017)."""
    alpha = torch.rand(len(real), *([1] * (real.dim() - 1)), device=real.device)
    x = (real + alpha * (fake - real)).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return ((g.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def frozen(net: nn.Module, state: dict, device) -> nn.Module:
    """``net`` with ``state`` loaded, on ``device``, in eval mode and without gradients."""
    net.load_state_dict(state)
    return net.to(device).eval().requires_grad_(False)


def batch_stream(
    n: int,
    batch_size: int,
    steps: int,
    gen: torch.Generator,
    streams: int = 1,
    start: int = 0,
    drop_last: bool = True,
):
    """Index batches for ``steps`` training steps as the official loaders give them: every stream
    reshuffled at each pass over the ``n`` images, incomplete last batch dropped (``drop_last``;
    else kept, smaller); a set smaller than one batch is one batch. Yields a list of ``streams``
    index tensors, from step ``start`` on (the passes before it drawn and dropped: ``gen`` ends
    where it would)."""
    size = min(batch_size, n)
    per_pass = n // size if drop_last else -(-n // size)
    for _ in range(start // per_pass * streams):
        torch.randperm(n, generator=gen)
    for step in range(start, steps):
        i = step % per_pass
        if i == 0 or step == start:
            perms = [torch.randperm(n, generator=gen) for _ in range(streams)]
        yield [p[i * size : (i + 1) * size] for p in perms]


def train_gan(
    G: nn.Module,
    D: nn.Module,
    batches: Callable[[int], Iterator],
    d_loss: Callable,
    g_loss: Callable,
    *,
    steps: int,
    n_critic: int,
    lr: float,
    betas: tuple[float, float],
    g_first: bool = False,
    progress: Progress = no_progress,
    checkpoint: Checkpoint = NO_CHECKPOINT,
    state: dict[str, Any] | None = None,
) -> int:
    """The alternating loop of every GAN prior: ``steps`` discriminator (critic) steps on
    ``d_loss(batch)``, one per batch of ``batches(start)`` (the batches from step ``start`` on,
    each drawn when its step comes), and a generator step on ``g_loss(batch)`` every
    ``n_critic``, each with its Adam(``lr``, ``betas``) while the other network has no gradients.
    The generator step follows every n_critic-th D step, with its batch (GMI ``train_gan.py``,
    KEDMI ``k+1_gan.py``), or, ``g_first``, precedes each group of n_critic D steps, with None
    (PLG-MI ``train_cgan.py``). G and D end frozen in eval mode. ``checkpoint`` saves G, D, their
    optimizers, ``state`` (what else the losses and batches carry from one step to the next) and
    the random generators now and then, and resumes from them. Returns the number of generator
    steps."""
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=betas)
    loop = {"G": G, "D": D, "opt_g": opt_g, "opt_d": opt_d, **(state or {})}
    start = checkpoint.resume(steps, loop)

    def update(opt: torch.optim.Optimizer, train: nn.Module, hold: nn.Module, loss: Callable, batch) -> None:
        train.requires_grad_(True)
        hold.requires_grad_(False)
        value = loss(batch)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()

    g_steps = -(-start // n_critic) if g_first else start // n_critic  # those before ``start``
    stream = batches(start)
    for step in range(start, steps):
        if g_first and step % n_critic == 0:
            update(opt_g, G, D, g_loss, None)
            g_steps += 1
        batch = next(stream)
        update(opt_d, D, G, d_loss, batch)
        if not g_first and (step + 1) % n_critic == 0:
            update(opt_g, G, D, g_loss, batch)
            g_steps += 1
        progress(step + 1, steps)
        checkpoint.reached(step + 1, steps, loop)
    G.eval().requires_grad_(False)
    D.eval().requires_grad_(False)
    return checkpoint.finish(g_steps)


def wgan_gp_losses(G: nn.Module, D: nn.Module, z_dim: int, gp: float, device, record: list | None = None):
    """GMI's WGAN-GP losses (``train_gan.py``; PPDG-MI's ``tune_general_gan`` reuses them) on a batch
    of real images: critic -W + gp * gradient penalty, generator -D(G(z)). ``record``: a list the
    critic loss appends each W estimate to."""

    def d_loss(real: Tensor) -> Tensor:
        fake = G(torch.randn(len(real), z_dim, device=device))
        wd = D(real).mean() - D(fake).mean()
        if record is not None:
            record.append(wd.item())
        return -wd + gp * gradient_penalty(D, real, fake)

    def g_loss(real: Tensor) -> Tensor:
        return -D(G(torch.randn(len(real), z_dim, device=device))).mean()

    return d_loss, g_loss


def train_wgan_gp(
    public: Tensor,
    image_shape,
    *,
    dim: int,
    z_dim: int,
    steps: int,
    batch_size: int,
    lr: float,
    n_critic: int,
    gp: float,
    device: torch.device,
    seed: int,
    progress: Progress = no_progress,
    checkpoint: Checkpoint = NO_CHECKPOINT,
) -> tuple[Generator, Critic, dict]:
    """GMI's WGAN-GP (``train_gan.py``): critic loss -W + gp * gradient penalty, generator loss
    -D(G(z)), Adam betas (0.5, 0.999), ``steps`` critic steps and a generator step every
    ``n_critic``."""
    torch.manual_seed(seed)
    G, D = Generator(image_shape, z_dim, dim).to(device), Critic(image_shape, dim).to(device)
    x = public.to(device)

    def batches(start: int) -> Iterator[Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return (x[idx.to(device)] for (idx,) in batch_stream(len(x), batch_size, steps, gen, start=start))

    wd_hist: list[float] = []
    d_loss, g_loss = wgan_gp_losses(G, D, z_dim, gp, device, wd_hist)
    g_steps = train_gan(
        G,
        D,
        batches,
        d_loss,
        g_loss,
        steps=steps,
        n_critic=n_critic,
        lr=lr,
        betas=(0.5, 0.999),
        progress=progress,
        checkpoint=checkpoint,
        state={"wasserstein": wd_hist},
    )
    return (
        G,
        D,
        {
            "critic_steps": steps,
            "generator_steps": g_steps,
            "final_wasserstein": sum(wd_hist[-50:]) / max(1, len(wd_hist[-50:])),
        },
    )


GAN_PARAMS = {
    "gan_dim": Param(64, "GAN base width (official: 64)", low=4),
    "gan_steps": Param(
        OFFICIAL_GAN_STEPS,
        "GAN critic steps, a generator step every n_critic (official: 120 "
        "epochs over the 30,000-image ganset in batches of 64 = 56,160)",
        low=1,
    ),
    "gan_batch": Param(64, "GAN batch size (official: 64)", low=1),
    "gan_lr": Param(2e-4, "Adam lr of generator and critic (official: 2e-4)", low=0.0),
    "n_critic": Param(5, "critic steps per generator step (official: 5)", low=1),
    "gp": Param(10.0, "gradient-penalty weight (official: 10)", low=0.0),
}
# the digits' public half is ~2,500 images (39 batches of 64): smoke ~1 pass, quick ~60 passes
GAN_BUDGETS = {"smoke": {"gan_dim": 8, "gan_steps": 40}, "quick": {"gan_dim": 16, "gan_steps": 2400}}


class GMIPrior(Attack):
    """The public WGAN-GP prior of GMI, shared (one cached artifact per scenario and GAN
    config) by every attack that uses it: gmi, brepmi, lomma+gmi. Subclasses add ``params``
    (with ``GAN_PARAMS``) and ``invert``."""

    prior_kind = "gmi-gan"
    prior_params = tuple(GAN_PARAMS)
    gan_version: ClassVar[int] = 2  # the prior's own version (gmi 2's GAN): bump when train_wgan_gp changes
    z_dim = 100

    def priors(self) -> list[PriorSpec]:
        return [replace(p, version=self.gan_version) for p in super().priors()]

    def prepare(self, ctx: AttackContext, kind: str) -> dict:
        c = self.config
        G, D, info = train_wgan_gp(
            ctx.data.public.x,
            ctx.scenario.image_shape,
            dim=c.gan_dim,
            z_dim=self.z_dim,
            steps=c.gan_steps,
            batch_size=c.gan_batch,
            lr=c.gan_lr,
            n_critic=c.n_critic,
            gp=c.gp,
            device=ctx.device,
            seed=ctx.seed,
            progress=ctx.progress,
            checkpoint=ctx.checkpoint,
        )
        return {"G": G.state_dict(), "D": D.state_dict(), "info": info}

    def load_prior(self, prior: dict, image_shape, device) -> tuple[Generator, Critic]:
        G, D = (
            Generator(image_shape, self.z_dim, self.config.gan_dim),
            Critic(image_shape, self.config.gan_dim),
        )
        return frozen(G, prior["G"], device), frozen(D, prior["D"], device)

    def canary_images(self, priors: dict, n: int, seed: int, image_shape: tuple[int, ...]) -> Tensor:
        """``n`` samples G(z) of the public WGAN-GP prior, z ~ N(0, I) as GMI's inversion starts
        (``latent_init``), from a generator seeded by ``seed``: ``--canaries`` plants them."""
        G = frozen(
            Generator(image_shape, self.z_dim, self.config.gan_dim), priors[self.prior_kind]["G"], "cpu"
        )
        z = torch.randn(n, self.z_dim, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            return G(z).clamp(-1, 1).float()


# ---- KEDMI's GAN objective (kedmi's prior; ppdg+kedmi's fine-tune) --------------------------------


def soft_xent(logits: Tensor, target_logits: Tensor) -> Tensor:
    return -(F.softmax(target_logits, 1) * F.log_softmax(logits, 1)).sum() / len(logits)


def entropy(logits: Tensor) -> Tensor:
    return -(F.softmax(logits, 1) * F.log_softmax(logits, 1)).sum()


def kedmi_d_loss(D, T, x_lab: Tensor, x_unl: Tensor, fake: Tensor) -> Tensor:
    with torch.no_grad():
        soft = T(x_lab)
    _, out_lab = D(x_lab)
    _, out_unl = D(x_unl)
    _, out_fake = D(fake)
    lse_u, lse_f = torch.logsumexp(out_unl, 1), torch.logsumexp(out_fake, 1)
    unl = 0.5 * (F.softplus(lse_u).mean() - lse_u.mean() + F.softplus(lse_f).mean())
    return soft_xent(out_lab, soft) + unl


def kedmi_g_loss(D, fake: Tensor, x_unl: Tensor) -> Tensor:
    """Feature matching on D's conv features plus 1e-4 * entropy of D on the fakes."""
    f_fake, out_fake = D(fake)
    f_real, _ = D(x_unl)
    return (f_fake.mean(0) - f_real.mean(0)).abs().mean() + 1e-4 * entropy(out_fake)
