"""``kedmi``: Knowledge-Enriched Distributional Model Inversion.

Paper: Chen, Jia, Wang, Wang, Li, Yu. "Knowledge-Enriched Distributional Model Inversion
Attacks." ICCV 2021. Code: github.com/SCccc21/Knowledge-Enriched-DMI (``k+1_gan.py``,
``recovery.py``, ``attack.py::dist_inversion``, ``discri.py::MinibatchDiscriminator``,
``utils.py::softXEnt``, ``HLoss``, ``config/celeba.json``).

Prior (target-dependent: one per target, cached): an inversion-specific GAN on the public data.
The discriminator (``KDiscriminator``, the official ``MinibatchDiscriminator``) has K logits (the
(K+1)-th "fake" class is implicit: log-sum-exp trick of the improved GAN) over its conv features
plus minibatch discrimination. Its loss on public batches: ``softXEnt(D(x), softmax(T(x)))``
(the target's soft labels) ``+ 1/2 [softplus(LSE(D(x_u))) - LSE(D(x_u)) + softplus(LSE(D(G(z))))]``.
The generator minimises feature matching ``mean|E[f(G(z))] - E[f(x_u2)]|`` on the conv features
*before* minibatch discrimination, plus ``1e-4 * entropy`` of D's prediction on fakes (HLoss:
summed over the batch). Adam lr 2e-4, betas (0.5, 0.999), batch 64, a generator step every 5 D
steps; ``paper`` budget 56,160 D steps = the official 120 epochs over the 30,000-image
``ganset`` in batches of 64 with ``drop_last`` (``_gan.OFFICIAL_GAN_STEPS``).

Distributional recovery: per attacked class learn mu and log sigma^2 in R^100 (init 0 and 1);
each step z = mu + sigma * eps, *not* clamped (official ``dist_inversion``: its clamp is applied
after the step to a z that is never used); loss ``softplus(LSE(D(G(z)))) - LSE(D(G(z))) + 100 *
CE(T(G(z)), y)``, the mean over an identity batch of 60 classes (``recovery.py``); Adam lr 0.02,
2400 iterations in ``paper``. Reconstructions: 5 samples z = mu + sigma * eps from each learned
distribution, unclamped. ``clamp=1`` gives LOMMA's re-implementation (Re-thinking_MI
``attack.py::dist_inversion`` with ``clipz``, ``metrics/fid.py::gen_samples``), which clamps z
to [-1, 1] in recovery and sampling. ``optimizer=sgd`` (momentum 0.9) and ``std_offset=5`` give
AlignMI's KEDMI base (AlanPeng0897/AlignMI ``low_resolution/attacks/optimize.py::kedmi_optimize``,
``reparameterize_batch``: sigma + 5; ``configs/attacking/ked_dcgan-*.yaml``: SGD lr 0.01; see
``align``).

Deliberate differences: each class draws its noise from its own seeded stream (so identity
batching does not change a class's reconstruction) rather than one global stream; the target
giving soft labels is in eval mode (the official ``k+1_gan.py`` never calls ``T.eval()``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reinv_bench import hookimpl
from reinv_bench.api import (
    NO_CHECKPOINT,
    Attack,
    AttackContext,
    Checkpoint,
    IdentityLoss,
    Inversion,
    Param,
    Progress,
    no_progress,
)

from ._gan import (  # KEDMI's GAN losses live in _gan: ppdg+kedmi fine-tunes with them
    OFFICIAL_GAN_STEPS,
    Generator,
    _stages,
    batch_stream,
    frozen,
    kedmi_d_loss,
    kedmi_g_loss,
    soft_xent,  # noqa: F401 (re-exported: kedmi's soft labels loss, tested here)
    train_gan,
)
from ._latent import class_generator, descend, in_identity_batches

NOISE_STREAM = 7919  # the classes' recovery noise, apart from the restart streams of latent_init


class MinibatchDiscrimination(nn.Module):
    """Salimans et al. 2016: L1 closeness of each sample to the others in learned projections
    (official ``discri.py::MinibatchDiscrimination``: tensor (in, out, kernel_dims) ~ N(0, 1))."""

    def __init__(self, in_features: int, out_features: int = 64, kernel_dims: int = 50) -> None:
        super().__init__()
        self.T = nn.Parameter(torch.randn(in_features, out_features, kernel_dims))

    def forward(self, x: Tensor) -> Tensor:
        m = (x @ self.T.flatten(1)).view(len(x), *self.T.shape[1:]).transpose(0, 1)  # (out, N, kd)
        close = torch.exp(-torch.cdist(m, m, p=1))  # (out, N, N): L1 distances, one matrix per feature
        return torch.cat([x, close.sum(2).T - 1], dim=1)


def _conv_in_lrelu(c_in: int, c_out: int, k: int, p: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, 2, p), nn.InstanceNorm2d(c_out, affine=True), nn.LeakyReLU(0.2)
    )


class KDiscriminator(nn.Module):
    """Official ``discri.py::MinibatchDiscriminator``: four stride-2 convolutions (5x5 to dim,
    2 dim, 4 dim, then 3x3 keeping 4 dim), each with affine InstanceNorm and LeakyReLU(0.2);
    minibatch discrimination (64 features of 50 kernel dims) on the flattened conv features; a
    linear layer to K logits. Returns (conv features before minibatch discrimination, logits).
    At 32 px the same layers end in a 2x2 map (LOMMA ``models/discri.py::
    MinibatchDiscriminator_MNIST``)."""

    def __init__(self, image_shape: tuple[int, int, int], dim: int, num_classes: int) -> None:
        super().__init__()
        c, h, _ = image_shape
        if _stages(h) < 2:
            raise ValueError(f"the KEDMI discriminator needs at least 16 px, got {h}")
        self.trunk = nn.Sequential(
            _conv_in_lrelu(c, dim, 5, 2),
            _conv_in_lrelu(dim, dim * 2, 5, 2),
            _conv_in_lrelu(dim * 2, dim * 4, 5, 2),
            _conv_in_lrelu(dim * 4, dim * 4, 3, 1),
            nn.Flatten(),
        )
        feat = dim * 4 * (h // 16) ** 2
        self.mbd = MinibatchDiscrimination(feat, 64, 50)
        self.fc = nn.Linear(feat + 64, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feat = self.trunk(x)
        return feat, self.fc(self.mbd(feat))


def prior_loss(d_logits: Tensor) -> Tensor:
    """Per-sample improved-GAN 'realness' loss: softplus(LSE) - LSE."""
    lse = torch.logsumexp(d_logits, 1)
    return F.softplus(lse) - lse


def train_kedmi_gan(
    public: Tensor,
    T,
    image_shape,
    num_classes: int,
    *,
    dim: int,
    z_dim: int,
    steps: int,
    batch_size: int,
    lr: float,
    n_critic: int,
    device,
    seed: int,
    progress: Progress = no_progress,
    checkpoint: Checkpoint = NO_CHECKPOINT,
) -> tuple[Generator, KDiscriminator]:
    """``steps`` D steps; each reads three independently shuffled batches (labelled, unlabelled,
    and the unlabelled batch of the generator step), as the official three loaders."""
    torch.manual_seed(seed)
    G, D = (
        Generator(image_shape, z_dim, dim).to(device),
        KDiscriminator(image_shape, dim, num_classes).to(device),
    )
    x = public.to(device)

    def batches(start: int):  # (labelled, unlabelled, unlabelled for G) from step ``start`` on
        gen = torch.Generator().manual_seed(seed)
        return (
            [x[i.to(device)] for i in idx] for idx in batch_stream(len(x), batch_size, steps, gen, 3, start)
        )

    def d_loss(b: list[Tensor]) -> Tensor:
        return kedmi_d_loss(D, T, b[0], b[1], G(torch.randn(len(b[0]), z_dim, device=device)))

    def g_loss(b: list[Tensor]) -> Tensor:
        return kedmi_g_loss(D, G(torch.randn(len(b[0]), z_dim, device=device)), b[2])

    train_gan(
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
    )
    return G, D


def kedmi_optimize(
    G,
    D,
    T,
    mu: Tensor,
    logvar: Tensor,
    y: Tensor,
    *,
    iters: int,
    lr: float,
    lam: float,
    clip: float,
    scale: float,
    optimizer: str = "adam",
    std_offset: float = 0.0,
    noise=None,
    identity=None,
    progress: Progress = no_progress,
) -> tuple[Tensor, Tensor, list[float]]:
    """Learn one Gaussian per row. ``noise(it) -> eps`` (default: standard normal draws);
    ``clip`` > 0 clamps z to [-clip, clip] before G (LOMMA's variant; 0: none, as KEDMI);
    ``identity(x, y) -> per-image loss`` replaces CE (LOMMA); ``optimizer`` ``sgd``: SGD with momentum
    0.9 and ``std_offset`` added to sigma (AlignMI's KEDMI base)."""
    mu, logvar = mu.clone().requires_grad_(True), logvar.clone().requires_grad_(True)

    def loss(it: int) -> Tensor:
        x = G(sample(mu, logvar, noise(it) if noise is not None else torch.randn_like(mu), clip, std_offset))
        _, d_logits = D(x)
        iden = F.cross_entropy(T(x), y, reduction="none") if identity is None else identity(x, y)
        return prior_loss(d_logits) + lam * iden

    params = [mu, logvar]
    opt = (
        torch.optim.SGD(params, lr=lr, momentum=0.9)
        if optimizer == "sgd"
        else torch.optim.Adam(params, lr=lr)
    )
    hist = descend(opt, loss, iters=iters, scale=scale, progress=progress)
    return mu.detach(), logvar.detach(), hist


def sample(mu: Tensor, logvar: Tensor, eps: Tensor, clip: float = 0.0, std_offset: float = 0.0) -> Tensor:
    """z = mu + sigma * eps (official ``reparameterize``; sigma = exp(logvar / 2) + ``std_offset``:
    AlignMI's ``reparameterize_batch`` adds 5), clamped to [-clip, clip] if clip > 0."""
    z = mu + (torch.exp(0.5 * logvar) + std_offset) * eps
    return z.clamp(-clip, clip) if clip > 0 else z


class KEDMI(Attack):
    name = "kedmi"
    threat_model = "white-box"
    version = 2  # 2: official discriminator, no clamp, identity batches, GAN budget in steps
    prior_kind = "kedmi-gan"
    prior_params = ("gan_dim", "gan_steps", "gan_batch", "gan_lr", "n_critic")
    prior_uses_target = True
    accepts_identity = True
    z_dim = 100
    params = {
        "gan_dim": Param(64, "GAN base width (official: 64)", low=4),
        "gan_steps": Param(
            OFFICIAL_GAN_STEPS,
            "GAN discriminator steps, a generator step every n_critic "
            "(official: 120 epochs over the 30,000-image ganset in batches of 64 = 56,160)",
            low=1,
        ),
        "gan_batch": Param(64, "GAN batch size (official: 64)", low=1),
        "gan_lr": Param(2e-4, "Adam lr of G and D (official: 2e-4)", low=0.0),
        "n_critic": Param(5, "D steps per G step (official: 5)", low=1),
        "iters": Param(2400, "recovery iterations (official: 2400)", low=1),
        "lr": Param(0.02, "Adam lr of mu and log sigma^2 (official: 0.02)", low=0.0),
        "lam": Param(100.0, "identity-loss weight (official: 100)", low=0.0),
        "clamp": Param(
            0.0,
            "clamp z to [-clamp, clamp] in recovery and sampling; 0: none (official KEDMI); "
            "1: LOMMA's re-implementation",
            low=0.0,
        ),
        "samples": Param(5, "reconstructions drawn per learned distribution (official: 5)", low=1),
        "batch_ids": Param(60, "classes per identity batch; the loss is their mean (official: 60)", low=1),
        "optimizer": Param(
            "adam",
            "optimiser of mu and log sigma^2: adam (official KEDMI, LOMMA) or sgd (momentum 0.9: "
            "AlignMI's KEDMI base, with lr 0.01)",
            choices=("adam", "sgd"),
            new=True,  # added with AlignMI's base: stored kedmi steps keep their keys at adam
        ),
        "std_offset": Param(
            0.0,
            "added to sigma = exp(log sigma^2 / 2) in recovery and sampling (AlignMI's "
            "reparameterize_batch: 5; official KEDMI: 0)",
            low=0.0,
            new=True,
        ),
    }
    budgets = {  # the digits' public half is ~2,500 images (39 batches of 64)
        "smoke": {"gan_dim": 8, "gan_steps": 40, "iters": 20},
        "quick": {"gan_dim": 16, "gan_steps": 2000, "iters": 400},
    }

    def prepare(self, ctx: AttackContext, kind: str) -> dict:
        c = self.config
        G, D = train_kedmi_gan(
            ctx.data.public.x,
            ctx.target,
            ctx.scenario.image_shape,
            ctx.scenario.num_classes,
            dim=c.gan_dim,
            z_dim=self.z_dim,
            steps=c.gan_steps,
            batch_size=c.gan_batch,
            lr=c.gan_lr,
            n_critic=c.n_critic,
            device=ctx.device,
            seed=ctx.seed,
            progress=ctx.progress,
            checkpoint=ctx.checkpoint,
        )
        return {"G": G.state_dict(), "D": D.state_dict()}

    def load_prior(self, prior: dict, scenario, device) -> tuple[Generator, KDiscriminator]:
        G = Generator(scenario.image_shape, self.z_dim, self.config.gan_dim)
        D = KDiscriminator(scenario.image_shape, self.config.gan_dim, scenario.num_classes)
        return frozen(G, prior["G"], device), frozen(D, prior["D"], device)

    def invert(
        self, ctx: AttackContext, priors: dict, classes: list[int], identity: IdentityLoss | None = None
    ) -> Inversion:
        c, dev = self.config, ctx.device
        iters, loss = (identity.iters or c.iters, identity.loss) if identity else (c.iters, None)
        G, D = self.load_prior(priors[self.prior_kind], ctx.scenario, dev)

        def attack(ids: list[int], progress: Progress) -> tuple[Tensor, list[float]]:
            k = len(ids)
            # each class's own noise stream: the recovery draws, then the samples
            gens = [class_generator(ctx.seed, cls, NOISE_STREAM) for cls in ids]
            eps = torch.stack([torch.randn(iters + c.samples, self.z_dim, generator=g) for g in gens], 1).to(
                dev
            )
            mu, logvar, hist = kedmi_optimize(
                G,
                D,
                ctx.target,
                torch.zeros(k, self.z_dim, device=dev),
                torch.ones(k, self.z_dim, device=dev),
                torch.tensor(ids, device=dev),
                iters=iters,
                lr=c.lr,
                lam=c.lam,
                clip=c.clamp,
                scale=1.0 / k,
                optimizer=c.optimizer,
                std_offset=c.std_offset,
                noise=eps.__getitem__,
                identity=loss,
                progress=progress,
            )
            with torch.no_grad():
                z = sample(mu, logvar, eps[iters:], c.clamp, c.std_offset)  # (samples, k, z_dim)
                return G(z.flatten(0, 1)).cpu().unflatten(0, z.shape[:2]), hist

        return in_identity_batches(ctx, classes, c.batch_ids, c.samples, attack)  # sample major, class minor


@hookimpl
def register_attacks():
    return [KEDMI]
