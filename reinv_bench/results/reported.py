"""Published numbers (``leaderboard --reported``) beside measured entries of the same setting.

A published number belongs beside a measured entry at the paper budget of the same scenario,
architecture (any initialisation), defense and (when it names one) attack (by its components'
names: the hyperparameters are matched by what the paper states), whose rows recorded the
setting the paper states (``Reported.classes``, ``class_ids``, ``per_class``, ``selection``,
``eval_arch``, ``optimizer``, ``iterations`` against each row's ``config["attacked"]`` and
``config["eval"]``: identities attacked and which, reconstructions evaluated per identity, PPA's
final selection or none, the evaluation model, the attack's optimiser and iterations or epochs;
``select`` against the row's target recipe: a best-epoch accuracy sits only beside targets kept at
their best test epoch; a row that recorded none of it matches no stated setting); it is shown once in every
comparison group that has such an entry, and the published numbers no group matches are listed in
a table of their own, with how the closest measured entry differs. Values are shown as
published: x100 with 2 decimals for a column the metrics declare ``percent``, else 6 significant
digits.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from rich.markup import escape
from rich.table import Table

from reinv_bench.contract.config import ConfigError
from reinv_bench.contract.metric import Column
from reinv_bench.contract.published import Reported
from reinv_bench.registry.lookup import KINDS, Registry
from reinv_bench.results.entries import GROUP, SEPARATE, Entry, Published, Stat, column_of
from reinv_bench.results.setting import comparison_key

UNMATCHED_TITLE = (
    "Published numbers without a measured group of the same setting here (paper budget; same "
    "scenario, architecture, attack and defense; same identities attacked, samples per class, "
    "selection and evaluation model where the paper states them):"
)
STATED = ("classes", "class_ids", "per_class", "selection", "eval_arch", "optimizer", "iterations", "select")


def class_ranges(classes) -> str:
    """Which classes, as sorted ranges: ``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    ids, out = sorted({int(c) for c in classes}), []
    for c in ids:
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return ",".join(f"{a}-{b}" if b > a else f"{a}" for a, b in out)


def fmt_reported(key: str, v: float, columns: list[Column]) -> str:
    return f"{v * 100:.2f}" if column_of(key, columns).percent else f"{v:.6g}"


def _arch_base(label: str | None) -> str | None:
    return None if label is None else label.split("[")[0]


def _attack_names(label: str | None) -> str | None:
    """``lomma[iters=200]+kedmi[optimizer=sgd]`` -> ``lomma+kedmi``."""
    return None if label is None else re.sub(r"\[[^\]]*\]", "", label)


def _labels_match(r: dict[str, Any], e: Entry) -> bool:
    return (
        e.reported is None
        and e.budget == "paper"
        and r.get("scenario") == e.scenario
        and _arch_base(r.get("arch")) == _arch_base(e.arch)
        and r.get("defense") == e.defense
        and (r.get("attack") is None or _attack_names(r.get("attack")) == _attack_names(e.attack))
    )


def measured_setting(row: Any) -> dict[str, Any]:
    """What a stored row attacked, in the terms of ``STATED`` (None: not recorded)."""
    cfg = row.config or {}
    attacked = cfg.get("attacked") or {}
    selection = attacked.get("selection")
    recipe = cfg.get("target_recipe")
    return {
        "classes": attacked.get("classes"),
        "class_ids": attacked.get("class_ids"),
        "per_class": attacked.get("per_class"),
        "selection": selection if selection in (None, "none") else "final",
        "eval_arch": _arch_base((cfg.get("eval") or {}).get("arch")),
        "optimizer": attacked.get("optimizer"),
        "iterations": attacked.get("iterations"),
        "select": None if recipe is None else recipe.get("select", "last"),  # spec() omits "last"
    }


def setting_difference(r: dict[str, Any], e: Entry) -> str | None:
    """How the measured entry's rows differ from what the published number states (None: they
    match every stated item); a number without an attack states at most ``select``."""
    keys = STATED if r.get("attack") is not None else ("select",)
    stated = {k: r.get(k) for k in keys if r.get(k) is not None}
    if not stated:
        return None
    stated["eval_arch"] = _arch_base(stated.get("eval_arch"))
    for row in e.rows.values():
        got = measured_setting(row)
        diff = [
            f"{k.replace('_', ' ')} {'not recorded' if got[k] is None else got[k]} (published {v})"
            for k, v in stated.items()
            if v is not None and got[k] != v
        ]
        if diff:
            return f"{e.arch} {e.attack} vs {e.defense} seed {row.seed}: " + ", ".join(diff)
    return None


def _matches(r: dict[str, Any], e: Entry) -> bool:
    return _labels_match(r, e) and setting_difference(r, e) is None


def _published(r: dict[str, Any], e: Entry) -> Entry:
    """The published number ``r`` as an entry beside the measured entry ``e``."""
    out = Entry(
        **{k: getattr(e, k) for k in (*GROUP, *SEPARATE, "threat_model", "defense")},
        precision=e.precision,
        variant=e.variant,
        setting=e.setting,
        reported=Published(r["paper"], r["table"], r["setting"], r["source"]),
    )
    out.metrics = list(r["metrics"])
    out.stats = {m: Stat(v, None) for m, v in r["metrics"].items()}
    return out


def attach_reported(
    entries: list[Entry], reported: list[dict[str, Any]]
) -> tuple[list[Entry], list[dict[str, Any]]]:
    """(entries with each published number right after the measured entry of its setting, in every
    group that has one; the published numbers no group matches)."""
    after: dict[int, list[Entry]] = defaultdict(list)
    unmatched = []
    for r in reported:
        hits: dict[tuple, Entry] = {}
        for e in entries:
            if _matches(r, e):
                hits.setdefault(comparison_key(e), e)
        if not hits:
            near = next((d for e in entries if _labels_match(r, e) and (d := setting_difference(r, e))), None)
            unmatched.append({**r, "differs": near} if near else r)
        for e in hits.values():
            after[id(e)].append(_published(r, e))
    out: list[Entry] = []
    for e in entries:
        out += [e, *after.get(id(e), [])]
    return out, unmatched


def reported_notes(entries: list[Entry]) -> list[str]:
    """Under the table: what each published row is (paper, table, setting), once each."""
    notes = dict.fromkeys(
        f"reported ({p.source}): {p.paper}{', ' + p.table if p.table else ''} - {p.setting}"
        for p in (e.reported for e in entries)
        if p is not None
    )
    return list(notes)


def unmatched_rows(
    reported: list[dict[str, Any]], columns: list[Column]
) -> tuple[list[str], list[list[str]]]:
    keys = [c.key for c in columns if any(c.key in r["metrics"] for r in reported)]
    keys += sorted({m for r in reported for m in r["metrics"]} - set(keys))
    headers = [
        "Setting",
        "Scenario",
        "Arch",
        "Attack",
        "Defense",
        *(column_of(m, columns).header for m in keys),
        "Source",
    ]
    rows = [
        [
            r["setting"] + (f" (measured here, another setting: {r['differs']})" if r.get("differs") else ""),
            r.get("scenario") or "(none here)",
            r.get("arch") or "",
            r.get("attack") or "",
            r.get("defense") or "",
            *(fmt_reported(m, r["metrics"][m], columns) if m in r["metrics"] else "" for m in keys),
            f"{r['paper']}{', ' + r['table'] if r.get('table') else ''}: {r['source']}",
        ]
        for r in reported
    ]
    return headers, rows


def rich_unmatched(reported: list[dict[str, Any]], columns: list[Column]):
    headers, rows = unmatched_rows(reported, columns)
    table = Table(title=UNMATCHED_TITLE)
    for h in headers:
        table.add_column(escape(h))
    for r in rows:
        table.add_row(*(escape(str(x)) for x in r))
    return table


# --------------------------------------------------------------------------------------------
# The published numbers the plugins declare (``Reported``): collected, as leaderboard rows, as text


def declared_by(obj: Any) -> tuple:
    """The ``reported`` items of one registered object (a single one or a list)."""
    items = getattr(obj, "reported", ()) or ()
    return tuple(items) if isinstance(items, (list, tuple)) else (items,)


def collect_reported(registry: Registry) -> list[Reported]:
    """Every ``reported`` number the registered plugins declare (each once)."""
    seen: dict[int, Reported] = {}
    for kind in KINDS:
        for e in registry.entries(kind):
            for r in declared_by(e.obj):
                if not isinstance(r, Reported):
                    raise ConfigError(
                        f"{kind} {e.name} (plugin {e.plugin}): its `reported` items must be "
                        f"reinv_bench.api.Reported, got {type(r).__name__}"
                    )
                seen.setdefault(id(r), r)
    return list(seen.values())


def reported_line(r: Reported, columns: list[Column]) -> str:
    """One published number as text (protocol cards, plugin descriptions); percent where the
    metrics declare the column percent."""
    values = ", ".join(f"{k} {fmt_value(k, v, columns)}" for k, v in r.metrics.items())
    where = " / ".join(
        x for x in (r.scenario, r.arch, r.attack, r.defense if r.defense != "none" else "") if x
    )
    return (
        f"{values} - {r.setting} [{where or 'no scenario here'}] "
        f"({r.paper}{', ' + r.table if r.table else ''}; source: {r.source})"
    )


def fmt_value(key: str, v: float, columns: list[Column]) -> str:
    """A published value in a line of text: ``12.34%`` for a percent column, else ``{v:g}``
    (the leaderboard's cells: ``fmt_reported``)."""
    percent = any(c.key == key and c.percent for c in columns)
    return f"{v * 100:.2f}%" if percent else f"{v:g}"


def reported_rows(registry: Registry, label) -> list[dict[str, Any]]:
    """The published numbers as leaderboard-shaped dicts, labels as the leaderboard writes them:
    ``label(kind, text)`` gives an attack's or defense's label at the paper budget
    (``reinv_bench.engine.loaders.paper_label``)."""
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
                "attack": label("attack", r.attack),
                "defense": label("defense", r.defense),
                "metrics": dict(r.metrics),
                **{k: getattr(r, k) for k in STATED},
            }
        )
    return rows
