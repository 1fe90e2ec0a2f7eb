"""Natural accuracy and attack accuracy.

``natural_acc``: accuracy of the target on the private test split.
``attack_acc`` / ``attack_acc5``: fraction of reconstructions whose evaluation-model top-1 (top-5)
prediction is the class they were reconstructed for (LOMMA ``attack.py::attack_acc``; every
reconstruction counts). Top-5 is only defined where the scenario has more than 5 classes:
otherwise it is stored as null with that reason, never as a number that means nothing.
"""

from __future__ import annotations

import torch

from reinv_bench import hookimpl
from reinv_bench.api import Column, EvalContext, Metric, NotComputed, PerItem, predict


class NaturalAccuracy(Metric):
    name = "natural_acc"
    definition = (
        "Top-1 accuracy of the target (in eval mode) on the private test split: every test image, "
        "stored as a fraction, shown in %."
    )
    # train_acc: not computed here; declared so that published training accuracies read as percent
    columns = (
        Column("natural_acc", "Nat. acc %", percent=True, better="higher", axis="utility"),
        Column("train_acc", "Train acc %", percent=True),
    )

    def compute(self, ctx: EvalContext):
        test = ctx.data.private_test
        correct = (predict(ctx.target, test.x, ctx.device).argmax(1) == test.y).int()
        # per test image (with its class): intervals over the test set without rerunning
        return {"natural_acc": PerItem(correct.float().mean().item(), correct.tolist(), test.y.tolist())}


class AttackAccuracy(Metric):
    name = "attack_acc"
    uses_eval_model = True  # --eval-arch A --eval-arch B: attack_acc[B] too
    definition = (
        "Fraction of reconstructions whose evaluation-model top-1 prediction is the class they were "
        "reconstructed for; every reconstruction counts, none is selected (LOMMA attack.py::attack_acc). "
        "attack_acc5: the same with the top-5 predictions, null (with the reason) when the scenario "
        "has 5 classes or fewer."
    )
    columns = (
        Column("attack_acc", "Attack acc %", percent=True, better="lower", axis="privacy"),
        Column("attack_acc5", "Top-5 %", percent=True, better="lower"),
    )

    def compute(self, ctx: EvalContext):
        top5 = ctx.scenario.num_classes > 5

        def hits(chunk):  # per reconstruction of the chunk: (top-1 hit, top-5 hit)
            logits, y = predict(ctx.eval_model, chunk.images, ctx.device), chunk.labels
            hit5 = (logits.topk(5, dim=1).indices == y[:, None]).any(1) if top5 else y < 0
            return torch.stack([logits.argmax(1) == y, hit5], 1).int()

        h = ctx.inversion.map(hits)
        hit, hit5 = h[:, 0], h[:, 1]  # per reconstruction: stored, for intervals
        out = {"attack_acc": PerItem(hit.float().mean().item(), hit.tolist())}
        if top5:
            out["attack_acc5"] = PerItem(hit5.float().mean().item(), hit5.tolist())
        else:
            out["attack_acc5"] = NotComputed(
                f"scenario {ctx.scenario.name} has {ctx.scenario.num_classes} classes (<= 5)"
            )
        return out


@hookimpl
def register_metrics():
    return [NaturalAccuracy(), AttackAccuracy()]
