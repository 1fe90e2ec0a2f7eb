"""Attacks: what an attack receives (AttackContext) and returns (Inversion, Reconstructions).

Image convention, for every scenario, model and attack: tensors are (N, C, H, W) float32 in the
*normalised* space ``(pixel - 0.5) / 0.5``, i.e. in [-1, 1]. GAN generators end in tanh and so
produce this space directly, and Random Erasing fills in it as the seed paper's code does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reinv_bench.contract.checkpoint import NO_CHECKPOINT, Checkpoint
from reinv_bench.contract.config import ConfigError, Configurable
from reinv_bench.contract.data import Scenario, ScenarioData
from reinv_bench.contract.models import Architecture
from reinv_bench.contract.precision import autocast, full_precision

if TYPE_CHECKING:
    pass


THREAT_MODELS = ("white-box", "black-box", "label-only")
VALUE_RANGE = (-1.0, 1.0)

Progress = Callable[[int, int], None]
"""progress(done, total): a step reports how far it is."""


def no_progress(done: int, total: int) -> None:
    """The progress callback that reports nothing."""


def _no_architectures(name: str) -> Architecture:
    raise ConfigError(f"no architecture registry in this context (asked for {name!r})")


@dataclass
class AttackContext:
    scenario: Scenario
    data: ScenarioData
    # the target as the threat model allows: the frozen module, a BlackBox or a LabelOnly view;
    # None while a target-independent prior is prepared
    target: Any
    device: torch.device
    seed: int
    progress: Progress = no_progress
    # the run's precision (--precision: fp32 | bf16 | tf32): the harness runs prepare/invert under
    # its autocast; an attack that opens its own regions uses autocast() and fp32()
    precision: str = "fp32"
    # architecture(name): a registered Architecture (e.g. a surrogate student built like a target)
    architecture: Callable[[str], Architecture] = _no_architectures
    # while a prior is prepared: the priors it is built from (its PriorSpec.needs), by kind
    priors: dict[str, Any] = field(default_factory=dict)
    # the step's checkpoint: a long training loop resumes from it (reinv_bench.contract.checkpoint)
    checkpoint: Checkpoint = NO_CHECKPOINT
    # the frozen evaluation model, only for an attack whose ``uses_eval_model()`` is true (IF-GMI's
    # report=best: the official reports the layer the evaluation model scores best); else None
    eval_model: Any = None
    # the target's (composed) defense, rebuilt with its config and stored secrets, for an attacker
    # that knows it (``adaptive+ATTACK``: ``ctx.defense.adaptation(ctx, knows)``); set for
    # inversions only, None while a prior is prepared
    defense: Any = None

    def autocast(self):
        """The run's autocast on ``device``: bf16 under ``--precision bf16``, a no-op otherwise."""
        return autocast(self.device, self.precision)

    def fp32(self):
        """A region kept in float32 whatever the run's precision (autocast off under bf16), e.g. a
        loss; cast its inputs with ``.float()``."""
        return full_precision(self.device, self.precision)


@dataclass
class Inversion:
    images: Tensor  # (N, C, H, W) in [-1, 1], on CPU
    labels: Tensor  # (N,) the class each image was reconstructed for
    # e.g. final losses, target queries; "notes": {key: remark} copied into the row's notes
    info: dict[str, Any] = field(default_factory=dict)


class Reconstructions:
    """A cell's reconstructions as metrics read them (``EvalContext.inversion``): every label at
    once (``labels``, small) and the images one chunk at a time (``chunks()``: ``Inversion``s in
    order, each loaded from the artifact store when reached and dropped after), so that no metric
    holds every reconstruction of a many-class run at once. ``images`` joins them all, for a
    metric that needs them together (it costs their memory)."""

    def __init__(
        self, labels: Tensor, chunks: Callable[[], Iterable[Inversion]], info: dict[str, Any] | None = None
    ) -> None:
        self.labels, self._chunks, self.info = labels, chunks, info or {}

    @classmethod
    def of(cls, inv: Inversion) -> Reconstructions:
        """One chunk: an inversion already in memory (its tensors, not copies)."""
        return cls(inv.labels, lambda: (inv,), inv.info)

    def __len__(self) -> int:
        return len(self.labels)

    def chunks(self) -> Iterator[Inversion]:
        yield from self._chunks()

    def map(self, fn: Callable[[Inversion], Tensor]) -> Tensor:
        """``fn`` of each chunk, concatenated in order (e.g. per-reconstruction predictions)."""
        return torch.cat([fn(chunk) for chunk in self.chunks()])

    @property
    def images(self) -> Tensor:
        parts = [chunk.images for chunk in self.chunks()]
        return parts[0] if len(parts) == 1 else torch.cat(parts)


@dataclass(frozen=True)
class PriorSpec:
    """A prior an attack needs: ``kind`` names what is built (attacks that share a kind and
    params share the cached artifact, e.g. GMI's GAN for gmi, brepmi and lomma+gmi). ``needs``:
    kinds of the attack's earlier priors this one is built from (PPDG-MI fine-tunes the base's
    GAN): their steps run first, their keys enter this prior's key, and ``prepare`` finds them
    in ``ctx.priors``."""

    kind: str
    params: dict[str, Any]
    uses_target: bool = False
    version: int = 1  # the version of the attack that builds it: enters the prior's key
    needs: tuple[str, ...] = ()


class BlackBox:
    """The target as a black-box attacker sees it: softmax probabilities, no gradients.
    Counts the images queried."""

    def __init__(self, model: nn.Module) -> None:
        self._model, self.queries = model.eval(), 0

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        self.queries += len(x)
        return self._model(x).softmax(1)


class LabelOnly(BlackBox):
    """The target as a label-only attacker sees it: the top-1 label, nothing else."""

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        self.queries += len(x)
        return self._model(x).argmax(1)


class Attack(Configurable):
    """A model-inversion attack.

    ``threat_model`` decides what ``ctx.target`` is: the module (white-box), a ``BlackBox`` or a
    ``LabelOnly`` view. ``priors()`` lists the cached priors the attack needs (by default one,
    of kind ``prior_kind``, keyed by the config values named in ``prior_params``, per target if
    ``prior_uses_target``); ``prepare(ctx, kind)`` builds one; ``invert(ctx, priors, classes)``
    receives them by kind and reconstructs every class in one batch.
    """

    threat_model: ClassVar[str] = "white-box"
    prior_kind: ClassVar[str | None] = None  # default: the attack's name
    prior_params: ClassVar[tuple[str, ...]] = ()
    prior_uses_target: ClassVar[bool] = False
    accepts_identity: ClassVar[bool] = False  # invert honours ``identity``: a WrapperAttack may wrap it
    # the parameter counting the attack's iterations, which ``run --convergence`` doubles (None: ``iters``
    # when the attack has one; an attack with neither is not checked)
    iterations_param: ClassVar[str | None] = None
    # the optimiser of the attack's own search ("adam", "sgd"; an ``optimizer`` param overrides it)
    optimiser: ClassVar[str | None] = None

    def priors(self) -> list[PriorSpec]:
        return [
            PriorSpec(
                self.prior_kind or self.name,
                {k: self.config[k] for k in self.prior_params},
                self.prior_uses_target,
                self.version,
            )
        ]

    def prepare(self, ctx: AttackContext, kind: str) -> dict[str, Any]:
        """Build prior ``kind``; returns tensors/state dicts (saved for weights_only loading)."""
        return {}

    def invert(
        self,
        ctx: AttackContext,
        priors: dict[str, dict[str, Any]],
        classes: list[int],
        identity: IdentityLoss | None = None,
    ) -> Inversion:
        """Reconstruct every class of ``classes``. ``identity`` is given only by a wrapper attack
        (``lomma+gmi``), and only to an attack that declares ``accepts_identity``: it replaces the
        attack's identity term (CE(T(x), y) under the attack's weight lambda) and, when its
        ``iters`` is set, the attack's number of iterations."""
        raise NotImplementedError

    def identity_term(self, logits: Tensor, y: Tensor) -> Tensor:
        """The attack's own identity term per image from the target's logits (what an
        ``IdentityLoss`` replaces): cross-entropy by default; an attack with another (PPA's
        Poincaré loss, PLG-MI's max-margin) returns it, so that a wrapper that changes how the
        target is queried (``adaptive+``, ``transfer+``) keeps the base's loss."""
        return F.cross_entropy(logits, y, reduction="none")

    def memory_per_class(self, image_shape: tuple[int, ...]) -> int | None:
        """Host bytes one attacked class holds during ``invert`` (its reconstructions and what the
        attack keeps per class, e.g. candidate latents), estimated from the config at plan time:
        ``--class-chunk auto`` sizes the chunks by it. None: not estimated."""
        return None

    def uses_eval_model(self) -> bool:
        """Whether ``invert`` chooses among its reconstructions with the evaluation model
        (``ctx.eval_model``), as an official script that reports its best-scoring variant does.
        Such an inversion runs as one step over every attacked class (no ``--class-chunk``: the
        choice is over all of them) and depends on the evaluation model."""
        return False

    def optimisation(self) -> dict[str, Any]:
        """The attack's own optimiser and number of iterations (or epochs), as a published number
        states them (``Reported.optimizer``, ``iterations``; ``leaderboard --reported`` pairs like
        with like): the ``optimizer`` parameter, else ``optimiser``; the ``iters`` parameter, else
        ``epochs``. A key is left out when the attack has none."""
        c, out = self.config, {}
        if (opt := c.get("optimizer", self.optimiser)) is not None:
            out["optimizer"] = opt
        if (n := c.get("iters", c.get("epochs"))) is not None:
            out["iterations"] = int(n)
        return out

    def selection(self) -> str | None:
        """What the attack keeps of what it optimised before the reconstructions are evaluated, in
        words (PPA's final selection: "final selection: 50 of 200 candidates per class, ...");
        None: every reconstruction it optimised is evaluated. Stored with each row
        (``config["attacked"]``), stated on the protocol card, and matched against a published
        number's ``selection`` (``leaderboard --reported``)."""
        return None

    def canary_images(
        self, priors: dict[str, dict[str, Any]], n: int, seed: int, image_shape: tuple[int, ...]
    ) -> Tensor | None:
        """``n`` images drawn from the attack's own target-independent prior (``priors``: its
        prepared priors by kind) of the scenario's ``image_shape``, in [-1, 1] on CPU,
        deterministic in ``seed``: what ``--canaries`` plants in a canary target's training data,
        so that the answer of the inversion exists by construction (Zimmermann et al., NeurIPS
        2022). None: the prior cannot make them (the default; a prior that needs the target
        cannot, since the target is trained on them)."""
        return None


@dataclass(frozen=True)
class IdentityLoss:
    """What a wrapper attack hands the attack it wraps (``invert(..., identity=...)``):
    ``loss(x, y)`` gives one loss per image, in place of the base's CE(T(x), y); ``iters``, when
    set, replaces the base's number of iterations."""

    loss: Callable[[Tensor, Tensor], Tensor]
    iters: int | None = None


class WrapperAttack(Attack):
    """An attack that modifies the attack to its right: ``WRAPPER+BASE`` on the command line
    (``lomma+gmi``). The harness builds the base from its own spec and passes it as ``base``;
    the wrapper's params are its own. Only a base that declares ``accepts_identity`` may be
    wrapped. The wrapper attacks under the base's threat model, needs the base's priors plus its
    own (``priors()``; ``prepare`` hands the base's kinds to the base: an override calls
    ``super().prepare(ctx, kind)`` for those), and its ``invert`` usually calls
    ``self.base.invert(ctx, priors, classes, identity)`` with an ``IdentityLoss``."""

    def __init__(
        self, config: Mapping[str, Any] | None = None, budget: str = "paper", base: Attack | None = None
    ) -> None:
        super().__init__(config, budget)
        if base is None or not base.accepts_identity:
            raise ConfigError(
                f"{self.name} wraps a white-box attack that accepts an identity loss; got "
                f"{getattr(base, 'name', None)!r}: write e.g. -a {self.name}+gmi"
            )
        self.base = base
        self.threat_model = base.threat_model

    def priors(self) -> list[PriorSpec]:
        return [*self.base.priors(), *super().priors()]

    def prepare(self, ctx: AttackContext, kind: str) -> dict[str, Any]:
        return self.base.prepare(ctx, kind)

    def selection(self) -> str | None:
        return self.base.selection()

    def optimisation(self) -> dict[str, Any]:
        """The base's, with the wrapper's own ``iters`` when it has one (LOMMA's replace the base's)."""
        out = self.base.optimisation()
        if self.config.get("iters") is not None:
            out["iterations"] = int(self.config["iters"])
        return out

    def identity_term(self, logits: Tensor, y: Tensor) -> Tensor:
        return self.base.identity_term(logits, y)

    def uses_eval_model(self) -> bool:
        return self.base.uses_eval_model()

    def canary_images(
        self, priors: dict[str, dict[str, Any]], n: int, seed: int, image_shape: tuple[int, ...]
    ) -> Tensor | None:
        return self.base.canary_images(priors, n, seed, image_shape)


class EnsembleAttack(Attack):
    """A fixed ensemble of attacks (``--attack auto``): the harness plans each member (``members``)
    as a cell of its own (its row stays in the store) and adds one cell whose reconstructions pool
    every member's final candidates per identity, keeping the best by an attacker-side score only
    (``reinv_bench.results.ensemble``); this class is never inverted itself. ``members(scenario)``: the
    member attack specs for a scenario under the ensemble's ``threat_model``; empty: none."""

    def members(self, scenario: str) -> tuple[str, ...]:
        raise NotImplementedError

    def keep(self) -> int:
        """Candidates kept per identity (0: as many as the member with the fewest per identity)."""
        return 0

    def priors(self) -> list[PriorSpec]:
        return []

    def invert(self, ctx, priors, classes, identity=None) -> Inversion:
        raise TypeError(f"{self.name} is an ensemble: its cell pools its members' reconstructions")
