"""``atat`` (Anti-Adversarial Training) and ``at`` (ordinary adversarial training).

Paper: AT-AT, "Anti-Adversarial Training" against model inversion, ICLR 2026. Code:
github.com/BreuerLabs/Anti-Adversarial-Training @ec6069a (``defenses/adversarial_train.py``:
``apply_adversarial_training_defense`` -> ``AdversarialTraining.train_one_epoch``, ``PGDAttack``,
``FGSM``; ``configuration/classifier/defense/atat.yaml`` and ``adversarial_train.yaml``;
``configuration/classifier/model/pretrained.yaml`` for the training schedule).

Each training batch: the attack target t is drawn uniformly from the C classes and, where it
equals the label, replaced by (t + 1) mod C (``atat``: targeted; ``at``: t = y, untargeted). PGD
runs on the model being trained, in its current (training) mode: a uniform random start in
[-eps, eps], then ``iterations`` signed-gradient steps of ``step`` on CE(f(x_adv), t) (descended
when targeted, ascended when not), each projected to the eps-ball around x and clamped to [-1, 1].
The loss is ``w_std * loss(f(x), y) + w_adv * loss(f(x_adv), t)``; with ``w_std = 0`` the clean
forward pass is skipped, as in the official code. ``loss`` is the training loop's loss hook (plain
cross-entropy, or that of a composed loss defense: the official code calls its ``get_loss`` for
both terms).

Defaults: ``atat`` (``atat.yaml``) w_std 1.0, w_adv 0.08, targeted, PGD eps 5e-4, step 1e-4,
5 iterations, random start; ``at`` (``adversarial_train.yaml``) w_std 0, w_adv 1, untargeted,
eps 0.01, step 1e-3, 10 iterations, random start. ``method=fgsm`` is the official one-step
alternative (x + eps * sign(grad), clamped, no random start).

Input range: the official face pipelines normalise with mean 0.5, std 0.5 (``data_processing/
data_augmentation.py``) and PGD clamps to [-1, 1], so eps and step are in units of the normalised
[-1, 1] space, which is this harness's image space: they carry over unchanged (5e-4 there is
2.5e-4 of the [0, 1] pixel range, about 0.06/255).

Schedule (``recipe``): at the paper budget, ``pretrained.yaml``: Adam lr 1e-3 (betas 0.9/0.999),
100 epochs, batch 128, MultiStepLR milestones 75/90 with gamma 0.1 (the scenario's augmentation is
kept). It is the AT-AT repository's schedule for every target, undefended ones included; on
FaceScrub it equals the scenario's own.

Weights kept: the official ``train_classifier.py`` splits the training data 80/20
(``data_processing/datasets.py``: a permutation seeded with 42, ``validation_size`` 0.2), trains
on the 80 %, measures the loss on the held-out 20 % every 5 epochs (``classifiers/
abstract_classifier.py::train_model``: ``epoch % evaluate_freq == 0``, 0-based, so after epochs 1,
6, ..., 96) and loads the weights of the lowest validation loss at the end (``patience`` 100 never
stops a 100-epoch run; ``save_many_accs`` is off in ``training/default.yaml``, so
``early_stopping_accuracy_thresholds`` are unused). ``select=best_val_loss`` (``atat[select=
best_val_loss]``, also for ``at``) is that protocol (``reinv_bench.engine.train.holdout_split``); the
default ``select=last`` trains on the whole training split and keeps the last epoch, as every other
target of the harness.

Deliberate differences:
- By default the target trains on the whole training split and keeps its last epoch (above).
- The official ``get_loss`` sums the cross-entropy over the batch (``criterionSum``); the harness
  takes the mean (Adam's steps are the same but for its eps).
- The official ``PGDAttack`` draws the random start and the attack targets from the global RNG
  the same way; the harness seeds it per target, so runs are reproducible.
- ``method=fgsm``: the official ``FGSM`` calls ``cost.backward()``, which leaves the attack's
  gradient in the parameters' ``.grad`` for the training step that follows; here the attack
  touches only the input's gradient (the PGD path, the default of both configs, is unaffected).
Composition: ``re+atat``, ``atat+negls`` work (transforms, the loss hook); ``atat`` cannot share a
run with another defense that computes its own batch loss (``trapmid``) or with ``dpsgd``.
``atat+calor`` is refused: calor's fine-tune phase would train AT-AT's targeted adversarial term
with the inverse focal loss, which lowers the confidence in the attack's target where that term
raises it (no official code combines them); ``at+calor`` (untargeted: both lower the confidence in
the true class) runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from reinv_bench import hookimpl
from reinv_bench.api import VALUE_RANGE, Adaptation, Defense, Param, TrainRecipe
from reinv_defenses._adaptations import robustness_reducing
from reinv_defenses._schedules import adam_100_epochs, selected


def attack_targets(y: Tensor, num_classes: int) -> Tensor:
    """A random wrong class per label: uniform over all classes, (t + 1) mod C where t == y
    (``train_one_epoch``)."""
    t = torch.randint(0, num_classes, (len(y),)).to(y.device)
    same = t == y
    t[same] = (t[same] + 1) % num_classes
    return t


def pgd(
    model,
    x: Tensor,
    t: Tensor,
    eps: float,
    step: float,
    iterations: int,
    targeted: bool,
    random_start: bool,
    lo: float = VALUE_RANGE[0],
    hi: float = VALUE_RANGE[1],
) -> Tensor:
    """The official ``PGDAttack.__call__``: L-inf PGD on CE(model(x_adv), t) within eps of x."""
    x = x.clone().detach()
    adv = x.clone().detach()
    if random_start:
        adv = (adv + torch.empty_like(adv).uniform_(-eps, eps)).clamp(lo, hi).detach()
    for _ in range(iterations):
        adv.requires_grad_(True)
        cost = F.cross_entropy(model(adv), t)
        if targeted:
            cost = -cost
        grad = torch.autograd.grad(cost, adv)[0]
        adv = adv.detach() + step * grad.sign()
        delta = (adv - x).clamp(-eps, eps)
        adv = (x + delta).clamp(lo, hi).detach()
    return adv


def fgsm(
    model,
    x: Tensor,
    t: Tensor,
    eps: float,
    targeted: bool,
    lo: float = VALUE_RANGE[0],
    hi: float = VALUE_RANGE[1],
) -> Tensor:
    """The official ``FGSM.__call__``: one signed step of eps."""
    x = x.clone().detach().requires_grad_(True)
    cost = F.cross_entropy(model(x), t)
    if targeted:
        cost = -cost
    grad = torch.autograd.grad(cost, x)[0]
    return (x + eps * grad.sign()).clamp(lo, hi).detach()


class AdversarialTraining(Defense):
    # ``at``; ``atat`` differs only in its defaults (the two official configs). No class docstring:
    # both are described by the module's (paper, code, deliberate differences)

    name = "at"
    params = {
        "w_std": Param(
            0.0, "weight of loss(f(x), y) (adversarial_train.yaml: 0; 0 skips the clean pass)", low=0.0
        ),
        "w_adv": Param(1.0, "weight of loss(f(x_adv), t) (adversarial_train.yaml: 1)", low=0.0),
        "targeted": Param(False, "targeted at a random wrong class (adversarial_train.yaml: False)"),
        "method": Param("pgd", "attack used in training", choices=("pgd", "fgsm")),
        "eps": Param(0.01, "L-inf radius in the [-1, 1] image space (adversarial_train.yaml: 0.01)", low=0.0),
        "step": Param(1e-3, "PGD step size in the [-1, 1] space (adversarial_train.yaml: 0.001)", low=0.0),
        "iterations": Param(10, "PGD iterations (adversarial_train.yaml: 10)", low=1),
        "random_start": Param(True, "PGD starts at a uniform point of the eps-ball (official: True)"),
        "select": Param(
            "last",
            "weights kept: last, or best_val_loss (official: train on 80 %, keep the lowest loss on "
            "the other 20 %, measured every 5 epochs)",
            choices=("last", "best_val_loss"),
            new=True,
        ),
    }

    def recipe(self, recipe: TrainRecipe, budget: str, arch: str) -> TrainRecipe:
        return selected(adam_100_epochs(recipe, budget, batch_size=128), self.config.select)

    def refuses(self, other: Defense) -> str | None:
        if self.config.targeted and "phases" in other.overridden():
            return (
                f"{other.name}'s fine-tune phase would train AT-AT's targeted adversarial term with its "
                "own loss (calor's inverse focal loss lowers the confidence in the attack's target, "
                "where that term raises it)"
            )
        return None

    def adversarial(self, model, x: Tensor, t: Tensor) -> Tensor:
        c = self.config
        if c.method == "fgsm":
            return fgsm(model, x, t, c.eps, c.targeted)
        return pgd(model, x, t, c.eps, c.step, c.iterations, c.targeted, c.random_start)

    def batch_loss(self, model, x, y, loss, hidden=False):
        c = self.config
        total = 0.0
        if c.w_std:
            total = c.w_std * loss(model.forward_all(x, hidden=hidden), x, y)
        t = attack_targets(y, model.num_classes) if c.targeted else y
        x_adv = self.adversarial(model, x, t)
        return total + c.w_adv * loss(model.forward_all(x_adv, hidden=hidden), x_adv, t)

    def adaptation(self, ctx, knows="algorithm", steps=100) -> Adaptation:
        """Transformation-averaged gradients (AlignMI's TAA) plus EOT over small Gaussian input
        noise: adversarial training (at, atat) belongs to AT-AT's robustness-reducing family
        (``_adaptations.robustness_reducing``)."""
        return robustness_reducing(self.name)


class AntiAdversarialTraining(AdversarialTraining):
    name = "atat"
    params = {
        **AdversarialTraining.params,
        "w_std": Param(1.0, "weight of loss(f(x), y) (atat.yaml: 1.0)", low=0.0),
        "w_adv": Param(0.08, "weight of loss(f(x_adv), t) (atat.yaml: 0.08)", low=0.0),
        "targeted": Param(True, "targeted at a random wrong class (atat.yaml: True)"),
        "eps": Param(5e-4, "L-inf radius in the [-1, 1] image space (atat.yaml: 0.0005)", low=0.0),
        "step": Param(1e-4, "PGD step size in the [-1, 1] space (atat.yaml: 0.0001)", low=0.0),
        "iterations": Param(5, "PGD iterations (atat.yaml: 5)", low=1),
    }


@hookimpl
def register_defenses():
    return [AdversarialTraining, AntiAdversarialTraining]
