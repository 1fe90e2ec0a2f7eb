"""``tl``: transfer learning as a model-inversion defense (TL-DMI).

Paper: Ho, Hao, Nguyen, Cheung. "Model Inversion Robustness: Can Transfer Learning Help?"
CVPR 2024. Code: github.com/hosytuyen/TL-DMI (``config/celeba/training_classifiers/classify.json``,
``train_classifier.py``/``load_TF``).

Start from weights pretrained on public data, freeze the layers before the freeze point and
fine-tune the rest on the private data with plain cross-entropy. Each architecture declares its
blocks and the paper's default freeze point (``Classifier.freeze_point``: VGG16 freezes blocks 1-3
and conv4_1, ``freeze_layers=26`` of ``vgg16_bn.features``; the digit ``cnn`` freezes its first two
conv blocks of three, ``resnet8`` its stem and first two residual blocks); ``tl[freeze=N]`` sets it.

Pretrained weights: ``tl[weights=PATH]`` loads a local state dict, ``tl[weights=NAME]`` a
registered weights file such as ``imagenet`` or ``ms1m`` (``reinv-bench weights``; loaded with
``weights_only=True``; the classifier head is not loaded since the classes differ); without it
the architecture's own ``--arch "NAME[weights=...]"`` is used, and without that the harness
pretrains the same architecture on the scenario's labelled public data (a cached step shared by
every TL target of that architecture). The stored config records which, and the file's SHA-256.

Deliberate differences: the official code misspells ``requires_grad`` for the input layer, which
therefore still trains; here the declared blocks are truly frozen. As in the official code,
frozen BatchNorm layers keep updating their running statistics in training mode.
"""

from __future__ import annotations

from reinv_bench import hookimpl
from reinv_bench.api import Classifier, Defense, Param


class TransferLearning(Defense):
    name = "tl"
    pretrained = True
    params = {
        "freeze": Param(-1, "leading blocks to freeze; -1 = the architecture's declared freeze point", low=-1),
        "weights": Param("", "pretrained state dict: a path or a registered weights name; empty = the arch's "
                             "weights=, else pretrain on the scenario's public data"),
    }

    def frozen_blocks(self, model: Classifier) -> int:
        n = self.config.freeze if self.config.freeze >= 0 else model.freeze_point
        if n >= len(model.blocks):
            raise ValueError(f"tl: cannot freeze {n} blocks of a model with {len(model.blocks)}")
        return n

    def trainable(self, model: Classifier):
        n = self.frozen_blocks(model)
        for block in model.blocks[:n]:
            block.requires_grad_(False)
        return (p for p in model.parameters() if p.requires_grad)


@hookimpl
def register_defenses():
    return [TransferLearning]
