"""Classifiers: what every architecture builds (logits, penultimate features, block outputs).
Re-exported by ``reinv_bench.api``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor, nn


@dataclass
class Output:
    """What a classifier computes: logits, penultimate features, optionally block outputs."""

    logits: Tensor
    features: Tensor
    hidden: list[Tensor] = field(default_factory=list)
    extras: dict[str, Tensor] = field(default_factory=dict)


class Classifier(nn.Module):
    """Every architecture builds one: ``blocks`` in sequence (the last ends in the flattened
    penultimate feature vector), then ``head`` to logits. Block outputs are what BiDO
    regularises and where transfer learning freezes; the penultimate features feed KNN
    distance, MID and LOMMA. ``freeze_point`` is the architecture's declared transfer-learning
    freeze point (TL-DMI's default for the architecture), in blocks.
    """

    def __init__(
        self,
        blocks: Iterable[nn.Module],
        head: nn.Module,
        feature_dim: int,
        num_classes: int,
        freeze_point: int = 0,
        upstream: nn.Module | None = None,
        fresh: tuple[str, ...] = (),
    ):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.freeze_point = freeze_point  # leading blocks transfer learning freezes by default
        # Built from the modules of an upstream model (torchvision, face.evoLVe, facenet-pytorch)?
        # Then its checkpoints load by name: upstream tensor name -> our name, found by identity.
        ours = {id(t): k for k, t in self.state_dict(keep_vars=True).items()}
        self.upstream_names = (
            {}
            if upstream is None
            else {k: ours[id(t)] for k, t in upstream.state_dict(keep_vars=True).items() if id(t) in ours}
        )
        # prefixes a pretrained checkpoint need not provide: the head, and layers the paper adds
        self.fresh = ("head.", *fresh)

    def load_checkpoint(self, state: dict[str, Tensor], what: str = "pretrained weights") -> None:
        """Load pretrained weights: all but the layers the architecture adds (``self.fresh``: the
        head, ...), which keep their initialisation. An upstream checkpoint (torchvision,
        face.evoLVe, facenet-pytorch names) is renamed to the Classifier's first. Anything else
        missing, unexpected or of another shape is a ValueError naming ``what`` (\"pretrained
        weights from X do not fit ...\")."""
        if not any(k.startswith("blocks.") for k in state):
            state = {self.upstream_names[k]: v for k, v in state.items() if k in self.upstream_names}
        own = self.state_dict()
        state = {
            k: v
            for k, v in state.items()
            if not (k.startswith(self.fresh) and (k not in own or own[k].shape != v.shape))
        }
        wrong = [
            f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
            for k, v in state.items()
            if k in own and own[k].shape != v.shape
        ]
        missing = [
            k
            for k in own
            if k not in state and not k.startswith(self.fresh) and not k.endswith("num_batches_tracked")
        ]  # absent from older checkpoints
        unexpected = [k for k in state if k not in own]
        if missing or unexpected or wrong:
            raise ValueError(
                f"pretrained weights from {what}: missing {missing[:4]}, unexpected {unexpected[:4]}, "
                f"shapes differ {wrong[:4]} ({len(missing)}/{len(unexpected)}/{len(wrong)} in all)"
            )
        self.load_state_dict(state, strict=False)

    def forward_all(self, x: Tensor, hidden: bool = False) -> Output:
        hs = []
        for block in self.blocks:
            x = block(x)
            if hidden:
                hs.append(x)
        out = self.head(x)
        if isinstance(out, Output):  # a head that wraps (MID's bottleneck) returns extras itself
            out.features, out.hidden = x, hs
            return out
        return Output(out, x, hs)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_all(x).logits

    def features(self, x: Tensor) -> Tensor:
        return self.forward_all(x).features


class Architecture:
    """Builds classifiers. ``name`` is what ``--arch`` selects; ``pretrained`` maps the short
    names ``--arch "NAME[weights=SHORT]"`` accepts to registered ``WeightsFile`` names (a path to
    a local state dict works too)."""

    name: ClassVar[str]
    version: ClassVar[int] = 1  # bump when a change alters what is built: enters every step key
    pretrained: ClassVar[dict[str, str]] = {}

    def build(self, num_classes: int, image_shape: tuple[int, int, int]) -> Classifier:
        raise NotImplementedError

    def adapt_checkpoint(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Rename an upstream checkpoint's legacy keys before it is loaded (default: as is)."""
        return state
