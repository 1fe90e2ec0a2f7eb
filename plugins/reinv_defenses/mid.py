"""``mid``: Mutual Information Regularisation (a variational information bottleneck).

Paper: Wang, Wang, Jia, Jia, Li, Wang. "Improving Robustness to Model Inversion Attacks via
Mutual Information Regularization." AAAI 2021. Code: github.com/Jiachen-T-Wang/mi-defense
(``gmi/target/engine.py::train_vib``, ``gmi/target/model.py`` ``VGG16_vib``/``IR152_vib``,
``gmi/target/train_vib.py``); the same models in Defend_MI ``BiDO/model.py``.

A linear layer maps the penultimate feature h to (mu, s) of size k each; sigma = softplus(s - 5);
z = mu + sigma * eps and logits = W z, in training AND at test time: the official ``forward`` and
``predict`` both sample eps, so attacks and natural accuracy see a stochastic target (the
harness seeds every step at its start, so a run is still reproducible). ``mid[sample=false]``
uses z = mu at test time instead (a deterministic variant, not the official one).
Loss = CE + beta * KL(N(mu, sigma^2) || N(0, I)), KL = -1/2 sum(1 + 2 log sigma - mu^2 - sigma^2)
averaged over the batch. beta = 0.003 as in ``train_vib.py`` (0.01 and 0.02 are the stronger
settings of later comparisons: ``-d "mid[beta=0.01]"``).

h is the architecture's penultimate feature without the bias-free BatchNorm1d that the
undefended VGG16 adds (``VGG16_vib`` feeds the flattened conv features straight to the
bottleneck): MID removes a final BatchNorm1d whose bias is frozen (the "no shift" BN). The
IR152/FaceNet64 output layer's own BatchNorm1d (bias trained) stays, as in ``IR152_vib``.

Deliberate differences: k scales with the architecture as half the penultimate width (the
official VGG16 bottleneck maps 2048 -> k = 1024, IR152 512 -> 256); ``mid[k=...]`` sets it
explicitly. The optimiser and epochs are the scenario's target recipe (official: SGD 1e-2,
momentum 0.9, weight decay 1e-4, 50 epochs).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reinv_bench import hookimpl
from reinv_bench.api import Adaptation, Classifier, Defense, Output, Param
from reinv_defenses._adaptations import robustness_reducing


class VIBHead(nn.Module):
    def __init__(self, feature_dim: int, num_classes: int, k: int, sample: bool = True) -> None:
        super().__init__()
        self.k, self.sample = k, sample
        self.st_layer = nn.Linear(feature_dim, 2 * k)
        self.fc = nn.Linear(k, num_classes)

    def forward(self, h: Tensor) -> Output:
        stats = self.st_layer(h)
        mu, std = stats[:, : self.k], F.softplus(stats[:, self.k :] - 5)
        z = mu + std * torch.randn_like(std) if self.training or self.sample else mu
        return Output(self.fc(z), h, extras={"mu": mu, "std": std})


def vib_kl(mu: Tensor, std: Tensor) -> Tensor:
    """KL(N(mu, std^2) || N(0, I)) summed over dimensions, averaged over the batch."""
    return (-0.5 * (1 + 2 * std.log() - mu.pow(2) - std.pow(2))).sum(1).mean()


class MID(Defense):
    name = "mid"
    version = 2  # 2: z sampled at test time too; no bias-free BatchNorm1d before the bottleneck
    params = {
        "beta": Param(0.003, "weight of the KL term (official: 0.003)", low=0.0),
        "k": Param(0, "bottleneck size; 0 = half the penultimate width (VGG16: 1024)", low=0),
        "sample": Param(True, "sample z = mu + sigma*eps at test time too (official); false: z = mu"),
    }

    def wrap_model(self, model: Classifier) -> Classifier:
        last = model.blocks[-1]
        if (
            isinstance(last, nn.Sequential)
            and isinstance(last[-1], nn.BatchNorm1d)
            and not last[-1].bias.requires_grad
        ):
            last[-1] = nn.Identity()  # VGG16's "no shift" BN: absent from VGG16_vib
        k = self.config.k or max(1, model.feature_dim // 2)
        model.head = VIBHead(model.feature_dim, model.num_classes, k, self.config.sample)
        return model

    def loss(self, out: Output, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out.logits, y) + self.config.beta * vib_kl(out.extras["mu"], out.extras["std"])

    def adaptation(self, ctx, knows="algorithm", steps=100) -> Adaptation:
        """MID's target samples its bottleneck noise in ``forward`` (``VIBHead``: z = mu + sigma *
        eps at attack time too), so its gradient is random. Two answers, both run, the stronger
        kept (per class, by the target's own mean confidence: ``adaptive``'s alternatives): the
        deterministic mean path z = mu (``mean_path``), and expectation over the noise (EOT,
        Athalye et al., ICML 2018: average over draws of the random forward). MID is also of
        AT-AT's robustness-reducing family: both add AlignMI's TAA and Gaussian input noise
        (``_adaptations.robustness_reducing``). With ``mid[sample=false]`` the target already takes
        the mean path: that adaptation alone."""
        base = robustness_reducing(self.name)
        mean = replace(base, label="mean-path+taa+noise(mid)", forward=mean_path)
        if not self.config.sample:
            return mean
        eot = replace(base, label="eot-noise+taa+noise(mid)", random=True)
        return Adaptation(
            label="mid: stronger of mean path and EOT over the noise",
            principle="deterministic path and EOT over a randomised layer (Athalye et al. 2018), "
            "with AlignMI TAA and Gaussian EOT",
            alternatives=(mean, eot),
        )


def mean_path(target: Classifier, x: Tensor) -> Output:
    """The target's forward with its bottleneck at its mean (z = mu, no noise drawn)."""
    head, sample = target.head, target.head.sample
    head.sample = False
    try:
        return target.forward_all(x)
    finally:
        head.sample = sample


@hookimpl
def register_defenses():
    return [MID]
