"""Issue 30 items 11 and 22: ``reinv-bench export`` treats a results database as untrusted input
(a bundle brings someone else's): labels such as ``..`` never leave DIR, an artifact key is never
a path; a non-empty DIR is refused without ``--force``, and ``--force`` replaces the cells
exported again (no ``-<cell id>`` copies, each cell listed once); an inversion held by several
cells is written once."""

from __future__ import annotations

import pytest
import torch
from conftest import cli_invoke

from reinv_bench.contract.data import Split
from reinv_bench.engine.artifacts import Artifacts
from reinv_bench.engine.loaders import reconstruction_loader
from reinv_bench.results.outcomes import Outcomes
from reinv_bench.results.store import COLUMNS, Row, Store
from reinv_bench.views.export import ExportError, export, safe

CLASSES = [0, 0, 1, 1]


def row(cell, key, **labels) -> Row:
    r = dict.fromkeys(COLUMNS)
    r.update(
        cell_id=cell,
        scenario="mnist",
        protocol="digits32",
        arch="tiny",
        defense="none",
        attack="meanimg",
        threat_model="white-box",
        seed=0,
        budget="smoke",
        status="ok",
        config={"scenario": {"name": "mnist", "data_root": None}},
        notes={},
        metrics={"attack_acc": 0.5},
        outcomes={
            "class": CLASSES,
            "target_conf": [0.5] * 4,
            "per_reconstruction": {"attack_acc": [1.0, 0.0, 1.0, 0.0]},
            "per_item": {},
        },
        artifacts={"invert": key},
    )
    r.update(labels)
    r["outcomes"] = Outcomes.from_json(r["outcomes"])
    return Row(**r)


@pytest.fixture
def cache(tmp_path):
    artifacts = Artifacts(tmp_path / "work")
    g = torch.Generator().manual_seed(0)
    keys = []
    for n in range(3):
        key = f"k{n}" + "ab" * 9
        artifacts.save(
            key,
            {
                "images": torch.rand(4, 1, 8, 8, generator=g) * 2 - 1,
                "labels": torch.tensor(CLASSES),
                "info": {},
            },
        )
        keys.append(key)
    return artifacts, keys


def private(_row):
    return Split(torch.zeros(6, 1, 8, 8), torch.tensor([0, 0, 1, 1, 2, 2]))


def files_under(path):
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


def test_stored_labels_never_leave_dir(tmp_path, cache):
    artifacts, keys = cache
    out = tmp_path / "a" / "b" / "c" / "release"
    hostile = [
        row("c1", keys[0], scenario="..", attack="..", defense="..", arch=".."),
        row("c2", keys[1], scenario="../../..", attack="./..", defense="/etc", arch="..\\.."),
        row("../../c3", keys[2], scenario="...", attack="a/../../b", budget="..", seed="../x"),
        row("c4", "../../../../etc/passwd", scenario="x"),  # an artifact key that is a path: left out
    ]
    before = files_under(tmp_path)
    manifest, notes = export(hostile, reconstruction_loader(artifacts), private, out, "attack_acc")
    written = set(files_under(tmp_path)) - set(before)
    assert written and all(w.startswith("a/b/c/release") or w in ("a", "a/b", "a/b/c") for w in written)
    for c in manifest["cells"]:
        assert ".." not in c["folder"].split("/") and (out / c["folder"]).resolve().is_relative_to(
            out.resolve()
        )
    assert len(manifest["cells"]) == 3 and len(notes) == 1 and "left out" in notes[0]
    assert {safe(x) for x in ("..", ".", "...", "")} == {"_"} and safe("../..") == "_"
    assert len(safe("a" * 300)) <= 100 and safe("a" * 300) != safe("a" * 299)


def test_a_non_empty_dir_is_refused_and_force_replaces_the_same_cells(tmp_path, cache):
    artifacts, keys = cache
    out = tmp_path / "release"
    rows = [row("c1", keys[0]), row("c2", keys[1], defense="re")]
    first, _ = export(rows, reconstruction_loader(artifacts), private, out, "attack_acc")
    listing = files_under(out)
    with pytest.raises(ExportError, match="is not empty: give an empty DIR, or --force"):
        export(rows, reconstruction_loader(artifacts), private, out, "attack_acc")
    again, _ = export(rows[:1], reconstruction_loader(artifacts), private, out, "attack_acc", force=True)
    assert files_under(out) == listing  # the same folders, no "-<cell id>" copies
    assert sorted(c["cell_id"] for c in again["cells"]) == ["c1", "c2"]  # each cell once
    assert {c["cell_id"]: c["folder"] for c in again["cells"]} == {
        c["cell_id"]: c["folder"] for c in first["cells"]
    }
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="holds no export of reinv-bench"):
        export(rows, reconstruction_loader(artifacts), private, other, "attack_acc", force=True)
    assert files_under(other) == ["notes.txt"]


def test_an_inversion_held_by_several_cells_is_written_once(tmp_path, cache):
    artifacts, keys = cache
    out = tmp_path / "release"
    a = row("cell-a", keys[0])
    b = row("cell-b", keys[0], metrics={"attack_acc": 0.5, "fid": 1.0})  # another metric set
    b.outcomes.per_reconstruction["judge[human]"] = [1.0, None, 0.0, 1.0]
    manifest, _ = export([a, b], reconstruction_loader(artifacts), private, out, "attack_acc")
    (folder,) = {c["folder"] for c in manifest["cells"]}
    setup = out / folder
    assert len(list((setup / "all-images").rglob("*.png"))) == 4  # once
    assert (setup / "cell.json").is_file() and (setup / "cell-cell-b.json").is_file()
    assert sorted(p.name for p in setup.glob("*.csv")) == ["human_results_human.csv", "prediction.csv"]
    assert [c["verdicts"] for c in manifest["cells"]] == [
        {"prediction.csv": 4},
        {"prediction.csv": 4, "human_results_human.csv": 3},
    ]


def test_the_cli_refuses_a_non_empty_dir_in_one_line(tmp_path):
    wd = tmp_path / "work"
    Store(wd / "results.db").put(row("c1", "k0" + "ab" * 9))
    out = tmp_path / "release"
    out.mkdir()
    (out / "x").write_text("")
    r = cli_invoke("export", out, "--workdir", wd)
    assert r.exit_code != 0 and "is not empty" in r.output and len(r.output.strip().splitlines()) == 1
