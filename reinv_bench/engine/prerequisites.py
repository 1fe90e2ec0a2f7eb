"""Is everything a run needs here? ``missing_prerequisites(request, registry)`` (``run``, ``run
--dry-run``): every weights file, data folder and optional extra the whole plan needs and this
machine lacks, as one checklist, each with the command that fixes it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reinv_bench.contract.config import ConfigError
from reinv_bench.contract.data import Scenario
from reinv_bench.contract.datachecks import check_data_quick
from reinv_bench.contract.images import DataError

# optional extras a builtin plugin needs: (kind, name) -> (module, extra)
EXTRAS = {
    ("executor", "ray"): ("ray", "ray"),
    ("executor", "submitit"): ("submitit", "slurm"),
    ("defense", "dpsgd"): ("opacus", "dp"),
}


@dataclass(frozen=True)
class Missing:
    """One missing prerequisite: what, and the command (or step) that fixes it. ``required``:
    the run would fail without it (False: a metric records null with the reason)."""

    kind: str  # weights | data | extra | file
    what: str
    fix: str
    required: bool = True


def _weights(registry: Any, value: str, where: str, required: bool = True) -> Missing | None:
    """A weights name (or a path) that is not usable here, with the command that installs it."""
    from reinv_bench.contract.weights import best_state, usable

    if value in registry.names("weights"):
        w = registry.get("weights", value)
        state = best_state(w)
        if usable(state):
            return None
        get = f"get {w.url} and " if w.url else "get the file and "
        return Missing(
            "weights",
            f"weights {value} ({w.filename}) for {where}: {state}",
            f"{get}run `reinv-bench weights add {value} FILE`",
            required,
        )
    path = Path(value).expanduser()
    if path.is_file():
        return None
    return Missing(
        "file",
        f"{where}: {value} is neither a file nor a weights name",
        "give an existing file, or a name `reinv-bench weights` lists",
        required,
    )


def _ensemble_members(
    registry: Any, texts: Iterable[str], scenarios: list[Scenario], budget: str
) -> list[str]:
    """The installed members of the ensembles (``--attack auto``) among ``texts``, per scenario:
    their prerequisites are the run's too."""
    from reinv_bench.contract.attack import EnsembleAttack
    from reinv_bench.contract.config import ConfigError
    from reinv_bench.registry import spec as specs

    out = []
    for text in dict.fromkeys(texts):
        comps = specs.parse(text)
        cls = registry.get("attack", comps[0].name)
        if len(comps) != 1 or not issubclass(cls, EnsembleAttack):
            continue
        for s in scenarios:
            try:
                members = cls(comps[0].params, budget).members(s.name)
            except ConfigError:  # the plan says so in one line
                continue
            names = registry.names("attack")
            out += [m for m in members if all(c.name in names for c in specs.parse(m))]
    return list(dict.fromkeys(out))


def _components(registry: Any, kind: str, texts: Iterable[str], budget: str):
    """(name, resolved config) of every component the spec texts name (sweeps expanded)."""
    from reinv_bench.registry import spec as specs

    for text in dict.fromkeys(texts):
        for one, _ in specs.sweep(text):
            for comp in specs.parse(one):
                cls = registry.get(kind, comp.name)
                yield comp.name, cls.resolve(comp.params, budget)


def _arch_weights(registry: Any, text: str, where: str) -> Missing | None:
    from reinv_bench.registry import spec as specs

    comp = specs.parse(text)[0]
    value = comp.params.get("weights")
    if not value:
        return None
    arch = registry.get("architecture", comp.name)
    return _weights(registry, arch.pretrained.get(value, value), where)


def _extra(kind: str, name: str) -> Missing | None:
    module, extra = EXTRAS.get((kind, name), (None, None))
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    return Missing(
        "extra", f"{kind} {name} needs the {module} package", f"pip install 'reinv-bench[{extra}]'"
    )


def missing_prerequisites(
    req: Any, registry: Any, executor: str | None = None, optional: bool = True
) -> list[Missing]:
    """Everything ``req`` (a ``plan.Request``) needs and this machine lacks, across the whole plan:
    weights of the architectures (targets and evaluation models), of defenses and attacks (a
    StyleGAN file), the scenarios' data, optional extras of the executor and defenses; with
    ``optional``, also the weights of metrics that would record null without them."""
    from reinv_bench.registry import spec as specs

    scenarios = [registry.get("scenario", s) for s in dict.fromkeys(req.scenarios)]
    found: dict[str, Missing] = {}
    candidates = [
        *(m for scenario in scenarios for m in _missing_of_scenario(registry, req, scenario, optional)),
        *_missing_of_components(registry, req, scenarios),
        _extra("executor", specs.parse(executor)[0].name) if executor else None,
        *(_missing_metric_weights(registry, req, scenarios) if optional else ()),
        *_missing_judge_weights(registry, req, scenarios),
    ]
    for m in candidates:
        if m is not None:
            found.setdefault(m.what.split(" for ")[0] if m.kind == "weights" else m.what, m)
    return list(found.values())


def _missing_of_scenario(registry: Any, req: Any, scenario: Scenario, optional: bool):
    """The scenario's data (and, with ``optional``, what its data check warns of), and the weights of
    its target and evaluation architectures."""
    root = None if req.data_root is None else Path(req.data_root)
    cmd = f"reinv-bench data check {scenario.name}" + (f" --data-root {root}" if root else " --data-root DIR")
    try:
        scenario.load(root)
    except DataError as exc:
        yield Missing(
            "data", f"{scenario.name}: {exc}", f"put the data in place, then `{cmd}` lists what is left"
        )
    else:
        if optional:  # what the data check finds beyond what stops a run (the CelebA ganset list, ...)
            for p in check_data_quick(scenario, root):
                yield Missing("data", f"{scenario.name}: {p.what}", f"{p.fix} (`{cmd}` checks it all)", False)
    for text in req.archs or [scenario.default_arch]:
        yield _arch_weights(registry, text, f"--arch {text}")
    text = req.eval_arch or scenario.eval_arch
    yield _arch_weights(registry, text, f"the evaluation model {text} of {scenario.name}")


def _missing_of_components(registry: Any, req: Any, scenarios: list[Scenario]):
    """The extras of the defenses and attacks, and the weights files their settings name."""
    from reinv_bench.registry import spec as specs

    weights = set(registry.names("weights"))
    # a pretrained defense's weights=: a weights name, a path, or a target architecture's short name
    targets = [
        registry.get("architecture", specs.parse(t)[0].name)
        for s in scenarios
        for t in dict.fromkeys(req.archs or [s.default_arch])
    ]
    attacks = [*req.attacks, *_ensemble_members(registry, req.attacks, scenarios, req.budget)]
    for kind, texts in (("defense", req.defenses), ("attack", attacks)):
        for name, config in _components(registry, kind, texts, req.budget):
            yield _extra(kind, name)
            for key, value in config.items():
                if not isinstance(value, str) or not value:
                    continue
                if key == "weights" and kind == "defense":
                    for w in dict.fromkeys(a.pretrained.get(value, value) for a in targets):
                        yield _weights(registry, w, f"{kind} {name} ({key}={value})")
                elif value in weights:
                    yield _weights(registry, value, f"{kind} {name} ({key}={value})")


def _missing_metric_weights(registry: Any, req: Any, scenarios: list[Scenario]):
    """Weights of the metrics that run: without them the metric is stored as null (not required)."""
    for metric in _metrics(req, registry, scenarios):
        plugin = registry.entry("metric", metric).plugin
        for entry in registry.entries("weights"):
            if entry.plugin == plugin:
                m = _weights(registry, entry.name, f"metric {metric}", required=False)
                if m is not None:
                    yield Missing(m.kind, f"{m.what} (without it the metric is stored as null)", m.fix, False)


def _missing_judge_weights(registry: Any, req: Any, scenarios: list[Scenario]):
    """Weights the judges read on each scenario (``Judge.weights``: the verification judge's face
    network on a face scenario): without them the judge stores null (not required)."""
    from reinv_bench.registry import spec as specs

    for text in dict.fromkeys(getattr(req, "judges", None) or ()):
        try:
            (comp,) = specs.parse(text)
            judge = registry.get("judge", comp.name)(comp.params, req.budget)
        except Exception:  # noqa: BLE001 - a judge the plan refuses says why there
            continue
        for scenario in scenarios:
            for name in judge.weights(scenario):
                m = _weights(registry, name, f"judge {text} on {scenario.name}", required=False)
                if m is not None:
                    yield Missing(m.kind, f"{m.what} (without it the judge stores null)", m.fix, False)


def _metrics(req: Any, registry: Any, scenarios: list[Scenario]) -> list[str]:
    from reinv_bench.registry.defaults import default_metrics

    if req.metrics:
        return [m for m in dict.fromkeys(req.metrics) if m in registry.names("metric")]
    return list(dict.fromkeys(m.name for s in scenarios for m in default_metrics(registry, s)[0]))


class MissingPrerequisites(ConfigError):
    """``reinv_bench.run`` before any step: the required prerequisites this machine lacks, all of
    them (``missing``), the message their checklist."""

    def __init__(self, missing: list[Missing]) -> None:
        super().__init__(checklist(missing))
        self.missing = missing


def checklist(missing: list[Missing]) -> str:
    """The one list a run prints of what it lacks, required first."""
    need = [m for m in missing if m.required]
    lines = [f"missing before this run can start: {len(need)} required, {len(missing) - len(need)} optional"]
    for n, m in enumerate(sorted(missing, key=lambda m: not m.required), 1):
        lines += [
            f"  [{n}] {'required' if m.required else 'optional'} {m.kind}: {m.what}",
            f"      fix: {m.fix}",
        ]
    return "\n".join(lines)


def metric_names(registry: Any, names: Iterable[str]) -> list[str]:
    """``--metric`` values as metric names: a metric's name, or the key of one of its columns
    (``attack_acc5`` is a column of ``attack_acc``: that metric computes it). Unknown names are
    kept, for the plan's did-you-mean error."""
    known = set(registry.names("metric"))
    column_of = {
        c.key: e.name for e in registry.entries("metric") for c in e.obj.columns if c.key not in known
    }
    return list(dict.fromkeys(column_of.get(n, n) for n in names))
