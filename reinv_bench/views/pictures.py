"""Pictures of reconstructions (matplotlib, Agg backend), from what the caller's loaders give
(``reinv_bench.engine.loaders``: the views never load from a workdir themselves).

- ``reconstruction_grid``: rows = attacked classes; the first column a private training image of
  the class, then per defense the reconstruction the target is most confident in (what an
  attacker would pick), or every reconstruction (restart) of one cell.
- ``feature_projection``: the seed paper's feature-space figure: per attacked class (rows) and
  defense (columns), a 2-D projection of the target's penultimate features of the class's private
  training images, of those images under the defense's training transform (Random Erasing's
  erased images for ``re``), and of the reconstructions.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import torch

from reinv_bench.results.entries import Entry
from reinv_bench.views.plots import DPI, PlotError, _pyplot, check_output, group_title, text

CELL_INCHES = 1.1  # one image of a reconstruction grid


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
    load_reconstructions,
    load_private,
    path: Path | None = None,
    classes: int = 8,
    seed: int | None = None,
    restarts: str | None = None,
    dpi: int = DPI,
):
    """Draw one group's grid and save it to ``path``. ``load_reconstructions(key)``: a row's
    reconstructions (``.exists(key)``: whether the workdir holds them; ``reinv_bench.engine.loaders.
    reconstruction_loader``); ``load_private(entry) -> Split``: the private training data of
    an entry's scenario. ``restarts``: a defense label: every reconstruction of its cell instead
    of one per defense. Returns (figure, (rows, columns), notes)."""
    plt = _pyplot()
    if restarts is not None:
        es = [e for e in es if e.defense == restarts]
        if not es:
            raise PlotError(f"no defense {restarts!r} here")
    seed = _pick_seed(es, seed)
    cells, notes = _load_cells(es, seed, load_reconstructions)
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


def _load_cells(es: list[Entry], seed: int, load_reconstructions) -> tuple[list[tuple], list[str]]:
    """Per entry (entry, images, labels, the target's confidences or None) of ``seed``, and notes
    on the entries that cannot be shown."""
    notes: list[str] = []
    cells = []
    for e in es:
        row = e.rows[seed]
        key = (row.artifacts or {}).get("invert")
        if not key:
            notes.append(f"{e.defense}: stored before reconstructions were linked to rows; rerun to show it")
            continue
        if not load_reconstructions.exists(key):
            notes.append(f"{e.defense}: reconstructions {key[:12]} are not in this workdir's artifact cache")
            continue
        inv = load_reconstructions(key)
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
    defense without one) and the reconstructions (red). ``load_target(row) -> (features,
    defense, reconstructions)`` (``features(x)``: the target's penultimate features of ``x``) or
    None when the row's artifacts are not in the workdir. Returns (figure, (rows, columns), notes)."""
    plt = _pyplot()
    seed = _pick_seed(es, seed)
    loaded, notes = _load_targets(es, seed, load_target)
    attacked = sorted(set.intersection(*(set(inv.labels.tolist()) for *_, inv in loaded)))[:classes]
    if not attacked:
        raise PlotError("the defenses here attacked no class in common")
    priv = load_private(loaded[0][0])
    fig, axes = plt.subplots(
        len(attacked), len(loaded), figsize=(2.2 * len(loaded), 2.0 * len(attacked) + 0.6), squeeze=False
    )
    for col, (e, featurize, defense, inv) in enumerate(loaded):
        for r, c in enumerate(attacked):
            x = priv.x[priv.y == c]
            sets = {"private": featurize(x)}
            if defense.transforms_images():
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    sets["private, defense transform"] = featurize(defense.train_transform(x))
            sets["reconstructions"] = featurize(inv.images[inv.labels == c])
            _projection(axes[r][col], sets)
            if r == 0:
                axes[r][col].set_title(text(e.defense), fontsize=8)
            if col == 0:
                names = getattr(load_private, "class_names", lambda e: None)(e)
                axes[r][col].set_ylabel(
                    text(names[c] if names and c < len(names) else f"class {c}"), fontsize=7
                )
    _projection_legend(fig, axes)
    title = f"{group_title(loaded[0][0])}, seed {seed}: the target's penultimate features (PCA per panel)"
    fig.suptitle(text(textwrap.fill(title, max(30, int(2.2 * len(loaded) * 13)))), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    if path is not None:
        check_output(Path(path))
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
    return fig, (len(attacked), len(loaded)), notes


def _load_targets(es: list[Entry], seed: int, load_target) -> tuple[list[tuple], list[str]]:
    """Per entry (entry, features, defense, reconstructions) of ``seed``, and notes on the entries
    whose target or reconstructions are not in the workdir."""
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
    return loaded, notes


def _projection_legend(fig, axes) -> None:
    legend = {}  # every set drawn in some column (the defense-transformed set only in some)
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    order = sorted(legend, key=list(PROJECTION_STYLE).index)
    fig.legend([legend[k] for k in order], order, loc="lower center", ncol=3, fontsize=7, frameon=False)


PROJECTION_STYLE = {
    "private": {"color": "0.55", "marker": "o", "s": 10},
    "private, defense transform": {"color": "tab:orange", "marker": "^", "s": 10},
    "reconstructions": {"color": "tab:red", "marker": "x", "s": 28},
}


def _projection(ax, sets: dict) -> None:
    """Scatter the first two principal components of the union of ``sets`` (name -> features)."""
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
