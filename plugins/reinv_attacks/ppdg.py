"""``ppdg``: Pseudo-Private Data Guided model inversion, a wrapper over a GAN-prior attack.

Paper: Peng, Han, Liu, Liu, Zhou. "Pseudo-Private Data Guided Model Inversion Attacks."
NeurIPS 2024. Code: github.com/tmlr-group/PPDG-MI @b8e73b6 (low resolution: ``whitebox_recovery.py``
main loop, ``utils.py::perform_final_selection``, ``scores_by_transform``, ``engine.py::
tune_general_gan``, ``tune_specific_gan``, ``config/celeba/training_GAN/{general,specific}_gan/
celeba.json``; README commands).

Syntax: ``-a ppdg+gmi``, ``-a ppdg+kedmi``, ``-a ppdg+lomma+gmi`` (``-a "ppdg[tune_epochs=5]+gmi"``).
For every attacked class, as the official loop does (``for target_id ...: G = deepcopy(original_G)``):

1. Round 1: the base attack on the class alone, as configured except that it makes ``candidates``
   reconstructions of the class (gmi's restarts, kedmi's samples): 1,000 at the paper budget, the
   official ``--num_candidates=1000`` of the README's PPDG-vanilla commands; 50 at ``quick``, 4 at
   ``smoke``. Each reconstruction is the one the base would make as its first ``candidates``
   (restart ``r`` of class ``c`` draws from the same stream).
2. Pseudo-private selection (``perform_final_selection``): each of the class's reconstructions
   is scored by the target's softmax confidence in the class averaged over ``select_iters`` = 100
   random transforms (``scores_by_transform``: RandomResizedCrop(size, scale 0.8-1, ratio 1),
   ColorJitter(brightness 0.2, contrast 0.2), RandomHorizontalFlip(0.5), RandomRotation(5), on
   pixels in [0, 1] as the official sigmoid generator's output; torchvision on a batch tensor:
   one draw per batch of 100, the official loader's); the ``keep`` = 1/2 most confident are kept
   (``samples_per_target = num_candidates // 2``): 500 of 1,000 at paper, 25 of 50 at quick.
3. Fine-tune a copy of the base's GAN with the base's own GAN objective on the public images plus
   the pseudo-private images (``ConcatDataset``, shuffled, last batch kept): ``tune_general_gan``
   for gmi (WGAN-GP: critic -W + 10 * gradient penalty, generator -D(G(z))),
   ``tune_specific_gan`` for kedmi (the semi-supervised loss with the target's soft labels,
   feature matching + 1e-4 * entropy); Adam lr 2e-4, betas (0.5, 0.999), batch 64, a generator
   step every 5 discriminator steps, ``tune_epochs`` = 10 epochs (``--num_epoch``), fresh
   optimizers, the networks left in eval mode as the official code leaves them (the attack calls
   ``G.eval()``; the fine-tune never calls ``train()``).
4. Round 2 (``rounds`` = 2, ``--num_round=2``): the base attack again with the class's fine-tuned
   generator and discriminator, from fresh latents; its reconstructions are the result.

How many pseudo-private images each class contributed is in the result (``Inversion.info``
``pseudo_private_per_class``, ``pseudo_private_share`` of the fine-tuning set, and a remark in the
row's notes under ``ppdg``). Under ``TINY_SHARE`` = 0.5 % of the fine-tuning images (the official
run: 500 of 30,500, 1.6 %) the fine-tune barely moves the generator: the step warns and the note
says so (at ``smoke``, and at ``quick`` on the faces' 30,000 public images).

The fine-tuned networks are a cached prior (kind ``ppdg-tuned``), per target, built from the
base's priors (``PriorSpec.needs``): one generator and discriminator per attacked class (at 64 px
and the official widths about 38 MB per class for gmi, 96 MB for kedmi, in float32: 300 classes
take 11 / 29 GB of the workdir). The step checkpoints between classes (a killed step resumes at
the next class: the checkpoint holds the round's reconstructions and the networks tuned so far).

Not supported: ``ppdg+plgmi`` (its fine-tune, ``PLG-MI/engine.py::tune_cgan``, needs the cGAN's
discriminator, which the plgmi prior does not keep) and ``ppdg+ppa`` (the high-resolution
fine-tune projects the pseudo-private images into StyleGAN's W with NVIDIA's VGG16 feature network
``vgg16.pt``, not available offline, and tunes the 1024-px synthesis network): both are refused.

Deliberate differences: the official low-resolution runs use 1200 iterations per round (README);
here each round runs the base's (give them to the base: ``ppdg+gmi[iters=1200]``). The last round
makes the base's own number of reconstructions per class (gmi's ``restarts``, kedmi's ``samples``:
5 at paper), so that ``ppdg+gmi`` and ``gmi`` are evaluated on as many; the official last round
evaluates all 1,000 candidates. The official ``GMI_inversion`` optimises a class's candidates in
batches of 100 and takes the batch mean (each latent's step 1/100 of its gradient); here each
latent steps as in the base's identity batches (1/60). Every round attacks one class at a time
(each with its own generator); for gmi the learning rate is divided by the size of the class's
identity batch in the base's protocol, which leaves every latent's Nesterov-SGD trajectory exactly
the batched one (the loss is separable per latent); kedmi's Adam is scale-free, but its minibatch
discrimination then sees the class's rows only. The official ``whitebox_recovery.py`` calls
``GMI_inversion`` for kedmi and ``KED_inversion`` for gmi with each other's argument order (a
rename in commit a98ed5b): the intended pairing is used. Round r draws its latents from seed + r *
1,000,003 (official: the next draws of the global stream).
"""

from __future__ import annotations

import copy
import math
import sys
import warnings
from dataclasses import replace

import torch
import torchvision.transforms as T
from torch import Tensor

from reinv_bench import hookimpl
from reinv_bench.api import (
    Attack,
    AttackContext,
    ConfigError,
    Inversion,
    Param,
    PriorSpec,
    WrapperAttack,
)

from ._gan import batch_stream, kedmi_d_loss, kedmi_g_loss, train_gan, wgan_gp_losses
from ._latent import identity_batches

TUNED = "ppdg-tuned"
SELECT_BATCH = 100  # the official selection loader's batch (``batch_size = 100``)
ROUND_SEED = 1_000_003  # round r draws its latents from seed + r * ROUND_SEED
SUPPORTED = ("gmi", "kedmi")
COUNT = {"gmi": "restarts", "kedmi": "samples"}  # the base's reconstructions per class
TINY_SHARE = 0.005  # pseudo-private share of the fine-tuning images under which the step warns


def innermost(attack: Attack) -> Attack:
    """The attack at the bottom of a wrapper chain (``lomma+gmi`` -> gmi): the owner of the GAN."""
    while isinstance(attack, WrapperAttack):
        attack = attack.base
    return attack


def with_base_config(attack: Attack, **overrides) -> Attack:
    """A shallow copy of a wrapper chain whose innermost attack's config has ``overrides``."""
    new = copy.copy(attack)
    if isinstance(attack, WrapperAttack):
        new.base = with_base_config(attack.base, **overrides)
    elif overrides:
        new.config = copy.copy(attack.config)
        new.config.update(overrides)
    return new


def describe(attack: Attack) -> dict:
    """What determines the first round: the base chain's names, versions and configs."""
    d = {"name": attack.name, "version": attack.version, "config": dict(attack.config)}
    return {**d, "base": describe(attack.base)} if isinstance(attack, WrapperAttack) else d


# ---- pseudo-private selection ------------------------------------------------------------------


def selection_transforms(size: int) -> T.Compose:
    """``perform_final_selection``'s transforms (low resolution), on pixels in [0, 1]."""
    return T.Compose(
        [
            T.RandomResizedCrop(size=(size, size), scale=(0.8, 1.0), ratio=(1.0, 1.0)),
            T.ColorJitter(brightness=0.2, contrast=0.2),
            T.RandomHorizontalFlip(0.5),
            T.RandomRotation(5),
        ]
    )


@torch.no_grad()
def selection_scores(target, images: Tensor, c: int, *, iters: int, device) -> Tensor:
    """``scores_by_transform`` per batch of ``SELECT_BATCH``: the target's mean softmax confidence
    in class ``c`` over ``iters`` random transforms of each image ([-1, 1] images; the transforms
    act on [0, 1] pixels, the target sees [-1, 1])."""
    transform, out = selection_transforms(images.shape[-1]), []
    for i in range(0, len(images), SELECT_BATCH):
        p = images[i : i + SELECT_BATCH].to(device) * 0.5 + 0.5
        score = torch.zeros(len(p), device=device)
        for _ in range(iters):
            score += target((transform(p) - 0.5) / 0.5).float().softmax(1)[:, c]
        out.append(score / iters)
    return torch.cat(out).cpu()


def select(scores: Tensor, keep: float) -> Tensor:
    """Indices of the pseudo-private reconstructions: the ``floor(n * keep)`` (at least one) of
    highest score, best first (official ``indices[:samples_per_target]``)."""
    return scores.sort(descending=True).indices[: max(1, int(len(scores) * keep))]


# ---- fine-tuning -------------------------------------------------------------------------------


def kedmi_losses(G, D, T_, z_dim: int, device):
    """``tune_specific_gan``'s losses (KEDMI's ``k+1_gan.py``) on (labelled, unlabelled,
    unlabelled-for-G) batches."""

    def d_loss(b: list[Tensor]) -> Tensor:
        return kedmi_d_loss(D, T_, b[0], b[1], G(torch.randn(len(b[0]), z_dim, device=device)))

    def g_loss(b: list[Tensor]) -> Tensor:
        return kedmi_g_loss(D, G(torch.randn(len(b[0]), z_dim, device=device)), b[2])

    return d_loss, g_loss


def fine_tune(G, D, losses, data: Tensor, streams: int, c, seed: int, device) -> None:
    """Fine-tune G and D in place on ``data`` (public + pseudo-private images) for ``c.tune_epochs``
    passes (``batch_stream``, last batch kept), a generator step every ``c.n_critic`` D steps, fresh Adam(lr,
    betas (0.5, 0.999)); at least one generator step (a fractional smoke budget). G and D keep
    their eval mode (official)."""
    steps = max(c.n_critic, round(c.tune_epochs * math.ceil(len(data) / c.tune_batch)))
    x = data.to(device)
    gen = torch.Generator().manual_seed(seed)

    def batches(start: int):
        stream = batch_stream(len(x), c.tune_batch, steps, gen, streams, start, drop_last=False)
        return (x[i[0]] if streams == 1 else [x[j] for j in i] for i in stream)

    d_loss, g_loss = losses
    train_gan(
        G, D, batches, d_loss, g_loss, steps=steps, n_critic=c.n_critic, lr=c.tune_lr, betas=(0.5, 0.999)
    )


def interned(obj):
    """``obj`` with its dicts' string keys interned: the artifact's pickle then has the same bytes
    whether the state dicts came from the networks or, after a resume, from a checkpoint (pickle
    writes a string once per object, and the two share key objects differently)."""
    if isinstance(obj, dict):
        return {sys.intern(k) if isinstance(k, str) else k: interned(v) for k, v in obj.items()}
    return obj


# ---- the wrapper -------------------------------------------------------------------------------


class PPDG(WrapperAttack):
    name = "ppdg"
    version = 2  # 2: rounds before the last make `candidates` reconstructions per class (issue 30)
    # adaptive+ppdg+gmi: the identity is handed to the base in the last round (the inversion);
    # the rounds before it run inside the cached prior (the pseudo-private selection), as the plain base
    accepts_identity = True
    params = {
        "rounds": Param(2, "attack rounds, the GAN fine-tuned after each but the last (official: 2)", low=2),
        "candidates": Param(
            1000,
            "reconstructions per class in the rounds before the last, from which `keep` are "
            "pseudo-private (official --num_candidates: 1000)",
            low=1,
        ),
        "keep": Param(
            0.5,
            "fraction of a class's reconstructions kept as pseudo-private data, most confident "
            "first (official: num_candidates // 2)",
            low=0.0,
            high=1.0,
        ),
        "select_iters": Param(
            100, "random transforms averaged into a selection score (official: 100)", low=1
        ),
        "tune_epochs": Param(
            10.0, "fine-tuning passes over public + pseudo-private images (official --num_epoch: 10)", low=0.0
        ),
        "tune_batch": Param(64, "fine-tuning batch size (official: 64)", low=1),
        "tune_lr": Param(2e-4, "fine-tuning Adam lr, betas (0.5, 0.999) (official: 2e-4)", low=0.0),
        "n_critic": Param(5, "discriminator steps per generator step (official: 5)", low=1),
        "gp": Param(10.0, "gradient-penalty weight of the gmi fine-tune (official: 10)", low=0.0),
    }
    budgets = {
        "smoke": {"candidates": 4, "select_iters": 2, "tune_epochs": 0.1},
        "quick": {"candidates": 50, "select_iters": 20, "tune_epochs": 1.0},
    }

    def __init__(self, config=None, budget: str = "paper", base: Attack | None = None) -> None:
        Attack.__init__(self, config, budget)
        gan = innermost(base) if base is not None else None
        if gan is None or gan.name not in SUPPORTED:
            raise ConfigError(
                f"ppdg wraps gmi or kedmi (also under lomma: ppdg+lomma+gmi); got "
                f"{getattr(gan, 'name', None)!r} (plgmi: its prior keeps no discriminator to fine-tune; "
                "ppa: the StyleGAN fine-tune needs NVIDIA's vgg16.pt): write e.g. -a ppdg+gmi"
            )
        self.base, self.gan = base, gan
        self.threat_model = base.threat_model

    def priors(self) -> list[PriorSpec]:
        base = self.base.priors()
        own = PriorSpec(
            TUNED,
            {**{k: self.config[k] for k in self.params}, "base": describe(self.base)},
            uses_target=True,
            version=self.version,
            needs=tuple(p.kind for p in base),
        )
        return [*base, own]

    # -- rounds --

    def _attack_class(
        self,
        ctx: AttackContext,
        priors: dict,
        cls: int,
        r: int,
        batch: int,
        nets=None,
        count=None,
        identity=None,
    ) -> Inversion:
        """Round ``r`` (0-based) of the base on class ``cls`` alone, with the class's networks
        ``nets`` (G and D state dicts; None: the shared prior) and ``count`` reconstructions (None:
        the base's). ``batch``: the size of the class's identity batch in the base's protocol (gmi
        divides its learning rate by it, so every latent steps exactly as in the batched base)."""
        over = {"lr": self.gan.config.lr / batch} if self.gan.name == "gmi" else {}
        if count is not None:
            over[COUNT[self.gan.name]] = count
        kind = self.gan.prior_kind
        p = priors if nets is None else {**priors, kind: {**priors[kind], **nets}}
        return with_base_config(self.base, **over).invert(
            replace(ctx, seed=ctx.seed + r * ROUND_SEED), p, [cls], identity
        )

    def _batch_sizes(self, classes: list[int]) -> dict[int, int]:
        return {cls: len(ids) for ids in identity_batches(classes, self.gan.config.batch_ids) for cls in ids}

    def _round(
        self, ctx: AttackContext, priors: dict, classes: list[int], r: int, tuned: dict, identity=None
    ) -> Inversion:
        """The last round, class by class with each class's fine-tuned networks ``tuned[str(c)]``,
        the base's own number of reconstructions per class, in the base's order."""
        parts, first, last = [], [], []
        for cls, batch in self._batch_sizes(classes).items():
            if str(cls) not in tuned:
                raise ConfigError(f"ppdg: no fine-tuned generator for class {cls} in the cached prior")
            inv = self._attack_class(ctx, priors, cls, r, batch, tuned[str(cls)], identity=identity)
            parts.append(inv.images)
            first.append(inv.info.get("loss_first", float("nan")))
            last.append(inv.info.get("loss_last", float("nan")))
        per_class = len(parts[0])  # each class's images, restart/sample major: interleave as the base does
        images = torch.stack(parts, 1).flatten(0, 1)
        labels = torch.tensor(classes * per_class, dtype=torch.long)
        return Inversion(
            images, labels, {"loss_first": sum(first) / len(first), "loss_last": sum(last) / len(last)}
        )

    def prepare(self, ctx: AttackContext, kind: str) -> dict:
        if kind != TUNED:
            return super().prepare(ctx, kind)
        c, dev, gan = self.config, ctx.device, self.gan
        classes = ctx.scenario.target_classes()
        batch = self._batch_sizes(classes)
        torch.manual_seed(ctx.seed)
        public = ctx.data.public.x.to(
            "cpu"
        )  # a file-backed public set (faces): decoded once, as the official
        # one unit per (round, class): the class's round-r attack (``candidates`` reconstructions),
        # its selection and fine-tune. A checkpoint between units keeps what the next ones read.
        memo: dict = {"tuned": None, "new": {}, "scores": {}}
        n = (c.rounds - 1) * len(classes)
        for u in range(ctx.checkpoint.resume(n, {"memo": memo}), n):
            r, j = divmod(u, len(classes))
            cls = classes[j]
            if j == 0 and r:
                memo["tuned"], memo["new"] = memo["new"], {}
            nets = None if memo["tuned"] is None else memo["tuned"][str(cls)]
            imgs = self._attack_class(ctx, ctx.priors, cls, r, batch[cls], nets, count=c.candidates).images
            s = selection_scores(ctx.target, imgs, cls, iters=c.select_iters, device=dev)
            sel = select(s, c.keep)
            memo["scores"][str(cls)] = s[sel]
            prior = ctx.priors[gan.prior_kind] if nets is None else {**ctx.priors[gan.prior_kind], **nets}
            data = torch.cat([public, imgs[sel]])
            memo["new"][str(cls)] = self._tune(ctx, prior, data, seed=ctx.seed + cls)
            if u == 0 and len(sel) / len(data) < TINY_SHARE:
                warnings.warn(tiny_note(len(sel), len(imgs), len(public)), stacklevel=2)
            ctx.progress(u + 1, n)
            ctx.checkpoint.reached(u + 1, n, {"memo": memo})
        ctx.checkpoint.finish(None)
        return interned(
            {"tuned": memo["new"], "scores": memo["scores"], "classes": classes, "public": len(public)}
        )

    def _tune(self, ctx: AttackContext, prior: dict, data: Tensor, seed: int) -> dict:
        """A copy of the base's G and D (from ``prior``) fine-tuned on ``data``: their state dicts."""
        gan, dev, c = self.gan, ctx.device, self.config
        if gan.name == "gmi":
            G, D = gan.load_prior(prior, ctx.scenario.image_shape, dev)
            losses, streams = wgan_gp_losses(G, D, gan.z_dim, c.gp, dev), 1
        else:
            G, D = gan.load_prior(prior, ctx.scenario, dev)
            losses, streams = kedmi_losses(G, D, ctx.target, gan.z_dim, dev), 3
        fine_tune(G, D, losses, data, streams, c, seed, dev)
        return {
            "G": {k: v.cpu() for k, v in G.state_dict().items()},
            "D": {k: v.cpu() for k, v in D.state_dict().items()},
        }

    def invert(self, ctx: AttackContext, priors: dict, classes: list[int], identity=None) -> Inversion:
        p = priors[TUNED]
        inv = self._round(ctx, priors, classes, self.config.rounds - 1, p["tuned"], identity)
        sel = [p["scores"][str(cls)] for cls in classes if str(cls) in p["scores"]]
        inv.info["pseudo_private_conf"] = sum(s.mean().item() for s in sel) / max(1, len(sel))
        # the pseudo-private images of the last fine-tune, per class (the same for every class)
        kept = min(len(s) for s in sel)
        share = kept / (kept + p["public"])
        inv.info.update(pseudo_private_per_class=kept, pseudo_private_share=share)
        note = f"{kept} pseudo-private images per class of {self.config.candidates} candidates"
        note += f" ({100 * share:.2g} % of the fine-tuning images)"
        inv.info["notes"] = {
            "ppdg": tiny_note(kept, self.config.candidates, p["public"]) if share < TINY_SHARE else note
        }
        return inv


def tiny_note(kept: int, candidates: int, public: int) -> str:
    return (
        f"ppdg: only {kept} pseudo-private images per class (of {candidates} candidates) among {public} "
        f"public ones: the fine-tune barely moves the generator (official: 500 of 1,000 among ~30,000; "
        f"give more with ppdg[candidates=N])"
    )


@hookimpl
def register_attacks():
    return [PPDG]
