"""The results database: SQLite in the workdir, one row per cell, schema versioned.

Only the driver process writes it. A row holds the cell's labels, the full resolved config, the
metrics (null where a metric could not be computed, with the reason in ``notes``), timings,
device, versions, status and the error text of a failed cell. Rewriting a cell replaces its row.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2  # 2: the protocol column (rows of version 1 are migrated, protocol unknown)
COLUMNS = (
    "cell_id", "scenario", "protocol", "arch", "defense", "attack", "threat_model", "seed", "budget", "status", "error",
    "config", "metrics", "notes", "timings", "device", "data_digest", "torch_version", "reinv_version", "created_at",
)
JSON_COLUMNS = ("config", "metrics", "notes", "timings")


class StoreError(RuntimeError):
    pass


class Store:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path)
        self.db.row_factory = sqlite3.Row
        with self.db:
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) == 1:
                self.db.execute("ALTER TABLE results ADD COLUMN protocol TEXT")
                self.db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {row[0]}, this reinv-bench writes {SCHEMA_VERSION}; "
                    "use a new --workdir or upgrade reinv-bench"
                )
            cols = ", ".join(f"{c} TEXT" if c != "seed" else "seed INTEGER" for c in COLUMNS[1:])
            self.db.execute(f"CREATE TABLE IF NOT EXISTS results (cell_id TEXT PRIMARY KEY, {cols})")

    def put(self, row: dict[str, Any]) -> None:
        values = [json.dumps(row.get(c)) if c in JSON_COLUMNS else row.get(c) for c in COLUMNS]
        with self.db:
            self.db.execute(
                f"INSERT OR REPLACE INTO results ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                values,
            )

    def get(self, cell_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM results WHERE cell_id=?", (cell_id,)).fetchone()
        return None if row is None else self._decode(row)

    def done(self, cell_id: str) -> bool:
        row = self.get(cell_id)
        return row is not None and row["status"] == "ok"

    def rows(self, status: str | None = None) -> list[dict[str, Any]]:
        q, args = "SELECT * FROM results", ()
        if status:
            q, args = q + " WHERE status=?", (status,)
        return [self._decode(r) for r in self.db.execute(q + " ORDER BY created_at", args)]

    @staticmethod
    def _decode(row: sqlite3.Row) -> dict[str, Any]:
        d = dict(row)
        for c in JSON_COLUMNS:
            d[c] = json.loads(d[c]) if d[c] is not None else None
        return d

    def close(self) -> None:
        self.db.close()
