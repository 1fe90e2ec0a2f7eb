"""Issue 19: the human judging round trip. A store of two cells (mnist, 3 classes x 2
reconstructions each, the evaluation model's successes known) is exported as one page; headless
Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by selenium) clicks yes / no / unsure,
leaves one panel unanswered, reloads (answers kept), saves; the downloaded JSON is imported and
the leaderboard shows the human-confirmed accuracy and the evaluation model's false-positive rate
against people, checked by hand; a re-import replaces answers; files that do not fit are one-line
errors that change nothing."""

from __future__ import annotations

import json
import re
import time
from types import SimpleNamespace

import pytest
import torch
from conftest import chromium

from reinv_bench.engine.artifacts import Artifacts
from reinv_bench.results.store import COLUMNS, Store

CLASSES = [0, 0, 1, 1, 2, 2]
# the evaluation model's success per reconstruction, and the answers clicked (None: left unanswered)
E = {"none": [1, 1, 1, 0, 1, 0], "re": [1, 0, 0, 0, 1, 1]}
CLICK = {
    "none": ["yes", "no", "yes", "unsure", None, "no"],
    "re": ["no", "no", "yes", None, "yes", "unsure"],
}
# by hand. none: answered 0, 1, 2, 5 (J 1, 0, 1, 0): confirmed E&J = 1+0+1+0 over 4; the false-positive
# rate is MI-Eval-MLLM's FP / (FP + TN), over the answered ones the judge rejects: 1 (E yes), 5 (E no):
# 1/2. re: answered 0, 1, 2, 4 (J 0, 0, 1, 1): confirmed E&J = 0+0+0+1 over 4; judge no on 0 (E yes)
# and 1 (E no): 1/2
CONFIRMED = {"none": 2 / 4, "re": 1 / 4}
FPR = {"none": 1 / 2, "re": 1 / 2}


def row(defense: str, key: str) -> dict:
    r = dict.fromkeys(COLUMNS)
    r.update(
        cell_id=f"{defense}-0",
        scenario="mnist",
        protocol="digits32",
        arch="tiny",
        defense=defense,
        attack="meanimg",
        threat_model="white-box",
        seed=0,
        budget="smoke",
        status="ok",
        config={
            "scenario": {"name": "mnist", "data_root": None},
            "defense": [{"name": defense, "config": {}}],
            "metrics": {"attack_acc": 1},
        },
        notes={},
        timings={},
        device="cpu",
        metrics={"natural_acc": 0.9, "attack_acc": sum(E[defense]) / 6},
        data_digest="d" * 64,
        torch_version="2",
        reinv_version="0.1.0",
        created_at="2026-01-01T00:00:00+00:00",
        outcomes={
            "class": CLASSES,
            "target_conf": [0.5] * 6,
            "per_reconstruction": {"attack_acc": [float(v) for v in E[defense]]},
            "per_item": {},
        },
        artifacts={"invert": key},
    )
    return r


@pytest.fixture
def workdir(tmp_path):
    wd = tmp_path / "work"
    store, artifacts = Store(wd / "results.db"), Artifacts(wd)
    g = torch.Generator().manual_seed(0)
    for defense in E:
        key = f"{defense:0>4}" + "ab" * 30  # any artifact key
        artifacts.save(
            key,
            {
                "images": torch.rand(6, 1, 32, 32, generator=g) * 2 - 1,
                "labels": torch.tensor(CLASSES),
                "info": {},
            },
        )
        store.put(row(defense, key))
    return wd


@pytest.fixture
def judge_cli(registry, invoke):
    """``reinv-bench judge ...`` (the human plugin's commands, as ``main`` registers them)."""
    from reinv_judges import human

    from reinv_bench.cli import cli

    cli.add_command(human.commands())
    yield lambda *args, **kw: invoke(*args, registry=registry, **kw)
    cli.commands.pop("judge")


def meta_of(page) -> dict:
    text = page.read_text(encoding="utf-8")
    return json.loads(re.search(r'<script type="application/json" id="export">(.*?)</script>', text, re.S)[1])


def answers_file(tmp_path, page, answer) -> tuple:
    """An answers file as the page saves it, ``answer(cell defense, index)`` per panel."""
    meta = meta_of(page)
    items = [{**it, "answer": answer(it["cells"][0].split("-")[0], it["index"])} for it in meta["items"]]
    out = tmp_path / "answers.json"
    out.write_text(json.dumps({**meta, "items": items}))
    return out, meta


def leaderboard(judge_cli, wd) -> dict:
    result = judge_cli("leaderboard", "--format", "json", "--workdir", wd, ok=True)
    return {e["defense"]: e for e in json.loads(result.output)}


def test_export_is_one_self_contained_blind_page_drawn_with_a_seed(judge_cli, workdir, tmp_path):
    page = tmp_path / "p.html"
    out = judge_cli(
        "judge", "export", "-o", page, "--sample", "5", "--seed", "3", "--workdir", workdir, ok=True
    )
    assert "wrote" in out.output and "5 panels" in out.output
    text, meta = page.read_text(), meta_of(page)
    assert len(meta["items"]) == 5 and len({(it["cells"][0], it["index"]) for it in meta["items"]}) == 5
    panels = re.findall(r'<img alt="panel \d+" src="(data:image/png;base64,[^"]+)"', text)
    assert len(panels) == 5
    visible = re.sub(r"data:image/png;base64,[^\"]+|<script.*?</script>", "", text, flags=re.S)
    # nothing fetched from a network (URL.createObjectURL: the Save button's local download)
    assert not re.search(r"(?i)https?:|<link|@import", text) and not re.search(
        r"\burl\(|fetch\(|XMLHttp", text
    )
    assert "meanimg" not in visible and "re-0" not in visible  # blind: no attack, defense or cell shown
    assert all(len(it["private"]) == 4 for it in meta["items"])  # four private images per panel
    same = tmp_path / "q.html"
    judge_cli("judge", "export", "-o", same, "--sample", "5", "--seed", "3", "--workdir", workdir, ok=True)
    assert meta_of(same) == meta  # the seed fixes the sample and the private images
    other = tmp_path / "r.html"
    judge_cli("judge", "export", "-o", other, "--sample", "5", "--seed", "4", "--workdir", workdir, ok=True)
    assert meta_of(other)["export_id"] != meta["export_id"]
    only_re = tmp_path / "s.html"
    judge_cli("judge", "export", "-o", only_re, "-d", "re", "--workdir", workdir, ok=True)
    assert {it["cells"][0] for it in meta_of(only_re)["items"]} == {"re-0"} and len(
        meta_of(only_re)["items"]
    ) == 6


def test_round_trip_in_headless_chromium(judge_cli, workdir, tmp_path):
    webdriver, service, options = chromium()
    from selenium.webdriver.common.by import By

    page, downloads = tmp_path / "judge.html", tmp_path / "downloads"
    downloads.mkdir()
    judge_cli("judge", "export", "-o", page, "--sample", "50", "--workdir", workdir, ok=True)
    meta = meta_of(page)
    assert len(meta["items"]) == 12  # the sample is capped at every reconstruction there is
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        driver.get(page.as_uri())
        assert driver.execute_script("return document.images[0].naturalWidth") == 1220  # the panel drew
        clicked = 0
        for i, it in enumerate(meta["items"]):
            answer = CLICK[it["cells"][0].split("-")[0]][it["index"]]
            if answer is not None:
                driver.find_element(By.CSS_SELECTOR, f"#item-{i} button.{answer}").click()
                clicked += 1
        assert driver.find_element(By.ID, "count").text == str(clicked) == "10"
        driver.refresh()  # answers are kept in the browser while one works
        assert driver.find_element(By.ID, "count").text == "10"
        first = driver.find_element(By.CSS_SELECTOR, "#item-0 button[aria-pressed=true]")
        assert first.text == CLICK[meta["items"][0]["cells"][0].split("-")[0]][meta["items"][0]["index"]]
        driver.find_element(By.ID, "save").click()
        saved = downloads / f"answers-{meta['export_id']}.json"
        for _ in range(100):
            if saved.exists():
                break
            time.sleep(0.1)
        assert saved.exists(), f"nothing downloaded: {list(downloads.iterdir())}"
        assert driver.get_log("browser") == []  # no script error
    finally:
        driver.quit()

    result = judge_cli("judge", "import", saved, "--workdir", workdir, ok=True)
    assert "4 yes, 4 no, 2 unsure, 2 unanswered" in result.output
    store = Store(workdir / "results.db")
    for defense, clicks in CLICK.items():
        stored = store.get(f"{defense}-0").outcomes.per_reconstruction["judge[human]"]
        assert stored == [{"yes": 1.0, "no": 0.0}.get(c) for c in clicks]
    lb = leaderboard(judge_cli, workdir)
    for defense in E:
        assert lb[defense]["confirmed_acc[human]"] == pytest.approx(CONFIRMED[defense])
        assert lb[defense]["eval_fpr[human]"] == pytest.approx(FPR[defense])
        assert lb[defense]["judge[human]"] == pytest.approx(0.5)
    md = judge_cli("leaderboard", "--format", "md", "--workdir", workdir, ok=True).output
    assert "Confirmed human %" in md and "Eval FPR human %" in md


def test_reimport_replaces_the_answers_it_gives(judge_cli, workdir, tmp_path):
    page = tmp_path / "judge.html"
    judge_cli("judge", "export", "-o", page, "--sample", "12", "--workdir", workdir, ok=True)
    first, _ = answers_file(tmp_path, page, lambda d, i: CLICK[d][i])
    judge_cli("judge", "import", first, "--workdir", workdir, ok=True)
    assert leaderboard(judge_cli, workdir)["none"]["confirmed_acc[human]"] == pytest.approx(2 / 4)
    # none's reconstruction 1 (E yes) now judged yes: confirmed 3/4, no false positive left
    second, _ = answers_file(tmp_path, page, lambda d, i: "yes" if (d, i) == ("none", 1) else CLICK[d][i])
    judge_cli("judge", "import", second, "--workdir", workdir, ok=True)
    lb = leaderboard(judge_cli, workdir)
    assert lb["none"]["confirmed_acc[human]"] == pytest.approx(3 / 4) and lb["none"]["eval_fpr[human]"] == 0.0
    assert lb["re"]["confirmed_acc[human]"] == pytest.approx(CONFIRMED["re"])  # unchanged


def test_a_second_export_adds_to_the_answers_of_the_first(judge_cli, workdir, tmp_path):
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    judge_cli("judge", "export", "-o", a, "-d", "none", "--workdir", workdir, ok=True)
    judge_cli("judge", "export", "-o", b, "-d", "re", "--workdir", workdir, ok=True)
    for page in (a, b):
        f, _ = answers_file(tmp_path, page, lambda d, i: CLICK[d][i])
        judge_cli("judge", "import", f, "--workdir", workdir, ok=True)
    lb = leaderboard(judge_cli, workdir)
    assert {d: lb[d]["confirmed_acc[human]"] for d in E} == pytest.approx(CONFIRMED)


def test_files_that_do_not_fit_are_one_line_errors_and_change_nothing(judge_cli, workdir, tmp_path):
    page = tmp_path / "judge.html"
    judge_cli("judge", "export", "-o", page, "--sample", "12", "--workdir", workdir, ok=True)
    good, meta = answers_file(tmp_path, page, lambda d, i: "yes")
    before = [dict(r) for r in Store(workdir / "results.db").rows()]

    def fails(path, match):
        result = judge_cli("judge", "import", path, "--workdir", workdir)
        assert result.exit_code != 0 and re.search(match, result.output), result.output
        assert len(result.output.strip().splitlines()) == 1  # "Error: ..." on one line

    junk = tmp_path / "junk.json"
    junk.write_text("not json")
    fails(junk, "is not an answers file of `reinv-bench judge export`")
    tampered = json.loads(good.read_text())
    tampered["items"][0]["index"] = (tampered["items"][0]["index"] + 1) % 6
    (tmp_path / "t.json").write_text(json.dumps(tampered))
    fails(tmp_path / "t.json", f"panel 1 is not the one export {meta['export_id']} showed there")
    odd = json.loads(good.read_text())
    odd["items"][3]["answer"] = "maybe"
    (tmp_path / "o.json").write_text(json.dumps(odd))
    fails(tmp_path / "o.json", "panel 4 has the answer 'maybe'")
    store = Store(workdir / "results.db")
    store.put({**dict(store.get("re-0")), "artifacts": {"invert": "ff" * 32}})  # re was run again
    fails(good, "no stored cell of this workdir shows panel .* any more")
    assert store.get("none-0").outcomes.per_reconstruction.get("judge[human]") is None  # nothing written
    other = tmp_path / "elsewhere"
    Store(other / "results.db").put(row("none", "x" * 64) | {"cell_id": "zzz"})
    result = judge_cli("judge", "import", good, "--workdir", other)
    assert result.exit_code != 0 and "is not recorded in" in result.output
    assert [dict(r) for r in Store(workdir / "results.db").rows()][0]["metrics"] == before[0]["metrics"]


def test_reconstructions_are_read_chunk_by_chunk():
    """A many-class cell's reconstructions are merged chunks: only the drawn ones are kept."""
    from reinv_judges.human import images_at

    from reinv_bench.api import Inversion, Reconstructions

    a = Inversion(torch.zeros(3, 1, 2, 2), torch.tensor([0, 0, 1]))
    b = Inversion(torch.ones(2, 1, 2, 2), torch.tensor([1, 2]))
    got = images_at(Reconstructions(torch.tensor([0, 0, 1, 1, 2]), lambda: iter((a, b))), {1, 4})
    assert set(got) == {1, 4} and got[1].sum() == 0 and got[4].sum() == 4


def test_export_refuses_a_scenario_whose_name_says_no_kind():
    import click
    from reinv_judges import human

    with pytest.raises(click.ClickException, match=r"'chestxray'.*judge export --kind"):
        human.build([SimpleNamespace(scenario="chestxray")], None, None, 1, 0)
    note = human.HumanJudge().protocol_note(SimpleNamespace(name="chestxray"))
    assert "judge export --kind" in note
