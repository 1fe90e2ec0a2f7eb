"""Issue 30, item 23 (and the `-s` of item 15): bad input is one line, not a traceback nor a FAILED row
per cell; labels holding raw HTML stay inert in Markdown and CSV leaderboards; a repeated --judge or
--eval-arch is used once, said once; SIGTERM leaves a message as Ctrl-C does."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_leaderboard_groups import COLS, row

from reinv_bench.results.aggregate import aggregate
from reinv_bench.views.tables import render

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ("run", "-a", "gmi", "-d", "none", "--budget", "smoke")


def one_line(result) -> str:
    assert result.exit_code != 0, result.output
    assert (
        "Traceback" not in result.output
        and result.exception is None
        or isinstance(result.exception, SystemExit)
    ), result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_two_judges_in_one_judge_option_is_one_line(invoke, tmp_path):
    line = one_line(invoke(*SMOKE, "--workdir", tmp_path, "--dry-run", "--judge", "a+b"))
    assert "--judge 'a+b': one judge per --judge" in line


@pytest.mark.parametrize(
    "variable, value, says",
    [
        ("REINV_BENCH_CHECKPOINT_EVERY", "abc", "REINV_BENCH_CHECKPOINT_EVERY='abc'"),
        ("REINV_BENCH_LOCK_STALE", "-1", "REINV_BENCH_LOCK_STALE='-1'"),
        ("REINV_BENCH_HEARTBEAT", "often", "REINV_BENCH_HEARTBEAT='often'"),
        ("REINV_BENCH_IMAGE_CACHE_GB", "lots", "REINV_BENCH_IMAGE_CACHE_GB='lots'"),
        ("REINV_BENCH_DECODE_PROCESS_MIN", "1.5", "REINV_BENCH_DECODE_PROCESS_MIN='1.5'"),
    ],
)
def test_an_invalid_environment_value_is_one_line_before_any_step(
    invoke, tmp_path, monkeypatch, variable, value, says
):
    monkeypatch.setenv(variable, value)
    result = invoke(*SMOKE, "--workdir", tmp_path / "w", "--seeds", "2")
    line = one_line(result)
    assert says in line and "nothing was run" in line, line
    assert not (tmp_path / "w" / "results.db").exists()  # no FAILED row per cell


def test_bad_environment_values_are_all_named_at_once(invoke, tmp_path, monkeypatch):
    monkeypatch.setenv("REINV_BENCH_CHECKPOINT_EVERY", "abc")
    monkeypatch.setenv("REINV_BENCH_HEARTBEAT", "0")
    line = one_line(invoke(*SMOKE, "--workdir", tmp_path, "--dry-run"))
    assert "REINV_BENCH_CHECKPOINT_EVERY='abc'" in line and "REINV_BENCH_HEARTBEAT='0'" in line


@pytest.mark.parametrize(
    "option, value", [("--judge", "verification"), ("--eval-arch", "cnn"), ("--eval-arch", "resnet8")]
)
def test_a_repeated_judge_or_eval_arch_is_used_once_and_said(invoke, tmp_path, option, value):
    once = invoke(*SMOKE, "--workdir", tmp_path, "--dry-run", option, value)
    twice = invoke(*SMOKE, "--workdir", tmp_path, "--dry-run", option, value, option, value)
    assert once.exit_code == 0 and twice.exit_code == 0, twice.output
    assert f"warning: {option} {value} given more than once: used once" in twice.output
    assert "given more than once" not in once.output
    table = [line for line in twice.output.splitlines() if "warning" not in line]
    assert table == [line for line in once.output.splitlines() if "warning" not in line]


def test_scenario_has_a_short_option(invoke, tmp_path):
    result = invoke(*SMOKE, "--workdir", tmp_path, "--dry-run", "-s", "mnist")
    assert result.exit_code == 0, result.output
    result = invoke("leaderboard", "--workdir", tmp_path, "-s", "mnist")
    assert "no such option" not in result.output.lower(), result.output


# --- labels holding raw HTML ------------------------------------------------------------------------

EVIL = '<img src=x onerror="alert(1)">|x'


def evil_entries():
    rows = [
        row("none", metrics={"natural_acc": 0.9, "attack_acc": 0.8}),
        row(EVIL, metrics={"natural_acc": 0.85, "attack_acc": 0.4}),
    ]
    for r in rows:
        r["attack"] = '=HYPERLINK("http://x")'
    return aggregate(rows, columns=COLS)


def test_markdown_leaderboard_escapes_raw_html_and_pipes():
    text = render(evil_entries(), "md", COLS)
    assert "<img" not in text and "&lt;img src=x onerror=" in text
    assert "\\|x" in text  # the pipe does not split the cell
    header = next(line for line in text.splitlines() if line.startswith("|"))
    width = header.count("|") - header.count("\\|")
    body = [line for line in text.splitlines() if "&lt;img" in line][0]
    assert body.count("|") - body.count("\\|") == width  # same number of cells as the header


def test_csv_leaderboard_escapes_raw_html_and_formulas():
    text = render(evil_entries(), "csv", COLS)
    assert "<img" not in text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert any(r["defense"].startswith("&lt;img") for r in rows)
    assert all(r["attack"].startswith("'=") for r in rows)  # a spreadsheet shows it, does not run it
    assert all(float(r["natural_acc"]) > 0 for r in rows)  # numbers stay numbers


# --- SIGTERM ------------------------------------------------------------------------------------------


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_sigterm_leaves_a_message_like_ctrl_c(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")]),
        "OMP_NUM_THREADS": "1",
        "REINV_BENCH_HOME": str(tmp_path / "w"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", "from reinv_bench.cli import main; main()", *SMOKE, "--seeds", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    time.sleep(8)  # imported, planning or running its first steps
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert "terminated (SIGTERM)" in err, (proc.returncode, err[-2000:])
    assert proc.returncode == 143
    assert "Traceback" not in err


# --- item 13: chunked inversions are another setting unless whole identity batches ---------------


def chunk_configs(attack: str, class_chunk) -> list[dict]:
    from reinv_bench.engine.plan import Request, expand
    from reinv_bench.registry.lookup import load

    req = Request([attack], ["none"], [], ["mnist"], 1, "smoke", False, None, class_chunk=class_chunk)
    return [c.config for c in expand(req, load(), data_digest=lambda s: "d").cells]


def test_a_chunk_that_splits_identity_batches_enters_the_config_and_the_setting():
    from reinv_bench.results.aggregate import as_row
    from reinv_bench.results.setting import setting_text

    (plain,) = chunk_configs("gmi", 0)
    (split,) = chunk_configs("gmi", 3)  # GMI's identity batch is 60 classes: chunks of 3 split it
    assert "class_chunk" not in plain and split["class_chunk"] == 3
    rows = [as_row(row(config=c)) for c in (plain, split)]
    assert setting_text(rows[0]) != setting_text(rows[1])


def test_chunks_of_whole_identity_batches_are_the_unchunked_setting():
    (plain,) = chunk_configs("gmi[batch_ids=2]", 0)
    (whole,) = chunk_configs("gmi[batch_ids=2]", 4)
    assert whole == plain  # the same reconstructions: each class draws from its own stream


# --- item 14: the CPU thread counts a row was computed with ---------------------------------------


def test_a_row_records_the_thread_counts_of_its_steps_and_evaluation():
    from types import SimpleNamespace

    from reinv_bench.engine.runner import Runner

    devices = {"e": "cpu (1 threads)", "t": "cpu (2 threads)", "i": "cuda:0 (NVIDIA H100)"}
    art = SimpleNamespace(record=lambda k: {"meta": {"device": devices[k]}} if k in devices else None)
    cell = SimpleNamespace(
        eval_key="e", target_key="t", prior_keys=["p"], invert_key="i", extra_evals={}, judges=[]
    )
    fake = SimpleNamespace(artifacts=art)
    assert Runner._threads(fake, cell, "cpu (4 threads)") == {"threads": [1, 2, 4]}
    assert Runner._threads(fake, cell, None) == {"threads": [1, 2]}


def test_a_leaderboard_entry_mixing_thread_counts_says_so_and_stays_one_entry():
    import copy

    from test_leaderboard_groups import CONFIG

    rows = []
    for seed, threads in ((0, [1]), (1, [2])):
        cfg = copy.deepcopy(CONFIG)
        cfg["threads"] = threads
        rows.append(row("none", seed=seed, config=cfg, metrics={"natural_acc": 0.9, "attack_acc": 0.5}))
    (e,) = aggregate(rows, columns=COLS)
    assert e.n == 2 and e.threads == [1, 2]
    text = render([e], "md", COLS)
    assert "rows computed with 1 and 2 CPU threads merged" in text
    (alone,) = aggregate(rows[:1], columns=COLS)
    assert "CPU threads merged" not in render([alone], "md", COLS)


# --- item 15: what a user reads ---------------------------------------------------------------------


def test_dp_numbers_are_declared_columns():
    from reinv_bench.registry.lookup import load
    from reinv_bench.results.aggregate import declared_columns
    from reinv_bench.views.tables import display_rows

    columns = declared_columns(load())
    headers = {c.key: c.header for c in columns}
    assert headers["dp_epsilon"] == "DP ε" and headers["dp_groupnorm"] == "BatchNorm -> GroupNorm layers"
    rows = [
        row("none", metrics={"natural_acc": 0.9, "attack_acc": 0.5, "dp_epsilon": 3.2, "dp_groupnorm": 9})
    ]
    shown, _ = display_rows(aggregate(rows, columns=columns), columns)
    assert "BatchNorm -> GroupNorm layers" in shown and "dp_groupnorm" not in shown


def test_library_warnings_while_training_go_to_the_meta_not_the_terminal():
    import warnings

    from reinv_bench.engine.steps import caught_warnings

    meta: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one reaching the terminal would raise here
        with caught_warnings(meta, most=2):
            for i in (1, 1, 2, 3):
                warnings.warn(f"Opacus says {i}\nmore", UserWarning, stacklevel=1)
    assert meta["warnings"] == ["UserWarning: Opacus says 1", "UserWarning: Opacus says 2", "(+1 more)"]


def test_a_table_written_to_a_file_is_not_squeezed_to_80_columns(tmp_path, invoke):
    from reinv_bench.results.store import Store

    store = Store(tmp_path / "results.db")
    for d in ("none", "re[scale=0.1-0.8,p=0.5,value=random,ratio=0.3-3.3]"):
        store.put(row(d, metrics={"natural_acc": 0.9, "attack_acc": 0.5, "knn_dist": 10.0, "fid": 30.0}))
    result = invoke("leaderboard", "--workdir", tmp_path, "--format", "table")
    assert result.exit_code == 0, result.output
    assert "re[scale=0.1-0.8,p=0.5,value=random,ratio=0.3-3.3]" in result.output  # not wrapped
    assert max(map(len, result.output.splitlines())) > 80


def test_data_check_writes_the_label_order_only_where_asked(tmp_path, registry, invoke, monkeypatch):
    monkeypatch.delenv("REINV_BENCH_CELEBA_GANSET", raising=False)
    from reinv_bench.testing import make_celeba

    make_celeba(tmp_path / "data")
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    result = invoke("data", "check", "celeba64", "--data-root", tmp_path / "data", registry=registry)
    assert result.exit_code == 0, result.output
    assert list(here.iterdir()) == [] and "write the label order with --labels FILE" in result.output


def test_the_versions_note_goes_once_every_cell_is_rerun():
    import copy

    from test_leaderboard_groups import CONFIG

    def at(seed, version, created):
        cfg = copy.deepcopy(CONFIG)
        cfg["metrics"] = {"attack_acc": version}
        return row("none", seed=seed, config=cfg, created=created, metrics={"attack_acc": 0.5})

    old = [at(0, 1, "2025-01-01"), at(1, 1, "2025-01-01")]
    (mixed,) = aggregate([*old, at(0, 2, "2025-02-01")], columns=COLS)
    assert mixed.mixed_versions == {"attack_acc": [1, 2]}
    (rerun,) = aggregate([*old, at(0, 2, "2025-02-01"), at(1, 2, "2025-02-01")], columns=COLS)
    assert rerun.mixed_versions == {} and "several versions" not in render([rerun], "md", COLS)
