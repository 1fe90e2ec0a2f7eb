"""``mid``: Mutual Information Regularisation (a variational information bottleneck).

Paper: Wang, Wang, Jia, Jia, Li, Wang. "Improving Robustness to Model Inversion Attacks via
Mutual Information Regularization." AAAI 2021. Code: github.com/Jiachen-T-Wang/mi-defense
(``gmi/target/engine.py::train_vib``, the ``*_vib`` classifiers, ``gmi/target/train_vib.py``).

A linear layer maps the penultimate feature h to (mu, s) of size k each; sigma = softplus(s - 5);
in training z = mu + sigma * eps, at test time z = mu (deterministic); logits = W z.
Loss = CE + beta * KL(N(mu, sigma^2) || N(0, I)), KL = -1/2 sum(1 + 2 log sigma - mu^2 - sigma^2)
averaged over the batch. beta = 0.003 as in ``train_vib.py`` (0.01 and 0.02 are the stronger
settings of later comparisons: ``-d "mid[beta=0.01]"``).

Deliberate differences: k scales with the architecture as half the penultimate width (the
official VGG16 bottleneck maps 2048 -> k = 1024); ``mid[k=...]`` sets it explicitly. The
optimiser and epochs are the scenario's target recipe (official: SGD 1e-2, 50 epochs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reinv_bench import hookimpl
from reinv_bench.api import Classifier, Defense, Output, Param


class VIBHead(nn.Module):
    def __init__(self, feature_dim: int, num_classes: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.st_layer = nn.Linear(feature_dim, 2 * k)
        self.fc = nn.Linear(k, num_classes)

    def forward(self, h: Tensor) -> Output:
        stats = self.st_layer(h)
        mu, std = stats[:, : self.k], F.softplus(stats[:, self.k :] - 5)
        z = mu + std * torch.randn_like(std) if self.training else mu
        return Output(self.fc(z), h, extras={"mu": mu, "std": std})


def vib_kl(mu: Tensor, std: Tensor) -> Tensor:
    """KL(N(mu, std^2) || N(0, I)) summed over dimensions, averaged over the batch."""
    return (-0.5 * (1 + 2 * std.log() - mu.pow(2) - std.pow(2))).sum(1).mean()


class MID(Defense):
    name = "mid"
    params = {
        "beta": Param(0.003, "weight of the KL term (official: 0.003)", low=0.0),
        "k": Param(0, "bottleneck size; 0 = half the penultimate width (VGG16: 1024)", low=0),
    }

    def wrap_model(self, model: Classifier) -> Classifier:
        k = self.config.k or max(1, model.feature_dim // 2)
        model.head = VIBHead(model.feature_dim, model.num_classes, k)
        return model

    def loss(self, out: Output, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out.logits, y) + self.config.beta * vib_kl(out.extras["mu"], out.extras["std"])


@hookimpl
def register_defenses():
    return [MID]
