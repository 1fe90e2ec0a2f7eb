"""``facenet_dist``: PPA's delta_face. For each reconstruction, the squared L2 distance to the
nearest private training image of its class in the embedding of facenet-pytorch's
``InceptionResnetV1(pretrained='vggface2')`` (512-d, L2-normalised, inputs at 160 px in [-1, 1]);
the mean over reconstructions (PPA ``metrics/distance_metrics.py::compute_dist``). Lower means
reconstructions closer to real private faces. Private embeddings are cached per scenario split,
class set and weights file.

Images are resized to 160 px bilinearly *with antialiasing*, as PPA's (``utils/stylegan.py::
create_image``: ``F.resize(imgs, (160, 160), antialias=True)`` for the reconstructions,
``T.Resize((160, 160), antialias=True)`` for the private images); version 1 resized without it.
Deliberate difference: the reconstructions are resized from the 224 px they are stored at (PPA:
from the generator's 800-px crop, in one step), the private images from the scenario's tensors
(PPA: from the decoded files).

Weights: facenet-pytorch's ``20180402-114759-vggface2.pt``, looked for locally (see
``reinv-bench weights``; no hash is published for it: ``weights add`` records the SHA-256 of the
first file added and later uses must match it; it is reported ``unverified`` and loaded strictly);
never downloaded. Without the file the value is stored as null with the reason.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F

from reinv_bench import hookimpl
from reinv_bench.api import Column, EvalContext, WeightsFile, load_state

from ._pretrained import PretrainedFeatureMetric, knn_distances, per_reconstruction

WEIGHTS = WeightsFile(
    "facenet-vggface2",
    "20180402-114759-vggface2.pt",
    "",
    "facenet-pytorch InceptionResnetV1 trained on VGGFace2, "
    "for facenet_dist (and inception_resnet_v1's start)",
    "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
    torch_dir="checkpoints",
)
SIZE = 160


@functools.lru_cache(maxsize=1)
def facenet(path: str, sha256: str) -> torch.nn.Module:
    """InceptionResnetV1 (embedding mode) with the weights at ``path``, loaded strictly."""
    from facenet_pytorch import InceptionResnetV1

    net = InceptionResnetV1(pretrained=None, classify=False)
    state = {k: v for k, v in load_state(Path(path)).items() if not k.startswith("logits.")}
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)


@torch.no_grad()
def embed(net: torch.nn.Module, x, device: torch.device, batch_size: int = 64) -> torch.Tensor:
    net.to(device)
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device)
        if xb.shape[1] == 1:
            xb = xb.expand(-1, 3, -1, -1)
        out.append(net(resize(xb)).cpu())
    return torch.cat(out)


def resize(x: torch.Tensor) -> torch.Tensor:
    """To ``SIZE`` px, bilinear with antialiasing (torchvision's ``resize(..., antialias=True)`` on
    tensors, as PPA)."""
    return F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)


class FaceNetDistance(PretrainedFeatureMetric):
    name = "facenet_dist"
    definition = (
        "PPA's delta_face: mean over reconstructions of the squared L2 distance to the nearest private "
        "training image of the same class in facenet-pytorch InceptionResnetV1(pretrained='vggface2') "
        "embeddings (512-d, L2-normalised, images resized to 160 px, bilinear with antialiasing) (PPA "
        "metrics/distance_metrics.py::compute_dist). Null, with the reason, without the weights file."
    )
    protocols = ("64px", "224px")
    columns = (Column("facenet_dist", "δ_face", better="higher"),)
    version = 2  # 2: resized with antialiasing, as PPA (1: without)
    key, cache_name = "facenet_dist", "facenet-private-aa"  # private embeddings of version 2

    def weights_file(self) -> WeightsFile:
        return WEIGHTS

    def network(self, path: str, sha256: str) -> torch.nn.Module:
        return facenet(path, sha256)

    def measure(self, ctx: EvalContext, net: torch.nn.Module, sha256: str):
        def distances(chunk):  # against the private images of the chunk's classes only
            def private_embeddings():
                priv = ctx.attacked_private(chunk.labels)
                return {"emb": embed(net, priv.x, ctx.device), "labels": priv.y}

            ref = self.private(ctx, sha256, private_embeddings, chunk.labels)
            emb = embed(net, chunk.images, ctx.device)
            return knn_distances(emb, chunk.labels, ref["emb"], ref["labels"])

        return per_reconstruction(ctx.inversion.map(distances))


@hookimpl
def register_metrics():
    return [FaceNetDistance()]


@hookimpl
def register_weights():
    return [WEIGHTS]
