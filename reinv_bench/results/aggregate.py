"""Stored rows -> typed leaderboard entries: seeds merged, entries grouped, paired differences from
the baseline, the Pareto front and the verdict sentences. Rendering is ``reinv_bench.views.tables``.

Rows are grouped by (protocol, scenario, budget, arch, attack) and ranked within each group by
defense, so numbers of different evaluation protocols (64 px vs 224 px) are never ranked
together. Rows of other data (``data_digest``) or another reinv-bench version are never averaged
or compared together either, nor rows of another ``--precision``. An entry averages one value per
seed: rows of the same seed and resolved config computed with other ``--metric`` sets are merged
(per metric, the most recent row that has a value), and rows of the same labels but another
resolved config are separate entries (``config <digest>`` after the defense).

A comparison never crosses configurations: every difference, interval, verdict and Pareto front
compares entries of the same *setting* (the resolved config less the defense and the target's
initialisation, which a defense may choose (TL's pretrained weights) and a user chooses in the arch
label: recipes, precision, evaluation model, data, the attack's resolved parameters) whose rows were
computed with the same metric versions. A target recipe a defense sets itself (TL and BiDO at the
paper budget) is not: the setting holds the user's ``--recipe`` overrides (stored with each row;
rows stored before they were have their resolved recipe compared instead). A defense without a
baseline of its setting has none (and the notes say so). A row computed against an artifact that
was later rebuilt with other bytes (the row stores each artifact's sha256) is stale: it is left
out, and counted.

The columns are the ones the metrics declare (``api.Column``), handed in by the caller
(``declared_columns(registry)``); a key no metric declares is shown under its own name, with no
direction. No metric is named here. Method of the intervals: ``reinv_bench.results.stats``.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from reinv_bench.contract.metric import Column
from reinv_bench.registry.spec import matches
from reinv_bench.results import exposure, judging, stats, validity
from reinv_bench.results.compare import (
    attack_verdicts,
    check_attack_baseline,
    check_baseline,
    compare_attacks,
    compare_rank,
    default_sort,
    sort_entries,
    verdicts,
)
from reinv_bench.results.entries import (
    GROUP,
    LABELS,
    SEPARATE,
    Entry,
    Stat,
    axis,
    column_of,
    declared_columns,
    present,
)
from reinv_bench.results.outcomes import Outcomes
from reinv_bench.results.setting import (
    comparison_key,
    config_text,
    digest,
    precision,
    rank_key,
    setting_text,
    short,
)
from reinv_bench.results.store import COLUMNS, Row, finite_metrics
from reinv_bench.results.validity import CONVERGENCE, VALIDITY

# the leaderboard's pipeline in one place: ``aggregate`` and what its callers use of its parts
# (entries, settings, comparisons: ``entries``, ``setting``, ``compare``)
__all__ = [
    "GROUP",
    "LABELS",
    "SEPARATE",
    "Entry",
    "aggregate",
    "as_row",
    "attack_verdicts",
    "axis",
    "check_attack_baseline",
    "check_baseline",
    "column_of",
    "compare_attacks",
    "comparison_key",
    "declared_columns",
    "default_sort",
    "filter_rows",
    "merge_seed",
    "present",
    "sort_entries",
    "split_stale",
    "verdicts",
]

KEPT_NOTES = (
    "broken_by",
    "ensemble_sources",
    "canary",
)  # remarks that are no metric's reason (ensemble, canaries)


def as_row(r: Any) -> Row:
    """A ``Row`` from a row or a mapping of some of its columns (the others null)."""
    return r if isinstance(r, Row) else Row(**{c: r.get(c) for c in COLUMNS})


def _clean(r: Row) -> Row:
    """The row with values that are not finite numbers (stored by older versions) as null with
    the reason."""
    fixed = finite_metrics(r)
    return replace(r, **fixed) if fixed else r


def merge_seed(rs: list[Row]) -> Row:
    """One row from the rows of one seed (other metric sets): per metric, the value of the most
    recent row that has one, with that row's per-item outcomes; a metric no row could compute
    keeps the most recent reason."""
    rs = sorted(rs, key=lambda r: str(r.created_at or ""), reverse=True)
    metrics: dict[str, Any] = {}
    notes: dict[str, str] = {}
    source: dict[str, Row] = {}
    for r in rs:
        for m, v in (r.metrics or {}).items():
            if metrics.get(m) is None:
                metrics[m] = v
                source[m] = r
                if v is None and m not in notes and (r.notes or {}).get(m):
                    notes[m] = r.notes[m]
    first = next((r.outcomes for r in rs if r.outcomes), None)
    outcomes = None
    if first is not None:
        outcomes = Outcomes(classes=first.classes, target_conf=first.target_conf)
        for m, r in source.items():
            out = r.outcomes
            if out is not None and m in out.per_reconstruction and out.classes == first.classes:
                outcomes.per_reconstruction[m] = out.per_reconstruction[m]
            if out is not None and m in out.per_item:
                outcomes.per_item[m] = out.per_item[m]
    artifacts = next((r.artifacts for r in rs if r.artifacts), None)
    # a judge's remark (its threshold, rates, model) stays with its answers
    remarks = {m: r.notes[m] for m, r in source.items() if judging.JudgeKey.parse(m) and m in (r.notes or {})}
    # the target's validity checks (reinv_bench.results.validity): the most recent row's
    checks = next((r.notes[VALIDITY] for r in rs if VALIDITY in (r.notes or {})), None)
    if checks is not None:
        remarks[VALIDITY] = checks
    # the ensemble's "broken by" and a canary target's verdict stay with the row too (most recent)
    kept = {k: v for r in reversed(rs) for k, v in (r.notes or {}).items() if k in KEPT_NOTES}
    return replace(
        rs[0],
        metrics=metrics,
        notes={**{m: n for m, n in notes.items() if metrics.get(m) is None}, **remarks, **kept},
        outcomes=outcomes,
        artifacts=artifacts,
    )


def _digests(r: Row) -> dict[str, str]:
    return dict((r.artifacts or {}).get("sha256") or {})


def split_stale(rows: list[Row]) -> tuple[list[Row], list[Row]]:
    """(current rows, stale rows): a row is stale when an artifact it was computed against has
    other bytes (sha256) in a more recent row, i.e. was rebuilt since. Rows that stored no
    digests are never stale."""
    current: dict[str, str] = {}
    for r in sorted(rows, key=lambda r: str(r.created_at or "")):
        current.update(_digests(r))
    stale = [r for r in rows if any(current.get(k) != v for k, v in _digests(r).items())]
    ids = {id(r) for r in stale}
    return [r for r in rows if id(r) not in ids], stale


def _metric_keys(rows: list[Row], columns: list[Column]) -> list[str]:
    """The metric keys the rows hold: declared ones in declaration order, then the others."""
    held = {m for r in rows for m in (r.metrics or {})}
    declared = [c.key for c in columns if c.key in held]
    return declared + sorted(held - set(declared), key=judging.sort_key)


def _stat(m: str, rs: list[Row], by_seed: dict[int, Row], col: Column) -> Stat:
    vals = [r.metrics.get(m) for r in rs if r.metrics and r.metrics.get(m) is not None]
    st = Stat(
        statistics.fmean(vals) if vals else None,
        statistics.stdev(vals) if len(vals) > 1 else (0.0 if vals else None),
        n=len(vals),
    )
    if not vals:
        reasons = {(r.notes or {}).get(m) for r in rs} - {None}
        st.note = "; ".join(sorted(reasons)) or "not computed"
    elif col.axis or col.interval:  # the plots' error bars (plots compute the others'), the table's
        iv = stats.interval(by_seed, m)
        st.lo, st.hi, st.has_interval = iv.lo, iv.hi, True
    return st


def _versions(rows: Iterable[Row]) -> dict[str, list[Any]]:
    """metric plugin -> the versions of the rows whose values the entry shows (rows store them in
    ``config["metrics"]``; older rows do not): per seed, the most recent row that ran the plugin, so
    rows superseded by a rerun no longer count (once every cell is rerun, one version remains)."""
    latest: dict[tuple[int, str], tuple[str, Any]] = {}
    for r in rows:
        stored = (r.config or {}).get("metrics")
        for name, v in stored.items() if isinstance(stored, dict) else ():
            when = str(r.created_at or "")
            if (r.seed, name) not in latest or when > latest[(r.seed, name)][0]:
                latest[(r.seed, name)] = (when, v)
    out: dict[str, set] = defaultdict(set)
    for (_, name), (_, v) in latest.items():
        out[name].add(v)
    return {k: sorted(v, key=str) for k, v in sorted(out.items())}


def _entry(rows: list[Row], columns: list[Column]) -> Entry:
    """One entry from the rows of one (labels, data, version, resolved config)."""
    r0 = rows[0]
    by: dict[int, list[Row]] = defaultdict(list)
    for r in rows:
        by[r.seed].append(r)
    success = next((c.key for c in columns if c.axis == "privacy"), None)
    merged = {s: judging.derive(merge_seed(v), success) for s, v in by.items()}
    rs = list(merged.values())
    counts = [stats.reconstructions(r) for r in rs]
    e = Entry(
        **{k: r0[k] for k in (*LABELS, *SEPARATE)},
        config_digest=digest(config_text(r0)),
        setting=digest(setting_text(r0)),
        seeds=sorted(merged),
        reconstructions=counts[0] if len(set(counts)) == 1 and all(counts) else None,
        precision=precision(rs[0]),
        rows={r.seed: r for r in rs},
        config=rs[0].config or {},
        metric_versions=_versions(rows),
        threads=sorted({t for r in rs for t in (r.config or {}).get("threads") or ()}),
    )
    e.metrics = _metric_keys(rs, columns)
    for m in e.metrics:
        e.stats[m] = _stat(m, rs, e.rows, column_of(m, columns))
    _top_decile(e, success, columns)
    return e


def _top_decile(e: Entry, key: str | None, columns: list[Column]) -> None:
    """Issue 29: the privacy axis over the 10 % most-leaked identities (``exposure.top``), held in
    ``e.stats`` under ``<key>_top10`` (not a metric: no column of its own in ``e.metrics``)."""
    if key is None or key not in e.metrics or e.stats[key].mean is None:
        return
    iv = exposure.top(e.rows, key, column_of(key, columns).better)
    top = exposure.key_of(key)
    e.stats[top] = Stat(iv.estimate, None, iv.lo, iv.hi, len(iv.seeds), iv.note or None, iv.has_interval)
    e.top.append(top)


def aggregate(rows: Iterable[Row], *, columns: list[Column], baseline: str = "none") -> list[Entry]:
    """One entry per (labels, data, version, resolved config) of the successful rows, compared
    with the baseline of its setting (module docstring)."""
    ok = [_clean(as_row(r)) for r in rows if r.get("status") == "ok"]
    ok, stale = split_stale(ok)
    # issue 29: the rows of ``run --convergence`` only check the entries they double; no entry of their own
    doubled = [r for r in ok if (r.config or {}).get(CONVERGENCE)]
    ok = [r for r in ok if not (r.config or {}).get(CONVERGENCE)]
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for r in ok:
        groups[(*(r[k] for k in LABELS), *(r.get(k) for k in SEPARATE), config_text(r))].append(r)
    entries = [_entry(rs, columns) for rs in groups.values()]
    for r in stale:
        key = (*(r[k] for k in LABELS), *(r.get(k) for k in SEPARATE), config_text(r))
        if key in groups:
            next(e for e, k in zip(entries, groups) if k == key).stale += 1
    _variants(entries)
    by_rank: dict[tuple, list[Entry]] = defaultdict(list)
    for e in entries:
        by_rank[rank_key(e)].append(e)
    for es in by_rank.values():
        compare_rank(es, baseline, columns)
    checks: dict[tuple, list[Row]] = defaultdict(list)
    for r in doubled:
        checks[(*(r[k] for k in LABELS), *(r.get(k) for k in SEPARATE), config_text(r))].append(r)
    validity.attach(entries, columns, [_entry(rs, columns) for rs in checks.values()])
    return entries


def _variants(entries: list[Entry]) -> None:
    """``variant``: what tells an entry apart from others of the same labels, shown after the
    scenario (``data 1a2b3c``, ``v0.2.0``, the precision) or the defense (``config 4d5e6f``)."""
    same_group: dict[tuple, list[Entry]] = defaultdict(list)
    for e in entries:
        same_group[tuple(str(getattr(e, k)) for k in GROUP)].append(e)
    for es in same_group.values():
        digests = {e.data_digest for e in es}
        versions = {e.reinv_version for e in es}
        for e in es:
            tags = []
            if len(digests) > 1:
                tags.append(f"data {short(e.data_digest)}")
            if len(versions) > 1:
                tags.append(f"v{e.reinv_version}")
            if e.precision != "fp32":  # ranked apart from fp32 rows: say why
                tags.append(e.precision)
            e.variant = ", ".join(tags)
    same_labels: dict[tuple, list[Entry]] = defaultdict(list)
    for e in entries:
        same_labels[(rank_key(e), e.threat_model, e.defense)].append(e)
    for es in same_labels.values():
        for e in es:
            e.config_variant = f"config {short(e.config_digest)}" if len(es) > 1 else ""


def filter_rows(rows, **wanted: tuple[str, ...]) -> list[Row]:
    """The rows whose labels are among the wanted ones; specs (attack, defense, arch) compare
    normalised (``spec.normalise``: ``-d "re[p=.5]"`` finds the row stored as ``re[p=0.5]``)."""

    def ok(k: str, v: tuple[str, ...], label: Any) -> bool:
        return not v or (matches(label, v) if k in ("attack", "defense", "arch") and label else label in v)

    return [r for r in rows if all(ok(k, v, r[k]) for k, v in wanted.items())]
