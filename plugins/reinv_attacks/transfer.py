"""``transfer``: the transfer attacker, a wrapper that inverts surrogates of the target instead of
the target itself.

Principle: a defense that works by suppressing or masking the target's gradient (AT-AT's
gradient-suppressing family: NegLS, RoLSS, Trap-MID) protects nothing if the same information can
be inverted from a model that imitates the target's outputs; Carlini et al., "On Evaluating
Adversarial Robustness" (2019): a transfer (or black-box) attack beating the white-box one is the
sign of gradient masking. Athalye, Carlini, Wagner (ICML 2018) and Tramèr et al. (NeurIPS 2020)
use transfer from undefended surrogates for the same check.

Syntax: ``-a transfer+gmi``, ``-a "transfer[students=cnn/resnet8]+kedmi"``. The surrogates are
LOMMA's augmented models (``lomma.py``: students distilled from the target on the public data with
KL at temperature 1, SGD lr 0.01, momentum 0.9, weight decay 1e-4, batch 64, 20 epochs; ``paper``:
torchvision EfficientNet-B0/B1/B2, ``quick``/``smoke``: one small ``cnn``); with the same settings
the cached prior (kind ``lomma-students``) is shared with ``lomma+``. Distillation only queries the
target (its outputs under ``no_grad``).

The base attack then runs with ``ctx.target`` replaced by the surrogates (their mean logits:
``Surrogates``; what the base reads besides its identity term, e.g. PPA's candidate search and
final selection, is the surrogates' answer) and an identity loss that is the mean over the
surrogates of the base's own identity term (``Attack.identity_term``: CE for gmi and kedmi,
Poincaré for ppa, ...), as LOMMA's model augmentation averages per-model losses. The target's
gradient is never taken in the inversion (tested with a target whose backward raises).

Not covered: the base's own priors are built as the base builds them; a prior that uses the target
(KEDMI's GAN trained with its soft labels, PLG-MI's cGAN with its max-margin loss) takes its
gradient while it is trained. ``transfer+gmi`` and ``transfer+ppa`` (target-independent priors)
never touch the target's gradient at all.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from reinv_bench import hookimpl
from reinv_bench.api import AttackContext, IdentityLoss, Inversion, Output, PriorSpec, WrapperAttack

from ._students import (
    STUDENT_BUDGETS,
    STUDENT_PARAMS,
    STUDENT_PRIOR_PARAMS,
    STUDENTS,
    STUDENTS_VERSION,
    load_students,
    students_prior,
)


class Surrogates(nn.Module):
    """The surrogates seen as one target: their mean logits (``forward_all``'s features are the
    same logits: the students share no feature space)."""

    def __init__(self, students: list[nn.Module]) -> None:
        super().__init__()
        self.students = nn.ModuleList(students)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([s(x) for s in self.students]).mean(0)

    def forward_all(self, x: Tensor, hidden: bool = False) -> Output:
        logits = self(x)
        return Output(logits, logits)


class Transfer(WrapperAttack):
    name = "transfer"
    version = 1
    # the distillation settings of LOMMA's model augmentation (same defaults and budgets)
    params = STUDENT_PARAMS
    budgets = STUDENT_BUDGETS
    prior_kind = STUDENTS
    prior_params = STUDENT_PRIOR_PARAMS
    prior_uses_target = True

    def priors(self) -> list[PriorSpec]:
        """The base's priors and LOMMA's students under LOMMA's version: one cached artifact."""
        c = self.config
        students = PriorSpec(STUDENTS, {k: c[k] for k in self.prior_params}, True, STUDENTS_VERSION)
        return [*self.base.priors(), students]

    def prepare(self, ctx: AttackContext, kind: str) -> dict:
        if kind != STUDENTS:
            return super().prepare(ctx, kind)
        return students_prior(ctx, self.config)

    def invert(self, ctx: AttackContext, priors: dict, classes: list[int], identity=None) -> Inversion:
        students = load_students(ctx, priors[STUDENTS])
        term = self.base.identity_term

        def loss(x: Tensor, y: Tensor) -> Tensor:
            return sum(term(s(x), y) for s in students) / len(students)

        surrogate = Surrogates(students).eval()
        ctx_s = replace(ctx, target=surrogate, defense=None)
        inv = self.base.invert(ctx_s, priors, classes, IdentityLoss(loss))
        inv.info["transfer_students"] = len(students)
        return inv


@hookimpl
def register_attacks():
    return [Transfer]
