"""``re``: Random Erasing as a model-inversion defense (the seed paper).

Paper: Tran, Nguyen, Nguyen, Nguyen, Cheung. "Random Erasing vs. Model Inversion: A Promising
Defense or a False Hope?" TMLR 2025. Code: github.com/ngoc-nguyen-0/MIDRE_TMLR
(configs/training/targets/ResNet18_FaceScrub_midre_0.4.yaml, utils/training_config_parser.py).

As in the official code: ``torchvision.transforms.RandomErasing(p=1.0, scale=(0.1, 0.4),
ratio=(1, 1), value=(0.485, 0.456, 0.406))`` applied *after* Normalize(0.5, 0.5), i.e. the fill
value lives in the normalised space (a light grey, not the ImageNet mean), on training batches
only: test and attack inputs are never erased. Each image gets its own square.

Deliberate differences: for one-channel images the fill is the mean of the three values
(0.449), since torchvision needs one value per channel. The official configs also apply
RandomResizedCrop/ColorJitter/flip before erasing; those belong to the scenario's recipe, not to
this defense (the digit scenarios use none).

Parameters (``-d "re[p=0.5,scale=0.1-0.8]"``): ``p`` probability of erasing an image,
``scale`` area fraction range lo-hi, ``ratio`` aspect ratio range (1-1 = square), ``value`` fill
per channel in normalised space (a/b/c), ``location`` random|fixed.

The seed paper's ablations (its Sec. on the two properties behind RE's effect):
- ``re[p=...]`` with p < 1 lets the target see complete images for a fraction 1-p of the
  samples: the *Partial Erasure* axis. The paper attributes RE's privacy to the model never
  seeing whole private images, so attack accuracy should rise as p falls.
- ``re[location=fixed]`` erases one square at a fixed position (centred; area = the mean of
  ``scale``) in every image: the *Random Location* axis. The paper's claim is that a random
  position matters because the model must then rely on varied partial features, so a fixed
  location should protect less. The official repository releases no config for this ablation
  (``utils/test_mask.py`` builds a fixed square block); the centred square is our reading.
- ``re[scale=0.1-0.8]`` is the stronger setting of the official ``_0.8`` config.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.transforms import RandomErasing as _TVErasing

from reinv_bench import hookimpl
from reinv_bench.api import ConfigError, Defense, Param


class RandomErasing(Defense):
    name = "re"
    params = {
        "p": Param(1.0, "probability that a training image is erased", low=0.0, high=1.0),
        "scale": Param((0.1, 0.4), "range of the erased area as a fraction of the image (lo-hi)", low=0.0, high=1.0),
        "ratio": Param((1.0, 1.0), "range of the patch aspect ratio (1-1 = square)", low=1e-3),
        "value": Param((0.485, 0.456, 0.406), "fill per channel, normalised space (a/b/c)", low=-1.0, high=1.0),
        "location": Param("random", "random: uniform position per image; fixed: one centred square",
                          choices=("random", "fixed")),
    }

    def __init__(self, config=None, budget: str = "paper") -> None:
        super().__init__(config, budget)
        c = self.config
        if len(c.scale) != 2 or c.scale[0] > c.scale[1]:
            raise ConfigError(f"re: scale must be lo-hi with lo <= hi, got {c.scale}")
        if len(c.ratio) != 2 or c.ratio[0] > c.ratio[1]:
            raise ConfigError(f"re: ratio must be lo-hi with lo <= hi, got {c.ratio}")
        self._erasers: dict[int, _TVErasing] = {}

    def _eraser(self, channels: int) -> _TVErasing:
        if channels not in self._erasers:
            v = list(self.config.value)
            if len(v) != channels:
                v = [sum(v) / len(v)] * channels
            self._erasers[channels] = _TVErasing(
                p=self.config.p, scale=self.config.scale, ratio=self.config.ratio, value=v
            )
        return self._erasers[channels]

    def _fill(self, channels: int, like: Tensor) -> Tensor:
        v = list(self.config.value)
        if len(v) != channels:
            v = [sum(v) / len(v)] * channels
        return torch.tensor(v, dtype=like.dtype, device=like.device)[:, None, None]

    def fixed_box(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the fixed-location square: area = mean of ``scale``,
        aspect = mean of ``ratio``, centred."""
        area = h * w * sum(self.config.scale) / 2
        r = sum(self.config.ratio) / 2
        eh = min(h, max(1, round((area * r) ** 0.5)))
        ew = min(w, max(1, round((area / r) ** 0.5)))
        return (h - eh) // 2, (w - ew) // 2, eh, ew

    def train_transform(self, x: Tensor) -> Tensor:
        if self.config.location == "fixed":
            top, left, eh, ew = self.fixed_box(x.shape[-2], x.shape[-1])
            hit = torch.rand(len(x), device=x.device) < self.config.p
            x = x.clone()
            x[hit, :, top : top + eh, left : left + ew] = self._fill(x.shape[1], x)
            return x
        erase = self._eraser(x.shape[1])
        return torch.stack([erase(img) for img in x])  # one square per image, not one per batch


@hookimpl
def register_defenses():
    return [RandomErasing]
