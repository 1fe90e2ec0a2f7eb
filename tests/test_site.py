"""Issue 31, item 4: ``reinv-bench site`` writes plain HTML pages (no server, no network): an index
per protocol, a page per defense and per attack, every number linked to its entry's page. Pages
built from constructed rows; the browser test (filter, sort, follow a link) is in
tests/integration/test_site_browser.py."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path

from reinv_bench.api import Column
from reinv_bench.results.aggregate import aggregate, sort_entries
from reinv_bench.results.store import COLUMNS
from reinv_bench.views.site import build, slug

COLS = [
    Column("natural_acc", percent=True, better="higher", axis="utility"),
    Column("attack_acc", percent=True, better="lower", axis="privacy"),
]


def row(attack, defense, seed, acc, att, scenario="s"):
    r = dict.fromkeys(COLUMNS)
    r.update(
        cell_id=f"{attack}-{defense}-{seed}",
        scenario=scenario,
        protocol=None,
        arch="a",
        defense=defense,
        attack=attack,
        threat_model="white-box",
        seed=seed,
        budget="smoke",
        status="ok",
        notes={},
        device="cpu (1 threads)",
        config={"attack": {"name": attack}, "defense": {"name": defense}},
        metrics={"natural_acc": acc, "attack_acc": att},
    )
    return r


def entries(rows):
    return sort_entries(aggregate(rows, columns=COLS), columns=COLS)


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.external = [], []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("href", "src") and v:
                (self.external if re.match(r"(?i)[a-z]+:|//", v) else self.links).append(v)


def test_site_pages_link_every_number_and_nothing_outside(tmp_path):
    rows = [
        row(a, d, s, 0.9 - 0.1 * (d == "re"), 0.8 - 0.3 * (d == "re"))
        for a in ("gmi", "kedmi")
        for d in ("none", "re")
        for s in (0, 1)
    ]
    rows.append(row("gmi", "../../evil", 0, 0.5, 0.5, scenario="t"))  # stored text is not a path
    pages = build(entries(rows), COLS, tmp_path, plots=False)
    names = {p.relative_to(tmp_path).as_posix() for p in pages}
    assert {"index.html", "defenses.html", "attacks.html"} <= names
    assert f"defense/{slug('re')}.html" in names and f"attack/{slug('kedmi')}.html" in names
    assert all(p.resolve().is_relative_to(tmp_path.resolve()) for p in tmp_path.rglob("*"))
    index = (tmp_path / "index.html").read_text()
    assert index.count('<table class="lb"') == 2  # one leaderboard per protocol (scenario s, t)
    for page in pages:
        parser = Links()
        parser.feed(page.read_text())
        assert parser.external == [], page  # no network: every reference is relative
        for link in parser.links:
            target = (page.parent / link.split("#")[0]).resolve()
            assert target.exists(), f"{page.name}: broken link {link}"
    # every number of the index links to the page of its entry, which holds its cells' configs
    entry_links = re.findall(r'href="(entries/[0-9a-f]{16}\.html)">(\d+\.\d)', index)
    assert len(entry_links) >= 10
    page = html.unescape((tmp_path / entry_links[0][0]).read_text())
    assert "Configuration" in page and "cpu (1 threads)" in page and '"name": "gmi"' in page


def test_the_defense_page_holds_only_its_rows(tmp_path):
    rows = [row("gmi", d, 0, 0.9, 0.7) for d in ("none", "re", "mid")]
    build(entries(rows), COLS, tmp_path, plots=False)
    page = (tmp_path / "defense" / f"{slug('mid')}.html").read_text()
    assert page.count("<tr>") + page.count('<tr class="') == 2  # header + the one mid row
    assert ">mid</a>" in page and ">re</a>" not in page


def test_site_refuses_a_folder_with_files_without_force(tmp_path, invoke):
    out = tmp_path / "site"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    result = invoke("site", "-o", out, "--workdir", tmp_path / "empty")
    assert result.exit_code != 0 and "is not empty; pass --force" in result.output
    assert Path(out / "mine.txt").read_text() == "keep"


def test_labels_that_sanitise_alike_get_pages_of_their_own(tmp_path):
    assert slug("a/b") != slug("a:b")  # both sanitise to a_b: the digest keeps them apart
    rows = [row("gmi", d, 0, 0.9, 0.7) for d in ("none", "a/b", "a:b")]
    build(entries(rows), COLS, tmp_path, plots=False)
    for d in ("a/b", "a:b"):
        page = (tmp_path / "defense" / f"{slug(d)}.html").read_text()
        assert f"Defense {d}" in page and page.count("<tr>") + page.count('<tr class="') == 2
