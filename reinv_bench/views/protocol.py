"""What the plugins declare, in words: protocol cards (``reinv-bench protocol SCENARIO``), plugin
descriptions (``reinv-bench plugins NAME``) and published numbers (``leaderboard --reported``).

Everything here is read from the registered objects: a scenario's attributes, ``recipe()`` and
``target_classes()``, the optional text attributes ``splits``, ``public_data``, ``eval_model``
and ``samples``, each metric's ``definition`` (else its docstring), each plugin's ``params`` and
``budgets``, and ``reported`` numbers. Nothing about a particular plugin is written here.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from typing import Any

from reinv_bench.contract.attack import WrapperAttack
from reinv_bench.contract.config import BUDGETS, ConfigError, Param
from reinv_bench.contract.data import Scenario, TrainRecipe
from reinv_bench.contract.metric import Column
from reinv_bench.contract.published import Reported
from reinv_bench.registry import spec as specs
from reinv_bench.registry.components import default_metrics, resolve_attack, resolve_defense
from reinv_bench.registry.lookup import KINDS, Registry, UnknownNameError
from reinv_bench.results.aggregate import declared_columns

ROLES = ("target", "eval", "pretrain")
CARD_TEXT = (
    ("splits", "splits"),
    ("public_data", "public data"),
    ("eval_model", "evaluation model"),
    ("samples", "samples per class"),
)


# --------------------------------------------------------------------------------------------
# docstrings


def _cls(obj: Any) -> type:
    return obj if isinstance(obj, type) else type(obj)


def docstring(obj: Any) -> str:
    """The object's own class docstring, else its module's (a plugin's paper, code and
    deliberate differences live in one of the two)."""
    cls = _cls(obj)
    doc = cls.__dict__.get("__doc__") or getattr(sys.modules.get(cls.__module__), "__doc__", None) or ""
    return inspect.cleandoc(doc)


def definition(metric: Any) -> str:
    """A metric's exact definition: its ``definition`` attribute, else its docstring (paragraphs
    separated by blank lines)."""
    text = getattr(metric, "definition", "") or docstring(metric)
    return "\n\n".join(" ".join(p.split()) for p in text.split("\n\n") if p.strip())


# --------------------------------------------------------------------------------------------
# metrics by protocol


def claimed(registry: Registry, scenario: Scenario) -> bool:
    """Whether a metric of the scenario's default run names its protocol (every builtin scenario's
    does; a third-party scenario with a protocol of its own runs builtin metrics by other names)."""
    return any(scenario.protocol in m.protocols for m in default_metrics(registry, scenario)[0])


def left_out(registry: Registry, scenario: Scenario) -> str | None:
    """A note naming each metric a default run of ``scenario`` leaves out and why (it belongs to
    other protocols), first saying so when no metric but those that run everywhere applies."""
    run, others = default_metrics(registry, scenario)
    if not others:
        return None
    unclaimed = not any(m.protocols for m in run)
    return (
        f"scenario {scenario.name}: "
        + (
            f"no metric names its protocol {scenario.protocol!r}, so by default only "
            f"{', '.join(m.name for m in run) or 'no metric'} run; "
            if unclaimed
            else ""
        )
        + f"left out by default (metrics of other protocols): "
        f"{', '.join(f'{m.name} ({_join(m.protocols)})' for m in others)}; add one with --metric NAME "
        "(a scenario plugin: name it in default_metrics)"
    )


def _join(items) -> str:
    return ", ".join(map(str, items))


# --------------------------------------------------------------------------------------------
# protocol card


def _ranges(classes: list[int]) -> str:
    out, start = [], None
    for i, c in enumerate(classes):
        if start is None:
            start = c
        if i + 1 == len(classes) or classes[i + 1] != c + 1:
            out.append(str(start) if start == c else f"{start}-{c}")
            start = None
    return ", ".join(out)


def _recipe_row(r: TrainRecipe) -> list[str]:
    ms = "/".join(f"{m:.3g}" for m in r.milestones)
    if ms:  # the epochs as the training loop rounds them
        ms += " (epoch " + ", ".join(str(max(1, round(m * r.epochs))) for m in r.milestones) + ")"
    return [
        str(r.epochs),
        str(r.batch_size),
        r.optimizer,
        f"{r.lr:g}",
        f"{r.momentum:g}" if r.optimizer == "sgd" else "",
        f"{r.weight_decay:g}",
        ms or "-",
        f"{r.gamma:g}" if r.milestones else "",
        r.augment or "-",
    ]


RECIPE_HEADERS = [
    "role",
    "architecture",
    "budget",
    "epochs",
    "batch",
    "optim",
    "lr",
    "momentum",
    "wd",
    "lr steps",
    "gamma",
    "augment",
]


def recipe_rows(registry: Registry, scenario: Scenario) -> list[list[str]]:
    """Rows of the recipe table: per role, the default architecture and every architecture whose
    recipe differs from it in some budget; then the recipes defenses substitute (``recipe()``)."""
    archs = registry.names("architecture")
    rows: list[list[str]] = []

    def get(role: str, budget: str, arch: str) -> TrainRecipe | None:
        try:
            return scenario.recipe(role, budget, arch)
        except Exception:  # a scenario may not define every role (no public labels: no pretrain)
            return None

    roles = ["target", "eval"] + (["pretrain"] if scenario.public_labels else [])
    targets: list[str] = []
    for role in roles:
        main = scenario.eval_arch if role == "eval" else scenario.default_arch
        main = specs.parse(main)[0].name
        base = {b: get(role, b, main) for b in BUDGETS}
        shown = [main] + [
            a
            for a in archs
            if a != main and role != "eval" and any(get(role, b, a) != base[b] for b in BUDGETS)
        ]
        if role == "target":
            targets = shown
        for arch in shown:
            label = arch + (" (default)" if arch == main and role != "eval" else "")
            if arch == main and len(shown) > 1:
                label += "; others as this"
            for b in BUDGETS:
                r = get(role, b, arch)
                if r is not None:
                    rows.append([role, label, b, *_recipe_row(r)])
    for e in registry.entries("defense"):
        cls = e.obj
        if not callable(getattr(cls, "recipe", None)):
            continue
        for arch in targets:  # the architectures the scenario gives their own recipe
            for b in BUDGETS:
                base = get("target", b, arch)
                try:
                    changed = cls({}, b).recipe(base, b, arch) if base is not None else None
                except Exception:
                    changed = None
                if changed is not None and changed != base:
                    rows.append([f"target, {cls.name}", arch, b, *_recipe_row(changed)])
    return rows


def _wrap(text: str, indent: int, width: int = 100) -> str:
    import textwrap

    return textwrap.fill(
        " ".join(text.split()), width=width, initial_indent=" " * indent, subsequent_indent=" " * indent
    )


def _field(label: str, text: str, width: int = 22) -> str:
    import textwrap

    body = textwrap.fill(" ".join(str(text).split()), width=100 - width - 2) or "-"
    lines = body.splitlines()
    return "\n".join([f"  {label:<{width}}{lines[0]}", *(" " * (width + 2) + ln for ln in lines[1:])])


def card(
    registry: Registry,
    name: str,
    data_root: str | None = None,
    load_data: bool = True,
    judged: list[str] | tuple[str, ...] = (),
) -> str:
    """The protocol card of scenario ``name``, as text: one section per part of the protocol;
    ``judged``: how the judges of stored rows decided (``judging.remarks``: thresholds, measured
    false- and true-accept rates on real pairs)."""
    scenario: Scenario = registry.get("scenario", name)
    entry = registry.entry("scenario", name)
    out = [
        f"Protocol card: {name}  (protocol {scenario.protocol or '-'}; scenario version {scenario.version}; "
        f"plugin {entry.plugin}, {entry.source})"
    ]
    if scenario.description:
        out.append(_wrap(scenario.description, 2))
    out += _card_data(scenario, data_root if load_data else False)
    out += _card_eval(registry, scenario)
    out += [
        "",
        "Reconstructions",
        _field("samples per class", getattr(scenario, "samples", "") or "(not declared by the scenario)"),
        _field("per attack", "each attack's Params set its count per class: `reinv-bench plugins ATTACK`"),
        _field("selection", _selections(registry)),
    ]
    out += _card_metrics(registry, scenario)
    out += _card_judges(registry, scenario, judged)
    out += _card_recipes(registry, scenario)
    published = [r for r in collect_reported(registry) if r.scenario == name]
    if published:
        out += [
            "",
            "Published numbers for this scenario (leaderboard --reported shows them beside measured rows)",
        ]
        columns = declared_columns(registry)
        out += [_wrap(reported_line(r, columns), 2) for r in published]
    doc = docstring(scenario)
    if doc:
        out += [
            "",
            f"Scenario documentation ({_cls(scenario).__module__})",
            *("  " + ln if ln else "" for ln in doc.splitlines()),
        ]
    return "\n".join(out)


def _selections(registry: Registry) -> str:
    """What each registered attack keeps of what it optimised, at the paper budget
    (``Attack.selection``); each row records its own (``config["attacked"]``)."""
    picked = [
        f"{e.name}: {sel}"
        for e in registry.entries("attack")
        if not issubclass(e.obj, WrapperAttack) and (sel := e.obj(None, "paper").selection())
    ]
    return "; ".join(
        [
            *picked,
            f"{'every other attack' if picked else 'every attack'}: none, every reconstruction it optimised "
            "is evaluated (a wrapper attack, lomma+gmi, as the attack it wraps; each row records its own "
            "identities, samples per class and selection)",
        ]
    )


def _card_judges(registry: Registry, scenario: Scenario, judged: list[str] | tuple[str, ...]) -> list[str]:
    """The card's Judges section: what each registered judge does on the scenario (run --judge),
    and how those of the stored rows decided."""
    judges = [e.obj() for e in registry.entries("judge")]
    if not judges:
        return []
    out = [
        "",
        "Judges (run --judge NAME; none by default): the leaderboard adds each one's confirmed attack "
        "accuracy and the evaluation model's false-positive rate against it",
    ]
    out += [_field(j.name, j.protocol_note(scenario)) for j in judges]
    return out + [_wrap(line, 2) for line in judged]


def _card_data(scenario: Scenario, data_root: str | None | bool) -> list[str]:
    """The card's Data section; ``data_root`` False: the data are not loaded."""
    classes = scenario.target_classes()
    c, h, w = scenario.image_shape
    out = [
        "",
        "Data",
        _field("private identities", f"{scenario.num_classes} (the target's classes)"),
        _field(
            "identities attacked", f"{len(classes)} of {scenario.num_classes}: classes {_ranges(classes)}"
        ),
        _field(
            "resolution",
            f"{h} x {w} px, {c} channel{'s' if c > 1 else ''}; tensors in [-1, 1] (pixel - 0.5) / 0.5",
        ),
    ]
    for attr, label in CARD_TEXT[:2]:
        out.append(_field(label, getattr(scenario, attr, "") or "(not declared by the scenario)"))
    out.append(
        _field(
            "labelled public data",
            "yes: a defense that pretrains (tl) gets the public labels; attacks never do"
            if scenario.public_labels
            else "no",
        )
    )
    if data_root is not False:
        out.append(_field("loaded", _loaded(scenario, data_root)))
    return out


def _loaded(scenario: Scenario, data_root: str | None) -> str:
    from pathlib import Path

    from reinv_bench.contract.images import DataError

    try:
        data = scenario.load(Path(data_root) if data_root else None)
    except (DataError, OSError) as exc:
        return f"not loaded ({str(exc).split(';')[0]})"
    return (
        f"{data.source}; private train {len(data.private_train):,}, private test "
        f"{len(data.private_test):,}, public {len(data.public):,}, evaluation model train "
        f"{len(data.eval_train):,} / test {len(data.eval_test):,}; data digest {data.digest}"
    )


def _card_eval(registry: Registry, scenario: Scenario) -> list[str]:
    """The card's Evaluation model section."""
    eval_comp = specs.parse(scenario.eval_arch)[0]
    try:
        eval_arch = registry.get("architecture", eval_comp.name)
        pretrained = dict(getattr(eval_arch, "pretrained", {}))
    except UnknownNameError:
        pretrained = {}
    init = (
        f"from weights {eval_comp.params['weights']}"
        if eval_comp.params.get("weights")
        else "random initialisation (the scenario names no weights)"
    )
    out = [
        "",
        "Evaluation model",
        _field(
            "architecture",
            f"{scenario.eval_arch}, {scenario.eval_num_classes} classes, trained on the "
            "scenario's evaluation split with the 'eval' recipe below",
        ),
        _field("initialisation", init),
    ]
    if pretrained:
        out.append(
            _field(
                "pretrained options",
                "; ".join(f'--eval-arch "{eval_comp.name}[weights={k}]" ({v})' for k, v in pretrained.items())
                + " - rows with another evaluation model are ranked as another protocol",
            )
        )
    if getattr(scenario, "eval_model", ""):
        out.append(_field("about", scenario.eval_model))
    return out


def _card_metrics(registry: Registry, scenario: Scenario) -> list[str]:
    """The card's metrics: those run by default on its protocol, then the others."""
    run, other = default_metrics(registry, scenario)
    out = ["", f"Metrics run by default on protocol {scenario.protocol or '-'} (others: run --metric NAME)"]
    for m in run:
        where = "every protocol" if not m.protocols else _join(m.protocols)
        if m.protocols and scenario.protocol not in m.protocols:
            where += "; named by the scenario's default_metrics"
        out += [f"  {m.name}  [{where}]", *(_wrap(p, 4) for p in definition(m).split("\n\n"))]
    if other:
        out += ["", "Metrics of other protocols (not run here unless named with --metric)"]
        out += [f"  {m.name}  [{_join(m.protocols)}]" for m in other]
    note = left_out(registry, scenario)
    if note and not any(m.protocols for m in run):
        out += ["", _wrap("NOTE: " + note, 2)]
    return out


def _card_recipes(registry: Registry, scenario: Scenario) -> list[str]:
    """The card's training recipes, as a table."""
    from tabulate import tabulate

    table = tabulate(recipe_rows(registry, scenario), RECIPE_HEADERS, tablefmt="simple")
    return [
        "",
        'Training recipes (override: run --recipe "ROLE:key=value,...", roles target, eval, pretrain; '
        "lr steps: lr *= gamma at these fractions of the epochs)",
        "\n".join("  " + ln for ln in table.splitlines()),
        _field(
            "weights kept",
            "the last epoch's (select=last: no choice made on test data); `--recipe ROLE:select=best_test` "
            "keeps the epoch with the best private-test accuracy, as the official KEDMI/GMI/PLG-MI "
            "training scripts do (their released checkpoints' accuracies are such numbers); "
            "`select=best_val_loss` trains on 80 % of the training split and keeps the epoch with the "
            "lowest loss on the other 20 % (every 5th epoch), as AT-AT's code; each row stores its recipe",
        ),
    ]


# --------------------------------------------------------------------------------------------
# plugin description


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
        from reinv_bench.contract.config import did_you_mean

        raise UnknownNameError(f"no plugin item is named {name!r}{did_you_mean(name, known)}")
    parts = []
    for k in kinds:
        e = registry.entry(k, name)
        obj, cls = e.obj, _cls(e.obj)
        out = [f"{k} {name}  (plugin {e.plugin}, {e.source}; version {getattr(obj, 'version', 1)})"]
        out += _ABOUT.get(k, lambda obj, cls, name: [])(obj, cls, name)
        doc = docstring(obj)
        if doc:
            out += ["", *doc.splitlines()]
        out += _param_lines(cls, name)
        mine = [r for r in collect_reported(registry) if any(r is x for x in _reported_of(obj))]
        if mine:
            columns = declared_columns(registry)
            out += [
                "",
                "Published numbers (leaderboard --reported):",
                *(_wrap(reported_line(r, columns), 2) for r in mine),
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
    from reinv_bench.contract.defense import Defense

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
        f"runs by default on: {_join(obj.protocols) if obj.protocols else 'every protocol'}",
        "definition:",
        *(_wrap(p, 2) for p in definition(obj).split("\n\n")),
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
    from tabulate import tabulate

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


# --------------------------------------------------------------------------------------------
# published numbers


def _reported_of(obj: Any) -> tuple:
    items = getattr(obj, "reported", ()) or ()
    return tuple(items) if isinstance(items, (list, tuple)) else (items,)


def collect_reported(registry: Registry) -> list[Reported]:
    """Every ``reported`` number the registered plugins declare (each once)."""
    seen: dict[int, Reported] = {}
    for kind in KINDS:
        for e in registry.entries(kind):
            for r in _reported_of(e.obj):
                if not isinstance(r, Reported):
                    raise ConfigError(
                        f"{kind} {e.name} (plugin {e.plugin}): its `reported` items must be "
                        f"reinv_bench.api.Reported, got {type(r).__name__}"
                    )
                seen.setdefault(id(r), r)
    return list(seen.values())


def reported_line(r: Reported, columns: list[Column]) -> str:
    """One published number as text; percent where the metrics declare the column percent."""
    values = ", ".join(f"{k} {fmt_value(k, v, columns)}" for k, v in r.metrics.items())
    where = " / ".join(
        x for x in (r.scenario, r.arch, r.attack, r.defense if r.defense != "none" else "") if x
    )
    return (
        f"{values} - {r.setting} [{where or 'no scenario here'}] "
        f"({r.paper}{', ' + r.table if r.table else ''}; source: {r.source})"
    )


def fmt_value(key: str, v: float, columns: list[Column]) -> str:
    percent = any(c.key == key and c.percent for c in columns)
    return f"{v * 100:.2f}%" if percent else f"{v:g}"


def _label(registry: Registry, kind: str, text: str | None) -> str | None:
    """The spec as the leaderboard labels it at the paper budget (defaults left out)."""
    if text is None:
        return None
    try:
        if kind == "defense":
            return resolve_defense(registry, text, "paper")[0]
        return resolve_attack(registry, text, "paper")[0]
    except Exception:  # a plugin that is not installed here (e.g. ppa): keep the published text
        return text


def reported_rows(registry: Registry) -> list[dict[str, Any]]:
    """The published numbers as leaderboard-shaped dicts (labels as the leaderboard writes them)."""
    from reinv_bench.results.reported import STATED

    rows = []
    for r in collect_reported(registry):
        protocol = None
        if r.scenario in registry.names("scenario"):
            protocol = registry.get("scenario", r.scenario).protocol
        rows.append(
            {
                "reported": True,
                "paper": r.paper,
                "table": r.table,
                "setting": r.setting,
                "source": r.source,
                "scenario": r.scenario,
                "protocol": protocol,
                "budget": "paper",
                "arch": r.arch,
                "attack": _label(registry, "attack", r.attack),
                "defense": _label(registry, "defense", r.defense),
                "metrics": dict(r.metrics),
                **{k: getattr(r, k) for k in STATED},
            }
        )
    return rows
