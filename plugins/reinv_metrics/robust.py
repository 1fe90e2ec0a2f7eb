"""``robust_acc``: adversarial robustness of the target (issue 18).

AT-AT (ICLR 2026, github.com/BreuerLabs/Anti-Adversarial-Training @ec6069a) finds that
model-inversion leakage tracks the target's adversarial robustness, and evaluates every target
with AutoAttack (``utils/auto_attack.py``, ``configuration/classifier/config_evaluate.yaml``:
L-inf, eps 0.031 on pixels in [0, 1], the model behind a (x - 0.5) / 0.5 normalisation). This
metric measures the same quantity on the harness's targets, built on ``torchattacks`` (extra
``[robust]``).

Definition: the fraction of the chosen private test images that the target (eval mode) classifies
correctly both clean and after the attack; per image (with its class), for intervals. The attack
sees pixels in [0, 1] and the target behind x -> 2x - 1 (the harness's [-1, 1] space), so eps is
in [0, 1] pixel units as in AutoAttack and AT-AT. By budget:

- ``smoke`` / ``quick``: PGD, L-inf, eps 0.031, step 2/255, 10 steps, uniform random start
  (torchattacks ``PGD`` with its default step and steps), on 64 / 512 test images drawn with a
  fixed seed: minutes on CPU.
- ``paper``: AutoAttack "standard" (L-inf, eps 0.031) on the whole test split, as the official
  ``AutoAttack.set_version('standard')`` (fra31/auto-attack ``autoattack/autoattack.py``): APGD-CE
  (100 iterations, 1 restart), APGD-T (100 iterations, 9 target classes), FAB-T (100 iterations,
  9 target classes), Square (5,000 queries, ``resc_schedule`` off), each run on the images that
  are still correct. It is assembled here from torchattacks' attack classes because torchattacks'
  own ``AutoAttack`` preset differs from the official one (10 iterations, C - 1 target classes,
  Square's rescaled schedule). ``robust_acc_apgd`` is the accuracy after APGD-CE alone: what
  AT-AT's ``auto_attack`` reports (its config runs ``apgd-ce`` only).

Deliberate difference: AT-AT's evaluation config attacks the *training* split by default; here
the held-out test split, as ``natural_acc``. The result is cached per target (its weights), data
and protocol, like the metrics' other per-target statistics. Not run by default: ``--metric
robust_acc`` adds it to a run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import Tensor, nn

from reinv_bench import hookimpl
from reinv_bench.api import Column, EvalContext, Metric, NotComputed, PerItem, Split

EPS = 0.031  # AT-AT config_evaluate.yaml auto_attack.eps, on [0, 1] pixels
PGD_STEP = 2 / 255  # torchattacks PGD's default alpha
PGD_STEPS = 10  # torchattacks PGD's default steps
SUBSET = {"smoke": 64, "quick": 512}  # test images attacked at the CPU budgets (paper: all)
BATCH = 256
INSTALL = "pip install 'reinv-bench[robust]'"


def protocol(budget: str) -> dict:
    """The declared attack of a budget (also the cache key's protocol part)."""
    if budget == "paper":
        return {"attack": "autoattack-standard", "norm": "Linf", "eps": EPS, "images": "all test"}
    return {
        "attack": "pgd",
        "norm": "Linf",
        "eps": EPS,
        "step": PGD_STEP,
        "steps": PGD_STEPS,
        "random_start": True,
        "images": SUBSET.get(budget, SUBSET["quick"]),
    }


class _Pixels(nn.Module):
    """The target seen on [0, 1] pixels, as torchattacks and AutoAttack expect."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, p: Tensor) -> Tensor:
        return self.model(p * 2 - 1)


def autoattack_standard(model: nn.Module, num_classes: int, eps: float = EPS, seed: int = 0) -> list:
    """The components of the official AutoAttack "standard" (L-inf), from torchattacks' classes."""
    import torchattacks as ta

    targets = min(9, num_classes - 1)
    apgd = ta.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1, seed=seed, loss="ce")
    apgdt = ta.APGDT(model, norm="Linf", eps=eps, steps=100, n_restarts=1, seed=seed, n_classes=num_classes)
    fab = ta.FAB(
        model,
        norm="Linf",
        eps=eps,
        steps=100,
        n_restarts=1,
        seed=seed,
        multi_targeted=True,
        n_classes=num_classes,
    )
    apgdt.n_target_classes = fab.n_target_classes = targets
    square = ta.Square(
        model, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, p_init=0.8, resc_schedule=False, seed=seed
    )
    return [apgd, apgdt, fab, square]


def cascade(
    model: nn.Module, attacks: list[Callable[[Tensor, Tensor], Tensor]], p: Tensor, y: Tensor
) -> list[Tensor]:
    """Run ``attacks`` in turn, each on the images still classified correctly; returns the
    correctness mask after each attack (AutoAttack's ``run_standard_evaluation``)."""
    with torch.no_grad():
        correct = model(p).argmax(1) == y
    masks = []
    for attack in attacks:
        idx = correct.nonzero().flatten()
        if len(idx):
            adv = attack(p[idx], y[idx])
            with torch.no_grad():
                correct[idx] = model(adv).argmax(1) == y[idx]
        masks.append(correct.clone())
    return masks


def weights_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(
            v.detach().cpu().contiguous().numpy().tobytes()
            if v.dtype != torch.bfloat16
            else v.detach().float().cpu().numpy().tobytes()
        )
    return h.hexdigest()


def chosen(test: Split, budget: str) -> Tensor:
    """Indices of the test images attacked: all at paper, else a fixed-seed subset."""
    n = len(test.y)
    if budget == "paper":
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[
        : SUBSET.get(budget, SUBSET["quick"])
    ]


def robust_correct(
    target: nn.Module, test: Split, budget: str, num_classes: int, device: torch.device
) -> dict[str, Tensor]:
    """Per chosen test image: correct after the attack (and, at paper, after APGD-CE alone)."""
    import torchattacks as ta

    model = _Pixels(target).to(device).eval()
    idx = chosen(test, budget)
    after, first = [], []
    for i in range(0, len(idx), BATCH):
        b = idx[i : i + BATCH]
        # x[b].to(): a tensor, or the decoded batch of a file-backed split (ImageFiles)
        p = ((test.x[b].to(device).float() + 1) / 2).clamp(0, 1)
        y = test.y[b].to(device)
        if budget == "paper":
            masks = cascade(model, autoattack_standard(model, num_classes), p, y)
            first.append(masks[0].cpu())
        else:
            masks = cascade(
                model, [ta.PGD(model, eps=EPS, alpha=PGD_STEP, steps=PGD_STEPS, random_start=True)], p, y
            )
        after.append(masks[-1].cpu())
    out = {"index": idx, "correct": torch.cat(after).int()}
    if first:
        out["correct_apgd"] = torch.cat(first).int()
    return out


class RobustAccuracy(Metric):
    name = "robust_acc"
    version = 1
    protocols = ("on request",)  # no scenario's protocol: only with --metric robust_acc
    definition = (
        "Accuracy of the target (eval mode) on private test images that stay correctly classified under an "
        f"L-inf attack with eps {EPS} on [0, 1] pixels (AT-AT config_evaluate.yaml), "
        "the attack seeing pixels "
        "and the target behind x -> 2x - 1; torchattacks (extra [robust]). smoke/quick: PGD, step 2/255, "
        f"10 steps, random start, on {SUBSET['smoke']}/{SUBSET['quick']} fixed-seed test images. paper: "
        "AutoAttack standard as fra31/auto-attack (APGD-CE, APGD-T, FAB-T 100 iterations and 9 targets, "
        "Square 5000 queries) on all test images; robust_acc_apgd: after APGD-CE alone, what AT-AT "
        "reports. Cached per target. Not run by default: --metric robust_acc."
    )
    columns = (
        Column("robust_acc", "Robust acc %", percent=True),
        Column("robust_acc_apgd", "APGD-CE acc %", percent=True),
    )

    def compute(self, ctx: EvalContext):
        try:
            import torchattacks  # noqa: F401
        except ImportError:
            return {"robust_acc": NotComputed(f"robust_acc needs torchattacks: {INSTALL}")}
        test = ctx.data.private_test
        key = {
            "weights": weights_digest(ctx.target),
            "data": ctx.data.digest,
            "protocol": protocol(ctx.budget),
            "version": self.version,
        }
        res = ctx.cache(
            "robust_acc",
            key,
            lambda: robust_correct(ctx.target, test, ctx.budget, ctx.scenario.num_classes, ctx.device),
        )
        classes = test.y[res["index"]].tolist()
        out = {"robust_acc": PerItem(res["correct"].float().mean().item(), res["correct"].tolist(), classes)}
        if "correct_apgd" in res:
            c = res["correct_apgd"]
            out["robust_acc_apgd"] = PerItem(c.float().mean().item(), c.tolist(), classes)
        return out


@hookimpl
def register_metrics():
    return [RobustAccuracy()]
