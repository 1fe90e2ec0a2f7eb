"""Results that travel: bundles (``pack``, ``verify``), merging rows of other workdirs
(``merge``) and a zoo of trained targets (``zoo add``, ``zoo list``).

A bundle is one ``.tar.gz`` file::

    bundle.json                  format, version, schema version of its rows, the packing environment
    manifest.json                every other file's SHA-256 and size; every artifact's key and SHA-256
    rows.json                    the rows (all columns: outcomes with the judges' answers, config, env)
    protocols/<scenario>.txt     the protocol card of each scenario of the rows
    artifacts/<kk>/<key>.pt      --with-models: target and evaluation-model checkpoints (and what
    artifacts/<kk>/<key>.json      they were trained from), with their records
    samples/<cell>/<i>-class<c>.png   --with-samples N: the first N reconstructions of each cell

``bundle.json`` and ``manifest.json`` come first, so a reader refuses a newer format early. The
manifest lets anyone check the bundle (``verify``): a file changed after packing no longer
matches it. The manifest's own SHA-256 (printed by ``pack`` and ``verify``) names the bundle: a
lab that publishes it lets others check they hold the same bytes (the manifest guards against
damage and edits made without rewriting it, not against a forger who rewrites it too).

A bundle, and another workdir's results.db, are read as untrusted input: members must be
regular files with names of the layout above (no absolute path, no ``..``, no link), of bounded
size and count; extraction uses tarfile's ``data`` filter; checkpoints are loaded with
``torch.load(weights_only=True)`` (a pickle that asks for code is refused, nothing runs), and
every row is checked column by column before anything is written. Every refusal is one
``BundleError`` line, and nothing is written before all inputs are checked.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
import io
import json
import math
import os
import re
import shutil
import sqlite3
import tarfile
import tempfile
import urllib.parse
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reinv_bench.engine.artifacts import ArtifactError, Artifacts, StepLock, file_sha256, write_atomic
from reinv_bench.results.store import JSON_COLUMNS, LABELS, SCHEMA_VERSION, Row, Store, columns_of

FORMAT, VERSION = "reinv-bench-bundle", 1
MAX_JSON = 256 * 2**20  # bundle.json, manifest.json, rows.json, a record, a protocol card
MAX_FILE = 64 * 2**30  # a checkpoint or an image
MAX_TOTAL = 256 * 2**30  # all members together
MAX_MEMBERS = 100_000
MODEL_KINDS = ("eval", "target", "pretrain")  # what --with-models packs (a target's training deps too)

_HEX = r"[0-9a-f]{8,64}"
_NAME = r"[A-Za-z0-9._=+-]{1,120}"
_MEMBER = re.compile(
    rf"bundle\.json|manifest\.json|rows\.json|protocols/{_NAME}\.txt|"
    rf"artifacts/[0-9a-f]{{2}}/(?P<key>{_HEX})\.(?P<ext>pt|json)|samples/{_HEX}/{_NAME}\.png"
)
_KEY = re.compile(_HEX)
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


class BundleError(ValueError):
    """A bundle or a source of rows cannot be used; one line that says why and what to do."""


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", str(text)).strip("_")[:120] or "_"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def environment_of(row: Row) -> dict[str, Any]:
    """What computed ``row``: its device, versions, precision and (schema 4) its environment."""
    return {
        "device": row.device,
        "torch": row.torch_version,
        "reinv-bench": row.reinv_version,
        "precision": (row.config or {}).get("precision") or "fp32",
        "created_at": row.created_at,
        **(row.environment or {}),
    }


def describe_environment(env: dict[str, Any]) -> str:
    """One short phrase for a conflict line: device, executor, torch, reinv-bench, created."""
    parts = [str(env.get("device") or "device ?")]
    if env.get("executor"):
        parts.append(f"executor {env['executor']}")
    parts += [f"torch {env.get('torch') or '?'}", f"reinv-bench {env.get('reinv-bench') or '?'}"]
    if env.get("precision") not in (None, "fp32"):
        parts.append(str(env["precision"]))
    return ", ".join(parts) + (f", {env['created_at']}" if env.get("created_at") else "")


# ---- rows as untrusted input --------------------------------------------------------------------


def _finite_number(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))


def check_row(data: Any, schema: int, where: str) -> Row:
    """A ``Row`` of this schema from a stored row of schema ``schema`` (its columns as JSON values),
    every column checked; ``where`` names it in the one-line ``BundleError``."""
    if not isinstance(data, dict):
        raise BundleError(f"{where}: not a row (a JSON object)")
    want = set(columns_of(schema))
    if set(data) != want:
        odd = sorted(set(data) ^ want)[:4]
        raise BundleError(f"{where}: the columns differ from those of schema {schema} ({', '.join(odd)})")
    cell = data["cell_id"]
    if not isinstance(cell, str) or not _KEY.fullmatch(cell):
        raise BundleError(f"{where}: cell_id {str(cell)[:40]!r} is not a hexadecimal digest")
    for k in LABELS:
        v = data.get(k)
        ok = isinstance(v, int) and not isinstance(v, bool) if k == "seed" else isinstance(v, str)
        if not ok and not (v is None and k in ("protocol", "threat_model")):
            raise BundleError(f"{where} (cell {cell}): label {k} is {type(v).__name__}, not valid")
    for k in JSON_COLUMNS:
        if data.get(k) is not None and not isinstance(data[k], dict):
            raise BundleError(f"{where} (cell {cell}): column {k} is not a JSON object")
    if data["status"] not in ("ok", "failed", None):
        raise BundleError(f"{where} (cell {cell}): status {str(data['status'])[:20]!r}")
    bad = [m for m, v in (data["metrics"] or {}).items() if not _finite_number(v)]
    if bad:
        raise BundleError(f"{where} (cell {cell}): metric {bad[0]!r} is not a number")
    try:
        row = Row(**{**dict.fromkeys(columns_of(SCHEMA_VERSION)), **data})
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise BundleError(f"{where} (cell {cell}): unreadable ({type(exc).__name__}: {exc})") from None
    for k, sha in _row_digests(row).items():
        if not (_KEY.fullmatch(str(k)) and re.fullmatch(r"[0-9a-f]{64}", str(sha))):
            raise BundleError(f"{where} (cell {cell}): artifact digest {str(k)[:30]!r} is malformed")
    for k in _named_keys(row):  # they become paths in the artifact cache (show, export, pack)
        if not (isinstance(k, str) and _KEY.fullmatch(k)):
            raise BundleError(
                f"{where} (cell {cell}): artifact key {str(k)[:30]!r} is not a hexadecimal digest"
            )
    return row


def _named_keys(row: Row) -> list[Any]:
    """The artifact keys a row names (its evaluation model, target, priors, inversion)."""
    named = row.artifacts or {}
    priors = named.get("priors") or []
    return [named.get(k) for k in ("eval", "target", "invert") if named.get(k) is not None] + (
        list(priors) if isinstance(priors, list) else [priors]
    )


def _row_digests(row: Row) -> dict[str, str]:
    sha = (row.artifacts or {}).get("sha256") or {}
    return dict(sha) if isinstance(sha, dict) else {}


def read_workdir(workdir: Path) -> list[Row]:
    """The rows of another workdir's results.db, opened read-only (it is not migrated in place)
    and checked as untrusted input; rows of an older schema migrate, a newer one is refused."""
    db = Path(workdir) / "results.db"
    if not db.is_file():
        raise BundleError(f"{workdir}: no results.db there; give a workdir with results or a bundle")
    try:
        con = sqlite3.connect(f"file:{urllib.parse.quote(str(db.resolve()))}?mode=ro", uri=True)
        try:
            con.row_factory = sqlite3.Row
            (version,) = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            schema = _schema(version, str(db))
            stored = [dict(r) for r in con.execute("SELECT * FROM results ORDER BY created_at")]
        finally:
            con.close()
    except (sqlite3.Error, TypeError) as exc:
        raise BundleError(f"{db} is not a readable reinv-bench database ({exc})") from None
    rows = []
    for i, d in enumerate(stored):
        for c in JSON_COLUMNS:
            if isinstance(d.get(c), str):
                if len(d[c]) > MAX_JSON:
                    raise BundleError(
                        f"{db} row {i + 1}: column {c} is larger than {MAX_JSON} bytes; refused"
                    )
                try:
                    d[c] = json.loads(d[c])
                except (ValueError, RecursionError):
                    raise BundleError(f"{db} row {i + 1}: column {c} is not JSON") from None
        rows.append(check_row(d, schema, f"{db} row {i + 1}"))
    return rows


def _schema(value: Any, where: str) -> int:
    try:
        schema = int(value)
    except (TypeError, ValueError):
        raise BundleError(f"{where}: schema version {str(value)[:20]!r} is not a number") from None
    if schema > SCHEMA_VERSION:
        raise BundleError(
            f"{where} holds rows of schema version {schema}, newer than this reinv-bench's "
            f"{SCHEMA_VERSION}; upgrade reinv-bench to read it (nothing was written)"
        )
    if schema < 1:
        raise BundleError(f"{where}: schema version {schema} is not one reinv-bench wrote")
    return schema


# ---- pack ---------------------------------------------------------------------------------------


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
    from reinv_bench.contract.images import to_pil
    from reinv_bench.engine.steps import reconstructions

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
    from reinv_bench.engine.host import environment
    from reinv_bench.results.aggregate import split_stale

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
    files = {"bundle.json": json.dumps(meta, indent=1).encode(), **files}
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

    try:
        write_atomic(Path(out), write)
    except ArtifactError as exc:
        raise BundleError(str(exc)) from None
    images = sum(1 for n in files if n.startswith("samples/"))
    return Packed(Path(out), len(rows), sorted(models), images, _sha(manifest), notes)


# ---- read and verify ----------------------------------------------------------------------------


@dataclass
class Bundle:
    """A bundle read and verified: its header (``bundle.json``), manifest, rows (migrated to this
    schema), protocol cards, the records of its checkpoints and, when read with ``stage``, where
    each checkpoint was extracted. ``digest``: the SHA-256 of its manifest."""

    path: Path
    meta: dict[str, Any]
    manifest: dict[str, Any]
    rows: list[Row]
    cards: dict[str, str]
    records: dict[str, dict[str, Any]]
    staged: dict[str, Path]
    digest: str
    samples: int


def _read_member(tar: tarfile.TarFile, m: tarfile.TarInfo, keep: bool) -> tuple[str, bytes | None]:
    """(sha256, the bytes when ``keep``) of a member, read in bounded chunks."""
    f = tar.extractfile(m)
    h, parts = hashlib.sha256(), []
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
        if keep:
            parts.append(chunk)
    return h.hexdigest(), b"".join(parts) if keep else None


def check_checkpoint(path: Path, key: str, where: str) -> None:
    """A checkpoint of the bundle loads without running code (``weights_only``: a pickle that asks
    for any callable is refused) and is a model's state: {"key": its key, "state_dict": tensors}."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - whatever the unpickler refused, in one line
        text = " ".join(str(exc).split())
        asks = re.search(r"Unsupported global: GLOBAL (\S+)|GLOBAL (\S+)", text)
        if asks:
            why = f"its pickle asks for code ({asks.group(1) or asks.group(2)}), which is never run"
        else:
            why = f"it cannot be read as a checkpoint ({type(exc).__name__}: {text[:100]})"
        raise BundleError(f"{where}: {why}; refused (nothing written)") from None
    state = obj.get("state_dict") if isinstance(obj, dict) else None
    if not isinstance(obj, dict) or obj.get("key") != key or not isinstance(state, dict):
        raise BundleError(f"{where}: not the model checkpoint of artifact {key}; refused")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise BundleError(f"{where}: its state_dict holds more than named tensors; refused")


def read(path: Path, stage: Path | None = None) -> Bundle:
    """Read and verify the bundle at ``path`` (module docstring). Checkpoints are extracted one by
    one (into ``stage`` when given, kept there for ``zoo add``; else a temporary folder, removed)
    and loaded without code. Raises ``BundleError`` (one line) on any problem."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such bundle file")
    tmp = Path(tempfile.mkdtemp(prefix="reinv-bundle-")) if stage is None else Path(stage)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        return _read(path, tmp, keep=stage is not None)
    finally:
        if stage is None:
            shutil.rmtree(tmp, ignore_errors=True)


def _read(path: Path, tmp: Path, keep: bool) -> Bundle:
    hashes: dict[str, tuple[str, int]] = {}
    texts: dict[str, bytes] = {}
    staged: dict[str, Path] = {}
    unknown: list[str] = []
    total = 0
    try:
        with tarfile.open(path, "r|gz") as tar:
            for m in tar:
                name = m.name
                if len(hashes) + len(unknown) >= MAX_MEMBERS:
                    raise BundleError(
                        f"{path}: more than {MAX_MEMBERS} files; not a bundle reinv-bench wrote"
                    )
                match = _MEMBER.fullmatch(name)
                if match is None or not m.isfile():
                    unknown.append(name[:80])
                    continue
                if name in hashes:
                    raise BundleError(f"{path}: {name} appears twice; refused")
                limit = MAX_FILE if name.endswith((".pt", ".png")) else MAX_JSON
                total += m.size
                if m.size > limit or total > MAX_TOTAL:
                    raise BundleError(
                        f"{path}: {name} is {m.size} bytes, above the limit of {limit}; refused"
                    )
                try:
                    tarfile.data_filter(m, str(tmp))  # absolute paths, '..', links, devices: refused
                except tarfile.FilterError as exc:
                    raise BundleError(f"{path}: member {name[:80]!r} refused ({exc})") from None
                if match.group("ext") == "pt":
                    tar.extract(m, tmp, filter="data")
                    staged[match.group("key")] = tmp / name
                    hashes[name] = (file_sha256(tmp / name), m.size)
                else:
                    sha, data = _read_member(tar, m, keep=not name.endswith(".png"))
                    hashes[name] = (sha, m.size)
                    if data is not None:
                        texts[name] = data
    except (tarfile.ReadError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise BundleError(
            f"{path} is truncated or is not a reinv-bench bundle (.tar.gz): {exc or type(exc).__name__}; "
            "nothing written"
        ) from None
    meta = _json(texts, "bundle.json", path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BundleError(f"{path}: not a reinv-bench bundle (no bundle.json of format {FORMAT})")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise BundleError(
            f"{path} is of bundle format {meta.get('version')}, newer than this reinv-bench reads "
            f"({VERSION}); upgrade reinv-bench (nothing written)"
        )
    schema = _schema(meta.get("schema_version"), str(path))
    if unknown:
        raise BundleError(
            f"{path}: unexpected member {unknown[0]!r} (not a file of the bundle layout); refused"
        )
    manifest = _json(texts, "manifest.json", path)
    listed = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(listed, dict) or not isinstance(manifest.get("artifacts"), dict):
        raise BundleError(f"{path}: manifest.json is not a manifest; refused")
    for name, (sha, size) in hashes.items():
        if name == "manifest.json":
            continue
        entry = listed.get(name)
        if not isinstance(entry, dict) or entry.get("sha256") != sha or entry.get("size") != size:
            why = (
                "is not in the manifest"
                if not isinstance(entry, dict)
                else "does not match its manifest entry"
            )
            raise BundleError(
                f"{path}: {name} {why} (sha256 {sha[:16]}...): changed after packing; refused "
                "(nothing written)"
            )
    missing = sorted(set(listed) - set(hashes))
    if missing:
        raise BundleError(
            f"{path}: {missing[0]} is in the manifest but not in the bundle (truncated?); refused"
        )
    rows = _json(texts, "rows.json", path)
    if not isinstance(rows, list):
        raise BundleError(f"{path}: rows.json is not a list of rows")
    rows = [check_row(d, schema, f"{path} rows.json row {i + 1}") for i, d in enumerate(rows)]
    index: dict[str, Any] = manifest["artifacts"]
    for r in rows:
        for key, sha in _row_digests(r).items():
            if not isinstance(index.get(key), dict) or index[key].get("sha256") != sha:
                raise BundleError(
                    f"{path}: cell {r.cell_id} read artifact {key}, which the manifest does not list as such"
                )
    records = {}
    for key, file in staged.items():
        rec = _json(texts, f"artifacts/{key[:2]}/{key}.json", path)
        sha = hashes[f"artifacts/{key[:2]}/{key}.pt"][0]
        if not isinstance(rec, dict) or rec.get("key") != key or rec.get("sha256") != sha:
            raise BundleError(f"{path}: the record of checkpoint {key} does not match its bytes; refused")
        if (index.get(key) or {}).get("sha256") != sha or not isinstance(rec.get("deps", {}), dict):
            raise BundleError(f"{path}: checkpoint {key} is not the one the manifest lists; refused")
        if not all(_KEY.fullmatch(str(d)) for d in rec.get("deps") or {}):
            raise BundleError(f"{path}: the record of checkpoint {key} names a malformed dependency; refused")
        check_checkpoint(file, key, f"{path}: checkpoint {key}")
        if not keep:
            file.unlink(missing_ok=True)
        records[key] = rec
    cards = {
        n.removeprefix("protocols/").removesuffix(".txt"): t.decode("utf-8", "replace")
        for n, t in texts.items()
        if n.startswith("protocols/")
    }
    samples = sum(1 for n in hashes if n.startswith("samples/"))
    return Bundle(path, meta, manifest, rows, cards, records, staged, _sha(texts["manifest.json"]), samples)


def _json(texts: dict[str, bytes], name: str, path: Path) -> Any:
    if name not in texts:
        raise BundleError(f"{path}: {name} is missing; not a whole reinv-bench bundle")
    try:
        return json.loads(texts[name])
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"{path}: {name} is not valid JSON ({exc}); refused") from None


# ---- merge --------------------------------------------------------------------------------------


@dataclass
class Conflict:
    """A reproducibility conflict: an incoming row of a cell stored here with other numbers. Kept
    apart (``kept``), never written over the row here."""

    cell_id: str
    labels: dict[str, Any]
    source: str
    differences: list[tuple[str, Any, Any]]  # (metric, value here, value there)
    here: dict[str, Any]  # environment_of the row here
    there: dict[str, Any]
    kept: Path

    def describe(self) -> str:
        lab = self.labels
        what = "; ".join(f"{m}: here {a!r}, there {b!r}" for m, a, b in self.differences)
        return (
            f"CONFLICT {lab['scenario']} {lab['attack']} vs {lab['defense']} ({lab['arch']}, "
            f"{lab['budget']}, seed {lab['seed']}; cell {self.cell_id}) from {self.source}: {what}; "
            f"here: {describe_environment(self.here)}; there: {describe_environment(self.there)}; "
            f"kept apart in {self.kept}"
        )


@dataclass
class MergeReport:
    added: list[str] = field(default_factory=list)  # cell ids stored (new here, or here only as failed)
    reproduced: list[str] = field(default_factory=list)  # cells here with the same numbers
    conflicts: list[Conflict] = field(default_factory=list)
    skipped: int = 0  # failed rows of the sources (a failure is no result to merge)
    rows: int = 0  # rows read from the sources
    notes: list[str] = field(default_factory=list)


def read_source(path: Path) -> tuple[str, list[Row]]:
    """(name, rows) of a bundle file or another workdir."""
    path = Path(path).expanduser()
    if path.is_dir():
        return str(path), read_workdir(path)
    if path.is_file():
        return str(path), read(path).rows
    raise BundleError(f"{path}: no such bundle file or workdir")


def differences(here: Row, there: Row) -> list[tuple[str, Any, Any]]:
    """(metric, value here, value there) of every metric whose numbers differ (exactly: the
    same cell computed the same way gives the same numbers)."""
    a, b = here.metrics or {}, there.metrics or {}
    return [(m, a.get(m), b.get(m)) for m in sorted(set(a) | set(b)) if a.get(m) != b.get(m)]


def merge(sources: Iterable[Path], workdir: Path) -> MergeReport:
    """Bring the rows of bundles and other workdirs into ``workdir`` (module docstring): every
    source is read and checked first (a bad one writes nothing); then a cell not here (or here
    only as failed) is stored, one here with the same numbers is counted as reproduced (the
    environments that reproduced it are kept in ``merges/reproduced.json``), one with other numbers
    is a conflict kept apart in ``merges/conflicts/`` and reported, the row here left as it is."""
    workdir = Path(workdir).expanduser()
    read_in = []
    for src in sources:
        if Path(src).expanduser().resolve() == workdir.resolve():
            raise BundleError(f"{src} is this workdir; give other workdirs or bundles")
        read_in.append(read_source(src))
    folder = workdir / "merges"
    report = MergeReport()
    store = Store(workdir / "results.db")
    if store.read_only:
        store.close()
        raise BundleError(f"{workdir / 'results.db'} is read-only; merge into a writable --workdir")
    try:
        with StepLock(folder / "merge.lock"):
            _merge_rows(read_in, store, folder, report)
    except OSError as exc:
        raise BundleError(
            f"cannot write {folder}: {exc.strerror or exc}; pass a writable --workdir"
        ) from None
    finally:
        store.close()
    return report


def _merge_rows(
    read_in: list[tuple[str, list[Row]]], store: Store, folder: Path, report: MergeReport
) -> None:
    reproduced_file = folder / "reproduced.json"
    try:
        reproduced = json.loads(reproduced_file.read_text()) if reproduced_file.is_file() else {}
    except ValueError:
        reproduced = {}
    digests_here = {k: v for r in store.rows("ok") for k, v in _row_digests(r).items()}
    other_bytes: set[str] = set()
    for source, rows in read_in:
        for row in rows:
            report.rows += 1
            if row.status != "ok":
                report.skipped += 1
                continue
            here = store.get(row.cell_id)
            if here is None or here.status != "ok":
                other_bytes |= {k for k, v in _row_digests(row).items() if digests_here.get(k, v) != v}
                store.put(row)
                digests_here |= _row_digests(row)
                report.added.append(row.cell_id)
                continue
            diff = differences(here, row)
            if not diff:
                seen = reproduced.setdefault(row.cell_id, [])
                entry = {"source": source, "environment": environment_of(row)}
                if entry not in seen:
                    seen.append(entry)
                report.reproduced.append(row.cell_id)
                continue
            there = environment_of(row)
            kept = (
                folder
                / "conflicts"
                / f"{row.cell_id}-{_sha(json.dumps([diff, there], default=str).encode())[:12]}.json"
            )
            if not kept.exists():
                record = {
                    "cell_id": row.cell_id,
                    "source": source,
                    "differences": [{"metric": m, "here": a, "there": b} for m, a, b in diff],
                    "here": environment_of(here),
                    "there": there,
                    "row": dict(row),
                }
                write_atomic(kept, _writer(json.dumps(record, indent=1, default=str).encode()))
            report.conflicts.append(
                Conflict(row.cell_id, dict(row.labels), source, diff, environment_of(here), there, kept)
            )
    if report.reproduced:
        write_atomic(reproduced_file, _writer(json.dumps(reproduced, indent=1, default=str).encode()))
    if other_bytes:
        report.notes.append(
            f"{len(other_bytes)} artifact(s) (e.g. {sorted(other_bytes)[0]}) were computed elsewhere with "
            "other bytes than rows here read: the leaderboard counts the older rows of them stale"
        )


def _writer(data: bytes) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    return write


# ---- zoo ----------------------------------------------------------------------------------------


@dataclass
class ZooModel:
    key: str
    kind: str
    label: str
    bundle: str
    status: str  # "installed" | "already here"


def zoo_add(path: Path, workdir: Path) -> tuple[Bundle, list[ZooModel]]:
    """Install the checkpoints of a bundle made ``--with-models`` into ``workdir``'s artifact
    cache, each under its own key after its hashes are checked and it loaded without code, so
    that ``run`` reuses them (its plan says "from zoo") instead of training them. An artifact of
    the same key with other bytes already here is refused (nothing installed)."""
    artifacts = Artifacts(Path(workdir).expanduser())
    try:
        artifacts.check_writable()
    except ArtifactError as exc:
        raise BundleError(str(exc)) from None
    stage = artifacts.root / f".zoo-staging-{os.getpid()}"
    try:
        bundle = read(path, stage=stage)
        if not bundle.records:
            raise BundleError(f"{path} holds no model checkpoints; pack it with --with-models")
        index = bundle.manifest["artifacts"]
        todo = []
        for key, rec in sorted(bundle.records.items()):
            if artifacts.exists(key):
                if artifacts.digest(key) != rec["sha256"]:
                    raise BundleError(
                        f"{key} is already in {artifacts.root} with other bytes (trained here?); use a fresh "
                        "--workdir for the zoo's models (nothing installed)"
                    )
            else:
                todo.append(key)
        models = []
        for key, rec in sorted(bundle.records.items()):
            entry = index.get(key) or {}
            kind = str(entry.get("kind") or (rec.get("meta") or {}).get("kind") or "?")
            label = str(entry.get("label") or f"{kind} {key}")
            if key in todo:
                zoo = {"bundle": Path(path).name, "manifest": bundle.digest, "label": label, "added": _now()}
                meta = {**_clean_meta(rec.get("meta")), "zoo": zoo}
                artifacts.install(key, bundle.staged[key], rec["sha256"], rec.get("deps") or {}, meta)
            models.append(
                ZooModel(key, kind, label, Path(path).name, "installed" if key in todo else "already here")
            )
        return bundle, models
    except ArtifactError as exc:
        raise BundleError(str(exc)) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _clean_meta(meta: Any) -> dict[str, Any]:
    """A bundle's record meta as the cache keeps it: the known fields of a trained model's record,
    of their types (what a step writes: kind, scenario, device, seconds, test accuracy, a defense's
    stats, the training history), nothing else."""
    meta = meta if isinstance(meta, dict) else {}
    out: dict[str, Any] = {}
    for k in ("kind", "scenario", "device", "init"):
        if isinstance(meta.get(k), str):
            out[k] = meta[k][:500]
    for k in ("seconds", "test_acc", "peak_gib"):
        if meta.get(k) is not None and _finite_number(meta[k]):
            out[k] = float(meta[k])
    stats = meta.get("stats")
    if isinstance(stats, dict) and all(isinstance(k, str) and _finite_number(v) for k, v in stats.items()):
        out["stats"] = {k[:100]: v for k, v in stats.items() if v is not None}
    if isinstance(meta.get("history"), list):
        out["history"] = meta["history"]
    return out


def zoo_list(workdir: Path) -> list[ZooModel]:
    """The models installed from bundles in ``workdir``'s artifact cache."""
    artifacts = Artifacts(Path(workdir).expanduser())
    out = []
    for rec_path in sorted(artifacts.root.glob("*/*.json")) if artifacts.root.is_dir() else []:
        rec = artifacts.record(rec_path.stem) or {}
        zoo = (rec.get("meta") or {}).get("zoo")
        if isinstance(zoo, dict):
            kind = str(rec["meta"].get("kind", "?"))
            out.append(ZooModel(rec["key"], kind, str(zoo.get("label")), str(zoo.get("bundle")), "installed"))
    return sorted(out, key=lambda m: m.label)
