"""Issue 30 items 7, 11 and 20: the human judging round trip samples reconstructions (an inversion's
artifact and an index), not cells: one inversion stored under two cells is shown once, and its
answer lands in both; the draw is stratified per cell group (``--per total``: spread evenly;
``--per group``: so many from each). ``judge import`` accepts only the panels its export recorded
in the workdir (a moved panel with a recomputed export id, index -1, ``true``), checks everything
before it writes, writes in one transaction, refuses an oversized file unread and never echoes a
huge value."""

from __future__ import annotations

import json
import re
import sqlite3
import time

import pytest
import torch

from reinv_bench.engine.artifacts import Artifacts
from reinv_bench.results.store import COLUMNS, Store

CLASSES = [0, 0, 1, 1, 2, 2]
# cells: (cell id, defense, seed, inversion); none-0 and none-0b hold the same inversion (e.g. two
# metric sets), none-1 is another seed of the same cell group, re-0 another group
CELLS = [
    ("none-0", "none", 0, "K1"),
    ("none-0b", "none", 0, "K1"),
    ("none-1", "none", 1, "K2"),
    ("re-0", "re", 0, "K3"),
]
KEYS = {k: f"{k.lower():0>4}" + "ab" * 30 for k in ("K1", "K2", "K3")}


def row(cell, defense, seed, inv, created) -> dict:
    r = dict.fromkeys(COLUMNS)
    r.update(
        cell_id=cell,
        scenario="mnist",
        protocol="digits32",
        arch="tiny",
        defense=defense,
        attack="meanimg",
        threat_model="white-box",
        seed=seed,
        budget="smoke",
        status="ok",
        config={"scenario": {"name": "mnist", "data_root": None}, "metrics": {"attack_acc": 1}},
        notes={},
        timings={},
        device="cpu",
        metrics={"attack_acc": 0.5},
        data_digest="d" * 64,
        torch_version="2",
        reinv_version="0.1.0",
        created_at=created,
        outcomes={
            "class": CLASSES,
            "target_conf": [0.5] * 6,
            "per_reconstruction": {"attack_acc": [1.0, 0.0] * 3},
            "per_item": {},
        },
        artifacts={"invert": KEYS[inv]},
    )
    return r


@pytest.fixture
def workdir(tmp_path):
    wd = tmp_path / "work"
    store, artifacts = Store(wd / "results.db"), Artifacts(wd)
    g = torch.Generator().manual_seed(0)
    for key in KEYS.values():
        artifacts.save(
            key,
            {
                "images": torch.rand(6, 1, 32, 32, generator=g) * 2 - 1,
                "labels": torch.tensor(CLASSES),
                "info": {},
            },
        )
    for n, cell in enumerate(CELLS):
        store.put(row(*cell, f"2026-01-01T00:00:0{n}+00:00"))
    return wd


@pytest.fixture
def judge_cli(registry, invoke):
    from reinv_judges import human

    from reinv_bench.cli import cli

    cli.add_command(human.commands())
    yield lambda *args, **kw: invoke(*args, registry=registry, **kw)
    cli.commands.pop("judge")


def meta_of(page) -> dict:
    text = page.read_text(encoding="utf-8")
    return json.loads(re.search(r'<script type="application/json" id="export">(.*?)</script>', text, re.S)[1])


def export(judge_cli, workdir, tmp_path, *args) -> dict:
    page = tmp_path / "p.html"
    judge_cli("judge", "export", "-o", page, *args, "--workdir", workdir, ok=True)
    return meta_of(page)


def answers(tmp_path, meta, answer, name="a.json"):
    out = tmp_path / name
    items = [{**it, "answer": answer(it)} for it in meta["items"]]
    out.write_text(json.dumps({**meta, "items": items}))
    return out


# ---------------------------------------------------------------------------------------------
# Item 11: reconstructions, not cells; stratified per cell group


def test_a_reconstruction_is_shown_once_and_its_answer_counts_for_every_cell_showing_it(
    judge_cli, workdir, tmp_path
):
    meta = export(judge_cli, workdir, tmp_path, "--sample", "100")
    shown = [(it["invert"], it["index"]) for it in meta["items"]]
    assert len(shown) == len(set(shown)) == 18  # three inversions of 6, not four cells of 6
    for it in meta["items"]:
        want = {"K1": ["none-0", "none-0b"], "K2": ["none-1"], "K3": ["re-0"]}
        assert it["cells"] == want[next(k for k, v in KEYS.items() if v == it["invert"])]
    f = answers(tmp_path, meta, lambda it: "yes" if it["index"] % 2 == 0 else "no")
    out = judge_cli("judge", "import", f, "--workdir", workdir, ok=True)
    assert "in 4 cell(s)" in out.output
    store = Store(workdir / "results.db")
    for cell in ("none-0", "none-0b", "none-1", "re-0"):
        assert store.get(cell).outcomes.per_reconstruction["judge[human]"] == [1.0, 0.0] * 3
    lb = json.loads(judge_cli("leaderboard", "--format", "json", "--workdir", workdir, ok=True).output)
    assert {e["defense"]: e["judge[human]"] for e in lb} == {"none": 0.5, "re": 0.5}


def test_the_draw_is_stratified_per_cell_group(judge_cli, workdir, tmp_path):
    def groups(meta):
        got = {"none": 0, "re": 0}
        for it in meta["items"]:
            got["re" if it["invert"] == KEYS["K3"] else "none"] += 1
        return got

    # --per total: spread over the two groups (none has 12 reconstructions, re 6), not 2:1
    assert groups(export(judge_cli, workdir, tmp_path, "--sample", "6")) == {"none": 3, "re": 3}
    assert groups(export(judge_cli, workdir, tmp_path, "--sample", "16")) == {"none": 10, "re": 6}
    # --per group: so many from every group
    assert groups(export(judge_cli, workdir, tmp_path, "--sample", "4", "--per", "group")) == {
        "none": 4,
        "re": 4,
    }
    assert groups(export(judge_cli, workdir, tmp_path, "--sample", "9", "--per", "group")) == {
        "none": 9,
        "re": 6,
    }


# ---------------------------------------------------------------------------------------------
# Item 20: judge import


def fails(judge_cli, workdir, path, match):
    result = judge_cli("judge", "import", path, "--workdir", workdir)
    assert result.exit_code != 0 and re.search(match, result.output), result.output
    assert len(result.output.strip().splitlines()) == 1 and len(result.output) < 600, result.output[:600]
    return result


def human_of(workdir):
    return {
        r.cell_id: r.outcomes.per_reconstruction.get("judge[human]")
        for r in Store(workdir / "results.db").rows()
    }


def test_only_the_recorded_panels_are_accepted(judge_cli, workdir, tmp_path):
    from reinv_judges.human import export_id

    meta = export(judge_cli, workdir, tmp_path, "--sample", "6", "--seed", "1")
    assert (workdir / "judge-exports" / f"{meta['export_id']}.json").is_file()
    before = human_of(workdir)
    for change in (
        lambda it: it.update(index=(it["index"] + 1) % 6),  # a moved panel
        lambda it: it.update(index=-1),  # the last reconstruction
        lambda it: it.update(index=True if it["index"] == 1 else it["index"] + 1),  # true is not 1
        lambda it: it.update(private=it["private"][::-1]),
    ):
        items = [dict(it) for it in meta["items"]]
        change(items[0])
        forged = {**meta, "items": [{**it, "answer": "yes"} for it in items]}
        forged["export_id"] = export_id(items)  # recomputed: the old check passed it
        path = tmp_path / "forged.json"
        path.write_text(json.dumps(forged))
        fails(judge_cli, workdir, path, r"is not the one export .* showed there|is not recorded in")
    true_answer = answers(tmp_path, meta, lambda it: True)
    fails(judge_cli, workdir, true_answer, r"panel 1 has the answer True")
    assert human_of(workdir) == before


def test_everything_is_checked_first_and_written_in_one_transaction(judge_cli, workdir, tmp_path):
    meta = export(judge_cli, workdir, tmp_path, "--sample", "100")
    before = human_of(workdir)
    bad = answers(tmp_path, meta, lambda it: "yes" if it is not meta["items"][-1] else "perhaps")
    fails(judge_cli, workdir, bad, r"panel 18 has the answer 'perhaps'")
    assert human_of(workdir) == before
    # the database refuses the last cell's row: nothing of the others is written either
    db = sqlite3.connect(workdir / "results.db")
    db.execute(
        "CREATE TRIGGER no_re BEFORE INSERT ON results WHEN NEW.cell_id = 're-0' "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    db.commit()
    db.close()
    good = answers(tmp_path, meta, lambda it: "yes")
    fails(judge_cli, workdir, good, "refused")
    assert human_of(workdir) == before


def test_an_oversized_file_is_refused_unread_and_values_are_never_echoed_whole(judge_cli, workdir, tmp_path):
    meta = export(judge_cli, workdir, tmp_path, "--sample", "3")
    big = tmp_path / "big.json"
    with big.open("wb") as fh:
        fh.truncate(33 * 2**20)  # sparse: 33 MiB that reading would have to parse
    start = time.monotonic()
    fails(judge_cli, workdir, big, r"is 34603008 bytes, over the 33554432")
    assert time.monotonic() - start < 5
    huge = answers(tmp_path, meta, lambda it: "x" * 1_000_000)
    fails(judge_cli, workdir, huge, r"panel 1 has the answer 'xxx.*\.\.\.")
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"format": "y" * 1_000_000}))
    fails(judge_cli, workdir, odd, "is not an answers file")
