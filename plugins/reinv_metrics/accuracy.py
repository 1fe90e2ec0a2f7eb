"""Natural accuracy and attack accuracy.

``natural_acc``: accuracy of the target on the private test split.
``attack_acc`` / ``attack_acc5``: fraction of reconstructions whose evaluation-model top-1 (top-5)
prediction is the class they were reconstructed for (LOMMA ``attack.py::attack_acc``; every
reconstruction counts). Top-5 is only defined where the scenario has more than 5 classes:
otherwise it is stored as null with that reason, never as a number that means nothing.
"""

from __future__ import annotations

from reinv_bench import hookimpl
from reinv_bench.api import EvalContext, Metric, NotComputed
from reinv_bench.train import accuracy, predict


class NaturalAccuracy(Metric):
    name = "natural_acc"
    definition = ("Top-1 accuracy of the target (in eval mode) on the private test split: every test image, "
                  "stored as a fraction, shown in %.")

    def compute(self, ctx: EvalContext):
        return {"natural_acc": accuracy(ctx.target, ctx.data.private_test, ctx.device)}


class AttackAccuracy(Metric):
    name = "attack_acc"
    definition = ("Fraction of reconstructions whose evaluation-model top-1 prediction is the class they were "
                  "reconstructed for; every reconstruction counts, none is selected (LOMMA attack.py::attack_acc). "
                  "attack_acc5: the same with the top-5 predictions, null (with the reason) when the scenario "
                  "has 5 classes or fewer.")

    def compute(self, ctx: EvalContext):
        logits = predict(ctx.eval_model, ctx.inversion.images, ctx.device)
        y = ctx.inversion.labels
        out = {"attack_acc": (logits.argmax(1) == y).float().mean().item()}
        if ctx.scenario.num_classes > 5:
            top5 = logits.topk(5, dim=1).indices
            out["attack_acc5"] = (top5 == y[:, None]).any(1).float().mean().item()
        else:
            out["attack_acc5"] = NotComputed(f"scenario {ctx.scenario.name} has {ctx.scenario.num_classes} classes (<= 5)")
        return out


@hookimpl
def register_metrics():
    return [NaturalAccuracy(), AttackAccuracy()]
