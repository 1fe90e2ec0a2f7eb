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

import hashlib
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from reinv_bench.contract.metric import Column
from reinv_bench.results import exposure, judging, stats, validity
from reinv_bench.results.outcomes import Outcomes
from reinv_bench.results.store import COLUMNS, Row, finite_metrics
from reinv_bench.results.validity import CONVERGENCE, VALIDITY

GROUP = ("protocol", "scenario", "budget", "arch", "attack")
SEPARATE = ("data_digest", "reinv_version")  # rows that differ in these are never averaged or compared
LABELS = (*GROUP, "threat_model", "defense")
KEPT_NOTES = (
    "broken_by",
    "ensemble_sources",
    "canary",
)  # remarks that are no metric's reason (ensemble, canaries)


@dataclass
class Stat:
    """One metric of one entry over its seeds: mean, std, the bootstrap interval (axis columns
    only), how many seeds have a value, and why there is none."""

    mean: float | None
    std: float | None
    lo: float | None = None
    hi: float | None = None
    n: int = 0
    note: str | None = None
    has_interval: bool = False  # whether lo/hi were computed (axis columns)


@dataclass
class Delta:
    """The difference of one metric from the baseline, with its paired interval. ``method`` is
    None on the baseline's own entry (difference 0) and where nothing was compared."""

    estimate: float | None
    lo: float | None = None
    hi: float | None = None
    method: str | None = None
    note: str | None = None
    mismatch: bool = False  # the paired seeds differ from each side's (Entry.seed_mismatch)
    paired: list[int] | None = None  # the seeds paired for this metric (None: not compared)

    @property
    def excludes_zero(self) -> bool:
        return self.lo is not None and self.hi is not None and (self.lo > 0 or self.hi < 0)


@dataclass
class SeedMismatch:
    seeds: list[int]
    baseline_seeds: list[int]
    paired: list[int]


@dataclass
class Published:
    """Where a published number (``--reported``) comes from."""

    paper: str
    table: str | None
    setting: str
    source: str


@dataclass
class Entry:
    """One leaderboard line: a defense in a group, its seeds merged (or a published number)."""

    protocol: str | None
    scenario: str
    budget: str
    arch: str
    attack: str | None
    threat_model: str | None
    defense: str
    data_digest: str | None = None
    reinv_version: str | None = None
    config_digest: str = ""
    setting: str = ""  # digest of the config less the defense: entries compared share it
    seeds: list[int] = field(default_factory=list)
    reconstructions: int | None = None
    precision: str = "fp32"
    rows: dict[int, Row] = field(default_factory=dict)  # the merged row of each seed
    config: dict[str, Any] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)  # the metric keys held, declared ones first
    stats: dict[str, Stat] = field(default_factory=dict)
    variant: str = ""
    config_variant: str = ""
    baseline: str | None = None
    baseline_note: str | None = None  # why there is no baseline, when one of another setting exists
    deltas: dict[str, Delta] = field(default_factory=dict)
    seed_mismatch: SeedMismatch | None = None
    pareto: bool = False
    separable: bool | None = None
    not_separable_from: list[str] = field(default_factory=list)
    metric_versions: dict[str, list[Any]] = field(
        default_factory=dict
    )  # plugin -> the versions its rows used
    stale: int = 0  # rows left out: computed against artifacts rebuilt since
    threads: list[int] = field(default_factory=list)  # CPU thread counts its rows were computed with
    reported: Published | None = None
    # issue 29: the most exposed identities (``reinv_bench.results.exposure``): top-decile keys held in
    # ``stats``
    top: list[str] = field(default_factory=list)
    # issue 29: validity checks (``reinv_bench.results.validity``): numbers, and the flags as sentences
    validity: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    # issue 29: ``leaderboard --attack-baseline``: the difference from that attacker on the same targets
    attack_baseline: str | None = None
    attack_deltas: dict[str, Delta] = field(default_factory=dict)
    attack_baseline_note: str | None = None

    @property
    def n(self) -> int:
        return len(self.seeds)

    def mean(self, key: str) -> float | None:
        s = self.stats.get(key)
        return None if s is None else s.mean

    @property
    def mixed_versions(self) -> dict[str, list[Any]]:
        """The metric plugins whose rows in this entry used more than one version."""
        return {m: v for m, v in self.metric_versions.items() if len(v) > 1}

    def to_json(self) -> dict[str, Any]:
        from reinv_bench.views.tables import entry_json

        return entry_json(self)

    # read-only view of the JSON form, for scripts and tests written against the dict entries
    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_json().get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.to_json()


def declared_columns(registry) -> list[Column]:
    """The columns the registered metrics declare: those of the two axes first, then in
    registration order; then those the registered defenses declare (the numbers their training
    reports)."""
    metrics = [e.obj for e in registry.registered("metric")]
    metrics += [e.obj for e in registry.registered("defense") if getattr(e.obj, "columns", ())]
    order = {"utility": 0, "privacy": 1}
    metrics.sort(
        key=lambda m: min((order.get(c.axis, 2) for c in getattr(m, "columns", ()) or ()), default=2)
    )
    seen: dict[str, Column] = {}
    for m in metrics:
        for c in getattr(m, "columns", ()) or ():
            seen.setdefault(c.key, c if c.metric else replace(c, metric=getattr(m, "name", "")))
    return sorted(seen.values(), key=lambda c: order.get(c.axis, 2))  # stable: then registration order


def column_of(key: str, columns: list[Column]) -> Column:
    """The declared column of ``key``, a judge's or a further evaluation model's
    (``reinv_bench.results.judging.column``), or an undeclared one (its name, no unit, no direction)."""
    return next((c for c in columns if c.key == key), None) or judging.column(key, columns) or Column(key)


def present(entries: Iterable[Entry], columns: list[Column]) -> list[Column]:
    """The columns of the metrics the entries hold, declared ones first in declaration order."""
    held = {m for e in entries for m in e.metrics}
    out = [c for c in columns if c.key in held]
    return out + [column_of(k, columns) for k in sorted(held - {c.key for c in out}, key=judging.sort_key)]


def axis(entries: Iterable[Entry], which: str, columns: list[Column]) -> Column | None:
    """The column of the ``utility`` or ``privacy`` axis among those the entries hold."""
    return next((c for c in present(entries, columns) if c.axis == which), None)


def precision(r: Row) -> str:
    """The precision a row was computed at (``--precision``; rows without one: fp32)."""
    return (r.config or {}).get("precision") or "fp32"


def _config(r: Row, *, with_defense: bool = True) -> str:
    """The row's resolved config, less what does not change its numbers: the metric set, and the
    data folder's path where the data digest identifies the data; without the defense: the
    setting every comparison shares."""
    cfg = dict(r.config or {})
    cfg.pop("metrics", None)
    cfg.pop("attacked", None)  # what was attacked, recorded from the outcomes: follows from the rest
    cfg.pop("threads", None)  # the CPU thread counts: said when an entry mixes them, never a group of its own
    overrides = cfg.pop("recipes", None)  # the user's --recipe: already in the resolved recipes
    if cfg.get("precision") == "fp32":  # rows from before --precision say nothing, and were fp32
        cfg.pop("precision")
    if r.data_digest and isinstance(cfg.get("scenario"), dict):
        cfg["scenario"] = {k: v for k, v in cfg["scenario"].items() if k != "data_root"}
    if not with_defense:  # the setting: what the defense does not choose (TL's pretrained init is its own)
        cfg.pop("defense", None)
        if overrides is not None:  # the user's recipes, not the schedule a defense sets (TL, BiDO)
            cfg.pop("target_recipe", None)
            cfg["recipes"] = overrides
        if isinstance(cfg.get("arch"), dict):
            cfg["arch"] = {
                k: v for k, v in cfg["arch"].items() if k != "init"
            }  # user weights: in the arch label
    return json.dumps(cfg, sort_keys=True, default=str)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def rank_key(e: Entry) -> tuple:
    """Entries of one ranking (one table section): same protocol, scenario, budget, arch, attack,
    data, reinv-bench version and precision."""
    return (*(str(getattr(e, k)) for k in (*GROUP, *SEPARATE)), e.precision)


def comparison_key(e: Entry) -> tuple:
    """Entries compared with each other (baseline, Pareto front): one ranking, one setting."""
    return (*rank_key(e), e.setting)


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
    remarks = {m: r.notes[m] for m, r in source.items() if judging.split_key(m) and m in (r.notes or {})}
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
        config_digest=_digest(_config(r0)),
        setting=_digest(_config(r0, with_defense=False)),
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
        groups[(*(r[k] for k in LABELS), *(r.get(k) for k in SEPARATE), _config(r))].append(r)
    entries = [_entry(rs, columns) for rs in groups.values()]
    for r in stale:
        key = (*(r[k] for k in LABELS), *(r.get(k) for k in SEPARATE), _config(r))
        if key in groups:
            next(e for e, k in zip(entries, groups) if k == key).stale += 1
    _variants(entries)
    by_rank: dict[tuple, list[Entry]] = defaultdict(list)
    for e in entries:
        by_rank[rank_key(e)].append(e)
    for es in by_rank.values():
        _compare_rank(es, baseline, columns)
    checks: dict[tuple, list[Row]] = defaultdict(list)
    for r in doubled:
        checks[(*(r[k] for k in LABELS), *(r.get(k) for k in SEPARATE), _config(r))].append(r)
    validity.attach(entries, columns, [_entry(rs, columns) for rs in checks.values()])
    return entries


def _short(value: Any, n: int = 6) -> str:
    return str(value)[:n]


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
                tags.append(f"data {_short(e.data_digest)}")
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
            e.config_variant = f"config {_short(e.config_digest)}" if len(es) > 1 else ""


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


def _compare_rank(es: list[Entry], baseline: str, columns: list[Column]) -> None:
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
                e.baseline_note = f"no {baseline} of its configuration (config {_short(e.config_digest)})"
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
# Filtering and ranking


def filter_rows(rows, **wanted: tuple[str, ...]) -> list[Row]:
    """The rows whose labels are among the wanted ones; specs (attack, defense, arch) compare
    normalised (``spec.normalise``: ``-d "re[p=.5]"`` finds the row stored as ``re[p=0.5]``)."""
    from reinv_bench.registry.spec import matches

    def ok(k: str, v: tuple[str, ...], label: Any) -> bool:
        return not v or (matches(label, v) if k in ("attack", "defense", "arch") and label else label in v)

    return [r for r in rows if all(ok(k, v, r[k]) for k, v in wanted.items())]


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
# Issue 29: attackers compared on the same targets (``leaderboard --attack-baseline``)


def target_setting(e: Entry) -> tuple:
    """What makes entries "the same targets": every label but the attack, the data, version and
    precision, and the resolved config less the attack (and what follows from it). Entries of two
    attackers with the same key attacked the same trained targets, seed for seed."""
    cfg = json.loads(_config(e.rows[e.seeds[0]]))
    for k in ("attack", CONVERGENCE):
        cfg.pop(k, None)
    labels = (e.protocol, e.scenario, e.budget, e.arch, e.defense, e.data_digest, e.reinv_version)
    return (*map(str, labels), e.precision, _digest(json.dumps(cfg, sort_keys=True, default=str)))


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
    from reinv_bench.registry.spec import normalise

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
    from reinv_bench.registry.spec import normalise

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
