"""fid and facenet_dist run their real code paths (pytorch-fid's InceptionV3, facenet-pytorch's
InceptionResnetV1, the weights lookup and verification) with weights built here: random, of the
right shapes, installed the way a user installs the real files."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from click.testing import CliRunner

from reinv_bench.api import EvalContext, Inversion, NotComputed, ScenarioData, Split
from reinv_bench.cli import State, cli
from reinv_bench.engine.artifacts import file_sha256


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    d = tmp_path / "weights"
    monkeypatch.setenv("REINV_BENCH_WEIGHTS", str(d))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return d


@pytest.fixture(scope="module")
def fid_file(tmp_path_factory):
    """A random FID Inception state dict. Convolutions get Kaiming init: with the default init
    the pool features are ~1e-8 and every FID is ~0 (see METHODS.md)."""
    from pytorch_fid import inception

    torch.manual_seed(0)
    with (
        mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: None),
        mock.patch.object(torch.nn.Module, "load_state_dict", lambda self, *a, **k: None),
    ):
        net = inception.fid_inception_v3()
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight)
    path = tmp_path_factory.mktemp("fidw") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def facenet_file(tmp_path_factory):
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    state = InceptionResnetV1(pretrained=None, classify=False).state_dict()
    state["logits.weight"], state["logits.bias"] = (
        torch.randn(8631, 512),
        torch.zeros(8631),
    )  # as the real file
    path = tmp_path_factory.mktemp("fnw") / "20180402-114759-vggface2.pt"
    torch.save(state, path)
    return path


def _faces(n, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 64, 64, generator=g) * 0.6 - 0.3
    x[:, :, 16:48, 16:48] += 0.5  # a bright square: the sets share structure, not pixels
    return (x + shift).clamp(-1, 1)


def _ctx(recon, labels, priv_x, priv_y):
    data = ScenarioData(
        Split(priv_x, priv_y),
        Split(priv_x[:2], priv_y[:2]),
        Split(priv_x, None),
        Split(priv_x, priv_y),
        Split(priv_x, priv_y),
        "digest0",
        "test",
    )
    store = {}

    def cache(name, key, compute):  # what the runner does, in memory; counts computations
        k = (name, repr(key))
        if k not in store:
            store[k] = compute()
            store["computed"] = store.get("computed", 0) + 1
        return store[k]

    scenario = SimpleNamespace(protocol="224px")  # fid: every reconstruction, no evaluation model needed
    ctx = EvalContext(scenario, data, Inversion(recon, labels), None, None, torch.device("cpu"), cache)
    return ctx, store


def test_fid_is_null_with_the_reason_without_weights(weights_dir):
    from reinv_metrics.fid import FID

    ctx, _ = _ctx(
        _faces(4, 0), torch.zeros(4, dtype=torch.long), _faces(4, 1), torch.zeros(4, dtype=torch.long)
    )
    out = FID().compute(ctx)["fid"]
    assert (
        isinstance(out, NotComputed) and "absent" in out.reason and "weights add fid-inception" in out.reason
    )


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift(weights_dir, fid_file, monkeypatch):
    from reinv_bench.contract import weights
    from reinv_metrics import fid

    # a wrong file is refused by its hash, and the metric says so
    weights_dir.mkdir()
    (weights_dir / fid_file.name).write_bytes(fid_file.read_bytes())
    ctx, store = _ctx(
        _faces(12, 0), torch.zeros(12, dtype=torch.long), _faces(12, 0), torch.zeros(12, dtype=torch.long)
    )
    assert "bad (sha256" in fid.FID().compute(ctx)["fid"].reason
    # the test's file, registered with its own hash: the real loading path
    monkeypatch.setattr(fid, "WEIGHTS", dataclasses.replace(fid.WEIGHTS, sha256=file_sha256(fid_file)))
    assert weights.state_of(fid.WEIGHTS, weights_dir / fid_file.name) == "present"
    same = fid.FID().compute(ctx)["fid"]
    assert abs(same) < 1e-3
    # shifted sets, through the metric's own feature and distance functions
    net = fid.fid_inception(str(weights_dir / fid_file.name), fid.WEIGHTS.sha256)
    ref = fid.statistics(fid.pool_features(net, _faces(12, 0), torch.device("cpu")))
    values = [
        fid.frechet(fid.pool_features(net, _faces(12, 0, shift), torch.device("cpu")), ref)
        for shift in (0.2, 0.6)
    ]
    assert 1e-3 < values[0] < values[1], values
    # the private-side statistics are computed once per (split, classes, weights)
    monkeypatch.setattr(fid, "frechet_distance", lambda mu1, s1, mu2, s2: float(mu2.sum()))  # no square root
    assert fid.FID().compute(ctx)["fid"] == pytest.approx(float(ref[0].sum()), rel=1e-6)
    assert store["computed"] == 1


def test_facenet_dist_is_zero_on_private_images_and_positive_elsewhere(
    weights_dir, facenet_file, monkeypatch
):
    from reinv_metrics import facenet

    weights_dir.mkdir()
    (weights_dir / facenet_file.name).write_bytes(facenet_file.read_bytes())
    priv_x, priv_y = _faces(6, 3), torch.tensor([0, 0, 0, 1, 1, 1])
    ctx, _ = _ctx(priv_x[[0, 4]], torch.tensor([0, 1]), priv_x, priv_y)

    def dist(ctx):  # the mean, stored with one distance per reconstruction (api.PerItem)
        out = facenet.FaceNetDistance().compute(ctx)["facenet_dist"]
        assert len(out.items) == len(ctx.inversion.labels)
        return out.value

    assert dist(ctx) == pytest.approx(0.0, abs=1e-6)
    ctx, _ = _ctx(_faces(2, 9, 0.4), torch.tensor([0, 1]), priv_x, priv_y)
    d = dist(ctx)
    assert 0 < d <= 4.0  # squared distance between unit-norm embeddings
    # the same image labelled with the other class is measured against that class only
    ctx, _ = _ctx(priv_x[[0]], torch.tensor([1]), priv_x, priv_y)
    assert dist(ctx) > 0


def test_weights_are_found_where_torch_keeps_them(tmp_path, monkeypatch, fid_file):
    from reinv_bench.contract import weights
    from reinv_metrics import fid

    monkeypatch.setenv("REINV_BENCH_WEIGHTS", str(tmp_path / "rb"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    w = dataclasses.replace(fid.WEIGHTS, sha256=file_sha256(fid_file)[:8])  # a torch.hub-style prefix
    hub = tmp_path / "th" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / w.filename).write_bytes(fid_file.read_bytes())
    assert weights.locate(w) == hub / w.filename
    # a bad file in the reinv-bench folder is skipped (and reported), the good one is used
    (tmp_path / "rb").mkdir()
    (tmp_path / "rb" / w.filename).write_bytes(b"not weights")
    assert weights.locate(w) == hub / w.filename
    (hub / w.filename).unlink()
    with pytest.raises(
        weights.WeightsUnavailable,
        match=r"rb/pt_inception.*bad \(sha256.*th/hub/checkpoints/pt_inception.*absent",
    ):
        weights.locate(w)


def test_weights_command_lists_and_installs(tmp_path, monkeypatch, facenet_file):
    monkeypatch.setenv("REINV_BENCH_WEIGHTS", str(tmp_path / "rb"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    listing = CliRunner().invoke(cli, ["weights"], obj=State(()))
    assert listing.exit_code == 0
    for name in ("fid-inception", "facenet-vggface2", "resnet18-imagenet", "ir50-ms1m", "vgg16-imagenet"):
        assert name in listing.output
    assert "th/checkpoints/20180402-114759-vggface2.pt" in listing.output  # facenet-pytorch's folder
    assert "absent" in listing.output
    bad = CliRunner().invoke(cli, ["weights", "add", "resnet18-imagenet", str(facenet_file)], obj=State(()))
    assert bad.exit_code != 0 and "bad (sha256" in bad.output
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00junk")
    bad = CliRunner().invoke(cli, ["weights", "add", "facenet-vggface2", str(junk)], obj=State(()))
    assert bad.exit_code != 0 and "not a state dict" in bad.output
    ok = CliRunner().invoke(cli, ["weights", "add", "facenet-vggface2", str(facenet_file)], obj=State(()))
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "rb" / "20180402-114759-vggface2.pt").is_file()
    listing = CliRunner().invoke(cli, ["weights"], obj=State(()))
    line = next(x for x in listing.output.splitlines() if x.startswith("facenet-vggface2"))
    assert "unverified" in line
    typo = CliRunner().invoke(cli, ["weights", "add", "facenet-vgface2", str(facenet_file)], obj=State(()))
    assert typo.exit_code != 0 and "did you mean 'facenet-vggface2'" in typo.output


def test_frechet_distance_equals_pytorch_fids_formula():
    """pytorch-fid's formula with scipy's matrix square root, as its calculate_frechet_distance
    (which itself passes ``disp=False`` to ``sqrtm``: a TypeError under newer SciPy, seen on the
    GPU machine)."""
    import numpy as np
    from scipy import linalg

    from reinv_metrics.fid import frechet_distance, statistics

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(60, 8)), rng.normal(size=(50, 8)) @ rng.normal(size=(8, 8)) + 0.5
    (m1, s1), (m2, s2) = statistics(a), statistics(b)
    reference = (m1 - m2) @ (m1 - m2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2)).real
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(reference, rel=1e-8)
    assert frechet_distance(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-9)
    # rank-deficient (fewer samples than dimensions): still finite, ~0 for a set with itself
    c = rng.normal(size=(10, 64))
    mc, sc = statistics(c)
    assert abs(frechet_distance(mc, sc, mc, sc)) < 1e-6 * np.trace(sc)
