"""``knn_dist`` (64-px protocol) and ``eval_dist`` (224-px protocol, PPA's delta_eval): the same
feature distance under the two protocols' names.

(1/N) sum over reconstructions x_hat of min over private training images x of the same class of
||e(x_hat) - e(x)||_2^2, with e the evaluation model's penultimate features: the *squared* L2
distance to the nearest private image (LOMMA ``metrics/KNN_dist.py``, PLG-MI
``evaluation.py::calc_knn``; PPA ``metrics/distance_metrics.py::compute_dist`` with the
Inception-v3 evaluation model at 299 px, fc removed). Lower means reconstructions closer to real
private images.
"""

from __future__ import annotations

from torch import Tensor

from reinv_bench import hookimpl
from reinv_bench.api import Column, EvalContext, Metric, NotComputed, features

from ._pretrained import knn_distances, per_reconstruction


def knn_distance(recon_feats: Tensor, recon_labels: Tensor, priv_feats: Tensor, priv_labels: Tensor) -> float:
    return knn_distances(recon_feats, recon_labels, priv_feats, priv_labels).mean().item()


DEFINITIONS = {
    "knn_dist": "Mean over reconstructions x_hat of min over the private training images x "
    "of the same class of "
    "||e(x_hat) - e(x)||_2^2: the squared L2 distance (not L2) to the nearest private image, e = the "
    "evaluation model's penultimate features (LOMMA metrics/KNN_dist.py, PLG-MI "
    "evaluation.py::calc_knn). Every reconstruction counts.",
    "eval_dist": "PPA's delta_eval: mean over reconstructions of the squared L2 distance "
    "to the nearest private "
    "training image of the same class in the evaluation model's penultimate features (PPA "
    "metrics/distance_metrics.py::compute_dist; Inception-v3, fc removed, at 299 px). Every "
    "reconstruction counts.",
}

HEADERS = {"knn_dist": "KNN dist", "eval_dist": "δ_eval"}


class KNNDistance(Metric):
    def __init__(self, name: str, protocols: tuple[str, ...]) -> None:
        self.name, self.protocols = name, protocols
        self.definition = DEFINITIONS.get(name, "")
        self.columns = (Column(name, HEADERS.get(name, name), better="higher"),)

    def compute(self, ctx: EvalContext):
        if not len(ctx.attacked_private()):
            return {self.name: NotComputed("no private training image of the attacked classes")}

        def distances(chunk):  # against the private images of the chunk's classes only
            priv = ctx.attacked_private(chunk.labels)
            pf = features(ctx.eval_model, priv.x, ctx.device)
            rf = features(ctx.eval_model, chunk.images, ctx.device)
            return knn_distances(rf, chunk.labels, pf, priv.y)

        return {self.name: per_reconstruction(ctx.inversion.map(distances))}


@hookimpl
def register_metrics():
    return [KNNDistance("knn_dist", ("digits32", "64px")), KNNDistance("eval_dist", ("224px",))]
