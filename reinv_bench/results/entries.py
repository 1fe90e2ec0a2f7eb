"""Typed leaderboard entries (``aggregate`` builds them from stored rows): an entry's stats over its
seeds, its differences from the baseline, where a published number comes from; the columns the
metrics declare; and an entry's JSON form (``--format json``, and what ``Entry[key]`` reads).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from reinv_bench.contract.metric import Column
from reinv_bench.results import judging
from reinv_bench.results.store import Row

GROUP = ("protocol", "scenario", "budget", "arch", "attack")
SEPARATE = ("data_digest", "reinv_version")  # rows that differ in these are never averaged or compared
LABELS = (*GROUP, "threat_model", "defense")


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


# --------------------------------------------------------------------------------------------
# JSON form of an entry (also what ``Entry[key]`` reads)


def _metric_json(e: Entry, m: str) -> dict[str, Any]:
    st = e.stats[m]
    out: dict[str, Any] = {m: st.mean, m + "_std": st.std}
    if st.note is not None:
        out[m + "_note"] = st.note
    elif st.has_interval:
        out[m + "_lo"], out[m + "_hi"] = st.lo, st.hi
    return out


def _deltas_json(e: Entry) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m, d in e.deltas.items():
        out["d_" + m], out["d_" + m + "_lo"], out["d_" + m + "_hi"] = d.estimate, d.lo, d.hi
        if d.method is not None:
            out["d_" + m + "_method"] = d.method
        if d.note:
            out["d_" + m + "_note"] = d.note
        if d.mismatch and e.seed_mismatch is not None:
            mm = e.seed_mismatch
            out["seed_mismatch"] = {
                "seeds": mm.seeds,
                "baseline_seeds": mm.baseline_seeds,
                "paired": mm.paired,
            }
    return out


def entry_json(e: Entry) -> dict[str, Any]:
    """The entry as ``--format json`` writes it (the keys of earlier versions, in their order;
    keys added since appear only where they say something)."""
    if e.reported is not None:
        return published_json(e)
    out: dict[str, Any] = {k: getattr(e, k) for k in (*GROUP, "threat_model", "defense", *SEPARATE)}
    out.update(
        config_digest=e.config_digest,
        n=e.n,
        seeds=e.seeds,
        reconstructions=e.reconstructions,
        precision=e.precision,
    )
    for m in e.metrics:
        out.update(_metric_json(e, m))
    out.update(variant=e.variant, config_variant=e.config_variant, baseline=e.baseline)
    out.update(_deltas_json(e))
    out.update(pareto=e.pareto, separable=e.separable)
    if e.not_separable_from:
        out["not_separable_from"] = list(e.not_separable_from)
    if e.baseline_note:
        out["baseline_note"] = e.baseline_note
    if e.mixed_versions:
        out["metric_versions_mixed"] = e.mixed_versions
    if e.stale:
        out["stale_rows"] = e.stale
    if e.threads:
        out["threads"] = list(e.threads)
    out.update(issue29_json(e))
    return out


def issue29_json(e: Entry) -> dict[str, Any]:
    """Issue 29's keys of an entry, where they say something: the top-decile stats
    (``attack_acc_top10``, ``_lo``, ``_hi``, ``_note``), the difference from ``--attack-baseline``
    (``attack_baseline``, ``da_<key>``, ``_lo``, ``_hi``, ``_method``, ``_note``), the validity
    numbers (``validity``) and flags (``validity_flags``)."""
    out: dict[str, Any] = {}
    for k in e.top:
        st = e.stats[k]
        out[k] = st.mean
        if st.note is not None:
            out[k + "_note"] = st.note
        else:
            out[k + "_lo"], out[k + "_hi"] = st.lo, st.hi
    if e.attack_baseline is not None:
        out["attack_baseline"] = e.attack_baseline
        for m, d in e.attack_deltas.items():
            out["da_" + m], out["da_" + m + "_lo"], out["da_" + m + "_hi"] = d.estimate, d.lo, d.hi
            if d.method is not None:
                out["da_" + m + "_method"] = d.method
            if d.note:
                out["da_" + m + "_note"] = d.note
    elif e.attack_baseline_note:
        out["attack_baseline_note"] = e.attack_baseline_note
    if e.validity:
        out["validity"] = e.validity
    if e.flags:
        out["validity_flags"] = list(e.flags)
    return out


def published_json(e: Entry) -> dict[str, Any]:
    """A published entry as ``--format json`` writes it."""
    out: dict[str, Any] = {
        k: getattr(e, k) for k in (*GROUP, *SEPARATE, "threat_model", "variant", "precision")
    }
    p = e.reported
    out.update(
        defense=e.defense,
        reported=True,
        n=0,
        seeds=[],
        pareto=False,
        config_variant="",
        paper=p.paper,
        table=p.table,
        setting=p.setting,
        source=p.source,
    )
    for m in e.metrics:
        out[m], out[m + "_std"] = e.stats[m].mean, None
    return out
