"""What ``ppa`` and ``ifgmi`` share: the StyleGAN2 prior (load, rebuild), PPA's candidate search
and transforms, the Poincaré loss, and the ``StyleGANAttack`` base. The official functions each
piece follows are named in ``ppa``'s docstring; tests/test_ppa.py compares them with
transcriptions of the official code.

Precision is the run's: the pieces here open no autocast region of their own. ``StyleGANAttack``
runs the attack under ``ctx.autocast()`` (bf16 under ``--precision bf16``: mapping, synthesis and
target) and the loss under ``ctx.fp32()``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from torch import Tensor

from reinv_bench.api import (
    Attack,
    AttackContext,
    ConfigError,
    Inversion,
    Progress,
    WeightsFile,
    WeightsUnavailable,
    locate,
    no_progress,
    sha256_of,
)

from ._stylegan2_load import UnsafePickleError, convert_pickle, generator_from_state, load_generator

REFERENCE_SIDE = 1024  # the official crop sizes are pixels of the 1024-px FFHQ generator


def poincare_loss(logits: Tensor, y: Tensor, xi: float = 1e-4) -> Tensor:
    """Per-sample Poincaré distance between the L1-normalised logits u and the one-hot target
    shrunk by xi, v = clip(onehot - xi, 0, 1): arccosh(1 + 2|u-v|^2 / ((1-|u|^2)(1-|v|^2)))."""
    u = logits / logits.abs().sum(1, keepdim=True)
    v = (torch.nn.functional.one_hot(y, logits.shape[1]).to(u.dtype) - xi).clamp(0, 1)
    uu, vv = u.pow(2).sum(1), v.pow(2).sum(1)
    return torch.acosh(1 + 2 * (u - v).pow(2).sum(1) / ((1 - uu) * (1 - vv)))


def mean_loss(logits: Tensor, y: Tensor, fp32: Callable[[], Any] = contextlib.nullcontext) -> Tensor:
    """The batch's mean Poincaré loss, computed in float32 (``fp32``: the context's region kept
    in float32, ``ctx.fp32``)."""
    with fp32():
        return poincare_loss(logits.float(), y).mean()


def crop_side(side: int, crop: int) -> int:
    """The center crop for a generator of ``side`` px: ``crop`` px of 1024, scaled."""
    return max(1, min(side, round(side * crop / REFERENCE_SIDE)))


def view(x: Tensor, crop: int, size: int) -> Tensor:
    """Generator output -> the target's input: center crop (``crop`` of 1024 px), resize to ``size``
    with antialiasing (``find_initial_w``, ``create_image``, the first two attack transforms)."""
    x = TF.center_crop(x, [crop_side(x.shape[-1], crop)] * 2)
    return TF.resize(x, [size, size], antialias=True)


def attack_transforms(side: int, size: int, crop: int, scale: tuple[float, float]) -> T.Compose:
    """The optimisation's transforms (the configs' ``attack.transformations``) for a generator of
    ``side`` px and a target of ``size`` px."""
    return T.Compose(
        [
            T.CenterCrop(crop_side(side, crop)),
            T.Resize(size, antialias=True),
            T.RandomResizedCrop([size, size], scale=tuple(scale), ratio=(1.0, 1.0), antialias=True),
        ]
    )


def synthesize(G, w: Tensor) -> Tensor:
    """Images of style vectors (N, 1 or num_ws, w_dim); one row is broadcast to every style input.
    ``force_fp32`` as the official code (the float16 blocks of ``ffhq.pkl`` run in float32)."""
    if w.shape[1] == 1:
        w = w.expand(-1, G.num_ws, -1)
    return G.synthesis(w, noise_mode="const", force_fp32=True)


# host bytes of one candidate's full w (num_ws x w_dim float32) under the 1024-px FFHQ generator (18 x
# 512), the largest here: what the candidate search keeps per candidate (``memory_per_class``)
W_BYTES = 18 * 512 * 4


def search_latents(z_dim: int, n: int, seed: int) -> Tensor:
    """The official search space: ``np.random.RandomState(seed).randn(n, z_dim)`` (float64; the
    mapping network casts it to float32)."""
    return torch.from_numpy(np.random.RandomState(seed).randn(n, z_dim)).float()


def select_candidates(conf: Tensor, k: int) -> Tensor:
    """(search, classes) confidences -> (classes, k) indices: per class the k most confident,
    best first (``find_initial_w``'s loop picks the argmax and masks it, k times)."""
    return conf.topk(k, dim=0).indices.T


@torch.no_grad()
def candidate_search(
    G,
    target,
    classes: list[int],
    *,
    search: int,
    k: int,
    psi: float,
    cutoff: int,
    crop: int,
    size: int,
    flip: bool,
    batch: int,
    seed: int,
    device: torch.device,
    progress: Progress = no_progress,
) -> tuple[Tensor, Tensor]:
    """Returns (ws, conf): the full truncated ws of the candidates, (classes, k, num_ws, w_dim) on
    CPU, and their search confidences (classes, k)."""
    z = search_latents(G.z_dim, search, seed).to(device)
    ws, confs = [], []
    steps = math.ceil(search / batch)
    for s, i in enumerate(range(0, search, batch)):
        w = G.mapping(z[i : i + batch], None, truncation_psi=psi, truncation_cutoff=cutoff)
        x = view(G.synthesis(w, noise_mode="const", force_fp32=True).float().clamp(-1, 1), crop, size)
        views = [x, TF.hflip(x)] if flip else [x]
        c = sum(target(v).float().softmax(1) / len(views) for v in views)
        ws.append(w.float().cpu())
        confs.append(c[:, classes].cpu())
        del x, views
        progress(s + 1, steps)
    ws_all, conf = torch.cat(ws), torch.cat(confs)
    idx = select_candidates(conf, k)
    return ws_all[idx], conf.gather(0, idx.T).T


# ---- the generator prior ------------------------------------------------------------------------


def _convert_for_weights(source, dest, entry: str) -> None:
    try:
        convert_pickle(source, dest, entry)  # refuses a generator of another architecture
    except UnsafePickleError as exc:
        raise WeightsUnavailable(f"{exc} (not converted)") from None


# the generator files the attacks can use (registered by ``stylegan2_weights``), by name
GENERATORS = {
    w.name: w
    for w in [
        WeightsFile(
            "stylegan2-ffhq",
            "stylegan2-ffhq.pt",
            "",
            "StyleGAN2-ADA FFHQ 1024 px generator (G_ema of NVIDIA's ffhq.pkl), the image prior of PPA; "
            "`weights add` converts the pickle without running its code",
            "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",
            torch_dir="",
            convert=functools.partial(_convert_for_weights, entry="stylegan2-ffhq"),
        )
    ]
}


def load_prior(name: str, attack: str = "ppa") -> dict[str, Any]:
    """The generator weights registered as ``name`` (``GENERATORS``), verified and loaded without
    unpickling code, as the cached prior: init kwargs and state dict."""
    entries = GENERATORS
    if name not in entries:
        raise ConfigError(
            f"{attack}: weights={name!r} is not a StyleGAN2-ADA generator entry (known: {', '.join(entries)})"
        )
    path = locate(entries[name])  # WeightsUnavailable names `reinv-bench weights add NAME FILE`
    G = load_generator(path)
    return {
        "kwargs": G.init_kwargs,
        "G": {k: v.detach().cpu() for k, v in G.state_dict().items()},
        "weights": name,
        "sha256": sha256_of(path),
    }


def generator(prior: dict[str, Any], device: torch.device):
    """The generator of a prior, on ``device``, frozen."""
    return generator_from_state(prior["kwargs"], prior["G"]).to(device).eval().requires_grad_(False)


# ---- the attack base ----------------------------------------------------------------------------


class StyleGANAttack(Attack):
    """An attack whose prior is the pretrained StyleGAN2 generator (``ppa``, ``ifgmi``): ``prepare``
    loads it, ``invert`` hands it to the attack's own ``attack(ctx, G, classes, t0)`` under the
    run's autocast."""

    @classmethod
    def resolve(cls, overrides, budget="paper"):
        if "precision" in overrides:
            raise ConfigError(
                f"{cls.name}: precision is not a parameter of the attack: the run's precision applies, "
                f"give --precision {overrides['precision']} on the command line"
            )
        return super().resolve(overrides, budget)

    @classmethod
    def checked(cls, config):
        """The checks both attacks' configurations need."""
        if config.candidates > config.search:
            raise ConfigError(f"{cls.name}: candidates={config.candidates} exceeds search={config.search}")
        if len(config.betas) != 2 or len(config.rrc_scale) != 2:
            raise ConfigError(f"{cls.name}: betas and rrc_scale take two values (e.g. 0.1/0.1, 0.9-1)")
        return config

    def prepare(self, ctx: AttackContext, kind: str) -> dict:
        return load_prior(self.config.weights, self.name)

    def search(self, ctx: AttackContext, G, classes: list[int], progress=None):
        """The candidate search both attacks start from, with this attack's configuration:
        (w per class and candidate, their confidences), the candidates' w flattened class-major and
        their labels."""
        c = self.config
        kwargs = {} if progress is None else {"progress": progress}
        ws, conf = candidate_search(
            G,
            ctx.target,
            classes,
            search=c.search,
            k=c.candidates,
            psi=c.psi,
            cutoff=c.cutoff,
            crop=c.crop,
            size=ctx.scenario.image_shape[-1],
            flip=c.flip,
            batch=c.batch,
            seed=ctx.seed,
            device=ctx.device,
            **kwargs,
        )
        return ws, conf

    def invert(self, ctx: AttackContext, priors: dict, classes: list[int], identity=None) -> Inversion:
        t0 = time.perf_counter()
        G = generator(priors[self.prior_kind], ctx.device)
        with ctx.autocast():  # ``identity``: only to an attack that accepts it (ppa; a wrapper's)
            return self.attack(ctx, G, classes, t0, **({"identity": identity} if identity else {}))

    def attack(self, ctx: AttackContext, G, classes: list[int], t0: float | None = None) -> Inversion:
        raise NotImplementedError

    def identity_term(self, logits, y):
        """The Poincaré loss per image (ppa and ifgmi), in float32."""
        return poincare_loss(logits.float(), y)
