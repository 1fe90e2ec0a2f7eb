"""Components resolved from their specs: a defense, an attack, a judge, an architecture's weights.

``resolve_*`` parse a spec (``re[p=0.5]+bido``, ``lomma+gmi``, ``verification``, ``resnet18[weights=W]``),
validate it against the plugin's declared params and give its label (as the leaderboard shows it),
its normalised description (``{"name", "version", "config"}``: what step keys and cell ids hold)
and the instance; ``build_*`` rebuild an instance from a stored description. Also here: the
metrics a scenario runs by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reinv_bench.contract.attack import Attack, WrapperAttack
from reinv_bench.contract.config import ConfigError
from reinv_bench.contract.defense import Defense
from reinv_bench.contract.weights import WeightsUnavailable, locate, sha256_of
from reinv_bench.registry import spec as specs
from reinv_bench.registry.composed import compose
from reinv_bench.registry.lookup import Registry


def component_label(
    name: str,
    cls: type,
    overrides: dict[str, str],
    config: dict,
    budget: str,
    keep: frozenset[str] = frozenset(),
) -> str:
    """The component as the leaderboard shows it: the parameters that differ from the budget's
    defaults, written from their parsed values (``p=.5`` and ``p=0.50`` both read ``p=0.5``)."""
    base = cls.resolve({}, budget)
    shown = {k: _show(config[k]) for k in overrides if config[k] != base[k] or k in keep}
    return str(specs.Component(name, shown))


def _show(v: Any) -> str:
    if isinstance(v, tuple):
        return ("-" if len(v) == 2 and min(v) >= 0 else "/").join(map(str, v))
    return str(v)


def resolve_defense(
    registry: Registry, text: str, budget: str, keep: frozenset[str] = frozenset()
) -> tuple[str, list[dict[str, Any]], list[Defense]]:
    """Parse and validate a defense spec; returns (label, normalised spec, instances)."""
    labels, desc, insts = [], [], []
    comps = specs.parse(text)
    names = [c.name for c in comps]
    if dup := next((n for n in names if names.count(n) > 1), None):
        raise ConfigError(f"defense {text!r}: {dup} appears twice; give each defense once")
    if len(comps) > 1:  # none is the identity: none+re is re
        comps = [c for c in comps if c.name != "none" or c.params]
    for comp in comps:
        cls: type[Defense] = registry.get("defense", comp.name)
        inst = cls(comp.params, budget)
        insts.append(inst)
        labels.append(component_label(comp.name, cls, comp.params, inst.config, budget, keep))
        desc.append({"name": comp.name, "version": cls.version, "config": dict(inst.config)})
    compose(insts)  # refuses conflicting compositions
    return "+".join(labels), desc, insts


def undefended(desc: list[dict[str, Any]] | None) -> bool:
    """Whether a defense description (a target spec's ``defense``) trains without a defense."""
    return all(d["name"] == "none" for d in desc or [])


def build_defense(registry: Registry, desc: list[dict[str, Any]] | None, budget: str = "paper") -> Defense:
    """The defense a target's stored description names: its parts composed (none: the identity)."""
    if not desc:
        return Defense()
    return compose([registry.get("defense", d["name"])(d["config"], budget) for d in desc])


def resolve_attack(
    registry: Registry, text: str, budget: str, keep: frozenset[str] = frozenset()
) -> tuple[str, dict[str, Any], Attack]:
    """Parse ``NAME[...]`` or ``WRAPPER[...]+NAME[...]`` (e.g. ``lomma+gmi``): a wrapper attack
    (a ``WrapperAttack``) modifies the attack to its right, which it receives as ``base``."""
    comps = specs.parse(text)
    desc: dict[str, Any] | None = None
    labels = []
    for i, comp in enumerate(reversed(comps)):
        cls: type[Attack] = registry.get("attack", comp.name)
        wraps = issubclass(cls, WrapperAttack)
        if i == 0 and wraps:
            raise specs.SpecError(f"attack {comp.name!r} wraps a base attack: write e.g. {comp.name}+gmi")
        if i > 0 and not wraps:
            raise specs.SpecError(
                f"{text!r}: {comp.name!r} is not a wrapper attack; only wrappers (like lomma) "
                "may stand left of '+'"
            )
        inst = (
            cls(comp.params, budget)
            if desc is None
            else cls(comp.params, budget, base=build_attack(registry, desc))
        )
        labels.insert(0, component_label(comp.name, cls, comp.params, inst.config, budget, keep))
        desc = {
            "name": comp.name,
            "version": cls.version,
            "config": keyed(cls, inst.config),
            **({"base": desc} if desc is not None else {}),
        }
    return "+".join(labels), desc, inst


def keyed(cls: type, config: dict[str, Any]) -> dict[str, Any]:
    """The config as step keys hold it: a ``Param(new=True)`` at its default is left out."""
    params = cls.params
    return {k: v for k, v in config.items() if not (params[k].new and v == params[k].default)}


def build_attack(registry: Registry, desc: dict[str, Any]) -> Attack:
    """Rebuild an attack (and the attack it wraps) from its stored description."""
    cls = registry.get("attack", desc["name"])
    if "base" in desc:
        return cls(desc["config"], base=build_attack(registry, desc["base"]))
    return cls(desc["config"])


def resolve_judge(registry: Registry, text: str, budget: str) -> dict[str, Any]:
    """Parse and validate a judge spec ``NAME[key=value,...]``: its label, name, version, config."""
    comps = specs.parse(text)
    if len(comps) != 1:
        raise ConfigError(f"--judge {text!r}: one judge per --judge (repeat the option for several judges)")
    (comp,) = comps
    cls = registry.get("judge", comp.name)
    if cls.external:
        raise ConfigError(
            f"--judge {comp.name}: its answers come from outside a run "
            f"(reinv-bench judge export / import), not from --judge"
        )
    inst = cls(comp.params, budget)
    try:
        found = inst.check(None)  # e.g. mllm's url and model, the model read from the environment
    except ValueError as exc:
        raise ConfigError(f"--judge {comp.name}: {str(exc).removeprefix(comp.name + ': ')}") from None
    inst.config.update(found)
    # transport options (how answers are fetched: an endpoint's URL, timeouts) are in neither the
    # label nor the identity: changing one never re-evaluates a cell under a new column
    shown = {k: v for k, v in {**comp.params, **found}.items() if k not in cls.transport}
    label = component_label(comp.name, cls, shown, inst.config, budget, keep=frozenset(found))
    config = keyed(cls, dict(inst.config))  # a Param(new=True) at its default keeps the cell ids
    return {"label": label, "name": comp.name, "version": cls.version, "config": config}


def judge_identity(registry: Registry, desc: dict[str, Any]) -> dict[str, Any]:
    """A cell's ``judges`` entry as the cell id holds it: without the judge's transport options."""
    transport = registry.get("judge", desc["name"]).transport
    if not transport:
        return desc
    return {**desc, "config": {k: v for k, v in desc["config"].items() if k not in transport}}


def build_judge(registry: Registry, desc: dict[str, Any]):
    """The judge a cell's ``judges`` entry describes."""
    return registry.get("judge", desc["name"])(desc["config"])


# ---- where a network's weights start ------------------------------------------------------------


@dataclass(frozen=True)
class RandomInit:
    """Random initialisation (the architecture's own)."""

    def record(self) -> None:
        return None


@dataclass(frozen=True)
class FileInit:
    """Weights from a local file, identified by its SHA-256 (``--arch NAME[weights=...]``, a
    pretrained defense's ``weights=``)."""

    path: str
    sha256: str

    def record(self) -> dict[str, str]:
        return {"weights": self.path, "sha256": self.sha256}


def resolve_arch(registry: Registry, text: str) -> tuple[str, str, RandomInit | FileInit]:
    """Parse ``NAME`` or ``NAME[weights=W]``; returns (label, name, init). ``W`` is one of the
    architecture's pretrained short names (``imagenet``), a registered weights name, or a path."""
    comps = specs.parse(text)
    if len(comps) != 1:
        raise specs.SpecError(f"--arch {text!r}: one architecture per --arch (repeat the option for several)")
    comp = comps[0]
    arch = registry.get("architecture", comp.name)
    unknown = sorted(set(comp.params) - {"weights"})
    if unknown:
        raise ConfigError(
            f"architecture {comp.name}: unknown parameter(s) {', '.join(unknown)}; the only one is "
            f"weights=NAME|PATH (NAME: {', '.join(arch.pretrained) or 'none registered'})"
        )
    if not comp.params.get("weights"):
        return str(comp), comp.name, RandomInit()
    return str(comp), comp.name, file_init(registry, arch, comp.params["weights"], f"--arch {text}")


def file_init(registry: Registry, arch, value: str, where: str) -> FileInit:
    """Where a network's pretrained weights come from: a file (found by weights name or path)
    and its SHA-256."""
    name = arch.pretrained.get(value, value)
    if name in registry.names("weights"):
        try:
            path = locate(registry.get("weights", name))
        except WeightsUnavailable as exc:
            raise ConfigError(f"{where}: {exc}") from None
    else:
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"{where}: {value!r} is neither a file nor a weights name (for {arch.name}: "
                f"{', '.join(arch.pretrained) or 'none'}; all of them: `reinv-bench weights`)"
            )
    path = path.resolve()
    return FileInit(str(path), sha256_of(path))


def weights_init(registry: Registry, arch, value: str, where: str) -> dict[str, str]:
    """``file_init``'s record: {"weights": path, "sha256": digest}."""
    return file_init(registry, arch, value, where).record()


# ---- the metrics a scenario runs by default -------------------------------------------------------
