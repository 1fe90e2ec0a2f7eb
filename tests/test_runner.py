"""The driver and the worker: the walk's progress count, cells locked as steps are, the typed
evaluation result, the worker registered by the driver (never by its constructor), one-line
errors for bad --executor and --class-chunk values."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reinv_bench.engine import steps as steps_mod
from reinv_bench.engine.plan import Request, expand
from reinv_bench.engine.progress import LogReporter
from reinv_bench.engine.runner import Runner, preview
from reinv_bench.results.outcomes import Outcomes
from reinv_bench.results.store import Store

CPU = torch.device("cpu")
TESTS = Path(__file__).parent


def _plan(registry, defenses=("none", "re")):
    return expand(
        Request(
            ["meanimg"],
            list(defenses),
            archs=["tiny"],
            eval_arch="tiny",
            budget="smoke",
            metrics=["attack_acc", "natural_acc"],
        ),
        registry,
    )


def _counts(text: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in re.findall(r"^\[(\d+)/(\d+)\]", text, re.M)]


def test_progress_counts_rebuilt_steps_and_never_passes_its_total(registry, workdir):
    """A step whose artifact exists but is rebuilt (a dependency has other bytes now) was left
    out of the total, so the counter read [3/2]; now the total grows when the walk finds one."""
    plan = _plan(registry)
    runner = Runner(registry, workdir, CPU)
    runner.run(plan, Store(workdir / "results.db"))
    target = next(
        s for s in plan.steps.values() if s.kind == "target" and s.spec["defense"][0]["name"] == "re"
    )
    art, rec = runner.artifacts, runner.artifacts.record(target.key)
    state = {
        k: v + 1e-3 if v.is_floating_point() else v for k, v in art.load(target.key)["state_dict"].items()
    }
    art.save(target.key, {"state_dict": state}, deps=rec["deps"], meta=rec["meta"])  # other bytes
    out = io.StringIO()
    summary = Runner(registry, workdir, CPU, reporter=LogReporter(out)).run(plan, Store(workdir / "other.db"))
    counts = _counts(out.getvalue())
    assert [s.kind for s in summary.ran] == ["invert"]  # the inversion of the changed target
    assert all(n <= total for n, total in counts), out.getvalue()
    assert counts[-1] == (3, 3)  # the inversion and two cells
    assert [r.status for r in summary.rows] == ["ok", "ok"]


def test_evaluate_returns_a_typed_result_with_outcomes(registry, workdir):
    plan = _plan(registry, defenses=("none",))
    runner = Runner(registry, workdir, CPU)
    runner.run(plan, Store(workdir / "results.db"))
    ev = runner.worker.evaluate(plan.cells[0])
    assert isinstance(ev, steps_mod.Evaluation) and isinstance(ev.outcomes, Outcomes)
    assert set(ev.metrics) >= {"attack_acc", "natural_acc"} and all(not k.startswith("_") for k in ev.metrics)
    assert len(ev.outcomes) > 0 and len(ev.outcomes.target_conf) == len(ev.outcomes)
    assert "attack_acc" in ev.outcomes.per_reconstruction
    row = Store(workdir / "results.db").get(plan.cells[0].cell_id)
    assert row["outcomes"] == ev.outcomes.to_json() and row["metrics"] == ev.metrics


def test_the_api_has_no_reserved_outcomes_key():
    import reinv_bench.api as api

    assert not hasattr(api, "OUTCOMES")


def test_a_worker_does_not_register_itself(registry, workdir):
    env = steps_mod.Env(str(workdir), ("an-env-no-other-test-uses",))
    steps_mod.Worker(env, registry)
    assert env not in steps_mod._WORKERS
    w = steps_mod.attach(steps_mod.Worker(env, registry))
    assert steps_mod.worker(env) is w
    del steps_mod._WORKERS[env]


def test_preview_is_a_function_of_plan_store_and_cache(registry, workdir):
    plan = _plan(registry, defenses=("none",))
    runner = Runner(registry, workdir, CPU)
    before = preview(plan, Store(workdir / "results.db"), runner.artifacts)
    assert before["cells"] == 1 and before["kinds"]["target"] == {
        "run": 1,
        "cached": 0,
        "seconds": None,
        "source": "",
    }
    runner.run(plan, Store(workdir / "results.db"))
    after = preview(plan, Store(workdir / "results.db"), runner.artifacts)
    assert after["cells"] == 0 and after["stored"] == 1


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_two_drivers_evaluate_each_cell_once(tmp_path):
    """The second driver waits on the cell's lock and reuses the row the first one stored
    (before, both evaluated every cell: no duplicate rows, but duplicate work)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    args = [
        sys.executable,
        "-c",
        "from reinv_bench.cli import main; main()",
        "-p",
        "conftest",
        "run",
        "--budget",
        "smoke",
        "-a",
        "meanimg",
        "--arch",
        "tiny",
        "--eval-arch",
        "tiny",
        "-d",
        "re",
        "--metric",
        "attack_acc",
        "--quiet",
        "--workdir",
        str(tmp_path),
    ]
    procs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    evaluated = [line for _, err in outs for line in err.splitlines() if re.search(r"\] done\s+cell ", line)]
    assert len(evaluated) == 2, "\n".join(err for _, err in outs)  # none and re: each by one driver
    rows = Store(tmp_path / "results.db").rows()
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)


def test_bad_class_chunk_and_executor_are_one_line_errors(invoke, tmp_path):
    for args, message in (
        (["--class-chunk", "²"], "--class-chunk '²'"),
        (["--executor", "inline+local"], "--executor 'inline+local': give one executor"),
    ):
        result = invoke("run", "-a", "gmi", "-d", "none", "--budget", "smoke", "--workdir", tmp_path, *args)
        assert result.exit_code != 0 and message in result.output, result.output
        assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
        assert [line for line in result.output.splitlines() if message in line] == [
            f"Error: {line}" for line in [_error(result.output)]
        ]


def _error(output: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith("Error: ")]
    return line.removeprefix("Error: ")


def test_executor_help_lists_every_registered_executor(invoke, registry):
    out = invoke("run", "--help", registry=registry, ok=True).output
    for name in registry.names("executor"):
        assert name in out


# ---- the planner's typed records -----------------------------------------------------------------


def test_cells_carry_labels_that_rows_reuse(registry):
    from reinv_bench.results.store import COLUMNS, LABELS, Labels, Row

    plan = expand(
        Request(
            ["meanimg"], ["re"], archs=["tiny"], eval_arch="tiny", budget="smoke", metrics=["attack_acc"]
        ),
        registry,
        data_digest=lambda s: "D",
    )
    cell = plan.cells[-1]
    assert isinstance(cell.labels, Labels) and COLUMNS[1 : 1 + len(LABELS)] == LABELS
    assert dict(cell.labels) == {
        "scenario": "mnist",
        "protocol": "digits32, eval tiny",
        "arch": "tiny",
        "defense": "re",
        "attack": "meanimg",
        "threat_model": "white-box",
        "seed": 0,
        "budget": "smoke",
    }
    row = Row(cell_id=cell.cell_id, **cell.labels)
    assert row.labels == cell.labels


def test_typed_initialisation_keeps_the_keys_of_its_records(registry, tmp_path):
    """The step keys hash the same dicts as before the typed initialisation: the target's key is
    the digest of this layout, written out by hand (init None for random weights, {"weights",
    "sha256"} for a file)."""
    import hashlib
    import json

    from reinv_bench.engine.plan import ARTIFACT_VERSION
    from reinv_bench.registry.components import FileInit, RandomInit, resolve_arch

    weights = tmp_path / "tiny.pt"
    torch.save(registry.get("architecture", "tiny").build(10, (1, 32, 32)).state_dict(), weights)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert resolve_arch(registry, "tiny")[2] == RandomInit()
    assert resolve_arch(registry, f"tiny[weights={weights}]")[2] == FileInit(str(weights.resolve()), sha)
    for arch, init in (
        ("tiny", None),
        (f"tiny[weights={weights}]", {"weights": str(weights.resolve()), "sha256": sha}),
    ):
        plan = expand(
            Request(
                ["meanimg"], ["none"], archs=[arch], eval_arch="tiny", budget="smoke", metrics=["attack_acc"]
            ),
            registry,
            data_digest=lambda s: "D",
        )
        target = next(s for s in plan.steps.values() if s.kind == "target")
        scenario = registry.get("scenario", "mnist")
        spec = {
            "kind": "target",
            "v": ARTIFACT_VERSION,
            "scenario": "mnist",
            "scenario_version": scenario.version,
            "data_root": None,
            "data": "D",
            "arch": "tiny",
            "arch_version": 1,
            "defense": [{"name": "none", "version": 1, "config": {}}],
            "recipe": scenario.recipe("target", "smoke", "tiny").spec(),  # select="last": not in the key
            "seed": 0,
            "init": init,
        }
        text = json.dumps(spec, sort_keys=True, default=str)
        assert target.key == hashlib.sha256(text.encode()).hexdigest()[:20]
        assert plan.cells[0].config["arch"] == {"name": "tiny", "init": init}
