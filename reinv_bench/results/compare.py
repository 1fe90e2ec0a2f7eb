"""Entries compared: within each setting, paired differences from the baseline defense, the Pareto
front and the verdict sentences; the leaderboard's sort order; attackers compared on the same targets
(``leaderboard --attack-baseline``). Method of the intervals: ``reinv_bench.results.stats``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from reinv_bench.contract.metric import Column
from reinv_bench.registry.spec import normalise
from reinv_bench.results import exposure, judging, stats
from reinv_bench.results.entries import Delta, Entry, SeedMismatch, axis, column_of, present
from reinv_bench.results.setting import comparison_key, short, target_setting
from reinv_bench.results.store import Row

# --------------------------------------------------------------------------------------------
# Comparisons: the baseline of each setting, paired differences, the Pareto front


def _conflicts(a: Entry, b: Entry) -> dict[str, str]:
    """The metric plugins that ``a`` and ``b`` computed with different versions (name -> why)."""
    both = set(a.metric_versions) & set(b.metric_versions)
    return {
        m: f"{m} {a.metric_versions[m]} vs {b.metric_versions[m]}"
        for m in sorted(both)
        if a.metric_versions[m] != b.metric_versions[m]
    }


def compare_rank(es: list[Entry], baseline: str, columns: list[Column]) -> None:
    """Within one ranking: each setting's entries compared with that setting's baseline."""
    by_setting: dict[str, list[Entry]] = defaultdict(list)
    for e in es:
        by_setting[e.setting].append(e)
    elsewhere = any(e.defense == baseline for e in es)
    for group in by_setting.values():
        base = next((e for e in group if e.defense == baseline), None)
        for e in group:
            conflicts = _conflicts(e, base) if base is not None else {}
            if base is None and elsewhere:
                e.baseline_note = f"no {baseline} of its configuration (config {short(e.config_digest)})"
            elif conflicts:
                e.baseline_note = (
                    f"{baseline} was computed with other metric versions ({'; '.join(conflicts.values())}): "
                    "their differences are not shown"
                )
            _deltas(e, base, baseline, columns, skip=set(conflicts))
        _pareto(group, columns)


def _deltas(
    e: Entry, base: Entry | None, baseline: str, columns: list[Column], skip: set[str] = frozenset()
) -> None:
    """``e``'s paired differences from ``base``, but for the keys of the metric plugins in ``skip``
    (computed with other versions than the baseline's: only their differences are hidden)."""
    e.baseline = baseline if base is not None else None
    for m in e.metrics:
        c = column_of(m, columns)
        if c.better is None and c.axis is None:
            continue
        d = e.deltas[m] = Delta(None)
        if base is None or e.mean(m) is None or base.mean(m) is None or (c.metric or m) in skip:
            continue
        if e is base:
            d.estimate = 0.0
            continue
        iv = stats.paired(e.rows, base.rows, m)
        d.estimate, d.lo, d.hi, d.method, d.note = iv.estimate, iv.lo, iv.hi, iv.method, iv.note or None
        d.paired = iv.seeds
        if iv.seed_mismatch:
            e.seed_mismatch = SeedMismatch(iv.seeds_a, iv.seeds_b, iv.seeds)
            d.mismatch = True


def _better(o: Entry, e: Entry, c: Column) -> bool:
    """``o``'s mean strictly better than ``e``'s for the defense."""
    return o.mean(c.key) > e.mean(c.key) if c.better != "lower" else o.mean(c.key) < e.mean(c.key)


def _at_least(o: Entry, e: Entry, c: Column) -> bool:
    return o.mean(c.key) >= e.mean(c.key) if c.better != "lower" else o.mean(c.key) <= e.mean(c.key)


def _pareto(es: list[Entry], columns: list[Column]) -> None:
    """Pareto-optimal by the means; not separable from another entry at least as good on both
    axes within the intervals."""
    u, p = axis(es, "utility", columns), axis(es, "privacy", columns)
    for e in es:
        e.pareto, e.separable = False, None
    if u is None or p is None:
        return
    both = [e for e in es if e.mean(u.key) is not None and e.mean(p.key) is not None]
    for e in both:
        e.pareto = not any(
            o is not e
            and _at_least(o, e, u)
            and _at_least(o, e, p)
            and (_better(o, e, u) or _better(o, e, p))
            for o in both
        )
    for e in both:
        if not e.pareto:
            continue
        e.separable = True
        for o in both:
            if o is not e and all(_close(o, e, c) for c in (u, p)):
                e.separable = False
                e.not_separable_from.append(o.defense)


def _close(o: Entry, e: Entry, c: Column) -> bool:
    """Whether ``o`` is at least as good as ``e`` on column ``c`` within the intervals: better by
    the mean, or a paired difference whose interval covers 0 (no interval: the means decide)."""
    if _better(o, e, c):
        return True
    so, se = o.stats[c.key], e.stats[c.key]
    if None not in (so.lo, so.hi, se.lo, se.hi) and (so.hi < se.lo or se.hi < so.lo):
        return False  # separate 95% intervals: the paired difference is further from 0 still
    iv = stats.paired(o.rows, e.rows, c.key)
    return _at_least(o, e, c) if not iv.has_interval else not iv.excludes_zero


def check_baseline(rows: Iterable[Row], baseline: str) -> None:
    """A one-line error when no row is of the ``baseline`` defense, listing those present."""
    present_ = sorted({r.get("defense") for r in rows if r.get("status") == "ok"})
    if present_ and baseline not in present_:
        raise ValueError(
            f"--baseline {baseline!r}: no result of that defense; defenses present: {', '.join(present_)}"
        )


# --------------------------------------------------------------------------------------------
# Ranking


def sortable(entries: list[Entry], columns: list[Column]) -> set[str]:
    keys = {c.key for c in columns} | {c.key for c in present(entries, columns)}
    tops = {k for e in entries for k in e.top}  # the worst decile ranks defenses too (issue 29)
    return keys | tops | {"d_" + k for k in keys} | {"defense", "n"}


def default_sort(columns: list[Column]) -> str:
    """The privacy axis the metrics declare (else the defense's name)."""
    return next((c.key for c in columns if c.axis == "privacy"), "defense")


def _column_key(key: str) -> str:
    """The metric a derived key reads (``attack_acc_top10`` -> ``attack_acc``)."""
    return key.removesuffix(exposure.SUFFIX)


def _sort_value(e: Entry, by: str) -> Any:
    if by in ("defense", "n"):
        return getattr(e, by)
    if by.startswith("d_") and by not in e.stats:
        d = e.deltas.get(by[2:])
        return None if d is None else d.estimate
    return e.mean(by)


def sort_entries(entries: list[Entry], by: str | None = None, *, columns: list[Column]) -> list[Entry]:
    """Within each group, best for the defense first: by a column (its declared direction), a
    difference ``d_<key>`` (the same direction), ``defense`` or ``n``; default: the privacy axis."""
    by = by or default_sort(columns)
    valid = sortable(entries, columns)
    if by not in valid:
        raise ValueError(f"cannot sort by {by!r}; choose one of {', '.join(sorted(valid))}")
    desc = column_of(_column_key(by.removeprefix("d_")), columns).better == "higher"

    def key(e: Entry) -> tuple:
        v = _sort_value(e, by)
        missing = v is None
        if isinstance(v, (int, float)) and desc:
            v = -v
        return (*comparison_key(e), missing, v if not missing else 0)

    return sorted(entries, key=key)


# --------------------------------------------------------------------------------------------
# Verdicts


def paired_seeds(e: Entry) -> list[int]:
    return e.seed_mismatch.paired if e.seed_mismatch else e.seeds


def seeds_text(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds))


def signed(c: Column, v: float) -> str:
    """A difference as shown: percentage points for a percent column, else 3 significant digits."""
    return f"{v * 100:+.1f}" if c.percent else f"{v:+.3g}"


def verdicts(entries: list[Entry], columns: list[Column]) -> list[str]:
    """One plain sentence per defense on the privacy axis (and on each judge's confirmed accuracy)
    against its setting's baseline, e.g.
    "re vs none: attack accuracy -4.0 points (95% CI -11.2 to +3.1, 1 seed x 50 reconstructions):
    not distinguishable from noise; --seeds 3 narrows it."; a defense whose setting has no
    baseline says so."""
    measured = [e for e in entries if not e.reported]
    groups = {comparison_key(e) for e in measured}
    lines = []
    for e in measured:
        p = axis([e], "privacy", columns)
        if p is None or e.defense == e.baseline:
            continue
        where = f" ({e.attack}, {e.arch}, {e.scenario} {e.budget})" if len(groups) > 1 else ""
        if e.baseline is None:
            if e.baseline_note:
                lines.append(f"{e.defense}{where}: no comparison: {e.baseline_note}.")
            continue
        d = e.deltas.get(p.key)
        if d is None or d.estimate is None:
            continue
        lines.append(_verdict(e, p, d, where))
        for m in e.metrics:  # the same reading of each judge's confirmed accuracy
            if judging.confirmed(m) and (jd := e.deltas.get(m)) and jd.estimate is not None:
                lines.append(_verdict(e, column_of(m, columns), jd, where))
    return lines


def _verdict(e: Entry, p: Column, d: Delta, where: str) -> str:
    seeds = d.paired if d.paired is not None else paired_seeds(e)
    n = f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}"
    if e.reconstructions:
        n += f" x {e.reconstructions} reconstructions"
    name = p.header.replace("%", "").replace(" acc", " accuracy").strip().lower()
    unit = " points" if p.percent else ""
    head = f"{e.defense} vs {e.baseline}{where}: {name} {signed(p, d.estimate)}{unit}"
    if d.lo is None or d.hi is None:
        return (
            f"{head} ({n}): no interval ({d.note or 'no interval'}); rerun to store per-reconstruction "
            "outcomes, or --seeds 3."
        )
    if d.excludes_zero:
        verdict = "a real difference (the interval excludes 0)"
    elif len(seeds) < 3:
        verdict = "not distinguishable from noise; --seeds 3 narrows it"
    else:
        verdict = "not distinguishable from noise; more seeds narrow it"
    mm = e.seed_mismatch
    flag = (
        (
            f" [seeds differ: {e.defense} has {seeds_text(mm.seeds)}, {e.baseline} has "
            f"{seeds_text(mm.baseline_seeds)}; paired on {seeds_text(seeds)}]"
        )
        if mm
        else ""
    )
    return f"{head} (95% CI {signed(p, d.lo)} to {signed(p, d.hi)}, {n}){flag}: {verdict}."


# --------------------------------------------------------------------------------------------
# Issue 29: attackers compared on the same targets (``leaderboard --attack-baseline``,
# ``setting.target_setting``)


def attack_keys(e: Entry, columns: list[Column]) -> list[str]:
    """The metrics compared across attackers: the privacy axis and each judge's confirmed accuracy."""
    p = axis([e], "privacy", columns)
    return [m for m in e.metrics if (p is not None and m == p.key) or judging.confirmed(m)]


def compare_attacks(entries: list[Entry], baseline_attack: str, columns: list[Column]) -> None:
    """Each measured entry's difference from ``baseline_attack`` on the same targets
    (``target_setting``), paired by seed and attacked class with the bootstrap the defenses use
    (``stats.paired``): ``attack_baseline``, ``attack_deltas`` (metric -> Delta; the baseline
    attacker's own entry: 0). An entry whose targets the baseline attacker did not attack gets
    ``attack_baseline_note``."""
    want = normalise(baseline_attack)
    base = {target_setting(e): e for e in entries if e.reported is None and normalise(e.attack) == want}
    for e in entries:
        if e.reported is not None:
            continue
        b = base.get(target_setting(e))
        if b is None:
            e.attack_baseline_note = f"{baseline_attack} did not attack these targets"
            continue
        e.attack_baseline = b.attack
        for m in attack_keys(e, columns):
            d = e.attack_deltas[m] = Delta(None)
            if e.mean(m) is None or b.mean(m) is None:
                continue
            if e is b:
                d.estimate = 0.0
                continue
            iv = stats.paired(e.rows, b.rows, m)
            d.estimate, d.lo, d.hi, d.method, d.note = iv.estimate, iv.lo, iv.hi, iv.method, iv.note or None
            d.paired, d.mismatch = iv.seeds, iv.seed_mismatch


def check_attack_baseline(rows: Iterable[Row], baseline_attack: str) -> None:
    """A one-line error when no row is of the attacker ``baseline_attack``, listing those present."""
    present_ = sorted({r.get("attack") for r in rows if r.get("status") == "ok"})
    if present_ and normalise(baseline_attack) not in {normalise(a) for a in present_}:
        raise ValueError(
            f"--attack-baseline {baseline_attack!r}: no result of that attacker; attackers present: "
            f"{', '.join(present_)}"
        )


def attack_verdicts(entries: list[Entry], columns: list[Column]) -> list[str]:
    """One sentence per attacker and metric compared with ``--attack-baseline``, e.g.
    "adaptive+gmi minus gmi (re, cnn, mnist quick): attack accuracy +12.0 points (95% CI +4.1 to
    +19.8, 3 seeds x 50 reconstructions): a real difference (the interval excludes 0)."."""
    lines = []
    for e in entries:
        if e.attack_baseline is None or e.attack == e.attack_baseline:
            continue
        where = f" ({e.defense}, {e.arch}, {e.scenario} {e.budget})"
        for m, d in e.attack_deltas.items():
            if d.estimate is None:
                continue
            c = column_of(m, columns)
            seeds = d.paired if d.paired is not None else e.seeds
            n = f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}"
            if e.reconstructions:
                n += f" x {e.reconstructions} reconstructions"
            name = c.header.replace("%", "").replace(" acc", " accuracy").strip().lower()
            unit = " points" if c.percent else ""
            head = f"{e.attack} minus {e.attack_baseline}{where}: {name} {signed(c, d.estimate)}{unit}"
            if d.lo is None or d.hi is None:
                lines.append(f"{head} ({n}): no interval ({d.note or 'no interval'}).")
                continue
            if d.excludes_zero:
                verdict = "a real difference (the interval excludes 0)"
            elif len(seeds) < 3:
                verdict = "not distinguishable from noise; --seeds 3 narrows it"
            else:
                verdict = "not distinguishable from noise; more seeds narrow it"
            mm = " [seed sets differ: paired on the common seeds]" if d.mismatch else ""
            lines.append(f"{head} (95% CI {signed(c, d.lo)} to {signed(c, d.hi)}, {n}){mm}: {verdict}.")
    return lines
