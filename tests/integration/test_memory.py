"""Bounded memory at paper scale (issue 22): artifacts streamed to and from their files, chunked
inversions merged as a manifest and evaluated chunk by chunk, FID statistics combined chunk by
chunk, and ``--class-chunk auto`` sized by each attack's memory per class. The peak-memory
figures are measured by ``benchmarks/memory_classes.py``, not here."""

from __future__ import annotations

import hashlib
import io
import pathlib

import numpy as np
import pytest
import torch

from reinv_bench.api import EvalContext, Inversion, Reconstructions
from reinv_bench.engine.artifacts import ArtifactError, Artifacts
from reinv_bench.engine.chunks import AUTO_CHUNK_BYTES, AUTO_CHUNK_CLASSES, _chunk
from reinv_bench.engine.plan import Request, expand
from reinv_bench.engine.runner import Runner
from reinv_bench.engine.steps import reconstructions
from reinv_bench.registry.components import build_attack
from reinv_bench.results.store import Store

CPU = torch.device("cpu")


# ---- artifacts: no whole-file byte copies ------------------------------------------------------


def test_artifacts_stream_the_same_bytes_and_digests_without_byte_copies(tmp_path, monkeypatch):
    def no_whole_file(*a, **k):
        raise AssertionError("a whole payload read into memory")

    monkeypatch.setattr(pathlib.Path, "read_bytes", no_whole_file)
    art = Artifacts(tmp_path)
    obj = {"images": torch.randn(6, 3, 8, 8), "labels": torch.arange(6), "info": {"loss": 0.5}}
    rec = art.save("ab" * 10, obj)
    buf = io.BytesIO()
    torch.save({**obj, "key": "ab" * 10}, buf)  # what save wrote before: the same bytes, the same digest
    assert rec["sha256"] == hashlib.sha256(buf.getvalue()).hexdigest()
    fresh = Artifacts(tmp_path)  # nothing verified yet in this cache: hashed from the file
    assert fresh.digest("ab" * 10) == rec["sha256"]
    back = fresh.load("ab" * 10)
    assert torch.equal(back["images"], obj["images"]) and back["info"] == {"loss": 0.5}
    monkeypatch.undo()
    path = fresh.path("ab" * 10)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="SHA-256"):
        Artifacts(tmp_path).load("ab" * 10)


# ---- reconstructions: a manifest, read chunk by chunk -------------------------------------------


def _run(registry, tmp_path, chunk, metrics=("attack_acc", "knn_dist")):
    req = Request(["meanimg"], ["none"], budget="smoke", metrics=list(metrics), class_chunk=chunk)
    plan = expand(req, registry)
    runner = Runner(registry, tmp_path, CPU)
    summary = runner.run(plan, Store(tmp_path / f"{chunk}.db"))
    assert not summary.failed
    return plan, runner, summary


def test_chunked_inversion_is_a_manifest_evaluated_chunk_by_chunk(registry, tmp_path):
    """The merge step stores the chunks' keys, digests and labels, no image; evaluation reads the
    chunks one at a time and gives the unchunked values (meanimg is per-class independent)."""
    plan, runner, whole = _run(registry, tmp_path, 0)
    cplan, _, chunked = _run(registry, tmp_path, 4)
    merge = runner.artifacts.load(cplan.cells[0].invert_key)
    assert "images" not in merge and len(merge["chunks"]) == 3  # 10 digit classes in chunks of 4
    for part in merge["chunks"]:
        assert part["sha256"] == runner.artifacts.digest(part["key"])
    inv = reconstructions(runner.artifacts, cplan.cells[0].invert_key)
    sizes = [len(c.labels) for c in inv.chunks()]
    assert sizes == [4, 4, 2] and torch.equal(inv.labels, merge["labels"])
    one = reconstructions(runner.artifacts, plan.cells[0].invert_key)
    assert [len(c.labels) for c in one.chunks()] == [10] and torch.equal(inv.images, one.images)
    a, b = whole.rows[0], chunked.rows[0]
    assert a["metrics"]["attack_acc"] == b["metrics"]["attack_acc"]
    assert a["metrics"]["knn_dist"] == pytest.approx(b["metrics"]["knn_dist"], rel=1e-6)
    assert a["outcomes"]["per_reconstruction"]["knn_dist"] == pytest.approx(
        b["outcomes"]["per_reconstruction"]["knn_dist"], rel=1e-5
    )
    assert a["outcomes"]["target_conf"] == pytest.approx(b["outcomes"]["target_conf"], abs=2e-6)
    # a chunk rebuilt since the merge (other bytes): the evaluation refuses it in one line
    key = merge["chunks"][1]["key"]
    runner.artifacts.save(key, {**runner.artifacts.load(key), "info": {"other": 1}})
    chunks = reconstructions(runner.artifacts, cplan.cells[0].invert_key).chunks()
    next(chunks)
    with pytest.raises(ArtifactError, match="rebuilt since; rerun"):
        next(chunks)


def test_reconstructions_of_an_inversion_share_its_tensors():
    inv = Inversion(torch.zeros(3, 1, 2, 2), torch.tensor([0, 1, 1]), {"q": 1})
    rec = Reconstructions.of(inv)
    assert rec.images is inv.images and rec.labels is inv.labels and len(rec) == 3
    assert torch.equal(rec.map(lambda c: c.labels * 2), torch.tensor([0, 2, 2]))
    ctx = EvalContext(None, None, inv, None, None, CPU)  # an Inversion given: wrapped
    assert isinstance(ctx.inversion, Reconstructions) and ctx.inversion.labels is inv.labels
    parts = [
        Inversion(torch.ones(2, 1, 2, 2), torch.tensor([0, 0])),
        Inversion(torch.zeros(1, 1, 2, 2), torch.tensor([1])),
    ]
    lazy = Reconstructions(torch.tensor([0, 0, 1]), lambda: iter(parts))
    assert lazy.images.shape == (3, 1, 2, 2) and lazy.images[2].sum() == 0


# ---- FID statistics, chunk by chunk --------------------------------------------------------------


def test_fid_statistics_combined_chunk_by_chunk():
    from reinv_metrics.fid import chunked_statistics, statistics

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(23, 5)) * 3 + 7
    n, mu, cov = chunked_statistics([feats])
    ref_mu, ref_cov = statistics(feats)
    assert n == 23 and np.array_equal(mu, ref_mu) and np.array_equal(cov, ref_cov)  # one chunk: exactly
    parts = [feats[:10], feats[10:10], feats[10:11], feats[11:]]  # an empty and a one-row chunk
    n, mu, cov = chunked_statistics(parts)
    assert n == 23 and np.allclose(mu, ref_mu, rtol=1e-12) and np.allclose(cov, ref_cov, rtol=1e-10)
    assert chunked_statistics([]) == (0, None, None)


# ---- --class-chunk auto ---------------------------------------------------------------------------


def test_auto_chunks_every_attack_by_its_memory_per_class(registry):
    from reinv_attacks.ifgmi import IFGMI
    from reinv_attacks.ppa import PPA

    shape = (3, 224, 224)
    # PPA's paper configuration: 200 candidates' full w (18 x 512 float32), 2000 search
    # confidences, 50 final 224-px images twice (the per-class list and its concatenation)
    per_class = 200 * 18 * 512 * 4 + 2000 * 4 + 2 * 50 * 3 * 224 * 224 * 4
    assert PPA().memory_per_class(shape) == per_class == 67_592_000
    assert IFGMI().memory_per_class(shape) == 50 * 18 * 512 * 4 + 2000 * 4 + 2 * 50 * 3 * 224 * 224 * 4
    assert _chunk("auto", PPA(), shape) == AUTO_CHUNK_BYTES // per_class == 31
    assert _chunk("auto", PPA({"config": "midre"}), shape) == AUTO_CHUNK_BYTES // PPA(
        {"config": "midre"}
    ).memory_per_class(shape)
    assert _chunk("auto", build_attack(registry, {"name": "gmi", "config": {"batch_ids": 7}}), shape) == 7
    lomma = build_attack(
        registry, {"name": "lomma", "config": {}, "base": {"name": "gmi", "config": {"batch_ids": 9}}}
    )
    assert _chunk("auto", lomma, shape) == 9  # the wrapped attack's identity batch
    assert _chunk("auto", registry.get("attack", "meanimg")(), shape) == AUTO_CHUNK_CLASSES  # no estimate
    assert _chunk(12, PPA(), shape) == 12 and _chunk(0, PPA(), shape) == 0
