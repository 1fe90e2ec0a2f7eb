"""Building blocks shared by the attack plugins: GMI's GAN nets (GMI, BREP-MI, KEDMI's
generator), per-class random streams and identity batches, the GAN training batches, and
loading a cached network frozen for inversion.

The shapes follow GMI's official code (sunblaze-ucb/GMI-attack, ``GeneratorMNIST``/``Generator``
and ``DGWGAN32``/``DGWGAN``): a linear layer to a 4x4 map, stride-2 5x5 transposed convolutions
with BatchNorm and ReLU, tanh output; the critic mirrors it with stride-2 5x5 convolutions,
InstanceNorm (affine) and LeakyReLU(0.2), and a final 4x4 convolution to one score. ``dim`` is
the base width (64 in the official code); the number of stages follows the resolution (32 px:
three, 64 px: four), which reproduces both official variants.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

# The official GAN budget of GMI's and KEDMI's 64-px GANs, in critic (discriminator) steps: 120
# epochs (KEDMI ``config/celeba.json``; LOMMA ``config/celeba/training_GAN/{general,specific}_gan/
# celeba.json``; PLG-MI ``baselines/config/celeba.json``) over the 30,000-image CelebA ``ganset``
# (PLG-MI ``data_files/celeba_ganset.txt``) in batches of 64, ``drop_last=True``
# (``utils.init_dataloader``): 120 * 468 = 56,160 critic steps, a generator step every 5th.
OFFICIAL_GAN_STEPS = 120 * (30_000 // 64)


def _stages(size: int) -> int:
    n = int(math.log2(size // 4))
    if 4 * 2**n != size:
        raise ValueError(f"GAN prior needs a square power-of-two resolution >= 8, got {size} (224-px protocols "
                         "are attacked with a pretrained StyleGAN, as PPA does; no such attack is registered yet)")
    return n


class Generator(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], z_dim: int = 100, dim: int = 64) -> None:
        super().__init__()
        c, h, _ = image_shape
        n = _stages(h)
        width = dim * 2 ** (n - 1)
        self.z_dim = z_dim
        self.fc = nn.Sequential(nn.Linear(z_dim, width * 16, bias=False), nn.BatchNorm1d(width * 16), nn.ReLU())
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
            layers += [nn.Conv2d(width, width * 2, 5, 2, 2), nn.InstanceNorm2d(width * 2, affine=True), nn.LeakyReLU(0.2)]
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


def class_generator(seed: int, c: int, stream: int = 0) -> torch.Generator:
    """The random stream of class ``c`` (``stream`` tells a restart or a use apart): a class draws
    the same numbers whether it is attacked alone, in a batch or in another identity batch."""
    return torch.Generator().manual_seed((seed * 1_000_003 + stream * 10_007 + c) % 2**62)


def latent_init(seed: int, classes: list[int], restarts: int, z_dim: int) -> tuple[Tensor, Tensor]:
    """Initial latents, one per (restart, class), each from its class's generator. Row order:
    restart major, class minor. Returns (z, labels)."""
    zs = [torch.randn(z_dim, generator=class_generator(seed, c, r)) for r in range(restarts) for c in classes]
    return torch.stack(zs), torch.tensor(classes * restarts, dtype=torch.long)


def identity_batches(classes: list[int], size: int) -> list[list[int]]:
    """The attacked classes in identity batches of ``size`` (the official scripts attack 60 at a
    time and average the loss over them: KEDMI/LOMMA ``recovery.py``, PLG-MI ``reconstruct.py``)."""
    return [classes[i : i + size] for i in range(0, len(classes), size)]


def batch_stream(n: int, batch_size: int, steps: int, gen: torch.Generator, streams: int = 1):
    """Index batches for ``steps`` training steps as the official loaders give them: every stream
    reshuffled at each pass over the ``n`` images, incomplete last batch dropped (``drop_last``);
    a set smaller than one batch is one batch. Yields a list of ``streams`` index tensors."""
    size = min(batch_size, n)
    per_pass = n // size
    for step in range(steps):
        i = step % per_pass
        if i == 0:
            perms = [torch.randperm(n, generator=gen) for _ in range(streams)]
        yield [p[i * size : (i + 1) * size] for p in perms]
