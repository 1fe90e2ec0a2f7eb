"""``read``: a bundle read and verified as untrusted input (members, sizes, the manifest, rows,
checkpoints loaded without code); see ``reinv_bench.engine.bundles``."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reinv_bench.contract.files import file_sha256
from reinv_bench.engine.bundles.rows import (
    _HEX,
    _KEY,
    _NAME,
    FORMAT,
    MAX_FILE,
    MAX_JSON,
    MAX_MEMBERS,
    MAX_TOTAL,
    VERSION,
    BundleError,
    _row_digests,
    _schema,
    _sha,
    check_row,
)
from reinv_bench.results.store import Row

_MEMBER = re.compile(
    rf"bundle\.json|manifest\.json|rows\.json|protocols/{_NAME}\.txt|"
    rf"artifacts/[0-9a-f]{{2}}/(?P<key>{_HEX})\.(?P<ext>pt|json)|samples/{_HEX}/{_NAME}\.png"
)


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
    hashes, texts, staged, unknown = _members(path, tmp)
    meta, schema = _header(texts, path)
    if unknown:
        raise BundleError(
            f"{path}: unexpected member {unknown[0]!r} (not a file of the bundle layout); refused"
        )
    manifest = _manifest(texts, hashes, path)
    rows = _rows(texts, schema, manifest["artifacts"], path)
    records = _records(texts, hashes, staged, manifest["artifacts"], path, keep)
    cards = {
        n.removeprefix("protocols/").removesuffix(".txt"): t.decode("utf-8", "replace")
        for n, t in texts.items()
        if n.startswith("protocols/")
    }
    samples = sum(1 for n in hashes if n.startswith("samples/"))
    return Bundle(path, meta, manifest, rows, cards, records, staged, _sha(texts["manifest.json"]), samples)


def _members(
    path: Path, tmp: Path
) -> tuple[dict[str, tuple[str, int]], dict[str, bytes], dict[str, Path], list[str]]:
    """(name -> (sha256, size), name -> bytes of the JSON and text members, key -> where each
    checkpoint was extracted into ``tmp``, names of no known member) of a bundle's members, each
    checked on the way: its type, size, the count and the total (the unknown names are refused
    by the caller once the header is read, so that a newer format is named as such)."""
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
    return hashes, texts, staged, unknown


def _header(texts: dict[str, bytes], path: Path) -> tuple[dict[str, Any], int]:
    """``bundle.json`` and the schema version of the rows, of a format this reinv-bench reads."""
    meta = _json(texts, "bundle.json", path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BundleError(f"{path}: not a reinv-bench bundle (no bundle.json of format {FORMAT})")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise BundleError(
            f"{path} is of bundle format {meta.get('version')}, newer than this reinv-bench reads "
            f"({VERSION}); upgrade reinv-bench (nothing written)"
        )
    schema = _schema(meta.get("schema_version"), str(path))
    return meta, schema


def _manifest(texts: dict[str, bytes], hashes: dict[str, tuple[str, int]], path: Path) -> dict[str, Any]:
    """``manifest.json``, every member matching its entry and every entry a member."""
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
    return manifest


def _rows(texts: dict[str, bytes], schema: int, index: dict[str, Any], path: Path) -> list[Row]:
    """The rows, each checked, every artifact they read listed by the manifest with its SHA-256."""
    rows = _json(texts, "rows.json", path)
    if not isinstance(rows, list):
        raise BundleError(f"{path}: rows.json is not a list of rows")
    rows = [check_row(d, schema, f"{path} rows.json row {i + 1}") for i, d in enumerate(rows)]
    for r in rows:
        for key, sha in _row_digests(r).items():
            if not isinstance(index.get(key), dict) or index[key].get("sha256") != sha:
                raise BundleError(
                    f"{path}: cell {r.cell_id} read artifact {key}, which the manifest does not list as such"
                )
    return rows


def _records(
    texts: dict[str, bytes],
    hashes: dict[str, tuple[str, int]],
    staged: dict[str, Path],
    index: dict[str, Any],
    path: Path,
    keep: bool,
) -> dict[str, dict[str, Any]]:
    """key -> record of every checkpoint, each matching its bytes and the manifest and loaded
    without code (removed after, unless ``keep``)."""
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
    return records


def _json(texts: dict[str, bytes], name: str, path: Path) -> Any:
    if name not in texts:
        raise BundleError(f"{path}: {name} is missing; not a whole reinv-bench bundle")
    try:
        return json.loads(texts[name])
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"{path}: {name} is not valid JSON ({exc}); refused") from None
