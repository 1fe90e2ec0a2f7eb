import sqlite3

import pytest
import torch

from reinv_bench.results.store import COLUMNS, Row, Store, StoreError
from reinv_metrics.knn import knn_distance


def test_knn_on_hand_built_features():
    priv = torch.tensor([[0.0, 0.0], [3.0, 0.0], [10.0, 10.0]])
    priv_y = torch.tensor([0, 0, 1])
    recon = torch.tensor([[1.0, 0.0], [2.0, 2.0], [10.0, 12.0]])
    recon_y = torch.tensor([0, 0, 1])
    # nearest same-class squared distances: 1 (to [0,0]), 1+4=5 (to [3,0]), 4 (to [10,10])
    assert knn_distance(recon, recon_y, priv, priv_y) == pytest.approx((1 + 5 + 4) / 3)


def test_knn_ignores_other_classes():
    priv = torch.tensor([[0.0], [100.0]])
    assert knn_distance(torch.tensor([[99.0]]), torch.tensor([0]), priv, torch.tensor([0, 1])) == 99.0**2


def test_knn_without_same_class_images_fails_loudly():
    with pytest.raises(ValueError, match="no private image"):
        knn_distance(torch.zeros(1, 2), torch.tensor([3]), torch.zeros(1, 2), torch.tensor([0]))


def _row(cell_id="c1", **kw):
    row = {
        "cell_id": cell_id,
        "scenario": "mnist",
        "protocol": "digits32",
        "arch": "cnn",
        "defense": "re",
        "attack": "gmi",
        "threat_model": "white-box",
        "seed": 0,
        "budget": "smoke",
        "status": "ok",
        "error": None,
        "config": {"defense": [{"name": "re", "config": {"scale": [0.1, 0.4]}}]},
        "metrics": {"attack_acc": 0.5, "attack_acc5": None},
        "notes": {"attack_acc5": "why"},
        "timings": {"invert_s": 1.5},
        "device": "cpu",
        "data_digest": "abc",
        "torch_version": "2",
        "reinv_version": "0.1",
        "created_at": "2026-01-01T00:00:00",
        "outcomes": {
            "class": [0, 1],
            "per_reconstruction": {"attack_acc": [1, 0]},
            "per_item": {},
            "target_conf": None,
        },
        "artifacts": {"invert": "k"},
        "environment": {"executor": "inline"},
    }
    row.update(kw)
    return row


def test_store_round_trip_and_replace(tmp_path):
    store = Store(tmp_path / "r.db")
    store.put(_row())
    assert store.get("c1") == _row()
    store.put(_row(status="failed", error="x"))
    assert len(store.rows()) == 1 and store.get("c1")["error"] == "x"
    assert not store.done("c1")
    store.close()
    assert Store(tmp_path / "r.db").get("c1")["config"]["defense"][0]["config"]["scale"] == [0.1, 0.4]


def test_rows_are_typed_and_read_as_their_columns(tmp_path):
    """One Row type from runner to store to leaderboard: attributes, and the mapping of its columns
    that on_result plugins written against dict rows read."""
    store = Store(tmp_path / "r.db")
    store.put(Row(**_row()))
    row = store.get("c1")
    assert isinstance(row, Row) and row.metrics == {"attack_acc": 0.5, "attack_acc5": None}
    assert tuple(row) == COLUMNS and dict(row) == _row() and row == _row()
    assert row["seed"] == row.seed == 0 and row.get("nope", "x") == "x"
    with pytest.raises(KeyError):
        row["nope"]
    assert {**row, "status": "failed"}["status"] == "failed" and row.status == "ok"


def test_schema_version_mismatch_is_refused(tmp_path):
    Store(tmp_path / "r.db").close()
    db = sqlite3.connect(tmp_path / "r.db")
    with db:
        db.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    db.close()
    with pytest.raises(StoreError, match="schema version 999"):
        Store(tmp_path / "r.db")


def test_version_1_database_is_migrated_and_keeps_its_rows(tmp_path):
    db = sqlite3.connect(tmp_path / "r.db")
    cols = [
        c for c in __import__("reinv_bench.results.store", fromlist=["COLUMNS"]).COLUMNS if c != "protocol"
    ]
    with db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        db.execute(
            f"CREATE TABLE results (cell_id TEXT PRIMARY KEY, {', '.join(c + ' TEXT' for c in cols[1:])})"
        )
        db.execute("INSERT INTO results (cell_id, scenario, status) VALUES ('old', 'mnist', 'ok')")
    db.close()
    store = Store(tmp_path / "r.db")
    assert store.get("old")["scenario"] == "mnist" and store.get("old")["protocol"] is None
    store.put(_row(protocol="64px"))
    assert Store(tmp_path / "r.db").get("c1")["protocol"] == "64px"


def test_leaderboard_never_ranks_two_protocols_together():
    from reinv_bench.registry.lookup import load
    from reinv_bench.results.aggregate import aggregate, declared_columns
    from reinv_bench.views.tables import gaps, render

    cols = declared_columns(load())

    def row(protocol, defense, acc, fid=None, note=None):
        return {
            "status": "ok",
            "scenario": "s",
            "protocol": protocol,
            "budget": "paper",
            "arch": "a",
            "attack": "x",
            "threat_model": "white-box",
            "defense": defense,
            "seed": 0,
            "metrics": {"natural_acc": 0.9, "attack_acc": acc, "fid": fid},
            "notes": {"fid": note} if note else {},
        }

    entries = aggregate(
        [
            row("64px", "none", 0.8, 10.0),
            row("64px", "re", 0.5, 20.0),
            row("224px", "none", 0.3, None, "weights 'fid-inception' absent"),
            row("224px", "re", 0.6, None, "weights 'fid-inception' absent"),
        ],
        columns=cols,
    )
    by = {(e["protocol"], e["defense"]): e for e in entries}
    assert by[("64px", "re")]["d_attack_acc"] == pytest.approx(-0.3)  # vs the 64-px baseline only
    assert by[("224px", "re")]["d_attack_acc"] == pytest.approx(0.3)
    assert by[("224px", "none")]["pareto"] and by[("64px", "re")]["pareto"]
    assert gaps(entries, cols) == ["FID n/a: weights 'fid-inception' absent"]
    md = render(entries, "md", cols)
    assert "FID" in md and "KNN" not in md  # columns for the metrics the rows hold
