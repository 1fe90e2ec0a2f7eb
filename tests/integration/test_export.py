"""Issue 19, releasing reconstructions: ``reinv-bench export DIR`` writes a smoke run (conftest's
meanimg attack on the tiny architecture) in the MI-Reconstruction-Collection layout, and the
official MI-Eval-MLLM code (transcribed below) reads it back."""

from __future__ import annotations

import csv
import json
import os

import pytest
from conftest import cli_invoke

from reinv_bench.results.store import Store


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    wd = tmp_path_factory.mktemp("export")
    args = ["-p", "conftest", "run", "-a", "meanimg", "--arch", "tiny", "-d", "none", "-d", "re[p=0.8]"]
    args += ["--budget", "smoke", "--metric", "natural_acc", "--metric", "attack_acc", "--quiet"]
    cli_invoke(*args, "--workdir", wd, plugins=("conftest",), ok=True)
    from reinv_bench.results.judging import store_verdicts

    store = Store(wd / "results.db")
    (row,) = [r for r in store.rows() if r.defense == "none"]
    answers = [i % 3 == 0 if i % 5 else None for i in range(len(row.outcomes))]  # some unanswered
    store_verdicts(store, row.cell_id, "human", answers, "test answers")
    out = wd / "release"
    result = cli_invoke("-p", "conftest", "export", out, "--workdir", wd, plugins=("conftest",), ok=True)
    return wd, out, answers, result.output


# MI-Eval-MLLM @89010bc, evaluation.ipynb ("Step 1") and utility.py::create_concatenated_images_with_labels:
# the folders the official code reads (transcribed).
def official_folders(setup_folder: str) -> tuple[str, str]:
    mi_folder = os.path.join(setup_folder, "all-images")
    parts = mi_folder.split(os.sep)
    private_image_folder = os.path.join(os.path.join(parts[0], parts[1]), "private-data")
    return mi_folder, private_image_folder


# utility.py::compute_metrics (transcribed; pandas as the official)
def official_merge(ground_truth_path, prediction_path):
    import pandas as pd

    ground_truth = pd.read_csv(ground_truth_path)
    predictions = pd.read_csv(prediction_path)
    ground_truth.columns = ["filename", "label"]
    predictions.columns = ["filename", "prediction"]
    ground_truth["extracted_filename"] = ground_truth["filename"].str.extract(r"(ID=\d+_T=\d+)")
    predictions["extracted_filename"] = predictions["filename"].str.extract(r"(ID=\d+_T=\d+)")
    merged = pd.merge(ground_truth, predictions, on="extracted_filename", how="inner")
    merged["label"] = (merged["label"] == "yes").astype(int)
    merged["prediction"] = (merged["prediction"] == "yes").astype(int)
    return merged


def test_layout_is_the_collections_and_the_official_code_reads_it(exported, monkeypatch):
    wd, out, answers, output = exported
    assert "wrote 2 cell(s)" in output
    manifest = json.loads((out / "manifest.json").read_text())
    by_defense = {c["defense"]: c for c in manifest["cells"]}
    assert set(by_defense) == {"none", "re[p=0.8]"}
    none = by_defense["none"]
    assert none["folder"] == "mnist/meanimg/mnist/tiny-none-smoke-seed0"
    monkeypatch.chdir(out.parent)  # the official code splits a relative path: <collection>/<dataset>/...
    mi, private = official_folders(os.path.join(out.name, none["folder"]))
    assert private == os.path.join(out.name, "mnist", "private-data")
    row = Store(wd / "results.db").get(none["cell_id"])
    classes = sorted(set(row.outcomes.classes))
    assert sorted(os.listdir(mi), key=int) == [str(c) for c in classes]
    assert set(os.listdir(mi)) <= set(os.listdir(private))  # every class folder has its private images
    cell = json.loads((out / none["folder"] / "cell.json").read_text())
    assert len(cell["files"]) == len(row.outcomes)
    for name, c in zip(cell["files"], row.outcomes.classes):
        assert (
            name.startswith(f"ID={c}_T=") and (out / none["folder"] / "all-images" / str(c) / name).is_file()
        )
    # every private training image of an attacked class, as a PNG of the scenario's shape
    from PIL import Image

    n_private = sum(len(os.listdir(os.path.join(private, c))) for c in os.listdir(private))
    assert manifest["private_images"]["mnist"] == n_private > 0
    assert Image.open(out / none["folder"] / "all-images" / str(classes[0]) / cell["files"][0]).size == (
        32,
        32,
    )


def test_verdicts_are_the_stored_ones(exported):
    wd, out, answers, _ = exported
    manifest = json.loads((out / "manifest.json").read_text())
    none = next(c for c in manifest["cells"] if c["defense"] == "none")
    setup = out / none["folder"]
    row = Store(wd / "results.db").get(none["cell_id"])
    files = json.loads((setup / "cell.json").read_text())["files"]
    e = row.outcomes.per_reconstruction["attack_acc"]
    with (setup / "prediction.csv").open() as fh:
        pred = list(csv.DictReader(fh))
    assert [p["filename"] for p in pred] == files
    assert [p["prediction"] for p in pred] == ["yes" if v == 1.0 else "no" for v in e]
    assert none["verdicts"] == {"prediction.csv": len(files), "human_results_human.csv": 8}
    merged = official_merge(setup / "human_results_human.csv", setup / "prediction.csv")
    want = {f: (a, v) for f, a, v in zip(files, answers, e) if a is not None}  # unanswered: left out
    assert len(merged) == len(want)
    for _, m in merged.iterrows():
        a, v = want[m["filename_x"]]
        assert (m["label"], m["prediction"]) == (int(a), int(v))
    re_cell = next(c for c in manifest["cells"] if c["defense"] != "none")
    assert re_cell["verdicts"] == {"prediction.csv": len(files)}  # no judge answered that cell


def test_filters_and_bad_input(exported, tmp_path):
    wd, *_ = exported
    only = tmp_path / "only"
    cli_invoke(
        "-p", "conftest", "export", only, "-d", "re[p=.8]", "--workdir", wd, plugins=("conftest",), ok=True
    )
    assert [c["defense"] for c in json.loads((only / "manifest.json").read_text())["cells"]] == ["re[p=0.8]"]
    r = cli_invoke(
        "-p", "conftest", "export", tmp_path / "x", "-a", "gmi", "--workdir", wd, plugins=("conftest",)
    )
    assert r.exit_code != 0 and "no successful results match the filters" in r.output
    r = cli_invoke("export", tmp_path / "y", "--workdir", tmp_path / "nowhere")
    assert r.exit_code != 0 and "run `reinv-bench run` first" in r.output


def test_every_row_records_what_it_attacked(exported):
    """The runner records identities attacked, samples per class and the attack's selection with each
    row (``config["attacked"]``, read by ``leaderboard --reported``)."""
    from collections import Counter

    from reinv_bench.results.reported import class_ranges

    wd, *_ = exported
    for row in Store(wd / "results.db").rows():
        counts = Counter(row.outcomes.classes)
        assert row.config["attacked"] == {
            "classes": len(counts),
            "class_ids": class_ranges(counts),  # which identities (issue 30 item 4)
            "per_class": next(iter(counts.values())),
            "reconstructions": len(row.outcomes),
            "selection": "none",  # meanimg keeps all it makes
        }
