"""``fid``: Fréchet Inception Distance between reconstructions and the private training images
of the attacked classes, in pytorch-fid's InceptionV3 2048-d pool features (the network resizes
its input to 299 itself; images enter at the scenario's resolution). The private-side statistics
are cached per scenario split, class set and weights file.

Which reconstructions, by protocol:
- ``224px`` (PPA, NegLS, MIDRE): all of them (PPA ``metrics/fid_score.py::FID_Score`` over the
  attack samples, no success filter).
- every other protocol (``64px``: GMI/KEDMI/PLG-MI/LOMMA; also the digit protocols when named
  with ``--metric``): only the *successful* ones, those the evaluation model classifies as the
  class they were reconstructed for (LOMMA ``metrics/fid.py::gen_samples``/``eval_fid``: FID of
  the ``sucessful_imgs`` against the target identities' private images; PLG-MI
  ``reconstruct.py``: FID of ``success_imgs`` against the private-domain folder). The 64-px
  images are not upsampled before the Inception network (the 112-px upsampling is the
  evaluation model's). Fewer than 2 successes: stored as null with the reason.

Weights: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``, looked for locally (see
``reinv-bench weights``); never downloaded. The network is pytorch-fid's own ``InceptionV3``,
built through its real constructor with torch's URL loader pointed at the verified local file.
Without the file the value is stored as null with the reason. The Fréchet distance is pytorch-fid's
formula, computed through eigenvalues (see ``frechet_distance``).

Deliberate differences: images are mapped from the harness's [-1, 1] to the [0, 1] pytorch-fid
expects. PPA's own FID (``metrics/fid_score.py``) feeds its [-1, 1]-normalised tensors to
pytorch-fid's InceptionV3, which rescales them again as if they were [0, 1], so published PPA and
NegLS FIDs are not reproducible by a correct pipeline and are not comparable with these. LOMMA
uses StyleGAN2-ADA's Inception detector (``inception-2015-12-05.pt``, uint8 input) instead of
pytorch-fid's: the same TF Inception weights, but its numbers differ slightly.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from reinv_bench import hookimpl
from reinv_bench.api import Column, EvalContext, Inversion, NotComputed, WeightsFile, load_state, predict

from ._pretrained import PretrainedFeatureMetric

WEIGHTS = WeightsFile(  # the release's full SHA-256 (its file name carries the first 8 hex digits)
    "fid-inception",
    "pt_inception-2015-12-05-6726825d.pth",
    "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    "pytorch-fid's InceptionV3 (the TF FID Inception weights), for the fid metric",
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
)


@functools.lru_cache(maxsize=1)
def fid_inception(path: str, sha256: str) -> torch.nn.Module:
    """pytorch-fid's InceptionV3 (pool3, 2048-d) with the weights at ``path`` (``sha256`` keys the cache)."""
    from pytorch_fid import inception

    state = load_state(Path(path))
    with mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: state):
        net = inception.InceptionV3(
            [inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]],
            resize_input=True,
            normalize_input=True,
            use_fid_inception=True,
        )
    return net.eval().requires_grad_(False)


@torch.no_grad()
def pool_features(net: torch.nn.Module, x, device: torch.device, batch_size: int = 50) -> np.ndarray:
    """(N, 2048) float64 pool features of images in [-1, 1] (a tensor or ImageFiles)."""
    net.to(device)
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device) * 0.5 + 0.5  # pytorch-fid takes [0, 1]
        if xb.shape[1] == 1:
            xb = xb.expand(-1, 3, -1, -1)
        out.append(net(xb)[0].flatten(1).double().cpu())
    return torch.cat(out).numpy()


def statistics(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return feats.mean(0), np.cov(feats, rowvar=False)


def chunked_statistics(chunks: Iterable[np.ndarray]) -> tuple[int, np.ndarray | None, np.ndarray | None]:
    """(n, mean, covariance) of the rows of every chunk of features, one chunk held at a time:
    each chunk's ``statistics``, combined with the pairwise update of Chan, Golub & LeVeque (1979).
    One chunk gives exactly ``statistics``; several, the same up to rounding."""
    n, mu, cov = 0, None, None
    for feats in chunks:
        k = len(feats)
        if not k:
            continue
        mu_k = feats.mean(0)
        cov_k = np.cov(feats, rowvar=False) if k > 1 else np.zeros((feats.shape[1],) * 2)
        if not n:
            n, mu, cov = k, mu_k, cov_k
            continue
        total, delta = n + k, mu_k - mu
        m2 = cov * (n - 1) + cov_k * (k - 1) + np.outer(delta, delta) * (n * k / total)
        n, mu, cov = total, mu + delta * (k / total), m2 / (total - 1)
    return n, mu, cov


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(s1) + Tr(s2) - 2 Tr((s1 s2)^1/2): the formula of pytorch-fid's
    ``calculate_frechet_distance``, with the trace of the square root taken from the eigenvalues
    of the symmetric PSD matrix s1^1/2 s2 s1^1/2 (the same eigenvalues as s1 s2). pytorch-fid
    0.3.0 takes ``scipy.linalg.sqrtm(s1 @ s2, disp=False)`` instead: a TypeError under newer SciPy
    (``disp`` was removed; seen on the GPU machine), liable to "Imaginary component" on the
    rank-deficient covariances of fewer than 2,048 images (300 classes x 5 reconstructions), and
    ~10 s at 2048-d on two cores. The eigenvalue route gives the same number (a test checks it
    against the formula with scipy's square root) and never fails."""
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root @ s2 @ root
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(ev, 0, None)).sum())


def frechet(feats_a: np.ndarray, stats_b: tuple[np.ndarray, np.ndarray]) -> float:
    return frechet_distance(*statistics(feats_a), *stats_b)


ALL_RECONSTRUCTIONS = ("224px",)  # protocols whose FID takes every reconstruction (PPA)


def fid_images(ctx: EvalContext, chunk: Inversion) -> torch.Tensor:
    """The reconstructions of ``chunk`` that FID compares (see the module docstring)."""
    if ctx.scenario.protocol in ALL_RECONSTRUCTIONS:
        return chunk.images
    return chunk.images[predict(ctx.eval_model, chunk.images, ctx.device).argmax(1) == chunk.labels]


class FID(PretrainedFeatureMetric):
    name = "fid"
    version = 2  # 2: successful reconstructions only, except at 224 px
    protocols = ("64px", "224px")
    columns = (Column("fid", "FID", better="higher"),)
    key, cache_name = "fid", "fid-private"

    def weights_file(self) -> WeightsFile:
        return WEIGHTS

    def network(self, path: str, sha256: str) -> torch.nn.Module:
        return fid_inception(path, sha256)

    def measure(self, ctx: EvalContext, net: torch.nn.Module, sha256: str):
        what = (
            "reconstructions"
            if ctx.scenario.protocol in ALL_RECONSTRUCTIONS
            else "successful reconstructions"
        )
        chosen = (fid_images(ctx, chunk) for chunk in ctx.inversion.chunks())
        n, mu, sigma = chunked_statistics(pool_features(net, x, ctx.device) for x in chosen if len(x))
        if n < 2:
            return NotComputed(f"FID needs at least 2 {what}, got {n}")

        def private_stats():  # chunk by chunk too: the private images of each chunk's classes
            chunks = (ctx.attacked_private(chunk.labels).x for chunk in ctx.inversion.chunks())
            n, mu, sigma = chunked_statistics(pool_features(net, x, ctx.device) for x in chunks if len(x))
            if n < 2:
                return {"n": n}
            return {"mu": torch.from_numpy(mu), "sigma": torch.from_numpy(sigma), "n": n}

        stats = self.private(ctx, sha256, private_stats)
        if stats["n"] < 2:
            return NotComputed(f"only {stats['n']} private training image(s) of the attacked classes")
        return frechet_distance(mu, sigma, stats["mu"].numpy(), stats["sigma"].numpy())


@hookimpl
def register_metrics():
    return [FID()]


@hookimpl
def register_weights():
    return [WEIGHTS]
