"""AlignMI's copies (``align.py``): the official constants by base, TAA's transforms and PAA's
perturbation, and the averaged identity loss; shared by ``align+`` and ``adaptive+`` (whose
robustness-reducing adaptation averages over the same copies)."""

from __future__ import annotations

import torch
import torchvision.transforms as T
from torch import Tensor
from torchvision.transforms import InterpolationMode

# (PAA copies, PAA spread, TAA copies, TAA RandomResizedCrop scale, TAA rotation degrees)
OFFICIAL = {
    "gmi": (50, 0.003, 30, (0.9, 1.0), 3.0),
    "kedmi": (50, 0.05, 50, (0.8, 1.0), 5.0),
    "ppa": (50, 0.06, 50, (0.8, 1.0), 5.0),
}
TAA_RATIO = (0.9, 1.1)
# TAA on [0, 1] pixels (black rotation fill): the official KEDMI's sigmoid DCGAN; the others on [-1, 1]
PIXEL_SPACE = ("kedmi",)


def taa_transforms(size: int, scale, degrees: float) -> T.Compose:
    """``build_transformations`` / ``ked_build_transformations``: the TAA copies' transforms."""
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=tuple(scale), ratio=TAA_RATIO, antialias=True),
            T.RandomHorizontalFlip(p=0.5),
            T.RandomRotation(degrees, interpolation=InterpolationMode.BILINEAR),
        ]
    )


def perturb(spread: float):
    """PAA's copy: x + sigma * N(0, I), sigma = spread * (max - min) of the batch (no gradient)."""

    def copy(x: Tensor) -> Tensor:
        sigma = spread * (x.max().item() - x.min().item())
        return x + sigma * torch.randn_like(x)

    return copy


def transform(size: int, scale, degrees: float, pixels: bool = True):
    """TAA's copy: the random transforms, on [0, 1] pixels and back to [-1, 1] (``pixels``: the
    official low-resolution images, a sigmoid generator's), or on the [-1, 1] images themselves
    (the official high-resolution ones, StyleGAN's: a rotation fills with 0, mid-grey)."""
    t = taa_transforms(size, scale, degrees)
    return (lambda x: (t(x * 0.5 + 0.5) - 0.5) / 0.5) if pixels else t


def averaged(loss, copy, samples: int):
    """The identity loss whose gradient is AlignMI's averaged gradient: per image, the mean over
    ``samples`` copies ``copy(x)`` of ``loss(copy, y)``."""

    def identity(x: Tensor, y: Tensor) -> Tensor:
        return sum(loss(copy(x), y) for _ in range(samples)) / samples

    return identity
