"""``negls``: negative label smoothing.

Paper: Struppek, Hintersdorf, Kersting. "Be Careful What You Smooth For: Label Smoothing Can Be a
Privacy Shield but Also a Catalyst for Model Inversion Attacks." ICLR 2024. Code merged into
github.com/LukasStruppek/Plug-and-Play-Attacks (``losses/label_smoothing.py``,
``train_model.py::ls_scheduler``).

Loss = (1 - alpha_t) * (-log p_y) + alpha_t * mean_c(-log p_c), i.e. cross-entropy against
y_LS = (1 - alpha) y + alpha / C, with alpha < 0 (default -0.05, the toolbox's
``LabelSmoothingCrossEntropyLoss(-0.05)``).

Schedule, as the official ``ls_scheduler`` with E = 100 epochs: alpha_t = 0 for epoch < 50,
alpha * (epoch + 1 - 50) / (E - 50) for 50 <= epoch < 75, alpha from 75 on. Here the breakpoints
are fractions of the recipe's epochs (50% and 75%), so ``quick`` and ``paper`` both follow it;
as in the official code the ramp reaches alpha/2 and then jumps to alpha.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from reinv_bench import hookimpl
from reinv_bench.api import Adaptation, Defense, Output, Param
from reinv_defenses._adaptations import confidence_suppressing


def smoothed_ce(logits: Tensor, y: Tensor, alpha: float) -> Tensor:
    logp = F.log_softmax(logits, dim=1)
    return ((1 - alpha) * -logp.gather(1, y[:, None]).squeeze(1) + alpha * -logp.mean(1)).mean()


def alpha_at(alpha: float, epoch: int, epochs: int) -> float:
    start, full = epochs * 0.5, epochs * 0.75
    if epoch < start:
        return 0.0
    if epoch < full:
        return alpha * (epoch + 1 - start) / (epochs - start)
    return alpha


class NegLS(Defense):
    name = "negls"
    params = {
        "alpha": Param(-0.05, "smoothing factor (negative = defense; official -0.05)", low=-1.0, high=1.0)
    }

    def __init__(self, config=None, budget: str = "paper") -> None:
        super().__init__(config, budget)
        self.alpha_t = 0.0

    def on_epoch(self, epoch: int, epochs: int) -> None:
        self.alpha_t = alpha_at(self.config.alpha, epoch, epochs)

    def loss(self, out: Output, x: Tensor, y: Tensor) -> Tensor:
        return smoothed_ce(out.logits, y, self.alpha_t)

    def adaptation(self, ctx, knows="algorithm", steps=100) -> Adaptation:
        """The logit-margin identity loss in place of CE / Poincaré: negative smoothing suppresses
        the confidence those losses follow (``_adaptations.confidence_suppressing``)."""
        return confidence_suppressing(self.name)


@hookimpl
def register_defenses():
    return [NegLS]
