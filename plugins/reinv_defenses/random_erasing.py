"""``re``: Random Erasing as a model-inversion defense (the seed paper).

Paper: Tran, Nguyen, Nguyen, Nguyen, Cheung. "Random Erasing vs. Model Inversion: A Promising
Defense or a False Hope?" TMLR 2025. Code: github.com/ngoc-nguyen-0/MIDRE_TMLR
(configs/training/targets/ResNet18_FaceScrub_midre_0.4.yaml, utils/training_config_parser.py).

As in the official code: ``torchvision.transforms.RandomErasing(p=1.0, scale=(0.1, 0.4),
ratio=(1, 1), value=(0.485, 0.456, 0.406))`` applied *after* Normalize(0.5, 0.5), i.e. the fill
value lives in the normalised space (a light grey, not the ImageNet mean), on training batches
only: test and attack inputs are never erased. Each image gets its own square.

The sampling is torchvision's ``RandomErasing.get_params`` vectorised over the batch (the same
distribution: up to 10 attempts of a uniform area fraction in ``scale`` and a log-uniform aspect
ratio in ``ratio``, the first that fits wins, position uniform over the valid top-left corners;
no erasure when no attempt fits), so a GPU batch is erased by a few tensor operations instead
of one small kernel launch per image. A test compares it with torchvision's own transform.

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

import math

import torch
from torch import Tensor

from reinv_bench import hookimpl
from reinv_bench.api import Adaptation, ConfigError, Defense, Param


def sample_boxes(n: int, h: int, w: int, scale, ratio, device=None, attempts: int = 10) -> tuple[Tensor, ...]:
    """(top, left, height, width, ok) per image, as torchvision's get_params draws them."""
    area = h * w * torch.empty(n, attempts, device=device).uniform_(scale[0], scale[1])
    logr = torch.empty(n, attempts, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    eh = torch.sqrt(area * logr.exp()).round().long()
    ew = torch.sqrt(area / logr.exp()).round().long()
    fits = (eh < h) & (ew < w)
    first = fits.long().argmax(1, keepdim=True)  # the first attempt that fits
    eh, ew, ok = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1), fits.any(1)
    top = (torch.rand(n, device=device) * (h - eh + 1)).floor().long()
    left = (torch.rand(n, device=device) * (w - ew + 1)).floor().long()
    return top, left, eh, ew, ok


def box_mask(top: Tensor, left: Tensor, eh: Tensor, ew: Tensor, h: int, w: int) -> Tensor:
    rows = torch.arange(h, device=top.device)[None, :, None]
    cols = torch.arange(w, device=top.device)[None, None, :]
    return (
        (rows >= top[:, None, None])
        & (rows < (top + eh)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + ew)[:, None, None])
    )


class RandomErasing(Defense):
    name = "re"
    params = {
        "p": Param(1.0, "probability that a training image is erased", low=0.0, high=1.0),
        "scale": Param(
            (0.1, 0.4), "range of the erased area as a fraction of the image (lo-hi)", low=0.0, high=1.0
        ),
        "ratio": Param((1.0, 1.0), "range of the patch aspect ratio (1-1 = square)", low=1e-3),
        "value": Param(
            (0.485, 0.456, 0.406), "fill per channel, normalised space (a/b/c)", low=-1.0, high=1.0
        ),
        "location": Param(
            "random",
            "random: uniform position per image; fixed: one centred square",
            choices=("random", "fixed"),
        ),
    }

    def __init__(self, config=None, budget: str = "paper") -> None:
        super().__init__(config, budget)
        c = self.config
        if len(c.scale) != 2 or c.scale[0] > c.scale[1]:
            raise ConfigError(f"re: scale must be lo-hi with lo <= hi, got {c.scale}")
        if len(c.ratio) != 2 or c.ratio[0] > c.ratio[1]:
            raise ConfigError(f"re: ratio must be lo-hi with lo <= hi, got {c.ratio}")

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
        n, c, h, w = x.shape
        if self.config.location == "fixed":
            box = [torch.full((n,), v, device=x.device) for v in self.fixed_box(h, w)]
            ok = torch.ones(n, dtype=torch.bool, device=x.device)
        else:
            *box, ok = sample_boxes(n, h, w, self.config.scale, self.config.ratio, x.device)
        hit = ok & (torch.rand(n, device=x.device) < self.config.p)
        mask = box_mask(*box, h, w) & hit[:, None, None]
        return torch.where(mask[:, None], self._fill(c, x), x)

    def adaptation(self, ctx, knows="algorithm", steps=100) -> Adaptation:
        """Expectation over transformation (EOT; Athalye, Engstrom, Ilyas, Kwok, ICML 2018): the
        attacker averages its identity loss over draws of the defense's own erasing distribution,
        ``train_transform`` itself (the same p, scale, ratio, fill value and location, in the
        same normalised pixel space as training), so the reconstruction is one the target
        recognises through the erasures it was trained on. The seed paper's attacks never did:
        the MIDRE PPA configs, which build attack transforms by torchvision name, list none."""
        c = self.config
        return Adaptation(
            label=f"eot(re p={c.p:g} scale={c.scale[0]:g}-{c.scale[1]:g})",
            principle="EOT over the defense's own erasing distribution (Athalye et al., ICML 2018)",
            eot=self.train_transform,
        )


@hookimpl
def register_defenses():
    return [RandomErasing]
