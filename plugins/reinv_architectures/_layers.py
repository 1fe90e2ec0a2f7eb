"""Small pieces the architecture plugins share."""

from __future__ import annotations

from torch import nn


class Resize(nn.Module):
    """Bilinear resize to ``size`` x ``size`` where the input differs (e.g. 224 -> 299)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x):
        if x.shape[-1] == self.size and x.shape[-2] == self.size:
            return x
        return nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)


def rgb(image_shape: tuple[int, int, int], name: str) -> None:
    """Refuse a scenario whose images are not RGB for an architecture that takes RGB only."""
    if image_shape[0] != 3:
        raise ValueError(f"{name} takes RGB images; this scenario's images are {image_shape}")
