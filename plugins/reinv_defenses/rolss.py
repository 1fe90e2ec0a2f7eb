"""``rolss`` and ``ssf``: weakening the skip connections of a residual network's last stage.

Paper: Koh et al. "On the Vulnerability of Skip Connections to
Model Inversion Attacks." ECCV 2024. Code: github.com/Pillowkoh/RoLSS @304b147 (a fork of PPA:
``models/torchvision/models/resnet.py`` ``BasicBlock.forward``/``Bottleneck.forward``,
``ResNet.__init__``, ``ResNet._make_layer``; ``configs/training/targets/FaceScrub/resnet18/skip.yaml``).

Every residual block computes out = F(x) + s_i * identity(x) with one factor per stage
(``skip=[s1, s2, s3, s4]``; a factor of 0 leaves the identity path out: ``if self.skip:``).
``rolss`` (Removal of Last Stage Skip-connections) sets the last stage's factor to 0; ``ssf`` (Skip
connection Scaling Factor) scales it, 0.6 as the fork's ``resnet18/skip.yaml``
(``skip: [1,1,1,0.6]``; the AT-AT repository's config uses 0.2: ``ssf[scale=0.2]``).
``stages=N`` applies the factor to the last N stages. Works on any architecture whose residual
blocks declare ``skip_scale`` (``reinv_bench.api.residual_stages``): resnet8, resnet18, resnet50,
resnet152, ir152, facenet64; a stage is one of the architecture's blocks (resnet8 has three).

The fork's layer3 split: ``ResNet.__init__`` hard-codes ``_make_layer(..., skip=skip_3,
split=0.8)``, so the blocks of layer3 from int(0.8 n) on are built with skip 0 -- for *every*
ResNet the fork builds, the undefended baseline included (ResNet-18: 1 of 2 layer3 blocks,
ResNet-152: 8 of 36); the AT-AT and DaredEVAL repositories inherit it. The default here is the
paper's definition (split 1: only the declared factors); ``split=0.8`` gives the fork's variant
(the third stage's blocks from max(1, int(0.8 n)) on lose their skip), and ``ssf[scale=1,split=0.8]``
is the fork's undefended baseline.

Schedule (``recipe``): at the paper budget the fork's FaceScrub training config: Adam lr 1e-3
(betas 0.9/0.999, no weight decay), 100 epochs, MultiStepLR milestones 75/90 (gamma 0.1), batch
128; the scenario's augmentation is kept (the config's crop/jitter/flip is the ``ppa`` one).

Deliberate differences:
- For a third stage of one block the fork's ``_make_layer`` (int(0.8) = 0) appends a second,
  skip-free block; here no block is added (the first block of a stage always keeps its skip).
- The paper's two-stage training scheme (TTS) is not implemented.
- The fork starts from ImageNet weights (``pretrained: true``); here the target starts as the
  architecture says (``--arch "resnet18[weights=imagenet]"`` for the fork's start).
- Weights kept: the fork's ``train_target.py`` passes the test set as validation data
  (``validation_data=test_set``) and ``models/classifier.py::fit`` loads the epoch of best test
  accuracy at the end (strictly better, from 0). The harness keeps the last epoch by default (no
  choice made on test data); ``rolss[select=best_test]`` / ``ssf[select=best_test]`` gives the fork's.
"""

from __future__ import annotations

from reinv_bench import hookimpl
from reinv_bench.api import (
    Adaptation,
    Classifier,
    ConfigError,
    Defense,
    Param,
    TrainRecipe,
    residual_stages,
)
from reinv_defenses._adaptations import bpda_skips
from reinv_defenses._schedules import adam_100_epochs, selected

WORKS_ON = "resnet8, resnet18, resnet50, resnet152, ir152, facenet64"
FORK_SPLIT_STAGE = 2  # the fork hard-codes the split for layer3: the third stage


def stage_factors(n_blocks: list[int], scale: float, stages: int, split: float = 1.0) -> list[list[float]]:
    """The skip factor of every block, stage by stage: ``scale`` for the last ``stages`` stages
    (1 elsewhere); with ``split`` < 1 the third stage's blocks from max(1, int(split * n)) on get 0."""
    factors = [[scale if i >= len(n_blocks) - stages else 1.0] * n for i, n in enumerate(n_blocks)]
    if split < 1.0:
        n = n_blocks[FORK_SPLIT_STAGE]
        for j in range(max(1, int(split * n)), n):
            factors[FORK_SPLIT_STAGE][j] = 0.0
    return factors


class RoLSS(Defense):
    name = "rolss"
    version = 1
    params = {
        "scale": Param(
            0.0, "skip factor of the last stage(s): out = F(x) + scale * identity (RoLSS: 0)", low=0.0
        ),
        "stages": Param(1, "how many trailing stages take the factor (paper: the last one)", low=1),
        "split": Param(
            1.0,
            "fraction of the third stage's blocks that keep their skip; the official fork "
            "hard-codes 0.8 for layer3 (also undefended); 1 = the paper's definition",
            low=0.0,
            high=1.0,
        ),
        "select": Param(
            "last",
            "weights kept: last, or best_test (the fork's train_target.py: the epoch of best test accuracy)",
            choices=("last", "best_test"),
            new=True,
        ),
    }

    def wrap_model(self, model: Classifier) -> Classifier:
        stages = residual_stages(model)
        c = self.config
        if not stages:
            raise ConfigError(
                f"{self.name} needs a residual architecture (blocks that declare skip_scale); "
                f"this one has none: use one of {WORKS_ON}"
            )
        if c.stages > len(stages):
            raise ConfigError(
                f"{self.name}: stages={c.stages}, but the architecture has {len(stages)} residual stages"
            )
        if c.split < 1.0 and len(stages) <= FORK_SPLIT_STAGE:
            raise ConfigError(
                f"{self.name}: split applies to the third residual stage; the architecture has {len(stages)}"
            )
        for blocks, factors in zip(
            stages, stage_factors([len(s) for s in stages], c.scale, c.stages, c.split)
        ):
            for block, f in zip(blocks, factors):
                block.skip_scale = float(f)
        return model

    def recipe(self, recipe: TrainRecipe, budget: str, arch: str) -> TrainRecipe:
        return selected(adam_100_epochs(recipe, budget, batch_size=128), self.config.select)

    def adaptation(self, ctx, knows="algorithm", steps=100) -> Adaptation:
        """BPDA (Athalye, Carlini, Wagner, ICML 2018) for rolss and ssf: the forward pass unchanged,
        the gradient flowing as if the removed or scaled skip connections were there
        (``_adaptations.bpda_skips``)."""
        return bpda_skips(self.name)


class SSF(RoLSS):
    name = "ssf"
    version = 1
    params = {
        **RoLSS.params,
        "scale": Param(
            0.6, "skip factor of the last stage(s) (official resnet18/skip.yaml: 0.6; AT-AT: 0.2)", low=0.0
        ),
    }


@hookimpl
def register_defenses():
    return [RoLSS, SSF]
