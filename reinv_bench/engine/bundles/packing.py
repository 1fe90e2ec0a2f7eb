"""``pack``: successful rows (with their checkpoints, and sample reconstructions) into one
bundle file (the layout: ``reinv_bench.engine.bundles``)."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reinv_bench.contract.images import to_pil
from reinv_bench.engine.artifacts import ArtifactError, Artifacts, file_sha256, write_atomic
from reinv_bench.engine.bundles.rows import (
    FORMAT,
    MODEL_KINDS,
    VERSION,
    BundleError,
    _named_keys,
    _now,
    _row_digests,
    _safe,
    _sha,
)
from reinv_bench.engine.steps import environment, reconstructions
from reinv_bench.results.aggregate import split_stale
from reinv_bench.results.store import SCHEMA_VERSION, Row


@dataclass
class Packed:
    """What ``pack`` wrote: the file, its rows, the checkpoints and images it holds, the SHA-256 of
    its manifest, and notes (rows left out, and why)."""

    path: Path
    rows: int
    models: list[str]
    samples: int
    digest: str
    notes: list[str] = field(default_factory=list)


def _artifact_index(rows: list[Row], artifacts: Artifacts) -> dict[str, dict[str, Any]]:
    """key -> {"sha256", "kind", "label"} of every artifact the rows were computed against: the
    SHA-256 the row stored, else (rows of before schema 3) the record's here, else null."""
    index: dict[str, dict[str, Any]] = {}
    for r in rows:
        named = r.artifacts or {}
        kinds = {named.get("eval"): "eval", named.get("target"): "target", named.get("invert"): "invert"}
        kinds |= {k: "prior" for k in named.get("priors") or ()}
        labels = {
            named.get("target"): f"{r.scenario} target {r.arch} / {r.defense} / {r.budget} / seed {r.seed}",
            named.get("eval"): f"{r.scenario} evaluation model ({r.protocol or '-'}) / {r.budget}",
        }
        for key, sha in {**dict.fromkeys(_named_keys(r)), **_row_digests(r)}.items():
            sha = sha or (artifacts.record(key) or {}).get("sha256")
            entry = index.setdefault(key, {"sha256": sha, "kind": kinds.get(key, "evaluator")})
            if key in labels:
                entry["label"] = labels[key]
    return index


def _models(rows: list[Row], artifacts: Artifacts, index: dict[str, dict[str, Any]]) -> dict[str, dict]:
    """key -> record of every model checkpoint of the rows (targets, evaluation models, further
    evaluators, and what they were trained from), each verified against the rows' SHA-256."""
    todo = [
        k
        for k, e in index.items()
        if e["kind"] in ("eval", "target")
        or ((artifacts.record(k) or {}).get("meta") or {}).get("kind") in MODEL_KINDS
    ]
    records: dict[str, dict] = {}
    while todo:
        key = todo.pop(0)
        if key in records:
            continue
        rec, sha = artifacts.record(key), artifacts.digest(key)
        if rec is None or sha is None:
            what = index.get(key, {}).get("label") or f"artifact {key}"
            raise BundleError(
                f"--with-models: {what} is not (intact) in this workdir's artifact cache; pack from the "
                "workdir that trained it, or narrow the filters (nothing written)"
            )
        if index.get(key, {}).get("sha256") not in (None, sha):
            raise BundleError(
                f"--with-models: {key} was rebuilt since the rows were computed against it (other bytes); "
                "rerun those cells or pack without --with-models (nothing written)"
            )
        records[key] = rec
        todo += [d for d in rec.get("deps") or {} if d not in records]
    return records


def _samples(rows: list[Row], artifacts: Artifacts, n: int, notes: list[str]) -> dict[str, bytes]:
    """The first ``n`` reconstructions of each row, as PNG files."""
    files: dict[str, bytes] = {}
    for r in rows:
        key = (r.artifacts or {}).get("invert")
        if not key or not artifacts.exists(key):
            notes.append(f"cell {r.cell_id}: its reconstructions are not in this workdir's cache; no sample")
            continue
        i = 0
        for chunk in reconstructions(artifacts, key).chunks():
            for x, c in zip(chunk.images, chunk.labels.tolist()):
                if i >= n:
                    break
                buf = io.BytesIO()
                to_pil(x).save(buf, format="PNG")
                files[f"samples/{r.cell_id}/{i:03d}-class{int(c)}.png"] = buf.getvalue()
                i += 1
            if i >= n:
                break
    return files


def pack(
    rows: list[Row],
    artifacts: Artifacts,
    out: Path,
    cards: dict[str, str],
    *,
    with_models: bool = False,
    samples: int = 0,
    filters: dict[str, Any] | None = None,
) -> Packed:
    """Write the successful ``rows`` (and, with ``with_models``, their checkpoints; with
    ``samples``, that many reconstructions per cell as PNG) as one bundle ``out``; ``cards``:
    scenario -> its protocol card. Rows computed against an artifact rebuilt since (stale: the
    leaderboard leaves them out) are left out here too."""
    notes: list[str] = []
    rows, stale = split_stale([r for r in rows if r.status == "ok"])
    if stale:
        notes.append(f"{len(stale)} stale row(s) left out (an artifact they read was rebuilt since)")
    if not rows:
        raise BundleError("no successful results match the filters; nothing written")
    index = _artifact_index(rows, artifacts)
    files: dict[str, bytes | Path] = {
        "rows.json": json.dumps([dict(r) for r in rows], default=str).encode(),
    }
    for scenario in sorted({r.scenario for r in rows}):
        if scenario in cards:
            files[f"protocols/{_safe(scenario)}.txt"] = cards[scenario].encode()
        else:
            notes.append(f"scenario {scenario} is not installed here: no protocol card in the bundle")
    models = _models(rows, artifacts, index) if with_models else {}
    for key, rec in models.items():
        files[f"artifacts/{key[:2]}/{key}.pt"] = artifacts.path(key)
        files[f"artifacts/{key[:2]}/{key}.json"] = json.dumps(rec, default=str).encode()
        entry = index.setdefault(key, {"kind": (rec.get("meta") or {}).get("kind")})
        entry.update(sha256=rec["sha256"], included=True)  # (_models checked it is the rows' SHA-256)
    if samples:
        files |= _samples(rows, artifacts, samples, notes)
    files = {"bundle.json": _header(rows, models, samples, filters), **files}
    manifest = _manifest(files, index, models)
    try:
        write_atomic(Path(out), _tar_writer(files, manifest))
    except ArtifactError as exc:
        raise BundleError(str(exc)) from None
    images = sum(1 for n in files if n.startswith("samples/"))
    return Packed(Path(out), len(rows), sorted(models), images, _sha(manifest), notes)


def _header(rows: list[Row], models: dict[str, dict], samples: int, filters: dict[str, Any] | None) -> bytes:
    """``bundle.json``: format, version, schema version, the packing environment, what it holds."""
    env = {k: v for k, v in environment("").items() if k not in ("executor", "deterministic")}
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "schema_version": SCHEMA_VERSION,
        "created_at": _now(),
        "environment": env,
        "rows": len(rows),
        "scenarios": sorted({r.scenario for r in rows}),
        "filters": {k: list(v) for k, v in (filters or {}).items() if v},
        "models": sorted(models),
        "samples": samples,
    }
    return json.dumps(meta, indent=1).encode()


def _manifest(
    files: dict[str, bytes | Path], index: dict[str, dict[str, Any]], models: dict[str, dict]
) -> bytes:
    """``manifest.json``: every file's SHA-256 and size, every artifact's key and SHA-256."""
    listed = {
        name: {
            "sha256": file_sha256(src) if isinstance(src, Path) else _sha(src),
            "size": src.stat().st_size if isinstance(src, Path) else len(src),
        }
        for name, src in files.items()
    }
    manifest = json.dumps(
        {"format": FORMAT, "version": VERSION, "files": listed, "artifacts": index}, indent=1, sort_keys=True
    ).encode()
    for key in models:  # the payload hashed now is the one the record names (nothing changed it meanwhile)
        if listed[f"artifacts/{key[:2]}/{key}.pt"]["sha256"] != models[key]["sha256"]:
            raise BundleError(f"artifact {key} changed while it was packed; rerun pack (nothing written)")
    return manifest


def _tar_writer(files: dict[str, bytes | Path], manifest: bytes) -> Callable[[Path], None]:
    """What writes the bundle (gzip'd tar, no timestamps): bundle.json and manifest.json first."""
    order = ["bundle.json", "manifest.json", *(n for n in files if n != "bundle.json")]
    contents = {**files, "manifest.json": manifest}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name in order:
                    src = contents[name]
                    info = tarfile.TarInfo(name)
                    info.mode, info.mtime = 0o644, 0
                    if isinstance(src, Path):
                        info.size = src.stat().st_size
                        with open(src, "rb") as f:
                            tar.addfile(info, f)
                    else:
                        info.size = len(src)
                        tar.addfile(info, io.BytesIO(src))

    return write
