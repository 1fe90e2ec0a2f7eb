"""Issue 17 section 2 and issue 21 sections 2 and 4: typed leaderboard entries, comparisons that
never cross configurations, stale rows, metric versions, labels rendered as text (rich, LaTeX,
matplotlib), NaN kept out of the stored rows and the JSON, and --baseline checked."""

from __future__ import annotations

import copy
import json
import math

import pytest
from click.testing import CliRunner

from reinv_bench.api import Column
from reinv_bench.cli import State, cli
from reinv_bench.results.aggregate import aggregate, check_baseline, sort_entries, verdicts
from reinv_bench.results.entries import Delta, Entry, Stat
from reinv_bench.results.outcomes import Items, Outcomes
from reinv_bench.results.store import COLUMNS, Row, Store
from reinv_bench.views.tables import render, rich_table, stats_notes

COLS = [
    Column("natural_acc", "Nat. acc %", percent=True, better="higher", axis="utility"),
    Column("attack_acc", "Attack acc %", percent=True, better="lower", axis="privacy"),
    Column("fid", "FID", better="higher"),
]
CONFIG = {
    "scenario": {"scenario": "mnist", "data": "d1", "classes": [0, 1]},
    "arch": {"name": "cnn", "init": None},
    "target_recipe": {"epochs": 2, "lr": 0.001},
    "eval": {"arch": "resnet8", "init": None},
    "defense": [{"name": "none", "version": 1, "config": {}}],
    "attack": {"name": "gmi", "config": {"iters": 5}},
    "precision": "fp32",
}


def row(
    defense="none",
    seed=0,
    hits=(1, 1, 0, 0),
    natural=0.9,
    lr=0.001,
    created="2026-01-01T00:00:00",
    metrics=None,
    versions=None,
    sha=None,
    cell=None,
    protocol="digits32",
):
    cfg = copy.deepcopy(CONFIG)
    cfg["defense"] = [{"name": defense.split("[")[0], "version": 1, "config": {}}]
    cfg["target_recipe"]["lr"] = lr
    cfg["recipes"] = {"target": {"lr": lr}} if lr != 0.001 else {}  # the user's --recipe overrides
    if versions is not None:
        cfg["metrics"] = versions
    r = dict.fromkeys(COLUMNS)
    r.update(
        cell_id=cell or f"{defense}-{seed}-{lr}-{created}",
        scenario="mnist",
        protocol=protocol,
        arch="cnn",
        defense=defense,
        attack="gmi",
        threat_model="white-box",
        seed=seed,
        budget="smoke",
        status="ok",
        config=cfg,
        notes={},
        data_digest="d1",
        reinv_version="0.1",
        created_at=created,
        metrics=metrics
        if metrics is not None
        else {"natural_acc": natural, "attack_acc": sum(hits) / len(hits)},
        outcomes={
            "class": [0, 0, 1, 1],
            "target_conf": [0.5] * 4,
            "per_reconstruction": {"attack_acc": list(hits)},
            "per_item": {},
        },
        artifacts={"invert": f"inv-{defense}-{seed}-{lr}", **({"sha256": sha} if sha else {})},
    )
    return Row(**r)


def by_key(entries, *keys):
    return {tuple(getattr(e, k) for k in keys): e for e in entries}


# --------------------------------------------------------------------------------------------
# Typed entries and the one Outcomes type


def test_entries_are_typed_and_read_as_their_json():
    entries = aggregate([row("none", hits=(1, 1, 1, 1)), row("re", hits=(0, 0, 1, 1))], columns=COLS)
    e = by_key(entries, "defense")[("re",)]
    assert isinstance(e, Entry) and isinstance(e.stats["attack_acc"], Stat)
    assert isinstance(e.deltas["attack_acc"], Delta) and e.deltas["attack_acc"].estimate == pytest.approx(
        -0.5
    )
    assert e.stats["attack_acc"].mean == 0.5 and e.stats["attack_acc"].n == 1
    assert e["d_attack_acc"] == e.deltas["attack_acc"].estimate and e["attack_acc"] == 0.5  # the JSON view
    assert "d_attack_acc_lo" in e and "_rows" not in e


def test_outcomes_round_trip_and_rows_read_them_typed():
    out = Outcomes(
        [0, 0, 1],
        [0.9, 0.1, 0.5],
        {"attack_acc": [1.0, float("nan"), 0.0]},
        {"natural_acc": Items([0, 1], [1.0, 0.0])},
    )
    stored = out.to_json()
    assert list(stored) == ["class", "per_reconstruction", "per_item", "target_conf"]  # the schema-3 layout
    assert stored["per_reconstruction"]["attack_acc"] == [1.0, None, 0.0]  # NaN is no value
    back = Outcomes.from_json(json.loads(json.dumps(stored)))
    assert back.items("attack_acc").values == [1.0, None, 0.0] and back.items("natural_acc").classes == [0, 1]
    r = row()
    assert (
        isinstance(r.outcomes, Outcomes) and r["outcomes"]["class"] == [0, 0, 1, 1] and len(r.outcomes) == 4
    )


# --------------------------------------------------------------------------------------------
# Issue 21 section 2: a comparison never crosses configurations


def test_a_defense_is_compared_with_the_baseline_of_its_own_recipe():
    rows = [
        row("none", hits=(1, 1, 1, 1), created="2026-01-01T00:00:00"),  # default recipe, the oldest none
        row("none", hits=(1, 1, 0, 1), lr=0.05, created="2026-01-02T00:00:00"),
        row("re", hits=(0, 0, 0, 0), lr=0.05, created="2026-01-03T00:00:00"),
    ]
    entries = aggregate(rows, columns=COLS)
    e = by_key(entries, "defense", "config_digest")
    re = next(x for x in entries if x.defense == "re")
    lr_none = next(x for x in entries if x.defense == "none" and x.config["target_recipe"]["lr"] == 0.05)
    assert re.setting == lr_none.setting and len(e) == 3
    assert re.deltas["attack_acc"].estimate == pytest.approx(-0.75)  # against lr 0.05's none, not -1.0
    # each setting has its own Pareto front: the default-recipe none is alone on its own
    assert next(x for x in entries if x.defense == "none" and x is not lr_none).pareto


def test_a_schedule_the_defense_sets_itself_keeps_the_default_baseline():
    # TL/BiDO at the paper budget train with their paper's schedule: the target recipe differs from
    # the none's, but no user override does, so the none is still its baseline
    tl = row("tl", hits=(0, 0, 0, 0), created="2026-01-02T00:00:00")
    tl.config["target_recipe"]["epochs"] = 50
    entries = aggregate([row("none", hits=(1, 1, 1, 1)), tl], columns=COLS)
    tl_e = next(x for x in entries if x.defense == "tl")
    assert tl_e.baseline == "none" and tl_e.deltas["attack_acc"].estimate == pytest.approx(-1.0)
    # rows stored before the overrides were recorded compare their resolved recipes, as before
    old_tl = row("tl", hits=(0, 0, 0, 0), created="2026-01-02T00:00:00")
    old_tl.config["target_recipe"]["epochs"] = 50
    for r in (old_none := row("none", hits=(1, 1, 1, 1))), old_tl:
        r.config.pop("recipes")
    old = next(x for x in aggregate([old_none, old_tl], columns=COLS) if x.defense == "tl")
    assert old.baseline is None


def test_a_defense_without_a_baseline_of_its_configuration_says_so():
    rows = [row("none", hits=(1, 1, 1, 1)), row("re", hits=(0, 0, 0, 0), lr=0.05)]
    entries = sort_entries(aggregate(rows, columns=COLS), columns=COLS)
    re = next(x for x in entries if x.defense == "re")
    assert re.baseline is None and re.deltas["attack_acc"].estimate is None
    assert "no none of its configuration" in re.baseline_note and json.loads(render(entries, "json", COLS))
    assert any("re (gmi, cnn): no none of its configuration" in line for line in stats_notes(entries, COLS))
    assert any(line.startswith("re") and "no comparison" in line for line in verdicts(entries, COLS))


def test_rows_against_a_rebuilt_artifact_are_stale_and_not_merged():
    # seed 0 evaluated twice (other metric sets); the target was rebuilt with other bytes in between
    old = row(
        "re",
        metrics={"natural_acc": 0.5, "fid": 10.0},
        created="2026-01-01T00:00:00",
        cell="a",
        sha={"target-key": "aaa"},
    )
    new = row(
        "re",
        metrics={"natural_acc": 0.9, "attack_acc": 0.25},
        created="2026-01-02T00:00:00",
        cell="b",
        sha={"target-key": "bbb"},
    )
    (e,) = aggregate([old, new], columns=COLS)
    assert e.stale == 1 and "fid" not in e.stats  # the old row's FID is not merged into the new target's
    assert e.stats["natural_acc"].mean == 0.9
    assert any("1 stale row(s) left out" in line for line in stats_notes([e], COLS))
    same = row(
        "re", metrics={"fid": 10.0}, created="2026-01-01T00:00:00", cell="c", sha={"target-key": "bbb"}
    )
    (e,) = aggregate([same, new], columns=COLS)
    assert e.stale == 0 and e.stats["fid"].mean == 10.0  # same bytes: merged as before


def test_a_group_mixing_metric_versions_is_marked_and_not_compared_across_versions():
    rows = [
        row("none", seed=0, versions={"attack_acc": 1}),
        row("none", seed=1, versions={"attack_acc": 2}),
        row("re", seed=0, versions={"attack_acc": 2}, hits=(0, 0, 0, 0)),
    ]
    entries = aggregate(rows, columns=COLS)
    none, re = (next(x for x in entries if x.defense == d) for d in ("none", "re"))
    assert none.mixed_versions == {"attack_acc": [1, 2]} and none["metric_versions_mixed"] == {
        "attack_acc": [1, 2]
    }
    assert any(
        "rows of several versions of a metric merged (attack_acc 1, 2)" in line
        for line in stats_notes(entries, COLS)
    )
    assert "other metric versions" in re.baseline_note
    # issue 30, item 15: only the bumped metric's differences are hidden
    assert re.baseline == "none" and re.deltas["attack_acc"].estimate is None
    assert all(d.estimate is not None for m, d in re.deltas.items() if not m.startswith("attack_acc"))


# --------------------------------------------------------------------------------------------
# Issue 17 section 2: rendering bugs, the default sort, the baseline


def test_the_rich_table_shows_labels_as_text():
    from rich.console import Console

    entries = aggregate([row("none"), row("re[scale=0.1-0.8]"), row("gaussnoise[sigma=0.05]")], columns=COLS)
    console = Console(record=True, width=400)
    console.print(rich_table(entries, COLS))
    text = console.export_text()
    assert "re[scale=0.1-0.8]" in text and "gaussnoise[sigma=0.05]" in text and "[digits32]" in text


def test_latex_carries_no_raw_unicode_symbols():
    rows = [row("none", seed=s, hits=(1, 1, 1, 0)) for s in (0, 1)] + [row("re_x", seed=s) for s in (0, 1)]
    latex = render(aggregate(rows, columns=COLS), "latex", COLS)
    assert latex.isascii(), sorted({ch for ch in latex if not ch.isascii()})
    assert r"$\Delta$ attack" in latex and r"$\pm$" in latex and r"re\_x" in latex


def test_the_default_sort_is_the_declared_privacy_axis():
    cols = [
        Column("natural_acc", axis="utility", better="higher"),
        Column("leak", better="lower", axis="privacy"),
    ]
    rows = [
        row(d, metrics={"natural_acc": 0.9, "leak": v}) for d, v in (("none", 0.9), ("a", 0.1), ("b", 0.5))
    ]
    assert [e.defense for e in sort_entries(aggregate(rows, columns=cols), columns=cols)] == [
        "a",
        "b",
        "none",
    ]


def test_an_unknown_baseline_is_a_clear_error(tmp_path):
    store = Store(tmp_path / "results.db")
    for r in (row("none"), row("re")):
        store.put(r)
    store.close()
    with pytest.raises(ValueError, match="defenses present: none, re"):
        check_baseline([row("none"), row("re")], "nosuch")
    args = ["leaderboard", "--workdir", str(tmp_path), "--format", "md"]
    result = CliRunner().invoke(cli, [*args, "--baseline", "nosuch"], obj=State(()))
    assert (
        result.exit_code == 2
        and "'nosuch': no result of that defense; defenses present: none, re" in result.output
    )
    assert CliRunner().invoke(cli, [*args, "--baseline", "re"], obj=State(())).exit_code == 0


# --------------------------------------------------------------------------------------------
# Issue 21 section 4: NaN and inf, and labels with $...$ in pictures


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_metric_values_are_stored_as_null_with_the_reason(tmp_path):
    store = Store(tmp_path / "results.db")
    store.put(row("re", metrics={"natural_acc": float("nan"), "attack_acc": float("inf"), "fid": 3.0}))
    got = store.get("re-0-0.001-2026-01-01T00:00:00")
    assert got.metrics == {"natural_acc": None, "attack_acc": None, "fid": 3.0}
    assert got.notes["natural_acc"] == "the metric returned nan, not a finite number"
    assert "inf" in got.notes["attack_acc"]


def test_json_stays_valid_with_non_finite_values_stored_by_older_versions():
    bad = row("re", metrics={"natural_acc": float("nan"), "attack_acc": 0.5})
    good = row("none")
    for entries in (aggregate([good, bad], columns=COLS),):
        data = _strict(render(entries, "json", COLS))
        re = next(d for d in data if d["defense"] == "re")
        assert re["natural_acc"] is None and "not a finite number" in re["natural_acc_note"]
        assert not any(isinstance(v, float) and not math.isfinite(v) for d in data for v in d.values())


def test_a_dollar_label_is_drawn_as_text(tmp_path):
    from reinv_bench.views.plots import privacy_utility

    entries = aggregate([row("none"), row(r"re[$\nosuchmacro{$]", hits=(0, 0, 0, 1))], columns=COLS)
    fig = privacy_utility(entries, tmp_path / "pu.png", COLS)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert any(r"\nosuchmacro" in t for t in labels) and (tmp_path / "pu.png").stat().st_size > 1000


def test_a_verdict_counts_the_seeds_paired_for_its_own_metric():
    none = [
        row("none", seed=s, metrics={"natural_acc": 0.9, "attack_acc": 0.5, "fid": 1.0}) for s in (0, 1, 2)
    ]
    re = [
        row("re", seed=0, metrics={"natural_acc": 0.9, "attack_acc": 0.25, "fid": 2.0}),
        row("re", seed=1, metrics={"natural_acc": 0.9, "attack_acc": 0.25, "fid": None}),
    ]
    entries = aggregate(none + re, columns=COLS)
    (sentence,) = verdicts(entries, COLS)
    assert (
        "2 seeds x 4 reconstructions" in sentence and "paired on 0, 1]" in sentence
    )  # not FID's seed 0 only


def test_a_defense_that_chooses_the_targets_init_is_still_compared():
    tl = row("tl", hits=(0, 0, 0, 0))
    tl.config["arch"]["init"] = {"pretrained": "abc"}  # TL trains from weights pretrained on public data
    entries = aggregate([row("none"), tl], columns=COLS)
    assert next(e for e in entries if e.defense == "tl").deltas["attack_acc"].estimate == pytest.approx(-0.5)
