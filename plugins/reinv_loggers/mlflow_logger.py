"""MLflow logger (``run --log mlflow``; extra ``[mlflow]``): each stored cell is an MLflow run.

The run is named after the cell and tagged with its labels (scenario, arch, defense, attack,
seed, budget), its ``cell_id`` and status; params are the cell's resolved config flattened to
dotted keys; metrics are the row's metrics and its timings (``time/...``); the stored row is the
artifact ``row.json`` (its ``artifacts`` entry names the reconstructions in the workdir's cache:
``reinv-bench plot`` draws the grid). Tracking server and experiment come from MLflow's own
variables (``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``; experiment default
``reinv-bench``).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from reinv_bench import hookimpl
from reinv_loggers import flatten, numbers, require, row_json, run_name, selected

if TYPE_CHECKING:
    from reinv_bench.api import Cell, Row

NAME = "mlflow"
MAX_PARAM = 500  # the shortest value limit of MLflow servers in use
BATCH = 100  # params per log_batch call that every MLflow store accepts


def ready() -> None:
    """Raise a one-line ``LoggerUnavailable`` if mlflow is not installed (``run --log`` calls it)."""
    require("mlflow", NAME)


def _key(k: str) -> str:
    return re.sub(r"[^\w\-./ ]", "_", k)


def _value(v: Any) -> str:
    text = str(v)
    return text if len(text) <= MAX_PARAM else text[: MAX_PARAM - 3] + "..."


@hookimpl
def on_result(cell: Cell, result: Row) -> None:
    if not selected(NAME):
        return
    mlflow = require("mlflow", NAME)
    mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or "reinv-bench")
    tags = {
        **{k: str(v) for k, v in cell.labels.items()},
        "cell_id": cell.cell_id,
        "status": str(result.get("status")),
    }
    with mlflow.start_run(run_name=run_name(cell), tags=tags, nested=mlflow.active_run() is not None):
        params = [(_key(k), _value(v)) for k, v in flatten(cell.config).items()]
        for i in range(0, len(params), BATCH):
            mlflow.log_params(dict(params[i : i + BATCH]))
        if metrics := numbers(result):
            mlflow.log_metrics(metrics)
        mlflow.log_text(row_json(result), "row.json")
