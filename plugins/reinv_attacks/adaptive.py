"""``adaptive``: the attacker who knows the defense, a wrapper over any attack that takes an
identity loss.

Principle: Carlini, Athalye, Papernot, Brendel, Rauber, Tsipras, Goodfellow, Madry, Kurakin, "On
Evaluating Adversarial Robustness" (arXiv 1902.06705): the attacker knows the defense end to end
and changes its loss accordingly; Tramèr, Carlini, Brendel, Madry, "On Adaptive Attacks to
Adversarial Example Defenses" (NeurIPS 2020): target the part of the defense that causes the
robustness, with EOT, BPDA and simpler (margin) losses. No model-inversion benchmark had it.

Syntax: ``-a adaptive+gmi``, ``-a adaptive+align+gmi``, ``-a "adaptive[knows=triggers]+plgmi"``,
``-a "adaptive[draws=16]+ppa"``. Each defense declares how it is attacked
(``Defense.adaptation``, an ``api.Adaptation``; a composed defense composes its parts'); the
wrapper asks the target's defense (``ctx.defense``) for it and hands the base an
``IdentityLoss`` that is, per image, the mean over ``draws`` draws of the base's own identity
term (``Attack.identity_term``: CE for gmi and kedmi, Poincaré for ppa and ifgmi, max-margin for
plgmi, LOMMA's logit term) on the adapted target: the defense's own input distribution (EOT),
AlignMI's TAA copies and Gaussian perturbation (``align.py``'s transforms and constants for the
base), a replaced forward pass (BPDA, a deterministic path), the logit margin in place of the
base's term, and a declared penalty (Trap-MID's trapdoor signatures, weight ``penalty``).

With ``alternatives`` (MID: the mean path and EOT over its noise) every alternative is run, and
per attacked class the reconstructions the target itself scores higher (its mean softmax
confidence in the class over ``draws`` forward passes: the attacker's own score, never the
evaluation model) are kept; ``info["adaptive_chosen"]`` records which, per class.

A target whose defense declares no adaptation (``none``, DP-SGD) is attacked exactly as the base
attacks it: the base receives no identity loss, so ``adaptive+gmi`` on an undefended target gives
``gmi``'s reconstructions bit for bit (tested). The base's priors are shared with the plain base
(the wrapper is training-free). ``knows=triggers`` hands the defense the secrets stored with the
target (Trap-MID's triggers: an upper bound); ``knows=algorithm`` (default) only its algorithm and
hyperparameters, and ``reverse_steps`` bounds what the defense's adaptation may spend estimating the
rest (Trap-MID's trigger reversal).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from reinv_bench import hookimpl
from reinv_bench.api import (
    Adaptation,
    AttackContext,
    IdentityLoss,
    Inversion,
    Param,
    PriorSpec,
    WrapperAttack,
)

from ._align import OFFICIAL, PIXEL_SPACE, perturb, transform

# the AlignMI constants an attack without its own official ones takes (by its image family)
ALIGN_AS = {"plgmi": "kedmi", "ifgmi": "ppa", "ppa": "ppa", "gmi": "gmi", "kedmi": "kedmi"}


def innermost(attack):
    """The attack at the bottom of a wrapper chain (``adaptive+align+gmi`` -> gmi)."""
    while isinstance(attack, WrapperAttack):
        attack = attack.base
    return attack


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """The logit margin -z_y + max_{j != y} z_j per image (Carlini and Wagner, S&P 2017; the
    margin loss of Tramèr et al. 2020): insensitive to how confident the softmax is, so a defense
    that flattens or bends the confidence (NegLS, LoFt, CALoR) does not flatten it."""
    zy = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return other - zy


def copies(a: Adaptation, base: str, size: int, sigma: float):
    """The random input transformation of one draw: the defense's (``eot``), then TAA, then PAA's
    Gaussian noise (AlignMI's constants for ``base``; ``sigma`` > 0 overrides the noise's)."""
    _, spread, _, scale, degrees = OFFICIAL[ALIGN_AS.get(base, "gmi")]
    taa = transform(size, scale, degrees, ALIGN_AS.get(base, "gmi") in PIXEL_SPACE) if a.taa else None
    noise = perturb(sigma or spread) if a.noise else None

    def draw(x: Tensor) -> Tensor:
        if a.eot is not None:
            x = a.eot(x)
        if taa is not None:
            x = taa(x)
        if noise is not None:
            x = noise(x)
        return x

    return draw


def adapted_identity(a: Adaptation, target, term, draw, draws: int, weight: float):
    """Per image: the mean over ``draws`` draws (1 when nothing is random) of the adapted loss."""
    n = draws if a.stochastic else 1

    def once(x: Tensor, y: Tensor) -> Tensor:
        out = a.forward(target, draw(x)) if a.forward is not None else target.forward_all(draw(x))
        loss = margin_loss(out.logits, y) if a.margin else term(out.logits, y)
        return loss + weight * a.penalty(out, y) if a.penalty is not None else loss

    def identity(x: Tensor, y: Tensor) -> Tensor:
        return sum(once(x, y) for _ in range(n)) / n

    return identity


@torch.no_grad()
def confidence(target, images: Tensor, labels: Tensor, draws: int, device, batch: int = 256) -> Tensor:
    """The target's softmax confidence in each image's class, averaged over ``draws`` forward
    passes (a random target's, MID's, differ): the attacker's own score."""
    out = []
    for i in range(0, len(images), batch):
        x, y = images[i : i + batch].to(device), labels[i : i + batch].to(device)
        p = sum(target(x).float().softmax(1).gather(1, y[:, None]).squeeze(1) for _ in range(draws))
        out.append((p / draws).cpu())
    return torch.cat(out)


class Adaptive(WrapperAttack):
    name = "adaptive"
    version = 1
    accepts_identity = False
    params = {
        "draws": Param(10, "EOT draws averaged per step (M) when the adapted loss is random", low=1),
        "knows": Param(
            "algorithm",
            "what the attacker knows: algorithm (code and hyperparameters) or triggers (also the "
            "secrets stored with the target: Trap-MID's triggers, an upper bound)",
            choices=("algorithm", "triggers"),
        ),
        "reverse_steps": Param(
            200, "steps a defense's adaptation may spend estimating its secrets (trigger reversal)", low=0
        ),
        "penalty": Param(1.0, "weight of a penalty term the defense declares (trapdoor cosine)", low=0.0),
        "sigma": Param(
            0.0, "Gaussian EOT noise / the batch's value range; 0: AlignMI PAA's for the base", low=0.0
        ),
    }
    budgets = {"smoke": {"draws": 2, "reverse_steps": 5}, "quick": {"draws": 4, "reverse_steps": 50}}

    def priors(self) -> list[PriorSpec]:
        return self.base.priors()  # training-free: the base's priors only

    def adaptation(self, ctx: AttackContext) -> Adaptation | None:
        """The target's defense's declared adaptation (None: no defense, or none declared)."""
        if ctx.defense is None:
            return None
        c = self.config
        return ctx.defense.adaptation(ctx, c.knows, c.reverse_steps)

    def identity(self, ctx: AttackContext, a: Adaptation) -> IdentityLoss:
        c = self.config
        draw = copies(a, innermost(self.base).name, ctx.scenario.image_shape[-1], c.sigma)
        return IdentityLoss(
            adapted_identity(a, ctx.target, self.base.identity_term, draw, c.draws, c.penalty)
        )

    def invert(self, ctx: AttackContext, priors: dict, classes: list[int], identity=None) -> Inversion:
        a = self.adaptation(ctx)
        if a is None:
            inv = self.base.invert(ctx, priors, classes)
            inv.info["adaptation"] = "none declared"
            return inv
        if not a.alternatives:
            inv = self.base.invert(ctx, priors, classes, self.identity(ctx, a))
            inv.info.update(adaptation=a.label, adaptation_principle=a.principle)
            return inv
        return self.stronger(ctx, priors, classes, a)

    def stronger(self, ctx: AttackContext, priors: dict, classes: list[int], a: Adaptation) -> Inversion:
        """Every alternative, then per class the one whose reconstructions the target scores higher."""
        runs = []
        for alt in a.alternatives:
            inv = self.base.invert(ctx, priors, classes, self.identity(ctx, alt))
            conf = confidence(ctx.target, inv.images, inv.labels, self.config.draws, ctx.device)
            runs.append((alt, inv, conf))
        images, chosen = runs[0][1].images.clone(), {}
        labels = runs[0][1].labels
        for cls in classes:
            rows = labels == cls
            best = max(range(len(runs)), key=lambda i: runs[i][2][runs[i][1].labels == cls].mean().item())
            images[rows] = runs[best][1].images[runs[best][1].labels == cls]
            chosen[str(cls)] = runs[best][0].label
        info = {**runs[0][1].info, "adaptation": a.label, "adaptation_principle": a.principle}
        info["adaptive_chosen"] = chosen
        info["adaptive_conf"] = {alt.label: conf.mean().item() for alt, _, conf in runs}
        return replace(runs[0][1], images=images, info=info)


@hookimpl
def register_attacks():
    return [Adaptive]
