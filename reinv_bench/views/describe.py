"""``reinv-bench plugins NAME``: what a registered plugin item declares, in words (its kind's
attributes, its docstring, its parameters per budget, the published numbers it declares). Nothing
about a particular plugin is written here."""

from __future__ import annotations

import dataclasses
from typing import Any

from tabulate import tabulate

from reinv_bench.contract.attack import WrapperAttack
from reinv_bench.contract.config import BUDGETS, Param, did_you_mean
from reinv_bench.contract.defense import Defense
from reinv_bench.contract.docs import cls_of, definition, docstring
from reinv_bench.registry.defaults import join
from reinv_bench.registry.lookup import KINDS, Registry, UnknownNameError
from reinv_bench.results.entries import declared_columns
from reinv_bench.results.reported import collect_reported, declared_by, reported_line
from reinv_bench.views.protocol import wrap


def _param_range(p: Param) -> str:
    if p.choices is not None:
        return " | ".join(map(str, p.choices))
    if p.low is None and p.high is None:
        return ""
    return f"[{'-inf' if p.low is None else f'{p.low:g}'}, {'inf' if p.high is None else f'{p.high:g}'}]"


def _show(v: Any) -> str:
    if isinstance(v, tuple):
        return "/".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
    return repr(v) if isinstance(v, str) else str(v)


def describe(registry: Registry, name: str, kind: str | None = None) -> str:
    """Everything ``reinv-bench plugins NAME`` prints, for each kind that has ``name``."""
    kinds = [kind] if kind else [k for k in KINDS if name in registry.names(k)]
    if not kinds:
        known = {n for k in KINDS for n in registry.names(k)}
        raise UnknownNameError(f"no plugin item is named {name!r}{did_you_mean(name, known)}")
    parts = []
    for k in kinds:
        e = registry.entry(k, name)
        obj, cls = e.obj, cls_of(e.obj)
        out = [f"{k} {name}  (plugin {e.plugin}, {e.source}; version {getattr(obj, 'version', 1)})"]
        out += _ABOUT.get(k, lambda obj, cls, name: [])(obj, cls, name)
        doc = docstring(obj)
        if doc:
            out += ["", *doc.splitlines()]
        out += _param_lines(cls, name)
        mine = [r for r in collect_reported(registry) if any(r is x for x in declared_by(obj))]
        if mine:
            columns = declared_columns(registry)
            out += [
                "",
                "Published numbers (leaderboard --reported):",
                *(wrap(reported_line(r, columns), 2) for r in mine),
            ]
        parts.append("\n".join(out))
    return "\n\n".join(parts)


def _about_attack(obj, cls, name: str) -> list[str]:
    out = [
        f"threat model: {getattr(cls, 'threat_model', '?')} (what the attack sees of the target: "
        "white-box = the module, black-box = softmax scores, label-only = the top-1 label)"
    ]
    if isinstance(cls, type) and issubclass(cls, WrapperAttack):
        return out + [
            f"a wrapper: write it left of the attack it wraps (e.g. {name}+gmi); it uses the base "
            "attack's priors and its own"
        ]
    try:
        priors = cls({}, "paper").priors()
    except Exception:  # described from the class attributes instead
        priors = []
    return out + [
        f"prior {ps.kind!r}: keyed by {', '.join(ps.params) or 'nothing'}; "
        f"{'trained per target' if ps.uses_target else 'target-independent'} (cached)"
        for ps in priors
    ]


DEFENSE_HOOKS = (
    "train_transform",
    "wrap_model",
    "loss",
    "trainable",
    "on_epoch",
    "recipe",
    "phases",
    "begin_training",
    "batch_loss",
    "end_training",
)


def _about_defense(obj, cls, name: str) -> list[str]:
    mine = {a for c in cls.__mro__ if c is not Defense and issubclass(c, Defense) for a in vars(c)}
    hooks = [h for h in DEFENSE_HOOKS if h in mine]
    exclusive = [h for h in hooks if h in Defense.EXCLUSIVE]
    out = [
        f"training-loop hooks: {', '.join(hooks) or 'none (the identity)'}"
        + (
            f"; exclusive ones (cannot compose with another defense overriding them): {', '.join(exclusive)}"
            if exclusive
            else ""
        )
    ]
    if getattr(cls, "pretrained", False):
        out.append(
            "starts from pretrained weights (its weights= Param, else a model pretrained on the "
            "scenario's labelled public data)"
        )
    return out


def _about_scenario(obj, cls, name: str) -> list[str]:
    return [
        f"protocol {obj.protocol}; {obj.num_classes} classes; image {obj.image_shape}; "
        "default target "
        f"{obj.default_arch}; evaluation model {obj.eval_arch}. Full protocol: "
        f"`reinv-bench protocol {name}`"
    ]


def _about_metric(obj, cls, name: str) -> list[str]:
    return [
        f"runs by default on: {join(obj.protocols) if obj.protocols else 'every protocol'}",
        "definition:",
        *(wrap(p, 2) for p in definition(obj).split("\n\n")),
    ]


def _about_architecture(obj, cls, name: str) -> list[str]:
    pre = getattr(obj, "pretrained", {})
    return [
        "pretrained weights: "
        + (
            "; ".join(f'"{name}[weights={s}]" -> {w}' for s, w in pre.items())
            or "none registered (a local state-dict path works: weights=PATH)"
        )
    ]


def _about_weights(obj, cls, name: str) -> list[str]:
    if not dataclasses.is_dataclass(obj):
        return []
    return [f"{f.name}: {getattr(obj, f.name)}" for f in dataclasses.fields(obj)]


_ABOUT = {
    "attack": _about_attack,
    "defense": _about_defense,
    "scenario": _about_scenario,
    "metric": _about_metric,
    "architecture": _about_architecture,
    "weights": _about_weights,
}


def _param_lines(cls, name: str) -> list[str]:
    """The Params table and the budget overrides of a configurable plugin item."""
    params: dict[str, Param] = getattr(cls, "params", {}) or {}
    if not params:
        return []
    rows = [[p, _show(v.default), _param_range(v), v.doc] for p, v in params.items()]
    out = [
        "",
        f"Parameters (paper defaults; set as {name}[key=value,...]):",
        tabulate(
            rows, ["name", "default", "range / choices", "help"], tablefmt="simple", disable_numparse=True
        ),
    ]
    budgets = getattr(cls, "budgets", {}) or {}
    out += ["", "Budget overrides (values that differ from the paper defaults):"]
    for b in BUDGETS:
        diff = budgets.get(b, {})
        out.append(f"  {b}: " + (", ".join(f"{p}={_show(v)}" for p, v in diff.items()) or "(paper defaults)"))
    return out
