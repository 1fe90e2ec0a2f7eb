"""The adaptations the builtin defenses declare (``Defense.adaptation``), by the family of
mechanism AT-AT (ICLR 2026) sorts them into; each cites the principle it follows. The
``adaptive+ATTACK`` wrapper (``reinv_attacks/adaptive.py``) turns them into an identity loss.
"""

from __future__ import annotations

import contextlib

from torch import Tensor

from reinv_bench.api import Adaptation, Classifier, Output, residual_stages


def robustness_reducing(name: str) -> Adaptation:
    """AT-AT's robustness-reducing family (MID, BiDO, TL-DMI, and the adversarial-training pair
    at/atat, whose leakage tracks adversarial robust accuracy): the gradient of such a target is
    noisy off the data manifold, so the attacker averages it over small transformations (AlignMI's
    TAA, Peng et al., NeurIPS 2025: PPA against TL-DMI 25.14 -> 47.80 %, BiDO-HSIC 35.11 -> 62.58 %)
    and over small Gaussian input noise (EOT, Athalye et al., ICML 2018; AlignMI's PAA noise)."""
    return Adaptation(
        label=f"taa+noise({name})",
        principle="transformation-averaged gradients (AlignMI TAA, NeurIPS 2025) and EOT over "
        "Gaussian input noise (Athalye et al., ICML 2018)",
        taa=True,
        noise=True,
    )


def confidence_suppressing(name: str) -> Adaptation:
    """A defense that reshapes the softmax's confidence (NegLS's negative smoothing, LoFt's
    low-rank neck, CALoR's inverse focal fine-tune) flattens cross-entropy's and the Poincaré
    loss's gradient where the attack needs it; the logit margin -z_y + max_{j != y} z_j does not
    depend on the confidence (Carlini and Wagner, S&P 2017; the loss Tramèr et al., NeurIPS 2020,
    recommend simplifying to)."""
    return Adaptation(
        label=f"margin({name})",
        principle="logit-margin loss in place of CE / Poincaré (Carlini & Wagner 2017; Tramèr et al. 2020)",
        margin=True,
    )


class StraightThroughSkip(float):
    """A skip factor s that multiplies like s in the forward pass and like 1 in the backward:
    ``s * t + (1 - s) * (t - t.detach())`` (numerically s * t: the added term is exactly zero).
    It is a float that is truthy and unequal to 1, so a block that computes
    ``F(x) + skip_scale * shortcut(x)`` (``api.residual_stages``) keeps its shortcut in the graph
    even where s = 0."""

    def __new__(cls, s: float):
        obj = super().__new__(cls, s)
        obj.s = float(s)
        return obj

    def __bool__(self) -> bool:
        return True

    def __eq__(self, other) -> bool:
        return False

    __hash__ = float.__hash__

    def __mul__(self, t):
        if isinstance(t, Tensor):
            return self.s * t + (1.0 - self.s) * (t - t.detach())
        return float(self) * t

    __rmul__ = __mul__


@contextlib.contextmanager
def straight_through_skips(model: Classifier):
    """Within the block, every residual block of ``model`` whose skip factor is not 1 (RoLSS's 0,
    SSF's 0.6) computes the same forward with the gradient of a full skip connection."""
    changed = []
    for stage in residual_stages(model):
        for block in stage:
            if block.skip_scale != 1.0:
                changed.append((block, block.__dict__.get("skip_scale")))
                block.skip_scale = StraightThroughSkip(block.skip_scale)
    try:
        yield
    finally:
        for block, old in changed:
            if old is None:
                del block.skip_scale
            else:
                block.skip_scale = old


def bpda_skips(name: str) -> Adaptation:
    """RoLSS/SSF remove or scale the skip connections of the last residual stage(s), which the
    papers credit with degrading the gradient an inversion follows (the obfuscated-gradients
    pattern). BPDA (Athalye, Carlini, Wagner, ICML 2018): the forward pass unchanged, the backward
    through a differentiable approximation: here each altered block's shortcut carries the
    gradient of a full skip connection (factor 1), gated by the block's own activations."""

    def forward(target: Classifier, x: Tensor) -> Output:
        with straight_through_skips(target):
            return target.forward_all(x)

    return Adaptation(
        label=f"bpda({name})",
        principle="BPDA: forward unchanged, backward as with full skip connections (Athalye et al. 2018)",
        forward=forward,
    )
