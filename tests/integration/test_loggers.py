"""Experiment loggers and the observer hooks: on_result (every stored cell, a raising observer
contained), register_commands, and the mlflow / wandb logger plugins run offline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import cli_invoke  # the one CLI-invoke helper (also the `invoke` fixture)

from reinv_bench import hookimpl
from reinv_bench.engine.plan import Cell
from reinv_bench.registry.lookup import load
from reinv_bench.registry.plugins import call_each
from reinv_bench.results.store import Store

SMOKE = [
    "run",
    "-a",
    "meanimg",
    "-d",
    "re",
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
]  # two cells: re and the none baseline


class Recorder:
    def __init__(self):
        self.calls = []

    @hookimpl
    def on_result(self, cell, result):
        self.calls.append((cell, result))


class Raising:
    @hookimpl
    def on_result(self, cell, result):
        raise RuntimeError("observer broke")


@pytest.fixture(autouse=True)
def _no_selection(monkeypatch):
    # run --log sets it: setenv (not delenv, which records nothing when it is absent) so that it is
    # removed again after each test and no later test finds a logger selected
    monkeypatch.setenv("REINV_BENCH_LOG", "")


def _invoke(*plugins, args=()):
    return cli_invoke(*SMOKE, *args, extra=(sys.modules["conftest"], *plugins))  # the in-process test plugins


def _stored(workdir: Path) -> list[dict]:
    return list(Store(workdir / "results.db").rows())


def test_on_result_gets_each_stored_cell_and_a_raising_observer_does_not_stop_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    rec = Recorder()
    res = _invoke(Raising(), rec, args=["--workdir", str(tmp_path / "w")])
    assert res.exit_code == 0, res.output
    assert res.output.count("failed in on_result: RuntimeError('observer broke'); skipped it") == 2
    rows = _stored(tmp_path / "w")
    assert len(rows) == 2 and len(rec.calls) == 2
    assert {c.cell_id for c, _ in rec.calls} == {r["cell_id"] for r in rows}
    for cell, row in rec.calls:
        assert isinstance(cell, Cell) and row["cell_id"] == cell.cell_id and row["status"] == "ok"
        assert {"natural_acc", "attack_acc"} <= set(row["metrics"]) and row["artifacts"][
            "invert"
        ] == cell.invert_key
    # the logger plugins are installed but not selected: they logged nothing
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "wandb").exists()


def test_register_commands_adds_commands_and_a_raising_plugin_is_skipped():
    class Hello:
        @hookimpl
        def register_commands(self, cli):
            @cli.command()
            def hello():
                click.echo("hello from a plugin")

    class Broken:
        @hookimpl
        def register_commands(self, cli):
            raise ValueError("no commands today")

    pm = load(extra=(Broken(), Hello())).pm
    group, warnings = click.Group(), []
    call_each(pm, "register_commands", warnings.append, cli=group)
    assert "hello" in group.commands and len(warnings) == 1 and "no commands today" in warnings[0]
    assert CliRunner().invoke(group, ["hello"]).output == "hello from a plugin\n"


def test_log_refuses_an_unknown_logger_and_names_the_missing_extra(tmp_path, monkeypatch):
    res = _invoke(args=["--workdir", str(tmp_path), "--log", "tensorboard"])
    assert res.exit_code == 2 and "no logger plugin 'tensorboard'" in res.output and "mlflow" in res.output
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    res = _invoke(args=["--workdir", str(tmp_path), "--log", "mlflow"])
    assert res.exit_code == 2 and "pip install 'reinv-bench[mlflow]'" in res.output
    assert not (tmp_path / "results.db").exists()  # refused before any work


def test_mlflow_logger_records_one_run_per_stored_cell(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the [mlflow] extra (mlflow-skinny) is not installed")
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it to use a local folder
    res = _invoke(args=["--workdir", str(tmp_path / "w"), "--log", "mlflow"])
    assert res.exit_code == 0, res.output
    assert "failed in on_result" not in res.output
    rows = {r["cell_id"]: r for r in _stored(tmp_path / "w")}
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("reinv-bench").experiment_id])
    assert sorted(r.data.tags["cell_id"] for r in runs) == sorted(rows)
    for run in runs:
        row = rows[run.data.tags["cell_id"]]
        assert run.data.tags["defense"] == row["defense"] and run.data.tags["status"] == "ok"
        for m in ("natural_acc", "attack_acc"):
            assert run.data.metrics[m] == pytest.approx(row["metrics"][m])
        assert "time/cell_s" in run.data.metrics
        assert run.data.params["attack.config.steps"] == str(row["config"]["attack"]["config"]["steps"])
        local = client.download_artifacts(run.info.run_id, "row.json", str(tmp_path / run.info.run_id))
        assert json.loads(Path(local).read_text())["artifacts"]["invert"] == row["artifacts"]["invert"]


def test_wandb_logger_offline_records_one_run_per_stored_cell(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the [wandb] extra is not installed")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is the default
    monkeypatch.setenv("REINV_BENCH_LOG", "wandb")  # selected by the environment instead of --log
    res = _invoke(args=["--workdir", str(tmp_path / "w")])
    assert res.exit_code == 0, res.output
    assert "failed in on_result" not in res.output
    rows = _stored(tmp_path / "w")
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == len(rows) == 2
    # the offline run files hold the records wandb sync uploads: the config and metric values
    logs = [next(r.glob("run-*.wandb")).read_bytes() for r in runs]
    for row in rows:
        (log,) = [b for b in logs if row["cell_id"].encode() in b]
        for m in ("natural_acc", "attack_acc"):
            assert m.encode() in log and json.dumps(row["metrics"][m]).encode() in log
