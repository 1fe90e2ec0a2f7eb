"""Issue 19: ``facenet_dist`` resizes as PPA does (bilinear with antialiasing), and GMI states the
iteration counts of its own code and of KEDMI's and LOMMA's baselines."""

from __future__ import annotations

import torch


def ppa_resize(imgs):
    """LukasStruppek/Plug-and-Play-Attacks ``utils/stylegan.py::create_image`` (transcribed): the
    reconstructions reach FaceNet as ``F.resize(imgs, resize, antialias=True)`` with resize
    (160, 160) (``attack.py``: ``DistanceEvaluation(facenet, synthesis, 160, ...)``)."""
    import torchvision.transforms.functional as F

    return F.resize(imgs, (160, 160), antialias=True)


def test_facenet_dist_resizes_with_antialiasing_as_ppa():
    from reinv_metrics import facenet

    torch.manual_seed(0)
    x = torch.rand(3, 3, 224, 224) * 2 - 1
    torch.testing.assert_close(facenet.resize(x), ppa_resize(x))
    plain = torch.nn.functional.interpolate(x, size=(160, 160), mode="bilinear", align_corners=False)
    assert (facenet.resize(x) - plain).abs().max() > 0.05  # version 1's resize is not PPA's
    seen = []

    class Net(torch.nn.Module):
        def forward(self, xb):
            seen.append(xb)
            return xb.flatten(1)[:, :4]

    facenet.embed(Net(), x, torch.device("cpu"))
    torch.testing.assert_close(torch.cat(seen), ppa_resize(x))
    metric = facenet.FaceNetDistance()
    assert metric.version == 2 and metric.cache_name != "facenet-private"  # v1's cached embeddings unused


def test_gmi_states_both_iteration_counts_and_offers_2400():
    from reinv_attacks import gmi
    from reinv_bench.registry.components import resolve_attack
    from reinv_bench.registry.lookup import load

    doc = " ".join(gmi.__doc__.split())
    assert "1500 iterations (GMI's ``Celeba/attack.py::inversion``, ``iter_times=1500``)" in doc
    assert "iter_times=2400" in doc and '"iters_mi": 2400' in doc and '-a "gmi[iters=2400]"' in doc
    assert gmi.GMI().config.iters == 1500
    label, *_ = resolve_attack(load(), "gmi[iters=2400]", "paper")
    assert label == "gmi[iters=2400]"
