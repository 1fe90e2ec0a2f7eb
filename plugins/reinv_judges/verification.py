"""``verification``: an identity-verification judge that never saw the private training set.

Each reconstruction is verified against its attacked class as a 1:1 verification against an
enrolled template: the cosine similarity of its L2-normalised embedding to the class's template
(the normalised mean of the L2-normalised embeddings of the class's private training images, the
template of the IJB-B/C protocols, Whitelam et al. CVPRW 2017, Maze et al. ICB 2018) is compared
with a threshold; above it: yes. Embeddings come from a network independent of the private data:

- ``backbone=public`` (default where the scenario has labelled public data: the digits): the
  penultimate features of a classifier of ``arch`` trained by the harness on the scenario's
  labelled public split (``ScenarioData.pretrain``: images that share none with the private set;
  a cached ``pretrain`` step, the one TL-DMI starts from). On ``mnist-gmi`` the public digits are
  5-9 and the private 0-4: the network verifies classes it was never trained on, as a face
  verification network does. Its embeddings are centred on the mean embedding of those public
  images (ReLU features are all positive: uncentred, every cosine lies near 1);
- ``backbone=facenet`` (default on a scenario without labelled public data that declares face
  classes, ``Scenario.class_kind``; any other is refused at plan time with the reason, never
  decided from the scenario's name): facenet-pytorch's
  ``InceptionResnetV1(pretrained='vggface2')`` (512-d, images resized to 160 px bilinearly with
  antialiasing, as ``facenet_dist``), the weights
  ``facenet_dist`` uses (trained on VGGFace2, not on the private CelebA/FaceScrub images; the two
  may share celebrities, not images). Without the file: no answer, null with the reason.

Calibration (cached per data, network and rate): the threshold is set on real images at the
declared false-accept rate ``far`` (default 1%: the operating point face-verification benchmarks
report TAR at, e.g. IJB-B/C's TAR@FAR=1e-2, and the lowest one the digits' 500 test images x 9
other classes resolve with tens of impostor pairs). Probes are the private *test* images (never in
a template); a genuine pair is a probe and its own class's template, an impostor pair a probe and
another class's template (every class of the scenario). The threshold is the smallest score with
at most ``far`` of the impostor pairs above it; the row's note states it, the measured false-accept
rate and the true-accept rate on the genuine pairs. Reconstructions lie off the distribution of
real images, so those rates are the judge's on real faces or digits, not on reconstructions.

MI-Eval-MLLM (Ho et al., arXiv 2505.03519, hosytuyen/MI-Eval-MLLM) asks the same question of a
vision-language model with a panel of four private images; this judge asks it of a verification
network instead (``mllm`` asks the model).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from reinv_bench import hookimpl
from reinv_bench.api import (
    EvalContext,
    Judge,
    Param,
    Scenario,
    Verdicts,
    WeightsFile,
    features,
    load_state,
    locate,
    sha256_of,
)

# the entry facenet_dist registers (reinv_metrics.facenet.WEIGHTS; a test holds the two equal)
FACENET = WeightsFile(
    "facenet-vggface2",
    "20180402-114759-vggface2.pt",
    "",
    "facenet-pytorch InceptionResnetV1 trained on VGGFace2, "
    "for facenet_dist (and inception_resnet_v1's start)",
    "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
    torch_dir="checkpoints",
)
FACENET_SIZE = 160
BATCH = 256


@functools.lru_cache(maxsize=1)
def facenet(path: str, sha256: str) -> torch.nn.Module:
    """InceptionResnetV1 (embedding mode) with the weights at ``path``, loaded strictly."""
    from facenet_pytorch import InceptionResnetV1

    net = InceptionResnetV1(pretrained=None, classify=False)
    net.load_state_dict({k: v for k, v in load_state(Path(path)).items() if not k.startswith("logits.")})
    return net.eval().requires_grad_(False)


@torch.no_grad()
def facenet_embed(net: torch.nn.Module, x: Any, device: torch.device) -> Tensor:
    net.to(device)
    out = []
    for i in range(0, len(x), BATCH):
        xb = x[i : i + BATCH].to(device)
        if xb.shape[1] == 1:
            xb = xb.expand(-1, 3, -1, -1)
        xb = F.interpolate(
            xb, size=(FACENET_SIZE, FACENET_SIZE), mode="bilinear", align_corners=False, antialias=True
        )
        out.append(net(xb).cpu())
    return torch.cat(out)


def templates(emb: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(num_classes, d): each class's normalised mean of normalised embeddings (zeros: no image)."""
    emb = F.normalize(emb.double(), dim=1)
    sums = torch.zeros(num_classes, emb.shape[1], dtype=emb.dtype).index_add_(0, labels, emb)
    return F.normalize(sums, dim=1)


def calibrate(probe: Tensor, probe_labels: Tensor, tmpl: Tensor, far: float) -> dict[str, Tensor]:
    """The threshold at false-accept rate ``far`` from (probe, template) pairs: genuine (its own
    class) and impostor (every other class that has a template), with the measured rates."""
    scores = F.normalize(probe.double(), dim=1) @ tmpl.T  # (probes, classes)
    has = tmpl.norm(dim=1) > 0
    genuine_mask = torch.zeros_like(scores, dtype=torch.bool)
    genuine_mask[torch.arange(len(probe_labels)), probe_labels] = True
    genuine = scores[genuine_mask]
    impostor = scores[~genuine_mask & has[None, :]]
    ordered = impostor.sort(descending=True).values
    allowed = int(far * len(ordered))  # impostor pairs that may lie above the threshold
    threshold = ordered[allowed] if allowed < len(ordered) else ordered[-1] - 1
    return {
        "threshold": threshold.reshape(()),
        "far": (impostor > threshold).double().mean(),
        "tar": (genuine > threshold).double().mean(),
        "genuine": torch.tensor(len(genuine)),
        "impostor": torch.tensor(len(impostor)),
        "templates": tmpl,
    }


def _state_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class Verification(Judge):
    name = "verification"
    params = {
        "far": Param(
            0.01,
            "false-accept rate the threshold is set at, on (probe, class template) pairs of the "
            "private test split",
            low=1e-6,
            high=0.5,
        ),
        "backbone": Param(
            "auto",
            "embedding network: public (a classifier trained on the scenario's labelled public data), "
            "facenet (facenet-pytorch VGGFace2), auto (public where the scenario has labelled public "
            "data, else facenet)",
            choices=("auto", "public", "facenet"),
        ),
        "arch": Param(
            "resnet8",
            "architecture of the public-data network (backbone public); resnet8, as the digits' "
            "evaluation model: the two then differ in their training data only",
        ),
    }

    def backbone(self, scenario: Scenario) -> str:
        """The embedding network on ``scenario``: auto picks the public-data network where the
        scenario has labelled public data, else facenet where it declares face classes
        (``Scenario.class_kind``, never its name); ``ValueError`` with the reason otherwise."""
        b = self.config["backbone"]
        kind = getattr(scenario, "class_kind", None)
        if b == "auto":
            if scenario.public_labels:
                return "public"
            if kind != "face":
                raise ValueError(
                    f"verification: scenario {scenario.name!r} has no labelled public data to train a "
                    f"network on, and its classes are {_declared(kind)}: the face network (facenet) "
                    "verifies faces only; give verification[backbone=facenet] if they are faces"
                )
            return "facenet"
        if b == "facenet" and kind not in (None, "face"):
            raise ValueError(
                f"verification[backbone=facenet]: scenario {scenario.name!r} declares {kind} classes, and "
                "facenet verifies faces only"
            )
        return b

    def check(self, scenario: Scenario | None) -> dict:
        if scenario is not None:
            self.backbone(scenario)
        return {}

    def weights(self, scenario: Scenario) -> tuple[str, ...]:
        try:
            return (FACENET.name,) if self.backbone(scenario) == "facenet" else ()
        except ValueError:
            return ()

    def public_arch(self, scenario: Scenario) -> str | None:
        return self.config["arch"] if self.backbone(scenario) == "public" else None

    def protocol_note(self, scenario: Scenario) -> str:
        try:
            backbone = self.backbone(scenario)
        except ValueError as exc:
            return str(exc)
        net = (
            f"a {self.config['arch']} trained on the labelled public data"
            if backbone == "public"
            else "facenet-pytorch InceptionResnetV1 (VGGFace2)"
        )
        return (
            f"cosine similarity of a reconstruction's embedding ({net}) to its class's "
            f"template of private training images, above the threshold set at FAR {self.config['far']:g} "
            "on (private test image, class template) pairs; each row's note gives the threshold and "
            "the measured FAR and TAR"
        )

    def _network(self, ctx: EvalContext) -> tuple[Callable[[Any], Tensor], str, str]:
        """(embed(images) -> embeddings, an identity of the network for the cache, its name)."""
        if self.backbone(ctx.scenario) == "public":
            net = ctx.public_model
            if net is None:
                raise ValueError("no network trained on the public data was handed to the judge")
            return (
                lambda x: features(net, x, ctx.device),
                _state_digest(net),
                f"{self.config['arch']} on public data",
            )
        path = locate(FACENET)  # WeightsUnavailable: no answer, with where it looked
        sha = sha256_of(path)
        net = facenet(str(path), sha)
        return lambda x: facenet_embed(net, x, ctx.device), sha, "facenet VGGFace2"

    def _center(self, ctx: EvalContext, embed: Callable[[Any], Tensor]) -> Tensor:
        """What embeddings are centred by: for the public-data network, the mean embedding of the
        public images it was trained on (its ReLU features are all positive, and uncentred cosines
        of such features all lie near 1); facenet's are used as they are (PPA, ``facenet_dist``)."""
        if self.backbone(ctx.scenario) != "public" or ctx.data.pretrain is None:
            return torch.zeros(())
        return embed(ctx.data.pretrain.x).mean(0)

    def judge(self, ctx: EvalContext) -> Verdicts:
        embed, ident, what = self._network(ctx)
        far = float(self.config["far"])

        def compute() -> dict[str, Tensor]:
            train, test = ctx.data.private_train, ctx.data.private_test
            center = self._center(ctx, embed)
            tmpl = templates(embed(train.x) - center, train.y, ctx.scenario.num_classes)
            return {**calibrate(embed(test.x) - center, test.y, tmpl, far), "center": center}

        key = {"digest": ctx.data.digest, "network": ident, "far": far, "version": self.version}
        cal = ctx.cache("verification-judge", key, compute)
        tmpl, threshold, center = cal["templates"], cal["threshold"], cal["center"]

        def scores(chunk) -> Tensor:
            emb = F.normalize((embed(chunk.images) - center).double(), dim=1)
            return (emb * tmpl[chunk.labels.long()]).sum(1)

        s = ctx.inversion.map(scores)
        note = (
            f"{what}: cosine to the class template > {threshold.item():.4f}, set at FAR {far:g}; on real "
            f"private test pairs: FAR {cal['far'].item():.4f} ({int(cal['impostor'])} impostor pairs), "
            f"TAR {cal['tar'].item():.4f} ({int(cal['genuine'])} genuine pairs)"
        )
        return Verdicts((s > threshold).tolist(), note)


def _declared(kind: str | None) -> str:
    return "not declared (Scenario.class_kind)" if kind is None else f"declared {kind}"


@hookimpl
def register_judges():
    return [Verification]
