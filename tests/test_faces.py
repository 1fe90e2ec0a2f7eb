"""The face scenarios read small fake trees of real image files in the documented layouts: the
real loaders, their layout checks and a smoke run through the CLI."""

from __future__ import annotations

import os

import pytest
import torch
from click.testing import CliRunner

from reinv_bench.api import DataError
from reinv_bench.cli import cli
from reinv_bench.registry.lookup import load
from reinv_bench.testing import make_celeba, make_face_tree, make_facescrub, make_ffhq


@pytest.fixture(scope="module")
def face_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    return root, make_face_tree(root)


def test_celeba64_private_split_follows_the_seed_papers_code(face_root):
    from collections import Counter

    root, ids = face_root
    data = load().get("scenario", "celeba64").load(root)
    n_private = 300 * 3 + 700
    assert len(data.private_train) == int(0.9 * n_private) and len(data.private_test) == n_private - int(
        0.9 * n_private
    )
    assert len(data.public) == 12  # every image of the other identities
    # class c is the c-th most frequent identity, ties broken by first appearance in the file
    first = {}
    for n, i in enumerate(ids):
        first.setdefault(i, n)
    expected = sorted(Counter(ids), key=lambda i: (-Counter(ids)[i], first[i]))[:1000]
    # each private file carries its identity's class
    id_of = {f"{n:06d}.jpg": i for n, i in enumerate(ids, 1)}
    for split in (data.private_train, data.private_test):
        for k in range(0, len(split), 97):
            name = split.x.paths[split.x.index[k]].rsplit("/", 1)[1]
            assert expected[split.y[k].item()] == id_of[name]
    assert set(data.private_train.x.index).isdisjoint(data.private_test.x.index)
    assert load().get("scenario", "celeba64").target_classes() == list(range(300))
    assert data.digest == load().get("scenario", "celeba64").load(root).digest  # deterministic


def test_celeba64_images_are_the_centre_crop_resized_to_64(face_root):
    root, _ = face_root
    data = load().get("scenario", "celeba64").load(root)
    x = data.private_train.x[:4].to("cpu")
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    # the fake images have a second colour in the lower-left quarter: the 108 crop at (35, 55)
    # keeps the centre, so both colours appear, split at the middle row and column
    img = x[0]
    assert not torch.allclose(img[:, 10, 50], img[:, 50, 10])
    ffhq = load().get("scenario", "celeba64-ffhq").load(root)
    assert len(ffhq.public) == 6 and ffhq.public.x.to("cpu").shape == (6, 3, 64, 64)
    assert "6 FFHQ thumbnails (of 70,000)" in ffhq.source


def test_facescrub224_split_and_public_data(face_root):
    root, _ = face_root
    data = load().get("scenario", "facescrub224-ffhq").load(root)
    assert len(data.private_train) == int(0.9 * 1590) and len(data.private_test) == 1590 - int(0.9 * 1590)
    assert data.private_train.y.max() < 530
    assert data.private_train.x[:2].to("cpu").shape == (2, 3, 224, 224)
    assert data.public.x.to("cpu").shape == (3, 3, 224, 224)
    # PPA's order: actors first (classes 0..264), ImageFolder order within a group
    files = data.private_train.x.paths
    assert "/actors/faces/Person_000/0.jpg" in files[0] and "/actresses/" in files[-1]


@pytest.mark.parametrize(
    "scenario, breaks, message",
    [
        (
            "celeba64",
            lambda r: (r / "celeba" / "identity_CelebA.txt").unlink(),
            r"CelebA expected at .*celeba/ with identity_CelebA.txt and img_align_celeba/.*found 1 entry",
        ),
        (
            "celeba64",
            lambda r: (r / "celeba" / "img_align_celeba" / "000007.jpg").unlink(),
            r"lacks 1 of the 1612 images identity_CelebA.txt lists "
            r"\(found 1611 files; first missing: 000007.jpg\)",
        ),
        (
            "celeba64-ffhq",
            lambda r: __import__("shutil").rmtree(r / "ffhq"),
            r"FFHQ expected at .*ffhq/thumbnails128x128/ \(70,000 .png files.*found no such folder",
        ),
        (
            "facescrub224-ffhq",
            lambda r: __import__("shutil").rmtree(r / "facescrub" / "actresses" / "faces" / "Person_003"),
            r"has 529 identities; the protocol has 530",
        ),
    ],
)
def test_incomplete_trees_are_clear_errors(tmp_path, scenario, breaks, message):
    make_celeba(tmp_path)
    make_ffhq(tmp_path, "thumbnails128x128", 2, 128)
    make_ffhq(tmp_path, "images1024x1024", 1, 1024)
    make_facescrub(tmp_path, per_person=1)
    from reinv_datasets import celeba, facescrub

    celeba.celeba1000.cache_clear()
    facescrub.facescrub.cache_clear()
    breaks(tmp_path)
    with pytest.raises(DataError, match=message):
        load().get("scenario", scenario).load(tmp_path)


def test_missing_data_root_says_how_to_give_one(tmp_path):
    with pytest.raises(DataError, match="pass --data-root DIR"):
        load().get("scenario", "celeba64").load(None)
    result = CliRunner().invoke(cli, ["run", "--scenario", "celeba64", "--workdir", str(tmp_path), "--quiet"])
    assert result.exit_code != 0 and "pass --data-root DIR" in result.output


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
@pytest.mark.parametrize(
    "scenario, protocol, dist",
    [("celeba64", "64px", "knn_dist"), ("facescrub224-ffhq", "224px", "eval_dist")],
)
def test_smoke_run_on_the_fake_trees(face_root, tmp_path, monkeypatch, registry, scenario, protocol, dist):
    """The real loaders through the whole pipeline; the metrics whose weights are absent are
    stored as null with the reason and the leaderboard shows the gap."""
    from reinv_bench.cli import State

    root, _ = face_root
    monkeypatch.setenv("REINV_BENCH_WEIGHTS", str(tmp_path / "no-weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    state = State(())
    state._registry = registry
    # the protocols' evaluation models (IR-50 at 112 px, Inception-v3 at 299 px) take minutes on two cores
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "-a",
            "meanimg",
            "-d",
            "none",
            "--scenario",
            scenario,
            "--arch",
            "tiny",
            "--eval-arch",
            "tiny",
            "--budget",
            "smoke",
            "--data-root",
            str(root),
            "--workdir",
            str(tmp_path / "w"),
            "--quiet",
        ],
        obj=state,
    )
    assert result.exit_code == 0, result.output
    from reinv_bench.results.store import Store

    (row,) = Store(tmp_path / "w" / "results.db").rows()
    assert row["protocol"] == f"{protocol}, eval tiny" and row["status"] == "ok" and row["data_digest"]
    assert row["config"]["eval"]["arch"] == "tiny"
    assert set(row["metrics"]) == {"natural_acc", "attack_acc", "attack_acc5", dist, "fid", "facenet_dist"}
    assert row["metrics"]["fid"] is None and "fid-inception" in row["notes"]["fid"]
    assert (
        row["metrics"]["facenet_dist"] is None
        and "weights add facenet-vggface2" in row["notes"]["facenet_dist"]
    )
    assert row["metrics"][dist] > 0
    board = CliRunner().invoke(cli, ["leaderboard", "--workdir", str(tmp_path / "w"), "--format", "md"])
    assert "FID" in board.output and "δ_face" in board.output and f"[{protocol}, eval tiny]" in board.output
    assert "FID n/a: weights 'fid-inception'" in board.output


def test_paper_recipes_are_the_published_ones():
    reg = load()
    celeba, scrub = reg.get("scenario", "celeba64"), reg.get("scenario", "facescrub224-ffhq")
    vgg = celeba.recipe("target", "paper", "vgg16")
    assert (vgg.optimizer, vgg.lr, vgg.momentum, vgg.weight_decay, vgg.epochs, vgg.batch_size, vgg.gamma) == (
        "sgd",
        1e-2,
        0.9,
        1e-4,
        50,
        64,
        0.2,
    )
    assert [round(f * vgg.epochs) for f in vgg.milestones] == [20, 35] and vgg.augment == "flip"
    ir = celeba.recipe("target", "paper", "ir152")
    assert ir.epochs == 40 and [round(f * 40) for f in ir.milestones] == [10, 20, 30]
    ev = celeba.recipe("eval", "paper", "ir50_112")
    assert ev.epochs == 30 and [round(f * 30) for f in ev.milestones] == [15, 25]
    r18 = scrub.recipe("target", "paper", "resnet18")
    assert (r18.optimizer, r18.lr, r18.epochs, r18.batch_size, r18.augment) == ("adam", 1e-3, 100, 128, "ppa")
    assert [round(f * 100) for f in r18.milestones] == [75, 90]
    assert [round(f * 100) for f in scrub.recipe("eval", "paper", "inception_v3").milestones] == [80]
    assert celeba.recipe("target", "quick", "vgg16").epochs == 5
    assert scrub.recipe("target", "smoke", "resnet18").augment == ""


def test_bulk_decoding_by_processes_equals_threads_and_warms_the_cache(face_root, monkeypatch):
    import reinv_bench.contract.images as images

    root, _ = face_root
    x = load().get("scenario", "celeba64").load(root).private_test.x
    monkeypatch.setenv("REINV_BENCH_DECODE_PROCESS_MIN", "100000")
    x.cache.clear()
    by_threads = x.to("cpu")
    monkeypatch.setenv("REINV_BENCH_DECODE_PROCESS_MIN", "1")
    x.cache.clear()
    by_processes = x.to("cpu")
    assert not images._BROKEN and torch.equal(by_threads, by_processes)
    x.cache.clear()
    x[:50].warm()
    assert set(x.cache) == set(x.index[:50].tolist())


def _decode_in_a_worker(root: str) -> int:
    """A step in a local-executor worker: reads a face split, decoded by worker processes."""
    from pathlib import Path

    os.environ["REINV_BENCH_DECODE_PROCESS_MIN"] = "1"
    return len(load().get("scenario", "celeba64").load(Path(root)).private_test.x.to("cpu"))


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_a_worker_that_decoded_by_processes_exits(face_root):
    """A worker process (spawned, as the local executor's) whose step decoded images by the
    decode pool must still exit when its pool shuts down: the decode pool's processes are not
    daemonic, so a worker exiting without stopping them waited for them forever (the driver
    hung after the last step of a face grid with --gpus)."""
    import multiprocessing
    import threading
    from concurrent.futures import ProcessPoolExecutor

    root, _ = face_root
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    assert pool.submit(_decode_in_a_worker, str(root)).result(timeout=300) > 0
    procs = list(pool._processes.values())
    closer = threading.Thread(target=pool.shutdown, daemon=True)
    closer.start()
    closer.join(timeout=60)
    hung = closer.is_alive()
    for p in procs:  # never leave a hung worker behind
        if p.is_alive():
            p.kill()
    assert not hung, "the worker did not exit after its step decoded by processes"
