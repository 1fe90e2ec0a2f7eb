"""Hyperparameters: declared ``Param``s with the paper's defaults, per-budget overrides, and
their resolution from command-line text (``Configurable``). Re-exported by ``reinv_bench.api``."""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

BUDGETS = ("smoke", "quick", "paper")
PRECISIONS = (
    "fp32",
    "bf16",
    "tf32",
)  # --precision: the one vocabulary (reinv_bench.contract.precision computes it)


def precision_of(config: dict[str, Any] | None) -> str:
    """The precision a stored row (its ``config``) was computed at (absent or empty: fp32, the rows
    of before ``--precision``)."""
    return (config or {}).get("precision") or "fp32"


def did_you_mean(name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} Known: {', '.join(known) or '(none)'}"


class ConfigError(ValueError):
    """A plugin parameter is unknown, malformed or out of range."""


def env_number(name: str, default: float, minimum: float = 0.0, above: bool = False, whole: bool = False):
    """The number environment variable ``name`` holds (``default`` when unset or blank), at least
    ``minimum`` (``above``: more than it), an integer with ``whole``; ``ConfigError`` (one line naming
    the variable and its value) otherwise."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < minimum or (above and value == minimum):
        bound = f"{'above' if above else 'at least'} {minimum:g}"
        raise ConfigError(f"{name}={text[:40]!r}: give {'a whole number' if whole else 'a number'} {bound}")
    return value


@dataclass(frozen=True)
class Param:
    """A declared hyperparameter: default (from the paper), doc, validation.

    The type is the default's: bool, int, float, str, or a tuple of floats (written ``lo-hi`` or
    ``a/b/c`` on the command line; a single number means a 1-tuple).
    """

    default: Any
    doc: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    # added to a plugin after results were stored: at its default it stays out of the step keys
    # (stored steps and cells keep their keys; any other value is keyed as usual)
    new: bool = False

    def parse(self, name: str, raw: Any) -> Any:
        d = self.default
        try:
            if isinstance(raw, str):
                if isinstance(d, bool):
                    if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                        raise ValueError("expected true/false")
                    value: Any = raw.lower() in ("1", "true", "yes")
                elif isinstance(d, int):
                    value = int(raw)
                elif isinstance(d, float):
                    value = float(raw)
                elif isinstance(d, tuple):
                    value = _parse_floats(raw)
                else:
                    value = raw
            else:
                value = tuple(float(v) for v in raw) if isinstance(d, tuple) else type(d)(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name}={raw!r}: {exc}") from None
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{name}={raw!r}: must be one of {', '.join(map(str, self.choices))}")
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if v != v or v in (float("inf"), float("-inf")):  # NaN fails every comparison below
                    raise ConfigError(f"{name}={raw!r}: must be a finite number")
                if (self.low is not None and v < self.low) or (self.high is not None and v > self.high):
                    raise ConfigError(f"{name}={raw!r}: out of range [{self.low}, {self.high}]")
        return value


def _parse_floats(text: str) -> tuple[float, ...]:
    if "/" in text:
        return tuple(float(t) for t in text.split("/"))
    # "lo-hi" (a range); a leading '-' or an exponent's '-' is part of a number

    m = re.fullmatch(r"\s*(-?[\d.]+(?:[eE]-?\d+)?)\s*-\s*(-?[\d.]+(?:[eE]-?\d+)?)\s*", text)
    if m:
        return (float(m.group(1)), float(m.group(2)))
    return (float(text),)


class HParams(dict):
    """A resolved configuration: a dict whose keys also read as attributes."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


class Configurable:
    """Base of attacks and defenses: declared Params, budgets, resolution from CLI text.

    ``params`` holds the paper defaults; ``budgets`` maps a budget name to the values that
    differ from them in that budget (``paper`` should differ in nothing).
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1  # bump when a change makes old cached artifacts invalid
    params: ClassVar[dict[str, Param]] = {}
    budgets: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, config: Mapping[str, Any] | None = None, budget: str = "paper") -> None:
        self.config = self.resolve(config or {}, budget)

    @classmethod
    def resolve(cls, overrides: Mapping[str, Any], budget: str = "paper") -> HParams:
        if budget not in BUDGETS:
            raise ConfigError(f"unknown budget {budget!r}{did_you_mean(budget, BUDGETS)}")
        config = HParams({k: p.default for k, p in cls.params.items()})
        config.update(cls.budgets.get(budget, {}))
        for key, raw in overrides.items():
            if key not in cls.params:
                valid = ", ".join(f"{k} (default {p.default!r})" for k, p in cls.params.items())
                close = difflib.get_close_matches(key, cls.params, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"{cls.name}: unknown parameter {key!r}.{hint} Valid: {valid or '(none)'}")
            try:
                config[key] = cls.params[key].parse(key, raw)
            except ConfigError as exc:
                raise ConfigError(f"{cls.name}: {exc}; {key}: {cls.params[key].doc}") from None
        return config
