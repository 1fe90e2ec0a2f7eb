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
    if e.get("reported"):  # a published number: as published (2 decimals), blank where none was
        return "" if v is None else _fmt_reported(m, v)
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
        if e.get("reported"):
            defense = f"{e['defense']} - reported ({e['source']})"
        row = [e["scenario"] + (f" ({e['budget']})" if e["budget"] != "paper" else "") + _protocol(e)
               + (f" {e['variant']}" if e.get("variant") else ""), e["arch"],
               e["attack"], e["threat_model"], defense, "-" if e.get("reported") else str(e["n"])]
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


def render(entries: list[dict[str, Any]], fmt: str = "md", unmatched: list[dict[str, Any]] | None = None) -> str:
    """Render as md, latex (tabulate), csv or json (numbers, for tools). md and latex carry a
    one-line protocol reference per group's protocol under the table; ``unmatched``: published
    numbers (``--reported``) with no measured group of their setting, as a second table."""
    unmatched = unmatched or []
    if fmt == "json":
        return json.dumps([*entries, *({**r, "matched": False} for r in unmatched)], indent=2)
    if fmt == "csv":
        fields = [*GROUP, "threat_model", "defense", "n", *SEPARATE, "config_digest"]
        for m, _ in present(entries):
            fields += [m, m + "_std"]
        fields += ["d_natural_acc", "d_attack_acc", "pareto"]
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

    headers, rows = display_rows(entries)
    if fmt == "md":
        parts = [tabulate(rows, headers, tablefmt="github"), *gaps(entries), *reported_notes(entries),
                 "\n".join(protocol_lines(entries))] if entries else []
        if unmatched:
            h, r = unmatched_rows(unmatched)
            parts += [UNMATCHED_TITLE, tabulate(r, h, tablefmt="github", disable_numparse=True)]
        return "\n\n".join(p for p in parts if p)
    if fmt == "latex":
        parts = [tabulate(rows, headers, tablefmt="latex"),  # tabulate escapes the cells and headers
                 *(_latex(line) + r"\par" for line in protocol_lines(entries))] if entries else []
        if unmatched:
            h, r = unmatched_rows(unmatched)
            parts += [_latex(UNMATCHED_TITLE), tabulate(r, h, tablefmt="latex", disable_numparse=True)]
        return "\n".join(parts)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def rich_table(entries: list[dict[str, Any]]):
    from rich.table import Table

    headers, rows = display_rows(entries)
    table = Table(title="reinv-bench leaderboard (★ = Pareto-optimal: no defense has higher natural and lower attack accuracy)",
                  caption="\n".join([*gaps(entries), *reported_notes(entries), *protocol_lines(entries)]) or None,
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


def _fmt_reported(m: str, v: float) -> str:
    return f"{v * 100:.2f}" if m in PERCENT or m.endswith("_acc") else f"{v:.6g}"


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
            row = {k: e.get(k) for k in (*GROUP, *SEPARATE, "threat_model", "variant")}
            row.update(defense=e["defense"], reported=True, n=0, seeds=[], pareto=False, config_variant="",
                       d_natural_acc=None, d_attack_acc=None,
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


def unmatched_rows(reported: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    keys = [m for m, _, _ in METRICS if any(m in r["metrics"] for r in reported)]
    keys += sorted({m for r in reported for m in r["metrics"]} - set(keys))
    names = {m: h for m, h, _ in METRICS}
    headers = ["Setting", "Scenario", "Arch", "Attack", "Defense", *(names.get(m, m) for m in keys), "Source"]
    rows = [[r["setting"], r.get("scenario") or "(none here)", r.get("arch") or "", r.get("attack") or "",
             r.get("defense") or "", *(_fmt_reported(m, r["metrics"][m]) if m in r["metrics"] else "" for m in keys),
             f"{r['paper']}{', ' + r['table'] if r.get('table') else ''}: {r['source']}"] for r in reported]
    return headers, rows


def rich_unmatched(reported: list[dict[str, Any]]):
    from rich.table import Table

    headers, rows = unmatched_rows(reported)
    table = Table(title=UNMATCHED_TITLE)
    for h in headers:
        table.add_column(h)
    for r in rows:
        table.add_row(*r)
    return table
