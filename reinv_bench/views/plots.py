"""Pictures (matplotlib, Agg backend: no display needed).

- ``privacy_utility``: one scatter per comparison group, the utility axis (natural accuracy) on
  x and the privacy axis (attack accuracy) on y, or any two declared columns; error bars are the
  entries' 95% bootstrap intervals (``reinv_bench.results.stats.interval``), the baseline is a black
  square, the Pareto front (by the means) a dashed line, Pareto-optimal defenses a star (hollow
  when another defense is as good on both axes within the intervals), and a defense swept over
  one hyperparameter (``mid[beta=0.001]``, ``mid[beta=0.01]``, ...) a connected curve in the
  order of the parameter.
  Labels are text, never math: a ``$`` in a defense label is drawn as itself.
- ``reconstruction_grid``: rows = attacked classes; the first column a private training image of
  the class, then per defense the reconstruction the target is most confident in (what an
  attacker would pick), or every reconstruction (restart) of one cell.
- ``feature_projection``: the seed paper's feature-space figure: per attacked class (rows) and
  defense (columns), a 2-D projection of the target's penultimate features of the class's private
  training images, of those images under the defense's training transform (Random Erasing's
  erased images for ``re``), and of the reconstructions.
"""

from __future__ import annotations

import math
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from reinv_bench.contract.attack import Inversion
from reinv_bench.contract.metric import Column
from reinv_bench.results import stats
from reinv_bench.results.aggregate import Entry, axis, column_of, comparison_key, present
from reinv_bench.views.tables import STAR, pareto_mark

FORMATS = (".png", ".svg", ".pdf")
CELL_INCHES = 1.1  # one image of a reconstruction grid
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
    from reinv_bench.results import exposure

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


def _to_image(x):
    """(C, H, W) in [-1, 1] -> (H, W[, 3]) in [0, 1] for imshow."""
    img = ((x.float().cpu() + 1) / 2).clamp(0, 1)
    return img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()


def _pick_seed(es: list[Entry], seed: int | None) -> int:
    common = set.intersection(*(set(e.rows) for e in es))
    if seed is not None:
        if not common or seed not in common:
            raise PlotError(
                f"seed {seed} is not stored for every defense here (common seeds: "
                f"{', '.join(map(str, sorted(common))) or 'none'})"
            )
        return seed
    if not common:
        raise PlotError("the defenses here share no seed; pick one defense with -d or a seed with --seed")
    return min(common)


def reconstruction_grid(
    es: list[Entry],
    artifacts,
    load_private,
    path: Path | None = None,
    classes: int = 8,
    seed: int | None = None,
    restarts: str | None = None,
    dpi: int = DPI,
):
    """Draw one group's grid and save it to ``path``. ``artifacts``: ``reinv_bench.engine.artifacts.
    Artifacts`` of the workdir; ``load_private(entry) -> Split``: the private training data of
    an entry's scenario. ``restarts``: a defense label: every reconstruction of its cell instead
    of one per defense. Returns (figure, (rows, columns), notes)."""
    plt = _pyplot()
    if restarts is not None:
        es = [e for e in es if e.defense == restarts]
        if not es:
            raise PlotError(f"no defense {restarts!r} here")
    seed = _pick_seed(es, seed)
    cells, notes = _load_cells(es, seed, artifacts)
    attacked = sorted(set.intersection(*(set(c[2].tolist()) for c in cells)))[:classes]
    if not attacked:
        raise PlotError("the defenses here attacked no class in common")
    priv = load_private(cells[0][0])
    names = getattr(load_private, "class_names", lambda e: None)(
        cells[0][0]
    )  # the scenario's, if it names them
    if restarts is not None:
        per_class = max(int((cells[0][2] == c).sum()) for c in attacked)
        titles = ["private"] + [f"#{i + 1}" for i in range(per_class)]
    else:
        titles = ["private"] + [c[0].defense for c in cells]
    nrows, ncols = len(attacked), len(titles)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(max(ncols, 3) * CELL_INCHES, nrows * CELL_INCHES + 0.8), squeeze=False
    )
    for r, c in enumerate(attacked):
        idx = (priv.y == c).nonzero().flatten()
        private = (priv.x[idx[:1]].to("cpu")[0] if len(idx) else None, "" if len(idx) else "no private image")
        picked = (
            _restarts(cells[0], c, ncols - 1) if restarts is not None else [_best(cell, c) for cell in cells]
        )
        label = names[c] if names and 0 <= c < len(names) else f"class {c}"
        _draw_row(axes[r], label, [private, *picked], titles if r == 0 else None)
    what = (
        f"every reconstruction of {restarts}, most confident first"
        if restarts is not None
        else "per defense, the reconstruction the target is most confident in"
    )
    title = f"{group_title(cells[0][0])}, seed {seed}: {what} (number: the target's confidence in the class)"
    fig.suptitle(text(textwrap.fill(title, max(30, int(ncols * CELL_INCHES * 13)))), fontsize=7)
    fig.tight_layout()
    if path is not None:
        check_output(Path(path))
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
    return fig, (nrows, ncols), notes


def _load_cells(es: list[Entry], seed: int, artifacts) -> tuple[list[tuple], list[str]]:
    """Per entry (entry, images, labels, the target's confidences or None) of ``seed``, and notes
    on the entries that cannot be shown."""
    import torch

    from reinv_bench.engine.steps import reconstructions

    notes: list[str] = []
    cells = []
    for e in es:
        row = e.rows[seed]
        key = (row.artifacts or {}).get("invert")
        if not key:
            notes.append(f"{e.defense}: stored before reconstructions were linked to rows; rerun to show it")
            continue
        if not artifacts.exists(key):
            notes.append(f"{e.defense}: reconstructions {key[:12]} are not in this workdir's artifact cache")
            continue
        inv = reconstructions(artifacts, key)
        conf = row.outcomes.target_conf if row.outcomes is not None else None
        if conf is not None and len(conf) != len(inv.labels):
            conf = None
        if conf is None:
            notes.append(f"{e.defense}: no stored target confidences: the first reconstruction of each class")
        cells.append((e, inv.images, inv.labels, None if conf is None else torch.tensor(conf)))
    if not cells:
        raise PlotError("no reconstructions to show: " + "; ".join(notes))
    return cells, notes


def _best(cell: tuple, c: int) -> tuple[Any, str]:
    """(image, caption) of the reconstruction of class ``c`` the target is most confident in."""
    _, images, labels, conf = cell
    sel = (labels == c).nonzero().flatten()
    best = sel[conf[sel].argmax()] if conf is not None else sel[0]
    return images[best], (f"{conf[best]:.2f}" if conf is not None else "")


def _restarts(cell: tuple, c: int, n: int) -> list[tuple[Any, str]]:
    """(image, caption) of every reconstruction of class ``c``, most confident first, ``n`` slots."""
    _, images, labels, conf = cell
    sel = (labels == c).nonzero().flatten()
    if conf is not None:
        sel = sel[conf[sel].argsort(descending=True)]
    return [
        (
            images[sel[j]] if j < len(sel) else None,
            f"{conf[sel[j]]:.2f}" if conf is not None and j < len(sel) else "",
        )
        for j in range(n)
    ]


def _draw_row(axes_row, label: str, pictures: list[tuple[Any, str]], titles: list[str] | None) -> None:
    for j, (img, caption) in enumerate(pictures):
        ax = axes_row[j]
        ax.set_xticks([])
        ax.set_yticks([])
        if img is not None:
            ax.imshow(_to_image(img), cmap="gray" if img.shape[0] == 1 else None, vmin=0, vmax=1)
        if caption:
            ax.set_xlabel(caption, fontsize=6, labelpad=1)
        if titles is not None:
            ax.set_title(text(titles[j]), fontsize=7)
        if j == 0:
            ax.set_ylabel(text(label), fontsize=7)


def private_loader(registry):
    """``load_private(entry)``: the private training split of the entry's scenario, from the data
    folder stored with its config (one load per scenario and folder)."""
    cache: dict[tuple, Any] = {}

    def load(e: Entry):
        root = (e.config.get("scenario") or {}).get("data_root")
        key = (e.scenario, root)
        if key not in cache:
            cache[key] = registry.get("scenario", e.scenario).load(None if root is None else Path(root))
        return cache[key].private_train

    def class_names(e: Entry) -> list[str] | None:
        """The scenario's names of its classes (``Scenario.class_names``), or None."""
        root = (e.config.get("scenario") or {}).get("data_root")
        try:
            return registry.get("scenario", e.scenario).class_names(None if root is None else Path(root))
        except Exception:  # noqa: BLE001 - a label, never worth failing a figure for
            return None

    load.class_names = class_names
    return load


def feature_projection(
    es: list[Entry],
    load_private,
    load_target,
    path: Path | None = None,
    classes: int = 4,
    seed: int | None = None,
    dpi: int = DPI,
):
    """Draw MIDRE's feature-space figure for one group and save it to ``path``: per attacked class
    and defense, the first two principal components (fitted per panel on its three sets) of the
    target's penultimate features of the private training images of the class (grey), the same
    images under the defense's training transform (orange, drawn with a fixed seed; absent for a
    defense without one) and the reconstructions (red). ``load_target(row) -> (target, defense,
    reconstructions)`` or None when the row's artifacts are not in the workdir. Returns (figure,
    (rows, columns), notes)."""
    import torch

    from reinv_bench.engine.train import features

    plt = _pyplot()
    seed = _pick_seed(es, seed)
    notes: list[str] = []
    loaded = []
    for e in es:
        got = load_target(e.rows[seed])
        if got is None:
            notes.append(
                f"{e.defense}: its target or reconstructions are not in this workdir's artifact cache"
            )
        else:
            loaded.append((e, *got))
    if not loaded:
        raise PlotError("nothing to project: " + "; ".join(notes))
    attacked = sorted(set.intersection(*(set(inv.labels.tolist()) for *_, inv in loaded)))[:classes]
    if not attacked:
        raise PlotError("the defenses here attacked no class in common")
    priv = load_private(loaded[0][0])
    fig, axes = plt.subplots(
        len(attacked), len(loaded), figsize=(2.2 * len(loaded), 2.0 * len(attacked) + 0.6), squeeze=False
    )
    cpu = torch.device("cpu")
    for col, (e, target, defense, inv) in enumerate(loaded):
        for r, c in enumerate(attacked):
            x = priv.x[priv.y == c]
            sets = {"private": features(target, x, cpu)}
            if defense.transforms_images():
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    sets["private, defense transform"] = features(target, defense.train_transform(x), cpu)
            sets["reconstructions"] = features(target, inv.images[inv.labels == c], cpu)
            _projection(axes[r][col], sets)
            if r == 0:
                axes[r][col].set_title(text(e.defense), fontsize=8)
            if col == 0:
                names = getattr(load_private, "class_names", lambda e: None)(e)
                axes[r][col].set_ylabel(
                    text(names[c] if names and c < len(names) else f"class {c}"), fontsize=7
                )
    legend = {}  # every set drawn in some column (the defense-transformed set only in some)
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    order = sorted(legend, key=list(PROJECTION_STYLE).index)
    fig.legend([legend[k] for k in order], order, loc="lower center", ncol=3, fontsize=7, frameon=False)
    title = f"{group_title(loaded[0][0])}, seed {seed}: the target's penultimate features (PCA per panel)"
    fig.suptitle(text(textwrap.fill(title, max(30, int(2.2 * len(loaded) * 13)))), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    if path is not None:
        check_output(Path(path))
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
    return fig, (len(attacked), len(loaded)), notes


PROJECTION_STYLE = {
    "private": {"color": "0.55", "marker": "o", "s": 10},
    "private, defense transform": {"color": "tab:orange", "marker": "^", "s": 10},
    "reconstructions": {"color": "tab:red", "marker": "x", "s": 28},
}


def _projection(ax, sets: dict) -> None:
    """Scatter the first two principal components of the union of ``sets`` (name -> features)."""
    import torch

    allf = torch.cat(list(sets.values()))
    centred = allf - allf.mean(0)
    basis = (
        torch.linalg.svd(centred, full_matrices=False).Vh[:2].T
        if len(allf) > 1
        else torch.eye(len(allf[0]))[:, :2]
    )
    start = 0
    for name, f in sets.items():
        xy = (centred[start : start + len(f)] @ basis).numpy()
        start += len(f)
        ax.scatter(xy[:, 0], xy[:, 1], label=name, linewidths=0.8, **PROJECTION_STYLE[name])
    ax.set_xticks([])
    ax.set_yticks([])


def target_loader(registry, workdir: Path):
    """``load_target(row)`` for ``feature_projection``: the row's target rebuilt as its config
    says (architecture, defense), its stored weights, its defense and its reconstructions; None
    when the target or the reconstructions are not in the workdir's artifact cache."""
    from reinv_bench.engine.plan import Step
    from reinv_bench.engine.steps import Env, Worker, reconstructions

    worker = Worker(Env(str(workdir)), registry)

    def load(row):
        keys = row.artifacts or {}
        target, invert = keys.get("target"), keys.get("invert")
        if not (target and invert and worker.artifacts.exists(target) and worker.artifacts.exists(invert)):
            return None
        cfg = row.config or {}
        spec = {"scenario": row.scenario, "arch": cfg["arch"]["name"], "defense": cfg.get("defense")}
        worker.steps[target] = Step("target", spec)
        defense = worker.defense(cfg.get("defense"), row.budget)
        recon = reconstructions(worker.artifacts, invert)
        return worker.load_model(target), defense, Inversion(recon.images, recon.labels)

    return load
