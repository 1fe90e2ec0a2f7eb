"""``leaderboard --view defenses`` (issue 29 item 8): one line per defense with standard, adaptive
and worst-case columns, the worst case's null, "checked" through one function, broken by, flags;
the default leaderboard unchanged; a report section per defense where there is an ensemble."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import reinv_bench
from reinv_bench.results import ensemble
from reinv_bench.results.aggregate import aggregate, declared_columns
from reinv_bench.views import defense_board

sys.path.insert(0, str(Path(__file__).parent))
import test_worst_case as wc  # noqa: E402


def test_checked_needs_an_adaptive_row_validity_checks_and_a_convergence_check():
    full = [
        {"attack": "gmi", "notes": {"validity": '{"checks": 1}'}, "config": {}},
        {"attack": "adaptive+gmi", "notes": {}, "config": {}},
        {"attack": "gmi", "notes": {}, "config": {"convergence": {"of": "gmi"}}},
    ]
    assert defense_board.checked(full) == []
    assert defense_board.checked(full[:2]) == ["convergence check"]
    assert defense_board.checked(full[1:]) == ["validity checks"]
    assert defense_board.checked([full[0], full[2]]) == ["adaptive row"]
    assert defense_board.checked([]) == ["adaptive row", "validity checks", "convergence check"]


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    import conftest

    from reinv_bench.registry.lookup import load

    reg = load(extra=(conftest, wc))
    work = tmp_path_factory.mktemp("board")
    res = reinv_bench.run(
        wc._req(defenses=("none", "re")), registry=reg, workdir=work, device="cpu", check=False
    )
    return reg, work, res


def test_the_default_leaderboard_is_the_cells_view(ran, invoke):
    reg, work, _ = ran
    default = invoke("leaderboard", "--format", "md", "--workdir", work, registry=reg, ok=True).output
    cells = invoke(
        "leaderboard", "--format", "md", "--view", "cells", "--workdir", work, registry=reg, ok=True
    )
    assert default == cells.output
    assert "Worst case" not in default


def test_defenses_view_has_one_line_per_defense_with_the_worst_case_and_its_null(ran, invoke):
    reg, work, res = ran
    out = invoke(
        "leaderboard", "--view", "defenses", "--format", "json", "--workdir", work, registry=reg, ok=True
    )
    lines = {d["defense"]: d for d in json.loads(out.output)}
    assert set(lines) == {"none", "re"}
    re_ = lines["re"]
    assert set(re_) >= {"meanimg", "noisyimg", "Worst case", "Worst - null", "Checked", "Broken by", "Flags"}
    row = next(r for r in res.rows if r.defense == "re" and r.attack == wc.AUTO)
    worst, null = row.metrics["attack_acc"], row.metrics["attack_acc" + ensemble.NULL]
    est, lo, hi = re_["values"]["worst_minus_null"]
    assert est == pytest.approx(worst - null) and lo <= est <= hi
    assert re_["values"]["worst"] == pytest.approx(worst)
    assert re_["Broken by"] == (ensemble.leader(row.notes[ensemble.BROKEN_BY]) or "none")  # none succeeded
    assert re_["checked"] is False and "adaptive row" in re_["missing"]
    md = invoke(
        "leaderboard", "--view", "defenses", "--format", "md", "--workdir", work, registry=reg, ok=True
    )
    assert "Worst - null" in md.output and "Checked" in md.output


def test_worst_minus_null_is_paired_on_the_same_identities(ran):
    reg, _, res = ran
    columns = declared_columns(reg)
    ens = next(e for e in aggregate(res.rows, columns=columns) if defense_board.is_ensemble(e))
    side = defense_board.null_side(ens, "attack_acc")
    (seed,) = side
    assert side[seed]["outcomes"].classes == ens.rows[seed].outcomes.classes


def test_without_an_ensemble_the_strongest_attack_is_named(ran):
    reg, _, res = ran
    columns = declared_columns(reg)
    rows = [r for r in res.rows if r.attack != wc.AUTO]
    board = defense_board.build(rows, aggregate(rows, columns=columns), columns)
    assert all(line.worst == "" and line.broken_by.endswith("(highest mean; no ensemble)") for line in board)


def test_report_has_a_section_per_defense_only_with_an_ensemble(ran):
    from reinv_bench.views.report import _defenses

    reg, _, res = ran
    columns = declared_columns(reg)
    html = _defenses(res.rows, aggregate(res.rows, columns=columns), columns)
    assert html.count("<h3>") == 2 and "Broken by: " in html and "Not checked: missing adaptive row" in html
    plain = [r for r in res.rows if r.attack != wc.AUTO]
    assert _defenses(plain, aggregate(plain, columns=columns), columns) == ""
