"""The facade plugins import, and nothing else: re-exports only (as ``pytest`` re-exports
``_pytest``). No module of reinv_bench imports it; the definitions live in ``reinv_bench.contract``
(what a plugin implements or receives) and, for the harness's records, in the layers above it.

Image convention, for every scenario, model and attack: tensors are (N, C, H, W) float32 in the
*normalised* space ``(pixel - 0.5) / 0.5``, i.e. in [-1, 1]. GAN generators end in tanh and so
produce this space directly, and Random Erasing fills in it as the seed paper's code does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reinv_bench import hookimpl
from reinv_bench.contract.attack import (
    THREAT_MODELS,
    VALUE_RANGE,
    Attack,
    AttackContext,
    BlackBox,
    EnsembleAttack,
    IdentityLoss,
    Inversion,
    LabelOnly,
    PriorSpec,
    Progress,
    Reconstructions,
    WrapperAttack,
    no_progress,
)
from reinv_bench.contract.checkpoint import NO_CHECKPOINT, Checkpoint
from reinv_bench.contract.config import BUDGETS, ConfigError, Configurable, HParams, Param, did_you_mean
from reinv_bench.contract.data import Problem, Scenario, ScenarioData, Split, TrainRecipe
from reinv_bench.contract.datachecks import decode_problem, undecodable
from reinv_bench.contract.defense import Adaptation, Defense, compose_adaptations, residual_stages
from reinv_bench.contract.executor import Executor
from reinv_bench.contract.images import DataError, ImageFiles, to_pil
from reinv_bench.contract.judge import Judge, Verdicts
from reinv_bench.contract.metric import Column, EvalContext, Metric, NotComputed, PerItem
from reinv_bench.contract.models import Architecture, Classifier, Output
from reinv_bench.contract.precision import autocast, full_precision
from reinv_bench.contract.published import Reported
from reinv_bench.contract.weights import WeightsFile, WeightsUnavailable, load_state, locate, sha256_of

if TYPE_CHECKING:  # what _LAZY resolves, for type checkers and editors
    from reinv_bench.cli.options import results_db, workdir_option
    from reinv_bench.engine.artifacts import Artifacts
    from reinv_bench.engine.evaluation import reconstructions
    from reinv_bench.engine.loaders import private_loader
    from reinv_bench.engine.plan import Cell
    from reinv_bench.engine.steps import Env
    from reinv_bench.engine.train import features, predict
    from reinv_bench.results.aggregate import filter_rows
    from reinv_bench.results.judging import judged, store_verdicts, verdict_key
    from reinv_bench.results.store import Row, Store

# the harness's records, from the layers above the contract: resolved on first use (PEP 562), so
# that a plugin's import loads only the contract
_LAZY = {
    "predict": "reinv_bench.engine.train",  # predict(model, x, device): logits in batches, no grad
    "features": "reinv_bench.engine.train",  # features(model, x, device): penultimate features in batches
    "Cell": "reinv_bench.engine.plan",  # a cell of a grid (what on_result observers receive)
    "Row": "reinv_bench.results.store",  # a stored result row
    "Env": "reinv_bench.engine.steps",  # what a worker needs to rebuild the driver's world (executors)
    "Store": "reinv_bench.results.store",  # Store(workdir / "results.db"): rows(), get(cell_id), put(row)
    "Artifacts": "reinv_bench.engine.artifacts",  # Artifacts(workdir): the artifact cache of a workdir
    "reconstructions": "reinv_bench.engine.evaluation",  # reconstructions(artifacts, row.artifacts["invert"])
    # filter_rows(rows, attack=(...), ...): the leaderboard's filters
    "filter_rows": "reinv_bench.results.aggregate",
    # private_loader(registry)(row): the private training split
    "private_loader": "reinv_bench.engine.loaders",
    "store_verdicts": "reinv_bench.results.judging",  # answers from outside a run into a stored row
    "judged": "reinv_bench.results.judging",  # judged(row, ...): the row with them, unstored (Store.put_many)
    "verdict_key": "reinv_bench.results.judging",  # the outcomes key of a judge's answers
    "workdir_option": "reinv_bench.cli.options",  # the --workdir option of every command over stored results
    "results_db": "reinv_bench.cli.options",  # the workdir's results.db, or the "no results yet" usage error
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    # configuration and errors
    "BUDGETS",
    "ConfigError",
    "Configurable",
    "HParams",
    "Param",
    "did_you_mean",
    "DataError",
    # plugin marker
    "hookimpl",
    # data and models
    "Scenario",
    "ScenarioData",
    "Split",
    "TrainRecipe",
    "Problem",
    "undecodable",
    "decode_problem",
    "ImageFiles",
    "to_pil",
    "Architecture",
    "Classifier",
    "Output",
    "THREAT_MODELS",
    "VALUE_RANGE",
    "Progress",
    "no_progress",
    "Checkpoint",
    "NO_CHECKPOINT",
    # defenses and attacks
    "Defense",
    "Adaptation",
    "compose_adaptations",
    "residual_stages",
    "AttackContext",
    "Inversion",
    "Reconstructions",
    "PriorSpec",
    "BlackBox",
    "LabelOnly",
    "Attack",
    "IdentityLoss",
    "WrapperAttack",
    "EnsembleAttack",
    # metrics
    "NotComputed",
    "PerItem",
    "Column",
    "EvalContext",
    "Metric",
    "Reported",
    # judges
    "Verdicts",
    "Judge",
    # executors
    "Executor",
    # precision, pretrained weights, feature extraction
    "autocast",
    "full_precision",
    "WeightsFile",
    "WeightsUnavailable",
    "load_state",
    "locate",
    "sha256_of",
    "predict",
    "features",
    # the harness's records
    "Cell",
    "Row",
    "Env",
    "Store",
    "Artifacts",
    "reconstructions",
    "filter_rows",
    "private_loader",
    "store_verdicts",
    "judged",
    "verdict_key",
    "workdir_option",
    "results_db",
]
