"""Training schedules several defenses' official code shares.

The PPA-derived pipelines of 2024-26 (the RoLSS fork, AT-AT's `pretrained.yaml`, LoFt's `lrc.py`)
train every target with Adam 1e-3 for 100 epochs, the learning rate divided by 10 at epochs 75 and
90; only the batch size differs. Each defense cites its own source in its docstring.
"""

from __future__ import annotations

from dataclasses import replace

from reinv_bench.api import TrainRecipe


def adam_100_epochs(recipe: TrainRecipe, budget: str, batch_size: int) -> TrainRecipe:
    """The shared schedule at the paper budget; the scenario's recipe otherwise."""
    if budget != "paper":
        return recipe
    return replace(
        recipe,
        epochs=100,
        batch_size=batch_size,
        optimizer="adam",
        lr=1e-3,
        weight_decay=0.0,
        milestones=(0.75, 0.9),
        gamma=0.1,
    )


def selected(recipe: TrainRecipe, select: str) -> TrainRecipe:
    """``recipe`` keeping the weights ``select`` names (a defense's ``select`` parameter: the choice
    of its official training code, ``reinv_bench.engine.train.train_classifier``); "last" keeps the
    recipe's."""
    return recipe if select == "last" else replace(recipe, select=select)
