"""Several defenses applied to one training run (``-d re+bido``): ``compose`` and ``Composed``."""

from __future__ import annotations

from torch import Tensor

from reinv_bench.contract.config import ConfigError
from reinv_bench.contract.defense import Defense, compose_adaptations
from reinv_bench.contract.models import Classifier


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

    def transforms_images(self) -> bool:
        return any(p.transforms_images() for p in self.parts)

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

    def begin_training(self, model, optimizer, recipe, n):
        for p in self.parts:
            optimizer = p.begin_training(model, optimizer, recipe, n)
        return optimizer

    def batch_loss(self, model, x, y, loss, hidden=False):
        owner = self._owner["batch_loss"]
        return (
            owner.batch_loss(model, x, y, loss, hidden)
            if owner
            else super().batch_loss(model, x, y, loss, hidden)
        )

    def end_training(self, model):
        return {k: v for p in self.parts for k, v in p.end_training(model).items()}

    def state_dict(self):
        return {str(i): p.state_dict() for i, p in enumerate(self.parts)}

    def load_state_dict(self, state):
        for i, p in enumerate(self.parts):
            p.load_state_dict(state[str(i)])

    def phases(self, recipe):
        owner = self._owner["phases"]
        return owner.phases(recipe) if owner else []

    def on_phase(self, phase: int) -> None:
        for p in self.parts:
            p.on_phase(phase)

    def secrets(self):
        return {str(i): sec for i, p in enumerate(self.parts) if (sec := p.secrets())}

    def load_secrets(self, state):
        for i, p in enumerate(self.parts):
            if str(i) in state:
                p.load_secrets(state[str(i)])

    def adaptation(self, ctx, knows="algorithm", steps=100):
        """The parts' adaptations composed (``api.compose_adaptations``)."""
        return compose_adaptations(p.adaptation(ctx, knows, steps) for p in self.parts)


def compose(defenses: list[Defense]) -> Defense:
    """One defense from several; refuses two that both own an exclusive hook."""
    if len(defenses) == 1:
        return defenses[0]
    for hook in Defense.EXCLUSIVE:
        owners = [d.name for d in defenses if hook in d.overridden()]
        if len(owners) > 1:
            raise ConfigError(
                f"cannot compose {' + '.join(owners)}: both change the training loop's {hook}(); "
                "compose defenses that touch different parts of training (e.g. re+bido)"
            )
    for d in defenses:
        for hook in d.excludes:
            others = [
                o.name
                for o in defenses
                if o is not d and getattr(type(o), hook) is not getattr(Defense, hook)
            ]
            if others:
                raise ConfigError(
                    f"cannot compose {d.name} with {' + '.join(others)}: {d.name} cannot share a "
                    f"training run with a defense that changes {hook}()"
                )
        for o in defenses:
            why = None if o is d else d.refuses(o)
            if why:
                raise ConfigError(f"cannot compose {d.name} with {o.name}: {why}")
    return Composed(defenses)
