"""``reinv-bench report``: one self-contained HTML file.

Images are embedded as ``data:image/png;base64`` URIs; there is no script, no stylesheet or font
from elsewhere and no external URL, so the file reads the same offline, attached to an e-mail or
archived with a paper. Sections: per comparison group the leaderboard table with intervals, the
closing sentences, the privacy-utility plot and the reconstruction grid; then every cell's config
and timings, the failed cells with their errors, the metric gaps with their reasons, the
environment (torch, device, reinv-bench version, data digest) and the statistical method.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import platform
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch

import reinv_bench
from reinv_bench.contract.files import ArtifactError
from reinv_bench.contract.metric import Column
from reinv_bench.results.aggregate import GROUP, aggregate, sort_entries, verdicts
from reinv_bench.views import defense_board, tables
from reinv_bench.views.pictures import reconstruction_grid
from reinv_bench.views.plots import PlotError, group_title, groups, privacy_utility

CSS = (
    """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; """
    """max-width: 1400px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: .8em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; }
td.l, th.l { text-align: left; }
tr.pareto td { font-weight: bold; }
.note { color: #555; font-size: 13px; margin: .2em 0; }
.verdict { background: #f6f8fa; border-left: 4px solid #888; padding: .4em .8em; margin: .3em 0; }
.verdict.sig { border-left-color: #2a7; }
img { max-width: 100%; border: 1px solid #ddd; margin: .5em 0; }
pre { background: #f6f8fa; padding: .5em; font-size: 12px; overflow-x: auto; }
.scroll { overflow-x: auto; }
.error { color: #a00; white-space: pre-wrap; text-align: left; }
figure { margin: 1em 0; }
figcaption { color: #555; font-size: 13px; }
"""
)

METHOD = (
    "Differences from the baseline are paired by seed (only the seeds both have) and, within a seed, by "
    "attacked class; the 95% interval is the 2.5th-97.5th percentile of a seeded bootstrap that resamples "
    "the common seeds (when there are several) and, within each drawn seed, the attacked classes (natural "
    "accuracy: the test images' classes). A metric without per-reconstruction outcomes (FID) is bootstrapped "
    "over seeds only. With one seed an interval covers only the sampling of reconstructions, not the "
    "variation between trained targets. * marks an interval that excludes 0; ☆ a defense Pareto-optimal by "
    "the means that another defense matches on both axes within the intervals."
)


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def png(fig) -> str:
    """A matplotlib figure as an <img> with a data URI (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _table(
    headers: list[str] | None, rows: list[list[str]], classes: list[str] | None = None, left: int = 0
) -> str:
    head = "".join(
        f'<th class="l">{_e(h)}</th>' if i < left else f"<th>{_e(h)}</th>"
        for i, h in enumerate(headers or [])
    )
    body = []
    for k, r in enumerate(rows):
        cls = f' class="{classes[k]}"' if classes and classes[k] else ""
        cells = "".join(
            f'<td class="l">{_e(c)}</td>' if i < left else f"<td>{_e(c)}</td>" for i, c in enumerate(r)
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    thead = f"<thead><tr>{head}</tr></thead>" if headers else ""
    return f'<div class="scroll"><table>{thead}<tbody>{"".join(body)}</tbody></table></div>'


def _p(lines: list[str], cls: str = "note") -> str:
    return "".join(f'<p class="{cls}">{_e(line)}</p>' for line in lines)


def build(
    rows: list[dict[str, Any]],
    workdir: Path,
    loaders,
    columns: list[Column],
    baseline: str = "none",
    classes: int = 6,
    title: str = "reinv-bench report",
) -> str:
    """The report of ``rows`` (as the store holds them, failed ones included) as one HTML string.
    ``loaders``: the workdir's ``reconstructions`` and ``private`` loaders
    (``reinv_bench.engine.loaders.workdir_loaders``)."""
    entries = sort_entries(aggregate(rows, baseline=baseline, columns=columns), columns=columns)
    failed = [r for r in rows if r.get("status") != "ok"]
    ok = [r for r in rows if r.get("status") == "ok"]
    out = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{_e(title)}</h1>",
        _p(
            [
                f"{len(ok)} cell(s) stored, {len(failed)} failed, "
                f"{len(groups(entries))} comparison group(s); baseline {baseline}; "
                f"generated {_dt.datetime.now(_dt.UTC).isoformat(timespec='seconds')} by "
                f"reinv-bench {reinv_bench.__version__} from {workdir}."
            ]
        ),
    ]
    parts = [
        _section(i, es, columns, loaders.reconstructions, loaders.private, classes)
        for i, es in enumerate(groups(entries))
    ]
    if parts:
        out.append(f"<h2>Groups</h2><ul>{''.join(toc for toc, _ in parts)}</ul>")
    out += [html_ for _, html_ in parts]
    if not entries:
        out.append(_p(["No successful cell matches."]))
    out.append(_defenses(ok, entries, columns))
    out.append(_cells(ok))
    if failed:
        out.append(
            "<h2>Failed cells</h2>"
            + _table(
                ["Scenario", "Arch", "Attack", "Defense", "Seed", "Budget", "Error"],
                [
                    [r.get(k) for k in ("scenario", "arch", "attack", "defense", "seed", "budget")]
                    + [r.get("error") or ""]
                    for r in failed
                ],
                left=7,
            )
        )
    gap_lines = tables.gaps(entries, columns)
    out.append("<h2>Metric gaps</h2>" + (_p(gap_lines) if gap_lines else _p(["Every metric was computed."])))
    out.append(_environment(rows))
    out.append(f"<h2>Method</h2>{_p([METHOD])}</body></html>")
    return "".join(out)


def _section(
    i: int, es: list, columns: list[Column], load_reconstructions, load_private, classes: int
) -> tuple[str, str]:
    """(table-of-contents item, HTML section) of one comparison group: table, notes, verdicts,
    the privacy-utility plot and the reconstruction grid."""
    name = group_title(es[0]) + (f" [{es[0].protocol}]" if es[0].protocol else "")
    headers, table_rows = tables.display_rows(es, columns)
    part = [
        f'<h2 id="g{i}">{_e(name)}</h2>',
        _table(headers, table_rows, ["pareto" if e.pareto else "" for e in es], left=5),
        _p(
            [
                *tables.gaps(es, columns),
                *tables.stats_notes(es, columns),
                *tables.issue29_notes(es),  # top decile, attack baseline, validity flags
                *tables.protocol_lines(es),
            ]
        ),
    ]
    for line in verdicts(es, columns):
        sig = " sig" if "a real difference" in line else ""
        part.append(f'<p class="verdict{sig}">{_e(line)}</p>')
    try:
        part.append(
            f"<figure>{png(privacy_utility(es, None, columns))}<figcaption>Privacy-utility trade-off "
            "(error bars: 95% bootstrap intervals; black square: the baseline; dashed: the Pareto "
            "front by the means).</figcaption></figure>"
        )
    except PlotError as exc:
        part.append(_p([f"No privacy-utility plot: {exc}"]))
    try:
        fig, (nr, _), notes = reconstruction_grid(
            es, load_reconstructions, load_private, None, classes=classes
        )
        part.append(
            f"<figure>{png(fig)}<figcaption>Reconstructions: {nr} attacked classes; first column a "
            "private training image of the class, then per defense the reconstruction the target is "
            "most confident in.</figcaption></figure>" + _p(notes)
        )
    except (
        PlotError,
        ArtifactError,
        OSError,
        ValueError,
        KeyError,
    ) as exc:  # e.g. data or plugin absent here
        part.append(_p([f"No reconstruction grid: {exc}"]))
    return f'<li><a href="#g{i}">{_e(name)}</a></li>', "".join(part)


def _defenses(rows: list[dict[str, Any]], entries: list, columns: list[Column]) -> str:
    """A section per defense (``leaderboard --view defenses``): its line, the attacker that broke
    it and its flags; only where the rows hold an ensemble, an adaptive attack or canary targets
    (a report of standard attacks alone is as it was)."""
    board = defense_board.build(rows, entries, columns)
    special = any(line.worst or line.adaptive for line in board) or any(
        (e.protocol or "").endswith(defense_board.CANARIES) for e in entries
    )
    if not board or not special:
        return ""
    headers, cells = defense_board.table(board)
    out = ["<h2>Defenses: adaptive and worst-case attackers</h2>", _p([defense_board.NOTE])]
    for line, cell in zip(board, cells):
        out.append(f"<h3>{_e(line.defense)} ({_e(cell[0])}, {_e(line.board[3])})</h3>")
        out.append(_table(headers[3:], [cell[3:]]))
        out.append(
            _p(
                [
                    f"Broken by: {line.broken_by or '-'}.",
                    "Checked." if line.checked else f"Not checked: missing {', '.join(line.missing)}.",
                    *(f"Flag: {f}" for f in line.flags),
                ]
            )
        )
    return "".join(out)


def _cells(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    items = []
    for r in sorted(rows, key=lambda r: tuple(str(r.get(k)) for k in (*GROUP, "defense", "seed"))):
        t = r.get("timings") or {}
        timing = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in t.items())
        label = (
            f"{r.get('attack')} vs {r.get('defense')} "
            f"({r.get('arch')}, {r.get('scenario')}, {r.get('budget')}, seed {r.get('seed')})"
        )
        metrics = ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in (r.get("metrics") or {}).items()
        )
        items.append(
            f"<details><summary>{_e(label)}: {_e(metrics)}</summary>"
            f'<p class="note">cell {_e(r.get("cell_id"))}; timings (s): {_e(timing or "none")}; device '
            f"{_e(r.get('device'))}; created {_e(r.get('created_at'))}</p>"
            f"<pre>{_e(json.dumps(r.get('config'), indent=2, sort_keys=True, default=str))}</pre></details>"
        )
    return "<h2>Cells: config and timings</h2>" + "".join(items)


def _environment(rows: list[dict[str, Any]]) -> str:
    def counted(key: str) -> str:
        c = Counter(str(r.get(key)) for r in rows if r.get(key) is not None)
        return "; ".join(f"{k} ({n} cell{'s' if n != 1 else ''})" for k, n in c.most_common()) or "-"

    here_torch = torch.__version__
    digests = Counter(f"{r.get('scenario')}: {r.get('data_digest')}" for r in rows if r.get("data_digest"))
    lines = [
        ["reinv-bench (rows)", counted("reinv_version")],
        ["torch (rows)", counted("torch_version")],
        ["device (rows)", counted("device")],
        ["data digest", "; ".join(f"{k} ({n})" for k, n in digests.most_common()) or "-"],
        [
            "this report",
            f"reinv-bench {reinv_bench.__version__}, torch {here_torch}, Python "
            f"{sys.version.split()[0]}, {platform.platform()}",
        ],
    ]
    return "<h2>Environment</h2>" + _table(None, lines, left=2)
