"""Confidence intervals from the per-reconstruction outcomes stored with each cell.

Method (also in docs/statistics.md): a seeded percentile bootstrap, 95 % by default.

- A *difference* between a defense and the baseline (``paired``) is paired twice: by seed (only
  the seeds both have; different seed sets are flagged) and, within a seed, by attacked class
  (both reconstructed the same classes). One bootstrap replicate resamples the common seeds with
  replacement (when there are several) and, independently for each drawn seed, the attacked
  classes with replacement (the same classes for both sides: a cluster bootstrap, the class is
  the unit); the replicate's difference is the mean over its seeds of (mean over the defense's
  items of the drawn classes) - (the same for the baseline). The interval is the 2.5th and
  97.5th percentiles of the replicates; the estimate is the difference of the means over the
  common seeds. Items are reconstructions (attack accuracy, top-5, distances) or, for a metric
  that stores its own items with their classes, those (natural accuracy: test images by class).
- A metric without stored items (FID; rows stored before outcomes existed) is bootstrapped over
  the per-seed differences of its means when there are at least 2 common seeds, and has no
  interval with one seed.
- With one seed the interval covers only the sampling of reconstructions (and test images), not
  the variation between trained targets: the output says so.
- ``interval``: the same resampling for one entry's mean (error bars of the plots).

The generator is ``numpy.random.default_rng(seed)`` with a fixed seed, so the same rows always
give the same intervals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reinv_bench.results.outcomes import Outcomes
from reinv_bench.results.store import Row

LEVEL = 0.95
N_BOOT = 2000
SEED = 0


def outcomes(row: Any) -> Outcomes | None:
    """A stored row's outcomes (a ``Row``, or the mapping of its columns)."""
    if row is None:
        return None
    out = row.outcomes if isinstance(row, Row) else row.get("outcomes")
    return Outcomes.from_json(out)


def items(row: Any, key: str) -> dict[int, np.ndarray] | None:
    """class -> the item values of metric ``key`` in a stored row's outcomes; None without them."""
    out = outcomes(row)
    its = None if out is None else out.items(key)
    if its is None:
        return None
    by: dict[int, list[float]] = {}
    for c, v in zip(its.classes, its.values):
        if v is not None:
            by.setdefault(int(c), []).append(float(v))
    return {c: np.asarray(v, dtype=float) for c, v in sorted(by.items())} or None


def reconstructions(row: Any) -> int | None:
    """How many reconstructions a stored row's outcomes hold (None without outcomes)."""
    out = outcomes(row)
    return None if out is None else len(out)


@dataclass
class Interval:
    """An estimate with its interval (``lo``/``hi`` None: no interval, ``note`` says why)."""

    estimate: float | None
    lo: float | None = None
    hi: float | None = None
    method: str = "none"  # "classes" (items by class, within seeds), "classes+seeds", "seeds", "none"
    seeds: list[int] = field(default_factory=list)  # the seeds used (paired: the common ones)
    items: int | None = None  # items per seed (reconstructions), where outcomes were used
    note: str = ""
    seeds_a: list[int] = field(default_factory=list)  # paired: each side's seeds
    seeds_b: list[int] = field(default_factory=list)

    @property
    def has_interval(self) -> bool:
        return self.lo is not None and self.hi is not None

    @property
    def excludes_zero(self) -> bool:
        return self.has_interval and (self.lo > 0 or self.hi < 0)

    @property
    def seed_mismatch(self) -> bool:
        return bool(self.seeds_a or self.seeds_b) and self.seeds_a != self.seeds_b


def _percentiles(boot: np.ndarray, level: float) -> tuple[float, float]:
    a = (1 - level) / 2 * 100
    lo, hi = np.percentile(boot, [a, 100 - a])
    return float(lo), float(hi)


def _value(row: Any, key: str) -> float | None:
    v = (row.metrics if isinstance(row, Row) else row.get("metrics") or {}) or {}
    v = v.get(key)
    return None if v is None else float(v)


def _replicates(
    sides: list[list[tuple[np.ndarray, np.ndarray]]],
    signs: list[float],
    n_boot: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Bootstrap replicates of sum_k sign_k * (mean over seeds of the class-resampled mean of side k).

    ``sides[k][j]``: (per-class sums, per-class counts) of side k at seed j, classes aligned
    across sides. Seeds are resampled when there are several; classes always, independently per
    drawn seed, with the same draw for every side (pairing)."""
    n_seeds = len(sides[0])
    boot = np.zeros(n_boot)
    for _slot in range(n_seeds):
        pick = rng.integers(n_seeds, size=n_boot) if n_seeds > 1 else np.zeros(n_boot, dtype=int)
        for j in range(n_seeds):
            rows = np.flatnonzero(pick == j)
            if not len(rows):
                continue
            n_classes = len(sides[0][j][0])
            draw = rng.integers(n_classes, size=(len(rows), n_classes))
            # how often each class was drawn, per replicate (a bincount is faster than gathering)
            flat = (np.arange(len(rows))[:, None] * n_classes + draw).ravel()
            weights = (
                np.bincount(flat, minlength=len(rows) * n_classes).reshape(len(rows), n_classes).astype(float)
            )
            for sign, side in zip(signs, sides):
                sums, counts = side[j]
                boot[rows] += sign * (weights @ sums) / (weights @ counts)
    return boot / n_seeds


def _by_class(table: dict[int, np.ndarray], classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([table[c].sum() for c in classes]), np.array([float(len(table[c])) for c in classes]))


def paired(
    a: dict[int, dict[str, Any]],
    b: dict[int, dict[str, Any]],
    key: str,
    level: float = LEVEL,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> Interval:
    """Difference a - b in metric ``key`` (a: a defense's rows by seed, b: the baseline's), with
    its paired bootstrap interval (see the module docstring)."""
    seeds_a, seeds_b = sorted(a), sorted(b)
    common = [
        s for s in seeds_a if s in b and _value(a[s], key) is not None and _value(b[s], key) is not None
    ]
    res = Interval(None, seeds=common, seeds_a=seeds_a, seeds_b=seeds_b)
    if not common:
        res.note = "no common seed with a value on both sides"
        return res
    tables = [(items(a[s], key), items(b[s], key)) for s in common]
    if all(ta is not None and tb is not None and set(ta) & set(tb) for ta, tb in tables):
        sides: list[list[tuple[np.ndarray, np.ndarray]]] = [[], []]
        diffs = []
        for ta, tb in tables:
            classes = sorted(set(ta) & set(tb))
            sa, sb = _by_class(ta, classes), _by_class(tb, classes)
            sides[0].append(sa)
            sides[1].append(sb)
            diffs.append(sa[0].sum() / sa[1].sum() - sb[0].sum() / sb[1].sum())
        res.estimate = float(np.mean(diffs))
        res.items = int(sides[0][0][1].sum())
        if sum(len(s[0]) for s in sides[0]) < 2:
            res.note = "one attacked class and one seed: nothing to resample"
            return res
        boot = _replicates(sides, [1.0, -1.0], n_boot, np.random.default_rng(seed))
        res.lo, res.hi = _percentiles(boot, level)
        res.method = "classes+seeds" if len(common) > 1 else "classes"
        return res
    diffs = [_value(a[s], key) - _value(b[s], key) for s in common]
    res.estimate = float(np.mean(diffs))
    return _over_seeds(res, np.asarray(diffs), level, n_boot, seed, key)


def contrast(
    sides: list[dict[int, dict[str, Any]]],
    signs: list[float],
    key: str,
    level: float = LEVEL,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> Interval:
    """sum_k signs[k] * side k's mean of ``key``, paired as ``paired`` pairs two sides: on the seeds
    every side has and, within a seed, on the attacked classes every side reconstructed (one
    class draw for all sides). ``contrast([a, b], [1, -1], key)`` is ``paired(a, b, key)``; four
    sides ``[b, w, b0, w0]`` with ``[1, -1, -1, 1]`` give a difference in differences (is the gap
    between two attackers on a defended target larger than on its undefended twin?)."""
    common = [s for s in sorted(sides[0]) if all(s in d and _value(d[s], key) is not None for d in sides)]
    res = Interval(None, seeds=common)
    if not common:
        res.note = "no common seed with a value on every side"
        return res
    tables = [[items(d[s], key) for d in sides] for s in common]
    if all(all(t is not None for t in ts) and set.intersection(*(set(t) for t in ts)) for ts in tables):
        by_side: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in sides]
        values = []
        for ts in tables:
            classes = sorted(set.intersection(*(set(t) for t in ts)))
            cols = [_by_class(t, classes) for t in ts]
            for k, col in enumerate(cols):
                by_side[k].append(col)
            values.append(sum(sign * c[0].sum() / c[1].sum() for sign, c in zip(signs, cols)))
        res.estimate = float(np.mean(values))
        res.items = int(by_side[0][0][1].sum())
        if sum(len(c[0]) for c in by_side[0]) < 2:
            res.note = "one attacked class and one seed: nothing to resample"
            return res
        boot = _replicates(by_side, list(signs), n_boot, np.random.default_rng(seed))
        res.lo, res.hi = _percentiles(boot, level)
        res.method = "classes+seeds" if len(common) > 1 else "classes"
        return res
    values = np.asarray([sum(sign * _value(d[s], key) for sign, d in zip(signs, sides)) for s in common])
    res.estimate = float(values.mean())
    return _over_seeds(res, values, level, n_boot, seed, key)


def interval(
    rows: dict[int, dict[str, Any]], key: str, level: float = LEVEL, n_boot: int = N_BOOT, seed: int = SEED
) -> Interval:
    """One entry's mean of ``key`` over its seeds with a bootstrap interval (plots' error bars)."""
    seeds = [s for s in sorted(rows) if _value(rows[s], key) is not None]
    res = Interval(None, seeds=seeds)
    if not seeds:
        res.note = "no value"
        return res
    tables = [items(rows[s], key) for s in seeds]
    if all(t is not None for t in tables):
        sides = [[_by_class(t, sorted(t)) for t in tables]]
        res.estimate = float(np.mean([s[0].sum() / s[1].sum() for s in sides[0]]))
        res.items = int(sides[0][0][1].sum())
        if sum(len(s[0]) for s in sides[0]) < 2:
            res.note = "one attacked class and one seed: nothing to resample"
            return res
        res.lo, res.hi = _percentiles(_replicates(sides, [1.0], n_boot, np.random.default_rng(seed)), level)
        res.method = "classes+seeds" if len(seeds) > 1 else "classes"
        return res
    values = np.asarray([_value(rows[s], key) for s in seeds])
    res.estimate = float(values.mean())
    return _over_seeds(res, values, level, n_boot, seed, key)


def _over_seeds(
    res: Interval, values: np.ndarray, level: float, n_boot: int, seed: int, key: str
) -> Interval:
    if len(values) < 2:
        res.note = f"{key} has no per-reconstruction outcomes stored and there is one seed"
        return res
    rng = np.random.default_rng(seed)
    boot = values[rng.integers(len(values), size=(n_boot, len(values)))].mean(1)
    res.lo, res.hi = _percentiles(boot, level)
    res.method = "seeds"
    return res
