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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reinv_bench import hookimpl
from reinv_bench.api import AttackContext, ConfigError, IdentityLoss, Inversion, Param, WrapperAttack

from ._gan import batch_stream, frozen

STUDENTS = "lomma-students"


def build_student(name: str, num_classes: int, image_shape, architecture) -> nn.Module:
    """A surrogate student: torchvision's EfficientNet (random init), or a registered architecture
    (``cnn``, ``resnet8``: ``architecture(name)``, the context's ``ctx.architecture``)."""
    if name.startswith("efficientnet_b"):
        import torchvision

        net = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
        if image_shape[0] != 3:
            old = net.features[0][0]
            net.features[0][0] = nn.Conv2d(
                image_shape[0], old.out_channels, old.kernel_size, old.stride, old.padding, bias=False
            )
        return net
    if name in ("cnn", "resnet8"):
        return architecture(name).build(num_classes, image_shape)
    raise ConfigError(f"lomma: unknown student {name!r}; use efficientnet_b0..b7, cnn or resnet8")


def distill(
    student: nn.Module,
    teacher,
    public: Tensor,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    device,
    seed: int,
) -> nn.Module:
    """Official ``engine.py::train_augmodel``: KL(softmax(T(x)) || softmax(S(x))) summed and
    divided by the batch size (temperature 1), SGD with momentum 0.9, shuffled batches with
    ``drop_last``."""
    torch.manual_seed(seed)
    student.to(device).train()
    opt = torch.optim.SGD(student.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    x = public.to(device)
    with torch.no_grad():
        soft = torch.cat([teacher(x[i : i + 512]) for i in range(0, len(x), 512)]).log_softmax(1)
    steps = epochs * (len(x) // min(batch_size, len(x)))
    for (idx,) in batch_stream(len(x), batch_size, steps, torch.Generator().manual_seed(seed)):
        idx = idx.to(device)
        loss = F.kl_div(student(x[idx]).log_softmax(1), soft[idx], log_target=True, reduction="batchmean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return student.eval().requires_grad_(False)


def public_feature_mean(T, public: Tensor, n: int, seed: int, device) -> Tensor:
    """mu_pub: the target's mean penultimate feature over ``n`` public images drawn at random
    (all of them if there are fewer)."""
    idx = torch.randperm(len(public), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    with torch.no_grad():
        x = public[idx]
        return torch.cat([T.features(x[i : i + 512].to(device)) for i in range(0, len(x), 512)]).mean(0)


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


def students_prior(ctx: AttackContext, c) -> dict:
    """The augmented models (students distilled from ``ctx.target`` on the public data, under the
    distillation settings of config ``c``) and mu_pub: the prior of kind ``lomma-students``,
    shared by ``lomma+`` and ``transfer+`` with the same settings. The target is only queried
    (no gradient is taken through it)."""
    T = ctx.target
    mu_pub = public_feature_mean(T, ctx.data.public.x, c.reg_samples, ctx.seed, ctx.device)
    states = {}
    for i, name in enumerate(c.students.split("/")):
        s = build_student(name, ctx.scenario.num_classes, ctx.scenario.image_shape, ctx.architecture)
        distill(
            s,
            T,
            ctx.data.public.x,
            epochs=c.distill_epochs,
            lr=c.distill_lr,
            weight_decay=c.distill_wd,
            batch_size=c.distill_batch,
            device=ctx.device,
            seed=ctx.seed + i,
        )
        states[f"{i}:{name}"] = {k: v.cpu() for k, v in s.state_dict().items()}
    return {"mu_pub": mu_pub.cpu(), "students": states}


def load_students(ctx: AttackContext, prior: dict) -> list[nn.Module]:
    """The students of a ``lomma-students`` prior, frozen on the context's device."""
    students = []
    for key, state in prior["students"].items():
        s = build_student(
            key.split(":", 1)[1], ctx.scenario.num_classes, ctx.scenario.image_shape, ctx.architecture
        )
        students.append(frozen(s, state, ctx.device))
    return students


class LOMMA(WrapperAttack):
    name = "lomma"
    version = 2  # 2: own iterations (2400), distillation weight decay, mu_pub over 5,050 images
    params = {
        "reg": Param(1.0, "weight of the feature regulariser ||f_T(x) - mu_pub||^2 (paper: 1)", low=0.0),
        "iters": Param(
            2400, "inversion iterations, replacing the base's (official: 2400 for gmi and kedmi)", low=1
        ),
        "reg_samples": Param(
            5050, "public images averaged into mu_pub (official get_act_reg: 101 batches of 50)", low=1
        ),
        "students": Param(
            "efficientnet_b0/efficientnet_b1/efficientnet_b2", "surrogate students, /-separated"
        ),
        "distill_epochs": Param(20, "distillation epochs on the public data (official: 20)", low=0),
        "distill_lr": Param(0.01, "distillation SGD lr (official: 0.01)", low=0.0),
        "distill_wd": Param(1e-4, "distillation SGD weight decay (official: 1e-4)", low=0.0),
        "distill_batch": Param(64, "distillation batch size (official: 64)", low=1),
    }
    budgets = {
        "smoke": {"students": "cnn", "distill_epochs": 1, "iters": 20},
        "quick": {"students": "cnn", "distill_epochs": 5, "iters": 400},
    }
    # the wrapper's own prior, beside the base's
    prior_kind = STUDENTS
    prior_params = ("students", "distill_epochs", "distill_lr", "distill_wd", "distill_batch", "reg_samples")
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
