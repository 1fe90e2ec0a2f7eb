"""The literature's torchvision architectures, as Classifiers built from torchvision's own modules
(so torchvision's ImageNet checkpoints load by name: ``--arch "resnet18[weights=imagenet]"``).

``vgg16``: the GMI/KEDMI/PLG-MI/LOMMA target ``VGG16`` (KEDMI ``models/classify.py``): torchvision
``vgg16_bn`` convolutional features, the flattened 512 x 2 x 2 map (at 64 px) through
BatchNorm1d with its bias frozen at 0 (the official "no shift"; the penultimate features), a
linear head. Blocks: the five conv stages (split at the
max-pools) and the batch-normalised features. The official code starts from ImageNet weights.

``resnet18``, ``resnet50``, ``resnet152``, ``densenet121``: the 224-px targets of PPA, NegLS and the
seed paper (MIDRE ``models/classifier.py``: torchvision models, ImageNet-pretrained, the final
layer replaced). Blocks: stem, the four stages (dense blocks with their transitions), pooling.

``inception_v3``: the 224-px protocol's evaluation model (PPA ``Inception_V3_FaceScrub.yaml``),
fed at 299 px: the network resizes its input to 299 (bilinear) itself. Built without the
auxiliary classifier (PPA trains with it; the harness's one training loop has no second loss).

TL freeze points (the one definition the ``tl`` defense reads): ``vgg16`` = TL-DMI's
``freeze_layers=26`` (``VGG16_TL``: children ``i <= 26`` of ``vgg16_bn.features`` frozen), i.e.
conv stages 1-3 (``freeze_point=3``) and the first 3 modules of stage 4, conv4_1 with its BN and
ReLU (``freeze_within=3``); for the others the harness's default (about half of the blocks), not
a published one.
"""

from __future__ import annotations

import re

import torchvision
from torch import nn

from reinv_bench import hookimpl
from reinv_bench.api import Architecture, Classifier, WeightsFile

from ._layers import Resize
from ._layers import rgb as _rgb


def _imagenet(arch: str, filename: str) -> WeightsFile:
    return WeightsFile(
        f"{arch}-imagenet",
        filename,
        filename.rsplit("-", 1)[1].split(".")[0],
        f"torchvision {arch} ImageNet-1k weights (IMAGENET1K_V1)",
        f"https://download.pytorch.org/models/{filename}",
    )


WEIGHTS = [
    _imagenet("vgg16", "vgg16_bn-6c64b313.pth"),
    _imagenet("resnet18", "resnet18-f37072fd.pth"),
    _imagenet("resnet50", "resnet50-0676ba61.pth"),
    _imagenet("resnet152", "resnet152-394f9c45.pth"),
    _imagenet("densenet121", "densenet121-a639ec97.pth"),
    _imagenet("inception_v3", "inception_v3_google-0cc3c7bd.pth"),
]


class VGG16(Architecture):
    name = "vgg16"
    pretrained = {"imagenet": "vgg16-imagenet"}

    def build(self, num_classes, image_shape):
        _rgb(image_shape, self.name)
        tv = torchvision.models.vgg16_bn(weights=None)
        stages, cur = [], []
        for m in tv.features:
            cur.append(m)
            if isinstance(m, nn.MaxPool2d):
                stages.append(nn.Sequential(*cur))
                cur = []
        dim = 512 * (image_shape[1] // 32) * (image_shape[2] // 32)
        bn = nn.BatchNorm1d(dim)
        bn.bias.requires_grad_(False)  # the official "no shift": the BN bias stays 0
        blocks = [*stages, nn.Sequential(nn.Flatten(), bn)]
        model = Classifier(
            blocks,
            nn.Linear(dim, num_classes),
            dim,
            num_classes,
            freeze_point=3,
            upstream=tv,
            fresh=("blocks.5.",),
        )
        model.freeze_within = 3  # TL-DMI freezes features[:27]: + conv4_1, its BN and ReLU
        return model


class _SkipBasic(torchvision.models.resnet.BasicBlock):
    """torchvision's BasicBlock with ``skip_scale`` (api.residual_stages): ``F(x) + s * identity``;
    s = 1 runs torchvision's own forward."""

    skip_scale = 1.0

    def forward(self, x):
        if self.skip_scale == 1.0:
            return super().forward(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(_add_skip(out, x, self.downsample, self.skip_scale))


class _SkipBottleneck(torchvision.models.resnet.Bottleneck):
    """torchvision's Bottleneck with ``skip_scale`` (as ``_SkipBasic``)."""

    skip_scale = 1.0

    def forward(self, x):
        if self.skip_scale == 1.0:
            return super().forward(x)
        out = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
        return self.relu(_add_skip(self.bn3(self.conv3(out)), x, self.downsample, self.skip_scale))


def _add_skip(out, x, downsample, scale: float):
    if not scale:  # no shortcut at all (the downsample's weights stay, unused)
        return out
    return out + scale * (x if downsample is None else downsample(x))


_SKIP = {
    torchvision.models.resnet.BasicBlock: _SkipBasic,
    torchvision.models.resnet.Bottleneck: _SkipBottleneck,
}


class ResNet(Architecture):
    def __init__(self, depth: int) -> None:
        self.name = f"resnet{depth}"
        self.pretrained = {"imagenet": f"resnet{depth}-imagenet"}

    def build(self, num_classes, image_shape):
        _rgb(image_shape, self.name)
        tv = getattr(torchvision.models, self.name)(weights=None)
        for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4):
            for block in layer:  # the same modules and weights, a forward that honours skip_scale
                block.__class__ = _SKIP[type(block)]
        blocks = [
            nn.Sequential(tv.conv1, tv.bn1, tv.relu, tv.maxpool),
            tv.layer1,
            tv.layer2,
            tv.layer3,
            tv.layer4,
            nn.Sequential(tv.avgpool, nn.Flatten()),
        ]
        dim = tv.fc.in_features
        return Classifier(blocks, nn.Linear(dim, num_classes), dim, num_classes, freeze_point=3, upstream=tv)


class DenseNet121(Architecture):
    name = "densenet121"
    pretrained = {"imagenet": "densenet121-imagenet"}
    # torchvision's own loader renames the checkpoint's old ``norm.1`` keys to ``norm1``
    _OLD = re.compile(
        r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
    )

    def build(self, num_classes, image_shape):
        _rgb(image_shape, self.name)
        tv = torchvision.models.densenet121(weights=None)
        f = tv.features
        blocks = [
            nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0),
            nn.Sequential(f.denseblock1, f.transition1),
            nn.Sequential(f.denseblock2, f.transition2),
            nn.Sequential(f.denseblock3, f.transition3),
            nn.Sequential(f.denseblock4, f.norm5, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        ]
        dim = tv.classifier.in_features
        return Classifier(blocks, nn.Linear(dim, num_classes), dim, num_classes, freeze_point=2, upstream=tv)

    def adapt_checkpoint(self, state):
        return {
            (lambda m: m.group(1) + m.group(2) if m else k)(self._OLD.match(k)): v for k, v in state.items()
        }


class InceptionV3(Architecture):
    name = "inception_v3"
    pretrained = {"imagenet": "inception_v3-imagenet"}

    def build(self, num_classes, image_shape):
        _rgb(image_shape, self.name)
        tv = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True)
        blocks = [
            nn.Sequential(Resize(299), tv.Conv2d_1a_3x3, tv.Conv2d_2a_3x3, tv.Conv2d_2b_3x3, tv.maxpool1),
            nn.Sequential(tv.Conv2d_3b_1x1, tv.Conv2d_4a_3x3, tv.maxpool2),
            nn.Sequential(tv.Mixed_5b, tv.Mixed_5c, tv.Mixed_5d),
            nn.Sequential(tv.Mixed_6a, tv.Mixed_6b, tv.Mixed_6c, tv.Mixed_6d, tv.Mixed_6e),
            nn.Sequential(tv.Mixed_7a, tv.Mixed_7b, tv.Mixed_7c),
            nn.Sequential(tv.avgpool, tv.dropout, nn.Flatten()),
        ]
        return Classifier(
            blocks, nn.Linear(2048, num_classes), 2048, num_classes, freeze_point=3, upstream=tv
        )


@hookimpl
def register_architectures():
    return [VGG16(), ResNet(18), ResNet(50), ResNet(152), DenseNet121(), InceptionV3()]


@hookimpl
def register_weights():
    return WEIGHTS
