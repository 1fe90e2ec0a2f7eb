"""Issue 9, item 5: one value per (cell, seed) on the leaderboard, and rows of other data, code
version or resolved config never averaged together. Rows are built as the store holds them."""

from __future__ import annotations

import copy

import pytest

from reinv_bench.registry.lookup import load
from reinv_bench.results.aggregate import aggregate, declared_columns, sort_entries
from reinv_bench.results.store import COLUMNS
from reinv_bench.views.tables import display_rows, render

COLS = declared_columns(load())

DIGEST_EMBEDDED = "aaa111" + "0" * 58
DIGEST_FULL = "bbb222" + "0" * 58
CONFIG = {
    "scenario": {"scenario": "mnist", "data_root": None, "classes": [0, 1]},
    "arch": {"name": "cnn", "init": None},
    "target_recipe": {"epochs": 2},
    "eval": {"arch": "resnet8", "init": None, "recipe": {"epochs": 2}},
    "defense": [{"name": "re", "version": 1, "config": {"p": 0.5}}],
    "attack": {"name": "gmi"},
}


def row(
    defense="re",
    seed=0,
    metrics=None,
    notes=None,
    created="2025-01-01T00:00:00+00:00",
    digest=DIGEST_EMBEDDED,
    version="0.1.0",
    config=None,
    cell=None,
):
    r = dict.fromkeys(COLUMNS)
    r.update(
        cell_id=cell or f"{defense}-{seed}-{created}-{digest[:3]}",
        scenario="mnist",
        protocol="mnist",
        arch="cnn",
        defense=defense,
        attack="gmi",
        threat_model="white-box",
        seed=seed,
        budget="smoke",
        status="ok",
        config=copy.deepcopy(config or CONFIG),
        metrics=metrics,
        notes=notes or {},
        timings={},
        device="cpu",
        data_digest=digest,
        torch_version="2",
        reinv_version=version,
        created_at=created,
    )
    return r


def test_rows_of_one_seed_with_other_metric_sets_count_once():
    rows = [
        row(
            seed=0,
            metrics={"natural_acc": 0.9, "attack_acc": 0.5, "knn_dist": 10.0},
            created="2025-01-01T00:00:00+00:00",
        ),
        # the same cell and seed again, later, with --metric natural_acc --metric fid
        row(seed=0, metrics={"natural_acc": 0.8, "fid": 30.0}, created="2025-01-02T00:00:00+00:00"),
        row(seed=1, metrics={"natural_acc": 0.7, "attack_acc": 0.3, "knn_dist": 20.0}),
    ]
    (e,) = aggregate(rows, columns=COLS)
    assert e["n"] == 2 and e["seeds"] == [0, 1]
    assert e["natural_acc"] == pytest.approx((0.8 + 0.7) / 2)  # seed 0: the most recent row's value
    assert e["attack_acc"] == pytest.approx(0.4)
    assert e["knn_dist"] == pytest.approx(15.0)
    assert e["fid"] == pytest.approx(30.0)  # one seed has it
    assert e["natural_acc_std"] == pytest.approx(0.0707106, rel=1e-4)  # stdev of two values, not three
    _, shown = display_rows([e], COLS)
    assert shown[0][5] == "2"


def test_a_metric_takes_the_most_recent_value_and_keeps_a_reason_when_none_has_one():
    rows = [
        row(metrics={"natural_acc": 0.9, "fid": 30.0}, created="2025-01-01T00:00:00+00:00"),
        row(
            metrics={"natural_acc": 0.6, "fid": None, "facenet_dist": None},
            notes={"fid": "weights 'fid-inception' absent", "facenet_dist": "weights absent (new)"},
            created="2025-01-03T00:00:00+00:00",
        ),
        row(
            metrics={"facenet_dist": None},
            notes={"facenet_dist": "weights absent (old)"},
            created="2025-01-02T00:00:00+00:00",
        ),
    ]
    (e,) = aggregate(rows, columns=COLS)
    assert e["n"] == 1
    assert e["natural_acc"] == pytest.approx(0.6)
    assert e["fid"] == pytest.approx(30.0) and "fid_note" not in e  # a later failure does not erase a value
    assert e["facenet_dist"] is None and e["facenet_dist_note"] == "weights absent (new)"


def test_two_data_digests_are_two_entries_each_with_its_own_baseline():
    rows = [
        row("none", metrics={"natural_acc": 0.9, "attack_acc": 0.8}),
        row("re", metrics={"natural_acc": 0.85, "attack_acc": 0.6}),
        row(
            "none",
            metrics={"natural_acc": 0.99, "attack_acc": 0.9},
            digest=DIGEST_FULL,
            config={**CONFIG, "scenario": {**CONFIG["scenario"], "data_root": "/data"}},
        ),
        row(
            "re",
            metrics={"natural_acc": 0.98, "attack_acc": 0.7},
            digest=DIGEST_FULL,
            config={**CONFIG, "scenario": {**CONFIG["scenario"], "data_root": "/data"}},
        ),
    ]
    entries = sort_entries(aggregate(rows, columns=COLS), columns=COLS)
    assert len(entries) == 4 and all(e["n"] == 1 for e in entries)
    by = {(e["data_digest"], e["defense"]): e for e in entries}
    assert by[(DIGEST_EMBEDDED, "re")]["d_attack_acc"] == pytest.approx(-0.2)  # vs the embedded baseline
    assert by[(DIGEST_FULL, "re")]["d_attack_acc"] == pytest.approx(-0.2)  # vs the full-MNIST baseline
    assert by[(DIGEST_EMBEDDED, "re")]["pareto"] and by[(DIGEST_FULL, "re")]["pareto"]
    _, shown = display_rows(entries, COLS)
    scenarios = {r[0] for r in shown}
    assert scenarios == {"mnist (smoke) [mnist] data aaa111", "mnist (smoke) [mnist] data bbb222"}
    # entries of one data set stay together (one comparison group after the other)
    assert [e["data_digest"] for e in entries] == [DIGEST_EMBEDDED] * 2 + [DIGEST_FULL] * 2
    csv_text = render(entries, "csv", COLS)
    assert "data_digest" in csv_text.splitlines()[0] and DIGEST_FULL in csv_text


def test_one_data_digest_needs_no_tag_and_the_data_folder_path_does_not_split():
    rows = [
        row(
            seed=0,
            metrics={"natural_acc": 0.9},
            config={**CONFIG, "scenario": {**CONFIG["scenario"], "data_root": "/a"}},
        ),
        row(
            seed=1,
            metrics={"natural_acc": 0.7},
            config={**CONFIG, "scenario": {**CONFIG["scenario"], "data_root": "/b"}},
        ),
    ]
    (e,) = aggregate(rows, columns=COLS)
    assert e["n"] == 2 and e["variant"] == "" and e["config_variant"] == ""
    _, shown = display_rows([e], COLS)
    assert shown[0][0] == "mnist (smoke) [mnist]" and shown[0][4] == "re"


def test_another_version_or_config_is_not_averaged():
    other = copy.deepcopy(CONFIG)
    other["target_recipe"]["epochs"] = 5
    rows = [
        row(seed=0, metrics={"natural_acc": 0.9}),
        row(seed=1, metrics={"natural_acc": 0.7}, version="0.2.0"),
        row(seed=0, metrics={"natural_acc": 0.5}, config=other),
    ]
    entries = aggregate(rows, columns=COLS)
    assert sorted((e["reinv_version"], e["n"]) for e in entries) == [("0.1.0", 1), ("0.1.0", 1), ("0.2.0", 1)]
    _, shown = display_rows(sort_entries(entries, columns=COLS), COLS)
    assert {r[0] for r in shown} == {"mnist (smoke) [mnist] v0.1.0", "mnist (smoke) [mnist] v0.2.0"}
    configs = [r[4] for r in shown if r[0].endswith("v0.1.0")]
    assert (
        len(configs) == 2 and all(c.startswith("re (config ") for c in configs) and configs[0] != configs[1]
    )


def test_rows_without_the_newer_columns_still_aggregate():
    """Rows as older tests and plugins build them (no config, digest, version, created_at)."""
    rows = [
        {
            "status": "ok",
            "scenario": "s",
            "protocol": "p",
            "budget": "paper",
            "arch": "a",
            "attack": "x",
            "threat_model": "white-box",
            "defense": "none",
            "seed": s,
            "metrics": {"natural_acc": v},
            "notes": {},
        }
        for s, v in ((0, 0.5), (1, 0.7))
    ]
    (e,) = aggregate(rows, columns=COLS)
    assert e["n"] == 2 and e["natural_acc"] == pytest.approx(0.6)
