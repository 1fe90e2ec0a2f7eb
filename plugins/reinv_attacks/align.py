"""``align``: AlignMI's gradient-manifold alignment, a training-free wrapper over a white-box attack.

Paper: Peng, Han, Yu, Liu, Liu, Zhou. "Generative Model Inversion Through the Lens of the Manifold
Hypothesis." NeurIPS 2025. Code: github.com/AlanPeng0897/AlignMI @3f7fff9
(``low_resolution/attacks/optimize.py::gmi_optimize_paa``, ``gmi_optimize_taa``,
``kedmi_optimize_paa``, ``kedmi_optimize_taa``, ``build_transformations``,
``ked_build_transformations``; ``high_resolution/attacks/optimize.py::Optimization.
optimization_PAA``, ``optimization_TAA``, ``build_transformations``).

Syntax: ``-a align+gmi``, ``-a "align[mode=paa]+kedmi"``, ``-a align+ppa``, and under LOMMA
``-a lomma+align+gmi`` / ``-a lomma+align+kedmi`` (LOMMA hands ``align`` its logit loss and
feature regulariser, which ``align`` averages; ``align+lomma+...`` is refused with that hint).

The official low-resolution setups are LOMMA's (``low_resolution/configs/attacking/
ked_dcgan-celeba_vgg16-*.yaml``, ``gmi_stylegan-celeba_vgg16-*.yaml``: ``loss: logit_loss``,
``classid: '0,1,2,3'`` = the target plus the three distilled EfficientNet-B0/B1/B2, ``lam: 1.0``,
``identity_weight: 100``; ``Optimization.iden_loss``: NLLLoss on the raw logits averaged over the
four models, plus ``lam * reg_loss`` on the target's features only, all on each copy). That is
``lomma+align+BASE``, the documented combination; the plain ``align+gmi`` / ``align+kedmi`` average
``iden_loss``'s ``ce_loss`` branch (CE, one model), which no official config runs. The official
KEDMI base is not KEDMI's own: ``optimizer: SGD lr 0.01 momentum 0.9``, ``num_iterations`` 200
(baseline, TAA) or 100 (PAA), ``clipz`` (z clamped to [-1, 1]) and ``reparameterize_batch``'s
sigma = exp(log sigma^2 / 2) + 5. The closest run here:

    -a "lomma[iters=200]+align+kedmi[optimizer=sgd,lr=0.01,std_offset=5,clamp=1]"

(``lomma[iters=100]+align[mode=paa]+kedmi[...]`` for PAA). At every step the
gradient of the base's identity term with respect to the synthetic images is replaced by its
average over ``samples`` copies of them:

- PAA (perturbation-averaged alignment): x + sigma * eps, eps ~ N(0, I), sigma = ``spread`` times
  the batch's value range (``imgs.max() - imgs.min()``, a constant of the step);
- TAA (transformation-averaged alignment): RandomResizedCrop(size, ``scale``, ratio 0.9-1.1,
  antialias) -> RandomHorizontalFlip(0.5) -> RandomRotation(``degrees``, bilinear), torchvision on
  the batch (one draw per copy), on pixels in [0, 1] for kedmi (black outside the rotated image,
  as the official DCGAN's sigmoid output), on the [-1, 1] images for gmi and ppa (a rotation fills
  with 0, mid-grey: the official GMI runs on StyleGAN, the README's ``attack_gmi.py -sg``, and
  ``gmi_optimize_taa`` transforms its [-1, 1] synthesis output; ppa is StyleGAN's);

and backpropagated through the generator (``torch.autograd.grad(imgs, z, grad_outputs=smooth_grad)``).
The average of the copies' identity losses has exactly that gradient, so the wrapper hands the
base an ``IdentityLoss`` that is the mean over the copies of the identity term: LOMMA's under
``lomma+align+``, else the base's own (CE(T(x), y) for gmi and kedmi, the Poincaré loss for ppa,
applied where the base applies it: for ppa after its attack transforms, as ``optimization_PAA``
perturbs the transformed images).

Official constants, by base (``samples`` = 0 and ``spread``/``scale``/``degrees`` unset pick them):

    base   PAA: copies, spread   TAA: copies, RRC scale, rotation
    gmi    50, 0.003             30, 0.9-1.0, 3 degrees   (gmi_optimize_*, build_transformations)
    kedmi  50, 0.05              50, 0.8-1.0, 5 degrees   (kedmi_optimize_*, ked_build_...)
    ppa    50, 0.06              50, 0.8-1.0, 5 degrees   (optimization_PAA/TAA, high_resolution)

The default mode is ``taa`` (``paa`` by ``align[mode=paa]``). The iterations are the base's
(LOMMA's ``iters`` under ``lomma+align+``).

Measured on the digits (``benchmarks/grids/attackers-mnist.toml``, quick, cnn targets, three
seeds): TAA lowers GMI's attack accuracy by 11-14 points, the loss concentrated on the
mirror-asymmetric digits 3, 5, 6 and 7, where PAA leaves it unchanged (-0.7). TAA's horizontal
flip, official for faces, averages the gradient with that of the mirrored digit, which is
consistent with this (not isolated: the crop and rotation were not varied apart); on classes that
are not mirror-symmetric, ``align[mode=paa]`` is the variant to run.

Deliberate differences: only the identity term is averaged. The official KEDMI variants also
average the discriminator's prior loss over the copies, and its ``kedmi_optimize_paa`` takes two
optimiser (SGD) steps per iteration (``optimizer.step()`` twice), not reproduced; the official
low-resolution GMI runs without a prior term (``prior_loss = 0.0``) where the base here keeps
-D(G(z)), and (``gmi_optimize_paa``/``_taa``, StyleGAN or DCGAN alike) rescales each perturbed or
transformed batch to [0, 1] by its min and max (its targets' input range); here the copies stay in
the base's image range, which the target reads. The official scripts run their own iteration
counts (low resolution: 100-200); here the base's own, or LOMMA's ``iters`` under
``lomma+align+``. The official KEDMI base draws 100 samples per class from one distribution per
batch of 100 rows (``batch_size: 100``), the KEDMI base here one draw per class per step (its
identity batches). The official StyleGAN GMI (``gmi_stylegan-*``: NAG-style momentum 0.9, lr 0.02,
100 iterations) has no counterpart here: ``gmi`` keeps its own DCGAN and optimiser.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from reinv_bench import hookimpl
from reinv_bench.api import (
    AttackContext,
    ConfigError,
    IdentityLoss,
    Inversion,
    Param,
    PriorSpec,
    WrapperAttack,
)

from ._align import (  # noqa: F401
    OFFICIAL,
    PIXEL_SPACE,
    TAA_RATIO,
    averaged,
    perturb,
    taa_transforms,
    transform,
)
from ._stylegan import poincare_loss


class Align(WrapperAttack):
    name = "align"
    version = 2  # 2: gmi's TAA rotation fills with mid-grey, as the official StyleGAN-based GMI (issue 30)
    params = {
        "mode": Param(
            "taa",
            "taa: average over random transformations; paa: over Gaussian perturbations",
            choices=("taa", "paa"),
        ),
        "samples": Param(0, "copies averaged per step; 0: the official count for the base (30-50)", low=0),
        "spread": Param(
            0.0, "PAA noise std / the batch's value range; 0: the official one for the base", low=0.0
        ),
        "scale": Param(
            (0.0, 0.0),
            "TAA RandomResizedCrop area range; 0-0: the official one for the base",
            low=0.0,
            high=1.0,
        ),
        "degrees": Param(0.0, "TAA rotation range in degrees; 0: the official one for the base", low=0.0),
    }
    budgets = {"smoke": {"samples": 2}, "quick": {"samples": 8}}
    accepts_identity = True  # adaptive+align+gmi: the copies average the given identity loss

    accepts_identity = True  # lomma+align+BASE: the identity averaged is LOMMA's (official low res)

    def __init__(self, config=None, budget: str = "paper", base=None) -> None:
        if isinstance(base, WrapperAttack):  # align+lomma+gmi: align averages what its wrapper hands it
            raise ConfigError(
                f"align wraps {', '.join(OFFICIAL)}; got {base.name!r}: write {base.name}+align+"
                f"{base.base.name} (align averages the identity loss its wrapper hands it)"
            )
        super().__init__(config, budget, base)
        if base.name not in OFFICIAL:
            raise ConfigError(
                f"align wraps {', '.join(OFFICIAL)} (AlignMI's official variants); got {base.name!r}"
            )

    def priors(self) -> list[PriorSpec]:
        return self.base.priors()  # training-free: the base's priors only

    def settings(self) -> tuple[int, float, tuple[float, float], float]:
        """(copies, spread, scale, degrees): the given values, else the official ones for the base."""
        c = self.config
        paa_n, spread, taa_n, scale, degrees = OFFICIAL[self.base.name]
        n = c.samples or (paa_n if c.mode == "paa" else taa_n)
        return n, c.spread or spread, tuple(c.scale) if max(c.scale) > 0 else scale, c.degrees or degrees

    def identity(self, ctx: AttackContext, given: IdentityLoss | None = None) -> IdentityLoss:
        """The identity term averaged over copies: ``given``'s (a wrapper's: LOMMA's logit loss and
        feature regulariser, with its iterations), else the base's own (ppa: the Poincaré loss;
        gmi, kedmi: CE)."""
        n = self.settings()[0]
        T_, ppa = ctx.target, self.base.name == "ppa"

        def own(x: Tensor, y: Tensor) -> Tensor:
            return poincare_loss(T_(x).float(), y) if ppa else F.cross_entropy(T_(x), y, reduction="none")

        loss = given.loss if given is not None else own
        copy = self.copy(ctx.scenario.image_shape[-1])
        return IdentityLoss(averaged(loss, copy, n), iters=given.iters if given is not None else None)

    def copy(self, size: int):
        """One random copy of a batch of ``size``-pixel images: PAA's perturbation or TAA's transforms."""
        _, spread, scale, degrees = self.settings()
        if self.config.mode == "paa":
            return perturb(spread)
        return transform(size, scale, degrees, self.base.name in PIXEL_SPACE)

    def invert(self, ctx: AttackContext, priors: dict, classes: list[int], identity=None) -> Inversion:
        inv = self.base.invert(ctx, priors, classes, self.identity(ctx, identity))
        inv.info["align_samples"] = self.settings()[0]
        return inv


@hookimpl
def register_attacks():
    return [Align]
