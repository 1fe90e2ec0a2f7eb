"""What the plugins declare of a scenario, in words: protocol cards (``reinv-bench protocol
SCENARIO``), with the published numbers for it (collected and written by
``reinv_bench.results.reported``). Plugin descriptions (``reinv-bench plugins NAME``):
``reinv_bench.views.describe``.

Everything here is read from the registered objects: a scenario's attributes, ``recipe()`` and
``target_classes()``, the optional text attributes ``splits``, ``public_data``, ``eval_model``
and ``samples``, each metric's ``definition`` (else its docstring), each plugin's ``params`` and
``budgets``, and ``reported`` numbers. Nothing about a particular plugin is written here.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from tabulate import tabulate

from reinv_bench.contract.attack import WrapperAttack
from reinv_bench.contract.config import BUDGETS
from reinv_bench.contract.data import Scenario, TrainRecipe
from reinv_bench.contract.docs import cls_of, definition, docstring
from reinv_bench.contract.images import DataError
from reinv_bench.registry import spec as specs
from reinv_bench.registry.defaults import applies, claimed, default_metrics, join, left_out
from reinv_bench.registry.lookup import Registry, UnknownNameError
from reinv_bench.results.entries import declared_columns
from reinv_bench.results.reported import collect_reported, reported_line

# the rule of the metrics a scenario runs by default lives in the registry; the cards and the CLI
# read it from here too
__all__ = ["applies", "card", "claimed", "default_metrics", "docstring", "left_out", "recipe_rows"]

ROLES = ("target", "eval", "pretrain")
CARD_TEXT = (
    ("splits", "splits"),
    ("public_data", "public data"),
    ("eval_model", "evaluation model"),
    ("samples", "samples per class"),
)


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


def wrap(text: str, indent: int, width: int = 100) -> str:
    return textwrap.fill(
        " ".join(text.split()), width=width, initial_indent=" " * indent, subsequent_indent=" " * indent
    )


def _field(label: str, text: str, width: int = 22) -> str:
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
        out.append(wrap(scenario.description, 2))
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
        out += [wrap(reported_line(r, columns), 2) for r in published]
    doc = docstring(scenario)
    if doc:
        out += [
            "",
            f"Scenario documentation ({cls_of(scenario).__module__})",
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
    return out + [wrap(line, 2) for line in judged]


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
        where = "every protocol" if not m.protocols else join(m.protocols)
        if m.protocols and scenario.protocol not in m.protocols:
            where += "; named by the scenario's default_metrics"
        out += [f"  {m.name}  [{where}]", *(wrap(p, 4) for p in definition(m).split("\n\n"))]
    if other:
        out += ["", "Metrics of other protocols (not run here unless named with --metric)"]
        out += [f"  {m.name}  [{join(m.protocols)}]" for m in other]
    note = left_out(registry, scenario)
    if note and not any(m.protocols for m in run):
        out += ["", wrap("NOTE: " + note, 2)]
    return out


def _card_recipes(registry: Registry, scenario: Scenario) -> list[str]:
    """The card's training recipes, as a table."""
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
