"""The one classifier training loop. Defenses hook into it (see reinv_bench.api.Defense):
``train_transform`` on each training batch, ``wrap_model`` before training, ``loss`` in place of
cross-entropy, ``trainable`` to choose the parameters that train, ``on_epoch`` for schedules,
``begin_training`` before the first epoch (own state, a wrapped optimizer), ``batch_loss`` for a
loss computed with the model itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reinv_bench.contract.attack import Progress, no_progress
from reinv_bench.contract.checkpoint import NO_CHECKPOINT, Checkpoint
from reinv_bench.contract.data import Split, TrainRecipe
from reinv_bench.contract.defense import Defense
from reinv_bench.contract.models import Classifier
from reinv_bench.contract.precision import autocast


def make_optimizer(params: list[nn.Parameter], recipe: TrainRecipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
        )
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; use adam or sgd")


AUGMENTATIONS = ("", "flip", "ppa")
SELECTIONS = ("last", "best_test", "best_val_loss")  # TrainRecipe.select: the weights train_classifier keeps
# select="best_val_loss", AT-AT's (BreuerLabs/Anti-Adversarial-Training @ec6069a,
# configuration/classifier/training/default.yaml): validation_size 0.2, evaluate_freq 5, seed 42
VAL_FRACTION, VAL_EVERY, VAL_SEED = 0.2, 5, 42


def augment(x: Tensor, kind: str, gen: torch.Generator) -> Tensor:
    """The training-time augmentation of a recipe, per image, batched on the device (before the
    defense's ``train_transform``, as the official pipelines apply RE after them).

    ``flip``: RandomHorizontalFlip(0.5) (KEDMI/GMI ``dataloader.py`` for 64-px CelebA targets).
    ``ppa``: RandomResizedCrop(scale 0.85-1, ratio 1), ColorJitter(brightness 0.2, contrast 0.2,
    saturation 0.1, hue 0.1), RandomHorizontalFlip(0.5) (PPA/MIDRE training configs). The crop is
    resampled bilinearly without antialiasing, and the four jitter operations run in one random
    order per batch (torchvision draws one per image).
    """
    if kind == "":
        return x
    if kind not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {kind!r}; use one of {AUGMENTATIONS}")
    n = len(x)

    def u(lo: float, hi: float) -> Tensor:  # one uniform draw per image, from the seeded generator
        return (torch.rand(n, generator=gen) * (hi - lo) + lo).to(x.device).view(n, 1, 1, 1)

    if kind == "ppa":
        side = u(0.85, 1.0).sqrt().view(n)  # square crop of 85-100% of the area
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = side
        theta[:, 0, 2] = (u(-1, 1).view(n)) * (1 - side)  # uniform position of the crop
        theta[:, 1, 2] = (u(-1, 1).view(n)) * (1 - side)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        p = (x * 0.5 + 0.5).clamp(0, 1)  # jitter acts on pixels in [0, 1]
        ops = [
            lambda p: (p * u(0.8, 1.2)).clamp(0, 1),
            lambda p: _blend(p, _gray(p).mean((1, 2, 3), keepdim=True), u(0.8, 1.2)),  # contrast
            lambda p: _blend(p, _gray(p), u(0.9, 1.1)),  # saturation
            lambda p: _shift_hue(p, u(-0.1, 0.1)),
        ]
        for i in torch.randperm(4, generator=gen).tolist():
            p = ops[i](p) if (p.shape[1] == 3 or i < 2) else p
        x = p * 2 - 1
    flip = (torch.rand(n, generator=gen) < 0.5).to(x.device).view(n, 1, 1, 1)
    return torch.where(flip, x.flip(3), x)


def _blend(p: Tensor, ref: Tensor, factor: Tensor) -> Tensor:
    """torchvision's ``_blend``: ``ref + factor * (p - ref)``, clamped to [0, 1]."""
    return (ref + factor * (p - ref)).clamp(0, 1)


def _gray(p: Tensor) -> Tensor:
    if p.shape[1] == 1:
        return p
    return (0.2989 * p[:, 0:1] + 0.587 * p[:, 1:2] + 0.114 * p[:, 2:3]).expand_as(p)


def _shift_hue(p: Tensor, h: Tensor) -> Tensor:
    """Rotate the hue of RGB images in [0, 1] by ``h`` (fractions of the circle), via HSV."""
    r, g, b = p.unbind(1)
    mx, mn = p.max(1).values, p.min(1).values
    delta = mx - mn
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(
        mx == r, ((g - b) / safe) % 6, torch.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    hue = torch.where(delta > 0, hue / 6, torch.zeros_like(hue))
    hue = (hue + h.view(-1, 1, 1)) % 1.0
    sat = torch.where(mx > 0, delta / torch.where(mx > 0, mx, torch.ones_like(mx)), torch.zeros_like(mx))
    k = (torch.tensor([5.0, 3.0, 1.0], device=p.device).view(1, 3, 1, 1) + hue.unsqueeze(1) * 6) % 6
    return mx.unsqueeze(1) - (mx * sat).unsqueeze(1) * (torch.minimum(k, 4 - k).clamp(0, 1))


def train_classifier(
    model: Classifier,
    train: Split,
    recipe: TrainRecipe,
    defense: Defense,
    *,
    device: torch.device,
    seed: int,
    progress: Progress = no_progress,
    precision: str = "fp32",
    channels_last: bool = False,
    checkpoint: Checkpoint = NO_CHECKPOINT,
    test: Split | None = None,
) -> list[float]:
    """Train ``model`` in place (already wrapped by ``defense``); returns the mean loss per epoch.
    ``recipe.select`` "best_test": after each epoch the accuracy on ``test`` is measured and the
    weights of the first epoch with the best one are kept (the official KEDMI ``engine.py::
    train_reg``, called by ``train_classifier.py``: ``if test_acc > best_ACC: best_model =
    deepcopy(model)``); "best_val_loss": AT-AT's protocol, the model trains on 80 % of ``train``
    (``holdout_split``) and keeps the weights of the lowest mean cross-entropy on the other 20 %,
    measured after every 5th epoch (``_keep_lowest_val_loss``); "last": the last epoch's.
    ``precision`` bf16: the forward pass and the loss under bf16 autocast (weights, gradients and
    the optimizer stay fp32). ``channels_last`` stores the weights and batches in that memory
    format. Off by default: on an H200 under bf16 it gained nothing for VGG16 and cost IR152 15% at
    the official batch of 64, though it gained 40% and 25% at batch 256 (``benchmarks/precision.py``).
    ``checkpoint`` saves the model, optimizer, schedule, data-order generator, the defense's
    ``state_dict`` and the global random generators at epoch ends now and then, and resumes from
    them with the numbers of an uninterrupted run."""
    device = torch.device(device)
    train, held_out = holdout_split(train) if recipe.select == "best_val_loss" else (train, None)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt, sched = _optimizer(model, defense, recipe)
    x, y = _on_device(train, device)
    opt = defense.begin_training(model, opt, recipe, len(x))  # the scheduler keeps the base optimizer
    history: list[float] = []
    state = {"model": model, "opt": opt, "sched": sched, "gen": gen, "defense": defense, "history": history}
    best: dict[str, Any] = {}  # select="best_test" | "best_val_loss": the best epoch so far (state, ...)
    if recipe.select == "best_test" and test is None:
        raise ValueError("recipe select='best_test' needs the test split (train_classifier(test=...))")
    if recipe.select == "best_test" or held_out is not None:
        state["best"] = best
    run = _Epoch(model, x, y, recipe, defense, opt, gen, device, precision, channels_last, progress)
    for epoch in range(checkpoint.resume(recipe.epochs, state), recipe.epochs):
        defense.on_epoch(epoch, recipe.epochs)
        loss = run(epoch)
        sched.step()
        history.append(loss)
        if held_out is not None:
            if epoch % VAL_EVERY == 0:  # AT-AT: ``if val_loader and epoch % evaluate_freq == 0``
                _keep_lowest_val_loss(model, held_out, device, epoch + 1, best)
        elif "best" in state:
            _keep_best(model, test, device, epoch + 1, best)
        checkpoint.reached(epoch + 1, recipe.epochs, state)
    _finish(model, best, channels_last)
    return checkpoint.finish(history)


def _finish(model: Classifier, best: dict[str, Any], channels_last: bool) -> None:
    """The trained model in eval mode, in the contiguous format, with the selected epoch's weights."""
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    if best:
        model.load_state_dict(best["state"])
    model.eval()


def _optimizer(model: Classifier, defense: Defense, recipe: TrainRecipe) -> tuple[torch.optim.Optimizer, Any]:
    """The recipe's optimizer over the parameters the defense trains, and its step schedule."""
    params = [p for p in defense.trainable(model) if p.requires_grad]
    opt = make_optimizer(params, recipe)
    milestones = sorted({max(1, round(f * recipe.epochs)) for f in recipe.milestones})
    return opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=recipe.gamma)


def _on_device(train: Split, device: torch.device) -> tuple[Any, Tensor]:
    """The training images and labels: a tensor split moves to the device once; files
    (ImageFiles) are decoded in bulk into their cache first (what fits), then read batch by batch."""
    if isinstance(train.x, Tensor):
        x = train.x.to(device)
    else:
        x = train.x
        x.warm()
    return x, train.y.to(device)


@dataclass
class _Epoch:
    """One epoch of ``train_classifier``'s loop; calling it with the epoch's index trains the
    model over the data in the order the generator draws and returns the mean loss."""

    model: Classifier
    x: Any
    y: Tensor
    recipe: TrainRecipe
    defense: Defense
    opt: torch.optim.Optimizer
    gen: torch.Generator
    device: torch.device
    precision: str
    channels_last: bool
    progress: Progress

    def __call__(self, epoch: int) -> float:
        model, defense, device, gen = self.model, self.defense, self.device, self.gen
        n, bs = len(self.x), self.recipe.batch_size
        per_epoch = math.ceil(n / bs)
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        total = 0.0
        for i in range(per_epoch):
            idx = perm[i * bs : (i + 1) * bs]
            xb = defense.train_transform(augment(self.x[idx].to(device), self.recipe.augment, gen))
            if self.channels_last and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast(device, self.precision):
                loss = defense.batch_loss(model, xb, self.y[idx], defense.loss, defense.needs_hidden)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total = total + loss.detach().float()  # no host sync per batch: checked once per epoch
            self.progress(epoch * per_epoch + i + 1, self.recipe.epochs * per_epoch)
        total = float(total)
        if not math.isfinite(total):
            raise FloatingPointError(f"training loss became {total} in epoch {epoch}")
        return total / per_epoch


def _keep_best(model: nn.Module, test: Split, device: torch.device, epoch: int, best: dict[str, Any]) -> None:
    """``best`` <- this epoch's accuracy on ``test`` and weights (on CPU) when strictly better."""
    model.eval()
    acc = accuracy(model, test, device)
    if not best or acc > best["acc"]:
        best.update(
            acc=acc, epoch=epoch, state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        )


def holdout_split(train: Split) -> tuple[Split, Split]:
    """AT-AT's training and validation parts of ``train`` (``data_processing/datasets.py``): a
    permutation from a generator seeded with 42, whose last ``n - int(0.8 n)`` indices validate and
    the others train (``Subset(full_train_dataset, indices[:-val_size])``)."""
    n = len(train.y)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SEED))
    val = n - int((1 - VAL_FRACTION) * n)
    if not 0 < val < n:
        raise ValueError(f"select='best_val_loss' needs at least 2 training images, got {n}")
    fit, held = perm[:-val], perm[-val:]
    return Split(train.x[fit], train.y[fit]), Split(train.x[held], train.y[held])


def _keep_lowest_val_loss(
    model: nn.Module, val: Split, device: torch.device, epoch: int, best: dict[str, Any]
) -> None:
    """``best`` <- this epoch's mean cross-entropy on ``val`` (eval mode) and weights when strictly
    lower (AT-AT ``classifiers/abstract_classifier.py::train_model``: ``if val_loss < best_loss``
    from ``np.inf``; ``evaluate``: summed cross-entropy over the instances)."""
    loss = F.cross_entropy(predict(model, val.x, device).float(), val.y.cpu()).item()
    if not best or loss < best["loss"]:
        best.update(
            loss=loss, epoch=epoch, state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        )


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, device: torch.device, batch_size: int = 512) -> Tensor:
    """Logits of ``model`` on ``x`` (in eval mode), on CPU."""
    model.eval()
    return torch.cat([model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


@torch.no_grad()
def features(model: Classifier, x: Tensor, device: torch.device, batch_size: int = 512) -> Tensor:
    model.eval()
    return torch.cat(
        [model.features(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    )


def accuracy(model: nn.Module, split: Split, device: torch.device) -> float:
    return (predict(model, split.x, device).argmax(1) == split.y).float().mean().item()
