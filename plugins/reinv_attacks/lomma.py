"""``lomma``: Logit loss and Model Augmentation, a wrapper over a white-box attack.

Paper: Nguyen, Tran, Le, Ho, Cheung. "Re-thinking Model Inversion Attacks Against Deep Neural
Networks." CVPR 2023. Code: github.com/sutd-visual-computing-group/Re-thinking_MI
(``attack.py::iden_loss``, ``reg_loss``, ``get_act_reg``, ``dist_inversion``, ``inversion``;
``utils.py::get_attack_model``; ``engine.py::train_augmodel``; ``recovery.py``;
``config/celeba/attacking/*.json``, ``config/celeba/training_augmodel/*.json``).

Syntax: ``-a lomma+gmi``, ``-a lomma+kedmi`` (``-a "lomma[reg=0.5,iters=300]+gmi"``): the wrapper's
parameters are its own, the base attack's are the base's, and the base's priors are shared with
the plain base attack. The number of iterations is LOMMA's ``iters`` (official: 2400 for both
bases, ``iters_mi``), which replaces the base's own ``iters``; every other inversion setting
(lr 0.02, lambda 100, restarts, identity batches of 60) is the base's.

(i) Logit loss: the base attack's identity term lambda * CE(T(x), y) becomes
lambda * [mean over models m of -logit_y(m(x)) + reg * mean_d (f_T(x) - mu_pub)^2], where mu_pub is
the target's mean penultimate feature over 5,050 random public images (``get_act_reg``: a
shuffled loader of 50 per batch, stopped once ``batch_idx * 50 > 5000``) (official ``iden_loss``
with ``logit_loss``: NLLLoss on raw logits, feature regulariser on the target only,
``torch.mean`` over batch and dimensions); reg = 1 (``lam`` in the attacking configs).
(ii) Model augmentation: surrogate students distilled from the target on the public data with
KL(target || student) at temperature 1 (``KLDivLoss(reduction='sum')`` / batch size), SGD lr
0.01, momentum 0.9, weight decay 1e-4, batch 64, 20 epochs in ``paper`` (its StepLR(20, 0.5) never
fires within 20 epochs); the logit loss is averaged over the target and the students. ``paper``
students are torchvision EfficientNet-B0/B1/B2 (official); ``quick`` uses one small ``cnn``
student.

Prior: a target-dependent artifact (students + mu_pub), cached per target.

Deliberate differences: the official students start from ImageNet weights, which cannot be
fetched here; they are randomly initialised (first convolution adapted to the channels).
LOMMA's KEDMI variant clamps z to [-1, 1] in recovery and sampling, KEDMI's own code does not:
``lomma+kedmi`` keeps the base's default (no clamp); ``lomma+kedmi[clamp=1]`` is LOMMA's exact
setting.
"""

from __future__ import annotations

from torch import Tensor, nn

from reinv_bench import hookimpl
from reinv_bench.api import AttackContext, IdentityLoss, Inversion, Param, WrapperAttack

from ._students import (  # noqa: F401
    STUDENT_BUDGETS,
    STUDENT_PARAMS,
    STUDENT_PRIOR_PARAMS,
    STUDENTS,
    STUDENTS_VERSION,
    build_student,
    distill,
    load_students,
    public_feature_mean,
    students_prior,
)


def logit_identity(target, students: list[nn.Module], mu_pub: Tensor, reg: float, term=None):
    """Per-image LOMMA identity loss. ``term(x, y)``, when given (an outer wrapper's identity:
    ``adaptive+lomma+gmi``), replaces the target's -logit_y(T(x)); the students' terms and the
    feature regulariser stay."""

    def identity(x: Tensor, y: Tensor) -> Tensor:
        out = target.forward_all(x)
        logit = -out.logits.gather(1, y[:, None]).squeeze(1) if term is None else term(x, y)
        for s in students:
            logit = logit - s(x).gather(1, y[:, None]).squeeze(1)
        return logit / (1 + len(students)) + reg * (out.features - mu_pub).pow(2).mean(1)

    return identity


class LOMMA(WrapperAttack):
    name = "lomma"
    version = 2  # 2: own iterations (2400), distillation weight decay, mu_pub over 5,050 images
    params = {
        "reg": Param(1.0, "weight of the feature regulariser ||f_T(x) - mu_pub||^2 (paper: 1)", low=0.0),
        "iters": Param(
            2400, "inversion iterations, replacing the base's (official: 2400 for gmi and kedmi)", low=1
        ),
        **STUDENT_PARAMS,
    }
    budgets = {
        "smoke": {**STUDENT_BUDGETS["smoke"], "iters": 20},
        "quick": {**STUDENT_BUDGETS["quick"], "iters": 400},
    }
    # the wrapper's own prior, beside the base's
    prior_kind = STUDENTS
    prior_params = STUDENT_PRIOR_PARAMS
    prior_uses_target = True
    accepts_identity = True  # adaptive+lomma+gmi: the identity replaces the target's logit term

    def identity_term(self, logits: Tensor, y: Tensor) -> Tensor:
        """LOMMA's target term: -logit_y (official ``iden_loss`` with ``logit_loss``)."""
        return -logits.gather(1, y[:, None]).squeeze(1)

    def prepare(self, ctx: AttackContext, kind: str) -> dict:
        if kind != STUDENTS:
            return super().prepare(ctx, kind)
        return students_prior(ctx, self.config)

    def invert(self, ctx: AttackContext, priors: dict, classes: list[int], identity=None) -> Inversion:
        p = priors[STUDENTS]
        students = load_students(ctx, p)
        loss = logit_identity(
            ctx.target, students, p["mu_pub"].to(ctx.device), self.config.reg, identity and identity.loss
        )
        iters = (identity and identity.iters) or self.config.iters
        return self.base.invert(ctx, priors, classes, IdentityLoss(loss, iters=iters))


@hookimpl
def register_attacks():
    return [LOMMA]
