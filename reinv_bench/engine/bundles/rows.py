"""Rows as untrusted input (another workdir's results.db, a bundle's rows.json), the bundle
format's constants and limits, and the environment a row names; shared by the modules of the
package (see ``reinv_bench.engine.bundles``)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

from reinv_bench.contract.config import precision_of
from reinv_bench.results.store import JSON_COLUMNS, LABELS, SCHEMA_VERSION, Row, columns_of

FORMAT, VERSION = "reinv-bench-bundle", 1
MAX_JSON = 256 * 2**20  # bundle.json, manifest.json, rows.json, a record, a protocol card
MAX_FILE = 64 * 2**30  # a checkpoint or an image
MAX_TOTAL = 256 * 2**30  # all members together
MAX_MEMBERS = 100_000
MODEL_KINDS = ("eval", "target", "pretrain")  # what --with-models packs (a target's training deps too)

_HEX = r"[0-9a-f]{8,64}"
_NAME = r"[A-Za-z0-9._=+-]{1,120}"
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
        "precision": precision_of(row.config),
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
