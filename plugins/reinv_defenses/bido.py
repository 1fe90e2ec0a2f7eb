"""``bido``: Bilateral Dependency Optimization.

Paper: Peng, Liu, Ning, Lin, Liu, Wang. "Bilateral Dependency Optimization: Defending Against
Model-inversion Attacks." KDD 2022. Code: github.com/AlanPeng0897/Defend_MI (``BiDO/engine.py``
``multilayer_hsic``, ``BiDO/hsic.py``).

Loss = CE + sum over hidden blocks j of [a1 * d(X, Z_j) - a2 * d(Z_j, Y)]: lower the dependency
between the input and each representation, raise it between each representation and the label.
d is the official ``hsic_normalized_cca``: with centred kernel matrices Kc = K H (H = I - 1/m),
R = Kc (Kc + eps m I)^-1 and d(A, B) = sum(R_A * R_B^T) (eps = 1e-5); Gaussian kernel
exp(-||a - a'||^2 / (2 sigma^2 dim)) with sigma = 5 on inputs and features, linear kernel on the
one-hot labels (``--ktype linear``). ``bido[measure=coco]`` uses the official
``coco_normalized_cca``: sqrt(||K L||_F) / m with doubly centred kernels H K H. Defaults
(a1, a2) = (0.05, 0.5), the released CelebA setting for GMI/KEDMI.

Kernels and inverses are computed in float64 (the official code uses float32): the centred
kernel matrix is nearly singular, and in float32 its regularised inverse differs by several
percent between mathematically equal computations.

Note: the official "normalised" HSIC is a NOCCO-style statistic: it is not scaled to 1 for
d(X, X) (it approaches the rank of the centred kernel); the harness keeps the official measure.
Hidden blocks: every block output of the architecture except its last (the penultimate feature
block), matching the official choice of VGG16's conv stages.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from reinv_bench import hookimpl
from reinv_bench.api import Defense, Output, Param

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
    needs_hidden = True
    params = {
        "a1": Param(0.05, "weight of d(X, Z_j), minimised (official CelebA: 0.05)", low=0.0),
        "a2": Param(0.5, "weight of d(Z_j, Y), maximised (official CelebA: 0.5)", low=0.0),
        "sigma": Param(5.0, "Gaussian kernel width (official: 5)", low=1e-6),
        "measure": Param("hsic", "dependency measure", choices=("hsic", "coco")),
        "ktype": Param("linear", "kernel on the one-hot labels (official default: linear)", choices=("linear", "gaussian")),
    }

    def dependency(self, a: Tensor, b: Tensor, ktype_b: str = "gaussian") -> Tensor:
        fn = hsic_normalized_cca if self.config.measure == "hsic" else coco_normalized_cca
        return fn(a, b, self.config.sigma, ktype_b)

    def loss(self, out: Output, x: Tensor, y: Tensor) -> Tensor:
        onehot = F.one_hot(y, out.logits.shape[1]).float()
        reg = out.logits.new_zeros(())
        for z in out.hidden[:-1]:
            reg = reg + self.config.a1 * self.dependency(z, x) - self.config.a2 * self.dependency(z, onehot, self.config.ktype)
        return F.cross_entropy(out.logits, y) + reg


@hookimpl
def register_defenses():
    return [BiDO]
