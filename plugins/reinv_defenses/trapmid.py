"""``trapmid``: Trap-MID, trapdoor-based defense against model inversion.

Paper: Liu, Lin, Chen, Hsu. "Trap-MID: Trapdoor-based Defense against Model Inversion Attacks."
NeurIPS 2024. Code: github.com/ntuaislab/Trap-MID @3d59377 (``engine.py`` ``blend``/``train``,
``train.py`` ``main``, ``loss.py`` ``NegLSCrossEntropyLoss``/``ls_scheduler``, ``utils.py``
``init_optimizer``, ``config/celeba/classify_trap.json``, ``classify_trap_negls.json``).

One trigger k_c per class, drawn U[0, 1] with the image's shape (``torch.rand(n_classes, C, H, W)``).
Each step (``engine.train``), with a trapdoor target t per example (every class equally often in an
epoch, in random order) and x' = alpha k_t + (1 - alpha) x in pixel space [0, 1]:

1. the discriminator D (a copy of the target architecture with one output, its own optimiser and
   schedule as the target's) takes one step of BCE(D([x, x']), [1, 0]);
2. with the model in eval mode, the triggers take one signed-gradient step
   k <- clip(k - step * sign(grad_k L_trig), 0, 1),
   L_trig = BCE(D(x'), 1) + CE(f(aug(x')), t);
3. the model trains on (1 - beta) CE(f(aug(x)), y) + beta CE(f(aug(x'')), t), with x'' blended
   from the updated triggers, clean and trapdoor halves in one forward pass (one BatchNorm batch).

``aug`` (only with trapdoors on; kornia, each op p = 0.5 per image): RandomResizedCrop (scale
0.8-1, ratio 1), horizontal flip, rotation uniform in +-30 degrees; drawn independently for the
clean and the trapdoor halves and for the trigger step. Defaults as ``classify_trap.json``: alpha
0.02, beta 0.2, step 1e-2, discriminator loss on (its feature-level variants are off there and are
not implemented).

NegLS combination (``classify_trap_negls.json``): ``trapmid[negls=-0.05]``. Both criteria (the
clean one and the trapdoor one, which the official ``train.py`` gives the same smoothing by
default, also inside the trigger step) become NegLS with the official schedule (0 before 50% of
the epochs, ramp to 75%, then full; as ``negls`` here, as fractions of the recipe's epochs).
``trapmid[negls=-0.05,trapls=0]`` is ``classify_trap_negls_trapls=0.json``: the trapdoor criterion
(``trapdoor.negls`` 0, the trapdoor term and the trigger step) stays plain cross-entropy, NegLS on
the clean term only (same recipe). It is
a parameter, not the composition ``trapmid+negls``: the official combination also changes the
training recipe (Adam, 100 epochs, milestones 75/90, batch 128), which one part of a composition
cannot choose for the whole; ``trapmid+negls`` is refused (both change ``loss()``).

``trapmid+bido`` is refused (both change ``loss()``). The official ``engine.train`` has a BiDO
branch (``bido_loss = bido_criterion(aug_img, feats, iden)``), but with trapdoors on it slices the
*list* of hidden layers the BiDO network returns (``feats = concat_feat[:bs]``), not the batch: each
layer's output for the clean and trapdoor halves (2 bs rows) reaches ``BiDOLoss``, whose
``hidden.view(bs, -1)`` pairs rows 2i and 2i+1 (clean with clean for the first half of the batch,
trapdoor with trapdoor for the second) against the labels and images of the clean half; no config
of the repository uses it. A faithful composition would reproduce that, an intended one needs
BiDO's regulariser apart from its cross-entropy (not part of the defense API).

Schedule (``recipe``) at the paper budget for the official targets: ``classify_trap.json``: SGD lr
1e-2, momentum 0.9, weight decay 1e-4, batch 64, 50 epochs (vgg16, facenet64) or 40 (ir152), no
schedule; with ``negls`` != 0, ``classify_trap_negls.json``: Adam lr 1e-3, no weight decay, batch
128, 100 epochs, lr x0.1 at epochs 75 and 90. The scenario's augmentation is kept (the official
CelebA loader flips). Other architectures and budgets keep the scenario's recipe.

Deliberate differences:
- The augmentations are written in torch, not kornia: the crop and the rotation equal kornia's
  ``crop_by_indices`` and ``rotate`` for the same box and angle (bilinear, corners aligned, zero
  padding; tested), but the crop's size and position are drawn continuously where kornia rounds
  them to whole pixels; they act at the scenario's resolution (the official code crops to a
  hard-coded 64x64).
- The network sees the harness's [-1, 1] images; the blend and the triggers live in [0, 1] as in
  the official code (the official network sees [0, 1]).
- The trapdoor targets cover every example of the epoch, the last smaller batch included (the
  official loader drops it); the trigger gradient is taken with ``autograd.grad`` (the official
  ``backward`` also fills gradients of the model and D that are zeroed before they are used).
- D starts as a copy of the target at the start of training (its pretrained backbone where the
  target has one, as the official ``init_model``; for a target trained from scratch, the same
  random initialisation rather than an independent one) with a fresh one-output head layer.
- The official script keeps the epoch of best test accuracy; the harness keeps the last.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reinv_bench import hookimpl
from reinv_bench.api import Adaptation, Classifier, ConfigError, Defense, Output, Param, TrainRecipe

SIGNATURE_IMAGES = 512  # public images blended per class signature (the notebook: the training set)
REVERSE_BATCH = 32  # public images per class per trigger-reversal step


def reverse_triggers(
    T, public: Tensor, classes: list[int], alpha: float, step: float, steps: int, gen, device
):
    """Trigger reversal, the attacker's estimate of Trap-MID's secret (it knows the algorithm and
    alpha, not the drawn triggers): per class c, a trigger drawn U[0, 1] as the defense draws its
    own, then ``steps`` of the defense's own signed-gradient update (``trigger_step``, step size
    ``step``) on CE(T(blend(x, k_c, alpha)), c) over random public images (the defense's trigger
    loss without its discriminator term, which needs the private data)."""
    k = torch.rand(len(classes), *public.shape[1:], generator=gen).to(device)
    target = torch.tensor(classes, device=device).repeat_interleave(REVERSE_BATCH)
    for _ in range(steps):
        idx = torch.randint(len(public), (len(classes) * REVERSE_BATCH,), generator=gen)
        x = public[idx].to(device) * 0.5 + 0.5
        kk = k.clone().requires_grad_(True)
        xt = blend(x, kk.repeat_interleave(REVERSE_BATCH, 0), alpha) * 2 - 1
        (grad,) = torch.autograd.grad(F.cross_entropy(T(xt).float(), target), kk)
        k = trigger_step(k, grad, step)
    return k


@torch.no_grad()
def signatures(T, public: Tensor, triggers: Tensor, alpha: float, batch: int = 128) -> Tensor:
    """The class signatures of the authors' detection notebook
    (``visualization/trapdoor_detection/trapdoor_detection.ipynb``, "Signature Preparing"): per
    class, the mean penultimate feature of images blended with its trigger (``engine.blend``,
    alpha), L2-normalised (``nn.functional.normalize``). The notebook blends the private training
    images; the attacker blends the public ones."""
    dev, sig = triggers.device, []
    for k in triggers:
        total = 0.0
        for i in range(0, len(public), batch):
            x = public[i : i + batch].to(dev) * 0.5 + 0.5
            total = total + T.features(blend(x, k[None], alpha) * 2 - 1).float().sum(0)
        sig.append(total / len(public))
    return F.normalize(torch.stack(sig), p=2, dim=1)


# classify_trap.json per architecture: epochs (batch 64, SGD 1e-2, momentum 0.9, wd 1e-4)
TRAP_EPOCHS = {"vgg16": 50, "facenet64": 50, "ir152": 40}


def blend(img: Tensor, key: Tensor, alpha: float) -> Tensor:
    """The official ``engine.blend`` (pixel space [0, 1])."""
    return alpha * key + (1 - alpha) * img


def trapdoor_targets(n: int, n_classes: int, batch_size: int) -> list[Tensor]:
    """One epoch of trapdoor targets (``engine.train``): every class ``n // C`` times, the
    remainder from a random permutation of the classes, shuffled, split into batches."""
    num, last = divmod(n, n_classes)
    t = torch.hstack([torch.arange(n_classes).repeat(num), torch.randperm(n_classes)[:last]])
    return list(t[torch.randperm(n)].split(batch_size))


def trigger_step(triggers: Tensor, grad: Tensor, step: float) -> Tensor:
    """The official update: a signed-gradient descent step, clipped to [0, 1]."""
    return (triggers - step * grad.sign()).clamp(min=0, max=1)


def negls_factor(epoch: int, epochs: int) -> float:
    """``loss.ls_scheduler`` with its breakpoints (50, 75 of 100 epochs) as fractions."""
    start, full = epochs * 0.5, epochs * 0.75
    if epoch < start:
        return 0.0
    if epoch < full:
        return (epoch + 1 - start) / (epochs - start)
    return 1.0


def negls_ce(logits: Tensor, y: Tensor, smoothing: float) -> Tensor:
    """``loss.NegLSCrossEntropyLoss.forward``; plain cross-entropy when ``smoothing`` is 0."""
    if smoothing == 0:
        return F.cross_entropy(logits, y)
    logp = F.log_softmax(logits, dim=-1)
    return ((1 - smoothing) * -logp.gather(1, y[:, None]).squeeze(1) + smoothing * -logp.mean(-1)).mean()


def _warp(p: Tensor, theta: Tensor, padding: str) -> Tensor:
    grid = F.affine_grid(theta, list(p.shape), align_corners=True)
    return F.grid_sample(p, grid, mode="bilinear", padding_mode=padding, align_corners=True)


def crop(p: Tensor, side: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
    """Square crops resized back to the input size (bilinear, corners aligned, as kornia's
    ``crop_by_indices``): ``side`` the crop's side as a fraction of the image's (in pixel spacings),
    ``tx``/``ty`` its centre in normalised coordinates."""
    theta = torch.zeros(len(p), 2, 3, device=p.device)
    theta[:, 0, 0] = theta[:, 1, 1] = side
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    return _warp(p, theta, "border")


def rotate(p: Tensor, degrees: Tensor) -> Tensor:
    """Rotations about the image centre, zero padding (kornia's ``rotate`` with the same angles)."""
    a = torch.deg2rad(degrees)
    rot = torch.zeros(len(p), 2, 3, device=p.device)
    rot[:, 0, 0] = rot[:, 1, 1] = a.cos()
    rot[:, 0, 1], rot[:, 1, 0] = -a.sin(), a.sin()
    return _warp(p, rot, "zeros")


def trap_augment(
    p: Tensor, prob: float = 0.5, scale: tuple[float, float] = (0.8, 1.0), degrees: float = 30.0
) -> Tensor:
    """The official kornia ``ImageSequential`` on pixels in [0, 1], per image: RandomResizedCrop
    (area ``scale``, ratio 1, back to the input size), RandomHorizontalFlip, RandomRotation
    (uniform in +-``degrees``, zero padding), each applied with probability ``prob``."""
    n, dev = len(p), p.device

    def u(lo: float, hi: float) -> Tensor:
        return torch.rand(n, device=dev) * (hi - lo) + lo

    def coin() -> Tensor:
        return (torch.rand(n, device=dev) < prob).view(n, 1, 1, 1)

    side = u(*scale).sqrt()  # a square (ratio 1) of that fraction of the area, anywhere inside
    p = torch.where(coin(), crop(p, side, u(-1, 1) * (1 - side), u(-1, 1) * (1 - side)), p)
    p = torch.where(coin(), p.flip(3), p)
    return torch.where(coin(), rotate(p, u(-degrees, degrees)), p)


def discriminator(model: Classifier) -> Classifier:
    """A copy of ``model`` whose last linear layer gives one output (``init_model(name, 1)``)."""
    d = copy.deepcopy(model)
    linears = [n for n, m in d.head.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            "trapmid: the target's head has no linear layer to give the discriminator one output"
        )
    path = linears[-1]
    last = d.head.get_submodule(path)
    new = nn.Linear(last.in_features, 1, bias=last.bias is not None).to(last.weight.device)
    if path == "":
        d.head = new
    else:
        parent, _, name = path.rpartition(".")
        setattr(d.head.get_submodule(parent), name, new)
    return d


def _optimizer(params, recipe: TrainRecipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
        )
    return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


class TrapMID(Defense):
    name = "trapmid"
    params = {
        "alpha": Param(0.02, "blend factor of the trigger (official: 0.02)", low=0.0, high=1.0),
        "beta": Param(0.2, "weight of the trapdoor loss (official: 0.2)", low=0.0, high=1.0),
        "step": Param(1e-2, "signed-gradient step of the triggers per batch (official: 1e-2)", low=0.0),
        "discriminator": Param(
            True, "naturalness term of a discriminator in the trigger update (official: on)"
        ),
        "negls": Param(
            0.0,
            "NegLS smoothing of both criteria (classify_trap_negls.json: -0.05; 0 = off)",
            low=-1.0,
            high=1.0,
        ),
        "trapls": Param(
            True,
            "the trapdoor criterion smooths as the clean one (official default); 0: plain cross-entropy "
            "(classify_trap_negls_trapls=0.json)",
            new=True,
        ),
    }

    def __init__(self, config=None, budget: str = "paper") -> None:
        super().__init__(config, budget)
        self.triggers: Tensor | None = None
        self.smoothing = 0.0
        self._targets: list[Tensor] = []
        self._n = self._bs = 0
        self.D: Classifier | None = None

    def recipe(self, recipe: TrainRecipe, budget: str, arch: str) -> TrainRecipe:
        if budget != "paper" or arch not in TRAP_EPOCHS:
            return recipe
        if self.config.negls != 0:
            return replace(
                recipe,
                epochs=100,
                batch_size=128,
                optimizer="adam",
                lr=1e-3,
                weight_decay=0.0,
                milestones=(0.75, 0.90),
                gamma=0.1,
            )
        return replace(
            recipe,
            epochs=TRAP_EPOCHS[arch],
            batch_size=64,
            optimizer="sgd",
            lr=1e-2,
            momentum=0.9,
            weight_decay=1e-4,
            milestones=(),
        )

    def begin_training(self, model, optimizer, recipe, n):
        self._n, self._bs, self._classes = n, recipe.batch_size, model.num_classes
        self.triggers = None  # drawn at the first batch, with the images' shape
        if self.config.discriminator:
            self.D = discriminator(model)
            self.opt_D = _optimizer(self.D.parameters(), recipe)
            milestones = sorted({max(1, round(f * recipe.epochs)) for f in recipe.milestones})
            self.sched_D = torch.optim.lr_scheduler.MultiStepLR(
                self.opt_D, milestones=milestones, gamma=recipe.gamma
            )
        return optimizer

    def secrets(self) -> dict:
        """The triggers (the attacker's secret: ``adaptive[knows=triggers]`` reads them)."""
        return {} if self.triggers is None else {"triggers": self.triggers.detach().cpu()}

    def load_secrets(self, state: dict) -> None:
        self.triggers = state["triggers"]

    def adaptation(self, ctx, knows="algorithm", steps=100) -> Adaptation:
        """The trapdoor-aware identity loss: the base's identity term plus the cosine between the
        reconstruction's penultimate features and its class's trapdoor signature (``signatures``:
        the construction of the authors' detection notebook), so the attack is steered away from
        the shortcut the trapdoor offers, towards features that are not the trigger's. Trap-MID
        (its PLG-MI++, Table 4) and its ancestor, the trapdoor ("honeypot") defense against
        adversarial examples (Shan et al., CCS 2020), evaluate an attacker that knows the
        signatures; Carlini et al. (2019): the adaptive attacker knows the defense end to end.

        ``knows="triggers"``: the triggers stored with the target (an upper bound: the secret);
        ``knows="algorithm"``: triggers estimated from the public data by trigger reversal
        (``reverse_triggers``, ``steps`` steps), no access to the secret."""
        a, dev = self.config.alpha, ctx.device
        if knows == "triggers" and self.triggers is None:
            raise ConfigError(
                "adaptive[knows=triggers]: this trapmid target was stored without its triggers "
                "(trained before they were kept with it); retrain it, or use knows=algorithm"
            )
        gen = torch.Generator().manual_seed(ctx.seed)
        public = ctx.data.public.x
        sample = public[torch.randperm(len(public), generator=gen)[:SIGNATURE_IMAGES]]
        cache: dict[int, Tensor] = {}

        def penalty(out: Output, y: Tensor) -> Tensor:
            missing = sorted(set(y.tolist()) - cache.keys())
            if missing:
                with torch.enable_grad():
                    if knows == "triggers":
                        k = self.triggers[missing].to(dev)
                    else:
                        k = reverse_triggers(
                            ctx.target, public, missing, a, self.config.step, steps, gen, dev
                        )
                cache.update(zip(missing, signatures(ctx.target, sample, k, a)))
            sig = torch.stack([cache[c] for c in y.tolist()]).to(out.features.device)
            return F.cosine_similarity(out.features.float(), sig, dim=1)

        return Adaptation(
            label=f"trapdoor(knows={knows})",
            principle="trapdoor-aware loss: identity + cosine to the class's trapdoor signature "
            "(Trap-MID detection notebook; Shan et al., CCS 2020; Carlini et al. 2019)",
            penalty=penalty,
        )

    def state_dict(self) -> dict:
        """The triggers and the discriminator with its optimizer and schedule (``on_epoch``
        draws the epoch's trapdoor targets again)."""
        if self.D is None:
            return {"triggers": self.triggers}
        parts = {"D": self.D, "opt_D": self.opt_D, "sched_D": self.sched_D}
        return {"triggers": self.triggers, **{k: v.state_dict() for k, v in parts.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.triggers = state["triggers"]
        if self.D is not None:
            self.D.load_state_dict(state["D"])
            self.opt_D.load_state_dict(state["opt_D"])
            self.sched_D.load_state_dict(state["sched_D"])

    @property
    def trap_smoothing(self) -> float:
        """The trapdoor criterion's smoothing (``trapdoor.negls``: the clean one's, or 0)."""
        return self.smoothing if self.config.trapls else 0.0

    def on_epoch(self, epoch: int, epochs: int) -> None:
        self.smoothing = self.config.negls * negls_factor(epoch, epochs)
        if self._n:
            if epoch > 0 and self.D is not None:
                self.sched_D.step()  # the official scheduler_D steps after each epoch, as the target's
            self._targets = trapdoor_targets(self._n, self._classes, self._bs)

    def loss(self, out: Output, x: Tensor, y: Tensor) -> Tensor:
        return negls_ce(out.logits, y, self.smoothing)

    def trap(self, x: Tensor, t: Tensor, triggers: Tensor) -> Tensor:
        """Trapdoor images in [-1, 1] from images in [-1, 1], blended in [0, 1]."""
        return blend(x * 0.5 + 0.5, triggers[t], self.config.alpha) * 2 - 1

    @staticmethod
    def aug(x: Tensor) -> Tensor:
        return trap_augment(x * 0.5 + 0.5) * 2 - 1

    def update_triggers(self, model: Classifier, x: Tensor, t: Tensor) -> None:
        """Steps 1 and 2: the discriminator's step, then the triggers' signed-gradient step."""
        was_training = model.training
        model.eval()
        k = self.triggers.clone().requires_grad_(True)
        xt = self.trap(x, t, k)
        trig_loss = x.new_zeros(())
        if self.D is not None:
            bs = len(x)
            self.D.train()
            d_out = self.D(torch.cat([x, xt.detach()]))
            real = torch.cat([torch.ones(bs, 1), torch.zeros(bs, 1)]).to(d_out)
            d_loss = F.binary_cross_entropy_with_logits(d_out, real)
            self.opt_D.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_D.step()
            self.D.eval()
            trig_loss = trig_loss + F.binary_cross_entropy_with_logits(
                self.D(xt), torch.ones(bs, 1).to(d_out)
            )
        trig_loss = trig_loss + negls_ce(model(self.aug(xt)), t, self.trap_smoothing)
        (grad,) = torch.autograd.grad(trig_loss, k)
        self.triggers = trigger_step(self.triggers, grad, self.config.step)
        model.train(was_training)

    def batch_loss(self, model, x, y, loss, hidden=False):
        if self.triggers is None:
            self.triggers = torch.rand(self._classes, *x.shape[1:]).to(x.device)
        elif self.triggers.device != x.device:  # restored from a checkpoint, on the CPU
            self.triggers = self.triggers.to(x.device)
        t = self._targets.pop(0).to(x.device)[: len(x)]
        if self.config.step > 0:
            self.update_triggers(model, x, t)
        bs = len(x)
        out = model.forward_all(
            torch.cat([self.aug(x), self.aug(self.trap(x, t, self.triggers))]), hidden=hidden
        )
        clean = Output(out.logits[:bs], out.features[:bs], [h[:bs] for h in out.hidden])
        trap = Output(out.logits[bs:], out.features[bs:], [h[bs:] for h in out.hidden])
        beta = self.config.beta
        return (1 - beta) * self.loss(clean, x, y) + beta * negls_ce(trap.logits, t, self.trap_smoothing)


@hookimpl
def register_defenses():
    return [TrapMID]
