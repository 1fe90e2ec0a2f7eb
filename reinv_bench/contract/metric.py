"""Metrics: what a metric receives (EvalContext) and the columns it declares."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from reinv_bench.contract.attack import Inversion, Reconstructions
from reinv_bench.contract.config import ConfigError
from reinv_bench.contract.data import Scenario, ScenarioData, Split
from reinv_bench.contract.models import Classifier

if TYPE_CHECKING:
    from reinv_bench.contract.defense import Defense


@dataclass(frozen=True)
class NotComputed:
    """A metric value that could not be computed, with the reason (stored as null + reason)."""

    reason: str


@dataclass(frozen=True)
class PerItem:
    """A metric value with the per-item outcomes it summarises, stored with the cell so that
    confidence intervals can be computed later without rerunning (``reinv_bench.results.stats``).

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
    bootstrap of ``reinv_bench.results.stats``; axis columns have theirs in the Δ column)."""

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
