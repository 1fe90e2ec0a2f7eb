"""Defenses: how a target is trained, and how an attacker who knows the defense adapts.

Image convention, for every scenario, model and attack: tensors are (N, C, H, W) float32 in the
*normalised* space ``(pixel - 0.5) / 0.5``, i.e. in [-1, 1]. GAN generators end in tanh and so
produce this space directly, and Random Erasing fills in it as the seed paper's code does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reinv_bench.contract.config import ConfigError, Configurable
from reinv_bench.contract.data import TrainRecipe
from reinv_bench.contract.models import Classifier, Output

if TYPE_CHECKING:
    from reinv_bench.contract.attack import AttackContext
    from reinv_bench.contract.metric import Column


class Defense(Configurable):
    """Changes how a target is trained through optional hooks of the one training loop
    (reinv_bench.engine.train). Override only what the defense changes; two defenses that override the
    same exclusive hook (``wrap_model``, ``loss``, ``trainable``, ``batch_loss``, ``phases``) cannot
    be composed, nor two where one ``excludes`` a hook the other overrides.
    """

    EXCLUSIVE: ClassVar[tuple[str, ...]] = ("wrap_model", "loss", "trainable", "batch_loss", "phases")
    # hooks no other part of a composition may override (DP-SGD: ``batch_loss``, whose extra passes
    # through the model would escape its per-example clipping)
    excludes: ClassVar[tuple[str, ...]] = ()
    needs_hidden: ClassVar[bool] = False  # loss() wants block outputs in out.hidden
    # the loss couples the examples of a batch (BiDO's HSIC): no per-example gradient bound
    couples_examples: ClassVar[bool] = False
    pretrained: ClassVar[bool] = False  # the target starts from pretrained weights: config["weights"]
    # (a local state-dict file) or, when that is empty, a model the harness pretrains on the
    # scenario's public data (a cached step)
    # the columns of the numbers end_training returns (DP-SGD's epsilon and delta), as a metric's:
    # their headers and format on the leaderboard; a number without one shows under its key
    columns: ClassVar[tuple[Column, ...]] = ()

    def train_transform(self, x: Tensor) -> Tensor:
        """Transform a training batch (normalised space). Never applied at test or attack time."""
        return x

    def transforms_images(self) -> bool:
        """Whether ``train_transform`` changes training images (Random Erasing's does)."""
        return type(self).train_transform is not Defense.train_transform

    def wrap_model(self, model: Classifier) -> Classifier:
        """Change the model's structure before training (and when it is rebuilt for loading)."""
        return model

    def loss(self, out: Output, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out.logits, y)

    def trainable(self, model: Classifier) -> Iterator[nn.Parameter]:
        return model.parameters()

    def on_epoch(self, epoch: int, epochs: int) -> None:
        """Called before each training epoch (schedules)."""

    def recipe(self, recipe: TrainRecipe, budget: str, arch: str) -> TrainRecipe:
        """The target's training recipe under this defense (default: the scenario's). A defense
        whose paper trains with its own schedule (TL-DMI, BiDO) returns it at the paper budget."""
        return recipe

    def phases(self, recipe: TrainRecipe) -> list[TrainRecipe]:
        """Training phases after the main one (trained with ``recipe``), each run by the same loop
        on the same model with a fresh optimizer and schedule (a fine-tune: CALoR's confidence
        adaptation); ``on_phase(i)`` is called before phase i = 1, 2, ... Default: none."""
        return []

    def on_phase(self, phase: int) -> None:
        """Called before each extra training phase from ``phases`` (numbered from 1)."""

    def begin_training(
        self, model: Classifier, optimizer: torch.optim.Optimizer, recipe: TrainRecipe, n: int
    ) -> torch.optim.Optimizer:
        """Called once before the first epoch with the model (wrapped, with any pretrained weights,
        on its device), its optimizer, the recipe and the number of training examples; returns the
        optimizer to step (DP-SGD wraps it). A defense with trainable state of its own (Trap-MID's
        triggers and discriminator) builds it here."""
        return optimizer

    def batch_loss(
        self,
        model: Classifier,
        x: Tensor,
        y: Tensor,
        loss: Callable[[Output, Tensor, Tensor], Tensor],
        hidden: bool = False,
    ) -> Tensor:
        """The loss of one training batch, computed with the model being trained (adversarial or
        trapdoor inputs); ``loss`` is the (composed) defense's ``loss`` hook, ``hidden`` whether it
        wants block outputs. Default: one forward pass of ``x``."""
        return loss(model.forward_all(x, hidden=hidden), x, y)

    def end_training(self, model: Classifier) -> dict[str, float]:
        """Called once after the last epoch; returns numbers stored with the target and shown as
        columns of its rows (DP-SGD's epsilon and delta). Raise if one cannot be computed."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What the defense carries from one epoch to the next, beyond what ``begin_training``
        and ``on_epoch`` rebuild (Trap-MID's triggers and discriminator, DP-SGD's accountant):
        saved in the training step's checkpoint. Default: nothing."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` when a training step resumes (after ``begin_training``)."""

    def refuses(self, other: Defense) -> str | None:
        """Why this defense cannot share a training run with ``other`` (a composition is then
        refused at plan time with that reason), or None."""
        return None

    def overridden(self) -> set[str]:
        return {h for h in self.EXCLUSIVE if getattr(type(self), h) is not getattr(Defense, h)}

    def secrets(self) -> dict[str, Any]:
        """What the trained defense keeps that an attacker who knows only its algorithm lacks
        (Trap-MID's triggers): stored with the target (its artifact's ``secrets``) and handed back
        through ``load_secrets`` only to an attacker whose threat model grants them
        (``adaptive[knows=triggers]``). Default: nothing."""
        return {}

    def load_secrets(self, state: dict[str, Any]) -> None:
        """Restore ``secrets()`` on a defense rebuilt for an attack (``AttackContext.defense``)."""

    def adaptation(self, ctx: AttackContext, knows: str = "algorithm", steps: int = 100) -> Adaptation | None:
        """How an attacker who knows this defense adapts (the ``adaptive+ATTACK`` wrapper applies
        it to the target the defense trained). ``knows``: ``"algorithm"`` (the defense's code and
        hyperparameters, not what training drew: Carlini et al. 2019's adaptive attacker) or
        ``"triggers"`` (also its stored ``secrets()``: an upper bound); ``steps``: the attacker's
        budget for estimating what it does not know (Trap-MID's trigger reversal). ``ctx`` is the
        inversion's context (the target, the public data, the device, the seed).

        Default, the generic adaptation: a defense that transforms its training images
        (``train_transform``) gets expectation over transformation (EOT, Athalye, Engstrom, Ilyas,
        Kwok, ICML 2018) over that very transform; any other gets None (no adaptation: the
        attacker attacks as it would an undefended target)."""
        if not self.transforms_images():
            return None
        return Adaptation(
            label=f"eot({self.name})",
            principle="EOT over the defense's training transform (Athalye et al., ICML 2018)",
            eot=self.train_transform,
        )


@dataclass(frozen=True)
class Adaptation:
    """What an attacker who knows a defense's algorithm changes in its identity loss
    (``Defense.adaptation``; the ``adaptive+ATTACK`` wrapper builds the loss). Per image, the
    adapted identity loss is the mean over ``draws`` independent draws (one draw when nothing here
    is random) of

        L(forward(T, t(x)), y) + weight * penalty(forward(T, t(x)), y),

    with t the composition of ``eot`` (the defense's own input distribution), AlignMI's TAA copy
    (``taa``) and a Gaussian perturbation (``noise``), and L the base attack's own identity term
    (``Attack.identity_term``) or the logit margin (``margin``). Fields:

    - ``label``, ``principle``: what it is and the work it follows (stored with the inversion);
    - ``eot``: one random draw of an input transformation in the normalised space (EOT);
    - ``random``: the target itself is random at inference (MID's bottleneck noise): average
      over the draws even with no transformation;
    - ``taa``: AlignMI's transformation-averaged gradient (crop, flip, rotation copies, the
      harness's ``align`` constants for the base); ``noise``: EOT over small Gaussian input noise
      (AlignMI's PAA perturbation for the base);
    - ``forward``: ``forward(T, x) -> Output`` in place of ``T.forward_all(x)`` (BPDA: the forward
      unchanged, another backward; a deterministic path through a random layer);
    - ``margin``: the logit margin -z_y + max_{j != y} z_j in place of the base's identity term;
    - ``penalty``: ``penalty(out, y) -> per image``, added (Trap-MID's trapdoor signatures);
    - ``alternatives``: adaptations run one after the other, the wrapper keeping per class the
      reconstructions the target scores higher (the attacker's own score): "report the stronger"
      (MID: its mean path and EOT over its noise). When set, the other fields are unused.
    """

    label: str
    principle: str
    eot: Callable[[Tensor], Tensor] | None = None
    random: bool = False
    taa: bool = False
    noise: bool = False
    forward: Callable[[Any, Tensor], Output] | None = None
    margin: bool = False
    penalty: Callable[[Output, Tensor], Tensor] | None = None
    alternatives: tuple[Adaptation, ...] = ()

    @property
    def stochastic(self) -> bool:
        """Whether the loss is an average over random draws."""
        return self.eot is not None or self.random or self.taa or self.noise


def compose_adaptations(parts: Iterable[Adaptation | None]) -> Adaptation | None:
    """The adaptation of a composed defense (``re+bido``): transformations applied in the order
    given, flags joined, penalties summed; at most one part may replace the forward pass;
    alternatives multiply (each alternative of one part composed with the others)."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    for i, p in enumerate(parts):
        if p.alternatives:
            rest = parts[:i] + parts[i + 1 :]
            alts = tuple(compose_adaptations([*rest[:i], a, *rest[i:]]) for a in p.alternatives)
            return Adaptation(
                label="+".join(q.label for q in parts), principle=p.principle, alternatives=alts
            )
    forwards = [p for p in parts if p.forward is not None]
    if len(forwards) > 1:
        raise ConfigError(
            f"cannot compose the adaptations {' + '.join(p.label for p in forwards)}: both replace "
            "the target's forward pass"
        )
    eots = [p.eot for p in parts if p.eot is not None]

    def eot(x: Tensor) -> Tensor:
        for t in eots:
            x = t(x)
        return x

    penalties = [p.penalty for p in parts if p.penalty is not None]
    return Adaptation(
        label="+".join(p.label for p in parts),
        principle="; ".join(p.principle for p in parts),
        eot=eot if eots else None,
        random=any(p.random for p in parts),
        taa=any(p.taa for p in parts),
        noise=any(p.noise for p in parts),
        forward=forwards[0].forward if forwards else None,
        margin=any(p.margin for p in parts),
        penalty=(lambda out, y: sum(f(out, y) for f in penalties)) if penalties else None,
    )


def residual_stages(model: Classifier) -> list[list[nn.Module]]:
    """The residual blocks of ``model`` grouped by stage: one list per entry of ``model.blocks``
    that holds any, in order. A residual block declares a float ``skip_scale`` (1.0 by default)
    and computes ``F(x) + skip_scale * shortcut(x)``, leaving the shortcut out when it is 0 (the
    architecture plugins' resnet8, resnet18/50/152 and IR units do); the skip-connection defenses
    (rolss, ssf) set it per stage."""
    stages = [
        [m for m in block.modules() if isinstance(getattr(m, "skip_scale", None), float)]
        for block in model.blocks
    ]
    return [s for s in stages if s]
