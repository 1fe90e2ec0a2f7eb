"""Leaderboards of the privacy-utility trade-off: query, aggregate seeds, compare with the
undefended baseline, mark the Pareto front, render.

Rows are grouped by (scenario, budget, arch, attack) and ranked within each group by defense. A
defense is Pareto-optimal in its group when no other defense has both higher-or-equal natural
accuracy and lower-or-equal attack accuracy (one of them strictly).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from typing import Any

# (key, header, higher_is_better)
METRICS = (
    ("natural_acc", "Nat. acc %", True),
    ("attack_acc", "Attack acc %", False),
    ("attack_acc5", "Top-5 %", False),
    ("knn_dist", "KNN dist", True),
)
PERCENT = {"natural_acc", "attack_acc", "attack_acc5"}
GROUP = ("scenario", "budget", "arch", "attack")
FORMATS = ("table", "md", "csv", "json", "latex")


def aggregate(rows: list[dict[str, Any]], baseline: str = "none") -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["status"] == "ok":
            groups[tuple(r[k] for k in (*GROUP, "threat_model", "defense"))].append(r)
    entries = []
    for key, rs in groups.items():
        e: dict[str, Any] = dict(zip((*GROUP, "threat_model", "defense"), key))
        e["n"] = len(rs)
        e["seeds"] = sorted(r["seed"] for r in rs)
        for m, _, _ in METRICS:
            vals = [r["metrics"].get(m) for r in rs if r["metrics"] and r["metrics"].get(m) is not None]
            e[m] = statistics.fmean(vals) if vals else None
            e[m + "_std"] = statistics.stdev(vals) if len(vals) > 1 else (0.0 if vals else None)
            if not vals:
                reasons = {(r.get("notes") or {}).get(m) for r in rs} - {None}
                e[m + "_note"] = "; ".join(sorted(reasons)) or "not computed"
        entries.append(e)
    by_group: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for e in entries:
        by_group[tuple(e[k] for k in GROUP)].append(e)
    for es in by_group.values():
        base = next((e for e in es if e["defense"] == baseline), None)
        for e in es:
            for m in ("natural_acc", "attack_acc"):
                ok = base is not None and e[m] is not None and base[m] is not None
                e["d_" + m] = e[m] - base[m] if ok else None
            e["pareto"] = e["natural_acc"] is not None and e["attack_acc"] is not None and not any(
                o is not e and o["natural_acc"] is not None and o["attack_acc"] is not None
                and o["natural_acc"] >= e["natural_acc"] and o["attack_acc"] <= e["attack_acc"]
                and (o["natural_acc"] > e["natural_acc"] or o["attack_acc"] < e["attack_acc"])
                for o in es
            )
    return entries


def filter_rows(rows, **wanted: tuple[str, ...]) -> list[dict[str, Any]]:
    return [r for r in rows if all(not v or r[k] in v for k, v in wanted.items())]


def sort_entries(entries: list[dict[str, Any]], by: str = "attack_acc") -> list[dict[str, Any]]:
    valid = {m for m, _, _ in METRICS} | {"defense", "n", "d_natural_acc", "d_attack_acc"}
    if by not in valid:
        raise ValueError(f"cannot sort by {by!r}; choose one of {', '.join(sorted(valid))}")
    desc = by in ("natural_acc", "knn_dist", "d_natural_acc")

    def key(e):
        v = e.get(by)
        missing = v is None
        if isinstance(v, (int, float)) and desc:
            v = -v
        return (*(str(e[k]) for k in GROUP), missing, v if not missing else 0)

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


def display_rows(entries: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = ["Scenario", "Arch", "Attack", "Threat", "Defense", "n", "Nat. acc %", "Δ nat", "Attack acc %",
               "Δ attack", "Top-5 %", "KNN dist", "Pareto"]
    out = []
    for e in entries:
        out.append([
            e["scenario"] + (f" ({e['budget']})" if e["budget"] != "paper" else ""), e["arch"], e["attack"],
            e["threat_model"], e["defense"], str(e["n"]), _fmt(e, "natural_acc"), _delta(e["d_natural_acc"]),
            _fmt(e, "attack_acc"), _delta(e["d_attack_acc"]), _fmt(e, "attack_acc5"), _fmt(e, "knn_dist"),
            "★" if e["pareto"] else "",
        ])
    return headers, out


def render(entries: list[dict[str, Any]], fmt: str = "md") -> str:
    """Render as md, latex (tabulate), csv or json (numbers, for tools)."""
    if fmt == "json":
        return json.dumps(entries, indent=2)
    if fmt == "csv":
        fields = [*GROUP, "threat_model", "defense", "n"]
        for m, _, _ in METRICS:
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
        return tabulate(rows, headers, tablefmt="github")
    if fmt == "latex":
        return tabulate(rows, [h.replace("%", r"\%") for h in headers], tablefmt="latex")
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def rich_table(entries: list[dict[str, Any]]):
    from rich.table import Table

    headers, rows = display_rows(entries)
    table = Table(title="reinv-bench leaderboard (★ = Pareto-optimal: no defense has higher natural and lower attack accuracy)")
    for h in headers:
        table.add_column(h, justify="right" if h not in ("Scenario", "Arch", "Attack", "Threat", "Defense") else "left")
    last = None
    for e, r in zip(entries, rows):
        group = tuple(e[k] for k in GROUP)
        if last is not None and group != last:
            table.add_section()
        last = group
        table.add_row(*r, style="bold" if e["pareto"] else None)
    return table
