"""``human``: people judge reconstructions through one exported page, the way MI-Eval-MLLM's user
study shows them (Ho et al., CVPR 2026 Findings, arXiv 2505.03519; hosytuyen/MI-Eval-MLLM
@89010bc, ``utility.py``): each panel is a reconstruction ("Image A") beside four private
training images of its class ("Set of Images B") under the question, answered yes / no / unsure.

    reinv-bench judge export -o judge.html --sample 100 --seed 0 -a gmi -d none -d re
    reinv-bench judge import answers-<export id>.json

``export`` draws reconstructions with ``--seed`` from the stored cells that match the filters (the
leaderboard's): a reconstruction is the inversion's artifact and its index, shown once however
many cells hold that inversion (one per metric set, judge or ``--eval-arch`` run). The draw is
stratified per cell group (scenario, architecture, defense, attack and budget, seeds pooled):
``--per total`` (default) spreads ``--sample`` panels as evenly as the groups allow, ``--per
group`` draws ``--sample`` from every group. The panels come in a random order, without saying
which attack or defense made them (blind), in one self-contained HTML file (panels as data: URIs,
inline script, no network); the export's panels are recorded in the workdir
(``judge-exports/<export id>.json``). The page's "Save answers" button downloads the answers as
JSON: the export id and, per panel, the reconstruction (artifact key, index, class), the private
images shown and the answer (yes, no, unsure or null). ``import`` accepts only the panels its
export recorded (every item is checked before anything is written; a file over 32 MiB is refused
unread), and stores the answers as the ``human`` judge's verdicts in every stored cell that shows
those reconstructions, in one transaction (yes, no; unsure and unanswered: no answer), replacing
earlier answers to the same reconstructions; the leaderboard then shows the human-confirmed attack
accuracy and the evaluation model's false-positive rate against people.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any

import click

from reinv_bench import hookimpl
from reinv_bench.api import EvalContext, Judge, Verdicts

from . import _panel

FORMAT, VERSION = "reinv-bench-judge-answers", 2
MAX_ANSWERS = 32 * 2**20  # bytes of an answers file (a panel's entry is ~200)
RECORDS = "judge-exports"  # the workdir folder that records each export's panels
PANEL = ("invert", "index", "class", "private")  # what identifies a panel
STRATUM = ("scenario", "arch", "defense", "attack", "budget")  # a cell group, seeds pooled
LABEL = "human"
KIND_HINT = "give judge export --kind"
ANSWER = {"yes": True, "no": False, "unsure": None, None: None}
FILTERS = (  # the leaderboard's cell filters: (flags, row label)
    (("-a", "--attack"), "attack"),
    (("-d", "--defense"), "defense"),
    (("--arch",), "arch"),
    (("--scenario",), "scenario"),
    (("--budget",), "budget"),
    (("--protocol",), "protocol"),
)


class HumanJudge(Judge):
    """People's answers to MI-Eval-MLLM's panel (a reconstruction beside four private images of
    its class: "same individual / digit?"), given on the page ``reinv-bench judge export`` writes
    and stored by ``reinv-bench judge import``; unsure and unanswered panels are no answer."""

    name = LABEL
    external = True

    def protocol_note(self, scenario) -> str:
        try:
            question = _panel.QUESTIONS[_panel.resolve("auto", scenario, KIND_HINT)]
        except ValueError as exc:
            return f"human: {exc}"
        return (
            f'People answer "{question}" (yes / no / unsure) on panels of a reconstruction beside four '
            "private training images of its class, drawn with a seed and shown blind (reinv-bench judge "
            "export / import); unsure and unanswered panels are no answer."
        )

    def judge(self, ctx: EvalContext) -> Verdicts:
        raise NotImplementedError(
            "people's answers come from `reinv-bench judge export` and `reinv-bench judge import`, not a run"
        )


@hookimpl
def register_judges():
    return [HumanJudge]


def export_id(items: list[dict[str, Any]]) -> str:
    """The id of an export: a digest of its panels (artifact key, index, class, private images)."""
    keys = [{k: it[k] for k in PANEL} for it in items]
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def short(value: Any, n: int = 60) -> str:
    """``repr(value)`` cut to ``n`` characters (a value echoed in a message)."""
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def stratum(row) -> tuple[str, ...]:
    return tuple(str(row[k]) for k in STRATUM)


def sample(
    rows: list, artifacts, n: int, seed: int, per: str = "total"
) -> tuple[list[tuple[str, int, list]], list[str]]:
    """The drawn reconstructions, ``(artifact key, index, the rows that show it)`` in a random
    order, and notes on the rows that cannot be shown. Each reconstruction counts once however many
    cells hold it; the draw is stratified per cell group (``STRATUM``): ``per="total"``: ``n`` in
    all, spread as evenly as the groups allow; ``per="group"``: ``n`` from every group."""
    shows: dict[str, list] = {}
    notes = []
    for row in sorted(rows, key=lambda r: r.cell_id):
        key = (row.artifacts or {}).get("invert")
        if row.outcomes is None or not key or not artifacts.exists(key):
            notes.append(
                f"{row.attack} vs {row.defense} seed {row.seed}: its reconstructions are not in this "
                "workdir's artifact cache; left out"
            )
            continue
        shows.setdefault(key, []).append(row)
    groups: dict[tuple[str, ...], list[tuple[str, int]]] = {}
    for key, held in shows.items():
        size = min(len(r.outcomes) for r in held)
        groups.setdefault(stratum(held[0]), []).extend((key, i) for i in range(size))
    rng = random.Random(seed)
    pools = [rng.sample(pop, len(pop)) for _, pop in sorted(groups.items())]
    if per == "group":
        picks = [p for pool in pools for p in pool[:n]]
    else:
        quota = [0] * len(pools)
        left = min(n, sum(map(len, pools)))
        while left:
            open_ = [g for g, pool in enumerate(pools) if quota[g] < len(pool)]
            share, extra = divmod(left, len(open_))
            lucky = set(rng.sample(open_, extra))
            for g in open_:
                take = min(share + (g in lucky), len(pools[g]) - quota[g])
                quota[g] += take
                left -= take
        picks = [p for g, pool in enumerate(pools) for p in pool[: quota[g]]]
    rng.shuffle(picks)
    return [(key, i, shows[key]) for key, i in picks], notes


def images_at(recs, wanted: set[int]) -> dict[int, Any]:
    """The reconstructions at the ``wanted`` indices of a cell (``Reconstructions``: one chunk at
    a time, so that a many-class cell is never held whole)."""
    out, start = {}, 0
    for chunk in recs.chunks():
        out.update({i: chunk.images[i - start] for i in wanted if start <= i < start + len(chunk.labels)})
        start += len(chunk.labels)
    return out


def build(
    rows: list,
    artifacts,
    load_private,
    n: int,
    seed: int,
    kind: str = "auto",
    scenario_of=None,
    per: str = "total",
) -> tuple[str, dict[str, Any], list[str]]:
    """(HTML page, export metadata, notes) for the reconstructions of ``rows`` drawn with ``seed``
    (``sample``); ``kind``: what the classes are (auto: as each scenario declares, ``scenario_of
    (name)`` gives the scenario; the panel's question)."""
    from reinv_bench.api import reconstructions

    try:
        questions = {
            r.scenario: _panel.QUESTIONS[
                _panel.resolve(kind, scenario_of(r.scenario) if scenario_of else r.scenario, KIND_HINT)
            ]
            for r in rows
        }
    except (ValueError, KeyError) as exc:
        raise click.ClickException(str(exc).strip("'\"")) from None

    picks, notes = sample(rows, artifacts, n, seed, per)
    if not picks:
        raise click.ClickException("no stored reconstructions to judge: " + ("; ".join(notes) or "no cell"))
    images, labels = {}, {}
    for key in dict.fromkeys(k for k, _, _ in picks):
        recs = reconstructions(artifacts, key)
        labels[key] = recs.labels.tolist()
        images[key] = images_at(recs, {i for k, i, _ in picks if k == key})
    rng = random.Random(f"{seed}-private")
    items, panels = [], []
    for key, i, held in picks:
        row = held[0]
        priv, c = load_private(row), int(labels[key][i])
        shown = _panel.pick_private((priv.y == c).nonzero().flatten().tolist(), rng)
        panel = _panel.panel(images[key][i], list(priv.x[shown].to("cpu")), questions[row.scenario])
        panels.append(_panel.data_uri(panel))
        items.append(
            {"invert": key, "index": i, "class": c, "private": shown, "cells": [r.cell_id for r in held]}
        )
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "judge": LABEL,
        "export_id": export_id(items),
        "items": items,
    }
    title = f"reinv-bench: judge reconstructions ({len(items)} panels)"
    return _panel.page(meta, panels, title), meta, notes


def record_export(workdir: Path, meta: dict[str, Any]) -> Path:
    """Record an export's panels in the workdir: ``import`` accepts only those."""
    folder = workdir / RECORDS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{meta['export_id']}.json"
    path.write_text(
        json.dumps(
            {"export_id": meta["export_id"], "items": [{k: it[k] for k in PANEL} for it in meta["items"]]}
        )
    )
    return path


def _bad(path: Path, what: str) -> click.ClickException:
    return click.ClickException(f"{path}: {what}")


def read_answers(path: Path, workdir: Path) -> tuple[str, list[dict[str, Any]], dict[str, int]]:
    """(export id, the recorded panels with their answers, counts of each answer) of an answers
    file; a file that is not one, or does not answer the panels its export recorded in
    ``workdir``, is a one-line error (every item is checked before anything is used)."""
    hint = "save it from the exported page"
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise _bad(path, f"cannot be read ({exc.strerror or exc})") from None
    if size > MAX_ANSWERS:
        raise _bad(path, f"is {size} bytes, over the {MAX_ANSWERS} an answers file can have; {hint}")
    try:
        data = json.loads(path.read_bytes())
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
            got = data if not isinstance(data, dict) else (data.get("format"), data.get("version"))
            raise ValueError(f"format and version {short(got)}")
        items, eid = data["items"], data["export_id"]
    except (OSError, ValueError, KeyError, RecursionError) as exc:
        raise _bad(
            path,
            f"is not an answers file of `reinv-bench judge export` ({type(exc).__name__}: "
            f"{short(str(exc))}); {hint}",
        ) from None
    if not isinstance(eid, str) or not re.fullmatch(r"[0-9a-f]{16}", eid):
        raise _bad(path, f"its export id {short(eid)} is not one `reinv-bench judge export` writes; {hint}")
    try:
        recorded = json.loads((workdir / RECORDS / f"{eid}.json").read_text(encoding="utf-8"))["items"]
    except (OSError, ValueError, KeyError, TypeError):
        raise _bad(
            path,
            f"export {eid} is not recorded in {workdir} (pass the --workdir the page was exported from)",
        ) from None
    if not isinstance(items, list) or len(items) != len(recorded):
        n = len(items) if isinstance(items, list) else short(items)
        raise _bad(path, f"has {n} panels, export {eid} showed {len(recorded)}; {hint}")
    counts = dict.fromkeys(("yes", "no", "unsure", "unanswered"), 0)
    out = []
    for n, (it, rec) in enumerate(zip(items, recorded)):
        if not isinstance(it, dict) or json.dumps([it.get(k) for k in PANEL]) != json.dumps(
            [rec[k] for k in PANEL]
        ):
            raise _bad(path, f"panel {n + 1} is not the one export {eid} showed there; {hint}")
        answer = it.get("answer")
        if not (answer is None or isinstance(answer, str)) or answer not in ANSWER:
            raise _bad(path, f"panel {n + 1} has the answer {short(answer)} (yes, no, unsure or null)")
        counts[answer or "unanswered"] += 1
        out.append({**rec, "answer": answer})
    return eid, out, counts


def import_answers(store, path: Path, workdir: Path | None = None) -> tuple[str, int, dict[str, int]]:
    """Store the answers of ``path`` as the ``human`` judge's verdicts in every stored cell that
    shows their reconstructions, replacing earlier answers to the same ones; everything is checked
    first and written in one transaction (a file that does not fit changes nothing). Returns
    (export id, cells, counts of each answer)."""
    from reinv_bench.api import judged, verdict_key

    workdir = store.path.parent if workdir is None else workdir
    eid, items, counts = read_answers(path, workdir)
    by_key: dict[str, list] = {}
    for row in store.rows(status="ok"):
        key = (row.artifacts or {}).get("invert")
        if key and row.outcomes is not None:
            by_key.setdefault(key, []).append(row)
    answers: dict[str, tuple[Any, list]] = {}
    for n, it in enumerate(items):
        showing = [
            r
            for r in by_key.get(it["invert"], ())
            if it["index"] < len(r.outcomes) and r.outcomes.classes[it["index"]] == it["class"]
        ]
        if not showing:
            raise _bad(
                path,
                f"no stored cell of this workdir shows panel {n + 1}'s reconstruction any more (its cells "
                f"were run again since export {eid}); export and judge them again",
            )
        for row in showing:
            if row.cell_id not in answers:
                stored = row.outcomes.per_reconstruction.get(verdict_key(LABEL)) or [None] * len(row.outcomes)
                answers[row.cell_id] = (row, [None if v is None else v == 1.0 for v in stored])
            answers[row.cell_id][1][it["index"]] = ANSWER[it["answer"]]
    new = []
    for cell, (row, given) in answers.items():
        note = (
            f"people's answers (reinv-bench judge import, last export {eid}): "
            f"{sum(a is not None for a in given)} of {len(given)} reconstructions answered"
        )
        try:
            new.append(judged(row, cell, LABEL, given, note, HumanJudge.version))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    store.put_many(new)
    return eid, len(new), counts


def _filter_options(f):
    for flags, label in reversed(FILTERS):
        f = click.option(
            *flags, label, multiple=True, help=f"Only these {label} labels (as the leaderboard)."
        )(f)
    return f


def commands() -> click.Group:
    """The ``judge`` command group (built when the CLI asks: the plugin imports no CLI otherwise)."""
    from reinv_bench.api import Artifacts, Store, filter_rows, private_loader, results_db, workdir_option

    @click.group()
    def judge():
        """People judge reconstructions: export a page, answer it in a browser, import the answers."""

    @judge.command("export")
    @click.option(
        "-o",
        "--out",
        type=click.Path(dir_okay=False, path_type=Path),
        default=Path("judge.html"),
        show_default=True,
        help="The HTML page to write.",
    )
    @click.option(
        "--sample",
        "n",
        type=click.IntRange(1),
        default=100,
        show_default=True,
        help="Reconstructions to draw: in all (--per total) or from every cell group (--per group).",
    )
    @click.option(
        "--per",
        type=click.Choice(("total", "group")),
        default="total",
        show_default=True,
        help="total: --sample panels in all, spread evenly over the cell groups (scenario, arch, defense, "
        "attack, budget; seeds pooled); group: --sample panels from every cell group.",
    )
    @click.option(
        "--seed", type=int, default=0, show_default=True, help="Seed of the sample and private images."
    )
    @click.option(
        "--kind",
        type=click.Choice(("auto", *_panel.KINDS)),
        default="auto",
        show_default=True,
        help="What the classes are (the panel's question): auto reads each scenario's declaration.",
    )
    @_filter_options
    @workdir_option
    @click.pass_context
    def export_cmd(
        ctx: click.Context, out: Path, n: int, per: str, seed: int, kind: str, workdir: Path, **filters
    ):
        """Write one self-contained HTML page: a sample of reconstructions, each beside four private
        images of its class, with yes / no / unsure buttons and a Save button (answers as JSON)."""
        db = results_db(workdir)
        rows = filter_rows(Store(db).rows(status="ok"), **filters)
        if not rows:
            raise click.ClickException("no successful results match the filters")
        registry = ctx.obj.registry

        def scenario_of(name: str):
            try:
                return registry.get("scenario", name)
            except Exception:  # noqa: BLE001 - not installed here: --kind names what its classes are
                return name

        text, meta, notes = build(
            rows, Artifacts(db.parent), private_loader(registry), n, seed, kind, scenario_of, per
        )
        for note in notes:
            click.echo(f"warning: {note}", err=True)
        try:
            record_export(db.parent, meta)
        except OSError as exc:
            raise click.ClickException(
                f"cannot record the export in {db.parent}: {exc.strerror or exc}"
            ) from None
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(
                f"cannot write {out}: {exc.strerror or exc}; pass -o a path that can be written"
            ) from None
        cells = len({c for it in meta["items"] for c in it["cells"]})
        click.echo(
            f"wrote {out} ({len(meta['items'])} panels from {cells} cell(s), export {meta['export_id']}, "
            f"{len(text.encode()) / 1024:.0f} KiB)"
        )

    @judge.command("import")
    @click.argument("answers", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @workdir_option
    def import_cmd(answers: Path, workdir: Path):
        """Store the answers saved from an exported page as the human judge's verdicts."""
        eid, cells, counts = import_answers(Store(results_db(workdir)), answers)
        click.echo(
            f"stored the answers of export {eid} as judge {LABEL} in {cells} cell(s): "
            + ", ".join(f"{v} {k}" for k, v in counts.items())
            + " (unsure and unanswered: no answer)"
        )

    return judge


@hookimpl
def register_commands(cli):
    cli.add_command(commands())
