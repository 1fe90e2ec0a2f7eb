"""Weights & Biases logger (``run --log wandb``; extra ``[wandb]``): each stored cell is a W&B run.

Offline by default (``WANDB_MODE`` overrides it: ``online`` to upload, or ``wandb sync`` the
offline runs later); project ``WANDB_PROJECT`` (default ``reinv-bench``), files under
``WANDB_DIR``. The run is named after the cell and grouped by scenario; its config is the cell's
resolved config with the labels and ``cell_id``; the row's metrics and timings (``time/...``) are
logged and in the summary; the stored row is a ``result`` artifact (``row.json``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from reinv_bench import hookimpl
from reinv_loggers import numbers, require, row_json, run_name, selected

if TYPE_CHECKING:
    from reinv_bench.api import Cell, Row

NAME = "wandb"


def ready() -> None:
    """Raise a one-line ``LoggerUnavailable`` if wandb is not installed (``run --log`` calls it)."""
    require("wandb", NAME)


@hookimpl
def on_result(cell: Cell, result: Row) -> None:
    if not selected(NAME):
        return
    wandb = require("wandb", NAME)
    config = {**cell.config, "labels": dict(cell.labels), "cell_id": cell.cell_id}
    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT") or "reinv-bench",
        name=run_name(cell),
        group=str(cell.labels.get("scenario")),
        config=config,
        mode=os.environ.get("WANDB_MODE") or "offline",
        settings=wandb.Settings(silent=True, console="off"),
    )
    ok = False
    try:
        metrics = numbers(result)
        if metrics:
            run.log(metrics)
            run.summary.update(metrics)
        run.summary["status"] = str(result.get("status"))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "row.json"
            path.write_text(row_json(result), encoding="utf-8")
            artifact = wandb.Artifact(f"row-{cell.cell_id[:16]}", type="result")
            artifact.add_file(str(path))  # copied to wandb's staging area: the folder may go
            run.log_artifact(artifact)
        ok = True
    finally:
        run.finish(exit_code=0 if ok else 1)
