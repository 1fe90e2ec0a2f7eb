"""The most exposed identities (issue 29 item 6): beside a cell's mean attack accuracy, the attack
accuracy of the 10 % most-leaked identities (``attack_acc_top10``), from the per-reconstruction
outcomes stored with each row. Aerni, Zhang and Tramèr (CCS 2024) showed privacy defenses judged by
averages hide the records that leak most; Carlini et al. (arXiv 1902.06705) ask for per-example
comparisons, not averages.

Method. Per seed, each attacked identity (class) gets its mean over its reconstructions (its
per-identity attack accuracy, or distance); the identities are ranked from most to least leaked
(the direction worse for the defense: highest attack accuracy, lowest distance) and the top
``ceil(FRACTION * identities)`` (at least one) are averaged. The estimate is the mean of that over
the seeds. The interval is the percentile bootstrap of ``reinv_bench.results.stats`` (seeded, 95 %):
seeds resampled with replacement when there are several, the identities of each drawn seed
resampled with replacement, the top decile taken of each replicate's identities. The bootstrap of
an order statistic is conservative with few identities (with 10 identities the top decile is the
single most-leaked one, and the replicates' maximum can only be one of the observed values), so
the interval says how stable the number is, not an exact coverage.

``curve``: the per-identity values sorted from most to least leaked, averaged rank by rank over
the seeds: what ``plot --identities`` draws per defense.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from reinv_bench.results import stats

FRACTION = 0.10
SUFFIX = "_top10"  # attack_acc -> attack_acc_top10


def key_of(key: str) -> str:
    """The top-decile key of metric ``key`` (``attack_acc_top10``)."""
    return key + SUFFIX


def per_identity(row: Any, key: str) -> np.ndarray | None:
    """Each attacked identity's mean of ``key`` in a stored row, in class order (None without
    per-reconstruction outcomes)."""
    table = stats.items(row, key)
    if not table:
        return None
    return np.array([v.mean() for v in table.values()], dtype=float)


def _leak_order(values: np.ndarray, better: str | None) -> np.ndarray:
    """``values`` sorted from most to least leaked (along the last axis)."""
    s = np.sort(values, axis=-1)
    return s if better == "higher" else s[..., ::-1]


def count(identities: int, fraction: float = FRACTION) -> int:
    """How many identities the top ``fraction`` holds (at least one)."""
    return max(1, math.ceil(fraction * identities - 1e-9))


def top(
    rows: dict[int, Any],
    key: str,
    better: str | None,
    fraction: float = FRACTION,
    level: float = stats.LEVEL,
    n_boot: int = stats.N_BOOT,
    seed: int = stats.SEED,
) -> stats.Interval:
    """The mean of ``key`` over the ``fraction`` most-leaked identities, over the seeds of ``rows``
    (seed -> row), with its bootstrap interval (module docstring). No per-reconstruction outcomes:
    no estimate, and the note says so."""
    per = {s: per_identity(r, key) for s, r in sorted(rows.items())}
    seeds = [s for s, v in per.items() if v is not None]
    res = stats.Interval(None, seeds=seeds)
    if not seeds:
        res.note = f"{key} has no per-reconstruction outcomes stored: rerun to store them"
        return res
    vals = [per[s] for s in seeds]
    res.estimate = float(np.mean([_leak_order(v, better)[: count(len(v), fraction)].mean() for v in vals]))
    res.items = len(vals[0])
    if sum(len(v) for v in vals) < 2:
        res.note = "one attacked identity and one seed: nothing to resample"
        return res
    rng = np.random.default_rng(seed)
    boot = np.zeros(n_boot)
    n_seeds = len(vals)
    for _slot in range(n_seeds):
        pick = rng.integers(n_seeds, size=n_boot) if n_seeds > 1 else np.zeros(n_boot, dtype=int)
        for j, v in enumerate(vals):
            reps = np.flatnonzero(pick == j)
            if not len(reps):
                continue
            drawn = v[rng.integers(len(v), size=(len(reps), len(v)))]
            boot[reps] += _leak_order(drawn, better)[:, : count(len(v), fraction)].mean(1)
    boot /= n_seeds
    lo, hi = np.percentile(boot, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    res.lo, res.hi = float(lo), float(hi)
    res.method = "classes+seeds" if n_seeds > 1 else "classes"
    return res


def curve(rows: dict[int, Any], key: str, better: str | None) -> np.ndarray | None:
    """Per-identity values from most to least leaked, averaged rank by rank over the seeds (seeds
    with another number of identities are left out); None without outcomes."""
    vals = [v for r in rows.values() if (v := per_identity(r, key)) is not None]
    if not vals:
        return None
    n = len(vals[0])
    same = [_leak_order(v, better) for v in vals if len(v) == n]
    return np.mean(same, axis=0)
