"""Issue 29 item 6: the most exposed identities. ``attack_acc_top10`` (the attack accuracy of the 10 %
most-leaked identities) from the stored per-reconstruction outcomes, checked against hand
computations; its interval; the direction of a distance column; its column, JSON/CSV keys and sort;
the per-identity curve of ``plot --identities``."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from test_stats import row, stored

from reinv_bench.cli import State, cli
from reinv_bench.registry.lookup import load
from reinv_bench.results import exposure
from reinv_bench.results.aggregate import aggregate, declared_columns, sort_entries
from reinv_bench.views.tables import display_rows, render

COLS = declared_columns(load())


def pattern(successes: list[int], per: int = 5) -> dict[int, list[int]]:
    """Class c succeeds in successes[c] of its ``per`` reconstructions."""
    return {c: [1] * k + [0] * (per - k) for c, k in enumerate(successes)}


def by_defense(entries):
    return {e.defense: e for e in entries}


def test_top_decile_is_the_mean_of_the_most_leaked_tenth_of_identities():
    # 20 identities: the top 10 % are the 2 most leaked (5/5 and 4/5 -> 90 %); the mean is 27 %
    succ = [5, 4] + [1] * 18
    (e,) = aggregate([row("none", 0, pattern(succ))], columns=COLS)
    top = e.stats["attack_acc_top10"]
    assert abs(top.mean - 0.9) < 1e-12 and abs(e.mean("attack_acc") - 27 / 100) < 1e-12
    assert (
        e.top == ["attack_acc_top10"] and "attack_acc_top10" not in e.metrics
    )  # no metric column of its own
    assert top.lo <= 0.9 <= top.hi


def test_at_least_one_identity_and_the_hand_computed_interval():
    # 2 identities, 100 % and 0 %: the top decile is the one most leaked (100 %). Each bootstrap
    # replicate draws 2 identities with replacement; its max is 0 only when both draws are the
    # second (probability 1/4), so the 2.5th percentile is 0 and the 97.5th is 1.
    iv = exposure.top({0: row("none", 0, {0: [1, 1], 1: [0, 0]})}, "attack_acc", "lower")
    assert (iv.estimate, iv.lo, iv.hi, iv.method) == (1.0, 0.0, 1.0, "classes")
    assert exposure.count(2) == 1 and exposure.count(10) == 1 and exposure.count(11) == 2


def test_several_seeds_average_their_top_deciles():
    rows = {0: row("none", 0, pattern([5, 0, 0, 0])), 1: row("none", 1, pattern([2, 2, 2, 1]))}
    iv = exposure.top(rows, "attack_acc", "lower")
    assert abs(iv.estimate - (1.0 + 0.4) / 2) < 1e-12 and iv.method == "classes+seeds"
    assert iv.lo <= iv.estimate <= iv.hi


def test_a_distance_column_ranks_the_smallest_as_most_leaked():
    r = row("none", 0, {0: [1], 1: [1]})
    r["outcomes"]["per_reconstruction"]["knn_dist"] = [3.0, 7.0]
    assert exposure.top({0: r}, "knn_dist", "higher").estimate == 3.0
    assert exposure.top({0: r}, "knn_dist", "lower").estimate == 7.0
    assert list(exposure.curve({0: r}, "knn_dist", "higher")) == [3.0, 7.0]


def test_no_outcomes_no_number_and_the_note_says_why():
    (e,) = aggregate([row("none", 0, None, attack=0.5), row("none", 1, None, attack=0.7)], columns=COLS)
    st = e.stats["attack_acc_top10"]
    assert st.mean is None and "no per-reconstruction outcomes" in st.note
    headers, shown = display_rows([e], COLS)
    assert shown[0][headers.index("Top-10% Attack acc %")] == "n/a"


def test_columns_keys_and_ranking_by_the_worst_decile(tmp_path):
    # re leaks less on average than mid but more in its worst decile
    rows = [
        row("none", 0, pattern([5] * 10)),
        row("re", 0, pattern([4] + [0] * 9)),  # mean 8 %, top decile 80 %
        row("mid", 0, pattern([2] * 10)),  # mean 40 %, top decile 40 %
    ]
    es = aggregate(stored(tmp_path, rows), columns=COLS)
    order = [e.defense for e in sort_entries(es, "attack_acc", columns=COLS)]
    worst = [e.defense for e in sort_entries(es, "attack_acc_top10", columns=COLS)]
    assert order == ["re", "mid", "none"] and worst == ["mid", "re", "none"]
    headers, shown = display_rows(es, COLS)
    i = headers.index("Top-10% Attack acc %")
    assert headers[i - 1] == "Δ attack"  # beside the mean and its difference
    cells = {r[4]: r[i] for r in shown}
    assert cells["mid"] == "40.0 [40.0, 40.0]" and cells["re"].startswith("80.0 [")
    data = {e["defense"]: e for e in json.loads(render(es, "json", COLS))}
    assert data["re"]["attack_acc_top10"] == 0.8 and "attack_acc_top10_lo" in data["re"]
    csv = render(es, "csv", COLS).splitlines()
    assert "attack_acc_top10" in csv[0].split(",")
    assert "Top-10%: the mean over the 10 % most-leaked identities" in render(es, "md", COLS)


def test_the_curve_is_sorted_most_leaked_first_and_averaged_by_rank():
    rows = {0: row("none", 0, pattern([1, 5, 3])), 1: row("none", 1, pattern([3, 1, 5]))}
    assert np.allclose(exposure.curve(rows, "attack_acc", "lower"), [1.0, 0.6, 0.2])


def test_plot_identities_draws_the_curves(tmp_path):
    stored(tmp_path, [row("none", 0, pattern([5, 1, 0])), row("re", 0, pattern([2, 2, 0]))])
    out = tmp_path / "ids.png"
    args = ["plot", "--identities", "--workdir", str(tmp_path), "-o", str(out)]
    result = CliRunner().invoke(cli, args, obj=State(()))
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1000
    both = ["plot", "--identities", "--features", "--workdir", str(tmp_path), "-o", str(out)]
    result = CliRunner().invoke(cli, both, obj=State(()))
    assert result.exit_code == 2 and "give one" in result.output
