"""``brepmi``: Boundary-Repelling Model Inversion, a label-only attack.

Paper: Kahla, Chen, Just, Jia. "Label-Only Model Inversion Attacks via Boundary Repulsion."
CVPR 2022. Code: github.com/m-kahla/Label-Only-Model-Inversion-Attacks-via-Boundary-Repulsion
(``config2.yaml``, ``attack.py``: ``gen_points_on_sphere``, ``is_target_class``).

The attack sees only the target's top-1 label: the harness hands it a ``LabelOnly`` view of the
target, never the module, and counts every image queried. Prior: GMI's public WGAN-GP (the same
cached artifact as ``gmi``).

1. Initial point: draw latents in batches of 256 (the official ``batch_dim_for_initial_points``)
   until the target labels one as the attacked class (at most ``init_tries`` batches).
2. Each step, per class: sample 32 points on the sphere of radius R around z (R0 = 2); labels
   give v_i = +1 inside the class, -1 outside. If sum(v_i) > 0.75 * 32 (the official test on
   the +/-1 sum, i.e. more than 87.5% of the points inside), R <- 1.3 R. Update direction
   mean_i((v_i - 1)/2 * delta_i) / R (repulsion from the points outside), step min(R/3, 3),
   z clamped to [-1.5, 1.5]; the move is kept only if G(z) is still labelled as the class.
3. Stop a class after ``patience`` steps without a radius increase (1000 in ``paper``) or once
   R exceeds the official maximum of 16.3.

All attacked classes advance together as one batch; finished classes stop querying.

Deliberate differences: a rejected move (new point outside the class) counts as a step here,
so every class terminates; the official loop retries at the same iteration count. Classes
with no initial point found keep a random latent and are reported in ``info``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from reinv_bench import hookimpl
from reinv_bench.api import AttackContext, Inversion, Param, Progress, _no_progress

from .gmi import GAN_BUDGETS, GAN_PARAMS, GMIPrior


def initial_points(G, label_of, classes: Tensor, z_dim: int, batch: int, tries: int, device) -> tuple[Tensor, Tensor]:
    """A latent per row that the target labels as that row's class, searched in batches."""
    z = torch.randn(len(classes), z_dim, device=device).clamp(-1.5, 1.5)
    found = torch.zeros(len(classes), dtype=torch.bool, device=device)
    for _ in range(tries):
        if found.all():
            break
        cand = torch.randn(batch, z_dim, device=device).clamp(-1.5, 1.5)
        labels = label_of(G(cand))
        match = labels[None, :] == classes[:, None]  # (rows, batch)
        hit = match.any(1) & ~found
        z[hit] = cand[match[hit].float().argmax(1)]
        found |= hit
    return z, found


def sphere(it: int, labels: Tensor, k: int, dim: int, radius: Tensor) -> Tensor:
    """k offsets per row, uniform on the sphere of the row's radius."""
    d = torch.randn(len(labels), k, dim, device=radius.device)
    return d / d.norm(dim=2, keepdim=True) * radius[:, None, None]


def brep_optimize(
    G, label_of, z: Tensor, y: Tensor, *, points: int, r0: float, grow: float, threshold: float,
    patience: int, max_radius: float, max_iters: int, clamp: float, directions=sphere,
    progress: Progress = _no_progress,
) -> tuple[Tensor, dict]:
    """Boundary repulsion for every row of ``z`` at once. ``directions(it, labels, k, dim, R)``
    draws the sphere offsets of the active rows (tests inject a deterministic source)."""
    n, dim = z.shape
    dev = z.device
    radius = torch.full((n,), r0, device=dev)
    last_growth = torch.zeros(n, dtype=torch.long, device=dev)
    active = torch.ones(n, dtype=torch.bool, device=dev)
    it = 0
    while active.any() and it < max_iters:
        rows = active.nonzero().squeeze(1)
        r = radius[rows]
        step = torch.clamp(r / 3, max=3.0)
        delta = directions(it, y[rows], points, dim, r)
        inside = label_of(G((z[rows, None] + delta).reshape(-1, dim))).view(len(rows), points) == y[rows, None]
        v = inside.float() * 2 - 1
        grown = v.sum(1) > threshold * points
        r = torch.where(grown, r * grow, r)
        direction = (((v - 1) / 2)[..., None] * delta).mean(1) / r[:, None]
        z_new = (z[rows] + step[:, None] * direction).clamp(-clamp, clamp)
        keep = label_of(G(z_new)) == y[rows]
        z[rows] = torch.where(keep[:, None], z_new, z[rows])
        radius[rows] = r
        last_growth[rows] = torch.where(grown, torch.full_like(rows, it), last_growth[rows])
        it += 1
        active &= ((it - last_growth) < patience) & (radius <= max_radius)
        progress(it, max_iters)
    return z, {"iterations": it, "final_radius_mean": radius.mean().item()}


class BREPMI(GMIPrior):
    name = "brepmi"
    threat_model = "label-only"
    params = {
        **GAN_PARAMS,
        "points": Param(32, "points sampled on the sphere per step (official: 32)", low=1),
        "r0": Param(2.0, "initial sphere radius (official: 2)", low=0.0),
        "grow": Param(1.3, "radius expansion factor (official: 1.3)", low=1.0),
        "threshold": Param(0.75, "grow when sum of +/-1 labels > threshold * points (official: 0.75)", low=-1, high=1),
        "patience": Param(1000, "steps without radius growth before stopping (official: 1000)", low=1),
        "max_radius": Param(16.3, "stop once the radius exceeds this (official: 16.3)", low=0.0),
        "max_iters": Param(20000, "hard cap on steps per class (harness safeguard)", low=1),
        "clamp": Param(1.5, "latent clamp (official: 1.5)", low=0.0),
        "init_batch": Param(256, "latents per initial-point search batch (official: 256)", low=1),
        "init_tries": Param(50, "search batches before giving up on a class", low=1),
        "restarts": Param(1, "independent initial points per class (official: 1)", low=1),
    }
    budgets = {
        "smoke": {**GAN_BUDGETS["smoke"], "patience": 5, "max_iters": 10, "init_tries": 3},
        "quick": {**GAN_BUDGETS["quick"], "patience": 60, "max_iters": 300, "restarts": 2},
    }

    def invert(self, ctx: AttackContext, priors: dict, classes: list[int]) -> Inversion:
        c = self.config
        G, _ = self.load_prior(priors[self.prior_kind], ctx.scenario.image_shape, ctx.device)
        torch.manual_seed(ctx.seed)
        y = torch.tensor(classes * c.restarts, device=ctx.device)
        with torch.no_grad():
            z, found = initial_points(G, ctx.target, y, self.z_dim, c.init_batch, c.init_tries, ctx.device)
            z, info = brep_optimize(
                G, ctx.target, z, y, points=c.points, r0=c.r0, grow=c.grow, threshold=c.threshold,
                patience=c.patience, max_radius=c.max_radius, max_iters=c.max_iters, clamp=c.clamp,
                progress=ctx.progress,
            )
            images = G(z).cpu()
        info["initial_point_found"] = found.float().mean().item()
        return Inversion(images, y.cpu(), info)


@hookimpl
def register_attacks():
    return [BREPMI]
