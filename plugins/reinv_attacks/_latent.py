"""The search in latent space, shared by the attack plugins: per-class random streams, initial
latents, identity batches, and the optimisation loop of gmi, kedmi and plgmi (``descend``). Each
attack's loss and optimiser stay in its own module; the GANs are ``_gan.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from reinv_bench.api import AttackContext, Inversion, Progress, no_progress


def class_generator(seed: int, c: int, stream: int = 0) -> torch.Generator:
    """The random stream of class ``c`` (``stream`` tells a restart or a use apart): a class draws
    the same numbers whether it is attacked alone, in a batch or in another identity batch."""
    return torch.Generator().manual_seed((seed * 1_000_003 + stream * 10_007 + c) % 2**62)


def latent_init(seed: int, classes: list[int], restarts: int, z_dim: int) -> tuple[Tensor, Tensor]:
    """Initial latents, one per (restart, class), each from its class's generator. Row order:
    restart major, class minor. Returns (z, labels)."""
    zs = [torch.randn(z_dim, generator=class_generator(seed, c, r)) for r in range(restarts) for c in classes]
    return torch.stack(zs), torch.tensor(classes * restarts, dtype=torch.long)


def identity_batches(classes: list[int], size: int) -> list[list[int]]:
    """The attacked classes in identity batches of ``size`` (the official scripts attack 60 at a
    time and average the loss over them: KEDMI/LOMMA ``recovery.py``, PLG-MI ``reconstruct.py``)."""
    return [classes[i : i + size] for i in range(0, len(classes), size)]


def descend(
    opt: torch.optim.Optimizer,
    loss: Callable[[int], Tensor],
    *,
    iters: int,
    scale: float,
    after_step: Callable[[], object] | None = None,
    progress: Progress = no_progress,
) -> list[float]:
    """The latent attacks' loop: ``iters`` steps of ``opt`` on ``scale`` times the sum of the
    per-row losses ``loss(it)`` (``scale`` = 1 / the classes of the identity batch: the official
    batch mean, so each row's step is ``scale`` times its own gradient); ``after_step()`` runs
    without gradients after each step (a clamp). Returns the mean per-row loss of each iteration."""
    hist = []
    for it in range(iters):
        per = loss(it)
        opt.zero_grad(set_to_none=True)
        (per.sum() * scale).backward()
        opt.step()
        if after_step is not None:
            with torch.no_grad():
                after_step()
        hist.append(per.detach().mean())
        progress(it + 1, iters)
    return [h.item() for h in hist]


def in_identity_batches(
    ctx: AttackContext,
    classes: list[int],
    size: int,
    per_class: int,
    attack: Callable[[list[int], Progress], tuple[Tensor, list[float]]],
) -> Inversion:
    """Attack ``classes`` in identity batches of ``size``, one after another:
    ``attack(ids, progress)`` returns the batch's images, ``(per_class, len(ids), *image_shape)``
    on the CPU (restarts or samples major), and its loss per iteration. The reconstructions
    are ``per_class`` major, class minor over all classes; ``loss_first``/``loss_last``: the
    batches' first and last losses, averaged."""
    batches = identity_batches(classes, size)
    images, first, last = [], [], []
    for b, ids in enumerate(batches):
        x, hist = attack(ids, lambda i, n, b=b: ctx.progress(b * n + i, len(batches) * n))
        images.append(x)
        first.append(hist[0])
        last.append(hist[-1])
    labels = torch.tensor(classes * per_class, dtype=torch.long)
    return Inversion(
        torch.cat(images, 1).flatten(0, 1),
        labels,
        {"loss_first": sum(first) / len(first), "loss_last": sum(last) / len(last)},
    )
