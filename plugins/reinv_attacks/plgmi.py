"""``plgmi``: Pseudo Label-Guided Model Inversion.

Paper: Yuan, Chen, Zhang, Zhang, Yu. "Pseudo Label-Guided Model Inversion Attack via Conditional
Generative Adversarial Network." AAAI 2023. Code: github.com/LetheSec/PLG-MI-Attack
(``top_n_selection.py``, ``train_cgan.py``, ``reconstruct.py``, ``models/generators/resnet64.py``,
``models/discriminators/snresnet64.py``, ``utils.py``).

1. Top-n selection (target-dependent prior): for every class, the n public images to which the
   target gives that class the highest probability (n = 30 in ``paper``) form a pseudo-labelled
   public set.
2. A conditional GAN on it: ResNet generator with class-conditional BatchNorm (z in R^128),
   spectral-norm ResNet discriminator with a projection head, hinge loss; the generator adds
   0.2 * max-margin loss of the target on augmented fakes, max-margin = -logit_y +
   max_{j != y} logit_j. Adam lr 2e-4, betas (0, 0.9), 5 discriminator steps per generator
   step, 30,000 generator iterations in ``paper``, batch 64.
3. Reconstruction: optimise z (5 seeds per class) for the class's generator with Adam lr 0.1, 600
   iterations, the max-margin loss averaged over 2 random augmentations per step (random
   resized crop scale 0.8-1, colour jitter 0.2, horizontal flip, rotation 5 degrees); all
   classes and seeds in one batch.

Augmentations are per image, built as one batched affine warp (crop, flip, rotation) plus
per-image brightness/contrast/saturation, differentiable in the image.

Deliberate differences: an image may be selected for several classes (ranked per class); hue
jitter is not applied (the grayscale digits have none); the generator/discriminator widths and
depth follow the scenario's resolution (``gan_ch`` = 64 as the official 64-px nets).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm as SN

from reinv_bench import hookimpl
from reinv_bench.api import Attack, AttackContext, Inversion, Param, Progress, _no_progress

from ._gan import _stages, frozen, latent_init


def max_margin(logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample -logit_y + max_{j != y} logit_j."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return -true + other


def augment(x: Tensor, scale=(0.8, 1.0), jitter: float = 0.2, degrees: float = 5.0) -> Tensor:
    """Random resized crop (square), horizontal flip, rotation and colour jitter, per image."""
    n, dev = len(x), x.device
    s = torch.empty(n, device=dev).uniform_(*scale).sqrt()  # side fraction of the crop
    cx, cy = ((1 - s) * (torch.rand(n, device=dev) * 2 - 1) for _ in range(2))
    flip = torch.where(torch.rand(n, device=dev) < 0.5, -1.0, 1.0)
    a = torch.empty(n, device=dev).uniform_(-degrees, degrees) * math.pi / 180
    cos, sin = torch.cos(a) * s, torch.sin(a) * s
    theta = torch.stack([torch.stack([cos * flip, -sin, cx], 1), torch.stack([sin * flip, cos, cy], 1)], 1)
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False,
                      padding_mode="reflection")
    p = x * 0.5 + 0.5  # jitter in pixel space
    b = torch.empty(n, 1, 1, 1, device=dev).uniform_(1 - jitter, 1 + jitter)
    c = torch.empty(n, 1, 1, 1, device=dev).uniform_(1 - jitter, 1 + jitter)
    p = p * b
    mean = p.mean((1, 2, 3), keepdim=True)
    p = (p - mean) * c + mean
    if x.shape[1] == 3:
        gray = p.mean(1, keepdim=True)
        sat = torch.empty(n, 1, 1, 1, device=dev).uniform_(1 - jitter, 1 + jitter)
        p = (p - gray) * sat + gray
    return (p.clamp(0, 1) - 0.5) / 0.5


class CondBN(nn.Module):
    def __init__(self, ch: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(ch, affine=False)
        self.gamma, self.beta = nn.Embedding(num_classes, ch), nn.Embedding(num_classes, ch)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.bn(x) * self.gamma(y)[:, :, None, None] + self.beta(y)[:, :, None, None]


class GBlock(nn.Module):
    def __init__(self, cin: int, cout: int, num_classes: int) -> None:
        super().__init__()
        self.b1, self.b2 = CondBN(cin, num_classes), CondBN(cout, num_classes)
        self.c1, self.c2 = nn.Conv2d(cin, cout, 3, 1, 1), nn.Conv2d(cout, cout, 3, 1, 1)
        self.sc = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.b1(x, y)), scale_factor=2)
        h = self.c2(F.relu(self.b2(self.c1(h), y)))
        return h + self.sc(F.interpolate(x, scale_factor=2))


class CGenerator(nn.Module):
    def __init__(self, image_shape, num_classes: int, ch: int = 64, z_dim: int = 128) -> None:
        super().__init__()
        c, h, _ = image_shape
        n = _stages(h)
        self.top = ch * 2 ** (n - 1)
        self.l1 = nn.Linear(z_dim, self.top * 16)
        self.blocks = nn.ModuleList(GBlock(ch * 2 ** (n - 1 - i), ch * 2 ** max(0, n - 2 - i), num_classes)
                                    for i in range(n))
        self.bn = nn.BatchNorm2d(ch)
        self.out = nn.Conv2d(ch, c, 3, 1, 1)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        h = self.l1(z).view(len(z), self.top, 4, 4)
        for b in self.blocks:
            h = b(h, y)
        return torch.tanh(self.out(F.relu(self.bn(h))))


class DBlock(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool, first: bool = False) -> None:
        super().__init__()
        self.c1, self.c2 = SN(nn.Conv2d(cin, cout, 3, 1, 1)), SN(nn.Conv2d(cout, cout, 3, 1, 1))
        self.sc = SN(nn.Conv2d(cin, cout, 1))
        self.down, self.first = down, first

    def forward(self, x: Tensor) -> Tensor:
        h = self.c2(F.relu(self.c1(x if self.first else F.relu(x))))
        s = self.sc(x)
        if self.down:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return h + s


class ProjectionDiscriminator(nn.Module):
    def __init__(self, image_shape, num_classes: int, ch: int = 64) -> None:
        super().__init__()
        c, h, _ = image_shape
        n = _stages(h)
        widths = [ch * 2**i for i in range(n)]
        blocks = [DBlock(c, widths[0], True, first=True)]
        blocks += [DBlock(widths[i - 1], widths[i], True) for i in range(1, n)]
        blocks += [DBlock(widths[-1], widths[-1], False)]
        self.blocks = nn.Sequential(*blocks)
        self.l = SN(nn.Linear(widths[-1], 1))
        self.embed = SN(nn.Embedding(num_classes, widths[-1]))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = F.relu(self.blocks(x)).sum((2, 3))
        return self.l(h).squeeze(1) + (self.embed(y) * h).sum(1)


def top_n(T, public: Tensor, num_classes: int, n: int, device) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        probs = torch.cat([T(public[i : i + 512].to(device)).softmax(1).cpu() for i in range(0, len(public), 512)])
    idx = probs.topk(min(n, len(public)), dim=0).indices  # (n, K): per class, the most confident images
    return public[idx.T.reshape(-1)], torch.arange(num_classes).repeat_interleave(idx.shape[0])


def train_cgan(x: Tensor, y: Tensor, T, image_shape, num_classes: int, *, ch: int, z_dim: int, iters: int,
               batch_size: int, lr: float, n_dis: int, alpha: float, device, seed: int,
               progress: Progress = _no_progress):
    torch.manual_seed(seed)
    G, D = CGenerator(image_shape, num_classes, ch, z_dim).to(device), ProjectionDiscriminator(image_shape, num_classes, ch).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.0, 0.9))
    x, y = x.to(device), y.to(device)
    for it in range(iters):
        for i in range(n_dis):
            if i == 0:  # generator step: hinge + alpha * max-margin of the target on augmented fakes
                G.requires_grad_(True)
                D.requires_grad_(False)
                yf = torch.randint(0, num_classes, (batch_size,), device=device)
                fake = G(torch.randn(batch_size, z_dim, device=device), yf)
                loss_g = -D(fake, yf).mean() + alpha * max_margin(T(augment(fake)), yf).mean()
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
            G.requires_grad_(False)
            D.requires_grad_(True)
            idx = torch.randint(0, len(x), (batch_size,), device=device)
            yf = torch.randint(0, num_classes, (batch_size,), device=device)
            with torch.no_grad():
                fake = G(torch.randn(batch_size, z_dim, device=device), yf)
            loss_d = F.relu(1 - D(x[idx], y[idx])).mean() + F.relu(1 + D(fake, yf)).mean()
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        progress(it + 1, iters)
    return G.eval().requires_grad_(False)


def plg_optimize(G, T, z: Tensor, y: Tensor, *, iters: int, lr: float, n_aug: int, scale: float, aug=augment,
                 progress: Progress = _no_progress) -> tuple[Tensor, list[float]]:
    z = z.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    hist = []
    for it in range(iters):
        x = G(z, y)
        per = sum(max_margin(T(aug(x)), y) for _ in range(n_aug)) / n_aug
        opt.zero_grad(set_to_none=True)
        (per.sum() * scale).backward()
        opt.step()
        hist.append(per.detach().mean())
        progress(it + 1, iters)
    return z.detach(), [h.item() for h in hist]


class PLGMI(Attack):
    name = "plgmi"
    threat_model = "white-box"
    prior_kind = "plgmi-cgan"
    prior_params = ("top_n", "gan_ch", "gan_iters", "gan_batch", "gan_lr", "n_dis", "alpha")
    prior_uses_target = True
    z_dim = 128
    params = {
        "top_n": Param(30, "public images selected per class (official: 30)", low=1),
        "gan_ch": Param(64, "cGAN base width (official: 64)", low=4),
        "gan_iters": Param(30000, "generator iterations (official: 30,000)", low=1),
        "gan_batch": Param(64, "cGAN batch size (official: 64)", low=1),
        "gan_lr": Param(2e-4, "Adam lr, betas (0, 0.9) (official: 2e-4)", low=0.0),
        "n_dis": Param(5, "discriminator steps per generator step (official: 5)", low=1),
        "alpha": Param(0.2, "weight of the max-margin loss in G's loss (official: 0.2)", low=0.0),
        "iters": Param(600, "reconstruction iterations (official: 600)", low=1),
        "lr": Param(0.1, "reconstruction Adam lr (official: 0.1)", low=0.0),
        "n_aug": Param(2, "augmentations per step (official: 2)", low=1),
        "seeds": Param(5, "latents per class (official: 5)", low=1),
    }
    budgets = {
        "smoke": {"gan_ch": 8, "gan_iters": 3, "n_dis": 2, "iters": 10, "seeds": 2},
        "quick": {"gan_ch": 16, "gan_iters": 150, "iters": 200},
    }

    def prepare(self, ctx: AttackContext, kind: str) -> dict:
        c, K = self.config, ctx.scenario.num_classes
        x, y = top_n(ctx.target, ctx.data.public.x, K, c.top_n, ctx.device)
        G = train_cgan(x, y, ctx.target, ctx.scenario.image_shape, K, ch=c.gan_ch, z_dim=self.z_dim,
                       iters=c.gan_iters, batch_size=c.gan_batch, lr=c.gan_lr, n_dis=c.n_dis, alpha=c.alpha,
                       device=ctx.device, seed=ctx.seed, progress=ctx.progress)
        return {"G": G.state_dict()}

    def invert(self, ctx: AttackContext, priors: dict, classes: list[int]) -> Inversion:
        c = self.config
        G = frozen(CGenerator(ctx.scenario.image_shape, ctx.scenario.num_classes, c.gan_ch, self.z_dim),
                   priors[self.prior_kind]["G"], ctx.device)
        T = ctx.target
        z0, y = latent_init(ctx.seed, classes, c.seeds, self.z_dim)
        torch.manual_seed(ctx.seed)
        z, hist = plg_optimize(G, T, z0.to(ctx.device), y.to(ctx.device), iters=c.iters, lr=c.lr, n_aug=c.n_aug,
                               scale=1.0 / len(classes), progress=ctx.progress)
        with torch.no_grad():
            images = G(z, y.to(ctx.device)).cpu()
        return Inversion(images, y, {"loss_first": hist[0], "loss_last": hist[-1]})


@hookimpl
def register_attacks():
    return [PLGMI]
