"""The skeleton the metrics in a pretrained network's features share (``fid``, ``facenet_dist``),
and the nearest-neighbour distance they and ``knn`` use.

A ``PretrainedFeatureMetric`` names its weights file (``weights_file()``, a registered
``WeightsFile`` looked up locally, never downloaded), builds the network once per file
(``network(path, sha256)``) and measures the reconstructions (``measure``). Without the file its
value is stored as null with the reason; the features of the private images are cached per
scenario split, class set and weights file (``private``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from reinv_bench.api import (
    EvalContext,
    Metric,
    NotComputed,
    PerItem,
    WeightsFile,
    WeightsUnavailable,
    locate,
    sha256_of,
)


class PretrainedFeatureMetric(Metric):
    key: ClassVar[str]  # the one key compute() returns
    cache_name: ClassVar[str]  # the name of its private-side cache

    def weights_file(self) -> WeightsFile:
        raise NotImplementedError

    def network(self, path: str, sha256: str) -> torch.nn.Module:
        """The network with the weights at ``path`` (subclasses cache it per file)."""
        raise NotImplementedError

    def measure(self, ctx: EvalContext, net: torch.nn.Module, sha256: str) -> Any:
        """The metric's value (a number, a ``PerItem`` or a ``NotComputed``)."""
        raise NotImplementedError

    def private(
        self,
        ctx: EvalContext,
        sha256: str,
        compute: Callable[[], dict[str, Any]],
        labels: Tensor | None = None,
    ) -> dict[str, Any]:
        """``compute()`` on the private images of the attacked classes (of ``labels``' classes when
        given: one chunk's), cached per split, class set and weights."""
        classes = ctx.attacked_classes() if labels is None else sorted(labels.unique().tolist())
        key = {"digest": ctx.data.digest, "classes": classes, "weights": sha256}
        return ctx.cache(self.cache_name, key, compute)

    def compute(self, ctx: EvalContext):
        try:
            path = locate(self.weights_file())
        except WeightsUnavailable as exc:
            return {self.key: NotComputed(str(exc))}
        sha = sha256_of(path)
        return {self.key: self.measure(ctx, self.network(str(path), sha), sha)}


def knn_distances(
    recon_feats: Tensor, recon_labels: Tensor, priv_feats: Tensor, priv_labels: Tensor
) -> Tensor:
    """Per reconstruction: the squared L2 distance to the nearest private feature of its class."""
    d = torch.cdist(recon_feats.double(), priv_feats.double()).pow(2)  # (N, M)
    same = recon_labels[:, None] == priv_labels[None, :]
    if not same.any(1).all():
        missing = sorted(set(recon_labels[~same.any(1)].tolist()))
        raise ValueError(f"no private image of class(es) {missing}")
    return d.masked_fill(~same, float("inf")).min(1).values


def per_reconstruction(dist: Tensor) -> PerItem:
    """The mean distance with each reconstruction's (6 significant digits are stored)."""
    return PerItem(dist.mean().item(), [float(f"{v:.6g}") for v in dist.tolist()])
