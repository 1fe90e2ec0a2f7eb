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
cropped 800 px and resized to the scenario's 224 px. The official evaluation reports the layer
with the best evaluation-model accuracy, a choice made with the evaluation model; the last layer
is reported here, always.

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
import time

import torch
from torch import Tensor

from reinv_bench import hookimpl
from reinv_bench.api import AttackContext, ConfigError, Inversion, Param

from ._stylegan import (
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
) -> tuple[Tensor, Tensor, list[float]]:
    """One batch through every phase (the loss in float32: ``fp32``, the context's ``ctx.fp32``).
    Returns (w, the last phase's last forward images at the generator's size, mean loss at the
    last iteration of each phase)."""
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
            logits = target(transform(out))
            loss = mean_loss(logits, y, fp32)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                if phase > 0 and radius_mid[phase] > 0:
                    mid.copy_(prev_mid + project_l1(mid - prev_mid, radius_mid[phase]))
                if radius_w[phase] > 0:
                    w.copy_(prev_w + project_l1(w - prev_w, radius_w[phase]))
        hist.append(loss.item())
        with torch.no_grad():  # the feature entering the next phase's first block
            ws = w.expand(-1, G.num_ws, -1) if w.shape[1] == 1 else w
            mid, _ = run_from(G, ws, phase, mid, stop=phase)
            mid = mid.float()
        w = w.detach()
    return w, imgs, hist


class IFGMI(StyleGANAttack):
    name = "ifgmi"
    threat_model = "white-box"
    prior_kind = "stylegan2"  # PPA's prior: one cached generator for both
    prior_params = ("weights",)
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

    def attack(self, ctx: AttackContext, G, classes: list[int], t0: float | None = None) -> Inversion:
        c, dev, T_ = self.config, ctx.device, ctx.target
        t0 = time.perf_counter() if t0 is None else t0
        size = ctx.scenario.image_shape[-1]
        steps = c.steps[: len(blocks(G)) - 1]
        torch.manual_seed(ctx.seed)  # the random crops
        ws, conf = self.search(ctx, G, classes)
        w = (ws[:, :, :1] if c.single_w else ws).flatten(0, 1)
        y = torch.tensor(classes).repeat_interleave(c.candidates)
        n_batches = -(-len(w) // c.batch)
        transform = attack_transforms(G.synthesis.img_resolution, size, c.crop, c.rrc_scale)
        images, first, last = [], [], []
        for b in range(n_batches):
            sl = slice(b * c.batch, (b + 1) * c.batch)
            _, imgs, hist = layer_search(
                G,
                T_,
                w[sl].to(dev),
                y[sl].to(dev),
                steps=steps,
                radius_w=c.radius_w,
                radius_mid=c.radius_mid,
                lr=c.lr,
                betas=c.betas,
                transform=transform,
                fp32=ctx.fp32,
            )
            images.append(
                view(imgs.float(), c.crop, size).clamp(-1, 1).cpu()
            )  # the 1024-px output dropped here
            first.append(hist[0])
            last.append(hist[-1])
            ctx.progress(b + 1, n_batches)
        info = {
            "loss_phase0": sum(first) / len(first),
            "loss_last": sum(last) / len(last),
            "phases": len(steps),
            "search_conf": conf.mean().item(),
            "seconds_per_class": (time.perf_counter() - t0) / len(classes),
        }
        return Inversion(torch.cat(images), y, info)


@hookimpl
def register_attacks():
    return [IFGMI]
