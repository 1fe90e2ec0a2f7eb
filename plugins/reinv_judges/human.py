"""``human``: people judge reconstructions through one exported page, the way MI-Eval-MLLM's user
study shows them (Ho et al., CVPR 2026 Findings, arXiv 2505.03519; hosytuyen/MI-Eval-MLLM
@89010bc, ``utility.py``): each panel is a reconstruction ("Image A") beside four private
training images of its class ("Set of Images B") under the question, answered yes / no / unsure.

    reinv-bench judge export -o judge.html --sample 100 --seed 0 -a gmi -d none -d re
    reinv-bench judge import answers-<export id>.json

``export`` draws ``--sample`` reconstructions with ``--seed`` from every stored cell that matches
the filters (the leaderboard's), in a random order and without saying which attack or defense
made them (blind), and writes one self-contained HTML file (panels as data: URIs, inline
script, no network). Its "Save answers" button downloads the answers as JSON: the export id and,
per panel, the cell, the reconstruction index, the reconstructions' artifact key, the private
images shown and the answer (yes, no, unsure or null). ``import`` checks the file against its
export id and the stored cells, and stores the answers as the ``human`` judge's verdicts of
those reconstructions (yes, no; unsure and unanswered: no answer), replacing earlier answers to
the same reconstructions; the leaderboard then shows the human-confirmed attack accuracy and the
evaluation model's false-positive rate against people.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import click

from reinv_bench import hookimpl
from reinv_bench.api import EvalContext, Judge, Verdicts

from . import _panel

FORMAT, VERSION = "reinv-bench-judge-answers", 1
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
            question = _panel.QUESTIONS[_panel.resolve("auto", scenario.name, KIND_HINT)]
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
    """The id of an export: a digest of its panels (cell, index, artifact key, private images)."""
    keys = [{k: it[k] for k in ("cell", "index", "invert", "private")} for it in items]
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def sample(rows: list, artifacts, n: int, seed: int) -> tuple[list[tuple[Any, int]], list[str]]:
    """``n`` (row, reconstruction index) pairs drawn with ``seed`` over the rows' reconstructions
    (in a random order), and notes on the rows that cannot be shown."""
    population, notes = [], []
    for row in sorted(rows, key=lambda r: r.cell_id):
        key = (row.artifacts or {}).get("invert")
        if row.outcomes is None or not key or not artifacts.exists(key):
            notes.append(
                f"{row.attack} vs {row.defense} seed {row.seed}: its reconstructions are not in this "
                "workdir's artifact cache; left out"
            )
            continue
        population += [(row, i) for i in range(len(row.outcomes))]
    return random.Random(seed).sample(population, min(n, len(population))), notes


def images_at(recs, wanted: set[int]) -> dict[int, Any]:
    """The reconstructions at the ``wanted`` indices of a cell (``Reconstructions``: one chunk at
    a time, so that a many-class cell is never held whole)."""
    out, start = {}, 0
    for chunk in recs.chunks():
        out.update({i: chunk.images[i - start] for i in wanted if start <= i < start + len(chunk.labels)})
        start += len(chunk.labels)
    return out


def build(
    rows: list, artifacts, load_private, n: int, seed: int, kind: str = "auto"
) -> tuple[str, dict[str, Any], list[str]]:
    """(HTML page, export metadata, notes) for ``n`` reconstructions of ``rows`` drawn with ``seed``;
    ``kind``: what the classes are (auto: from each scenario's name; the panel's question)."""
    from reinv_bench.api import reconstructions

    try:
        questions = {r.scenario: _panel.QUESTIONS[_panel.resolve(kind, r.scenario, KIND_HINT)] for r in rows}
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None

    picks, notes = sample(rows, artifacts, n, seed)
    if not picks:
        raise click.ClickException("no stored reconstructions to judge: " + ("; ".join(notes) or "no cell"))
    images, labels = {}, {}
    for row in {id(r): r for r, _ in picks}.values():
        recs = reconstructions(artifacts, row.artifacts["invert"])
        labels[row.cell_id] = recs.labels.tolist()
        images[row.cell_id] = images_at(recs, {i for r, i in picks if r is row})
    rng = random.Random(f"{seed}-private")
    items, panels = [], []
    for row, i in picks:
        priv, c = load_private(row), int(labels[row.cell_id][i])
        shown = _panel.pick_private((priv.y == c).nonzero().flatten().tolist(), rng)
        panel = _panel.panel(images[row.cell_id][i], list(priv.x[shown].to("cpu")), questions[row.scenario])
        panels.append(_panel.data_uri(panel))
        items.append(
            {"cell": row.cell_id, "index": i, "invert": row.artifacts["invert"], "class": c, "private": shown}
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


def read_answers(path: Path) -> tuple[str, list[dict[str, Any]], dict[str, int]]:
    """(export id, panels with their answers, counts of each answer) of an answers file; a file
    that is not one, or not the one its export wrote, is a one-line error."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise ValueError(f"format {data.get('format')!r} version {data.get('version')!r}")
        items, eid = data["items"], data["export_id"]
        given = export_id(items)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise click.ClickException(
            f"{path} is not an answers file of `reinv-bench judge export` ({type(exc).__name__}: {exc}); "
            "save it from the exported page"
        ) from None
    if given != eid:
        raise click.ClickException(
            f"{path} does not match its export {eid}: its panels were changed; save the answers again "
            "from the exported page"
        )
    counts = dict.fromkeys(("yes", "no", "unsure", "unanswered"), 0)
    for n, it in enumerate(items):
        if not isinstance(it.get("answer"), str | None) or it.get("answer") not in ANSWER:
            raise click.ClickException(
                f"{path}: panel {n + 1} has the answer {it.get('answer')!r} (yes, no, unsure or null)"
            )
        counts[it["answer"] or "unanswered"] += 1
    return eid, items, counts


def import_answers(store, path: Path) -> tuple[str, int, dict[str, int]]:
    """Store the answers of ``path`` as the ``human`` judge's verdicts of their reconstructions,
    replacing earlier answers to the same ones (every cell is checked first: a file that does not
    fit changes nothing). Returns (export id, cells, counts of each answer)."""
    from reinv_bench.api import store_verdicts, verdict_key

    eid, items, counts = read_answers(path)
    rows = {}
    for it in items:
        row = rows.get(it["cell"]) or store.get(it["cell"])
        if row is None or row.status != "ok" or row.outcomes is None:
            raise click.ClickException(
                f"{path}: cell {it['cell']} is not a stored successful cell of this workdir (pass the "
                "--workdir the page was exported from)"
            )
        if (row.artifacts or {}).get("invert") != it["invert"] or it["index"] >= len(row.outcomes):
            raise click.ClickException(
                f"{path}: the reconstructions of {row.attack} vs {row.defense} seed {row.seed} changed since "
                f"export {eid}; export and judge them again"
            )
        rows[it["cell"]] = row
    for cell, row in rows.items():
        stored = row.outcomes.per_reconstruction.get(verdict_key(LABEL)) or [None] * len(row.outcomes)
        answers = [None if v is None else v == 1.0 for v in stored]
        for it in items:
            if it["cell"] == cell:
                answers[it["index"]] = ANSWER[it["answer"]]
        note = (
            f"people's answers (reinv-bench judge import, last export {eid}): "
            f"{sum(a is not None for a in answers)} of {len(answers)} reconstructions answered"
        )
        try:
            store_verdicts(store, cell, LABEL, answers, note, HumanJudge.version)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    return eid, len(rows), counts


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
        help="Reconstructions to draw across the cells.",
    )
    @click.option(
        "--seed", type=int, default=0, show_default=True, help="Seed of the sample and private images."
    )
    @click.option(
        "--kind",
        type=click.Choice(("auto", *_panel.KINDS)),
        default="auto",
        show_default=True,
        help="What the classes are (the panel's question): auto reads each scenario's name.",
    )
    @_filter_options
    @workdir_option
    @click.pass_context
    def export_cmd(ctx: click.Context, out: Path, n: int, seed: int, kind: str, workdir: Path, **filters):
        """Write one self-contained HTML page: a sample of reconstructions, each beside four private
        images of its class, with yes / no / unsure buttons and a Save button (answers as JSON)."""
        db = results_db(workdir)
        rows = filter_rows(Store(db).rows(status="ok"), **filters)
        if not rows:
            raise click.ClickException("no successful results match the filters")
        text, meta, notes = build(rows, Artifacts(db.parent), private_loader(ctx.obj.registry), n, seed, kind)
        for note in notes:
            click.echo(f"warning: {note}", err=True)
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(
                f"cannot write {out}: {exc.strerror or exc}; pass -o a path that can be written"
            ) from None
        cells = len({it["cell"] for it in meta["items"]})
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
