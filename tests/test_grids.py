"""Grids as files, sweeps, --dry-run."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import cli_invoke  # the one CLI-invoke helper (also the `invoke` fixture)

from reinv_bench.api import ConfigError
from reinv_bench.engine.grid import load
from reinv_bench.engine.plan import Request, expand
from reinv_bench.registry import spec as specs
from reinv_bench.registry.components import resolve_attack, resolve_defense

GRIDS = Path(__file__).parent.parent / "benchmarks" / "grids"
SMOKE = [
    "--budget",
    "smoke",
    "--arch",
    "tiny",
    "--eval-arch",
    "tiny",
    "--metric",
    "natural_acc",
    "--metric",
    "attack_acc",
    "--quiet",
]


def _invoke(registry, *args):
    return cli_invoke(*args, registry=registry)  # the in-process test plugin


def test_a_sweep_expands_to_one_defense_per_value_and_keeps_the_value_in_the_label(registry):
    assert [t for t, _ in specs.sweep("mid[beta=0.001|0.01]")] == ["mid[beta=0.001]", "mid[beta=0.01]"]
    assert len(specs.sweep("re[p=0.5|1,scale=0.1-0.4|0.1-0.8]+bido")) == 4  # the product
    plan = expand(
        Request(["meanimg"], ["mid[beta=0.001|0.01]"], budget="smoke", metrics=["attack_acc"]),
        registry,
        data_digest=lambda s: "d",
    )
    # 0.01 is MID's default, still shown: it is the swept value
    assert sorted(c.labels["defense"] for c in plan.cells) == ["mid[beta=0.001]", "mid[beta=0.01]", "none"]
    with pytest.raises(specs.SpecError, match="empty value"):
        specs.sweep("mid[beta=0.001||0.01]")


def test_shipped_grids_load_and_name_valid_specs(registry):
    names = {p.stem for p in GRIDS.glob("*.toml")}
    assert {"default", "defense-suite-mnist", "seed-paper-64px", "seed-paper-224px"} <= names
    for path in GRIDS.glob("*.toml"):
        grid = load(path)
        for text in grid.get("defenses", []):
            for d, keep in specs.sweep(text):
                resolve_defense(registry, d, grid.get("budget", "quick"), keep)
        for text in grid.get("attacks", []):
            resolve_attack(registry, text, grid.get("budget", "quick"))
        for scenario in grid.get("scenarios", []):
            registry.get("scenario", scenario)


def test_a_bad_grid_is_a_one_line_error(tmp_path):
    bad = tmp_path / "g.toml"
    bad.write_text('atacks = ["gmi"]\n')
    with pytest.raises(ConfigError, match="unknown key 'atacks'.*attacks"):
        load(bad)
    bad.write_text("seeds = 'three'\n")
    with pytest.raises(ConfigError, match="seeds must be int"):
        load(bad)
    bad.write_text("seeds = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(bad)


def test_grid_file_with_command_line_overrides_and_a_dry_run(registry, tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text('attacks = ["meanimg", "ppb"]\ndefenses = ["re[p=0.5|1]"]\nseeds = 2\nbudget = "quick"\n')
    wd = str(tmp_path / "wd")
    dry = _invoke(registry, "run", "--grid", str(grid), *SMOKE, "--workdir", wd, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "ppb, not installed here" in dry.output
    assert "6 of 6 cell(s) to evaluate" in dry.output  # 2 seeds x (none, re[p=0.5], re[p=1])
    assert "estimated time: unknown" in dry.output
    done = _invoke(registry, "run", "--grid", str(grid), *SMOKE, "--workdir", wd, "--seeds", "1")
    assert done.exit_code == 0, done.output
    assert "re[p=0.5]" in done.output and "re[p=1.0]" in done.output  # --seeds overrides the file's 2
    again = _invoke(registry, "run", "--grid", str(grid), *SMOKE, "--workdir", wd, "--dry-run")
    assert "3 of 6 cell(s) to evaluate (3 already stored)" in again.output
    assert "estimated time: unknown" not in again.output and "min" in again.output


def test_python_entry_point_runs_a_grid_without_click(registry, tmp_path):
    import reinv_bench

    res = reinv_bench.run(
        attacks=["meanimg"],
        defenses=["re"],
        archs=["tiny"],
        eval_arch="tiny",
        budget="smoke",
        metrics=["attack_acc"],
        registry=registry,
        workdir=tmp_path,
        device="cpu",
    )
    assert sorted(r["defense"] for r in res.rows) == ["none", "re"] and not res.summary.failed
    again = reinv_bench.run(
        attacks=["meanimg"],
        defenses=["re"],
        archs=["tiny"],
        eval_arch="tiny",
        budget="smoke",
        metrics=["attack_acc"],
        registry=registry,
        workdir=tmp_path,
        device="cpu",
        dry_run=True,
    )
    assert again.preview["cells"] == 0 and again.preview["stored"] == 2


def test_a_scenario_sets_its_protocols_attack_values_unless_the_user_does(registry):
    plan = expand(
        Request(
            ["gmi", "gmi[lr=0.05]"],
            ["none"],
            scenarios=["mnist-gmi", "mnist"],
            budget="smoke",
            metrics=["attack_acc"],
        ),
        registry,
        data_digest=lambda s: "d",
    )
    lrs = {(c.labels["scenario"], c.labels["attack"]): c.config["attack"]["config"]["lr"] for c in plan.cells}
    assert lrs == {
        ("mnist-gmi", "gmi[lr=0.01]"): 0.01,
        ("mnist-gmi", "gmi[lr=0.05]"): 0.05,  # GMI's MNIST/attack.py
        ("mnist", "gmi"): 0.02,
        ("mnist", "gmi[lr=0.05]"): 0.05,
    }


def test_a_grid_names_judges_and_class_chunks(registry, tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text('attacks = ["meanimg"]\ndefenses = ["re"]\njudges = ["verification"]\nclass_chunk = 5\n')
    assert load(grid)["class_chunk"] == 5
    wd = str(tmp_path / "wd")
    plain = _invoke(registry, "run", *SMOKE, "-a", "meanimg", "-d", "re", "--workdir", wd, "--dry-run")
    dry = _invoke(registry, "run", "--grid", str(grid), *SMOKE, "--workdir", wd, "--dry-run")
    assert dry.exit_code == 0, dry.output
    rows = {line.split()[0]: line.split()[1] for line in dry.output.splitlines() if line[:1].isalpha()}
    assert "pretrain" not in plain.output and "merge" not in plain.output
    assert rows["pretrain"] == "1"  # the verification judge's network, trained on the public digits
    assert rows["invert"] == "4" and rows["merge"] == "2"  # 2 cells x 10 classes in chunks of 5
    bad = tmp_path / "b.toml"
    bad.write_text("class_chunk = true\n")
    with pytest.raises(ConfigError, match="class_chunk must be int or str"):
        load(bad)
