"""The per-reconstruction outcomes of one evaluated cell: the one layout that the worker builds
(``steps``), the runner puts in a ``Row``, the store keeps as JSON, and the statistics, the
leaderboard and the plots read.

Build one with the attacked class of each reconstruction (in the order of the inversion), then
add each metric's items::

    out = Outcomes(classes=[0, 0, 1], target_conf=[0.9, 0.2, 0.7])
    out.per_reconstruction["attack_acc"] = [1.0, 0.0, 1.0]        # one value per reconstruction
    out.per_item["natural_acc"] = Items([0, 1, 1], [1.0, 1.0, 0.0])  # a metric's own items, by class

``target_conf``: the target's confidence in the attacked class of each reconstruction (or None).
``per_reconstruction``: metric key -> one value per reconstruction (None: no value for that one).
``per_item``: metric key -> ``Items`` of another kind than reconstructions (test images), each
with its class. The stored JSON layout (``to_json``/``from_json``) is the one of schema 3:
``{"class", "per_reconstruction", "per_item": {key: {"class", "value"}}, "target_conf"}``.
Values that are not finite numbers (NaN, inf) are stored as None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


def finite(value: Any) -> float | None:
    """``value`` as a float, or None when it is None, NaN or infinite."""
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


@dataclass
class Items:
    """A metric's own items (not reconstructions): the class and the value of each."""

    classes: list[int]
    values: list[float | None]


@dataclass
class Outcomes:
    """What one cell's evaluation found per reconstruction (see the module docstring)."""

    classes: list[int]
    target_conf: list[float] | None = None
    per_reconstruction: dict[str, list[float | None]] = field(default_factory=dict)
    per_item: dict[str, Items] = field(default_factory=dict)

    def __len__(self) -> int:
        """How many reconstructions."""
        return len(self.classes)

    def items(self, key: str) -> Items | None:
        """The items of metric ``key`` with their classes (reconstructions first); None without."""
        per_rec = self.per_reconstruction.get(key)
        if per_rec is not None and len(per_rec) == len(self.classes):
            return Items(list(self.classes), list(per_rec))
        return self.per_item.get(key)

    def has(self, key: str) -> bool:
        return key in self.per_reconstruction or key in self.per_item

    def to_json(self) -> dict[str, Any]:
        """The stored layout (non-finite values as None)."""
        return {
            "class": [int(c) for c in self.classes],
            "per_reconstruction": {k: [finite(x) for x in v] for k, v in self.per_reconstruction.items()},
            "per_item": {
                k: {"class": [int(c) for c in it.classes], "value": [finite(x) for x in it.values]}
                for k, it in self.per_item.items()
            },
            "target_conf": None if self.target_conf is None else [finite(x) for x in self.target_conf],
        }

    @classmethod
    def from_json(cls, data: Any) -> Outcomes | None:
        """An ``Outcomes`` from its stored layout (an ``Outcomes`` is returned as it is; None or
        an empty layout: None)."""
        if data is None or isinstance(data, Outcomes):
            return data
        if not data or data.get("class") is None:
            return None
        per_item = {
            k: Items([int(c) for c in v["class"]], [finite(x) for x in v["value"]])
            for k, v in (data.get("per_item") or {}).items()
        }
        return cls(
            classes=[int(c) for c in data["class"]],
            target_conf=data.get("target_conf"),
            per_reconstruction={
                k: [finite(x) for x in v] for k, v in (data.get("per_reconstruction") or {}).items()
            },
            per_item=per_item,
        )
