"""Leaderboards of the privacy-utility trade-off: query, aggregate seeds, compare with the
undefended baseline, mark the Pareto front, render.

Rows are grouped by (protocol, scenario, budget, arch, attack) and ranked within each group by
defense, so numbers of different evaluation protocols (64 px vs 224 px) are never ranked
together. Rows of other data (``data_digest``: embedded vs full MNIST) or another reinv-bench
version are never averaged or compared together either: they form their own groups, shown with
``data <digest>`` / ``v<version>`` after the scenario where a label alone would not tell them
apart. An entry averages one value per seed: rows of the same seed and resolved config computed
with other ``--metric`` sets are merged (per metric, the most recent row that has a value), and
rows of the same labels but another resolved config are separate entries (``config <digest>``
after the defense). A defense is Pareto-optimal in its group when no other defense has both
higher-or-equal natural accuracy and lower-or-equal attack accuracy (one of them strictly).
Metric columns appear for the metrics the rows hold; a value that could not be computed shows
as n/a, with its reason under the table.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import statistics
from collections import defaultdict
from typing import Any

# (key, header, higher is better for the defense)
METRICS = (
    ("natural_acc", "Nat. acc %", True),
    ("attack_acc", "Attack acc %", False),
    ("attack_acc5", "Top-5 %", False),
    ("knn_dist", "KNN dist", True),
    ("eval_dist", "δ_eval", True),
    ("facenet_dist", "δ_face", True),
    ("fid", "FID", True),
)
PERCENT = {"natural_acc", "attack_acc", "attack_acc5"}
GROUP = ("protocol", "scenario", "budget", "arch", "attack")
FORMATS = ("table", "md", "csv", "json", "latex")


# rows that differ in these are never averaged or compared together
SEPARATE = ("data_digest", "reinv_version")
LABELS = (*GROUP, "threat_model", "defense")


def _config_key(r: dict[str, Any]) -> str:
    """The row's resolved config, less what does not change its numbers: the metric set, and the
    data folder's path where the data digest identifies the data."""
    cfg = dict(r.get("config") or {})
    cfg.pop("metrics", None)
    if r.get("data_digest") and isinstance(cfg.get("scenario"), dict):
        cfg["scenario"] = {k: v for k, v in cfg["scenario"].items() if k != "data_root"}
    return json.dumps(cfg, sort_keys=True, default=str)


def _merge_seed(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the rows of one seed (other metric sets): per metric, the value of the most
    recent row that has one; a metric no row could compute keeps the most recent reason."""
    rs = sorted(rs, key=lambda r: str(r.get("created_at") or ""), reverse=True)
    metrics: dict[str, Any] = {}
    notes: dict[str, str] = {}
    for r in rs:
        for m, v in (r.get("metrics") or {}).items():
            if metrics.get(m) is None:
                metrics[m] = v
                if v is None and m not in notes and (r.get("notes") or {}).get(m):
                    notes[m] = r["notes"][m]
    return {**rs[0], "metrics": metrics, "notes": {m: n for m, n in notes.items() if metrics.get(m) is None}}


def _short(value: Any, n: int = 6) -> str:
    return str(value)[:n]


def comparison_key(e: dict[str, Any]) -> tuple:
    """Entries ranked and compared with each other (baseline, Pareto front): same protocol,
    scenario, budget, arch, attack, data and reinv-bench version."""
    return tuple(str(e.get(k)) for k in (*GROUP, *SEPARATE))


def aggregate(rows: list[dict[str, Any]], baseline: str = "none") -> list[dict[str, Any]]:
    groups: dict[tuple, dict[Any, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["status"] == "ok":
            key = (*(r[k] for k in LABELS), *(r.get(k) for k in SEPARATE), _config_key(r))
            groups[key][r["seed"]].append(r)
    entries = []
    for key, by_seed in groups.items():
        e: dict[str, Any] = dict(zip((*LABELS, *SEPARATE), key))
        e["config_digest"] = hashlib.sha256(key[-1].encode()).hexdigest()[:12]
        rs = [_merge_seed(v) for v in by_seed.values()]  # one per seed
        e["n"] = len(rs)
        e["seeds"] = sorted(r["seed"] for r in rs)
        for m, _, _ in METRICS:
            if not any(m in (r["metrics"] or {}) for r in rs):
                continue  # not a metric of these rows: no column
            vals = [r["metrics"].get(m) for r in rs if r["metrics"] and r["metrics"].get(m) is not None]
            e[m] = statistics.fmean(vals) if vals else None
            e[m + "_std"] = statistics.stdev(vals) if len(vals) > 1 else (0.0 if vals else None)
            if not vals:
                reasons = {(r.get("notes") or {}).get(m) for r in rs} - {None}
                e[m + "_note"] = "; ".join(sorted(reasons)) or "not computed"
        entries.append(e)
    _variants(entries)
    by_group: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for e in entries:
        by_group[comparison_key(e)].append(e)
    for es in by_group.values():
        base = next((e for e in es if e["defense"] == baseline), None)
        for e in es:
            for m in ("natural_acc", "attack_acc"):
                ok = base is not None and e.get(m) is not None and base.get(m) is not None
                e["d_" + m] = e[m] - base[m] if ok else None
            e["pareto"] = e.get("natural_acc") is not None and e.get("attack_acc") is not None and not any(
                o is not e and o.get("natural_acc") is not None and o.get("attack_acc") is not None
                and o["natural_acc"] >= e["natural_acc"] and o["attack_acc"] <= e["attack_acc"]
                and (o["natural_acc"] > e["natural_acc"] or o["attack_acc"] < e["attack_acc"])
                for o in es
            )
    return entries


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
            e["variant"] = ", ".join(tags)
    same_labels: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for e in entries:
        same_labels[(comparison_key(e), e["threat_model"], e["defense"])].append(e)
    for es in same_labels.values():
        for e in es:
            e["config_variant"] = f"config {_short(e['config_digest'])}" if len(es) > 1 else ""


def filter_rows(rows, **wanted: tuple[str, ...]) -> list[dict[str, Any]]:
    return [r for r in rows if all(not v or r[k] in v for k, v in wanted.items())]


def sort_entries(entries: list[dict[str, Any]], by: str = "attack_acc") -> list[dict[str, Any]]:
    valid = {m for m, _, _ in METRICS} | {"defense", "n", "d_natural_acc", "d_attack_acc"}
    if by not in valid:
        raise ValueError(f"cannot sort by {by!r}; choose one of {', '.join(sorted(valid))}")
    desc = by == "d_natural_acc" or any(m == by and better for m, _, better in METRICS)

    def key(e):
        v = e.get(by)
        missing = v is None
        if isinstance(v, (int, float)) and desc:
            v = -v
        return (*comparison_key(e), missing, v if not missing else 0)

    return sorted(entries, key=key)


def _fmt(e: dict[str, Any], m: str) -> str:
    v = e.get(m)
    if v is None:
        return "n/a"
    k = 100.0 if m in PERCENT else 1.0
    s = f"{v * k:.1f}" if m in PERCENT else f"{v:.3g}"
    if e["n"] > 1 and e.get(m + "_std") is not None:
        s += f" ± {e[m + '_std'] * k:.1f}" if m in PERCENT else f" ± {e[m + '_std']:.2g}"
    return s


def _delta(v: float | None) -> str:
    return "" if v is None else f"{v * 100:+.1f}"


def present(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(key, header) of the metrics the entries hold, in display order."""
    return [(m, h) for m, h, _ in METRICS if any(m in e for e in entries)]


def display_rows(entries: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    cols = present(entries)
    headers = ["Scenario", "Arch", "Attack", "Threat", "Defense", "n"]
    for m, h in cols:
        headers.append(h)
        if m in ("natural_acc", "attack_acc"):
            headers.append("Δ nat" if m == "natural_acc" else "Δ attack")
    headers.append("Pareto")
    out = []
    for e in entries:
        defense = e["defense"] + (f" ({e['config_variant']})" if e.get("config_variant") else "")
        row = [e["scenario"] + (f" ({e['budget']})" if e["budget"] != "paper" else "") + _protocol(e)
               + (f" {e['variant']}" if e.get("variant") else ""), e["arch"],
               e["attack"], e["threat_model"], defense, str(e["n"])]
        for m, _ in cols:
            row.append(_fmt(e, m))
            if m in ("natural_acc", "attack_acc"):
                row.append(_delta(e["d_" + m]))
        row.append("★" if e["pareto"] else "")
        out.append(row)
    return headers, out


def _protocol(e: dict[str, Any]) -> str:
    return f" [{e['protocol']}]" if e.get("protocol") else ""


def gaps(entries: list[dict[str, Any]]) -> list[str]:
    """One line per metric that shows n/a somewhere: why it could not be computed."""
    lines = []
    for m, h in present(entries):
        reasons = sorted({e[m + "_note"] for e in entries if e.get(m) is None and e.get(m + "_note")})
        if reasons:
            lines.append(f"{h} n/a: {' | '.join(reasons)}")
    return lines


def render(entries: list[dict[str, Any]], fmt: str = "md") -> str:
    """Render as md, latex (tabulate), csv or json (numbers, for tools)."""
    if fmt == "json":
        return json.dumps(entries, indent=2)
    if fmt == "csv":
        fields = [*GROUP, "threat_model", "defense", "n", *SEPARATE, "config_digest"]
        for m, _ in present(entries):
            fields += [m, m + "_std"]
        fields += ["d_natural_acc", "d_attack_acc", "pareto"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for e in entries:
            w.writerow({k: ("" if e.get(k) is None else e.get(k)) for k in fields})
        return buf.getvalue()
    from tabulate import tabulate

    headers, rows = display_rows(entries)
    if fmt == "md":
        return "\n\n".join([tabulate(rows, headers, tablefmt="github"), *gaps(entries)])
    if fmt == "latex":
        return tabulate(rows, [h.replace("%", r"\%") for h in headers], tablefmt="latex")
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def rich_table(entries: list[dict[str, Any]]):
    from rich.table import Table

    headers, rows = display_rows(entries)
    table = Table(title="reinv-bench leaderboard (★ = Pareto-optimal: no defense has higher natural and lower attack accuracy)",
                  caption="\n".join(gaps(entries)) or None, caption_justify="left")
    for h in headers:
        table.add_column(h, justify="right" if h not in ("Scenario", "Arch", "Attack", "Threat", "Defense") else "left")
    last = None
    for e, r in zip(entries, rows):
        group = comparison_key(e)
        if last is not None and group != last:
            table.add_section()
        last = group
        table.add_row(*r, style="bold" if e["pareto"] else None)
    return table
