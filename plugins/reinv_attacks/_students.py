"""LOMMA's augmented models (``lomma.py``): surrogate students distilled from the target on the
public data, and mu_pub; the prior of kind ``lomma-students``, shared by ``lomma+`` and
``transfer+`` (same settings, same cached artifact)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reinv_bench.api import AttackContext, ConfigError, Param

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


STUDENTS_VERSION = 2  # LOMMA's version, which enters the key of the students prior
# the distillation settings (LOMMA's parameters that key the students prior), their budgets
STUDENT_PARAMS = {
    "reg_samples": Param(
        5050, "public images averaged into mu_pub (official get_act_reg: 101 batches of 50)", low=1
    ),
    "students": Param("efficientnet_b0/efficientnet_b1/efficientnet_b2", "surrogate students, /-separated"),
    "distill_epochs": Param(20, "distillation epochs on the public data (official: 20)", low=0),
    "distill_lr": Param(0.01, "distillation SGD lr (official: 0.01)", low=0.0),
    "distill_wd": Param(1e-4, "distillation SGD weight decay (official: 1e-4)", low=0.0),
    "distill_batch": Param(64, "distillation batch size (official: 64)", low=1),
}
STUDENT_PRIOR_PARAMS = (
    "students",
    "distill_epochs",
    "distill_lr",
    "distill_wd",
    "distill_batch",
    "reg_samples",
)
STUDENT_BUDGETS = {
    "smoke": {"students": "cnn", "distill_epochs": 1},
    "quick": {"students": "cnn", "distill_epochs": 5},
}
