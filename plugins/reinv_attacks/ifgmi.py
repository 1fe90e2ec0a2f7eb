"""``ifgmi``: Intermediate Features enhanced Generative Model Inversion.

Paper: Qiu, Fang, Yu, Yu, Chen, Wang, Xia, Xu. "A Closer Look at GAN Priors: Exploiting
Intermediate Features for Enhanced Model Inversion Attacks." ECCV 2024. Code:
github.com/final-solution/IF-GMI (``attacks/optimize.py::Optimization``,
``utils/stylegan.py::project_onto_l1_ball``, ``stylegan2_intermediate/training/networks.py::
SynthesisNetwork.forward`` with ``set_layer``, ``intermediate_attack.py``,
``configs/ffhq_facescrub/main-resnet.yaml``).

On PPA's prior and candidates (``reinv_attacks.ppa``: the same ``stylegan2-ffhq`` generator, the
same cached prior, PPA's candidate search with psi 0.5, cutoff 8, crop 800 -> 224 and flip): 50
candidates per class of 2000, optimised in batches of 5 (class-major), single w.

Layer-wise search (``Optimization.optimize``/``intermediate``): phase 0 optimises w through the
whole synthesis network for ``steps[0]`` = 50 iterations; phase i > 0 optimises w and the
feature map entering synthesis block i for ``steps[i]`` = 10 iterations, the blocks before i not
run. Each phase has a fresh Adam (lr 0.005, betas (0.1, 0.1), no schedule); after every step the
deviation of each variable from its value at the start of the phase is projected onto the L1
ball of radius ``radius_mid[i]`` (the feature; phases > 0) and ``radius_w[i]`` (w), per sample
(Duchi et al.'s sort projection, ``project_onto_l1_ball``). Loss: PPA's Poincaré loss on the
transforms CenterCrop 800 -> Resize 224 -> RandomResizedCrop(scale 0.9-1, ratio 1), one crop per
batch. At the end of a phase the feature for the next one is block i's output from the
optimised state. As in the official network, a run that starts at block i starts the skip
(toRGB) image afresh there: the RGB contributions of the blocks before i are not in the image.

Reconstructions: the images of the last phase (the official ``origin_imgs``: the last
iteration's forward pass, before its update), every candidate (no final selection), center-
cropped 800 px and resized to the scenario's 224 px. The official evaluation
(``intermediate_attack.py``) evaluates every layer's images and reports the layer with the best
evaluation-model top-1 accuracy over all attacked classes (``best_layer_result``: the first layer
above every earlier one, from 0), a choice made with the evaluation model. ``report=last`` (the
default) reports the last layer, always; ``report=best`` the official choice: a first pass runs
every batch through every layer and counts the evaluation model's top-1 hits per layer (the
inversion then runs as one step over every attacked class and depends on the evaluation model),
a second pass reruns the optimisation with the same candidates and crops up to the chosen layer
and keeps its images (about twice the time; holding every layer's images instead would take
``len(steps)`` times the memory). The row's attack config says which (``report``); the
reconstructions' info holds each layer's accuracy and the layer reported.

Deliberate differences: images clamped to [-1, 1] and stored at 224 px (the official resizes
the 800-px crop to 299 px for evaluation); batches are cut from the class-major list of all
candidates (official: per class; the same batches whenever ``candidates`` is a multiple of
``batch``, as in the official 50/5); a generator with fewer than ``len(steps) + 1`` synthesis
blocks runs one phase per block but the last; z uses the harness seed; precision is the run's,
as in ``ppa``. tests/test_ppa.py compares the projection and the layer-wise search with
transcriptions of the official code.
"""

from __future__ import annotations

import contextlib
import math
import time

import torch
from torch import Tensor

from reinv_bench import hookimpl
from reinv_bench.api import AttackContext, ConfigError, Inversion, Param

from ._stylegan import (
    W_BYTES,
    StyleGANAttack,
    attack_transforms,
    mean_loss,
    view,
)

STEPS = (50.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0)  # main-resnet.yaml: intermediate.steps
RADII = (1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 6000.0, 8000.0, 8000.0)  # max_radius_mid_vecor, max_radius_w


def project_l1(x: Tensor, eps: float) -> Tensor:
    """Per sample (first dimension), the projection of ``x`` onto the L1 ball of radius ``eps``;
    a sample already inside (L1 norm < eps) is kept."""
    flat = x.flatten(1)
    mu = flat.abs().sort(1, descending=True).values
    cs = mu.cumsum(1)
    k = torch.arange(1, flat.shape[1] + 1, device=x.device)
    rho = ((mu * k > cs - eps) * k).amax(1)  # the number of coordinates left non-zero
    theta = (cs.gather(1, (rho - 1)[:, None]).squeeze(1) - eps) / rho
    proj = (flat.abs() - theta[:, None]).clamp(min=0) * flat.sign()
    return torch.where((flat.abs().sum(1) < eps)[:, None], flat, proj).view_as(x)


def blocks(G) -> list:
    """The synthesis blocks, lowest resolution first, each with the offset of its ws."""
    out, i = [], 0
    for res in G.synthesis.block_resolutions:
        block = getattr(G.synthesis, f"b{res}")
        out.append((block, i))
        i += block.num_conv
    return out


def run_from(G, ws: Tensor, start: int, x: Tensor | None, stop: int | None = None) -> tuple[Tensor, Tensor]:
    """Synthesis from block ``start`` (fed ``x``; None at block 0) through block ``stop`` (default:
    the last), the skip image started afresh at ``start``, as the official ``set_layer(start,
    stop)``; returns (features, image) of the last block run."""
    ws = ws.to(torch.float32)
    img = None
    for block, i in blocks(G)[start : None if stop is None else stop + 1]:
        x, img = block(
            x, img, ws.narrow(1, i, block.num_conv + block.num_torgb), noise_mode="const", force_fp32=True
        )
    return x, img


def layer_search(
    G,
    target,
    w: Tensor,
    y: Tensor,
    *,
    steps,
    radius_w,
    radius_mid,
    lr: float,
    betas,
    transform,
    fp32=contextlib.nullcontext,
    on_phase=None,
    identity=None,
) -> tuple[Tensor, Tensor, list[float]]:
    """One batch through every phase (the loss in float32: ``fp32``, the context's ``ctx.fp32``).
    Returns (w, the last phase's last forward images at the generator's size, mean loss at the
    last iteration of each phase). ``on_phase(phase, images)``: called with each phase's images
    (the official ``intermediate_imgs[phase]``). ``identity(x, y)`` (a wrapper's, per image, on
    the transformed images) replaces the Poincaré loss."""
    w = w.clone()
    mid, imgs, hist = None, None, []
    for phase, n in enumerate(steps):
        w.requires_grad_(True)
        variables = [w] if phase == 0 else [w, mid.requires_grad_(True)]
        prev_w = w.detach().clone()
        prev_mid = None if phase == 0 else mid.detach().clone()
        opt = torch.optim.Adam(variables, lr=lr, betas=tuple(betas), weight_decay=0)
        for _ in range(int(n)):
            ws = w.expand(-1, G.num_ws, -1) if w.shape[1] == 1 else w
            _, out = run_from(G, ws, phase, mid)
            imgs = out.detach()
            x = transform(out)
            loss = mean_loss(target(x), y, fp32) if identity is None else identity(x, y).float().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                if phase > 0 and radius_mid[phase] > 0:
                    mid.copy_(prev_mid + project_l1(mid - prev_mid, radius_mid[phase]))
                if radius_w[phase] > 0:
                    w.copy_(prev_w + project_l1(w - prev_w, radius_w[phase]))
        hist.append(loss.item())
        if on_phase is not None:
            on_phase(phase, imgs)
        with torch.no_grad():  # the feature entering the next phase's first block
            ws = w.expand(-1, G.num_ws, -1) if w.shape[1] == 1 else w
            mid, _ = run_from(G, ws, phase, mid, stop=phase)
            mid = mid.float()
        w = w.detach()
    return w, imgs, hist


class IFGMI(StyleGANAttack):
    name = "ifgmi"
    iterations_param = "steps"  # run --convergence doubles it (issue 29)
    threat_model = "white-box"
    optimiser = "adam"  # its search's optimiser (Attack.optimisation; --reported)
    prior_kind = "stylegan2"  # PPA's prior: one cached generator for both
    prior_params = ("weights",)
    accepts_identity = True  # adaptive+ifgmi: the identity replaces the Poincaré loss
    params = {
        "weights": Param(
            "stylegan2-ffhq",
            "the StyleGAN2-ADA generator: a registered weights name "
            "(`reinv-bench weights add stylegan2-ffhq ffhq.pkl`)",
        ),
        "search": Param(2000, "latents sampled in the candidate search (official: 2000)", low=1),
        "candidates": Param(50, "latents optimised and evaluated per class (official: 50)", low=1),
        "batch": Param(
            5, "latents optimised together (loss: their mean; one random crop per batch; official: 5)", low=1
        ),
        "steps": Param(
            STEPS,
            "iterations of each phase: w, then w and the feature entering block 1, 2, ... "
            "(official: 50/10/10/10/10/10/10/10)",
            low=1,
        ),
        "radius_w": Param(
            RADII,
            "L1 radius of w's deviation in each phase (official: 1000/2000/3000/4000/5000/"
            "6000/8000/8000; 0: none)",
            low=0.0,
        ),
        "radius_mid": Param(
            RADII,
            "L1 radius of the feature's deviation in each phase (official: as radius_w; 0: none)",
            low=0.0,
        ),
        "lr": Param(0.005, "Adam learning rate of every phase (official: 0.005)", low=0.0),
        "betas": Param((0.1, 0.1), "Adam betas (official: 0.1/0.1)", low=0.0, high=1.0),
        "psi": Param(0.5, "truncation psi of the candidate search (official: 0.5)", low=0.0, high=1.0),
        "cutoff": Param(8, "truncation cutoff (official: 8)", low=0),
        "single_w": Param(True, "optimise one w broadcast to every style input (official: true)"),
        "crop": Param(
            800, "center crop in px of the 1024-px generator output, scaled for others (official: 800)", low=1
        ),
        "rrc_scale": Param((0.9, 1.0), "RandomResizedCrop area range (official: 0.9-1)", low=0.0, high=1.0),
        "flip": Param(True, "candidate search scores the image and its mirror (official: true)"),
        "report": Param(
            "last",
            "the layer whose images are the reconstructions: last, or best (the official "
            "intermediate_attack.py: the layer with the best evaluation-model top-1 accuracy)",
            choices=("last", "best"),
            new=True,  # added in round 3: IF-GMI steps stored before keep their keys at report=last
        ),
    }
    budgets = {
        "smoke": {"search": 8, "candidates": 1, "batch": 64, "steps": (2.0, 1.0)},
        "quick": {
            "search": 500,
            "candidates": 4,
            "batch": 16,
            "steps": (20.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0),
        },
    }

    @classmethod
    def resolve(cls, overrides, budget="paper"):
        config = super().resolve(overrides, budget)
        if min(len(config.radius_w), len(config.radius_mid)) < len(config.steps):
            raise ConfigError(
                f"{cls.name}: radius_w and radius_mid need a value for each of the "
                f"{len(config.steps)} phases of steps"
            )
        return cls.checked(config)

    def memory_per_class(self, image_shape: tuple[int, ...]) -> int:
        """Host bytes per attacked class, for ``--class-chunk auto``: the candidates' full w
        (``candidates`` x ``W_BYTES``), their search confidences (``search`` floats) and every
        candidate's image at the scenario's size twice (the per-batch list and its concatenation).
        The paper configuration at 224 px: 50 x 36,864 + 2000 x 4 + 2 x 50 x 602,112 = 62.1 MB."""
        c, pixels = self.config, math.prod(image_shape)
        return c.candidates * W_BYTES + 4 * c.search + 2 * c.candidates * pixels * 4

    def uses_eval_model(self) -> bool:
        return self.config.report == "best"

    def selection(self) -> str | None:
        if self.config.report == "best":
            return "report=best: the layer whose images the evaluation model classifies best (official)"
        return None

    def attack(
        self, ctx: AttackContext, G, classes: list[int], t0: float | None = None, identity=None
    ) -> Inversion:
        c = self.config
        loss = identity.loss if identity else None  # a wrapper's (adaptive+ifgmi): replaces Poincaré
        t0 = time.perf_counter() if t0 is None else t0
        steps = c.steps[: len(blocks(G)) - 1]
        torch.manual_seed(ctx.seed)  # the random crops
        ws, conf = self.search(ctx, G, classes)
        w = (ws[:, :, :1] if c.single_w else ws).flatten(0, 1)
        y = torch.tensor(classes).repeat_interleave(c.candidates)
        info = {"phases": len(steps), "search_conf": conf.mean().item()}
        if c.report == "best":  # pass 1: each layer's evaluation-model accuracy; pass 2: its images
            crops = torch.get_rng_state()
            hits = self.phase_hits(ctx, G, w, y, steps, loss)
            best = best_layer([h / len(y) for h in hits])
            info.update({f"eval_acc_layer{i}": h / len(y) for i, h in enumerate(hits)})
            torch.set_rng_state(crops)  # the same crops: the same optimisation up to that layer
            steps = steps[: best + 1]
        images, first, last = self.run(ctx, G, w, y, steps, identity=loss)
        info.update(
            report=c.report,
            reported_layer=len(steps) - 1,
            loss_phase0=sum(first) / len(first),
            loss_last=sum(last) / len(last),
            seconds_per_class=(time.perf_counter() - t0) / len(classes),
        )
        return Inversion(images, y, info)

    def run(self, ctx: AttackContext, G, w: Tensor, y: Tensor, steps, on_phase=None, identity=None):
        """Every batch through ``steps``: (the last phase's images at the scenario's size, the
        first and the last phase's mean losses per batch). ``identity``: a wrapper's per-image
        loss in place of the Poincaré loss (its ``iters`` does not apply: the phases' steps do)."""
        c, dev, size = self.config, ctx.device, ctx.scenario.image_shape[-1]
        n_batches = -(-len(w) // c.batch)
        transform = attack_transforms(G.synthesis.img_resolution, size, c.crop, c.rrc_scale)
        images, first, last = [], [], []
        for b in range(n_batches):
            sl = slice(b * c.batch, (b + 1) * c.batch)
            _, imgs, hist = layer_search(
                G,
                ctx.target,
                w[sl].to(dev),
                y[sl].to(dev),
                steps=steps,
                radius_w=c.radius_w,
                radius_mid=c.radius_mid,
                lr=c.lr,
                betas=c.betas,
                transform=transform,
                fp32=ctx.fp32,
                identity=identity,
                on_phase=None
                if on_phase is None
                else lambda p, im, sl=sl: on_phase(p, view(im.float(), c.crop, size), sl),
            )
            images.append(
                view(imgs.float(), c.crop, size).clamp(-1, 1).cpu()
            )  # the 1024-px output dropped here
            first.append(hist[0])
            last.append(hist[-1])
            ctx.progress(b + 1, n_batches)
        return torch.cat(images), first, last

    def phase_hits(self, ctx: AttackContext, G, w: Tensor, y: Tensor, steps, identity=None) -> list[int]:
        """Per layer (phase), how many candidates' images the evaluation model classifies as their
        class (top-1), over every attacked class (the official ``ClassificationAccuracy`` per layer)."""
        hits = [0] * len(steps)

        def count(phase: int, images: Tensor, sl: slice) -> None:
            with torch.no_grad():
                pred = ctx.eval_model(images.clamp(-1, 1)).argmax(1).cpu()
            hits[phase] += int((pred == y[sl]).sum())

        self.run(ctx, G, w, y, steps, on_phase=count, identity=identity)
        return hits


def best_layer(accs: list[float]) -> int:
    """The official choice (``intermediate_attack.py``): the first layer whose top-1 accuracy is
    above every earlier one's, starting from 0 (layer 0 when none is above 0)."""
    best_acc, best = 0.0, 0
    for i, acc in enumerate(accs):
        if acc > best_acc:
            best_acc, best = acc, i
    return best


@hookimpl
def register_attacks():
    return [IFGMI]
