"""Planted canaries (``--canaries K``, issue 29 item 5): an attack unit test whose answer exists
by construction (Zimmermann, Brendel, Tramèr, Carlini, NeurIPS 2022; the canaries of Aerni,
Zhang, Tramèr, CCS 2024).

A canary target is trained as its ordinary twin except that K attacked identities (chosen by the
seed) are canaries: every private training image of such a class is replaced by one image drawn
from an attack's own target-independent prior (``Attack.canary_images``: GMI's public GAN) plus
small Gaussian jitter (``JITTER``, in the [-1, 1] image space, per image, clamped). The answer of
the inversion of a canary class is then that image, and the prior can produce it.

Recovery, measured on each canary-class reconstruction without the evaluation model:
``canary_dist``, the root-mean-square pixel distance to the planted image; ``canary_recovered``,
1 when it is closer to the planted image than each of ``REFERENCE`` further random draws of the
same prior (what guessing from the prior gives: by chance at most 1 in ``REFERENCE + 1``);
and ``canary_acc``, the evaluation model's attack accuracy on the canary classes (its
evaluation model never saw the canaries: read it beside the distance). On an undefended target
an attack that recovers fewer than half of the canaries (a canary is recovered when one of its
reconstructions is) is flagged ``broken`` in the row's ``canary`` note.

Canary targets have their own keys (the spec holds the canaries) and their rows another protocol
label (``..., K canaries``), so they never enter the ordinary rows or their comparisons.
"""

from __future__ import annotations

from typing import Any

import torch

from reinv_bench.contract.attack import Attack
from reinv_bench.contract.data import Split
from reinv_bench.contract.metric import PerItem
from reinv_bench.results.validity import BROKEN  # the canary note's first word when an attack fails

JITTER = 0.05  # std of the Gaussian jitter added to each planted copy, in [-1, 1] units
REFERENCE = 256  # random prior draws each canary's distance is compared with


def makes_canaries(attack: Attack) -> bool:
    """Whether ``attack``'s own prior can make canaries: the attack (or, for a wrapper, the attack
    it wraps) implements ``canary_images`` and its priors need no target."""
    base = attack
    while getattr(base, "base", None) is not None:
        base = base.base
    overrides = type(base).canary_images is not Attack.canary_images
    return overrides and not any(p.uses_target for p in base.priors())


def source(attack: tuple) -> tuple:
    """The (label, description, instance) that draws the canaries of a resolved attack: the attack
    itself, or the attack a wrapper wraps (``lomma+gmi``: gmi's GAN)."""
    label, desc, inst = attack
    while getattr(inst, "base", None) is not None:
        desc, inst = desc["base"], inst.base
        label = inst.name
    return label, desc, inst


def choose(classes: list[int], k: int, seed: int) -> list[int]:
    """The K canary classes among the attacked ones (seeded)."""
    order = torch.randperm(len(classes), generator=torch.Generator().manual_seed(10_000 + seed))
    return sorted(classes[i] for i in order[:k].tolist())


def plant(
    train: Split, spec: dict[str, Any], attack: Attack, priors: dict[str, Any], classes: list[int], shape
) -> tuple[Split, dict[str, Any]]:
    """The training split with the canaries planted, and what evaluation needs of them (classes,
    planted images, each one's distances to ``REFERENCE`` random prior draws)."""
    k, seed = spec["k"], spec["seed"]
    chosen = choose(classes, k, seed)
    drawn = attack.canary_images(priors, k + REFERENCE, seed, tuple(shape))
    if drawn is None:
        raise ValueError(f"attack {attack.name}'s prior cannot make canaries")
    planted, ref = drawn[:k], drawn[k:]
    copies: dict[int, torch.Tensor] = {}
    gen = torch.Generator().manual_seed(20_000 + seed)
    for c, img in zip(chosen, planted):
        idx = (train.y == c).nonzero()[:, 0]
        noise = torch.randn((len(idx), *img.shape), generator=gen) * spec["jitter"]
        copies.update(zip(idx.tolist(), (img[None] + noise).clamp(-1, 1)))
    if isinstance(train.x, torch.Tensor):
        x = train.x.clone()
        for i, img in copies.items():
            x[i] = img.to(x.dtype)
    else:  # images decoded from files: replaced as batches are read
        x = Planted(train.x, copies)
    record = {
        "classes": torch.tensor(chosen),
        "images": planted.float(),
        "ref": torch.stack([rms(ref, img) for img in planted]),
    }
    return Split(x, train.y), record


class Planted:
    """Images decoded from files (``ImageFiles``) with some replaced: indexing with a batch of
    positions gives their tensor, the canaries' planted copies in place."""

    def __init__(self, files: Any, copies: dict[int, torch.Tensor]) -> None:
        self.files, self.copies = files, copies

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.files.shape)

    def warm(self) -> None:
        self.files.warm()

    def __getitem__(self, key) -> torch.Tensor:
        idx = torch.as_tensor(key).reshape(-1).cpu()
        x = self.files[idx].to("cpu")
        for j, i in enumerate(idx.tolist()):
            if i in self.copies:
                x[j] = self.copies[i]
        return x

    def to(self, device: Any = "cpu") -> torch.Tensor:
        return self[torch.arange(len(self))].to(device)


def rms(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Root-mean-square pixel distance of each image of ``a`` to ``b``."""
    return (a.float() - b.float()).flatten(1).pow(2).mean(1).sqrt()


def recovery(record: dict[str, Any], images: torch.Tensor, labels: torch.Tensor, success, undefended: bool):
    """The canary metrics of one cell's reconstructions (``success``: the privacy axis per
    reconstruction, or None) and its note."""
    classes = record["classes"].tolist()
    dists, recovered, acc, cls, acc_cls = [], [], [], [], []
    found: set[int] = set()
    for i, (img, c) in enumerate(zip(images, labels.tolist())):
        if c not in classes:
            continue
        j = classes.index(c)
        d = float(rms(img[None], record["images"][j])[0])
        ok = d < float(record["ref"][j].min())
        dists.append(d)
        recovered.append(float(ok))
        cls.append(c)
        if ok:
            found.add(c)
        if success is not None and success[i] is not None:
            acc.append(float(success[i]))
            acc_cls.append(c)
    if not dists:
        return {}, f"no reconstruction of the canary classes {classes}"
    out: dict[str, Any] = {
        "canary_dist": PerItem(sum(dists) / len(dists), dists, cls),
        "canary_recovered": PerItem(sum(recovered) / len(recovered), recovered, cls),
    }
    if acc:
        out["canary_acc"] = PerItem(sum(acc) / len(acc), acc, acc_cls)
    text = f"{len(found)} of {len(classes)} canaries recovered (closer than {REFERENCE} random prior draws)"
    if undefended and 2 * len(found) < len(classes):
        text = f"{BROKEN}: on the undefended target only {text}"
    return out, text
