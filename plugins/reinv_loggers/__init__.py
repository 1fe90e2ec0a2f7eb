"""Experiment loggers: each stored cell becomes a run of an experiment tracker (MLflow, W&B).

Plugins on the ``on_result`` hook, installed with reinv-bench but silent until selected:
``reinv-bench run --log mlflow`` (repeatable) or ``REINV_BENCH_LOG=mlflow,wandb``. The tracker's
package is an optional extra (``pip install 'reinv-bench[mlflow]'``, ``[wandb]``), imported only
when its logger is selected; ``run --log`` checks it before any work (``ready()``).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types import ModuleType

    from reinv_bench.api import Cell

ENV = "REINV_BENCH_LOG"


class LoggerUnavailable(RuntimeError):
    """A selected logger's package is not installed; the message names the extra to install."""


def selection() -> set[str]:
    """The loggers selected: ``REINV_BENCH_LOG``, a comma (or space) list; ``run --log`` sets it."""
    return {n for n in re.split(r"[,\s]+", os.environ.get(ENV, "")) if n}


def selected(name: str) -> bool:
    return name in selection()


def require(module: str, extra: str) -> ModuleType:
    """Import the tracker's package, or a one-line error naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise LoggerUnavailable(
            f"the {extra} logger needs the {module!r} package: pip install 'reinv-bench[{extra}]'"
        ) from None


def run_name(cell: Cell) -> str:
    lab = cell.labels
    return (
        f"{lab.get('attack')} vs {lab.get('defense')} on {lab.get('scenario')}/{lab.get('arch')} "
        f"seed {lab.get('seed')}"
    )


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"a.b.c": value}; lists and other leaves as they are."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def numbers(row: dict[str, Any]) -> dict[str, float]:
    """The row's finite numeric metrics, and its timings as ``time/KEY``."""
    out: dict[str, float] = {}
    for prefix, values in (("", row.get("metrics")), ("time/", row.get("timings"))):
        for k, v in (values or {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                out[f"{prefix}{k}"] = float(v)
    return out


def row_json(row: dict[str, Any]) -> str:
    """The stored row as JSON (non-JSON values as strings)."""
    return json.dumps(dict(row), indent=1, sort_keys=True, default=str)
