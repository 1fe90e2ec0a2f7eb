"""The protocols plugins implement, and the small value types they exchange.

Image convention, for every scenario, model and attack: tensors are (N, C, H, W) float32 in the
*normalised* space ``(pixel - 0.5) / 0.5``, i.e. in [-1, 1]. GAN generators end in tanh and so
produce this space directly, and Random Erasing fills in it as the seed paper's code does.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reinv_bench.images import DataError, ImageFiles  # noqa: F401 - part of the plugin API

BUDGETS = ("smoke", "quick", "paper")
THREAT_MODELS = ("white-box", "black-box", "label-only")
VALUE_RANGE = (-1.0, 1.0)

Progress = Callable[[int, int], None]
"""progress(done, total): a step reports how far it is."""


def _no_progress(done: int, total: int) -> None:
    pass


def did_you_mean(name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} Known: {', '.join(known) or '(none)'}"


# --------------------------------------------------------------------------------------------
# Hyperparameters


class ConfigError(ValueError):
    """A plugin parameter is unknown, malformed or out of range."""


@dataclass(frozen=True)
class Param:
    """A declared hyperparameter: default (from the paper), doc, validation.

    The type is the default's: bool, int, float, str, or a tuple of floats (written ``lo-hi`` or
    ``a/b/c`` on the command line; a single number means a 1-tuple).
    """

    default: Any
    doc: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None

    def parse(self, name: str, raw: Any) -> Any:
        d = self.default
        try:
            if isinstance(raw, str):
                if isinstance(d, bool):
                    if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                        raise ValueError("expected true/false")
                    value: Any = raw.lower() in ("1", "true", "yes")
                elif isinstance(d, int):
                    value = int(raw)
                elif isinstance(d, float):
                    value = float(raw)
                elif isinstance(d, tuple):
                    value = _parse_floats(raw)
                else:
                    value = raw
            else:
                value = tuple(float(v) for v in raw) if isinstance(d, tuple) else type(d)(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name}={raw!r}: {exc}") from None
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{name}={raw!r}: must be one of {', '.join(map(str, self.choices))}")
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if v != v or v in (float("inf"), float("-inf")):  # NaN fails every comparison below
                    raise ConfigError(f"{name}={raw!r}: must be a finite number")
                if (self.low is not None and v < self.low) or (self.high is not None and v > self.high):
                    raise ConfigError(f"{name}={raw!r}: out of range [{self.low}, {self.high}]")
        return value


def _parse_floats(text: str) -> tuple[float, ...]:
    if "/" in text:
        return tuple(float(t) for t in text.split("/"))
    # "lo-hi" (a range); a leading '-' or an exponent's '-' is part of a number
    import re

    m = re.fullmatch(r"\s*(-?[\d.]+(?:[eE]-?\d+)?)\s*-\s*(-?[\d.]+(?:[eE]-?\d+)?)\s*", text)
    if m:
        return (float(m.group(1)), float(m.group(2)))
    return (float(text),)


class HParams(dict):
    """A resolved configuration: a dict whose keys also read as attributes."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


class Configurable:
    """Base of attacks and defenses: declared Params, budgets, resolution from CLI text.

    ``params`` holds the paper defaults; ``budgets`` maps a budget name to the values that
    differ from them in that budget (``paper`` should differ in nothing).
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1  # bump when a change makes old cached artifacts invalid
    params: ClassVar[dict[str, Param]] = {}
    budgets: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, config: Mapping[str, Any] | None = None, budget: str = "paper") -> None:
        self.config = self.resolve(config or {}, budget)

    @classmethod
    def resolve(cls, overrides: Mapping[str, Any], budget: str = "paper") -> HParams:
        if budget not in BUDGETS:
            raise ConfigError(f"unknown budget {budget!r}{did_you_mean(budget, BUDGETS)}")
        config = HParams({k: p.default for k, p in cls.params.items()})
        config.update(cls.budgets.get(budget, {}))
        for key, raw in overrides.items():
            if key not in cls.params:
                valid = ", ".join(f"{k} (default {p.default!r})" for k, p in cls.params.items())
                close = difflib.get_close_matches(key, cls.params, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"{cls.name}: unknown parameter {key!r}.{hint} Valid: {valid or '(none)'}"
                )
            try:
                config[key] = cls.params[key].parse(key, raw)
            except ConfigError as exc:
                raise ConfigError(f"{cls.name}: {exc}; {key}: {cls.params[key].doc}") from None
        return config


# --------------------------------------------------------------------------------------------
# Models


@dataclass
class Output:
    """What a classifier computes: logits, penultimate features, optionally block outputs."""

    logits: Tensor
    features: Tensor
    hidden: list[Tensor] = field(default_factory=list)
    extras: dict[str, Tensor] = field(default_factory=dict)


class Classifier(nn.Module):
    """Every architecture builds one: ``blocks`` in sequence (the last ends in the flattened
    penultimate feature vector), then ``head`` to logits. Block outputs are what BiDO
    regularises and where transfer learning freezes; the penultimate features feed KNN
    distance, MID and LOMMA. ``freeze_point`` is the architecture's declared transfer-learning
    freeze point (TL-DMI's default for the architecture), in blocks.
    """

    def __init__(self, blocks: Iterable[nn.Module], head: nn.Module, feature_dim: int, num_classes: int,
                 freeze_point: int = 0, upstream: nn.Module | None = None, fresh: tuple[str, ...] = ()):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.freeze_point = freeze_point  # leading blocks transfer learning freezes by default
        # Built from the modules of an upstream model (torchvision, face.evoLVe, facenet-pytorch)?
        # Then its checkpoints load by name: upstream tensor name -> our name, found by identity.
        ours = {id(t): k for k, t in self.state_dict(keep_vars=True).items()}
        self.upstream_names = {} if upstream is None else {
            k: ours[id(t)] for k, t in upstream.state_dict(keep_vars=True).items() if id(t) in ours}
        # prefixes a pretrained checkpoint need not provide: the head, and layers the paper adds
        self.fresh = ("head.", *fresh)

    def forward_all(self, x: Tensor, hidden: bool = False) -> Output:
        hs = []
        for block in self.blocks:
            x = block(x)
            if hidden:
                hs.append(x)
        out = self.head(x)
        if isinstance(out, Output):  # a head that wraps (MID's bottleneck) returns extras itself
            out.features, out.hidden = x, hs
            return out
        return Output(out, x, hs)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_all(x).logits

    def features(self, x: Tensor) -> Tensor:
        return self.forward_all(x).features


class Architecture:
    """Builds classifiers. ``name`` is what ``--arch`` selects; ``pretrained`` maps the short
    names ``--arch "NAME[weights=SHORT]"`` accepts to registered ``WeightsFile`` names (a path to
    a local state dict works too)."""

    name: ClassVar[str]
    version: ClassVar[int] = 1  # bump when a change alters what is built: enters every step key
    pretrained: ClassVar[dict[str, str]] = {}

    def build(self, num_classes: int, image_shape: tuple[int, int, int]) -> Classifier:
        raise NotImplementedError

    def adapt_checkpoint(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Rename an upstream checkpoint's legacy keys before it is loaded (default: as is)."""
        return state


# --------------------------------------------------------------------------------------------
# Data


@dataclass
class Split:
    x: Tensor | ImageFiles  # (N, C, H, W) in [-1, 1]; ImageFiles: decoded from files on demand
    y: Tensor | None  # (N,) int64, or None where the attacker gets no labels

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class ScenarioData:
    private_train: Split
    private_test: Split
    public: Split  # unlabelled
    eval_train: Split  # what the evaluation model learns from
    eval_test: Split
    digest: str  # identifies the exact split; stored with every result
    source: str  # where the images came from, in words
    pretrain: Split | None = None  # labelled public-domain data a defense may pretrain on (TL)


@dataclass(frozen=True)
class TrainRecipe:
    """How a classifier is trained in one budget (the paper budget cites its source)."""

    epochs: int
    batch_size: int = 64
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    milestones: tuple[float, ...] = ()  # fractions of the epochs where lr *= gamma
    gamma: float = 0.1
    augment: str = ""  # "" | "flip" (KEDMI/GMI 64 px) | "ppa" (PPA/MIDRE 224 px); see train.augment


class Scenario:
    """A privacy setting: private identities, public data, image shape, evaluation protocol."""

    name: ClassVar[str]
    version: ClassVar[int] = 1  # bump when load() or a recipe changes: enters every step key
    num_classes: int
    image_shape: tuple[int, int, int]
    default_arch: str
    eval_arch: str
    eval_num_classes: int
    description: str = ""
    protocol: str = ""  # evaluation protocol ("64px", "224px", ...): decides the default metrics,
    # and rows of different protocols are never ranked together
    public_labels: bool = False  # load() fills ScenarioData.pretrain: a defense may pretrain there
    # the protocol's own attack hyperparameters where they differ from the attack's paper defaults
    # (attack name -> {param: value}); a value the user gives wins; they show in the label
    attack_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    def load(self, data_root: Path | None) -> ScenarioData:
        raise NotImplementedError

    def target_classes(self) -> list[int]:
        """The classes an attack reconstructs (all, unless the protocol fixes a subset)."""
        return list(range(self.num_classes))

    def recipe(self, role: str, budget: str, arch: str = "") -> TrainRecipe:
        """Training recipe of the target ("target", of architecture ``arch``), evaluation model
        ("eval") or a defense's pretraining on public data ("pretrain")."""
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Defenses


class Defense(Configurable):
    """Changes how a target is trained through optional hooks of the one training loop
    (reinv_bench.train). Override only what the defense changes; two defenses that override the
    same exclusive hook (``wrap_model``, ``loss``, ``trainable``) cannot be composed.
    """

    EXCLUSIVE: ClassVar[tuple[str, ...]] = ("wrap_model", "loss", "trainable")
    needs_hidden: ClassVar[bool] = False  # loss() wants block outputs in out.hidden
    pretrained: ClassVar[bool] = False  # the target starts from pretrained weights: config["weights"]
    # (a local state-dict file) or, when that is empty, a model the harness pretrains on the
    # scenario's public data (a cached step)

    def train_transform(self, x: Tensor) -> Tensor:
        """Transform a training batch (normalised space). Never applied at test or attack time."""
        return x

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
    def overridden(self) -> set[str]:
        return {h for h in self.EXCLUSIVE if getattr(type(self), h) is not getattr(Defense, h)}


# --------------------------------------------------------------------------------------------
# Attacks


@dataclass
class AttackContext:
    scenario: Scenario
    data: ScenarioData
    # the target as the threat model allows: the frozen module, a BlackBox or a LabelOnly view;
    # None while a target-independent prior is prepared
    target: Any
    device: torch.device
    seed: int
    progress: Progress = _no_progress


@dataclass
class Inversion:
    images: Tensor  # (N, C, H, W) in [-1, 1], on CPU
    labels: Tensor  # (N,) the class each image was reconstructed for
    info: dict[str, Any] = field(default_factory=dict)  # e.g. final losses, target queries


@dataclass(frozen=True)
class PriorSpec:
    """A prior an attack needs: ``kind`` names what is built (attacks that share a kind and
    params share the cached artifact, e.g. GMI's GAN for gmi, brepmi and lomma+gmi)."""

    kind: str
    params: dict[str, Any]
    uses_target: bool = False
    version: int = 1  # the version of the attack that builds it: enters the prior's key


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

    def priors(self) -> list[PriorSpec]:
        return [PriorSpec(self.prior_kind or self.name, {k: self.config[k] for k in self.prior_params},
                          self.prior_uses_target, self.version)]

    def prepare(self, ctx: AttackContext, kind: str) -> dict[str, Any]:
        """Build prior ``kind``; returns tensors/state dicts (saved for weights_only loading)."""
        return {}

    def invert(self, ctx: AttackContext, priors: dict[str, dict[str, Any]], classes: list[int],
               identity: IdentityLoss | None = None) -> Inversion:
        """Reconstruct every class of ``classes``. ``identity`` is given only by a wrapper attack
        (``lomma+gmi``), and only to an attack that declares ``accepts_identity``: it replaces the
        attack's identity term (CE(T(x), y) under the attack's weight lambda) and, when its
        ``iters`` is set, the attack's number of iterations."""
        raise NotImplementedError


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

    def __init__(self, config: Mapping[str, Any] | None = None, budget: str = "paper",
                 base: Attack | None = None) -> None:
        super().__init__(config, budget)
        if base is None or not base.accepts_identity:
            raise ConfigError(f"{self.name} wraps a white-box attack that accepts an identity loss; got "
                              f"{getattr(base, 'name', None)!r}: write e.g. -a {self.name}+gmi")
        self.base = base
        self.threat_model = base.threat_model

    def priors(self) -> list[PriorSpec]:
        return [*self.base.priors(), *super().priors()]

    def prepare(self, ctx: AttackContext, kind: str) -> dict[str, Any]:
        return self.base.prepare(ctx, kind)


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
    column declaring an axis is it."""

    key: str
    header: str = ""
    percent: bool = False
    better: str | None = None
    axis: str | None = None

    def __post_init__(self) -> None:
        if self.better not in (None, "higher", "lower"):
            raise ConfigError(f"Column {self.key!r}: better must be 'higher', 'lower' or None, got {self.better!r}")
        if self.axis not in (None, "utility", "privacy"):
            raise ConfigError(f"Column {self.key!r}: axis must be 'utility', 'privacy' or None, got {self.axis!r}")
        if not self.header:
            object.__setattr__(self, "header", self.key)


OUTCOMES = "_outcomes"  # reserved key: Worker.evaluate passes a cell's per-item outcomes to the driver with it


@dataclass
class EvalContext:
    scenario: Scenario
    data: ScenarioData
    inversion: Inversion
    target: Classifier
    eval_model: Classifier
    device: torch.device
    # cache(name, key, compute): compute() once per (name, key) and keep its dict of tensors in the
    # workdir (e.g. FID statistics of the private images); the default computes every time
    cache: Callable[[str, Any, Callable[[], dict[str, Any]]], dict[str, Any]] = lambda name, key, compute: compute()

    def attacked_classes(self) -> list[int]:
        return sorted(self.inversion.labels.unique().tolist())

    def attacked_private(self) -> Split:
        """The private training images of the classes the reconstructions were made for (what
        KNN, FID and the FaceNet distance compare them with)."""
        priv = self.data.private_train
        wanted = torch.isin(priv.y, self.inversion.labels.unique())
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

    def compute(self, ctx: EvalContext) -> dict[str, float | PerItem | NotComputed]:
        raise NotImplementedError


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
    or line it comes from) is refused.
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

    def __post_init__(self) -> None:
        what = f"reported number of {self.paper or '?'} ({self.setting or '?'})"
        if not isinstance(self.source, str) or not self.source.strip():
            raise ConfigError(f"{what}: no source; a published number is listed only with where it comes from")
        if not self.metrics:
            raise ConfigError(f"{what}: no metric values")
        for key, v in self.metrics.items():
            if not isinstance(key, str) or not key or isinstance(v, bool) or not isinstance(v, (int, float)) \
                    or v != v or v in (float("inf"), float("-inf")):
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
