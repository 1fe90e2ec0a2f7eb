"""The CLI end to end through click's CliRunner on the smoke budget, then every leaderboard format."""

import csv
import io
import json
import re

import pytest
from conftest import cli_invoke  # the one CLI-invoke helper (also the `invoke` fixture)


@pytest.fixture(scope="module")
def smoke_workdir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("cli")
    args = [
        "run",
        "-a",
        "gmi",
        "-d",
        "re",
        "--budget",
        "smoke",
        "--seeds",
        "2",
        "--quiet",
        "--workdir",
        str(wd),
    ]
    result = cli_invoke(*args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return wd, result


def _lb(wd, *args):
    result = cli_invoke("leaderboard", "--workdir", str(wd), *args)
    assert result.exit_code == 0, result.output
    return result.output


def test_run_trains_attacks_stores_and_prints(smoke_workdir):
    wd, result = smoke_workdir
    assert "| none" in result.output and "| re" in result.output
    assert (wd / "results.db").is_file()
    # the count at the start includes the cells; so does the closing line (issue 17 §2)
    start = int(re.search(r"(\d+) step\(s\) to run", result.output).group(1))
    end = re.search(r"ran (\d+) step\(s\) and evaluated (\d+) cell\(s\)", result.output)
    assert start == int(end.group(1)) + int(end.group(2)) and int(end.group(2)) == 4


def test_identical_second_run_does_no_work(smoke_workdir):
    wd, _ = smoke_workdir
    args = [
        "run",
        "-a",
        "gmi",
        "-d",
        "re",
        "--budget",
        "smoke",
        "--seeds",
        "2",
        "--quiet",
        "--workdir",
        str(wd),
    ]
    result = cli_invoke(*args)
    assert result.exit_code == 0
    assert "ran 0 step(s)" in result.output and "4 cell(s) already stored" in result.output


def test_leaderboard_json(smoke_workdir):
    entries = json.loads(_lb(smoke_workdir[0], "--format", "json"))
    by_def = {e["defense"]: e for e in entries}
    assert set(by_def) == {"none", "re"}
    assert by_def["none"]["n"] == 2 and by_def["none"]["seeds"] == [0, 1]
    assert by_def["none"]["d_attack_acc"] == 0.0
    re = by_def["re"]
    assert re["d_natural_acc"] == pytest.approx(re["natural_acc"] - by_def["none"]["natural_acc"])
    assert re["attack_acc5"] is not None  # mnist has 10 classes
    assert any(e["pareto"] for e in entries)


def test_leaderboard_csv_md_latex_parse_back(smoke_workdir):
    wd = smoke_workdir[0]
    rows = list(csv.DictReader(io.StringIO(_lb(wd, "--format", "csv"))))
    assert {r["defense"] for r in rows} == {"none", "re"}
    assert all(0 <= float(r["attack_acc"]) <= 1 for r in rows)
    md = _lb(wd, "--format", "md").strip().splitlines()
    header = [c.strip() for c in md[0].strip("|").split("|")]
    assert header[:5] == ["Scenario", "Arch", "Attack", "Threat", "Defense"]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in md[2:] if line.startswith("|")]
    assert md[-1] == "Protocol digits32: see `reinv-bench protocol mnist`"  # under the table
    assert {c[4] for c in cells} == {"none", "re"} and all(len(c) == len(header) for c in cells)
    latex = _lb(wd, "--format", "latex")
    assert latex.startswith("\\begin{tabular}") and latex.count("\\\\") >= 3


def test_leaderboard_filters_and_sort(smoke_workdir):
    wd = smoke_workdir[0]
    only = json.loads(_lb(wd, "--format", "json", "-d", "re"))
    assert [e["defense"] for e in only] == ["re"]
    result = cli_invoke("leaderboard", "--workdir", str(wd), "--sort", "bogus")
    assert result.exit_code != 0 and "cannot sort by 'bogus'" in result.output


def test_mnist_gmi_top5_is_null_with_reason(tmp_path):
    args = [
        "run",
        "-a",
        "gmi",
        "-d",
        "none",
        "--scenario",
        "mnist-gmi",
        "--budget",
        "smoke",
        "--quiet",
        "--workdir",
        str(tmp_path),
    ]
    result = cli_invoke(*args)
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(_lb(tmp_path, "--format", "json"))
    assert entry["attack_acc5"] is None and "5 classes" in entry["attack_acc5_note"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["-a", "gmj"], "did you mean 'gmi'"),
        (["-d", "re[scal=0.2-0.3]"], "Did you mean 'scale'"),
        (["-d", "re[p=7]"], "out of range"),
        (["--scenario", "mnist", "--data-root", "/nonexistent"], "expected MNIST in torchvision's layout"),
        (["-d", "re[p"], "cannot parse"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, args, message):
    result = cli_invoke("run", "--budget", "smoke", "--workdir", str(tmp_path), *args)
    assert result.exit_code != 0
    assert message in result.output


def test_leaderboard_without_results_says_what_to_do(tmp_path):
    result = cli_invoke("leaderboard", "--workdir", str(tmp_path))
    assert result.exit_code != 0 and "reinv-bench run" in result.output
