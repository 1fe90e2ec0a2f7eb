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
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from reinv_bench import judging
from reinv_bench.images import to_pil
from reinv_bench.store import Row

FORMAT, VERSION = "reinv-bench-export", 1
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def safe(text: str) -> str:
    """``text`` as one folder or file name (specs keep their name, ``[k=v,...]`` becomes ``_k=v_...``)."""
    return _UNSAFE.sub("_", str(text)).strip("_") or "_"


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
        parts = judging.split_key(key)
        if parts is None or len(values) != len(row.outcomes):
            continue
        base, label = parts
        if base == judging.VERDICT:
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
        out = folder / str(c)
        out.mkdir(parents=True, exist_ok=True)
        for i in idx:
            to_pil(split.x[i]).save(out / f"{i}.png")
        n += len(idx)
    return n


def export(
    rows: list[Row], artifacts, load_private, out: Path, success: str, per_class: int | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Export ``rows`` (stored successful cells) under ``out``; (the manifest, notes on cells left out)."""
    from reinv_bench.steps import reconstructions

    notes: list[str] = []
    cells: list[dict[str, Any]] = []
    classes: dict[str, dict[int, None]] = {}
    first: dict[str, Row] = {}
    for row in sorted(rows, key=lambda r: (r.scenario, r.attack or "", r.arch, r.defense, r.budget, r.seed)):
        key = (row.artifacts or {}).get("invert")
        if row.outcomes is None or not key or not artifacts.exists(key):
            notes.append(
                f"{row.scenario} {row.attack} vs {row.defense} seed {row.seed}: its reconstructions are not "
                "in this workdir's artifact cache; left out"
            )
            continue
        setup = (
            out
            / safe(row.scenario)
            / attack_folder(row.attack)
            / safe(public_of(row.scenario))
            / target_of(row)
        )
        if setup.exists():  # another cell of the same labels (another config): its own folder
            setup = setup.with_name(f"{setup.name}-{row.cell_id[:12]}")
        files, attacked = export_cell(row, reconstructions(artifacts, key), setup)
        if len(files) != len(row.outcomes):
            raise ValueError(
                f"cell {row.cell_id}: {len(files)} reconstructions stored for {len(row.outcomes)} outcomes"
            )
        written = {
            name: _csv(setup / name, header, files, values)
            for name, (header, values) in verdict_files(row, success).items()
        }
        classes.setdefault(row.scenario, {}).update(attacked)
        first.setdefault(row.scenario, row)
        cell = {
            "folder": setup.relative_to(out).as_posix(),
            "cell_id": row.cell_id,
            **{
                k: row[k] for k in ("scenario", "attack", "defense", "arch", "budget", "seed", "threat_model")
            },
            "public": public_of(row.scenario),
            "success_key": success,
            "verdicts": written,
            "metrics": row.metrics,
            "notes": row.notes,
            "config": row.config,
            "files": files,
        }
        (setup / "cell.json").write_text(json.dumps(cell, indent=1, default=str))
        cells.append({k: v for k, v in cell.items() if k not in ("files", "config", "notes")})
    private = {}
    for scenario, attacked in classes.items():
        split = load_private(first[scenario])
        private[scenario] = export_private(
            split, sorted(attacked), out / safe(scenario) / "private-data", per_class
        )
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "layout": "MI-Reconstruction-Collection (hosytuyen/MI-Eval-MLLM)",
        "private_images": private,
        "cells": cells,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
    return manifest, notes
