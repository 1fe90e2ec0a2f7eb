"""``plgmi``: Pseudo Label-Guided Model Inversion.

Paper: Yuan, Chen, Zhang, Zhang, Yu. "Pseudo Label-Guided Model Inversion Attack via Conditional
Generative Adversarial Network." AAAI 2023. Code: github.com/LetheSec/PLG-MI-Attack
(``top_n_selection.py::top_n_selection``, ``train_cgan.py::main``, ``reconstruct.py::inversion``,
``models/generators/resnet64.py``, ``models/discriminators/snresnet64.py``, ``losses.py``).

1. Top-n selection (target-dependent prior): for every class, the n public images to which the
   target gives that class the highest softmax probability (n = 30, README) form a
   pseudo-labelled public set; ranked per class over all images, so an image may serve several
   classes, as the official per-class priority queue does.
2. A conditional GAN on it, at the official width: ``ResNetGenerator`` (z in R^128, a linear
   layer to 16*ch channels at 4x4, four upsampling residual blocks with categorical conditional
   BatchNorm and bilinear upsampling down to ch channels, BatchNorm, ReLU, a 1x1 convolution and
   tanh) and ``SNResNetProjectionDiscriminator`` (spectral norm, an optimized block to ch then
   four downsampling blocks to 16*ch whose hidden width is their input width, ReLU, sum pooling,
   linear + projection head; Xavier-uniform init, gain sqrt 2 in the residual convolutions); ch
   = ``gan_ch`` = 64. Hinge loss; the generator adds 0.2 * max-margin loss of the target on
   augmented fakes, max-margin = -logit_y + max_{j != y} logit_j. Adam lr 2e-4, betas (0, 0.9),
   batch 64, 5 discriminator steps per generator step; the real images get the official
   dequantisation noise U(0, 1/256) (``_noise_adder``). Budget in generator iterations:
   ``paper`` = 30,000 (``train_cgan.py --max_iteration``, README), i.e. 150,000 discriminator
   steps, whatever the size of the public set.
3. Reconstruction: optimise z ~ N(0, I) (5 seeds per class) for the class's generator with Adam
   lr 0.1, 600 iterations, the max-margin loss on 2 random augmentations per step.

Augmentations (kornia ``ImageSequential`` of both scripts): RandomResizedCrop(scale 0.8-1, ratio
1), ColorJitter(brightness 0.2, contrast 0.2; p = 1 when reconstructing, 0.5 when training the
cGAN), RandomHorizontalFlip (p 0.5), RandomRotation(5 degrees, p 0.5, black outside). Brightness
and contrast follow kornia's PIL-like ColorJitter (factor in [0.8, 1.2], contrast about the
per-image grey mean, clamped to [0, 1], in a random order per call), per image.

The depths follow the resolution: at 64 px exactly the official networks, at 32 px one block
fewer on each side (top width 8*ch).
tests/test_fidelity_plgmi_brepmi.py compares the networks (parameter counts, outputs with shared
weights, initialisation), the augmentation parameters, the top-n selection and the
reconstruction step with transcriptions of the official code.

Classes are attacked in identity batches of ``batch_ids`` = 60, the loss summed over the 2
augmentations and averaged over the batch's classes, as the official loop does; the 5 seeds of a
batch are optimised together rather than one after another, which leaves each latent's update
exactly the official one (Adam is elementwise and the frozen generator's BatchNorm uses its
running statistics). At paper width one batch of 60 x 5 latents peaks at about 11 GiB on a GPU
(``benchmarks/paper_memory.sh``); all 300 classes in one batch needed 54 GiB.

Deliberate differences: the seeds of a batch share one optimisation (above); the augmentations
draw from a stream seeded by the batch's first class (so a class chunk aligned with the identity
batch reproduces the unchunked inversion), not from the global stream. Crop, flip and rotation
are one affine warp with continuous crop offsets, so a rotated corner shows image content beyond
the crop where there is some (kornia pads the rotated crop black). Real batches come from a
shuffled stream over the selected images (the official ``InfiniteSampler``) without its quirk of
starting at the permutation's last index. Real and generated images share the scenario's [-1, 1]
range (the official reals are in [0, 1] beside a tanh generator); the colour jitter works on
pixels in [0, 1] as kornia 0.6.6 (the official requirement) does. On one-channel images the
contrast mean is the pixel mean (kornia's ColorJitter needs RGB).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm as SN

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

from ._gan import _stages, frozen, train_gan
from ._latent import class_generator, descend, in_identity_batches, latent_init

AUG_STREAM = 1_000  # class_generator stream of a batch's augmentations (latents use streams 0..seeds-1)


def max_margin(logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample -logit_y + max_{j != y} logit_j (official ``losses.max_margin_loss`` before its mean)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return -true + other


def augment(
    x: Tensor,
    scale=(0.8, 1.0),
    brightness: float = 0.2,
    contrast: float = 0.2,
    jitter_p: float = 1.0,
    flip_p: float = 0.5,
    degrees: float = 5.0,
    rot_p: float = 0.5,
) -> Tensor:
    """The official augmentation of ``reconstruct.py`` (defaults; ``train_cgan.py`` passes
    ``jitter_p=0.5``), per image and differentiable in the image; see the module docstring."""
    n, dev = len(x), x.device

    def u() -> Tensor:
        return torch.rand(n, device=dev)

    s = (scale[0] + (scale[1] - scale[0]) * u()).sqrt()  # side fraction of the square crop
    cx, cy = (1 - s) * (2 * u() - 1), (1 - s) * (2 * u() - 1)
    flip = torch.where(u() < flip_p, -1.0, 1.0)
    a = torch.where(u() < rot_p, (2 * u() - 1) * degrees, 0.0) * math.pi / 180
    cos, sin = torch.cos(a) * s, torch.sin(a) * s
    theta = torch.stack([torch.stack([cos * flip, -sin, cx], 1), torch.stack([sin * flip, cos, cy], 1)], 1)
    p = F.grid_sample(
        x * 0.5 + 0.5, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False
    )  # pixel space, black outside the image
    on = (u() < jitter_p)[:, None, None, None]
    b = torch.where(on, 1 + brightness * (2 * u() - 1)[:, None, None, None], 1.0)
    c = torch.where(on, 1 + contrast * (2 * u() - 1)[:, None, None, None], 1.0)
    luma = torch.tensor([0.299, 0.587, 0.114], device=dev)[:, None, None] if x.shape[1] == 3 else 1.0

    def bright(p: Tensor) -> Tensor:
        return (p * b).clamp(0, 1)

    def contr(p: Tensor) -> Tensor:
        mean = (
            (p * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True)
            if x.shape[1] == 3
            else p.mean((1, 2, 3), keepdim=True)
        )
        return (p * c + mean * (1 - c)).clamp(0, 1)

    p = contr(bright(p)) if torch.rand(()) < 0.5 else bright(contr(p))
    return (p - 0.5) / 0.5


def dequantise(x: Tensor) -> Tensor:
    """The official ``_noise_adder`` of the real images, U(0, 1/256) in [0, 1] pixels."""
    return x + torch.rand_like(x) * (2 / 256)


def _up(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class CondBN(nn.BatchNorm2d):
    """Categorical conditional BatchNorm: BatchNorm without affine, then a per-class scale
    (init 1) and shift (init 0)."""

    def __init__(self, num_classes: int, ch: int) -> None:
        super().__init__(ch, affine=False)
        self.weights, self.biases = nn.Embedding(num_classes, ch), nn.Embedding(num_classes, ch)
        nn.init.ones_(self.weights.weight)
        nn.init.zeros_(self.biases.weight)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(x) * self.weights(y)[:, :, None, None] + self.biases(y)[:, :, None, None]


class GBlock(nn.Module):
    def __init__(self, cin: int, cout: int, num_classes: int) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(cin, cout, 3, 1, 1), nn.Conv2d(cout, cout, 3, 1, 1)
        self.b1, self.b2 = CondBN(num_classes, cin), CondBN(num_classes, cout)
        self.c_sc = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.c2(F.relu(self.b2(self.c1(_up(F.relu(self.b1(x, y)))), y)))
        return h + self.c_sc(_up(x))


class CGenerator(nn.Module):
    def __init__(self, image_shape, num_classes: int, ch: int = 64, z_dim: int = 128) -> None:
        super().__init__()
        c, h, _ = image_shape
        n = _stages(h)  # 4 at 64 px
        self.top = ch * 2**n  # 16 * ch at 64 px
        self.l1 = nn.Linear(z_dim, self.top * 16)
        self.blocks = nn.ModuleList(
            GBlock(ch * 2 ** (n - i), ch * 2 ** (n - 1 - i), num_classes) for i in range(n)
        )
        self.bn = nn.BatchNorm2d(ch)
        self.out = nn.Conv2d(ch, c, 1)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        h = self.l1(z).view(len(z), self.top, 4, 4)
        for b in self.blocks:
            h = b(h, y)
        return torch.tanh(self.out(F.relu(self.bn(h))))


def _sn(m: nn.Module, gain: float = 1.0) -> nn.Module:
    nn.init.xavier_uniform_(m.weight, gain)
    return SN(m)


class DBlock(nn.Module):
    """A downsampling residual block; ``first``: the official ``OptimizedBlock``."""

    def __init__(self, cin: int, cout: int, first: bool = False) -> None:
        super().__init__()
        hidden = cout if first else cin
        self.c1 = _sn(nn.Conv2d(cin, hidden, 3, 1, 1), math.sqrt(2))
        self.c2 = _sn(nn.Conv2d(hidden, cout, 3, 1, 1), math.sqrt(2))
        self.c_sc = _sn(nn.Conv2d(cin, cout, 1))
        self.first = first

    def forward(self, x: Tensor) -> Tensor:
        h = self.c2(F.relu(self.c1(x if self.first else F.relu(x))))
        return F.avg_pool2d(h, 2) + F.avg_pool2d(self.c_sc(x), 2)


class ProjectionDiscriminator(nn.Module):
    def __init__(self, image_shape, num_classes: int, ch: int = 64) -> None:
        super().__init__()
        c, h, _ = image_shape
        n = _stages(h)  # 5 downsampling blocks at 64 px
        self.blocks = nn.Sequential(
            DBlock(c, ch, first=True), *(DBlock(ch * 2**i, ch * 2 ** (i + 1)) for i in range(n))
        )
        self.l = _sn(nn.Linear(ch * 2**n, 1))
        self.embed = _sn(nn.Embedding(num_classes, ch * 2**n))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = F.relu(self.blocks(x)).sum((2, 3))
        return self.l(h).squeeze(1) + (self.embed(y) * h).sum(1)


def top_n(T, public: Tensor, num_classes: int, n: int, device) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        probs = torch.cat(
            [T(public[i : i + 512].to(device)).softmax(1).cpu() for i in range(0, len(public), 512)]
        )
    idx = probs.topk(min(n, len(public)), dim=0).indices  # (n, K): per class, the most confident images
    return public[idx.T.reshape(-1)], torch.arange(num_classes).repeat_interleave(idx.shape[0])


def train_cgan(
    x: Tensor,
    y: Tensor,
    T,
    image_shape,
    num_classes: int,
    *,
    ch: int,
    z_dim: int,
    iters: int,
    batch_size: int,
    lr: float,
    n_dis: int,
    alpha: float,
    device,
    seed: int,
    progress: Progress = no_progress,
    checkpoint: Checkpoint = NO_CHECKPOINT,
):
    """``iters`` generator steps, each before ``n_dis`` discriminator steps, Adam betas (0, 0.9):
    hinge loss; the generator adds ``alpha`` times the target's max-margin loss on augmented fakes."""
    torch.manual_seed(seed)
    G, D = (
        CGenerator(image_shape, num_classes, ch, z_dim).to(device),
        ProjectionDiscriminator(image_shape, num_classes, ch).to(device),
    )
    x, y = x.to(device), y.to(device)

    # a shuffled stream over the selected images, dequantised; what is left of the current
    # shuffle is kept in ``left`` (a checkpoint saves it, with the random generators)
    left = {"order": torch.empty(0, dtype=torch.long)}

    def reals(start: int):
        while True:
            order = left["order"].to(device)
            while len(order) < batch_size:
                order = torch.cat([order, torch.randperm(len(x), device=device)])
            idx, left["order"] = order[:batch_size], order[batch_size:]
            yield dequantise(x[idx]), y[idx]

    def fakes(grad: bool = True) -> tuple[Tensor, Tensor]:
        yf = torch.randint(0, num_classes, (batch_size,), device=device)
        with torch.set_grad_enabled(grad):
            return G(torch.randn(batch_size, z_dim, device=device), yf), yf

    def d_loss(batch: tuple[Tensor, Tensor]) -> Tensor:
        fake, yf = fakes(grad=False)
        return F.relu(1 - D(*batch)).mean() + F.relu(1 + D(fake, yf)).mean()

    def g_loss(_) -> Tensor:
        fake, yf = fakes()
        return -D(fake, yf).mean() + alpha * max_margin(T(augment(fake, jitter_p=0.5)), yf).mean()

    train_gan(
        G,
        D,
        reals,
        d_loss,
        g_loss,
        steps=iters * n_dis,
        n_critic=n_dis,
        lr=lr,
        betas=(0.0, 0.9),
        g_first=True,
        progress=progress,
        checkpoint=checkpoint,
        state={"reals": left},
    )
    return G


def plg_optimize(
    G,
    T,
    z: Tensor,
    y: Tensor,
    *,
    iters: int,
    lr: float,
    n_aug: int,
    scale: float,
    aug=augment,
    progress: Progress = no_progress,
    identity=None,
) -> tuple[Tensor, list[float]]:
    """Adam on every row at once: the loss is ``scale`` times the sum over rows of the max-margin
    losses summed over ``n_aug`` augmentations. Returns (z, mean max-margin per iteration).
    ``identity(x, y)`` (a wrapper's, per image, on the augmented images) replaces the max-margin."""
    z = z.clone().requires_grad_(True)
    term = (lambda x, y: max_margin(T(x), y)) if identity is None else identity

    def loss(it: int) -> Tensor:
        x = G(z, y)
        return sum(term(aug(x), y) for _ in range(n_aug))  # summed over augmentations, as official

    hist = descend(torch.optim.Adam([z], lr=lr), loss, iters=iters, scale=scale, progress=progress)
    return z.detach(), [h / n_aug for h in hist]


class PLGMI(Attack):
    name = "plgmi"
    # 2: official cGAN widths, augmentation, dequantisation noise and real-batch stream; 3: identity batches
    version = 3
    threat_model = "white-box"
    optimiser = "adam"  # its search's optimiser (Attack.optimisation; --reported)
    prior_kind = "plgmi-cgan"
    prior_params = ("top_n", "gan_ch", "gan_iters", "gan_batch", "gan_lr", "n_dis", "alpha")
    prior_uses_target = True
    accepts_identity = True  # adaptive+plgmi: the identity replaces the max-margin loss
    z_dim = 128
    params = {
        "top_n": Param(30, "public images selected per class (official: 30)", low=1),
        "gan_ch": Param(64, "cGAN base width ch; widths run ch..16*ch at 64 px (official: 64)", low=4),
        "gan_iters": Param(
            30000, "generator iterations, n_dis discriminator steps each (official: 30,000)", low=1
        ),
        "gan_batch": Param(64, "cGAN batch size (official: 64)", low=1),
        "gan_lr": Param(2e-4, "Adam lr, betas (0, 0.9) (official: 2e-4)", low=0.0),
        "n_dis": Param(5, "discriminator steps per generator step (official: 5)", low=1),
        "alpha": Param(0.2, "weight of the max-margin loss in G's loss (official: 0.2)", low=0.0),
        "iters": Param(600, "reconstruction iterations (official: 600)", low=1),
        "lr": Param(0.1, "reconstruction Adam lr (official: 0.1)", low=0.0),
        "n_aug": Param(2, "augmentations per step (official: 2)", low=1),
        "seeds": Param(5, "latents per class (official: 5)", low=1),
        "batch_ids": Param(60, "classes per identity batch; the loss is their mean (official: 60)", low=1),
    }
    budgets = {
        "smoke": {"gan_ch": 8, "gan_iters": 3, "n_dis": 2, "iters": 10, "seeds": 2},
        "quick": {"gan_ch": 16, "gan_iters": 150, "iters": 200},
    }

    def prepare(self, ctx: AttackContext, kind: str) -> dict:
        c, K = self.config, ctx.scenario.num_classes
        x, y = top_n(ctx.target, ctx.data.public.x, K, c.top_n, ctx.device)
        G = train_cgan(
            x,
            y,
            ctx.target,
            ctx.scenario.image_shape,
            K,
            ch=c.gan_ch,
            z_dim=self.z_dim,
            iters=c.gan_iters,
            batch_size=c.gan_batch,
            lr=c.gan_lr,
            n_dis=c.n_dis,
            alpha=c.alpha,
            device=ctx.device,
            seed=ctx.seed,
            progress=ctx.progress,
            checkpoint=ctx.checkpoint,
        )
        return {"G": G.state_dict()}

    def identity_term(self, logits: Tensor, y: Tensor) -> Tensor:
        return max_margin(logits, y)

    def invert(
        self, ctx: AttackContext, priors: dict, classes: list[int], identity: IdentityLoss | None = None
    ) -> Inversion:
        c = self.config
        iters, loss = (identity.iters or c.iters, identity.loss) if identity else (c.iters, None)
        G = frozen(
            CGenerator(ctx.scenario.image_shape, ctx.scenario.num_classes, c.gan_ch, self.z_dim),
            priors[self.prior_kind]["G"],
            ctx.device,
        )

        def attack(ids: list[int], progress: Progress) -> tuple[Tensor, list[float]]:
            z0, y = latent_init(ctx.seed, ids, c.seeds, self.z_dim)
            y = y.to(ctx.device)
            # the augmentations draw from a stream of the batch's first class: a class chunk
            # aligned with the identity batch draws what the unchunked inversion draws
            torch.manual_seed(class_generator(ctx.seed, ids[0], AUG_STREAM).initial_seed())
            z, hist = plg_optimize(
                G,
                ctx.target,
                z0.to(ctx.device),
                y,
                iters=iters,
                lr=c.lr,
                n_aug=c.n_aug,
                scale=1.0 / len(ids),
                progress=progress,
                identity=loss,
            )
            with torch.no_grad():
                return G(z, y).cpu().view(c.seeds, len(ids), *ctx.scenario.image_shape), hist

        return in_identity_batches(ctx, classes, c.batch_ids, c.seeds, attack)


@hookimpl
def register_attacks():
    return [PLGMI]
