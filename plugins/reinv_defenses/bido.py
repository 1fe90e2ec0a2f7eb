"""``bido``: Bilateral Dependency Optimization.

Paper: Peng, Liu, Ning, Lin, Liu, Wang. "Bilateral Dependency Optimization: Defending Against
Model-inversion Attacks." KDD 2022. Code: github.com/AlanPeng0897/Defend_MI (``BiDO/engine.py``
``multilayer_hsic``, ``BiDO/hsic.py``, ``BiDO/model.py`` ``VGG16(hsic_training=True)``,
``BiDO/train_HSIC.py``, ``BiDO/config/celeba.json``, ``BiDO/dataloader.py``).

Loss = CE + sum over hidden layers j of [a1 * d(X, Z_j) - a2 * d(Z_j, Y)]: lower the dependency
between the input and each representation, raise it between each representation and the label.
d is the official ``hsic_normalized_cca``: with centred kernel matrices Kc = K H (H = I - 1/m),
R = Kc (Kc + eps m I)^-1 and d(A, B) = sum(R_A * R_B^T) (eps = 1e-5); Gaussian kernel
exp(-||a - a'||^2 / (2 sigma^2 dim)) with sigma = 5 on inputs and features, linear kernel on the
one-hot labels (``--ktype linear``). ``bido[measure=coco]`` uses the official
``coco_normalized_cca``: sqrt(||K L||_F) / m with doubly centred kernels H K H. Defaults
(a1, a2) = (0.05, 0.5), the released CelebA setting for GMI/KEDMI.

Hidden layers Z_j: the official VGG16 returns the outputs of conv stages 1-4 and the
BatchNorm'd penultimate feature, not the raw 5th stage (which the feature only flattens and
normalises). The harness applies that rule to every architecture: every block output except the
one before the penultimate-feature block, i.e. ``hidden[:-2] + hidden[-1:]`` (vgg16: stages 1-4
and the feature; ir152/facenet64: input+stage 1, stages 2 and 3, and the 512-d feature).
X in d(X, Z) is the image in [0, 1], as the official dataloader gives it (its Normalize is
commented out): the harness's [-1, 1] batch is mapped back before the kernel.

Schedule (``recipe``): at the paper budget a ``vgg16`` target trains as ``train_HSIC.py`` with
``config/celeba.json``: Adam, lr 1e-4, no weight decay, 50 epochs, batch 64, constant rate (its
MultiStepLR milestone is epoch 60 of 50). The scenario's augmentation is kept (the official loader
flips). Other architectures and budgets keep the scenario's recipe (no official BiDO recipe).

Deliberate differences:
- Kernels and inverses are computed in float64 (the official code uses float32): the centred
  kernel matrix is nearly singular, and in float32 its regularised inverse differs by several
  percent between mathematically equal computations.
- The network sees the harness's [-1, 1] images (the official network sees [0, 1]); only d(X, Z)
  uses [0, 1], as the official loss.
- The official script keeps the epoch of best test accuracy; the harness keeps the last.
Note: the official "normalised" HSIC is a NOCCO-style statistic: it is not scaled to 1 for
d(X, X) (it approaches the rank of the centred kernel); the harness keeps the official measure.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from reinv_bench import hookimpl
from reinv_bench.api import Adaptation, Defense, Output, Param, TrainRecipe
from reinv_defenses._adaptations import robustness_reducing

EPS = 1e-5


def kernel(x: Tensor, sigma: float, ktype: str = "gaussian", measure: str = "hsic") -> Tensor:
    x = x.flatten(1).double()
    m = len(x)
    H = torch.eye(m, device=x.device, dtype=x.dtype) - 1.0 / m
    if ktype == "gaussian":
        K = torch.exp(-torch.cdist(x, x).pow(2) / (2.0 * sigma * sigma * x.shape[1]))
    elif ktype == "linear":
        K = x @ x.T
    else:
        raise ValueError(f"unknown kernel {ktype!r}")
    return K @ H if measure == "hsic" else H @ K @ H


def hsic_normalized_cca(x: Tensor, y: Tensor, sigma: float = 5.0, ktype_y: str = "gaussian") -> Tensor:
    m = len(x)
    eye = torch.eye(m, device=x.device, dtype=torch.float64)
    Kx, Ky = kernel(x, sigma), kernel(y, sigma, ktype_y)
    Rx = Kx @ torch.linalg.inv(Kx + EPS * m * eye)
    Ry = Ky @ torch.linalg.inv(Ky + EPS * m * eye)
    return (Rx * Ry.T).sum().float()


def coco_normalized_cca(x: Tensor, y: Tensor, sigma: float = 5.0, ktype_y: str = "gaussian") -> Tensor:
    K, L = kernel(x, sigma, measure="coco"), kernel(y, sigma, ktype_y, measure="coco")
    return (torch.sqrt(torch.linalg.matrix_norm(K @ L)) / len(x)).float()


class BiDO(Defense):
    name = "bido"
    version = 2  # 2: the official layers, X in [0, 1], the official optimiser at the paper budget
    needs_hidden = True
    couples_examples = True  # the HSIC of a batch's kernel matrices (dpsgd refuses it)
    params = {
        "a1": Param(0.05, "weight of d(X, Z_j), minimised (official CelebA: 0.05)", low=0.0),
        "a2": Param(0.5, "weight of d(Z_j, Y), maximised (official CelebA: 0.5)", low=0.0),
        "sigma": Param(5.0, "Gaussian kernel width (official: 5)", low=1e-6),
        "measure": Param("hsic", "dependency measure", choices=("hsic", "coco")),
        "ktype": Param(
            "linear",
            "kernel on the one-hot labels (official default: linear)",
            choices=("linear", "gaussian"),
        ),
    }

    def dependency(self, a: Tensor, b: Tensor, ktype_b: str = "gaussian") -> Tensor:
        fn = hsic_normalized_cca if self.config.measure == "hsic" else coco_normalized_cca
        return fn(a, b, self.config.sigma, ktype_b)

    def recipe(self, recipe: TrainRecipe, budget: str, arch: str) -> TrainRecipe:
        if budget != "paper" or arch != "vgg16":
            return recipe
        return replace(
            recipe, epochs=50, batch_size=64, optimizer="adam", lr=1e-4, weight_decay=0.0, milestones=()
        )

    @staticmethod
    def layers(hidden: list[Tensor]) -> list[Tensor]:
        """The regularised outputs: all blocks but the one the penultimate feature is made from."""
        return [*hidden[:-2], *hidden[-1:]]

    def loss(self, out: Output, x: Tensor, y: Tensor) -> Tensor:
        onehot = F.one_hot(y, out.logits.shape[1]).float()
        pixels = x * 0.5 + 0.5  # the official loader's [0, 1] images
        reg = out.logits.new_zeros(())
        for z in self.layers(out.hidden):
            reg = (
                reg
                + self.config.a1 * self.dependency(z, pixels)
                - self.config.a2 * self.dependency(z, onehot, self.config.ktype)
            )
        return F.cross_entropy(out.logits, y) + reg

    def adaptation(self, ctx, knows="algorithm", steps=100) -> Adaptation:
        """Transformation-averaged gradients (AlignMI's TAA) plus EOT over small Gaussian input noise:
        BiDO belongs to AT-AT's robustness-reducing family (``_adaptations.robustness_reducing``)."""
        return robustness_reducing(self.name)


@hookimpl
def register_defenses():
    return [BiDO]
