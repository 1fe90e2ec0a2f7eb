"""``tl``: transfer learning as a model-inversion defense (TL-DMI).

Paper: Ho, Hao, Nguyen, Cheung. "Model Inversion Robustness: Can Transfer Learning Help?"
CVPR 2024. Code: github.com/hosytuyen/TL-DMI (``config/celeba/training_classifiers/classify.json``,
``models/classify.py`` ``VGG16_TL``/``IR152``/``FaceNet64``/``load_TF``, ``train_classifier.py``,
``engine.py::train_reg``).

Start from weights pretrained on public data, freeze the layers before the freeze point and
fine-tune the rest on the private data with plain cross-entropy.

Freeze point: declared once, by the architecture (``Classifier.freeze_point`` whole leading
blocks, plus ``freeze_within``: the leading children of the next block, where the official point
falls inside a block); ``tl[freeze=N]`` freezes N whole blocks instead. The official points
(``VGG16_TL``: children ``i <= freeze_layers`` of ``vgg16_bn.features``; ``IR152``/``FaceNet64``:
units ``i <= freeze_layers`` of the face.evoLVe ``body``) are declared in
``reinv_architectures/torchvision_nets.py`` (vgg16: 26, i.e. stages 1-3 and conv4_1 with its BN)
and ``face_evolve.py`` (ir152: 46, stages 1-3; facenet64: 5, stage 1 and 3 of stage 2's 4 units).

Schedule (``recipe``): at the paper budget the three official targets train with TL-DMI's own
``classify.json`` entries, whatever the scenario: SGD, momentum 0.9, weight decay 1e-4, constant
learning rate (``train_reg`` builds its scheduler only for a model named "Test"), and
vgg16 200 epochs, batch 64, lr 0.08; ir152 100 epochs, batch 64, lr 0.01; facenet64 200 epochs,
batch 8, lr 0.008. The scenario's augmentation is kept (the official loader flips, as ``celeba64``).
Other architectures and budgets keep the scenario's recipe.

Pretrained weights: ``tl[weights=PATH]`` loads a local state dict, ``tl[weights=NAME]`` a
registered weights file such as ``imagenet`` or ``ms1m`` (``reinv-bench weights``; loaded with
``weights_only=True``; the classifier head is not loaded since the classes differ); without it
the architecture's own ``--arch "NAME[weights=...]"`` is used, and without that the harness
pretrains the same architecture on the scenario's labelled public data (a cached step shared by
every TL target of that architecture). The stored config records which, and the file's SHA-256.

Deliberate differences:
- The official IR152/FaceNet64 code misspells ``requires_grad`` for the input layer
  (``param.requries_grad = False``), which therefore still trains; here it is frozen, as intended.
- The official code keeps the epoch of best *test* accuracy; the harness keeps the last epoch
  (selecting on the test split would leak it into the reported natural accuracy).
- Official ``get_classifier`` loads the MS1M backbone for ``IR152`` but not for ``FaceNet64``
  (its list says ``'FaceNet_64'``); the harness starts both from the weights given.
As in the official code, frozen BatchNorm layers keep updating their running statistics in
training mode: ``engine.py::train_reg`` calls ``model.train()`` on the whole model each epoch and
freezing only sets ``requires_grad`` (``models/classify.py``), so no layer is put in eval mode; the
harness likewise trains the whole model in training mode (``reinv_bench.engine.train.train_classifier``)
and ``tl`` only chooses the parameters (tests/test_fidelity_defenses.py
``test_tl_frozen_batchnorm_running_stats_update_as_the_official_train_reg``).
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from reinv_bench import hookimpl
from reinv_bench.api import Adaptation, Classifier, Defense, Param, TrainRecipe
from reinv_defenses._adaptations import robustness_reducing

# TL-DMI classify.json (VGG16, IR152, FaceNet64): (epochs, batch size, lr); SGD momentum 0.9, wd 1e-4
SCHEDULES = {"vgg16": (200, 64, 8e-2), "ir152": (100, 64, 1e-2), "facenet64": (200, 8, 8e-3)}


class TransferLearning(Defense):
    name = "tl"
    version = 2  # 2: official freeze points (within blocks) and TL-DMI's own schedules
    pretrained = True
    params = {
        "freeze": Param(
            -1, "leading blocks to freeze; -1 = the architecture's declared (official) freeze point", low=-1
        ),
        "weights": Param(
            "",
            "pretrained state dict: a path or a registered weights name; empty = the arch's "
            "weights=, else pretrain on the scenario's public data",
        ),
    }

    def recipe(self, recipe: TrainRecipe, budget: str, arch: str) -> TrainRecipe:
        if budget != "paper" or arch not in SCHEDULES:
            return recipe
        epochs, batch, lr = SCHEDULES[arch]
        return replace(
            recipe,
            epochs=epochs,
            batch_size=batch,
            optimizer="sgd",
            lr=lr,
            momentum=0.9,
            weight_decay=1e-4,
            milestones=(),
        )

    def frozen_modules(self, model: Classifier) -> list[nn.Module]:
        n, within = self.config.freeze, 0
        if n < 0:
            n, within = model.freeze_point, getattr(model, "freeze_within", 0)
        if n >= len(model.blocks):
            raise ValueError(f"tl: cannot freeze {n} blocks of a model with {len(model.blocks)}")
        return [*model.blocks[:n], *list(model.blocks[n].children())[:within]]

    def trainable(self, model: Classifier):
        for module in self.frozen_modules(model):
            module.requires_grad_(False)
        return (p for p in model.parameters() if p.requires_grad)

    def adaptation(self, ctx, knows="algorithm", steps=100) -> Adaptation:
        """Transformation-averaged gradients (AlignMI's TAA) plus EOT over small Gaussian input noise:
        TL-DMI belongs to AT-AT's robustness-reducing family (``_adaptations.robustness_reducing``)."""
        return robustness_reducing(self.name)


@hookimpl
def register_defenses():
    return [TransferLearning]
