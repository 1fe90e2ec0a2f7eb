"""Published numbers, shown beside the measured ones."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reinv_bench.contract.config import ConfigError

if TYPE_CHECKING:
    pass


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
