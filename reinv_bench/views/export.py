"""``reinv-bench export DIR``: stored reconstructions, the private images they are judged against and
every verdict on them, in the layout of the public MI-Reconstruction-Collection (Ho et al., CVPR
2026 Findings, arXiv 2505.03519; hosytuyen/MI-Eval-MLLM @89010bc, ``README.md``,
``evaluation.ipynb``, ``utility.py``), so that other groups can re-judge them with their tools::

    DIR/manifest.json                                       every exported cell: labels, config, metrics
    DIR/<scenario>/private-data/<class>/<i>.png              private training images of the attacked classes
    DIR/<scenario>/<attack>/<public>/<target>/all-images/<class>/ID=<class>_T=<k>.png
    DIR/<scenario>/<attack>/<public>/<target>/prediction.csv       filename,prediction (evaluation model)
    DIR/<scenario>/<attack>/<public>/<target>/prediction_<B>.csv   a further evaluation model B
    DIR/<scenario>/<attack>/<public>/<target>/<judge>_results_<label>.csv   filename,label (a judge)
    DIR/<scenario>/<attack>/<public>/<target>/cell.json            the cell: ids, config, metrics, files

As the official code reads it: ``evaluation.ipynb`` takes the private images from
``<collection>/<dataset>/private-data/<class>`` (the dataset level, shared by its setups; the
README's example puts them in each setup, the notebook's code does not) and the reconstructions
from ``<setup>/all-images/<class>``, matching class folders by name; ``compute_metrics`` reads two
columns of each CSV (``filename``, then ``label`` or ``prediction``: ``yes``/``no``) and pairs
rows by the ``ID=<n>_T=<n>`` in their file names. Reconstructions with no answer from a judge are
left out of its CSV (the official merge is an inner join).

Here: ``<dataset>`` is the scenario (its private split), ``<public>`` the part of its name after
the first ``-`` (``celeba64-ffhq`` -> ``ffhq``; a scenario without one draws its public data from
the private dataset: its own name, as the collection's ``CelebA/PLGMI/CelebA``), ``<target>``
the architecture, defense, budget and seed (the collection has one target per setup). ``<attack>``
is the attack's label with the parts the official code recognises spelled as the collection
spells them (``kedmi``, ``lomma``, ``plgmi`` -> ``KEDMI``, ``LOMMA``, ``PLGMI``: ``lomma+kedmi`` ->
``LOMMA+KEDMI``): ``utility.py::create_concatenated_images_with_labels`` resizes the private
images of a setup whose path contains one of those names with torchvision's ``Resize`` (bilinear)
and every other one with Pillow's ``resize`` (bicubic), so a lower-case folder would take the
other branch than the collection's setups of the same attack. ``<k>`` counts
the reconstructions of a class in the order the attack returned them. Images are PNG at the
resolution they were made (the official pipeline resizes them to 224 px when it builds panels).

A results database may be someone else's (a bundle): every folder or file name taken from it is
made safe (``safe``: no separator, never ``.`` or ``..``, at most 100 characters) and every path
is checked to lie under DIR; class labels and indices must be integers, artifact keys digests.
DIR must be empty, or (``force``) hold an earlier export: a cell exported again replaces its own
folder and manifest entry, the others stay listed. Cells that hold the same reconstructions (one
inversion under several metric sets, judges or ``--eval-arch`` runs) share one folder: the images
once, ``cell.json`` for the first and ``cell-<cell id>.json`` for each other, a verdict file once
where the cells agree and ``<name>-<cell id>.csv`` where they differ.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

from reinv_bench.contract.images import to_pil
from reinv_bench.results.judging import VERDICT, JudgeKey
from reinv_bench.results.store import Row

FORMAT, VERSION = "reinv-bench-export", 1
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")
MAX_NAME = 100  # characters of one folder or file name made from stored text


class ExportError(ValueError):
    """The export cannot be written as asked (DIR not empty, stored data unfit): one line."""


def safe(text: Any) -> str:
    """``text`` as one folder or file name (specs keep their name, ``[k=v,...]`` becomes ``_k=v_...``):
    no separator, no leading or trailing dot (never ``.`` or ``..``), at most ``MAX_NAME``
    characters (a longer one keeps its start and a digest of the whole)."""
    name = _UNSAFE.sub("_", str(text)).strip("_.") or "_"
    if len(name) > MAX_NAME:
        name = name[: MAX_NAME - 17] + "_" + hashlib.sha256(name.encode()).hexdigest()[:16]
    return name


def inside(out: Path, path: Path) -> Path:
    """``path``, checked to lie under ``out`` (an ``ExportError`` otherwise)."""
    if not path.resolve().is_relative_to(out.resolve()):
        raise ExportError(f"refusing to write {path}: it is not under {out}")
    return path


# MI-Eval-MLLM utility.py: ``if any(attack in mi_folder for attack in ["KEDMI", "LOMMA", "PLGMI"])``
OFFICIAL_ATTACK_NAMES = {"kedmi": "KEDMI", "lomma": "LOMMA", "plgmi": "PLGMI"}


def attack_folder(attack: str) -> str:
    """The attack's folder: its label, each ``+`` part the official code recognises by name spelled
    as the collection does (its private-image resize depends on it)."""

    def part(text: str) -> str:
        name, bracket, rest = text.partition("[")
        return OFFICIAL_ATTACK_NAMES.get(name, name) + bracket + rest

    return safe("+".join(part(p) for p in attack.split("+")))


def public_of(scenario: str) -> str:
    return scenario.split("-", 1)[1] if "-" in scenario else scenario


def target_of(row: Row) -> str:
    return safe(f"{row.arch}-{row.defense}-{row.budget}-seed{row.seed}")


def yes_no(v: float | None) -> str | None:
    return None if v is None else ("yes" if v == 1.0 else "no")


def _csv(path: Path, header: tuple[str, str], files: list[str], values: list[float | None]) -> int:
    """Write the answered (file, yes/no) pairs; how many."""
    rows = [(f, yes_no(v)) for f, v in zip(files, values) if v is not None]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return len(rows)


def verdict_files(row: Row, success: str) -> dict[str, tuple[tuple[str, str], list[float | None]]]:
    """CSV name -> (header, one 0/1/None per reconstruction): the evaluation model's success
    (``prediction.csv``), each further evaluation model's (``prediction_<B>.csv``) and each judge's
    (``<judge>_results_<label>.csv``), as stored with the row."""
    out: dict[str, tuple[tuple[str, str], list[float | None]]] = {}
    per = row.outcomes.per_reconstruction
    if success in per:
        out["prediction.csv"] = (("filename", "prediction"), per[success])
    for key, values in per.items():
        k = JudgeKey.parse(key)
        if k is None or len(values) != len(row.outcomes):
            continue
        base, label = k.kind, k.label
        if base == VERDICT:
            out[f"{safe(label.split('[')[0])}_results_{safe(label)}.csv"] = (("filename", "label"), values)
        elif base == success:
            out[f"prediction_{safe(label)}.csv"] = (("filename", "prediction"), values)
    return out


def export_cell(row: Row, recs, setup: Path) -> tuple[list[str], dict[int, None]]:
    """Write one cell's reconstructions and verdict CSVs under ``setup``; (file names in the order of
    the reconstructions, the attacked classes)."""
    files: list[str] = []
    seen: dict[int, int] = {}
    for chunk in recs.chunks():
        for x, c in zip(chunk.images, chunk.labels.tolist()):
            c = int(c)
            k = seen.get(c, 0)
            seen[c] = k + 1
            folder = setup / "all-images" / str(c)
            folder.mkdir(parents=True, exist_ok=True)
            name = f"ID={c}_T={k}.png"
            to_pil(x).save(folder / name)
            files.append(name)
    return files, dict.fromkeys(seen)


def export_private(split, classes: list[int], folder: Path, per_class: int | None) -> int:
    """The private training images of ``classes`` (the first ``per_class`` of each, all when None)."""
    n = 0
    for c in classes:
        idx = (split.y == c).nonzero().flatten().tolist()[:per_class]
        out = folder / str(int(c))
        out.mkdir(parents=True, exist_ok=True)
        for i in idx:
            to_pil(split.x[i]).save(out / f"{i}.png")
        n += len(idx)
    return n


def previous(out: Path, force: bool) -> dict[str, Any]:
    """The manifest of an earlier export in ``out`` (``{}``: none, ``out`` empty); ``ExportError``
    when ``out`` holds anything and ``force`` is not given, or holds something other than an
    export."""
    if not out.exists() or not any(out.iterdir()):
        return {}
    if not force:
        raise ExportError(
            f"{out} is not empty: give an empty DIR, or --force to replace the cells exported again"
        )
    try:
        manifest = json.loads((out / "manifest.json").read_text())
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError("not an export manifest")
    except (OSError, ValueError) as exc:
        raise ExportError(
            f"{out} is not empty and holds no export of reinv-bench (manifest.json: {type(exc).__name__}); "
            "give an empty DIR"
        ) from None
    return manifest


def own_folder(out: Path, folder: str | None) -> Path | None:
    """The folder an earlier export wrote a cell to (``<scenario>/<attack>/<public>/<target>``, each
    part a safe name), when it is one and exists; None otherwise (never DIR itself or outside it)."""
    parts = (folder or "").split("/")
    if len(parts) != 4 or any(p != safe(p) for p in parts):
        return None
    path = out.joinpath(*parts)
    return path if path.is_dir() and not path.is_symlink() and inside(out, path) else None


def export(
    rows: list[Row],
    load_reconstructions,
    load_private,
    out: Path,
    success: str,
    per_class: int | None = None,
    force: bool = False,
) -> tuple[dict[str, Any], list[str]]:
    """Export ``rows`` (stored successful cells) under ``out``; (the manifest, notes on cells left out).
    ``out`` must be empty, or (``force``) hold an earlier export: a cell exported again replaces its
    folder and its manifest entry. ``load_reconstructions(key)``: a row's reconstructions
    (``.exists(key)``: whether the workdir holds them); ``load_private(row)``: the private training
    split of its scenario (``reinv_bench.engine.loaders``)."""
    old = previous(out, force)
    old_cells = [c for c in old.get("cells") or [] if isinstance(c, dict)]
    folder_of = {str(c.get("cell_id")): str(c.get("folder")) for c in old_cells}
    taken = set(folder_of.values())  # folders of the earlier export's cells
    out.mkdir(parents=True, exist_ok=True)
    inversions, notes = _inversions(rows, load_reconstructions)
    cells: list[dict[str, Any]] = []
    classes: dict[str, dict[int, None]] = {}
    first: dict[str, Row] = {}
    replaced: set[str] = set()
    for key, held in inversions.items():
        row = held[0]
        setup = _setup(out, held, folder_of, taken, replaced)
        files, attacked = export_cell(row, load_reconstructions(key), setup)
        classes.setdefault(str(row.scenario), {}).update(attacked)
        first.setdefault(str(row.scenario), row)
        cells += _cell_files(out, setup, held, files, success)
    private = {k: v for k, v in (old.get("private_images") or {}).items() if isinstance(v, int)}
    for scenario, attacked in classes.items():
        split = load_private(first[scenario])
        private[scenario] = export_private(
            split, sorted(attacked), inside(out, out / safe(scenario) / "private-data"), per_class
        )
    again = {c["cell_id"] for c in cells}
    kept = [c for c in old_cells if c.get("cell_id") not in again and c.get("folder") not in replaced]
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "layout": "MI-Reconstruction-Collection (hosytuyen/MI-Eval-MLLM)",
        "private_images": private,
        "cells": kept + cells,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
    return manifest, notes


def _inversions(rows: list[Row], load_reconstructions) -> tuple[dict[str, list[Row]], list[str]]:
    """One folder per inversion: the cells that hold the same reconstructions (one per metric set,
    judge or --eval-arch run) share it, the images written once; (inversion key -> its rows, notes
    on the rows whose reconstructions are not in the workdir)."""
    notes: list[str] = []
    inversions: dict[str, list[Row]] = {}
    for row in sorted(
        rows, key=lambda r: tuple(map(str, (r.scenario, r.attack, r.arch, r.defense, r.budget, r.seed)))
    ):
        key = (row.artifacts or {}).get("invert")
        if row.outcomes is None or not key or not load_reconstructions.exists(key):
            notes.append(
                f"{row.scenario} {row.attack} vs {row.defense} seed {row.seed}: its reconstructions are not "
                "in this workdir's artifact cache; left out"
            )
            continue
        inversions.setdefault(key, []).append(row)
    return inversions, notes


def _setup(
    out: Path, held: list[Row], folder_of: dict[str, str], taken: set[str], replaced: set[str]
) -> Path:
    """The folder of one inversion (``held``: its rows): the one an earlier export gave it
    (emptied), else ``<scenario>/<attack>/<public>/<target>`` (``-<cell id>`` after it when another
    inversion has that name); ``taken`` and ``replaced`` updated."""
    row = held[0]
    setup = (
        out
        / safe(row.scenario)
        / attack_folder(str(row.attack))
        / safe(public_of(str(row.scenario)))
        / target_of(row)
    )
    again = next((f for r in held if (f := own_folder(out, folder_of.get(str(r.cell_id))))), None)
    if again is not None:
        setup = again  # exported before: its own folder, replaced
        shutil.rmtree(setup)
        replaced.add(setup.relative_to(out).as_posix())
    elif setup.relative_to(out).as_posix() in taken or setup.exists():
        # another inversion of the same labels (another config): its own folder
        setup = setup.with_name(f"{setup.name}-{safe(row.cell_id)[:12]}")
    inside(out, setup)
    taken.add(setup.relative_to(out).as_posix())
    return setup


def _cell_files(
    out: Path, setup: Path, held: list[Row], files: list[str], success: str
) -> list[dict[str, Any]]:
    """Write the verdict CSVs and ``cell.json`` of each row of one inversion into ``setup``; their
    manifest entries."""
    cells = []
    csvs: dict[str, str] = {}  # file name -> its content's digest, in this folder
    for n, row in enumerate(held):
        if len(files) != len(row.outcomes):
            raise ExportError(
                f"cell {safe(row.cell_id)}: {len(files)} reconstructions stored for "
                f"{len(row.outcomes)} outcomes"
            )
        written = {}
        for name, (header, values) in verdict_files(row, success).items():
            same = hashlib.sha256(json.dumps([header, values]).encode()).hexdigest()
            if csvs.get(name, same) != same:  # another cell's other verdicts under this name
                name = f"{name.removesuffix('.csv')}-{safe(row.cell_id)[:12]}.csv"
            if name not in csvs:
                csvs[name] = same
                written[name] = _csv(setup / name, header, files, values)
            else:
                written[name] = sum(v is not None for v in values)
        cell = {
            "folder": setup.relative_to(out).as_posix(),
            "cell_id": row.cell_id,
            **{
                k: row[k] for k in ("scenario", "attack", "defense", "arch", "budget", "seed", "threat_model")
            },
            "public": public_of(str(row.scenario)),
            "success_key": success,
            "verdicts": written,
            "metrics": row.metrics,
            "notes": row.notes,
            "config": row.config,
            "files": files,
        }
        name = "cell.json" if n == 0 else f"cell-{safe(row.cell_id)[:12]}.json"
        (setup / name).write_text(json.dumps(cell, indent=1, default=str))
        cells.append({k: v for k, v in cell.items() if k not in ("files", "config", "notes")})
    return cells
