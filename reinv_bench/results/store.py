"""The results database: SQLite in the workdir, one row per cell, schema versioned.

Only the driver process writes it. A row holds the cell's labels, the full resolved config, the
metrics (null where a metric could not be computed, with the reason in ``notes``), timings,
device, versions, status and the error text of a failed cell. Rewriting a cell replaces its row.

The database is in WAL mode; an operation that finds it locked by another process waits (with
retries) for up to ``timeout`` seconds. Every SQLite or OS error becomes a one-line ``StoreError``
that says what to do.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from reinv_bench.results.outcomes import Outcomes, finite

# 2: the protocol column (rows of version 1 are migrated, protocol unknown)
# 3: the outcomes and artifacts columns (rows of versions 1-2 are migrated with both null: they show
#    means and seed-level intervals only, and no reconstruction grid)
# 4: the environment column (executor, packages, Python, platform: ``steps.environment``; rows of
#    versions 1-3 are migrated with it null)
SCHEMA_VERSION = 4


@dataclass(frozen=True, eq=False)  # equality with any mapping of the same keys: Mapping's
class Labels(Mapping[str, Any]):
    """What a cell is shown and grouped by: the plan gives each cell one (``Cell.labels``), its
    ``Row`` carries the same fields as columns (``Row.labels``). Reads as a mapping too
    (``labels["defense"]``, ``dict(labels)``)."""

    scenario: str
    protocol: str | None  # null for rows of schema 1
    arch: str
    defense: str
    attack: str
    threat_model: str | None
    seed: int
    budget: str

    def __getitem__(self, key: str) -> Any:
        if key not in LABELS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(LABELS)

    def __len__(self) -> int:
        return len(LABELS)


LABELS = tuple(f.name for f in fields(Labels))


@dataclass(eq=False)  # equality (with any mapping of the same columns) and no hash: Mapping's
class Row(Mapping[str, Any]):
    """One stored cell: what the runner writes, the store keeps and the leaderboard reads. Set
    fields as attributes; a row also reads as the mapping of its columns (``row["metrics"]``,
    ``row.get("error")``, ``dict(row)``), so code written against the dict rows of earlier
    versions (``on_result`` plugins, scripts) keeps working."""

    cell_id: str
    # the cell's labels (the fields of Labels, in its order: a test holds them equal)
    scenario: str
    protocol: str | None  # null for rows of schema 1
    arch: str
    defense: str
    attack: str
    threat_model: str | None
    seed: int
    budget: str
    status: str | None = None  # "ok" | "failed"
    error: str | None = None  # why a failed cell failed
    config: dict[str, Any] | None = None  # the resolved config of every component
    metrics: dict[str, Any] | None = None  # key -> value, None where a metric could not be computed
    notes: dict[str, Any] | None = None  # key -> why a metric is None, or a remark
    timings: dict[str, float] | None = None  # seconds per step kind (Runner._timings)
    device: str | None = None
    data_digest: str | None = None
    torch_version: str | None = None
    reinv_version: str | None = None
    created_at: str | None = None  # ISO 8601, UTC
    # per-reconstruction outcomes (a stored layout given here is read into an Outcomes); the
    # mapping view (row["outcomes"]) gives the stored layout, a dict
    outcomes: Outcomes | None = None
    artifacts: dict[str, Any] | None = None  # the cell's artifact keys {"eval", "target", "priors", "invert"}
    # what computed it besides device and versions: executor, packages, Python, platform (schema 4)
    environment: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.outcomes = Outcomes.from_json(self.outcomes)

    @property
    def labels(self) -> Labels:
        """What the row is shown and grouped by (its cell's ``Labels``)."""
        return Labels(**{k: getattr(self, k) for k in LABELS})

    @property
    def cell_config(self) -> CellConfig:
        """The row's resolved config, typed (``CellConfig``)."""
        return CellConfig.of(self.config)

    def __getitem__(self, key: str) -> Any:
        if key not in COLUMNS:
            raise KeyError(key)
        if key == "outcomes" and self.outcomes is not None:
            return self.outcomes.to_json()
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(COLUMNS)

    def __len__(self) -> int:
        return len(COLUMNS)


COLUMNS = tuple(f.name for f in fields(Row))


class _Absent:
    """A key the stored config does not hold (rows of older versions hold fewer)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class CellConfig:
    """A row's resolved config (``row.config``, as ``plan`` built it and the runner completed it),
    typed where the leaderboard reads it. A key the row does not hold is ``ABSENT`` (not None: a
    stored null is a value); ``other``: the keys this version does not know, as stored."""

    scenario: Any = ABSENT  # the scenario's data (data folder, digest) and its target classes
    arch: Any = ABSENT  # {"name", "init"}: the architecture and where its weights start
    target_recipe: Any = ABSENT  # the target's resolved training recipe (a defense may set it)
    eval: Any = ABSENT  # the evaluation model
    defense: Any = ABSENT  # the defense's components (name, version, config)
    attack: Any = ABSENT  # the attack (name, version, config; a wrapper's base)
    precision: Any = ABSENT  # --precision (rows from before it: absent, and fp32)
    recipes: Any = ABSENT  # the user's --recipe overrides (a defense's own schedule is in target_recipe)
    class_chunk: Any = ABSENT  # classes per inversion step, where it changes the attack's numbers
    convergence: Any = ABSENT  # run --convergence: the doubled-budget check this row is
    metrics: Any = ABSENT  # metric (or judge) -> the version that computed it (added by the runner)
    attacked: Any = ABSENT  # what was attacked, recorded from the outcomes (added by the runner)
    threads: Any = ABSENT  # the CPU thread counts of its steps (added by the runner)
    other: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, config: Mapping[str, Any] | None) -> CellConfig:
        config = dict(config or {})
        known = {f.name for f in fields(cls)} - {"other"}
        return cls(
            **{k: v for k, v in config.items() if k in known},
            other={k: v for k, v in config.items() if k not in known},
        )


JSON_COLUMNS = ("config", "metrics", "notes", "timings", "outcomes", "artifacts", "environment")
# from version: the columns the next one adds
MIGRATIONS = {1: ("protocol",), 2: ("outcomes", "artifacts"), 3: ("environment",)}
T = TypeVar("T")


def columns_of(schema: int) -> tuple[str, ...]:
    """The columns a row of schema version ``schema`` (1 to ``SCHEMA_VERSION``) has: a row of an
    older one migrates to this one with the columns added since as null."""
    if not 1 <= schema <= SCHEMA_VERSION:
        raise ValueError(f"schema version {schema}: this reinv-bench reads 1 to {SCHEMA_VERSION}")
    added = {c for v in range(schema, SCHEMA_VERSION) for c in MIGRATIONS[v]}
    return tuple(c for c in COLUMNS if c not in added)


def finite_metrics(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's metrics with every value that is not a finite number (NaN, inf) as null, and
    the reason in its notes: JSON has no NaN, and a NaN mean is no result."""
    metrics, notes = dict(row.get("metrics") or {}), dict(row.get("notes") or {})
    bad = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and finite(v) is None}
    if not bad:
        return {}
    for k, v in bad.items():
        metrics[k] = None
        notes[k] = f"the metric returned {float(v)!r}, not a finite number"
    return {"metrics": metrics, "notes": notes}


class StoreError(RuntimeError):
    """The results database cannot be used; the message is one line that says what to do."""


def _busy(exc: sqlite3.Error) -> bool:
    return any(w in str(exc) for w in ("database is locked", "database table is locked", "database is busy"))


def _explain(path: Path, exc: BaseException, waited: float | None = None) -> str:
    """One actionable line for an sqlite3 or OS error on the results database at ``path``."""
    text = str(exc) if isinstance(exc, sqlite3.Error) else f"{type(exc).__name__}: {exc}"
    if _busy(exc):
        return (
            f"results.db at {path} is locked by another process ({text}; waited {waited or 0:.1f} s); "
            "let the other run finish or use another --workdir"
        )
    if "not a database" in text or "malformed" in text:
        return (
            f"results.db at {path} is not a usable SQLite database ({text}); "
            "move it aside or use another --workdir"
        )
    full = (
        f"cannot use results.db at {path}: no space left on device ({text}); the database is intact: "
        "free disk space and rerun"
    )
    if "full" in text or getattr(exc, "errno", None) == errno.ENOSPC:
        return full
    if any(w in text for w in ("readonly", "Read-only", "unable to open")) or isinstance(
        exc, PermissionError
    ):
        return f"cannot write results.db at {path} ({text}); make it writable or use another --workdir"
    if _disk_full(path):  # SQLite says "disk I/O error" when its shared-memory file cannot grow
        return full
    return f"results.db at {path} cannot be used ({text}); move it aside or use another --workdir"


def _disk_full(path: Path) -> bool:
    """Whether the filesystem holding ``path`` has (almost) no space left."""
    try:
        return shutil.disk_usage(Path(path).parent).free < (1 << 20)
    except OSError:
        return False


def _read_only(path: Path) -> bool:
    """An existing database this process cannot write (read-only media, no write permission)."""
    return path.is_file() and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK))


def _read_only_uri(path: Path) -> str:
    """The URI that opens ``path`` read-only. Without a writable folder SQLite cannot create the
    write-ahead journal's shared-memory file, so the database is opened ``immutable`` (it reads
    the main file only), which is exact unless a journal of unmerged writes lies beside it."""
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
    wal, shm = (path.with_name(path.name + s) for s in ("-wal", "-shm"))
    if shm.is_file() and wal.is_file():
        return uri  # SQLite reads a read-only WAL database whose -wal and -shm exist
    if wal.is_file() and wal.stat().st_size > 0:
        raise StoreError(
            f"results.db at {path} is read-only and its write-ahead journal {wal.name} holds "
            "writes not yet merged into it; copy the folder to a writable disk and read it there"
        )
    return uri + "&immutable=1"


class Store:
    """``timeout``: how long an operation waits, in total, for another process's lock. An existing
    database this process cannot write (read-only media) is opened read-only: reading works,
    writing is a one-line error."""

    def __init__(self, path: Path, timeout: float = 300.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        try:
            self.read_only = _read_only(self.path)
            if self.read_only:
                self.db = sqlite3.connect(_read_only_uri(self.path), timeout=min(timeout, 60.0), uri=True)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(self.path, timeout=min(timeout, 60.0))
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(_explain(self.path, exc)) from None
        self.db.row_factory = sqlite3.Row
        self._retry(self._init)

    def _init(self) -> None:
        if self.read_only:
            return self._check_read_only()
        try:  # readers then never block the writer; a read-only folder keeps the rollback journal
            self.db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if _busy(exc):
                raise
        with self.db:
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                # OR IGNORE: another process may create the database between the SELECT and here
                self.db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            elif int(row[0]) in MIGRATIONS:
                version = int(row[0])
                have = {r[1] for r in self.db.execute("PRAGMA table_info(results)")}  # empty: no table yet
                while version in MIGRATIONS:
                    for col in MIGRATIONS[version]:
                        if have and col not in have:
                            self.db.execute(f"ALTER TABLE results ADD COLUMN {col} TEXT")
                    version += 1
                self.db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {row[0]}, this reinv-bench writes {SCHEMA_VERSION}; "
                    "use a new --workdir or upgrade reinv-bench"
                )
            cols = ", ".join(f"{c} TEXT" if c != "seed" else "seed INTEGER" for c in COLUMNS[1:])
            self.db.execute(f"CREATE TABLE IF NOT EXISTS results (cell_id TEXT PRIMARY KEY, {cols})")

    def _check_read_only(self) -> None:
        """A read-only database can be read only as it is: of this schema version, with its tables."""
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        row = (
            self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if "meta" in tables
            else None
        )
        if row is None or "results" not in tables or int(row[0]) != SCHEMA_VERSION:
            found = (
                "no reinv-bench tables"
                if row is None or "results" not in tables
                else f"schema version {row[0]}"
            )
            raise StoreError(
                f"results.db at {self.path} is read-only and has {found} (this reinv-bench reads "
                f"{SCHEMA_VERSION}); copy it to a writable folder and read it there"
            )

    def _retry(self, fn: Callable[[], T]) -> T:
        """Run ``fn``; while another process holds the lock, retry with backoff until ``timeout``."""
        start, delay = time.monotonic(), 0.05
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                waited = time.monotonic() - start
                if not _busy(exc) or waited + delay > self.timeout:
                    raise StoreError(_explain(self.path, exc, waited)) from None
            except sqlite3.DatabaseError as exc:
                raise StoreError(_explain(self.path, exc)) from None
            time.sleep(delay)
            delay = min(2 * delay, 2.0)

    def put(self, row: Mapping[str, Any]) -> None:
        """Store a ``Row`` (or a mapping of some of its columns; the others null), replacing the
        cell's row."""
        self.put_many([row])

    def put_many(self, rows: list[Mapping[str, Any]]) -> None:
        """Store several rows in one transaction: all of them, or (an error) none."""
        encoded = []
        for row in rows:
            row = {**row, **finite_metrics(row)}
            if isinstance(row.get("outcomes"), Outcomes):
                row["outcomes"] = row["outcomes"].to_json()
            encoded.append([json.dumps(row.get(c)) if c in JSON_COLUMNS else row.get(c) for c in COLUMNS])
        sql = (
            f"INSERT OR REPLACE INTO results ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        )

        def write() -> None:
            with self.db:
                self.db.executemany(sql, encoded)

        self._retry(write)

    def get(self, cell_id: str) -> Row | None:
        row = self._retry(
            lambda: self.db.execute("SELECT * FROM results WHERE cell_id=?", (cell_id,)).fetchone()
        )
        return None if row is None else self._decode(row)

    def done(self, cell_id: str) -> bool:
        row = self.get(cell_id)
        return row is not None and row.status == "ok"

    def rows(self, status: str | None = None) -> list[Row]:
        q, args = "SELECT * FROM results", ()
        if status:
            q, args = q + " WHERE status=?", (status,)
        rows = self._retry(lambda: self.db.execute(q + " ORDER BY created_at", args).fetchall())
        return [self._decode(r) for r in rows]

    @staticmethod
    def _decode(row: sqlite3.Row) -> Row:
        d = dict(row)
        for c in JSON_COLUMNS:
            d[c] = json.loads(d[c]) if d[c] is not None else None
        return Row(**d)

    def close(self) -> None:
        self.db.close()
