"""``brepmi``: Boundary-Repelling Model Inversion, a label-only attack.

Paper: Kahla, Chen, Just, Jia. "Label-Only Model Inversion Attacks via Boundary Repulsion."
CVPR 2022. Code: github.com/m-kahla/Label-Only-Model-Inversion-Attacks-via-Boundary-Repulsion
(``config2.yaml``; ``brep_mi.py``: ``gen_points_on_sphere``, ``attack_single_target``;
``brep_mi_utils.py``: ``gen_initial_points_untargeted``, ``gen_initial_points_targeted``).

The attack sees only the target's top-1 label: the harness hands it a ``LabelOnly`` view of the
target, never the module, and counts every image queried. Prior: GMI's public WGAN-GP (the same
cached artifact as ``gmi``).

1. Identities and initial points: latents z ~ N(0, I) clamped to [-1.5, 1.5] are drawn in
   batches of 256 (``batch_dim_for_initial_points``) and labelled by the target. Default
   (``targeted=false``, the official ``targeted_attack: False``): the attacked identities are the
   first ``len(classes)`` distinct labels reached (300 in ``config2.yaml``, ``num_targets``),
   each starting from the first latent that reached it; the scenario's class list only sets how
   many. ``targeted=true``: the scenario's classes, each from the first latent labelled as it.
   At most ``init_tries`` batches are searched (the official loop has no bound).
2. Each step, per identity: sample 32 points on the sphere of radius R around z (R0 = 2); labels
   give v_i = +1 inside the class, -1 outside. If sum(v_i) > 0.75 * 32, R <- 1.3 R. Update
   direction mean_i((v_i - 1)/2 * delta_i) / R (repulsion from the points outside, with the new
   R), step min(R/3, 3) (with the old R), z clamped to [-1.5, 1.5]; the move is kept only if
   G(z) is still labelled as the class.
3. Stop after ``patience`` (1000) accepted steps without a radius increase; a radius increase
   and a rejected move do not count (the official loop ``break``s before ``current_iter += 1``).
   There is no maximum radius.
4. The image returned is G of the official ``point_before_inc_radius``: z just after the accepted
   move of the last step at which the radius increased (the official attack judges that point,
   not the final z).

All identities advance together as one batch; finished ones stop querying. A batched run equals
the per-identity loop, and tests/test_fidelity_plgmi_brepmi.py compares the evaluated point and
the choice of identities with transcriptions of the official functions.

Deliberate differences: the official attack counts an identity whose radius never increased as
a failure (``point_before_inc_radius`` is never set); here its initial point is returned (and the
fraction is reported as ``radius_never_grew``). The official loop retries a rejected move
without bound; here ``max_iters`` caps the query rounds so every identity terminates. Identities
the search did not reach: targeted, a random latent is kept (``initial_point_found`` < 1);
untargeted, fewer identities are attacked. ``restarts`` > 1 (not official) gives each identity
its next latents of the search.
"""

from __future__ import annotations

import torch
from torch import Tensor

from reinv_bench import hookimpl
from reinv_bench.api import AttackContext, Inversion, Param, Progress, no_progress

from ._gan import GAN_BUDGETS, GAN_PARAMS, GMIPrior


def initial_points(
    G,
    label_of,
    classes: list[int] | None,
    n_ids: int,
    restarts: int,
    z_dim: int,
    batch: int,
    tries: int,
    clamp: float,
    device,
) -> tuple[Tensor, Tensor, Tensor]:
    """Initial latents (see the module docstring, step 1); ``classes`` None: untargeted, the
    first ``n_ids`` distinct labels reached. Returns (z, labels, found), rows restart major."""
    points: dict[int, list[Tensor]] = {}
    wanted = None if classes is None else set(classes)
    for _ in range(tries):
        if len(points) == (n_ids if wanted is None else len(wanted)) and all(
            len(v) >= restarts for v in points.values()
        ):
            break
        cand = torch.randn(batch, z_dim, device=device).clamp(-clamp, clamp)
        for z, label in zip(cand, label_of(G(cand)).tolist()):
            if label in points:
                if len(points[label]) < restarts:
                    points[label].append(z)
            elif (len(points) < n_ids) if wanted is None else (label in wanted):
                points[label] = [z]
    ids = list(points) if classes is None else classes
    rows, found = [], []
    for r in range(restarts):
        for c in ids:
            hit = r < len(points.get(c, []))
            rows.append(points[c][r] if hit else torch.randn(z_dim, device=device).clamp(-clamp, clamp))
            found.append(hit)
    y = torch.tensor(ids * restarts, dtype=torch.long, device=device)
    return torch.stack(rows), y, torch.tensor(found)


def sphere(it: int, labels: Tensor, k: int, dim: int, radius: Tensor) -> Tensor:
    """k offsets per row, uniform on the sphere of the row's radius."""
    d = torch.randn(len(labels), k, dim, device=radius.device)
    return d / d.norm(dim=2, keepdim=True) * radius[:, None, None]


def brep_optimize(
    G,
    label_of,
    z: Tensor,
    y: Tensor,
    *,
    points: int,
    r0: float,
    grow: float,
    threshold: float,
    patience: int,
    max_iters: int,
    clamp: float,
    directions=sphere,
    progress: Progress = no_progress,
) -> tuple[Tensor, Tensor, dict]:
    """Boundary repulsion for every row of ``z`` at once. ``directions(it, labels, k, dim, R)``
    draws the sphere offsets of the active rows (tests inject a deterministic source). Returns
    (final z, the evaluated point at the last radius increase, info)."""
    n, dim = z.shape
    dev = z.device
    z, point = z.clone(), z.clone()
    radius = torch.full((n,), r0, device=dev)
    since = torch.zeros(
        n, dtype=torch.long, device=dev
    )  # official current_iter - last_iter_when_radius_changed
    grew = torch.zeros(n, dtype=torch.bool, device=dev)
    active = torch.ones(n, dtype=torch.bool, device=dev)
    it = 0
    while active.any() and it < max_iters:
        rows = active.nonzero().squeeze(1)
        r = radius[rows]
        step = torch.clamp(r / 3, max=3.0)
        delta = directions(it, y[rows], points, dim, r)
        inside = (
            label_of(G((z[rows, None] + delta).reshape(-1, dim))).view(len(rows), points) == y[rows, None]
        )
        v = inside.float() * 2 - 1
        up = v.sum(1) > threshold * points
        r = torch.where(up, r * grow, r)
        direction = (((v - 1) / 2)[..., None] * delta).mean(1) / r[:, None]
        z_new = (z[rows] + step[:, None] * direction).clamp(-clamp, clamp)
        keep = label_of(G(z_new)) == y[rows]
        z[rows] = torch.where(keep[:, None], z_new, z[rows])
        point[rows] = torch.where((up & keep)[:, None], z_new, point[rows])
        grew[rows] = grew[rows] | (up & keep)
        since[rows] = torch.where(up, 0, since[rows] + keep.long())
        radius[rows] = r
        it += 1
        active &= since < patience
        progress(it, max_iters)
    return (
        z,
        point,
        {
            "iterations": it,
            "final_radius_mean": radius.mean().item(),
            "radius_never_grew": (~grew).float().mean().item(),
        },
    )


class BREPMI(GMIPrior):
    name = "brepmi"
    version = 2  # 2: evaluates point_before_inc_radius, untargeted identities by default, no radius stop
    threat_model = "label-only"
    params = {
        **GAN_PARAMS,
        "targeted": Param(
            False,
            "attack the scenario's classes; false: the first len(classes) labels reached "
            "from random latents (official: false)",
        ),
        "points": Param(32, "points sampled on the sphere per step (official: 32)", low=1),
        "r0": Param(2.0, "initial sphere radius (official: 2)", low=0.0),
        "grow": Param(1.3, "radius expansion factor (official: 1.3)", low=1.0),
        "threshold": Param(
            0.75, "grow when sum of +/-1 labels > threshold * points (official: 0.75)", low=-1, high=1
        ),
        "patience": Param(
            1000, "accepted steps without radius growth before stopping (official: 1000)", low=1
        ),
        "max_iters": Param(20000, "hard cap on query rounds per identity (harness safeguard)", low=1),
        "clamp": Param(1.5, "latent clamp (official: 1.5)", low=0.0),
        "init_batch": Param(256, "latents per initial-point search batch (official: 256)", low=1),
        "init_tries": Param(50, "search batches before giving up (harness safeguard)", low=1),
        "restarts": Param(1, "independent initial points per identity (official: 1)", low=1),
    }
    budgets = {
        "smoke": {**GAN_BUDGETS["smoke"], "patience": 5, "max_iters": 10, "init_tries": 3},
        "quick": {**GAN_BUDGETS["quick"], "patience": 60, "max_iters": 300, "restarts": 2},
    }

    def invert(self, ctx: AttackContext, priors: dict, classes: list[int]) -> Inversion:
        c = self.config
        G, _ = self.load_prior(priors[self.prior_kind], ctx.scenario.image_shape, ctx.device)
        torch.manual_seed(ctx.seed)
        with torch.no_grad():
            z, y, found = initial_points(
                G,
                ctx.target,
                classes if c.targeted else None,
                len(classes),
                c.restarts,
                self.z_dim,
                c.init_batch,
                c.init_tries,
                c.clamp,
                ctx.device,
            )
            _, point, info = brep_optimize(
                G,
                ctx.target,
                z,
                y,
                points=c.points,
                r0=c.r0,
                grow=c.grow,
                threshold=c.threshold,
                patience=c.patience,
                max_iters=c.max_iters,
                clamp=c.clamp,
                progress=ctx.progress,
            )
            images = G(point).cpu()
        info["initial_point_found"] = found.float().mean().item()
        info["identities"] = len(y) // c.restarts
        return Inversion(images, y.cpu(), info)


@hookimpl
def register_attacks():
    return [BREPMI]
