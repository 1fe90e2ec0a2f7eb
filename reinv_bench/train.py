"""The one classifier training loop. Defenses hook into it (see reinv_bench.api.Defense):
``train_transform`` on each training batch, ``wrap_model`` before training, ``loss`` in place of
cross-entropy, ``trainable`` to choose the parameters that train, ``on_epoch`` for schedules.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from reinv_bench.api import Classifier, Defense, Progress, Split, TrainRecipe, _no_progress


def make_optimizer(params: list[nn.Parameter], recipe: TrainRecipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; use adam or sgd")


def train_classifier(
    model: Classifier,
    train: Split,
    recipe: TrainRecipe,
    defense: Defense,
    *,
    device: torch.device,
    seed: int,
    progress: Progress = _no_progress,
) -> list[float]:
    """Train ``model`` in place (already wrapped by ``defense``); returns the mean loss per epoch."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    params = [p for p in defense.trainable(model) if p.requires_grad]
    opt = make_optimizer(params, recipe)
    milestones = sorted({max(1, round(f * recipe.epochs)) for f in recipe.milestones})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=recipe.gamma)
    x, y = train.x.to(device), train.y.to(device)
    n, bs = len(x), recipe.batch_size
    per_epoch = math.ceil(n / bs)
    history = []
    for epoch in range(recipe.epochs):
        defense.on_epoch(epoch, recipe.epochs)
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        total = 0.0
        for i in range(per_epoch):
            idx = perm[i * bs : (i + 1) * bs]
            xb = defense.train_transform(x[idx])
            out = model.forward_all(xb, hidden=defense.needs_hidden)
            loss = defense.loss(out, xb, y[idx])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch}, batch {i}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            progress(epoch * per_epoch + i + 1, recipe.epochs * per_epoch)
        sched.step()
        history.append(total / per_epoch)
    model.eval()
    return history


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


class Composed(Defense):
    """Several defenses applied to one training run (``-d re+bido``): transforms chain in the
    order given, schedules all run, and each exclusive hook comes from the one part that has it."""

    name = "composed"

    def __init__(self, parts: list[Defense]) -> None:
        self.parts = parts
        self.config = {}
        self.needs_hidden = any(p.needs_hidden for p in parts)
        self._owner = {h: next((p for p in parts if h in p.overridden()), None) for h in Defense.EXCLUSIVE}

    def train_transform(self, x: Tensor) -> Tensor:
        for p in self.parts:
            x = p.train_transform(x)
        return x

    def wrap_model(self, model: Classifier) -> Classifier:
        owner = self._owner["wrap_model"]
        return owner.wrap_model(model) if owner else model

    def loss(self, out, x, y):
        owner = self._owner["loss"]
        return owner.loss(out, x, y) if owner else super().loss(out, x, y)

    def trainable(self, model):
        owner = self._owner["trainable"]
        return owner.trainable(model) if owner else model.parameters()

    def on_epoch(self, epoch: int, epochs: int) -> None:
        for p in self.parts:
            p.on_epoch(epoch, epochs)


def compose(defenses: list[Defense]) -> Defense:
    """One defense from several; refuses two that both own an exclusive hook."""
    from reinv_bench.api import ConfigError

    if len(defenses) == 1:
        return defenses[0]
    for hook in Defense.EXCLUSIVE:
        owners = [d.name for d in defenses if hook in d.overridden()]
        if len(owners) > 1:
            raise ConfigError(
                f"cannot compose {' + '.join(owners)}: both change the training loop's {hook}(); "
                "compose defenses that touch different parts of training (e.g. re+bido)"
            )
    return Composed(defenses)
