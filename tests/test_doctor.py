"""The data doctor (``reinv-bench data check``) on the fake trees, clean and broken, and the dry
run's checklist of every missing prerequisite (issue 22)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reinv_bench.api import ImageFiles, Problem, Scenario, ScenarioData, Split
from reinv_bench.contract.datachecks import check_data, undecodable
from reinv_bench.engine.plan import Request
from reinv_bench.engine.prerequisites import checklist, missing_prerequisites
from reinv_bench.testing import make_celeba, make_facescrub, make_ffhq

GRIDS = Path(__file__).parent.parent / "benchmarks" / "grids"


@pytest.fixture(scope="module")
def clean_celeba(tmp_path_factory):
    root = tmp_path_factory.mktemp("celeba-clean")
    return root, make_celeba(root)


@pytest.fixture
def no_ganset(monkeypatch):
    monkeypatch.delenv("REINV_BENCH_CELEBA_GANSET", raising=False)


def _copy(src: Path, tmp_path: Path) -> Path:
    shutil.copytree(src / "celeba", tmp_path / "celeba")
    return tmp_path


def test_clean_celeba_tree_is_ready_with_label_order_and_digest(
    clean_celeba, tmp_path, registry, invoke, no_ganset
):
    root, ids = clean_celeba
    labels = tmp_path / "labels.txt"
    result = invoke("data", "check", "celeba64", "--data-root", root, "--labels", labels, registry=registry)
    assert result.exit_code == 0, result.output
    # the label order, derived here from the identity file: most frequent first, ties by first appearance
    first = {}
    for n, i in enumerate(ids):
        first.setdefault(i, n)
    counts = Counter(ids)
    expected = sorted(counts, key=lambda i: (-counts[i], first[i]))[:1000]
    lines = labels.read_text().splitlines()
    assert lines == [f"{c}\tidentity {i}" for c, i in enumerate(expected)]
    digest = registry.get("scenario", "celeba64").load(root).digest
    assert f"data digest: {digest}" in result.output
    assert f"label order: 1,000 classes written to {labels}" in result.output
    # the fake tree is not the full CelebA and has no ganset list: warnings, not errors
    assert "WARNING" in result.output and "ERROR" not in result.output and "ready" in result.output


def test_three_planted_faults_are_all_reported_with_fixes(
    clean_celeba, tmp_path, registry, invoke, no_ganset
):
    root = _copy(clean_celeba[0], tmp_path)
    base = root / "celeba"
    (base / "img_align_celeba" / "000007.jpg").unlink()  # 1: a listed image is missing
    (base / "img_align_celeba" / "000010.jpg").write_bytes(
        b"\xff\xd8\xff\xe0 not really a jpeg"
    )  # 2: undecodable
    ann = base / "identity_CelebA.txt"
    lines = ann.read_text().splitlines()
    lines[10] = lines[10].split()[0]  # 3: line 11 has no identity
    ann.write_text("\n".join(lines) + "\n")
    labels = tmp_path / "labels.txt"
    result = invoke(
        "data",
        "check",
        "celeba64",
        "--data-root",
        root,
        "--sample",
        "0",
        "--labels",
        labels,
        registry=registry,
    )
    out = result.output
    assert result.exit_code == 1, out
    assert "lacks 1 of the 1,611 images identity_CelebA.txt lists (first: 000007.jpg)" in out
    assert "do not decode" in out and "000010.jpg" in out
    assert "1 malformed line(s) (line 11;" in out
    errors = [line for line in out.splitlines() if line.startswith("  ERROR")]
    assert len(errors) == 3
    fixes = out.split("\n")
    for n, line in enumerate(fixes):  # each error is followed by its fix
        if line.startswith("  ERROR"):
            assert fixes[n + 1].strip().startswith("fix: ") and len(fixes[n + 1].strip()) > 10
    assert "not ready: 3 problem(s)" in out and not labels.exists()


def test_celeba_layout_mistakes_say_where_the_files_are(tmp_path, registry):
    base = tmp_path / "celeba"
    (base / "Anno").mkdir(parents=True)
    (base / "Anno" / "identity_CelebA.txt").write_text("000001.jpg 1\n")
    (base / "img_align_celeba.zip").write_bytes(b"PK")
    problems = registry.get("scenario", "celeba64").check(tmp_path)
    text = "\n".join(f"{p.what} | {p.fix}" for p in problems)
    assert f"move {base / 'Anno' / 'identity_CelebA.txt'} to {base / 'identity_CelebA.txt'}" in text
    assert f"unzip {base / 'img_align_celeba.zip'} into {base}/" in text
    assert sum(p.error for p in problems) == 2  # (and a warning: no ganset list)


def test_a_ganset_list_naming_unknown_images_is_an_error(clean_celeba, tmp_path, registry, monkeypatch):
    root = _copy(clean_celeba[0], tmp_path)
    listed = tmp_path / "ganset.txt"
    listed.write_text("999999.jpg\n")
    monkeypatch.setenv("REINV_BENCH_CELEBA_GANSET", str(listed))
    report = check_data(registry.get("scenario", "celeba64"), root, sample=10)
    assert not report.ready
    assert any("999999.jpg" in p.what and "official list" in p.fix for p in report.problems)


@pytest.fixture(scope="module")
def clean_facescrub(tmp_path_factory):
    root = tmp_path_factory.mktemp("facescrub-clean")
    make_facescrub(root, per_person=1)
    make_ffhq(root, "images1024x1024", 1, 1024)
    return root


def test_facescrub_clean_and_broken(clean_facescrub, tmp_path, registry, invoke):
    result = invoke(
        "data",
        "check",
        "facescrub224-ffhq",
        "--data-root",
        clean_facescrub,
        "--labels",
        tmp_path / "l.txt",
        registry=registry,
    )
    assert result.exit_code == 0, result.output
    names = (tmp_path / "l.txt").read_text().splitlines()
    assert (
        len(names) == 530 and names[0] == "0\tactors/Person_000" and names[265] == "265\tactresses/Person_000"
    )
    root = tmp_path / "broken"
    shutil.copytree(clean_facescrub, root)
    faces = root / "facescrub" / "actresses" / "faces"
    faces.rename(faces.parent / "images")  # the uncropped folder name
    shutil.rmtree(root / "facescrub" / "actors" / "faces" / "Person_004")  # 264 actors
    (root / "facescrub" / "actors" / "faces" / "Person_005" / "0.jpg").write_bytes(b"broken")
    report = check_data(registry.get("scenario", "facescrub224-ffhq"), root, sample=0)
    text = "\n".join(f"{p.what} | {p.fix}" for p in report.problems if p.error)
    assert not report.ready
    assert "images/ (the uncropped images) is there" in text and "cropped faces" in text
    assert "has 264 person folders; the protocol has 265 actors" in text
    assert "Person_005/0.jpg" in text and "do not decode" in text


class _Files(Scenario):
    """A third-party scenario that defines no checks of its own: it gets the generic ones."""

    name = "files"
    num_classes = eval_num_classes = 2
    image_shape = (3, 8, 8)
    default_arch = eval_arch = "tiny"

    def __init__(self, root: Path, shared: bool = False) -> None:
        self.root, self.shared = root, shared

    def load(self, data_root):
        paths = sorted(str(p) for p in self.root.glob("*.png"))
        decode = lambda p: np.asarray(Image.open(p).convert("RGB"))  # noqa: E731
        priv = ImageFiles(paths[:4], decode, self.image_shape)
        pub = ImageFiles(paths[2:] if self.shared else paths[4:], decode, self.image_shape)
        y = torch.tensor([0, 1, 0, 1])
        train, test = Split(priv[[0, 1, 2]], y[:3]), Split(priv[[3]], y[3:])
        return ScenarioData(train, test, Split(pub, None), train, test, "d1g3st", "six files")


def test_a_scenario_without_checks_gets_the_generic_ones(tmp_path):
    for i in range(6):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    report = check_data(_Files(tmp_path), None)
    assert report.ready and report.digest == "d1g3st" and report.labels == ["class 0", "class 1"]
    (tmp_path / "1.png").write_bytes(b"garbage")
    report = check_data(_Files(tmp_path, shared=True), None, sample=0)
    text = "\n".join(p.what for p in report.problems if p.error)
    assert not report.ready
    assert "1 of 3 image file(s) checked do not decode" in text and "1.png" in text
    assert "2 image file(s) in both the private and public data" in text


def test_undecodable_samples_with_a_fixed_seed(tmp_path):
    paths = []
    for i in range(20):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    assert undecodable(paths, 5) == undecodable(paths, 5) and undecodable(paths, 5)[0] == 5
    assert undecodable(paths, 0) == (20, [])


def test_problem_is_on_the_facade():
    assert Problem("x", "y").error


@pytest.fixture
def fresh_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("REINV_BENCH_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "data").mkdir()
    return tmp_path


def test_dry_run_of_the_seed_paper_grid_lists_everything_missing_at_once(fresh_machine, registry, invoke):
    result = invoke(
        "run",
        "--grid",
        GRIDS / "seed-paper-64px.toml",
        "--dry-run",
        "--device",
        "cpu",
        "--data-root",
        fresh_machine / "data",
        "--workdir",
        fresh_machine / "work",
        registry=registry,
    )
    out = result.output
    assert result.exit_code == 1, out
    for name in ("vgg16-imagenet", "ir152-ms1m", "ir50-ms1m"):  # the three targets' pretrained starts
        assert f"run `reinv-bench weights add {name} FILE`" in out
    assert f"reinv-bench data check celeba64 --data-root {fresh_machine / 'data'}" in out
    assert "missing before this run can start: 4 required" in out
    assert "optional weights: weights fid-inception" in out  # a metric that would be null
    # the run itself stops at the same list before any step
    result = invoke(
        "run",
        "--grid",
        GRIDS / "seed-paper-64px.toml",
        "--device",
        "cpu",
        "--quiet",
        "--data-root",
        fresh_machine / "data",
        "--workdir",
        fresh_machine / "work",
        registry=registry,
    )
    assert result.exit_code == 1 and "4 required" in result.output
    assert not (fresh_machine / "work" / "results.db").exists()


def test_the_224px_grid_lists_the_stylegan_file_and_extras_are_named(fresh_machine, registry, monkeypatch):
    req = Request(
        ["ppa[config=midre]"],
        ["none", "dpsgd"],
        ["resnet18[weights=imagenet]"],
        ["facescrub224-ffhq"],
        budget="paper",
        data_root=str(fresh_machine / "data"),
    )
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("opacus", "ray") else real(name, *a)
    )
    missing = missing_prerequisites(req, registry, "ray[address=local]", optional=False)
    text = checklist(missing)
    assert "weights stylegan2-ffhq" in text and "`reinv-bench weights add stylegan2-ffhq FILE`" in text
    assert "weights resnet18-imagenet" in text
    assert "pip install 'reinv-bench[dp]'" in text and "pip install 'reinv-bench[ray]'" in text
    assert "reinv-bench data check facescrub224-ffhq" in text
    assert all(m.required for m in missing)


def test_nothing_missing_prints_no_checklist(registry, tmp_path):
    req = Request(["meanimg"], ["none"], ["tiny"], ["mnist"], budget="smoke", eval_arch="tiny")
    assert missing_prerequisites(req, registry, None) == []


def test_a_metric_column_key_selects_its_metric(registry, invoke, tmp_path):
    from reinv_bench.engine.prerequisites import metric_names

    assert metric_names(registry, ["attack_acc5", "attack_acc", "knn_dist", "nope"]) == [
        "attack_acc",
        "knn_dist",
        "nope",
    ]
    args = [
        "run",
        "-a",
        "meanimg",
        "-d",
        "none",
        "--arch",
        "tiny",
        "--eval-arch",
        "tiny",
        "--budget",
        "smoke",
    ]
    result = invoke(*args, "--metric", "attack_acc5", "--dry-run", "--workdir", tmp_path, registry=registry)
    assert result.exit_code == 0, result.output
    assert "unknown metric" in invoke(*args, "--metric", "attack_acc6", "--dry-run", registry=registry).output


def test_a_long_step_without_a_terminal_prints_a_heartbeat():
    import io
    import time

    from reinv_bench.engine.progress import LogReporter

    out = io.StringIO()
    reporter = LogReporter(out, heartbeat=0.05)
    reporter.start(1)
    reporter.step_start("prior gan on mnist")
    reporter.step_progress(50, 200)
    time.sleep(0.3)
    reporter.step_end("prior gan on mnist", "done", 0.3)
    reporter.close()
    lines = out.getvalue().splitlines()
    beats = [line for line in lines if "still running prior gan on mnist" in line]
    assert beats and "50/200 (25%)" in beats[0] and "left" in beats[0]
    assert not lines[-1].startswith("[reinv-bench] still running")  # none after the step ended
    assert LogReporter(io.StringIO(), heartbeat=0).heartbeat == 0  # REINV_BENCH_HEARTBEAT=0: none


def test_a_pretrained_defense_names_the_architectures_weights(fresh_machine, registry):
    req = Request(
        ["meanimg"], ["tl[weights=imagenet]"], ["vgg16"], ["mnist"], budget="smoke", eval_arch="tiny"
    )
    text = checklist(missing_prerequisites(req, registry, None, optional=False))
    assert "weights vgg16-imagenet" in text and "`reinv-bench weights add vgg16-imagenet FILE`" in text
    assert "neither a file" not in text


def test_reconstruction_grids_name_the_scenarios_classes(registry):
    from types import SimpleNamespace

    from reinv_bench.engine.loaders import private_loader
    from reinv_bench.views.pictures import _draw_row
    from reinv_bench.views.plots import _pyplot

    entry = SimpleNamespace(scenario="mnist", config={"scenario": {"data_root": None}})
    names = private_loader(registry).class_names(entry)
    assert names == [f"digit {c}" for c in range(10)]
    fig, axes = _pyplot().subplots(1, 2, squeeze=False)
    _draw_row(axes[0], names[3], [(None, ""), (None, "")], None)
    assert axes[0][0].get_ylabel() == "digit 3"
    missing = SimpleNamespace(scenario="celeba64", config={"scenario": {"data_root": None}})
    assert private_loader(registry).class_names(missing) is None  # no data root: the plain "class i"


def test_dry_run_on_a_present_tree_adds_the_data_checks_findings(
    clean_celeba, fresh_machine, registry, no_ganset
):
    req = Request(
        ["gmi"], ["none"], ["vgg16[weights=imagenet]"], ["celeba64"], data_root=str(clean_celeba[0])
    )
    missing = missing_prerequisites(req, registry, None, optional=True)
    text = checklist(missing)
    assert "missing before this run can start: 1 required" in text  # vgg16-imagenet; the data is there
    assert "optional data: celeba64: no official GAN-set list" in text
    assert f"`reinv-bench data check celeba64 --data-root {clean_celeba[0]}` checks it all" in text
