"""Grids as files: ``reinv-bench run --grid FILE.toml`` (stdlib ``tomllib``).

    attacks = ["gmi", "kedmi"]
    defenses = ["re", "mid[beta=0.001|0.003|0.01]"]     # sweeps expand as on the command line
    archs = ["vgg16[weights=imagenet]"]
    scenarios = ["celeba64"]
    seeds = 3
    budget = "paper"
    metrics = ["natural_acc", "attack_acc"]
    judges = ["verification"]
    class_chunk = "auto"                                # or a number of classes
    recipes = ["target:epochs=100"]
    executor = "local[gpus=0/1/2/3]"
    canaries = 2                                        # also attack targets with planted canaries

Every key is optional; options given on the command line override the file. A plugin the file
names that is not installed here is reported and its cells are left out, so a grid can name an
attack that arrives later (e.g. PPA) and still run the rest.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from reinv_bench.contract.config import ConfigError, did_you_mean
from reinv_bench.registry import spec as specs

MAX_SEEDS = 1000  # seeds per cell (--seeds and a grid's seeds): a typo of a few zeros is an error, not a hang
# key -> (type, what it holds)
KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "attacks": (list, "attack specs"),
    "defenses": (list, "defense specs"),
    "archs": (list, "architectures"),
    "scenarios": (list, "scenarios"),
    "seeds": (int, "seeds per cell"),
    "budget": (str, "smoke|quick|paper"),
    "metrics": (list, "metric names"),
    "eval_arch": (str, "evaluation model"),
    "judges": (list, "judge specs"),
    "class_chunk": ((int, str), 'classes per inversion step, or "auto"'),
    "data_root": (str, "data folder"),
    "recipes": (list, "ROLE:key=value texts"),
    "executor": (str, "executor spec"),
    "device": (str, "device"),
    "baseline": (bool, "add the none baseline"),
    "deterministic": (bool, "deterministic CUDA kernels"),
    "precision": (str, "fp32|bf16|tf32"),
    "convergence": (int, "classes of the opt-in convergence check (0: off)"),
    "canaries": (int, "planted canary identities per target (--canaries)"),
}


def load(path: Path) -> dict[str, Any]:
    """The grid file's settings, checked: unknown keys and wrong types are one-line errors."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"grid {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"grid {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"grid {path} is not valid TOML: {exc}") from None
    for key, value in data.items():
        if key not in KEYS:
            raise ConfigError(
                f"grid {path}: unknown key {key!r}{did_you_mean(key, KEYS)}; keys: {', '.join(KEYS)}"
            )
        kind, what = KEYS[key]
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))  # True is an int
        if kind is list:
            ok = ok and all(isinstance(v, str) for v in value)
        if not ok:
            raise ConfigError(f"grid {path}: {key} must be {_kind_name(kind)} ({what}), got {value!r}")
    if "seeds" in data and not 1 <= data["seeds"] <= MAX_SEEDS:
        raise ConfigError(
            f"grid {path}: seeds must be between 1 and {MAX_SEEDS} (seeds per cell), got {data['seeds']}"
        )
    if data.get("convergence", 0) < 0:
        raise ConfigError(
            f"grid {path}: convergence is a number of classes (0: no check), got {data['convergence']}"
        )
    return data


def _kind_name(kind) -> str:
    if kind is list:
        return "a list of strings"
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


def installed(registry, kind: str, specs_: list[str], warn) -> list[str]:
    """The specs whose plugins are registered here; the others are reported and left out."""
    keep = []
    for text in specs_:
        missing = [c.name for c in specs.parse(text) if c.name not in registry.names(kind)]
        if missing:
            warn(f"the grid names {kind} {', '.join(missing)}, not installed here: its cells cannot run yet")
        else:
            keep.append(text)
    return keep
