"""``dpsgd``: differentially private SGD through Opacus (extra ``[dp]``: ``pip install reinv-bench[dp]``).

Paper: Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar, Zhang. "Deep Learning with Differential
Privacy." CCS 2016. Library: Opacus (github.com/pytorch/opacus, ``privacy_engine.py``
``PrivacyEngine.make_private``, ``validators/module_validator.py`` ``ModuleValidator.fix``): every
example's gradient is clipped to L2 norm ``max_grad_norm``, Gaussian noise of standard deviation
``noise_multiplier * max_grad_norm`` is added to their sum, and the accountant turns the number of
steps, the sample rate and the noise into the (epsilon, delta) the target was trained under. The
clipping, noise and accounting are Opacus's own (``make_private``), not rewritten here.

Defaults: noise_multiplier 1.0, max_grad_norm 1.0, delta 1e-5, the PRV accountant: Opacus's MNIST
example (``examples/mnist.py``: ``--sigma 1.0``, ``--max-per-sample-grad_norm 1.0``, ``--delta
1e-5``; ``PrivacyEngine()``'s default accountant is ``prv``). MIBench's ``DpsgdTrainer`` (noise
0.01, no accountant, and it does not run) is not a reference. The optimiser, learning rate and
epochs are the scenario's recipe (no MI paper fixes a DP-SGD recipe).

The architecture changes: Opacus cannot compute per-example gradients through BatchNorm, so
``ModuleValidator.fix`` replaces every BatchNorm with a GroupNorm (gcd(32, C) groups) before
training and whenever the target is rebuilt (and in-place activations become out-of-place, which
changes no number); the row reports the number swapped as
``dp_groupnorm`` next to ``dp_epsilon`` and ``dp_delta``. A layer Opacus cannot fix is a clear
error, and pretrained weights with BatchNorm statistics (``--arch "ir152[weights=...]"``) do not
load into the GroupNorm model (the loader names the layers). Training that ends without a finite
epsilon fails the target (and its cells): a DP row never shows a number without its budget.

Sampling: the training loop draws shuffled fixed-size batches (each example once per epoch, the
last batch smaller), not Poisson-sampled ones; the accountant is given the sample rate
1/ceil(n / batch) (Opacus's own choice for a loader, ``make_private(poisson_sampling=False)``).
The accountant's analysis assumes Poisson sampling; for shuffling the reported epsilon is the
common approximation (``make_private``'s docs: "a good approximation"), not a proven guarantee:
shuffled batches can leak more than the Poisson number says (Chua et al., "How Private are DP-SGD
Implementations?", ICML 2024).

The noise comes from torch's seeded generator (``secure_mode`` off): reproducible runs, not a
cryptographically secure one (Opacus asks for ``secure_mode`` before a production release).
With loss reduction "mean", Opacus divides the sum of clipped gradients by its expected batch
size, int(n / ceil(n / batch)): the recipe's batch when it divides n, slightly less otherwise.

Deliberate differences: none in the mechanism. Composition: a defense that changes the batch
loss (trapmid) is refused (its extra passes through the model would escape the clipping), and so
is one that adds training phases (calor: each phase would restart the privacy accounting); a
defense that changes the model (mid) is refused (both change ``wrap_model``); so is a loss that
couples the examples of a batch (bido's HSIC, ``Defense.couples_examples``): one example's
gradient then depends on the others of its batch, so clipping per example bounds nothing and the
epsilon would be no guarantee.
"""

from __future__ import annotations

import math
import warnings

from torch import nn

from reinv_bench import hookimpl
from reinv_bench.api import Column, ConfigError, Defense, Param


def _opacus():
    try:
        import opacus
    except ImportError:
        raise ConfigError(
            "defense dpsgd needs Opacus: pip install 'reinv-bench[dp]' (or pip install opacus)"
        ) from None
    return opacus


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class DPSGD(Defense):
    name = "dpsgd"
    excludes = (
        "batch_loss",
        "phases",
    )  # extra passes escape the clipping; a second phase would restart the accountant
    # the numbers end_training reports, as columns of the target's rows (not raw keys)
    columns = (
        Column("dp_epsilon", "DP ε"),
        Column("dp_delta", "DP δ"),
        Column("dp_groupnorm", "BatchNorm -> GroupNorm layers"),
    )
    params = {
        "noise_multiplier": Param(1.0, "noise std / max_grad_norm (Opacus MNIST example: 1.0)", low=0.0),
        "max_grad_norm": Param(
            1.0, "per-example gradient clipping norm (Opacus MNIST example: 1.0)", low=1e-12
        ),
        "delta": Param(
            1e-5, "delta of the reported (epsilon, delta) (Opacus MNIST example: 1e-5)", low=0.0, high=1.0
        ),
        "accountant": Param(
            "prv", "Opacus accountant (PrivacyEngine default: prv)", choices=("prv", "rdp", "gdp")
        ),
    }

    def refuses(self, other: Defense) -> str | None:
        if other.couples_examples:
            return (
                f"{other.name}'s loss couples the examples of a batch, so per-example clipping bounds "
                "nothing and the reported epsilon would be no guarantee"
            )
        return None

    def __init__(self, config=None, budget: str = "paper") -> None:
        super().__init__(config, budget)
        self.replaced = 0
        self.engine = self.hooks = None

    def wrap_model(self, model):
        from opacus.validators import ModuleValidator

        _opacus()
        self.replaced = _norms(model)
        fixed = ModuleValidator.fix(model)
        for m in fixed.modules():  # Opacus's backward hooks hand views to the next layer: no in-place ops
            if getattr(m, "inplace", False):
                m.inplace = False
        errors = ModuleValidator.validate(fixed, strict=False)
        if errors:
            raise ConfigError(f"dpsgd: Opacus cannot train this architecture: {errors[0]}")
        return fixed

    def begin_training(self, model, optimizer, recipe, n):
        from torch.utils.data import DataLoader

        opacus = _opacus()
        with warnings.catch_warnings():  # "Secure RNG turned off": said in the docstring, not per target
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            self.engine = opacus.PrivacyEngine(accountant=self.config.accountant)
        # the loop draws its own batches: this loader only tells Opacus the sample rate and batch size
        loader = DataLoader(range(n), batch_size=recipe.batch_size)
        self.hooks, dp_optimizer, _ = self.engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=self.config.noise_multiplier,
            max_grad_norm=self.config.max_grad_norm,
            poisson_sampling=False,
            wrap_model=False,
        )
        return dp_optimizer

    def state_dict(self) -> dict:
        """The accountant's history (the optimizer's state is saved with the training loop's)."""
        return {"accountant": self.engine.accountant.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.engine.accountant.load_state_dict(state["accountant"])

    def end_training(self, model):
        if self.engine is None:
            raise RuntimeError("dpsgd: training ended without the privacy engine; no epsilon to report")
        self.hooks.cleanup()
        try:
            eps = (
                float(self.engine.get_epsilon(self.config.delta))
                if self.config.noise_multiplier > 0
                else math.inf
            )
        except (OverflowError, ValueError, ZeroDivisionError):  # the accountant's own way to say "unbounded"
            eps = math.inf
        if not math.isfinite(eps):
            raise FloatingPointError(
                f"dpsgd: the {self.config.accountant} accountant gave epsilon {eps} "
                f"(noise_multiplier {self.config.noise_multiplier}); a DP target needs a finite one"
            )
        return {"dp_epsilon": eps, "dp_delta": float(self.config.delta), "dp_groupnorm": float(self.replaced)}


@hookimpl
def register_defenses():
    return [DPSGD]
