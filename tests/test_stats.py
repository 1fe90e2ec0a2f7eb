"""Issue 12: intervals from the per-reconstruction outcomes stored with each cell, checked against
hand computations on rows built here and read back from a real results database; metric columns
declared by the metrics (a third-party one included); the baseline and essential plugins."""

from __future__ import annotations

import sqlite3
import statistics
import sys

import pytest
from click.testing import CliRunner

from reinv_bench import hookimpl
from reinv_bench.api import Column, Metric
from reinv_bench.cli import State, cli
from reinv_bench.registry.lookup import load
from reinv_bench.registry.plugins import PluginError, get_plugin_manager
from reinv_bench.results.aggregate import aggregate, declared_columns, sort_entries, verdicts
from reinv_bench.results.stats import interval, paired
from reinv_bench.results.store import COLUMNS, SCHEMA_VERSION, Store
from reinv_bench.views.table_notes import ONE_SEED
from reinv_bench.views.tables import delta_cell as delta
from reinv_bench.views.tables import display_rows, render, stats_notes

COLS = declared_columns(load())


class Leak(Metric):
    """A third-party metric: declares one percent column, lower is better for the defense."""

    name = "leak"
    columns = (Column("leak", "Leak %", percent=True, better="lower"),)

    def compute(self, ctx):
        return {"leak": 0.0}


@hookimpl
def register_metrics():  # this module is a plugin too: load(extra=...) or -p test_stats
    return [Leak()]


def hits(pattern: dict[int, list[int]]) -> dict:
    """Outcomes of a cell whose reconstructions of class c succeed as pattern[c] says."""
    classes = [c for c, hs in pattern.items() for _ in hs]
    values = [h for hs in pattern.values() for h in hs]
    return {
        "class": classes,
        "target_conf": [0.5] * len(classes),
        "per_reconstruction": {"attack_acc": values},
        "per_item": {},
    }


def row(
    defense: str,
    seed: int,
    pattern: dict[int, list[int]] | None = None,
    natural: float = 0.9,
    extra: dict | None = None,
    attack: float | None = None,
) -> dict:
    out = hits(pattern) if pattern is not None else None
    if attack is None:
        values = out["per_reconstruction"]["attack_acc"]
        attack = sum(values) / len(values)
    r = dict.fromkeys(COLUMNS)
    r.update(
        cell_id=f"{defense}-{seed}",
        scenario="mnist",
        protocol="digits32",
        arch="cnn",
        defense=defense,
        attack="gmi",
        threat_model="white-box",
        seed=seed,
        budget="smoke",
        status="ok",
        config={"defense": [{"name": defense, "config": {}}]},
        notes={},
        timings={},
        device="cpu",
        metrics={"natural_acc": natural, "attack_acc": attack, **(extra or {})},
        data_digest="d" * 64,
        torch_version="2",
        reinv_version="0.1.0",
        created_at="2026-01-01T00:00:00+00:00",
        outcomes=out,
        artifacts=None,
    )
    return r


def stored(tmp_path, rows: list[dict]) -> list[dict]:
    """The rows as the results database gives them back."""
    store = Store(tmp_path / "results.db")
    for r in rows:
        store.put(r)
    return store.rows()


def by_defense(entries):
    return {e["defense"]: e for e in entries}


def test_two_classes_one_seed_gives_the_hand_computed_interval(tmp_path):
    # per-class differences re - none: class 0: 0, class 1: -1. The class bootstrap draws 2 classes:
    # both 0 (p 1/4) -> 0, one each (p 1/2) -> -0.5, both 1 (p 1/4) -> -1; 2.5/97.5 percentiles: -1, 0
    rows = stored(tmp_path, [row("none", 0, {0: [1, 1], 1: [1, 1]}), row("re", 0, {0: [1, 1], 1: [0, 0]})])
    e = by_defense(aggregate(rows, columns=COLS))
    re = e["re"]
    assert re["d_attack_acc"] == pytest.approx(-0.5)
    assert (re["d_attack_acc_lo"], re["d_attack_acc_hi"]) == (pytest.approx(-1.0), pytest.approx(0.0))
    assert re["d_attack_acc_method"] == "classes" and re["reconstructions"] == 4
    assert delta(re, "attack_acc", COLS) == "-50.0 [-100.0, +0.0]"  # the interval covers 0: no mark
    assert delta(e["none"], "attack_acc", COLS) == "baseline"
    (sentence,) = verdicts(list(e.values()), COLS)
    assert sentence == (
        "re vs none: attack accuracy -50.0 points (95% CI -100.0 to +0.0, 1 seed x 4 "
        "reconstructions): not distinguishable from noise; --seeds 3 narrows it."
    )
    assert ONE_SEED in stats_notes(
        list(e.values()), COLS
    )  # one seed: the interval leaves out the targets' variation
    _, shown = display_rows(sort_entries(list(e.values()), columns=COLS), COLS)
    assert {r[5] for r in shown} == {"1 x 4"}  # n = seeds x reconstructions


def test_a_difference_whose_interval_excludes_zero_is_marked_and_said_so(tmp_path):
    none = {c: [1, 1] for c in range(5)}
    re = {c: [1, 0] for c in range(5)}  # -0.5 in every class: every replicate is -0.5
    e = by_defense(aggregate(stored(tmp_path, [row("none", 0, none), row("re", 0, re)]), columns=COLS))
    assert delta(e["re"], "attack_acc", COLS) == "-50.0 [-50.0, -50.0] *"
    (sentence,) = verdicts(list(e.values()), COLS)
    assert sentence.endswith("1 seed x 10 reconstructions): a real difference (the interval excludes 0).")
    assert (
        e["re"]["pareto"] and e["re"]["separable"] and not e["none"]["pareto"]
    )  # same natural acc, less leak


def test_many_classes_match_the_normal_approximation():
    # 200 classes x 5 reconstructions: the class bootstrap's interval is close to mean +- 1.96 sd/sqrt(C)
    def succeed(k):  # k of 5 reconstructions succeed
        return [1] * k + [0] * (5 - k)

    base = {c: succeed((c * 7) % 6) for c in range(200)}
    dfn = {c: succeed((c * 3) % 4) for c in range(200)}
    a, b = {0: row("re", 0, dfn)}, {0: row("none", 0, base)}
    d = [sum(dfn[c]) / 5 - sum(base[c]) / 5 for c in range(200)]
    mean, se = statistics.fmean(d), statistics.pstdev(d) / 200**0.5
    iv = paired(a, b, "attack_acc")
    assert iv.estimate == pytest.approx(mean)
    assert iv.lo == pytest.approx(mean - 1.96 * se, abs=0.15 * se)
    assert iv.hi == pytest.approx(mean + 1.96 * se, abs=0.15 * se)
    assert paired(a, b, "attack_acc") == iv  # seeded: the same rows give the same interval


def test_several_seeds_are_paired_and_resampled():
    # within each seed every class differs by the same amount, so only the seeds vary: 0, -0.3, -0.6.
    # Resampling 3 seeds, each extreme has probability 1/27 > 2.5%: the interval is [-0.6, 0]
    none = {s: row("none", s, {0: [1] * 10, 1: [1] * 10}) for s in range(3)}
    re = {
        s: row("re", s, {0: [1] * (10 - 3 * s) + [0] * (3 * s), 1: [1] * (10 - 3 * s) + [0] * (3 * s)})
        for s in range(3)
    }
    iv = paired(re, none, "attack_acc")
    assert iv.method == "classes+seeds" and iv.seeds == [0, 1, 2]
    assert iv.estimate == pytest.approx(-0.3)
    assert (iv.lo, iv.hi) == (pytest.approx(-0.6), pytest.approx(0.0))
    assert not iv.excludes_zero and not iv.seed_mismatch
    one = interval(
        re, "attack_acc"
    )  # one entry's own interval (the plots' error bars): seeds at 1.0, 0.7, 0.4
    assert one.estimate == pytest.approx(0.7) and (one.lo, one.hi) == (pytest.approx(0.4), pytest.approx(1.0))


def test_identical_defenses_are_not_distinguishable(tmp_path):
    same = {c: [1, 0, 1] for c in range(10)}
    # the same success rate with other reconstructions: class parity decides who succeeds
    flip_a = {c: [c % 2] * 3 for c in range(20)}
    flip_b = {c: [1 - c % 2] * 3 for c in range(20)}
    e = by_defense(aggregate(stored(tmp_path, [row("none", 0, same), row("re", 0, same)]), columns=COLS))
    assert (e["re"]["d_attack_acc"], e["re"]["d_attack_acc_lo"], e["re"]["d_attack_acc_hi"]) == (
        0.0,
        0.0,
        0.0,
    )
    assert "not distinguishable from noise" in verdicts(list(e.values()), COLS)[0]
    e = by_defense(aggregate([row("none", 0, flip_a), row("re", 0, flip_b)], columns=COLS))
    re = e["re"]
    assert re["d_attack_acc"] == 0.0 and re["d_attack_acc_lo"] < 0 < re["d_attack_acc_hi"]
    assert "not distinguishable from noise" in verdicts(list(e.values()), COLS)[0]


def test_other_seed_sets_are_flagged_and_only_common_seeds_paired():
    none = [row("none", s, {0: [1, 1], 1: [1, 1]}) for s in range(3)]
    re = [row("re", s, {0: [1, 0], 1: [1, 0]}) for s in range(2)]
    e = by_defense(aggregate(none + re, columns=COLS))
    assert e["re"]["seed_mismatch"] == {"seeds": [0, 1], "baseline_seeds": [0, 1, 2], "paired": [0, 1]}
    (sentence,) = verdicts(list(e.values()), COLS)
    assert "[seeds differ: re has 0, 1, none has 0, 1, 2; paired on 0, 1]" in sentence
    assert "2 seeds x 4 reconstructions" in sentence
    assert any("paired on the common seeds 0, 1" in line for line in stats_notes(list(e.values()), COLS))


def test_rows_without_outcomes_use_seeds_or_say_there_is_no_interval():
    one = [row("none", 0, attack=0.8), row("re", 0, attack=0.6)]
    (sentence,) = verdicts(aggregate(one, columns=COLS), COLS)
    assert sentence.startswith("re vs none: attack accuracy -20.0 points (1 seed): no interval (")
    three = [row("none", s, attack=0.8) for s in range(3)] + [
        row("re", s, attack=v) for s, v in enumerate((0.5, 0.6, 0.7))
    ]
    re = by_defense(aggregate(three, columns=COLS))["re"]
    assert re["d_attack_acc_method"] == "seeds"
    assert (re["d_attack_acc_lo"], re["d_attack_acc_hi"]) == (pytest.approx(-0.3), pytest.approx(-0.1))


def test_a_defense_not_separable_within_the_intervals_gets_a_hollow_star():
    none = row("none", 0, {c: [1, 0] for c in range(4)}, natural=0.90)  # attack 0.5
    # attack 0.375: per-class differences -0.5, +0.5, 0, -0.5; the interval covers 0
    re = row("re", 0, {0: [0, 0], 1: [1, 1], 2: [1, 0], 3: [0, 0]}, natural=0.88)
    e = by_defense(aggregate([none, re], columns=COLS))
    assert e["re"]["pareto"] and e["none"]["pareto"]  # both on the front by the means
    assert e["re"]["d_attack_acc_lo"] < 0 < e["re"]["d_attack_acc_hi"]
    _, shown = display_rows(sort_entries(list(e.values()), columns=COLS), COLS)
    marks = {r[4]: r[-1] for r in shown}
    assert marks == {"re": "☆", "none": "★"}  # none is as good on attack within the interval, better natural
    assert any("☆ = Pareto-optimal by the means but" in line for line in stats_notes(list(e.values()), COLS))


def test_baseline_can_be_any_defense():
    rows = [
        row("none", 0, {0: [1, 1], 1: [1, 1]}),
        row("re", 0, {0: [1, 0], 1: [1, 0]}),
        row("mid", 0, {0: [0, 0], 1: [0, 0]}),
    ]
    e = by_defense(aggregate(rows, baseline="re", columns=COLS))
    assert e["re"]["d_attack_acc"] == 0.0 and e["mid"]["d_attack_acc"] == pytest.approx(-0.5)
    assert [s.split(":")[0] for s in verdicts(list(e.values()), COLS)] == ["none vs re", "mid vs re"]
    e = by_defense(aggregate(rows, baseline="bido", columns=COLS))
    assert e["re"]["d_attack_acc"] is None and verdicts(list(e.values()), COLS) == []
    assert any("No baseline in" in line for line in stats_notes(list(e.values()), COLS))


def test_schema_2_database_is_migrated_and_old_rows_stay_readable(tmp_path):
    old = [c for c in COLUMNS if c not in ("outcomes", "artifacts", "environment")]
    db = sqlite3.connect(tmp_path / "results.db")
    with db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        db.execute("INSERT INTO meta VALUES ('schema_version', '2')")
        db.execute(
            f"CREATE TABLE results (cell_id TEXT PRIMARY KEY, {', '.join(c + ' TEXT' for c in old[1:])})"
        )
        db.execute(
            "INSERT INTO results (cell_id, scenario, status, metrics, seed) VALUES "
            "('old', 'mnist', 'ok', '{\"attack_acc\": 0.5}', 0)"
        )
    db.close()
    store = Store(tmp_path / "results.db")
    got = store.get("old")
    assert got["metrics"] == {"attack_acc": 0.5} and got["outcomes"] is None and got["artifacts"] is None
    new = row("re", 0, {0: [1, 0]})
    new["artifacts"] = {"invert": "abc"}
    store.put(new)
    again = Store(tmp_path / "results.db")
    assert again.get("re-0")["outcomes"]["per_reconstruction"]["attack_acc"] == [1, 0]
    assert again.get("re-0")["artifacts"] == {"invert": "abc"}
    assert again.db.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION) == "4"
    assert again.get("old")["environment"] is None  # schema 4's column, null for migrated rows


def test_builtin_metrics_declare_their_columns():
    cols = {c.key: c for c in declared_columns(load())}
    assert cols["natural_acc"].axis == "utility" and cols["natural_acc"].better == "higher"
    assert cols["attack_acc"].axis == "privacy" and cols["attack_acc"].better == "lower"
    assert cols["attack_acc5"].percent and not cols["fid"].percent and cols["knn_dist"].better == "higher"
    assert [c.key for c in declared_columns(load())][:2] == ["natural_acc", "attack_acc"]


def test_a_third_party_metric_is_a_column_that_sorts():
    columns = declared_columns(load(extra=(sys.modules[__name__],)))
    assert Column("leak", "Leak %", percent=True, better="lower") in columns
    rows = [
        row("none", 0, {0: [1, 1]}, extra={"leak": 0.30}),
        row("re", 0, {0: [1, 0]}, extra={"leak": 0.10}),
        row("mid", 0, {0: [0, 0]}, extra={"leak": 0.20}),
    ]
    entries = sort_entries(aggregate(rows, columns=columns), "leak", columns=columns)
    assert [e["defense"] for e in entries] == ["re", "mid", "none"]  # lower is better: first
    headers, shown = display_rows(entries, columns)
    assert "Leak %" in headers and shown[0][headers.index("Leak %")] == "10.0"
    assert entries[0]["d_leak"] == pytest.approx(-0.2)  # a column with a direction is compared too
    assert "leak" in render(entries, "csv", columns).splitlines()[0].split(",")
    with pytest.raises(ValueError, match="cannot sort by 'bogus'"):
        sort_entries(entries, "bogus", columns=columns)
    # an undeclared key still shows under its own name
    (e,) = aggregate([row("none", 0, {0: [1]}, extra={"mystery": 2.5})], columns=columns)
    headers, shown = display_rows([e], columns)
    assert shown[0][headers.index("mystery")] == "2.5"


def test_leaderboard_cli_shows_and_sorts_a_third_party_metric(tmp_path):
    stored(
        tmp_path,
        [
            row("none", 0, {0: [1, 1], 1: [1, 1]}, extra={"leak": 0.3}),
            row("re", 0, {0: [1, 0], 1: [1, 0]}, extra={"leak": 0.1}),
        ],
    )
    args = ["-p", __name__, "leaderboard", "--workdir", str(tmp_path), "--format", "md", "--sort", "leak"]
    result = CliRunner().invoke(cli, args, obj=State((__name__,)))
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("|")]
    assert "Leak %" in lines[0] and "| re " in lines[2] and "| none " in lines[3]
    assert "Δ attack" in lines[0] and "-50.0 [-50.0, -50.0] *" in lines[2]


def test_essential_plugins_cannot_be_blocked():
    for name in ("none", "inline"):
        with pytest.raises(PluginError, match=f"plugin '{name}' is essential"):
            get_plugin_manager((f"no:{name}",))
    result = CliRunner().invoke(cli, ["-p", "no:none", "plugins"], obj=State(("no:none",)))
    assert result.exit_code != 0 and "essential" in result.output
