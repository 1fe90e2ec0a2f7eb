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
per channel in normalised space (a/b/c). ``scale=0.1-0.8`` is the stronger setting of the
``_0.8`` config; ``p<1`` is the seed paper's Partial Erasure ablation axis.
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

    def train_transform(self, x: Tensor) -> Tensor:
        erase = self._eraser(x.shape[1])
        return torch.stack([erase(img) for img in x])  # one square per image, not one per batch


@hookimpl
def register_defenses():
    return [RandomErasing]
