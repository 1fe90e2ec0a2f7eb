"""Leaderboard entries (``reinv_bench.results.aggregate``) -> text: a rich table (the terminal), markdown,
CSV, JSON (numbers, for tools) and LaTeX, with the notes under the table (values that could not
be computed, how to read the differences and marks, seed sets and metric versions that differ,
stale rows, where each protocol card is).

Labels are text everywhere: the rich table escapes markup (``re[p=0.5]`` stays itself), LaTeX
escapes its special characters and writes the symbols as macros pdflatex knows without packages
(``$\\Delta$``, ``$\\star$``, ``$\\pm$``), and JSON has no NaN (a value that is not a finite number
is null).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from typing import Any

from rich.markup import escape
from rich.table import Table
from tabulate import tabulate

from reinv_bench.contract.metric import Column
from reinv_bench.results.compare import signed
from reinv_bench.results.entries import GROUP, SEPARATE, Entry, column_of, present
from reinv_bench.results.exposure import key_of
from reinv_bench.results.judging import remarks
from reinv_bench.results.reported import (
    UNMATCHED_TITLE,
    fmt_reported,
    reported_notes,
    unmatched_rows,
)
from reinv_bench.results.setting import comparison_key
from reinv_bench.views.table_notes import (
    HOLLOW,
    STAR,
    gaps,
    issue29_notes,
    notes,
    protocol_lines,
    stats_notes,
)

FORMATS = ("table", "md", "csv", "json", "latex")


def _finite(obj: Any) -> Any:
    """``obj`` with every float that is not finite as None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def to_json(entries: list[Entry], unmatched: list[dict[str, Any]]) -> str:
    items = [*(e.to_json() for e in entries), *({**r, "matched": False} for r in unmatched)]
    return json.dumps(_finite(items), indent=2, default=str)


# --------------------------------------------------------------------------------------------
# Cells


def number(c: Column, v: float) -> str:
    return f"{v * 100:.1f}" if c.percent else f"{v:.3g}"


def value_cell(e: Entry, m: str, columns: list[Column]) -> str:
    """``85.2 ± 1.0``: the mean (± the std over several seeds; ``[lo, hi]``: its 95% interval, for
    a column that declares ``interval``); n/a when not computed."""
    st = e.stats.get(m)
    v = None if st is None else st.mean
    if e.reported is not None:  # a published number: as published (2 decimals), blank where none was
        return "" if v is None else fmt_reported(m, v, columns)
    if v is None:
        return "n/a"
    c = column_of(m, columns)
    s = number(c, v)
    if e.n > 1 and st.n > 1 and st.std is not None:  # not for a metric only one seed computed
        s += f" ± {st.std * 100:.1f}" if c.percent else f" ± {st.std:.2g}"
    if c.interval and st.lo is not None and st.hi is not None:  # a judge's columns: their 95% interval
        s += f" [{number(c, st.lo)}, {number(c, st.hi)}]"
    return s


def delta_cell(e: Entry, m: str, columns: list[Column]) -> str:
    """``-4.0 [-11.2, +3.1]``: the difference from the baseline with its interval; `` *`` when
    the interval excludes 0; ``baseline`` on the baseline's own row."""
    d = e.deltas.get(m)
    if d is None or d.estimate is None or e.reported is not None:
        return ""
    if e.baseline == e.defense and not d.method:
        return "baseline"
    c = column_of(m, columns)
    if d.lo is None or d.hi is None:
        return signed(c, d.estimate)
    mark = " *" if d.excludes_zero else ""
    return f"{signed(c, d.estimate)} [{signed(c, d.lo)}, {signed(c, d.hi)}]{mark}"


def delta_header(c: Column) -> str:
    return "Δ " + c.header.split()[0].rstrip(".").lower()


def n_label(e: Entry) -> str:
    """ "seeds x reconstructions" (the seeds alone when the reconstructions are not known)."""
    if e.reported is not None:
        return "-"
    return f"{e.n} x {e.reconstructions}" if e.reconstructions else str(e.n)


def pareto_mark(e: Entry) -> str:
    if not e.pareto:
        return ""
    return HOLLOW if e.separable is False else STAR


def _scenario_cell(e: Entry) -> str:
    return (
        e.scenario
        + (f" ({e.budget})" if e.budget != "paper" else "")
        + (f" [{e.protocol}]" if e.protocol else "")
        + (f" {e.variant}" if e.variant else "")
    )


def display_rows(entries: list[Entry], columns: list[Column]) -> tuple[list[str], list[list[str]]]:
    cols = present(entries, columns)
    tops = {k for e in entries for k in e.top}
    attack_base = sorted({e.attack_baseline for e in entries if e.attack_baseline})
    headers = ["Scenario", "Arch", "Attack", "Threat", "Defense", "n"]
    for c in cols:
        headers += [c.header, *([delta_header(c)] if c.axis else [])]
        if top_key(c) in tops:
            headers.append(top_header(c))
        if attack_base and c.axis == "privacy":
            headers.append(attack_delta_header(c, attack_base))
    headers.append("Pareto")
    out = []
    for e in entries:
        defense = e.defense + (f" ({e.config_variant})" if e.config_variant else "")
        if e.reported is not None:
            defense = f"{e.defense} - reported ({e.reported.source})"
        row = [_scenario_cell(e), e.arch, e.attack, e.threat_model, defense, n_label(e)]
        for c in cols:
            row += [value_cell(e, c.key, columns), *([delta_cell(e, c.key, columns)] if c.axis else [])]
            if top_key(c) in tops:
                row.append(top_cell(e, c))
            if attack_base and c.axis == "privacy":
                row.append(attack_delta_cell(e, c))
        row.append(pareto_mark(e))
        out.append(row)
    return headers, out


# issue 29: the worst decile of identities and the difference from --attack-baseline, as cells


def top_key(c: Column) -> str:
    return key_of(c.key)


def top_header(c: Column) -> str:
    """``Top-10% attack acc %``: the column's header over the most-leaked decile."""
    return f"Top-10% {c.header}"


def top_cell(e: Entry, c: Column) -> str:
    """``100.0 [80.0, 100.0]``: the 10 % most-leaked identities' mean with its 95% interval."""
    st = e.stats.get(top_key(c))
    if st is None or st.mean is None or e.reported is not None:
        return "" if e.reported is not None else "n/a"
    s = number(c, st.mean)
    if st.lo is not None and st.hi is not None:
        s += f" [{number(c, st.lo)}, {number(c, st.hi)}]"
    return s


def attack_delta_header(c: Column, bases: list[str]) -> str:
    """``Δ attack vs gmi``: the column of ``leaderboard --attack-baseline gmi``."""
    return f"{delta_header(c)} vs {'/'.join(bases)}"


def attack_delta_cell(e: Entry, c: Column) -> str:
    """``+12.0 [+4.1, +19.8] *``: this attacker minus ``--attack-baseline`` on the same targets."""
    d = e.attack_deltas.get(c.key)
    if d is None or d.estimate is None:
        return ""
    if e.attack == e.attack_baseline:
        return "baseline"
    if d.lo is None or d.hi is None:
        return signed(c, d.estimate)
    return f"{signed(c, d.estimate)} [{signed(c, d.lo)}, {signed(c, d.hi)}]" + (
        " *" if d.excludes_zero else ""
    )


# --------------------------------------------------------------------------------------------
# Formats


def render(
    entries: list[Entry], fmt: str, columns: list[Column], unmatched: list[dict[str, Any]] | None = None
) -> str:
    """Render as md, latex, csv or json (numbers, for tools). md and latex carry the notes under
    the table; ``unmatched``: published numbers (``--reported``) with no measured group of their
    setting, as a second table."""
    unmatched = unmatched or []
    if fmt == "json":
        return to_json(entries, unmatched)
    if fmt == "csv":
        return to_csv(entries, columns, unmatched)
    if fmt == "md":
        return to_md(entries, columns, unmatched)
    if fmt == "latex":
        return to_latex(entries, columns, unmatched)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def to_csv(entries: list[Entry], columns: list[Column], unmatched: list[dict[str, Any]]) -> str:
    fields = [
        *GROUP,
        "threat_model",
        "defense",
        "n",
        "reconstructions",
        *SEPARATE,
        "precision",
        "config_digest",
    ]
    for c in present(entries, columns):
        m = c.key
        fields += [m, m + "_std", m + "_lo", m + "_hi"]
        if c.better or c.axis:
            fields += ["d_" + m, "d_" + m + "_lo", "d_" + m + "_hi"]
    fields += ["baseline", "pareto", "separable"]
    fields += _issue29_fields(entries)
    dicts = [{**d, **_flat_flags(d)} for d in (_finite(e.to_json()) for e in entries)]
    if unmatched or any(e.reported is not None for e in entries):
        fields += ["reported", "source", "setting"]
        fields += sorted({m for r in unmatched for m in r["metrics"]} - set(fields))
        dicts += [{**r, **r["metrics"]} for r in unmatched]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for d in dicts:
        w.writerow({k: csv_text(d.get(k)) for k in fields})
    return buf.getvalue()


def _issue29_fields(entries: list[Entry]) -> list[str]:
    """CSV columns of issue 29's keys, only where some entry has them."""
    out: list[str] = []
    for k in dict.fromkeys(k for e in entries for k in e.top):
        out += [k, k + "_lo", k + "_hi"]
    if any(e.attack_baseline for e in entries):
        out.append("attack_baseline")
        for m in dict.fromkeys(m for e in entries for m in e.attack_deltas):
            out += ["da_" + m, "da_" + m + "_lo", "da_" + m + "_hi"]
    if any(e.flags for e in entries):
        out.append("validity_flags")
    return out


def _flat_flags(d: dict[str, Any]) -> dict[str, Any]:
    return {"validity_flags": " | ".join(d["validity_flags"])} if d.get("validity_flags") else {}


def csv_text(v: Any) -> Any:
    """A CSV field: numbers as they are; text with HTML's special characters as entities (a label
    holding raw HTML stays inert where the file is shown as a page) and, where a spreadsheet would
    read a formula (a leading ``= + - @``, tab or carriage return), a leading ``'``."""
    if v is None:
        return ""
    if not isinstance(v, str):
        return v
    v = html.escape(v, quote=False)
    return "'" + v if v[:1] in ("=", "+", "-", "@", "\t", "\r") else v


def md_text(text: Any) -> str:
    """``text`` as Markdown text: HTML's special characters as entities (a label holding raw HTML
    shows as itself, never as markup) and ``|`` escaped (it would split a table cell)."""
    return html.escape(str(text), quote=False).replace("|", "\\|")


def _md_table(rows: list[list[Any]], headers: list[str], **kw) -> str:
    cells = [[v if isinstance(v, (int, float)) else md_text(v) for v in r] for r in rows]
    return tabulate(cells, [md_text(h) for h in headers], tablefmt="github", **kw)


def to_md(entries: list[Entry], columns: list[Column], unmatched: list[dict[str, Any]]) -> str:
    parts = []
    if entries:
        headers, rows = display_rows(entries, columns)
        parts = [
            _md_table(rows, headers),
            *map(md_text, gaps(entries, columns)),
            *map(md_text, stats_notes(entries, columns)),
            *map(md_text, issue29_notes(entries)),
            *map(md_text, remarks([r for e in entries for r in e.rows.values()])),
            *map(md_text, reported_notes(entries)),
            md_text("\n".join(protocol_lines(entries))),
        ]
    if unmatched:
        h, r = unmatched_rows(unmatched, columns)
        parts += [UNMATCHED_TITLE, _md_table(r, h, disable_numparse=True)]
    return "\n\n".join(p for p in parts if p)


# tabulate's LaTeX escapes, and the symbols of the tables as macros pdflatex knows without packages
_LATEX = {
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "^": r"\^{}",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "\\": r"\textbackslash{}",
    "<": r"\ensuremath{<}",
    ">": r"\ensuremath{>}",
    "`": "",
    "Δ": r"$\Delta$",
    "δ": r"$\delta$",
    "★": r"$\star$",
    "☆": r"($\star$)",
    "±": r"$\pm$",
    "×": r"$\times$",
    "–": "--",
    "—": "---",
}


def latex(text: Any) -> str:
    """``text`` as LaTeX text: special characters escaped, the tables' symbols as macros."""
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def to_latex(entries: list[Entry], columns: list[Column], unmatched: list[dict[str, Any]]) -> str:
    parts = []
    if entries:
        headers, rows = display_rows(entries, columns)
        parts = [
            tabulate(
                [[latex(x) for x in r] for r in rows], [latex(h) for h in headers], tablefmt="latex_raw"
            ),
            *(
                latex(line) + r"\par"
                for line in [
                    *stats_notes(entries, columns),
                    *issue29_notes(entries),
                    *remarks([r for e in entries for r in e.rows.values()]),
                    *protocol_lines(entries),
                ]
            ),
        ]
    if unmatched:
        h, r = unmatched_rows(unmatched, columns)
        parts += [
            latex(UNMATCHED_TITLE),
            tabulate(
                [[latex(x) for x in row] for row in r],
                [latex(x) for x in h],
                tablefmt="latex_raw",
                disable_numparse=True,
            ),
        ]
    return "\n".join(parts)


def rich_table(entries: list[Entry], columns: list[Column]):
    """The terminal's table; every label and note is text, not rich markup."""
    headers, rows = display_rows(entries, columns)
    table = Table(
        title=f"reinv-bench leaderboard ({STAR} = Pareto-optimal: no defense has higher natural and lower "
        "attack accuracy)",
        caption=escape("\n".join(notes(entries, columns))) or None,
        caption_justify="left",
    )
    for h in headers:
        left = h in ("Scenario", "Arch", "Attack", "Threat", "Defense")
        table.add_column(escape(h), justify="left" if left else "right")
    last = None
    for e, r in zip(entries, rows):
        group = comparison_key(e)
        if last is not None and group != last:
            table.add_section()
        last = group
        table.add_row(
            *(escape(str(x)) for x in r),
            style="bold" if e.pareto else "italic" if e.reported is not None else None,
        )
    return table
