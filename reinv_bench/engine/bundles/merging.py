"""``merge``: the rows of bundles and other workdirs into this workdir, reproductions counted and
conflicts kept apart (see ``reinv_bench.engine.bundles``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reinv_bench.engine.artifacts import StepLock, write_atomic
from reinv_bench.engine.bundles.reading import read
from reinv_bench.engine.bundles.rows import (
    BundleError,
    _row_digests,
    _sha,
    describe_environment,
    environment_of,
    read_workdir,
)
from reinv_bench.results.store import Row, Store


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
