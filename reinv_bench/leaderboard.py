"""Leaderboards of the privacy-utility trade-off: query, aggregate seeds, compare with the
baseline with confidence intervals, mark the Pareto front, render.

Rows are grouped by (protocol, scenario, budget, arch, attack) and ranked within each group by
defense, so numbers of different evaluation protocols (64 px vs 224 px) are never ranked
together. Rows of other data (``data_digest``: embedded vs full MNIST) or another reinv-bench
version are never averaged or compared together either: they form their own groups, shown with
``data <digest>`` / ``v<version>`` after the scenario where a label alone would not tell them
apart. Rows of another ``--precision`` (bf16, tf32) form their own groups as well, always shown
with the precision after the scenario. An entry averages one value per seed: rows of the same
seed and resolved config computed
with other ``--metric`` sets are merged (per metric, the most recent row that has a value), and
rows of the same labels but another resolved config are separate entries (``config <digest>``
after the defense).

The columns are the ones the metrics declare (``api.Column``: key, header, percent or not, which
direction is better for the defense, and which column is the utility or privacy axis); a key no
metric declares is shown under its own name. No metric is named here. Every entry is compared
with the baseline of its group (``baseline``, default ``none``): the difference of each column
with a direction, with a 95% paired bootstrap interval (``reinv_bench.stats``). A defense is
Pareto-optimal in its group when no other defense is at least as good on both axes and strictly
better on one (by the means); it is marked ★, or ☆ when another defense is at least as good on
both axes within the intervals (better by the mean, or a difference whose interval covers 0).
A value that could not be computed shows as n/a, with its reason under the table.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import statistics
from collections import defaultdict
from typing import Any

from reinv_bench import stats
from reinv_bench.api import Column

GROUP = ("protocol", "scenario", "budget", "arch", "attack")
FORMATS = ("table", "md", "csv", "json", "latex")
STAR, HOLLOW = "★", "☆"

# rows that differ in these are never averaged or compared together
SEPARATE = ("data_digest", "reinv_version")
LABELS = (*GROUP, "threat_model", "defense")

_DEFAULT: dict[str | None, list[Column]] = {}


def declared_columns(registry=None) -> list[Column]:
    """The columns the registered metrics declare, in registration order (without a registry:
    those of the installed plugins, as ``REINV_BENCH_LOAD_PLUGINS`` selects them)."""
    if registry is None:
        import os

        from reinv_bench.plugins import ENV_LOAD

        env = os.environ.get(ENV_LOAD)
        if env not in _DEFAULT:
            from reinv_bench.registry import load

            _DEFAULT[env] = declared_columns(load())
        return _DEFAULT[env]
    seen: dict[str, Column] = {}
    entries = getattr(registry, "_entries", {}).get("metric")
    metrics = [e.obj for e in entries.values()] if entries else [e.obj for e in registry.entries("metric")]
    order = {"utility": 0, "privacy": 1}  # the metrics of the two axes first, then registration order
    metrics.sort(key=lambda m: min((order.get(c.axis, 2) for c in getattr(m, "columns", ()) or ()), default=2))
    for m in metrics:
        for c in getattr(m, "columns", ()) or ():
            seen.setdefault(c.key, c)
    return list(seen.values())


def _columns(columns: list[Column] | None) -> list[Column]:
    return declared_columns() if columns is None else list(columns)


def column_of(key: str, columns: list[Column] | None = None) -> Column:
    """The declared column of ``key``, or an undeclared one (its name, no unit, no direction)."""
    return next((c for c in _columns(columns) if c.key == key), None) or Column(key)


def axis(entries: list[dict[str, Any]], which: str, columns: list[Column] | None = None) -> Column | None:
    """The column of the ``utility`` or ``privacy`` axis among those the entries hold."""
    return next((c for c in present(entries, columns) if c.axis == which), None)


def _config_key(r: dict[str, Any]) -> str:
    """The row's resolved config, less what does not change its numbers: the metric set, and the
    data folder's path where the data digest identifies the data."""
    cfg = dict(r.get("config") or {})
    cfg.pop("metrics", None)
    if cfg.get("precision") == "fp32":  # rows from before --precision say nothing, and were fp32
        cfg.pop("precision")
    if r.get("data_digest") and isinstance(cfg.get("scenario"), dict):
        cfg["scenario"] = {k: v for k, v in cfg["scenario"].items() if k != "data_root"}
    return json.dumps(cfg, sort_keys=True, default=str)


def _merge_seed(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the rows of one seed (other metric sets): per metric, the value of the most
    recent row that has one, with that row's per-item outcomes; a metric no row could compute
    keeps the most recent reason."""
    rs = sorted(rs, key=lambda r: str(r.get("created_at") or ""), reverse=True)
    metrics: dict[str, Any] = {}
    notes: dict[str, str] = {}
    source: dict[str, dict[str, Any]] = {}
    for r in rs:
        for m, v in (r.get("metrics") or {}).items():
            if metrics.get(m) is None:
                metrics[m] = v
                source[m] = r
                if v is None and m not in notes and (r.get("notes") or {}).get(m):
                    notes[m] = r["notes"][m]
    with_outcomes = [r for r in rs if r.get("outcomes")]
    outcomes = None
    if with_outcomes:
        first = with_outcomes[0]["outcomes"]
        outcomes = {"class": first.get("class"), "target_conf": first.get("target_conf"),
                    "per_reconstruction": {}, "per_item": {}}
        for m, r in source.items():
            out = r.get("outcomes") or {}
            if m in (out.get("per_reconstruction") or {}) and out.get("class") == outcomes["class"]:
                outcomes["per_reconstruction"][m] = out["per_reconstruction"][m]
            if m in (out.get("per_item") or {}):
                outcomes["per_item"][m] = out["per_item"][m]
    artifacts = next((r["artifacts"] for r in rs if r.get("artifacts")), None)
    return {**rs[0], "metrics": metrics, "notes": {m: n for m, n in notes.items() if metrics.get(m) is None},
            "outcomes": outcomes, "artifacts": artifacts}


def _short(value: Any, n: int = 6) -> str:
    return str(value)[:n]


def precision(r: dict[str, Any]) -> str:
    """The precision a row (or entry) was computed at (``--precision``; rows without one: fp32)."""
    return r.get("precision") or (r.get("_config") or r.get("config") or {}).get("precision") or "fp32"


def comparison_key(e: dict[str, Any]) -> tuple:
    """Entries ranked and compared with each other (baseline, Pareto front): same protocol,
    scenario, budget, arch, attack, data, reinv-bench version and precision."""
    return (*(str(e.get(k)) for k in (*GROUP, *SEPARATE)), precision(e))


def _metric_keys(rows: list[dict[str, Any]], columns: list[Column]) -> list[str]:
    """The metric keys the rows hold: declared ones in declaration order, then the others."""
    held = {m for r in rows for m in (r.get("metrics") or {})}
    declared = [c.key for c in columns if c.key in held]
    return declared + sorted(held - set(declared))


def aggregate(rows: list[dict[str, Any]], baseline: str = "none",
              columns: list[Column] | None = None) -> list[dict[str, Any]]:
    """One entry per (labels, data, version, resolved config): the mean and std over seeds of
    every metric, its interval (``<key>_lo``/``_hi``), the difference from the group's baseline
    with its paired interval (``d_<key>``, ``d_<key>_lo``/``_hi``, ``d_<key>_method``) for every
    column with a direction, and the Pareto marks (``pareto``, ``separable``). ``_rows`` keeps
    the merged row of each seed (plots, grids); it is left out of CSV and JSON."""
    columns = _columns(columns)
    groups: dict[tuple, dict[Any, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["status"] == "ok":
            key = (*(r[k] for k in LABELS), *(r.get(k) for k in SEPARATE), _config_key(r))
            groups[key][r["seed"]].append(r)
    entries = []
    for key, by_seed in groups.items():
        e: dict[str, Any] = dict(zip((*LABELS, *SEPARATE), key))
        e["config_digest"] = hashlib.sha256(key[-1].encode()).hexdigest()[:12]
        merged = {s: _merge_seed(v) for s, v in by_seed.items()}  # one per seed
        rs = list(merged.values())
        e["n"] = len(rs)
        e["seeds"] = sorted(r["seed"] for r in rs)
        counts = {stats.reconstructions(r) for r in rs} - {None}
        e["reconstructions"] = counts.pop() if len(counts) == 1 and all(stats.reconstructions(r) for r in rs) else None
        e["_rows"] = {r["seed"]: r for r in rs}
        e["_config"] = rs[0].get("config") or {}
        e["precision"] = precision(rs[0])
        keys = _metric_keys(rs, columns)
        e["_metrics"] = keys
        for m in keys:
            vals = [r["metrics"].get(m) for r in rs if r["metrics"] and r["metrics"].get(m) is not None]
            e[m] = statistics.fmean(vals) if vals else None
            e[m + "_std"] = statistics.stdev(vals) if len(vals) > 1 else (0.0 if vals else None)
            if not vals:
                reasons = {(r.get("notes") or {}).get(m) for r in rs} - {None}
                e[m + "_note"] = "; ".join(sorted(reasons)) or "not computed"
            elif column_of(m, columns).axis:  # the plots' error bars (plots compute the others')
                iv = stats.interval(e["_rows"], m)
                e[m + "_lo"], e[m + "_hi"] = iv.lo, iv.hi
        entries.append(e)
    _variants(entries)
    by_group: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for e in entries:
        by_group[comparison_key(e)].append(e)
    for es in by_group.values():
        _compare(es, baseline, columns)
    return entries


def _compare(es: list[dict[str, Any]], baseline: str, columns: list[Column]) -> None:
    """Differences from the baseline with intervals, and the Pareto marks, within one group."""
    base = next((e for e in es if e["defense"] == baseline), None)
    for e in es:
        e["baseline"] = baseline if base is not None else None
        for m in e["_metrics"]:
            c = column_of(m, columns)
            if c.better is None and c.axis is None:
                continue
            d = "d_" + m
            e[d] = e[d + "_lo"] = e[d + "_hi"] = None
            if base is None or e.get(m) is None or base.get(m) is None:
                continue
            if e is base:
                e[d] = 0.0
                continue
            iv = stats.paired(e["_rows"], base["_rows"], m)
            e[d], e[d + "_lo"], e[d + "_hi"], e[d + "_method"] = iv.estimate, iv.lo, iv.hi, iv.method
            if iv.note:
                e[d + "_note"] = iv.note
            if iv.seed_mismatch:
                e["seed_mismatch"] = {"seeds": iv.seeds_a, "baseline_seeds": iv.seeds_b, "paired": iv.seeds}
    u, p = axis(es, "utility", columns), axis(es, "privacy", columns)
    for e in es:
        e["pareto"], e["separable"] = False, None
    if u is None or p is None:
        return
    with_both = [e for e in es if e.get(u.key) is not None and e.get(p.key) is not None]

    def better(o, e, c):  # o's value strictly better than e's for the defense, by the means
        return o[c.key] > e[c.key] if c.better != "lower" else o[c.key] < e[c.key]

    def at_least(o, e, c):
        return o[c.key] >= e[c.key] if c.better != "lower" else o[c.key] <= e[c.key]

    for e in with_both:
        e["pareto"] = not any(o is not e and at_least(o, e, u) and at_least(o, e, p)
                              and (better(o, e, u) or better(o, e, p)) for o in with_both)
    for e in with_both:
        if not e["pareto"]:
            continue
        # another defense at least as good on both axes within the intervals: e is not separable from it
        e["separable"] = True
        for o in with_both:
            if o is not e and all(_close(o, e, c, better, at_least) for c in (u, p)):
                e["separable"] = False
                e["not_separable_from"] = [*e.get("not_separable_from", []), o["defense"]]


def _close(o: dict[str, Any], e: dict[str, Any], c: Column, better, at_least) -> bool:
    """Whether ``o`` is at least as good as ``e`` on column ``c`` within the intervals: better by
    the mean, or a paired difference whose interval covers 0 (no interval: the means decide)."""
    if better(o, e, c):
        return True
    lo_o, hi_o, lo_e, hi_e = (x.get(c.key + s) for x in (o, e) for s in ("_lo", "_hi"))
    if None not in (lo_o, hi_o, lo_e, hi_e) and (hi_o < lo_e or hi_e < lo_o):
        return False  # separate 95% intervals: the paired difference is further from 0 still
    iv = stats.paired(o["_rows"], e["_rows"], c.key)
    return at_least(o, e, c) if not iv.has_interval else not iv.excludes_zero


def _variants(entries: list[dict[str, Any]]) -> None:
    """``variant``: what tells an entry apart from others of the same labels, shown after the
    scenario (``data 1a2b3c``, ``v0.2.0``) or the defense (``config 4d5e6f``); "" when nothing."""
    same_group: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for e in entries:
        same_group[tuple(str(e[k]) for k in GROUP)].append(e)
    for es in same_group.values():
        digests = {e.get("data_digest") for e in es}
        versions = {e.get("reinv_version") for e in es}
        for e in es:
            tags = []
            if len(digests) > 1:
                tags.append(f"data {_short(e.get('data_digest'))}")
            if len(versions) > 1:
                tags.append(f"v{e.get('reinv_version')}")
            if precision(e) != "fp32":  # ranked apart from fp32 rows: say why
                tags.append(precision(e))
            e["variant"] = ", ".join(tags)
    same_labels: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for e in entries:
        same_labels[(comparison_key(e), e["threat_model"], e["defense"])].append(e)
    for es in same_labels.values():
        for e in es:
            e["config_variant"] = f"config {_short(e['config_digest'])}" if len(es) > 1 else ""


def filter_rows(rows, **wanted: tuple[str, ...]) -> list[dict[str, Any]]:
    return [r for r in rows if all(not v or r[k] in v for k, v in wanted.items())]


def sortable(entries: list[dict[str, Any]], columns: list[Column] | None = None) -> set[str]:
    keys = {c.key for c in _columns(columns)} | {c.key for c in present(entries, columns)}
    return keys | {"d_" + k for k in keys} | {"defense", "n"}


def sort_entries(entries: list[dict[str, Any]], by: str = "attack_acc",
                 columns: list[Column] | None = None) -> list[dict[str, Any]]:
    """Within each group, best for the defense first: by a column (its declared direction), a
    difference ``d_<key>`` (the same direction), ``defense`` or ``n``."""
    valid = sortable(entries, columns)
    if by not in valid:
        raise ValueError(f"cannot sort by {by!r}; choose one of {', '.join(sorted(valid))}")
    desc = column_of(by.removeprefix("d_"), columns).better == "higher"

    def key(e):
        v = e.get(by)
        missing = v is None
        if isinstance(v, (int, float)) and desc:
            v = -v
        return (*comparison_key(e), missing, v if not missing else 0)

    return sorted(entries, key=key)


def _num(c: Column, v: float, sign: bool = False) -> str:
    if c.percent:
        return f"{v * 100:{'+' if sign else ''}.1f}"
    return f"{v:{'+' if sign else ''}.3g}"


def _fmt(e: dict[str, Any], m: str, columns: list[Column] | None = None) -> str:
    v = e.get(m)
    c = column_of(m, columns)
    if e.get("reported"):  # a published number: as published (2 decimals), blank where none was
        return "" if v is None else _fmt_reported(m, v, columns)
    if v is None:
        return "n/a"
    s = _num(c, v)
    if e["n"] > 1 and e.get(m + "_std") is not None:
        s += f" ± {e[m + '_std'] * 100:.1f}" if c.percent else f" ± {e[m + '_std']:.2g}"
    return s


def delta(e: dict[str, Any], m: str, columns: list[Column] | None = None) -> str:
    """``-4.0 [-11.2, +3.1]``: the difference from the baseline with its interval; `` *`` when
    the interval excludes 0; ``baseline`` on the baseline's own row."""
    d = e.get("d_" + m)
    if d is None or e.get("reported"):
        return ""
    if e.get("baseline") == e["defense"] and not e.get("d_" + m + "_method"):
        return "baseline"
    c = column_of(m, columns)
    lo, hi = e.get("d_" + m + "_lo"), e.get("d_" + m + "_hi")
    if lo is None or hi is None:
        return _num(c, d, True)
    mark = " *" if lo > 0 or hi < 0 else ""
    return f"{_num(c, d, True)} [{_num(c, lo, True)}, {_num(c, hi, True)}]{mark}"


def _delta_header(c: Column) -> str:
    return "Δ " + c.header.split()[0].rstrip(".").lower()


def present(entries: list[dict[str, Any]], columns: list[Column] | None = None) -> list[Column]:
    """The columns of the metrics the entries hold, declared ones first in declaration order."""
    cols = _columns(columns)
    held = {m for e in entries for m in e.get("_metrics", ())} | {c.key for c in cols if any(c.key in e for e in entries)}
    out = [c for c in cols if c.key in held]
    return out + [Column(k) for k in sorted(held - {c.key for c in out})]


def n_label(e: dict[str, Any]) -> str:
    """"seeds x reconstructions" (the seeds alone when the reconstructions are not known)."""
    if e.get("reported"):
        return "-"
    return f"{e['n']} x {e['reconstructions']}" if e.get("reconstructions") else str(e["n"])


def pareto_mark(e: dict[str, Any]) -> str:
    if not e.get("pareto"):
        return ""
    return HOLLOW if e.get("separable") is False else STAR


def display_rows(entries: list[dict[str, Any]], columns: list[Column] | None = None
                 ) -> tuple[list[str], list[list[str]]]:
    cols = present(entries, columns)
    headers = ["Scenario", "Arch", "Attack", "Threat", "Defense", "n"]
    for c in cols:
        headers.append(c.header)
        if c.axis:
            headers.append(_delta_header(c))
    headers.append("Pareto")
    out = []
    for e in entries:
        defense = e["defense"] + (f" ({e['config_variant']})" if e.get("config_variant") else "")
        if e.get("reported"):
            defense = f"{e['defense']} - reported ({e['source']})"
        row = [e["scenario"] + (f" ({e['budget']})" if e["budget"] != "paper" else "") + _protocol(e)
               + (f" {e['variant']}" if e.get("variant") else ""), e["arch"],
               e["attack"], e["threat_model"], defense, n_label(e)]
        for c in cols:
            row.append(_fmt(e, c.key, columns))
            if c.axis:
                row.append(delta(e, c.key, columns))
        row.append(pareto_mark(e))
        out.append(row)
    return headers, out


def _protocol(e: dict[str, Any]) -> str:
    return f" [{e['protocol']}]" if e.get("protocol") else ""


def gaps(entries: list[dict[str, Any]], columns: list[Column] | None = None) -> list[str]:
    """One line per metric that shows n/a somewhere: why it could not be computed."""
    lines = []
    for c in present(entries, columns):
        m = c.key
        reasons = sorted({e[m + "_note"] for e in entries if e.get(m) is None and e.get(m + "_note")})
        if reasons:
            lines.append(f"{c.header} n/a: {' | '.join(reasons)}")
    return lines


def stats_notes(entries: list[dict[str, Any]], columns: list[Column] | None = None) -> list[str]:
    """Under the table: how to read the differences and marks, seed sets that differ, one-seed
    intervals."""
    measured = [e for e in entries if not e.get("reported")]
    cols = [c for c in present(measured, columns) if c.axis]
    if not measured or not cols:
        return []
    lines = []
    bases = sorted({e["baseline"] for e in measured if e.get("baseline")})
    if bases:
        lines.append(f"Δ: difference from the baseline ({', '.join(bases)}) of the same group, with its 95% CI "
                     "(paired bootstrap over seeds and attacked classes, docs/statistics.md); * = the interval "
                     "excludes 0. n = seeds x reconstructions.")
    missing = sorted({" / ".join(str(e[k]) for k in ("scenario", "arch", "attack")) for e in measured
                      if not e.get("baseline")})
    if missing:
        lines.append(f"No baseline in: {'; '.join(missing)} (choose one with --baseline).")
    if any(e.get("pareto") and e.get("separable") is False for e in measured):
        lines.append(f"{STAR} = Pareto-optimal by the means; {HOLLOW} = Pareto-optimal by the means but another "
                     "defense is at least as good on both axes within the intervals (not separable).")
    for e in measured:
        mm = e.get("seed_mismatch")
        if mm:
            lines.append(f"{e['defense']} ({e['attack']}, {e['arch']}): seeds {_seeds(mm['seeds'])} vs baseline seeds "
                         f"{_seeds(mm['baseline_seeds'])}: paired on the common seeds {_seeds(mm['paired']) or '(none)'}.")
    if any(e.get("baseline") and e["baseline"] != e["defense"] and len(_paired_seeds(e)) == 1 for e in measured):
        lines.append(ONE_SEED)
    return lines


ONE_SEED = ("With one seed the intervals cover only the sampling of reconstructions (and test images), not the "
            "variation between trained targets; --seeds 3 adds it.")


def _seeds(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds))


def _paired_seeds(e: dict[str, Any]) -> list[int]:
    mm = e.get("seed_mismatch")
    return mm["paired"] if mm else e["seeds"]


def verdicts(entries: list[dict[str, Any]], columns: list[Column] | None = None) -> list[str]:
    """One plain sentence per defense on the privacy axis against its group's baseline, e.g.
    "re vs none: attack accuracy -4.0 points (95% CI -11.2 to +3.1, 1 seed x 50 reconstructions):
    not distinguishable from noise; --seeds 3 narrows it." (The one-seed caveat is in ``stats_notes``.)"""
    measured = [e for e in entries if not e.get("reported")]
    groups = {comparison_key(e) for e in measured}
    lines = []
    for e in measured:
        p = axis([e], "privacy", columns)
        base = e.get("baseline")
        if p is None or not base or base == e["defense"] or e.get("d_" + p.key) is None:
            continue
        where = f" ({e['attack']}, {e['arch']}, {e['scenario']} {e['budget']})" if len(groups) > 1 else ""
        seeds = _paired_seeds(e)
        n = f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}"
        if e.get("reconstructions"):
            n += f" x {e['reconstructions']} reconstructions"
        name = p.header.replace("%", "").replace(" acc", " accuracy").strip().lower()
        unit = " points" if p.percent else ""
        d, lo, hi = e["d_" + p.key], e.get("d_" + p.key + "_lo"), e.get("d_" + p.key + "_hi")
        head = f"{e['defense']} vs {base}{where}: {name} {_num(p, d, True)}{unit}"
        if lo is None or hi is None:
            why = e.get("d_" + p.key + "_note") or "no interval"
            lines.append(f"{head} ({n}): no interval ({why}); rerun to store per-reconstruction outcomes, or "
                         "--seeds 3.")
            continue
        if lo > 0 or hi < 0:
            verdict = "a real difference (the interval excludes 0)"
        elif len(seeds) < 3:
            verdict = "not distinguishable from noise; --seeds 3 narrows it"
        else:
            verdict = "not distinguishable from noise; more seeds narrow it"
        mm = e.get("seed_mismatch")
        flag = (f" [seeds differ: {e['defense']} has {_seeds(mm['seeds'])}, {base} has {_seeds(mm['baseline_seeds'])}; "
                f"paired on {_seeds(mm['paired'])}]") if mm else ""
        lines.append(f"{head} (95% CI {_num(p, lo, True)} to {_num(p, hi, True)}, {n}){flag}: {verdict}.")
    return lines


def _public(e: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in e.items() if not k.startswith("_")}


def render(entries: list[dict[str, Any]], fmt: str = "md", unmatched: list[dict[str, Any]] | None = None,
           columns: list[Column] | None = None) -> str:
    """Render as md, latex (tabulate), csv or json (numbers, for tools). md and latex carry a
    one-line protocol reference per group's protocol under the table; ``unmatched``: published
    numbers (``--reported``) with no measured group of their setting, as a second table."""
    unmatched = unmatched or []
    if fmt == "json":
        return json.dumps([*map(_public, entries), *({**r, "matched": False} for r in unmatched)], indent=2,
                          default=str)
    if fmt == "csv":
        fields = [*GROUP, "threat_model", "defense", "n", "reconstructions", *SEPARATE, "precision", "config_digest"]
        for c in present(entries, columns):
            m = c.key
            fields += [m, m + "_std", m + "_lo", m + "_hi"]
            if c.better or c.axis:
                fields += ["d_" + m, "d_" + m + "_lo", "d_" + m + "_hi"]
        fields += ["baseline", "pareto", "separable"]
        if unmatched or any(e.get("reported") for e in entries):
            fields += ["reported", "source", "setting"]
            extra = sorted({m for r in unmatched for m in r["metrics"]} - set(fields))
            fields += extra
            entries = [*entries, *({**r, **r["metrics"]} for r in unmatched)]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for e in entries:
            w.writerow({k: ("" if e.get(k) is None else e.get(k)) for k in fields})
        return buf.getvalue()
    from tabulate import tabulate

    headers, rows = display_rows(entries, columns)
    if fmt == "md":
        parts = [tabulate(rows, headers, tablefmt="github"), *gaps(entries, columns),
                 *stats_notes(entries, columns), *reported_notes(entries),
                 "\n".join(protocol_lines(entries))] if entries else []
        if unmatched:
            h, r = unmatched_rows(unmatched, columns)
            parts += [UNMATCHED_TITLE, tabulate(r, h, tablefmt="github", disable_numparse=True)]
        return "\n\n".join(p for p in parts if p)
    if fmt == "latex":
        parts = [tabulate(rows, headers, tablefmt="latex"),  # tabulate escapes the cells and headers
                 *(_latex(line) + r"\par" for line in [*stats_notes(entries, columns), *protocol_lines(entries)])
                 ] if entries else []
        if unmatched:
            h, r = unmatched_rows(unmatched, columns)
            parts += [_latex(UNMATCHED_TITLE), tabulate(r, h, tablefmt="latex", disable_numparse=True)]
        return "\n".join(parts)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def rich_table(entries: list[dict[str, Any]], columns: list[Column] | None = None):
    from rich.table import Table

    headers, rows = display_rows(entries, columns)
    table = Table(title=f"reinv-bench leaderboard ({STAR} = Pareto-optimal: no defense has higher natural and lower "
                        "attack accuracy)",
                  caption="\n".join([*gaps(entries, columns), *stats_notes(entries, columns), *reported_notes(entries),
                                     *protocol_lines(entries)]) or None,
                  caption_justify="left")
    for h in headers:
        table.add_column(h, justify="right" if h not in ("Scenario", "Arch", "Attack", "Threat", "Defense") else "left")
    last = None
    for e, r in zip(entries, rows):
        group = comparison_key(e)
        if last is not None and group != last:
            table.add_section()
        last = group
        table.add_row(*r, style="bold" if e["pareto"] else "italic" if e.get("reported") else None)
    return table


# --------------------------------------------------------------------------------------------
# Protocol references and published numbers (``--reported``)


def protocol_lines(entries: list[dict[str, Any]]) -> list[str]:
    """One line per (protocol, scenario) of the entries: where its protocol card is."""
    seen = dict.fromkeys((e.get("protocol") or "-", e["scenario"]) for e in entries if e.get("scenario"))
    return [f"Protocol {p}: see `reinv-bench protocol {s}`" for p, s in seen]


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "`": ""}


def _latex(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def _fmt_reported(m: str, v: float, columns: list[Column] | None = None) -> str:
    return f"{v * 100:.2f}" if column_of(m, columns).percent or m.endswith("_acc") else f"{v:.6g}"


def _arch_base(label: str | None) -> str | None:
    return None if label is None else label.split("[")[0]


def _matches(r: dict[str, Any], e: dict[str, Any]) -> bool:
    """A published number belongs beside a measured entry of the same setting: paper budget, same
    scenario, architecture (any initialisation), defense and (when it has one) attack."""
    return (not e.get("reported") and e.get("budget") == "paper" and r.get("scenario") == e.get("scenario")
            and _arch_base(r.get("arch")) == _arch_base(e.get("arch")) and r.get("defense") == e.get("defense")
            and (r.get("attack") is None or r.get("attack") == e.get("attack")))


def attach_reported(entries: list[dict[str, Any]], reported: list[dict[str, Any]]
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(entries with each published number right after the measured entry of its setting, in every
    group that has one; the published numbers no group matches)."""
    after: dict[int, list[dict[str, Any]]] = defaultdict(list)
    unmatched = []
    for r in reported:
        hits: dict[tuple, dict[str, Any]] = {}
        for e in entries:
            if _matches(r, e):
                hits.setdefault(comparison_key(e), e)
        if not hits:
            unmatched.append(r)
        for e in hits.values():
            row = {k: e.get(k) for k in (*GROUP, *SEPARATE, "threat_model", "variant", "precision")}
            row.update(defense=e["defense"], reported=True, n=0, seeds=[], pareto=False, config_variant="",
                       _metrics=list(r["metrics"]),
                       **{k: r[k] for k in ("paper", "table", "setting", "source")})
            for m, v in r["metrics"].items():
                row[m], row[m + "_std"] = v, None
            after[id(e)].append(row)
    out = []
    for e in entries:
        out += [e, *after.get(id(e), [])]
    return out, unmatched


def reported_notes(entries: list[dict[str, Any]]) -> list[str]:
    """Under the table: what each published row is (paper, table, setting), once each."""
    notes = dict.fromkeys(f"reported ({e['source']}): {e['paper']}{', ' + e['table'] if e.get('table') else ''}"
                          f" - {e['setting']}" for e in entries if e.get("reported"))
    return list(notes)


UNMATCHED_TITLE = ("Published numbers without a measured group of the same setting here (paper budget; same "
                   "scenario, architecture, attack and defense):")


def unmatched_rows(reported: list[dict[str, Any]], columns: list[Column] | None = None
                   ) -> tuple[list[str], list[list[str]]]:
    keys = [c.key for c in _columns(columns) if any(c.key in r["metrics"] for r in reported)]
    keys += sorted({m for r in reported for m in r["metrics"]} - set(keys))
    headers = ["Setting", "Scenario", "Arch", "Attack", "Defense", *(column_of(m, columns).header for m in keys),
               "Source"]
    rows = [[r["setting"], r.get("scenario") or "(none here)", r.get("arch") or "", r.get("attack") or "",
             r.get("defense") or "",
             *(_fmt_reported(m, r["metrics"][m], columns) if m in r["metrics"] else "" for m in keys),
             f"{r['paper']}{', ' + r['table'] if r.get('table') else ''}: {r['source']}"] for r in reported]
    return headers, rows


def rich_unmatched(reported: list[dict[str, Any]], columns: list[Column] | None = None):
    from rich.table import Table

    headers, rows = unmatched_rows(reported, columns)
    table = Table(title=UNMATCHED_TITLE)
    for h in headers:
        table.add_column(h)
    for r in rows:
        table.add_row(*r)
    return table
