"""``leaderboard --view defenses``: one line per defense, as RobustBench reads (issue 29 item 8).

Per board (protocol, scenario, budget, arch, data, version, precision: what one ranking shares,
less the attack) and defense, on the privacy axis the metrics declare (attack accuracy), each
value with its 95% interval:

    natural   the utility axis (from the defense's first attack entry)
    standard  one column per attack that is neither adaptive (``adaptive+...``) nor an ensemble
    adaptive  one column per ``adaptive+`` attack
    worst     the worst-case ensemble (``auto``), and ``worst - null``: its difference from the
              permuted-identity null (``reinv_bench.results.ensemble``), paired by seed and class
    judged    the first judge-confirmed column of the ensemble (else of the strongest attack)
    reported  the published number of the defense (``--reported``), where one matches
    checked   "yes" only when ``checked`` finds an adaptive row, the validity checks and a
              convergence check among the defense's rows; else what is missing
    broken by the member that supplied most successful kept candidates of the ensemble (its rows'
              ``broken_by`` note); without an ensemble, the attack with the highest mean
    flags     the validity flags of its entries (``Entry.flags`` where the checks attach them),
              and every attack that failed the planted-canary unit test on the undefended target

The default leaderboard is untouched: this is a view of its own.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from rich.markup import escape
from rich.table import Table
from tabulate import tabulate

from reinv_bench.contract.metric import Column
from reinv_bench.results import ensemble, judging, stats
from reinv_bench.results.entries import GROUP, SEPARATE, Entry, axis, column_of
from reinv_bench.results.outcomes import Outcomes
from reinv_bench.results.validity import BROKEN

ADAPTIVE = "adaptive+"
# what ``checked`` looks for, as the validity checks store them (reinv_bench.results.validity, issue 29
# item 4):
VALIDITY_NOTE = "validity"  # row.notes["validity"]: the target's evaluation-validity checks
CONVERGENCE_CONFIG = "convergence"  # row.config["convergence"]: a row of the same attack at twice its budget
CANARIES = " canaries"  # the protocol label of canary targets ends "..., K canaries"


@dataclass
class Line:
    """One defense of one board."""

    board: tuple
    defense: str
    natural: str = ""
    standard: dict[str, str] = field(default_factory=dict)
    adaptive: dict[str, str] = field(default_factory=dict)
    worst: str = ""
    worst_minus_null: str = ""
    judged: str = ""
    reported: str = ""
    checked: bool = False
    missing: list[str] = field(default_factory=list)
    broken_by: str = ""
    flags: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)  # the JSON form's values


def is_ensemble(e: Entry) -> bool:
    """An entry of an ensemble attack: its config lists the members it pooled."""
    return "members" in ((e.config or {}).get("attack") or {})


def checked(rows: list[Any]) -> list[str]:
    """What a defense lacks to be marked "checked" (empty: checked): an adaptive attack's row, the
    validity checks stored with its rows, and a convergence check. The one place that decides."""
    missing = []
    if not any(str(r.get("attack") or "").startswith(ADAPTIVE) for r in rows):
        missing.append("adaptive row")
    if not any((r.get("notes") or {}).get(VALIDITY_NOTE) for r in rows):
        missing.append("validity checks")
    if not any((r.get("config") or {}).get(CONVERGENCE_CONFIG) for r in rows):
        missing.append("convergence check")
    return missing


def board_key(e: Entry) -> tuple:
    return (
        *(str(getattr(e, k)) for k in GROUP if k != "attack"),
        *(str(getattr(e, k)) for k in SEPARATE),
        e.precision,
    )


def _value(e: Entry, c: Column) -> str:
    st = e.stats.get(c.key)
    if st is None or st.mean is None:
        return "n/a"
    s = _num(c, st.mean)
    if st.lo is not None and st.hi is not None:
        s += f" [{_num(c, st.lo)}, {_num(c, st.hi)}]"
    return s


def _num(c: Column, v: float) -> str:
    return f"{v * 100:.1f}" if c.percent else f"{v:.3g}"


def null_side(e: Entry, key: str) -> dict[int, dict[str, Any]]:
    """The ensemble's null as rows of ``key`` (seed -> row), for ``stats.paired``."""
    out = {}
    for s, r in e.rows.items():
        value = (r.metrics or {}).get(key + ensemble.NULL)
        o = r.outcomes
        per = None if o is None else o.per_reconstruction.get(key + ensemble.NULL)
        outcomes = Outcomes(o.classes, per_reconstruction={key: per}) if per is not None else None
        out[s] = {"metrics": {key: value}, "outcomes": outcomes}
    return out


def worst_minus_null(e: Entry, c: Column) -> stats.Interval:
    """The ensemble's privacy axis less its permuted-identity null, paired by seed and class."""
    return stats.paired(e.rows, null_side(e, c.key), c.key)


def _signed(c: Column, v: float) -> str:
    return f"{v * 100:+.1f}" if c.percent else f"{v:+.3g}"


def _canary_broken(entries: list[Entry]) -> dict[tuple, set[str]]:
    """board (of the ordinary targets) -> attacks flagged broken by the canaries of its undefended target."""
    out: dict[tuple, set[str]] = defaultdict(set)
    for e in entries:
        if e.protocol and e.protocol.endswith(CANARIES) and e.defense == "none":
            if any(str((r.notes or {}).get("canary", "")).startswith(BROKEN) for r in e.rows.values()):
                base = e.protocol.rsplit(", ", 1)[0]
                key = list(board_key(e))
                key[0] = base
                out[tuple(key)].add(e.attack)
    return out


def lines(entries: list[Entry], rows_of: dict[tuple, list[Any]], columns: list[Column]) -> list[Line]:
    """The view's lines. ``rows_of[(board, defense)]``: the defense's stored rows (for ``checked``)."""
    measured = [e for e in entries if e.reported is None]
    p, u = axis(measured, "privacy", columns), axis(measured, "utility", columns)
    if p is None:
        return []
    broken = _canary_broken(measured)
    by: dict[tuple, list[Entry]] = defaultdict(list)
    for e in measured:
        by[(board_key(e), e.defense)].append(e)
    reported = {(board_key(e), e.defense): e for e in entries if e.reported is not None}
    out = []
    for (board, defense), es in by.items():
        line = Line(board, defense)
        es = sorted(es, key=lambda e: e.attack or "")
        ens = next((e for e in es if is_ensemble(e)), None)
        for e in es:
            if e is ens:
                continue
            (line.adaptive if e.attack.startswith(ADAPTIVE) else line.standard)[e.attack] = _value(e, p)
            line.numbers[e.attack] = e.mean(p.key)
        if u is not None:
            first = next((e for e in es if e.mean(u.key) is not None), None)
            line.natural = "" if first is None else _value(first, u)
            line.numbers["natural"] = None if first is None else first.mean(u.key)
        if ens is not None:
            line.worst = _value(ens, p)
            line.numbers["worst"] = ens.mean(p.key)
            iv = worst_minus_null(ens, p)
            if iv.estimate is not None:
                line.worst_minus_null = _signed(p, iv.estimate) + (
                    f" [{_signed(p, iv.lo)}, {_signed(p, iv.hi)}]" if iv.has_interval else ""
                )
                line.numbers["worst_minus_null"] = [iv.estimate, iv.lo, iv.hi]
            leaders = Counter(
                ensemble.leader((r.notes or {}).get(ensemble.BROKEN_BY)) for r in ens.rows.values()
            )
            leaders.pop(None, None)
            line.broken_by = leaders.most_common(1)[0][0] if leaders else "none"
        else:
            strongest = [e for e in es if e.mean(p.key) is not None]
            if strongest:
                worst = (min if p.better == "higher" else max)(strongest, key=lambda e: e.mean(p.key))
                line.broken_by = f"{worst.attack} (highest mean; no ensemble)"
        judge_src = ens or next(iter(sorted(es, key=lambda e: -(e.mean(p.key) or 0))), None)
        if judge_src is not None:
            key = next((m for m in judge_src.metrics if judging.confirmed(m)), None)
            if key is not None:
                line.judged = f"{_value(judge_src, column_of(key, columns))} ({key})"
        if (rep := reported.get((board, defense))) is not None and rep.mean(p.key) is not None:
            line.reported = f"{_num(p, rep.mean(p.key))} ({rep.reported.source})"
        line.missing = checked(rows_of.get((board, defense), []))
        line.checked = not line.missing
        for e in es:
            line.flags += [f for f in getattr(e, "flags", None) or [] if f not in line.flags]
        line.flags += [f"{a}: failed the canary test (broken)" for a in sorted(broken.get(board, ()))]
        out.append(line)
    return out


def rows_by_defense(entries: list[Entry], rows: list[Any]) -> dict[tuple, list[Any]]:
    """(board, defense) -> the stored rows of that defense on that board (every attack)."""
    boards = {
        (e.protocol, e.scenario, e.budget, e.arch, e.data_digest, e.reinv_version): board_key(e)
        for e in entries
    }
    out: dict[tuple, list[Any]] = defaultdict(list)
    for r in rows:
        b = boards.get(
            (
                r.get("protocol"),
                r.get("scenario"),
                r.get("budget"),
                r.get("arch"),
                r.get("data_digest"),
                r.get("reinv_version"),
            )
        )
        if b is not None:
            out[(b, r.get("defense"))].append(r)
    return out


def table(ls: list[Line]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells: the attacks of every line as columns (standard, then adaptive)."""
    std = list(dict.fromkeys(a for line in ls for a in line.standard))
    ada = list(dict.fromkeys(a for line in ls for a in line.adaptive))
    headers = [
        "Scenario",
        "Arch",
        "Defense",
        "Natural",
        *std,
        *ada,
        "Worst case",
        "Worst - null",
        "Judge-confirmed",
        "Reported",
        "Checked",
        "Broken by",
        "Flags",
    ]
    out = []
    for line in ls:
        protocol, scenario, budget, arch = line.board[:4]
        out.append(
            [
                f"{scenario} ({budget}) [{protocol}]",
                arch,
                line.defense,
                line.natural,
                *(line.standard.get(a, "") for a in std),
                *(line.adaptive.get(a, "") for a in ada),
                line.worst or "-",
                line.worst_minus_null or "-",
                line.judged or "-",
                line.reported or "-",
                "yes" if line.checked else "no (" + ", ".join(line.missing) + ")",
                line.broken_by or "-",
                "; ".join(line.flags) or "-",
            ]
        )
    return headers, out


NOTE = (
    "Privacy axis with its 95% interval. Worst case: the `auto` ensemble, candidates pooled per identity "
    "and kept by the target's own score; Worst - null: its difference from the same pooling judged "
    "against a permuted identity (paired bootstrap over seeds and classes). Checked: an adaptive row, "
    "validity checks and a convergence check exist."
)


def render(ls: list[Line], fmt: str) -> str:
    """md | csv | json | latex text of the view (``rich_table`` for the terminal)."""
    headers, cells = table(ls)
    if fmt == "json":
        return json.dumps(
            [
                {
                    "board": dict(zip(("protocol", "scenario", "budget", "arch"), line.board[:4])),
                    "defense": line.defense,
                    **{h: c for h, c in zip(headers[3:], cell[3:])},
                    "checked": line.checked,
                    "missing": line.missing,
                    "flags": line.flags,
                    "values": line.numbers,
                }
                for line, cell in zip(ls, cells)
            ],
            indent=2,
        )
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(headers)
        w.writerows(cells)
        return buf.getvalue()
    text = tabulate(cells, headers, tablefmt="latex" if fmt == "latex" else "github")
    return text + ("" if fmt == "latex" else f"\n\n{NOTE}")


def rich_table(ls: list[Line]):
    headers, cells = table(ls)
    t = Table(*headers, title="Defenses: standard, adaptive and worst-case attackers", caption=NOTE)
    for row in cells:
        t.add_row(*(escape(c) for c in row))
    return t


def build(rows: list[Any], entries: list[Entry], columns: list[Column]) -> list[Line]:
    """The view's lines from the stored rows and their aggregated entries (with any published ones)."""
    return lines(entries, rows_by_defense([e for e in entries if e.reported is None], rows), columns)
