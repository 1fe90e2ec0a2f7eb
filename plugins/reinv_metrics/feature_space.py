"""The seed paper's feature-space analysis, as numbers: where reconstructions sit in the *target's*
penultimate feature space relative to the private data.

MIDRE (Random Erasing vs. Model Inversion, TMLR 2025, §5 and its feature-space figure) explains the
defense by the target's features: under RE, the reconstructions' features lie near the features of
*erased* private images and far from those of the real private images, while the private images
stay well separated from the other classes. Its figure is a 2-D projection; these metrics give the
distances behind it (``reinv-bench plot --features`` draws the projection).

With f the target's penultimate features, for each attacked class c: P_c the private training
images of c, mu_c = mean f(P_c), and s_c = mean ||f(p) - mu_c||_2 over p in P_c (the class's own
spread; distances are divided by it so classes and architectures compare):

- ``feat_nn_priv``: per reconstruction x of class c, min over p in P_c of ||f(x) - f(p)||_2 / s_c.
- ``feat_centroid_priv``: per reconstruction, ||f(x) - mu_c||_2 / s_c.
- ``feat_nn_defended`` / ``feat_centroid_defended``: the same against the private images as the
  defense's training transform shows them (T(P_c): Random Erasing's erased images for ``re``,
  drawn once with a fixed seed; the transform as trained: with ``re``'s default p = 1.0 every image
  is erased, with ``re[p=0.5]`` about half), centroid and spread of T(P_c). A defense without a
  training transform has none: null, with the reason.
- ``feat_separation``: per private image p of class c, (min over c' != c of ||f(p) - mu_c'||_2 -
  ||f(p) - mu_c||_2) / s_c, the margin to the nearest other class centroid, over every class of the
  private training set (not only the attacked ones).

Deliberate difference: the paper shows the projection only; the normalised distances are the
harness's reading of it (Euclidean, as the KNN distance of the MI literature, not squared).
"""

from __future__ import annotations

import torch
from torch import Tensor

from reinv_bench import hookimpl
from reinv_bench.api import Column, EvalContext, Metric, NotComputed, PerItem, features

TRANSFORM_SEED = 0


def class_geometry(feats: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(classes, centroids, spreads): each class's mean feature and mean distance to it."""
    classes = labels.unique()
    cents = torch.stack([feats[labels == c].mean(0) for c in classes])
    spread = torch.stack([(feats[labels == c] - m).norm(dim=1).mean() for c, m in zip(classes, cents)])
    return classes, cents, spread.clamp_min(1e-12)


def distances_to_class(
    query: Tensor, query_labels: Tensor, ref: Tensor, ref_labels: Tensor
) -> tuple[Tensor, Tensor]:
    """Per query of class c: (nearest, centroid) distance to ``ref``'s class c, over c's spread."""
    classes, cents, spread = class_geometry(ref, ref_labels)
    row = {int(c): i for i, c in enumerate(classes.tolist())}
    nearest, centroid = torch.empty(len(query)), torch.empty(len(query))
    for c in query_labels.unique().tolist():
        sel, i = query_labels == c, row[int(c)]
        q, r = query[sel], ref[ref_labels == c]
        nearest[sel] = torch.cdist(q, r).min(1).values / spread[i]
        centroid[sel] = (q - cents[i]).norm(dim=1) / spread[i]
    return nearest, centroid


def separation(feats: Tensor, labels: Tensor) -> Tensor:
    """Per image: (distance to the nearest other class centroid - to its own) / its class's spread."""
    classes, cents, spread = class_geometry(feats, labels)
    idx = torch.searchsorted(classes, labels)
    d = torch.cdist(feats, cents)
    own = d.gather(1, idx[:, None])[:, 0]
    other = d.scatter(1, idx[:, None], float("inf")).min(1).values
    return (other - own) / spread[idx]


def _items(t: Tensor) -> PerItem:
    return PerItem(t.mean().item(), [float(f"{v:.6g}") for v in t.tolist()])


class FeatureSpace(Metric):
    __doc__ = __doc__
    name = "feature_space"
    protocols = ("on request",)  # no scenario's protocol: only with --metric feature_space
    columns = (
        Column("feat_nn_priv", "feat NN priv", better="higher"),
        Column("feat_centroid_priv", "feat centroid priv", better="higher"),
        Column("feat_nn_defended", "feat NN defended", better=None),
        Column("feat_centroid_defended", "feat centroid defended", better=None),
        Column("feat_separation", "feat separation", better="higher"),
    )

    def compute(self, ctx: EvalContext):
        priv = ctx.data.private_train
        attacked = torch.isin(priv.y, ctx.inversion.labels.unique())
        if not attacked.any():
            return {
                c.key: NotComputed("no private training image of the attacked classes") for c in self.columns
            }
        pf = features(ctx.target, priv.x, ctx.device)
        rf = ctx.inversion.map(lambda chunk: features(ctx.target, chunk.images, ctx.device))
        labels = ctx.inversion.labels
        nearest, centroid = distances_to_class(rf, labels, pf[attacked], priv.y[attacked])
        out = {
            "feat_nn_priv": _items(nearest),
            "feat_centroid_priv": _items(centroid),
            "feat_separation": PerItem(
                (sep := separation(pf, priv.y)).mean().item(),
                [float(f"{v:.6g}") for v in sep.tolist()],
                priv.y.tolist(),
            ),
        }
        if ctx.defense is None or not ctx.defense.transforms_images():
            why = f"defense {getattr(ctx.defense, 'name', '') or 'none'} has no training transform"
            out["feat_nn_defended"] = out["feat_centroid_defended"] = NotComputed(why)
            return out
        x = priv.x[attacked]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TRANSFORM_SEED)
            tx = torch.cat([ctx.defense.train_transform(x[i : i + 512]) for i in range(0, len(x), 512)])
        tf = features(ctx.target, tx, ctx.device)
        nearest, centroid = distances_to_class(rf, labels, tf, priv.y[attacked])
        out["feat_nn_defended"], out["feat_centroid_defended"] = _items(nearest), _items(centroid)
        return out


@hookimpl
def register_metrics():
    return [FeatureSpace()]
