"""Training recipes set like hyperparameters: ``run --recipe "target:epochs=100,lr=0.01"``.

A scenario gives the recipe of each role (``target``, ``eval``, ``pretrain``) per budget and
architecture (``Scenario.recipe``); overrides replace fields of it (``dataclasses.replace``). The
fields and their types are ``TrainRecipe``'s; values are checked here (unknown fields get a
did-you-mean, NaN/inf and out-of-range values are refused) before anything trains. The recipes
used enter the step keys and are stored with every row.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from reinv_bench.contract.config import ConfigError, Param
from reinv_bench.contract.data import Scenario, TrainRecipe
from reinv_bench.engine.train import AUGMENTATIONS, SELECTIONS, make_optimizer
from reinv_bench.registry import spec as specs

ROLES = ("target", "eval", "pretrain")

# bounds per field (inclusive); a field without an entry is checked by its type only
_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "epochs": (1, None),
    "batch_size": (1, None),
    "lr": (0.0, None),
    "momentum": (0.0, 1.0),
    "weight_decay": (0.0, None),
    "milestones": (0.0, 1.0),
    "gamma": (0.0, None),
}


def _fields() -> dict[str, Param]:
    """A ``Param`` per ``TrainRecipe`` field, typed by the field's annotation."""
    hints = typing.get_type_hints(TrainRecipe)
    params = {}
    for f in dataclasses.fields(TrainRecipe):
        hint = hints[f.name]
        sample: Any = {int: 1, float: 1.0, str: ""}.get(
            hint, (0.0,) if typing.get_origin(hint) is tuple else ""
        )
        low, high = _BOUNDS.get(f.name, (None, None))
        params[f.name] = Param(sample, low=low, high=high)
    return params


def _check_choice(name: str, value: Any) -> None:
    """optimizer, augment, select: the values the training loop accepts (asked of it, not listed)."""
    if name == "augment" and value not in AUGMENTATIONS:
        raise ConfigError(f"augment={value!r}: must be one of {', '.join(repr(a) for a in AUGMENTATIONS)}")
    if name == "select" and value not in SELECTIONS:
        raise ConfigError(f"select={value!r}: must be one of {', '.join(repr(a) for a in SELECTIONS)}")
    if name == "optimizer":
        try:
            make_optimizer([torch.nn.Parameter(torch.zeros(1))], TrainRecipe(epochs=1, optimizer=value))
        except ValueError as exc:
            raise ConfigError(f"optimizer={value!r}: {exc}") from None


def validate(overrides: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Role -> {field: parsed value}: values may be text (the command line) or typed (Python)."""
    fields = _fields()
    out: dict[str, dict[str, Any]] = {}
    for role, values in (overrides or {}).items():
        if role not in ROLES:
            close = difflib.get_close_matches(role, ROLES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"recipe role {role!r} is unknown{hint} Roles: {', '.join(ROLES)}")
        parsed = {}
        for key, raw in values.items():
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"recipe {role}: unknown field {key!r}.{hint} Fields: {', '.join(fields)}")
            if isinstance(fields[key].default, tuple) and raw in ("", (), []):
                value: Any = ()
            else:
                try:
                    value = fields[key].parse(key, raw)
                except ConfigError as exc:
                    raise ConfigError(f"recipe {role}: {exc}") from None
            if key in ("optimizer", "augment", "select"):
                try:
                    _check_choice(key, value)
                except ConfigError as exc:
                    raise ConfigError(f"recipe {role}: {exc}") from None
            parsed[key] = value
        out[role] = parsed
    return out


def parse(texts: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``ROLE:key=value,...`` options (repeatable; one role may appear in several) -> validated
    overrides. A field given twice for one role is an error."""
    raw: dict[str, dict[str, str]] = {}
    for text in texts:
        role, sep, body = text.partition(":")
        if not sep or not role.strip():
            raise ConfigError(
                f"--recipe {text!r}: write ROLE:key=value,... with ROLE one of {', '.join(ROLES)}, "
                'e.g. "target:epochs=100,lr=0.01"'
            )
        try:
            (comp,) = specs.parse(f"recipe[{body}]")
        except specs.SpecError:
            raise ConfigError(
                f"--recipe {text!r}: cannot parse; write ROLE:key=value,... (no key twice)"
            ) from None
        mine = raw.setdefault(role.strip(), {})
        for k, v in comp.params.items():
            if k in mine:
                raise ConfigError(f"--recipe: {role.strip()}:{k} is given twice; keep one")
            mine[k] = v
    return validate(raw)


def apply(recipe: TrainRecipe, overrides: Mapping[str, Mapping[str, Any]] | None, role: str) -> TrainRecipe:
    """``recipe`` with the overrides of ``role`` (validated) in place."""
    return dataclasses.replace(recipe, **validate(overrides).get(role, {}))


def with_recipes(scenario: Scenario, overrides: Mapping[str, Mapping[str, Any]] | None) -> Scenario:
    """The scenario with its recipes overridden per role (a copy; the registered object is
    unchanged). No overrides: the scenario itself."""
    overrides = validate(overrides)
    if not any(overrides.values()):
        return scenario
    base = scenario.recipe

    def recipe(role: str, budget: str, arch: str = "") -> TrainRecipe:
        return apply(base(role, budget, arch), overrides, role)

    changed = copy.copy(scenario)
    changed.recipe = recipe  # type: ignore[method-assign]
    return changed
