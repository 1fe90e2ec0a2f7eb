"""Issue 12: the run's closing sentences, privacy-utility plots, reconstruction grids and the HTML
report, on a real smoke run of the test attack (conftest's meanimg on the tiny architecture)."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import pytest
from conftest import cli_invoke  # the one CLI-invoke helper (also the `invoke` fixture)

from reinv_bench.api import Column
from reinv_bench.results.store import COLUMNS, Store

DEFENSES = ("re[p=0.2]", "re[p=0.8]")


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    wd = tmp_path_factory.mktemp("pictures")
    args = [
        "-p",
        "conftest",
        "run",
        "-a",
        "meanimg",
        "--arch",
        "tiny",
        *(a for d in DEFENSES for a in ("-d", d)),
        "--budget",
        "smoke",
        "--metric",
        "natural_acc",
        "--metric",
        "attack_acc",
        "--quiet",
        "--workdir",
        str(wd),
    ]
    result = cli_invoke(*args, plugins=("conftest",))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return wd, result.output


def _cli(wd, *args):
    result = cli_invoke(*args, "--workdir", wd)
    return result


def _image(path):
    import matplotlib.pyplot as plt

    return plt.imread(path)


def test_run_ends_with_one_sentence_per_defense(grid):
    _, output = grid
    lines = output.splitlines()
    for d in DEFENSES:
        (line,) = [x for x in lines if x.startswith(f"{d} vs none: attack accuracy ")]
        assert re.search(
            r"points \(95% CI [+-]\d+\.\d to [+-]\d+\.\d, 1 seed x \d+ reconstructions\): ", line
        )
    assert any("With one seed the intervals cover only the sampling of reconstructions" in x for x in lines)


def test_cells_store_outcomes_and_their_artifacts(grid):
    from reinv_bench.engine.artifacts import Artifacts

    wd, _ = grid
    rows = Store(wd / "results.db").rows()
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    for r in rows:
        out = r["outcomes"]
        inv = Artifacts(wd).load(r["artifacts"]["invert"])
        assert out["class"] == inv["labels"].tolist() and len(out["target_conf"]) == len(out["class"])
        hits = out["per_reconstruction"]["attack_acc"]
        assert sum(hits) / len(hits) == pytest.approx(r["metrics"]["attack_acc"])
        nat = out["per_item"]["natural_acc"]
        assert sum(nat["value"]) / len(nat["value"]) == pytest.approx(r["metrics"]["natural_acc"])


@pytest.mark.parametrize("suffix", ["png", "svg", "pdf"])
def test_plot_writes_each_format(grid, tmp_path, suffix):
    wd, _ = grid
    out = tmp_path / f"pu.{suffix}"
    result = _cli(wd, "plot", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 5000
    if suffix == "png":
        img = _image(out)
        assert img.shape[:2] == (480, 640) and img[..., :3].std() > 0.05  # one panel, not blank


def test_plot_refuses_an_unknown_format(grid, tmp_path):
    result = _cli(grid[0], "plot", "-o", str(tmp_path / "pu.bmp"))
    assert result.exit_code != 0 and ".png, .svg, .pdf" in result.output


def test_a_swept_defense_is_one_curve_in_parameter_order(grid):
    from reinv_bench.registry.lookup import load
    from reinv_bench.results.aggregate import aggregate, declared_columns
    from reinv_bench.views.plots import sweeps

    entries = aggregate(Store(grid[0] / "results.db").rows(), columns=declared_columns(load()))
    ((label, line),) = sweeps(entries)
    assert label == "re (p)" and [e["defense"] for e in line] == list(DEFENSES)


def test_show_draws_one_row_per_class_and_one_column_per_defense(grid, tmp_path):
    wd, _ = grid
    out = tmp_path / "grid.png"
    result = _cli(wd, "show", "--classes", "3", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "3 classes x 4 columns" in result.output  # private, none, and the two re
    img = _image(out)
    assert img.shape[:2] == (410, 440)  # (3 x 1.1 + 0.8) x (4 x 1.1) inches at 100 dpi
    assert img[..., :3].std() > 0.05
    result = _cli(wd, "show", "--classes", "2", "--restarts", "re[p=0.2]", "-o", str(tmp_path / "r.png"))
    assert result.exit_code == 0, result.output
    assert "2 classes x 2 columns" in result.output  # private + meanimg's one reconstruction per class


def test_plot_features_draws_the_seed_papers_feature_space_figure(grid, tmp_path):
    """Per class and defense: private (grey), erased private (only where the defense erases) and
    reconstructed features of the stored target."""
    from reinv_bench.engine.loaders import private_loader, target_loader
    from reinv_bench.registry.lookup import load
    from reinv_bench.results.aggregate import aggregate, declared_columns
    from reinv_bench.views.pictures import feature_projection
    from reinv_bench.views.plots import groups

    wd, _ = grid
    out = tmp_path / "features.png"
    result = cli_invoke(
        "-p",
        "conftest",
        "plot",
        "--features",
        "--classes",
        "2",
        "-o",
        str(out),
        "--workdir",
        wd,
        plugins=("conftest",),
    )
    assert result.exit_code == 0, result.output
    assert "2 classes x 3 defenses" in result.output
    assert _image(out)[..., :3].std() > 0.05
    reg = load(["conftest"])
    (group,) = groups(aggregate(Store(wd / "results.db").rows(), columns=declared_columns(reg)))
    fig, _, _ = feature_projection(group, private_loader(reg), target_loader(reg, wd), None, 2)
    sets = {ax.get_title(): [c.get_label() for c in ax.collections] for ax in fig.axes if ax.get_title()}
    assert sets["none"] == ["private", "reconstructions"]
    assert sets["re[p=0.2]"] == ["private", "private, defense transform", "reconstructions"]
    (legend,) = fig.legends  # every set drawn, whichever column draws it
    assert [t.get_text() for t in legend.get_texts()] == sets["re[p=0.2]"]


def test_a_third_party_metric_plots(tmp_path):
    from reinv_bench.results.aggregate import aggregate
    from reinv_bench.views.plots import privacy_utility

    def row(defense, leak, acc):
        r = dict.fromkeys(COLUMNS)
        r.update(
            cell_id=defense,
            scenario="s",
            protocol="p",
            arch="a",
            defense=defense,
            attack="x",
            threat_model="white-box",
            seed=0,
            budget="paper",
            status="ok",
            notes={},
            metrics={"natural_acc": acc, "attack_acc": 0.5, "leak": leak},
        )
        return r

    columns = [
        Column("natural_acc", percent=True, better="higher", axis="utility"),
        Column("attack_acc", percent=True, better="lower", axis="privacy"),
        Column("leak", "Leak score", better="lower"),
    ]
    entries = aggregate([row("none", 3.0, 0.9), row("re", 1.0, 0.85)], columns=columns)
    fig = privacy_utility(entries, tmp_path / "leak.png", columns, y="leak")
    assert fig.axes[0].get_ylabel().startswith("Leak score") and (tmp_path / "leak.png").stat().st_size > 5000


@pytest.fixture(scope="module")
def report(grid, tmp_path_factory):
    wd, _ = grid
    out = tmp_path_factory.mktemp("report") / "report.html"
    result = _cli(wd, "report", "-o", str(out))
    assert result.exit_code == 0, result.output
    return out


def test_report_is_self_contained(report):
    text = report.read_text()
    assert "<title>reinv-bench report</title>" in text and text.count("<table") >= 2
    assert not re.search(r"(?i)(https?|ftp):|//[a-z0-9.-]+\.[a-z]{2,}/|<script|<link|@import|url\(", text)
    sources = re.findall(r'<img[^>]*src="([^"]*)"', text)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)  # plot, grid
    import matplotlib.pyplot as plt

    for s in sources:
        img = plt.imread(io.BytesIO(base64.b64decode(s.split(",", 1)[1])), format="png")
        assert img[..., :3].std() > 0.05  # not blank
    for words in (
        "re[p=0.2] vs none: attack accuracy",
        "Cells: config and timings",
        "Environment",
        "Metric gaps",
    ):
        assert words in text


def test_report_renders_in_headless_chromium(report, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium is not installed (Debian package `chromium`, which .ci/run installs)")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(
        [*flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert "<title>reinv-bench report</title>" in dom and dom.count("<table") >= 2 and dom.count("<img") == 2
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*flags, "--window-size=1280,2400", f"--screenshot={shot}", report.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    img = _image(shot)[..., :3]
    assert img.shape[:2] == (2400, 1280)
    assert (img.mean(2) < 0.9).mean() > 0.02  # text, tables and figures drawn, not a blank page
    assert img.std() > 0.1
