"""The protocols plugins implement, and the small value types they exchange.

Image convention, for every scenario, model and attack: tensors are (N, C, H, W) float32 in the
*normalised* space ``(pixel - 0.5) / 0.5``, i.e. in [-1, 1]. GAN generators end in tanh and so
produce this space directly, and Random Erasing fills in it as the seed paper's code does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# the facade: plugins import everything from here (as ``pytest`` re-exports ``_pytest``)
from reinv_bench import hookimpl
from reinv_bench.checkpoint import NO_CHECKPOINT, Checkpoint
from reinv_bench.config import BUDGETS, ConfigError, Configurable, HParams, Param, did_you_mean
from reinv_bench.data import Problem, Scenario, ScenarioData, Split, TrainRecipe
from reinv_bench.images import DataError, ImageFiles, to_pil
from reinv_bench.models import Architecture, Classifier, Output
from reinv_bench.precision import autocast, full_precision
from reinv_bench.weights import WeightsFile, WeightsUnavailable, load_state, locate, sha256_of

if TYPE_CHECKING:  # what _LAZY resolves, for type checkers and editors
    from reinv_bench.aggregate import filter_rows
    from reinv_bench.artifacts import Artifacts
    from reinv_bench.cli import results_db, workdir_option
    from reinv_bench.doctor import decode_problem, undecodable
    from reinv_bench.judging import judged, store_verdicts, verdict_key
    from reinv_bench.plan import Cell
    from reinv_bench.plots import private_loader
    from reinv_bench.steps import Env, reconstructions
    from reinv_bench.store import Row, Store
    from reinv_bench.train import features, predict

# names re-exported from modules that import this one: resolved on first use (PEP 562), so that
# importing the facade starts no import cycle
_LAZY = {
    "predict": "reinv_bench.train",  # predict(model, x, device): logits in batches, no grad
    "features": "reinv_bench.train",  # features(model, x, device): penultimate features in batches
    "Cell": "reinv_bench.plan",  # a cell of a grid (what on_result observers receive)
    "Row": "reinv_bench.store",  # a stored result row
    "Env": "reinv_bench.steps",  # what a worker needs to rebuild the driver's world (executors)
    "undecodable": "reinv_bench.doctor",  # undecodable(paths, sample): image files that do not decode
    "decode_problem": "reinv_bench.doctor",  # decode_problem(*undecodable(...)): the one Problem they make
    # stored results, for a plugin's commands over them (reinv-bench judge export / import)
    "Store": "reinv_bench.store",  # Store(workdir / "results.db"): rows(), get(cell_id), put(row)
    "Artifacts": "reinv_bench.artifacts",  # Artifacts(workdir): the artifact cache of a workdir
    "reconstructions": "reinv_bench.steps",  # reconstructions(artifacts, row.artifacts["invert"])
    "filter_rows": "reinv_bench.aggregate",  # filter_rows(rows, attack=(...), ...): the leaderboard's filters
    "private_loader": "reinv_bench.plots",  # private_loader(registry)(row): the private training split
    "store_verdicts": "reinv_bench.judging",  # answers from outside a run into a stored row
    "judged": "reinv_bench.judging",  # judged(row, ...): the row with them, unstored (Store.put_many)
    "verdict_key": "reinv_bench.judging",  # the outcomes key of a judge's answers
    "workdir_option": "reinv_bench.cli",  # the --workdir option of every command over stored results
    "results_db": "reinv_bench.cli",  # the workdir's results.db, or the "no results yet" usage error
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    # configuration and errors
    "BUDGETS",
    "ConfigError",
    "Configurable",
    "HParams",
    "Param",
    "did_you_mean",
    "DataError",
    # plugin marker
    "hookimpl",
    # data and models
    "Scenario",
    "ScenarioData",
    "Split",
    "TrainRecipe",
    "Problem",
    "undecodable",
    "decode_problem",
    "ImageFiles",
    "to_pil",
    "Architecture",
    "Classifier",
    "Output",
    "THREAT_MODELS",
    "VALUE_RANGE",
    "Progress",
    "no_progress",
    "Checkpoint",
    "NO_CHECKPOINT",
    # defenses and attacks
    "Defense",
    "Adaptation",
    "compose_adaptations",
    "residual_stages",
    "AttackContext",
    "Inversion",
    "Reconstructions",
    "PriorSpec",
    "BlackBox",
    "LabelOnly",
    "Attack",
    "IdentityLoss",
    "WrapperAttack",
    "EnsembleAttack",
    # metrics
    "NotComputed",
    "PerItem",
    "Column",
    "EvalContext",
    "Metric",
    "Reported",
    # judges
    "Verdicts",
    "Judge",
    # executors
    "Executor",
    # precision, pretrained weights, feature extraction
    "autocast",
    "full_precision",
    "WeightsFile",
    "WeightsUnavailable",
    "load_state",
    "locate",
    "sha256_of",
    "predict",
    "features",
    # the harness's records
    "Cell",
    "Row",
    "Env",
    "Store",
    "Artifacts",
    "reconstructions",
    "filter_rows",
    "private_loader",
    "store_verdicts",
    "judged",
    "verdict_key",
    "workdir_option",
    "results_db",
]

THREAT_MODELS = ("white-box", "black-box", "label-only")
VALUE_RANGE = (-1.0, 1.0)

Progress = Callable[[int, int], None]
"""progress(done, total): a step reports how far it is."""


def no_progress(done: int, total: int) -> None:
    """The progress callback that reports nothing."""


# --------------------------------------------------------------------------------------------
# Defenses


class Defense(Configurable):
    """Changes how a target is trained through optional hooks of the one training loop
    (reinv_bench.train). Override only what the defense changes; two defenses that override the
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


# --------------------------------------------------------------------------------------------
# Attacks


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
    # the step's checkpoint: a long training loop resumes from it (reinv_bench.checkpoint)
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
    (``reinv_bench.ensemble``); this class is never inverted itself. ``members(scenario)``: the
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


# --------------------------------------------------------------------------------------------
# Metrics


@dataclass(frozen=True)
class NotComputed:
    """A metric value that could not be computed, with the reason (stored as null + reason)."""

    reason: str


@dataclass(frozen=True)
class PerItem:
    """A metric value with the per-item outcomes it summarises, stored with the cell so that
    confidence intervals can be computed later without rerunning (``reinv_bench.stats``).

    ``items``: one number per reconstruction, in the order of ``ctx.inversion`` (e.g. 1/0 for a
    successful/failed reconstruction, or its distance), when ``classes`` is None; otherwise one per
    item of another kind (e.g. test images) with ``classes`` the class of each. ``value`` is what
    the leaderboard shows (usually the mean of ``items``)."""

    value: float
    items: Iterable[float]
    classes: Iterable[int] | None = None


@dataclass(frozen=True)
class Column:
    """A column a metric declares: how the leaderboard, sorting, CSV/JSON/LaTeX, the plots and
    the report show one of its keys.

    ``key``: the key ``compute`` returns. ``header``: the table header (default: the key).
    ``percent``: stored as a fraction, shown x100 with "%". ``better``: which direction is better
    for the defense (``"higher"``: higher natural accuracy, a larger distance to the private data;
    ``"lower"``: lower attack accuracy); None when neither (sorted ascending, no Pareto role).
    ``axis``: ``"utility"`` or ``"privacy"`` for the column that is that axis of the
    privacy-utility trade-off (Pareto front, Δ columns, the scatter plot); the first present
    column declaring an axis is it. ``interval``: the table shows ``mean [lo, hi]`` (the class
    bootstrap of ``reinv_bench.stats``; axis columns have theirs in the Δ column)."""

    key: str
    header: str = ""
    percent: bool = False
    better: str | None = None
    axis: str | None = None
    interval: bool = False  # the table shows the entry's 95% interval beside its mean
    # the metric plugin that declares it (set by the leaderboard from the registry; not compared)
    metric: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.better not in (None, "higher", "lower"):
            raise ConfigError(
                f"Column {self.key!r}: better must be 'higher', 'lower' or None, got {self.better!r}"
            )
        if self.axis not in (None, "utility", "privacy"):
            raise ConfigError(
                f"Column {self.key!r}: axis must be 'utility', 'privacy' or None, got {self.axis!r}"
            )
        if not self.header:
            object.__setattr__(self, "header", self.key)


@dataclass
class EvalContext:
    scenario: Scenario
    data: ScenarioData
    inversion: Reconstructions  # an Inversion given here is wrapped (Reconstructions.of)
    target: Classifier
    eval_model: Classifier
    device: torch.device
    # cache(name, key, compute): compute() once per (name, key) and keep its dict of tensors in the
    # workdir (e.g. FID statistics of the private images); the default computes every time
    cache: Callable[[str, Any, Callable[[], dict[str, Any]]], dict[str, Any]] = lambda name, key, compute: (
        compute()
    )
    budget: str = "paper"  # the run's budget (a metric whose protocol depends on it: robust_acc)
    defense: Defense | None = None  # the target's defense (its training transform: feature_space)
    # a judge's classifier trained on the scenario's labelled public data (Judge.public_arch)
    public_model: Classifier | None = None

    def __post_init__(self) -> None:
        if isinstance(self.inversion, Inversion):
            self.inversion = Reconstructions.of(self.inversion)

    def attacked_classes(self) -> list[int]:
        return sorted(self.inversion.labels.unique().tolist())

    def attacked_private(self, labels: Tensor | None = None) -> Split:
        """The private training images of the classes the reconstructions were made for (what
        KNN, FID and the FaceNet distance compare them with); of the classes of ``labels`` when
        given (one chunk's: ``Reconstructions.chunks()``)."""
        priv = self.data.private_train
        wanted = torch.isin(priv.y, (self.inversion.labels if labels is None else labels).unique())
        return Split(priv.x[wanted], priv.y[wanted])


class Metric:
    """``protocols``: the scenario protocols the metric belongs to by default (empty: all); a
    metric named with ``--metric`` runs on any scenario."""

    name: ClassVar[str]
    version: ClassVar[int] = 1  # bump when compute() changes its numbers: stored cells are recomputed
    protocols: ClassVar[tuple[str, ...]] = ()
    definition: str = ""  # the exact definition, shown by `reinv-bench protocol` (default: the docstring)
    # the columns of the keys compute() returns; a key without one is shown under its own name,
    # with no unit and no direction
    columns: tuple[Column, ...] = ()
    # True: with several evaluation models (--eval-arch A --eval-arch B) compute() runs again with
    # each further one as ctx.eval_model, its keys suffixed "[B]" (attack_acc[B]); a metric that
    # leaves it False (knn_dist, fid) is computed with the first evaluation model only
    uses_eval_model: ClassVar[bool] = False

    def compute(self, ctx: EvalContext) -> dict[str, float | PerItem | NotComputed]:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Judges


@dataclass(frozen=True)
class Verdicts:
    """A judge's answers for one cell: ``answers[i]`` for reconstruction i of ``ctx.inversion``
    (True: yes, False: no, None: no answer); ``note``: how it decided, in one line (threshold and
    measured rates, model name), stored with the row."""

    answers: list[bool | None]
    note: str = ""


class Judge(Configurable):
    """Answers, per reconstruction, "does it show the same identity (digit, object) as the private
    images of its class?" without the target or the evaluation model (``reinv_bench.judging``
    stores the answers and derives the leaderboard's confirmed accuracy and the evaluation model's
    false-positive rate). Options are declared ``Param``s: ``--judge "NAME[key=value]"``.
    ``external``: the answers come from outside the run (people: ``reinv-bench judge import``)
    and ``judge`` is never called."""

    external: ClassVar[bool] = False
    # the Params that say how answers are fetched, not what they are (an endpoint's URL, timeouts,
    # retries, a rate): kept out of the cell's identity and the column's label
    transport: ClassVar[tuple[str, ...]] = ()

    def check(self, scenario: Scenario | None) -> dict[str, Any]:
        """At plan time (``scenario`` None: once per request, else once per scenario): raise a
        one-line ``ConfigError``/``ValueError`` when the judge cannot work; return the values it
        reads from elsewhere (the environment) that belong to its identity, ``{param: value}``
        (default: none)."""
        return {}

    def weights(self, scenario: Scenario) -> tuple[str, ...]:
        """The registered weights files the judge reads on ``scenario`` (the dry run's checklist
        lists those missing; default: none)."""
        return ()

    def public_arch(self, scenario: Scenario) -> str | None:
        """The architecture of a classifier the judge wants trained on ``scenario``'s labelled
        public data (``ScenarioData.pretrain``, disjoint from the private data: a cached
        ``pretrain`` step, the one TL-DMI starts from), handed to ``judge`` as
        ``ctx.public_model``; None (default): none."""
        return None

    def judge(self, ctx: EvalContext) -> Verdicts:
        """One answer per reconstruction of ``ctx.inversion`` (``ctx.inversion.map(fn)``: ``fn`` of
        each chunk of reconstructions, concatenated). Never reads ``ctx.target`` or
        ``ctx.eval_model``. Raise when it cannot answer at all: the cell stores null with the reason."""
        raise NotImplementedError

    def protocol_note(self, scenario: Scenario) -> str:
        """What the judge does on ``scenario``, for its protocol card (default: the docstring's
        first paragraph)."""
        from reinv_bench.protocol import docstring

        return " ".join(docstring(self).split("\n\n")[0].split())


# --------------------------------------------------------------------------------------------
# Published numbers


@dataclass(frozen=True, kw_only=True)
class Reported:
    """A published number, shown beside the measured ones (``reinv-bench leaderboard --reported``).

    A plugin lists them in a ``reported`` attribute (any registered object). ``metrics`` maps
    metric keys to values in the units the metric stores (accuracies as fractions: 88.26% is
    0.8826). ``scenario``, ``arch``, ``attack`` and ``defense`` (specs as on the command line)
    name the setting here that the number belongs to; ``scenario=None`` when no scenario here has
    it (it is still listed, with ``setting``). ``attack=None``: a number without an attack
    (natural accuracy); ``defense=""``: not stated. A number without a ``source`` (the file, table
    or line it comes from) is refused. The attack's setting, where the paper states it:
    ``classes`` (identities attacked), ``per_class`` (reconstructions evaluated per identity),
    ``selection`` (``"none"``: every optimised reconstruction is evaluated; ``"final"``: a final
    selection such as PPA's keeps some), ``eval_arch`` (the evaluation model, an architecture
    name here), ``class_ids`` (which identities, as ranges: ``"0-99"``), ``optimizer`` and
    ``iterations`` (the attack's own optimiser and iterations or epochs, ``Attack.optimisation``);
    and for any number ``select`` (the target's checkpoint: ``"best_test"`` for a best-epoch
    accuracy such as a released checkpoint's, ``"last"``), matched against the row's target
    recipe. ``leaderboard --reported`` places the number only beside measured rows whose recorded
    setting (``config["attacked"]``, ``config["eval"]``, ``config["target_recipe"]``) matches every
    stated one; the attack is matched by its components' names (``lomma+kedmi`` is also
    ``lomma[iters=200]+kedmi[optimizer=sgd]``), its hyperparameters by what is stated.
    """

    paper: str
    setting: str
    metrics: Mapping[str, float]
    source: str = ""
    table: str = ""
    scenario: str | None = None
    arch: str | None = None
    attack: str | None = None
    defense: str = "none"
    classes: int | None = None
    per_class: int | None = None
    selection: str | None = None
    eval_arch: str | None = None
    class_ids: str | None = None
    optimizer: str | None = None
    iterations: int | None = None
    select: str | None = None

    def __post_init__(self) -> None:
        what = f"reported number of {self.paper or '?'} ({self.setting or '?'})"
        if self.select not in (None, "last", "best_test"):
            raise ConfigError(f"{what}: select {self.select!r} is not 'last', 'best_test' or None")
        if self.selection not in (None, "none", "final"):
            raise ConfigError(f"{what}: selection {self.selection!r} is not 'none', 'final' or None")
        if not isinstance(self.source, str) or not self.source.strip():
            raise ConfigError(
                f"{what}: no source; a published number is listed only with where it comes from"
            )
        if not self.metrics:
            raise ConfigError(f"{what}: no metric values")
        for key, v in self.metrics.items():
            if (
                not isinstance(key, str)
                or not key
                or isinstance(v, bool)
                or not isinstance(v, (int, float))
                or v != v
                or v in (float("inf"), float("-inf"))
            ):
                raise ConfigError(f"{what}: {key!r}={v!r} is not a finite number")
        object.__setattr__(self, "metrics", dict(self.metrics))


# --------------------------------------------------------------------------------------------
# Executors


class Executor(Configurable):
    """Runs steps: ``submit(fn, *args)`` returns a ``concurrent.futures.Future`` of ``fn(*args)``.

    ``fn`` is a top-level function of picklable arguments (``reinv_bench.steps.run_step`` /
    ``run_cell`` with a ``Step`` or ``Cell`` and an ``Env``), so any process that has
    reinv-bench and the same plugins installed can run it. The driver keeps at most ``slots``
    submissions in flight and alone writes the results database; each step writes its artifact.
    Options are declared ``Param``s, given as ``--executor "NAME[key=value]"``.
    """

    slots: int = 1  # submissions the driver keeps in flight

    def start(self, env: Any) -> None:
        """Called once before the first submission with the run's ``reinv_bench.steps.Env``."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        raise NotImplementedError

    def lost(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the worker died (killed, out of memory, node lost): the driver
        then retries the step once before failing the cells that depend on it."""
        return False

    def close(self, cancel: bool = False) -> None:
        """Release workers; ``cancel``: stop what is running now (Ctrl-C, an error)."""
