"""Pictures (matplotlib, Agg backend: no display needed).

- ``privacy_utility``: one scatter per comparison group, the utility axis (natural accuracy) on
  x and the privacy axis (attack accuracy) on y, or any two declared columns; error bars are the
  entries' 95% bootstrap intervals (``reinv_bench.results.stats.interval``), the baseline is a black
  square, the Pareto front (by the means) a dashed line, Pareto-optimal defenses a star (hollow
  when another defense is as good on both axes within the intervals), and a defense swept over
  one hyperparameter (``mid[beta=0.001]``, ``mid[beta=0.01]``, ...) a connected curve in the
  order of the parameter.
  Labels are text, never math: a ``$`` in a defense label is drawn as itself.
- ``identity_curves``: per group, each defense's per-identity curve of the privacy axis.

Pictures of reconstructions (grids, feature projections): ``reinv_bench.views.pictures``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from reinv_bench.contract.metric import Column
from reinv_bench.results import exposure, stats
from reinv_bench.results.entries import Entry, axis, column_of, present
from reinv_bench.results.setting import comparison_key
from reinv_bench.views.tables import STAR, pareto_mark

FORMATS = (".png", ".svg", ".pdf")
DPI = 100


class PlotError(ValueError):
    """The picture cannot be drawn as asked; the message says what to change."""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def check_output(path: Path) -> None:
    if Path(path).suffix.lower() not in FORMATS:
        raise PlotError(f"{path}: the output must end in {', '.join(FORMATS)}")


def text(label: Any) -> str:
    """``label`` as matplotlib text, not mathtext (``$`` escaped)."""
    return str(label).replace("$", r"\$")


def group_title(e: Entry) -> str:
    budget = f" ({e.budget})" if e.budget != "paper" else ""
    variant = f" {e.variant}" if e.variant else ""
    return f"{e.attack} vs {e.arch}, {e.scenario}{budget}{variant}"


def groups(entries: list[Entry]) -> list[list[Entry]]:
    """The entries by comparison group, measured ones only, in their order."""
    by: dict[tuple, list[Entry]] = defaultdict(list)
    for e in entries:
        if e.reported is None:
            by[comparison_key(e)].append(e)
    return list(by.values())


def _scale(c: Column) -> float:
    return 100.0 if c.percent else 1.0


def _label(c: Column) -> str:
    better = {"higher": "higher is better for the defense", "lower": "lower is better for the defense"}.get(
        c.better, ""
    )
    return f"{c.header}" + (f"  ({better})" if better else "")


def sweeps(es: list[Entry]) -> list[tuple[str, list[Entry]]]:
    """Defenses swept over one hyperparameter: (label, entries in the order of its value). Entries
    of the same defense components whose resolved configs differ in exactly one value."""
    families: dict[str, list[Entry]] = defaultdict(list)
    for e in es:
        comps = e.config.get("defense") or []
        families["+".join(c.get("name", "?") for c in comps) or e.defense.split("[")[0]].append(e)
    out = []
    for name, members in families.items():
        if len(members) < 2:
            continue
        flat = [
            {
                f"{c.get('name')}.{k}": v
                for c in e.config.get("defense") or []
                for k, v in (c.get("config") or {}).items()
            }
            for e in members
        ]
        keys = sorted({k for f in flat for k in f})
        varying = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
        if len(varying) != 1:
            continue
        key = varying[0]
        values = [f.get(key) for f in flat]
        if all(isinstance(v, (int, float)) for v in values):
            ordered = [e for _, e in sorted(zip(values, members), key=lambda p: p[0])]
        else:
            ordered = [e for _, e in sorted(zip(map(repr, values), members), key=lambda p: p[0])]
        out.append((f"{name} ({key.split('.', 1)[1]})", ordered))
    return out


def privacy_utility(
    entries: list[Entry],
    path: Path | None = None,
    columns: list[Column] | None = None,
    x: str | None = None,
    y: str | None = None,
    dpi: int = DPI,
):
    """Draw the privacy-utility scatter of every group (one panel each); save it to ``path``
    when given. Returns the figure."""
    plt = _pyplot()
    columns = columns or []
    gs = groups(entries)
    if not gs:
        raise PlotError("no measured entries to plot")
    xc = column_of(x, columns) if x else axis(entries, "utility", columns)
    yc = column_of(y, columns) if y else axis(entries, "privacy", columns)
    if xc is None or yc is None:
        held = ", ".join(c.key for c in present(entries, columns))
        raise PlotError(f"no utility/privacy axis among the columns ({held}); choose them with --x and --y")
    for c in (xc, yc):
        if not any(e.mean(c.key) is not None for g in gs for e in g):
            raise PlotError(
                f"no entry has a value of {c.key!r}; columns held: "
                f"{', '.join(k.key for k in present(entries, columns))}"
            )
    n = len(gs)
    ncols = min(n, 2)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.4 * ncols, 4.8 * nrows), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for i, es in enumerate(gs):
        ax = axes[i // ncols][i % ncols]
        _panel(ax, es, xc, yc, cmap)
    for j in range(n, nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    fig.tight_layout()
    if path is not None:
        check_output(Path(path))
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
    return fig


def identity_curves(
    entries: list[Entry],
    path: Path | None = None,
    columns: list[Column] | None = None,
    y: str | None = None,
    dpi: int = DPI,
):
    """Issue 29: the per-identity curve of every group (one panel each): per defense, each attacked
    identity's value of the privacy axis (or ``y``), sorted from most to least leaked and averaged
    rank by rank over the seeds (``exposure.curve``); x is the identity's rank as a fraction of
    the identities, the 10 % most-leaked left of the dotted line, the defense's top-decile number
    in its legend entry. Save it to ``path`` when given. Returns the figure."""
    plt = _pyplot()
    columns = columns or []
    gs = groups(entries)
    if not gs:
        raise PlotError("no measured entries to plot")
    yc = column_of(y, columns) if y else axis(entries, "privacy", columns)
    if yc is None:
        raise PlotError("no privacy axis among the columns; choose one with --y")
    curves = [[(e, exposure.curve(e.rows, yc.key, yc.better)) for e in es] for es in gs]
    if not any(c is not None for g in curves for _, c in g):
        raise PlotError(
            f"no entry has per-reconstruction outcomes of {yc.key!r}: rerun the cells to store them"
        )
    n = len(gs)
    ncols = min(n, 2)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.4 * ncols, 4.8 * nrows), squeeze=False)
    cmap = plt.get_cmap("tab10")
    s = _scale(yc)
    for i, (es, g) in enumerate(zip(gs, curves)):
        ax = axes[i // ncols][i % ncols]
        for k, (e, values) in enumerate(g):
            if values is None:
                continue
            ranks = (np.arange(len(values)) + 0.5) / len(values)
            top = e.stats.get(exposure.key_of(yc.key))
            tag = "" if top is None or top.mean is None else f" (top-10%: {top.mean * s:.3g})"
            ax.step(ranks, values * s, where="mid", color=cmap(k % 10), label=text(e.defense + tag))
        ax.axvline(exposure.FRACTION, color="grey", linestyle=":", linewidth=1)
        ax.set_title(text(group_title(es[0])))
        ax.set_xlabel("identity rank, most leaked first (fraction of the attacked identities)")
        ax.set_ylabel(text(yc.header))
        ax.legend(fontsize=8)
    for j in range(n, nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    fig.tight_layout()
    if path is not None:
        check_output(Path(path))
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
    return fig


def _err(e: Entry, c: Column, s: float, v: float):
    """The error bar of ``e`` on column ``c`` (its bootstrap interval), scaled by ``s``."""
    st = e.stats[c.key]
    if not st.has_interval and e.rows:  # aggregate computes the axes' intervals only
        iv = stats.interval(e.rows, c.key)
        st.lo, st.hi, st.has_interval = iv.lo, iv.hi, True
    return None if st.lo is None or st.hi is None else [[max(v - st.lo * s, 0)], [max(st.hi * s - v, 0)]]


def _panel(ax, es: list[Entry], xc: Column, yc: Column, cmap) -> None:
    pts = [e for e in es if e.mean(xc.key) is not None and e.mean(yc.key) is not None]
    colors: dict[str, Any] = {}
    for e in pts:
        colors.setdefault(e.defense.split("[")[0], cmap(len(colors) % 10))
    labels = [_point(ax, e, xc, yc, colors) for e in pts]
    _annotate(ax, labels)
    _lines(ax, pts, xc, yc, colors)
    ax.set_xlabel(text(_label(xc)), fontsize=9)
    ax.set_ylabel(text(_label(yc)), fontsize=9)
    ax.set_title(text(group_title(es[0])), fontsize=10)
    ax.grid(True, alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7, loc="best")
    ax.text(
        0.99,
        0.01,
        "error bars: 95% bootstrap CI; ★ Pareto, ☆ not separable",
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize=6,
        color="dimgray",
    )


def _point(ax, e: Entry, xc: Column, yc: Column, colors: dict[str, Any]) -> tuple[str, float, float]:
    """Draw one entry (error bars, Pareto star); returns its label and position."""
    sx, sy = _scale(xc), _scale(yc)
    xv, yv = e.mean(xc.key) * sx, e.mean(yc.key) * sy
    is_base = e.baseline == e.defense
    color = "black" if is_base else colors[e.defense.split("[")[0]]
    ax.errorbar(
        xv,
        yv,
        xerr=_err(e, xc, sx, xv),
        yerr=_err(e, yc, sy, yv),
        fmt="s" if is_base else "o",
        color=color,
        ms=8 if is_base else 6,
        capsize=3,
        lw=1,
        zorder=3,
    )
    mark = pareto_mark(e)
    if mark:
        ax.scatter(
            [xv],
            [yv],
            marker="*",
            s=260,
            zorder=4,
            edgecolors="goldenrod",
            linewidths=1.5,
            facecolors="gold" if mark == STAR else "none",
        )
    return text(e.defense) + (" (baseline)" if is_base else ""), xv, yv


def _annotate(ax, labels: list[tuple[str, float, float]]) -> None:
    """Label the points; labels of points that (nearly) coincide are stacked downwards."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    placed: list[tuple[float, float]] = []
    for label, xv, yv in labels:
        stack = sum(abs(xv - px) < (x1 - x0) / 12 and abs(yv - py) < (y1 - y0) / 25 for px, py in placed)
        placed.append((xv, yv))
        ax.annotate(label, (xv, yv), textcoords="offset points", xytext=(6, 6 - 11 * stack), fontsize=8)


def _lines(ax, pts: list[Entry], xc: Column, yc: Column, colors: dict[str, Any]) -> None:
    """The Pareto front (by the means) and one curve per swept defense."""
    sx, sy = _scale(xc), _scale(yc)

    def xs(es):
        return [e.mean(xc.key) * sx for e in es]

    def ys(es):
        return [e.mean(yc.key) * sy for e in es]

    front = sorted((e for e in pts if e.pareto), key=lambda e: e.mean(xc.key))
    if len(front) > 1:
        ax.plot(xs(front), ys(front), "--", color="goldenrod", lw=1, zorder=2, label="Pareto front (means)")
    for label, line in sweeps(pts):
        ax.plot(
            xs(line),
            ys(line),
            "-",
            lw=1.5,
            zorder=2,
            color=colors.get(line[0].defense.split("[")[0], "gray"),
            label=text(f"sweep: {label}"),
        )


# --------------------------------------------------------------------------------------------
# Reconstruction grids
