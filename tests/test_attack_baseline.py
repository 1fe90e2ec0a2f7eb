"""Issue 29 item 7: ``leaderboard --attack-baseline ATTACK`` pairs every attacker with ATTACK on the
same targets, seeds and attacked classes with the defenses' paired bootstrap (``stats.paired``):
the "Δ attack vs ATTACK" column, the JSON/CSV keys, the verdict sentences, the one-line error."""

from __future__ import annotations

import json

from click.testing import CliRunner
from test_stats import row, stored

from reinv_bench.cli import State, cli
from reinv_bench.registry.lookup import load
from reinv_bench.results.aggregate import aggregate, attack_verdicts, compare_attacks, declared_columns
from reinv_bench.results.stats import paired
from reinv_bench.views.tables import display_rows, render

COLS = declared_columns(load())


def cell(defense, seed, pattern, attack="gmi"):
    r = row(defense, seed, pattern)
    r.update(attack=attack, cell_id=f"{attack}-{defense}-{seed}")
    r["config"] = {**r["config"], "attack": {"name": attack}}
    return r


LOW = {c: [c % 2, 0] for c in range(6)}  # 25 %
HIGH = {c: [1, c % 2] for c in range(6)}  # 75 %


def rows():
    out = []
    for seed in (0, 1, 2):
        out += [
            cell("re", seed, LOW),
            cell("re", seed, HIGH, attack="adaptive+gmi"),
            cell("none", seed, HIGH),
            cell("none", seed, HIGH, attack="adaptive+gmi"),
        ]
    return out


def entries(tmp_path):
    es = aggregate(stored(tmp_path, rows()), columns=COLS)
    compare_attacks(es, "gmi", COLS)
    return {(e.attack, e.defense): e for e in es}


def test_each_attacker_is_paired_with_the_baseline_attacker_on_its_own_targets(tmp_path):
    es = entries(tmp_path)
    adaptive, gmi = es[("adaptive+gmi", "re")], es[("gmi", "re")]
    d = adaptive.attack_deltas["attack_acc"]
    iv = paired(adaptive.rows, gmi.rows, "attack_acc")
    assert (d.estimate, d.lo, d.hi, d.method) == (iv.estimate, iv.lo, iv.hi, "classes+seeds")
    assert abs(d.estimate - 0.5) < 1e-12 and d.excludes_zero and d.paired == [0, 1, 2]
    assert adaptive.attack_baseline == "gmi" and gmi.attack_deltas["attack_acc"].estimate == 0.0
    # on the undefended targets the two attackers tie: the other defense's gmi is never the pair
    assert es[("adaptive+gmi", "none")].attack_deltas["attack_acc"].estimate == 0.0


def test_verdict_sentences(tmp_path):
    lines = attack_verdicts(list(entries(tmp_path).values()), COLS)
    (re_line,) = [x for x in lines if "(re," in x]
    assert re_line.startswith(
        "adaptive+gmi minus gmi (re, cnn, mnist smoke): attack accuracy +50.0 points (95% CI"
    )
    assert re_line.endswith("3 seeds x 12 reconstructions): a real difference (the interval excludes 0).")
    (none_line,) = [x for x in lines if "(none," in x]
    assert "+0.0 points" in none_line


def test_targets_the_baseline_attacker_did_not_attack_say_so(tmp_path):
    es = aggregate(
        stored(tmp_path, [cell("re", 0, LOW), cell("mid", 0, HIGH, attack="brepmi")]), columns=COLS
    )
    compare_attacks(es, "gmi", COLS)
    brepmi = next(e for e in es if e.attack == "brepmi")
    assert (
        brepmi.attack_baseline is None and brepmi.attack_baseline_note == "gmi did not attack these targets"
    )
    assert "gmi did not attack these targets" in render(es, "md", COLS)


def test_columns_and_keys(tmp_path):
    es = list(entries(tmp_path).values())
    headers, shown = display_rows(es, COLS)
    i = headers.index("Δ attack vs gmi")
    cells = {(r[2], r[4]): r[i] for r in shown}
    assert cells[("gmi", "re")] == "baseline" and cells[("adaptive+gmi", "re")].endswith(" *")
    data = {(e["attack"], e["defense"]): e for e in json.loads(render(es, "json", COLS))}
    assert data[("adaptive+gmi", "re")]["attack_baseline"] == "gmi"
    assert abs(data[("adaptive+gmi", "re")]["da_attack_acc"] - 0.5) < 1e-12
    assert "da_attack_acc_lo" in render(es, "csv", COLS).splitlines()[0].split(",")


def test_leaderboard_cli(tmp_path):
    stored(tmp_path, rows())
    base = ["leaderboard", "--workdir", str(tmp_path), "--format", "md"]
    result = CliRunner().invoke(cli, [*base, "--attack-baseline", "gmi"], obj=State(()))
    assert result.exit_code == 0, result.output
    assert "Δ attack vs gmi" in result.output
    assert "adaptive+gmi minus gmi (re, cnn, mnist smoke): attack accuracy +50.0 points" in result.output
    plain = CliRunner().invoke(cli, base, obj=State(()))
    assert "vs gmi" not in plain.output  # only when asked
    bad = CliRunner().invoke(cli, [*base, "--attack-baseline", "gmj"], obj=State(()))
    assert bad.exit_code == 2
    assert (
        "--attack-baseline 'gmj': no result of that attacker; attackers present: adaptive+gmi, gmi"
        in bad.output
    )
    assert "Traceback" not in bad.output
