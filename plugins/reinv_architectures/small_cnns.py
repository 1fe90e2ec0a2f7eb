"""Small classifiers for the embedded digit scenarios: ``cnn`` (the default target) and
``resnet8`` (the default evaluation model: a different architecture, as the protocols require).
Both adapt to the scenario's channels and resolution and follow the Classifier protocol: blocks,
penultimate features, linear head.
"""

from __future__ import annotations

from torch import nn

from reinv_bench import hookimpl
from reinv_bench.api import Architecture, Classifier


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class CNN(Architecture):
    """Three conv-BN-ReLU-pool blocks (32/64/128 channels) and a 256-d fully connected feature."""

    name = "cnn"

    def build(self, num_classes: int, image_shape: tuple[int, int, int]) -> Classifier:
        c = image_shape[0]
        blocks = [
            _conv_block(c, 32),
            _conv_block(32, 64),
            _conv_block(64, 128),
            nn.Sequential(
                nn.AdaptiveAvgPool2d(4),
                nn.Flatten(),
                nn.Linear(128 * 16, 256),
                nn.BatchNorm1d(256),
                nn.ReLU(),
            ),
        ]
        return Classifier(blocks, nn.Linear(256, num_classes), 256, num_classes, freeze_point=2)


class _Basic(nn.Module):
    skip_scale = 1.0  # out = body(x) + skip_scale * skip(x) (api.residual_stages; rolss/ssf set it)

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        if self.skip_scale == 1.0:
            return self.act(self.body(x) + self.skip(x))
        out = self.body(x)
        return self.act(out + self.skip_scale * self.skip(x) if self.skip_scale else out)


class ResNet8(Architecture):
    """A residual network: stem, three basic blocks (32/64/128, strides 1/2/2), global pooling."""

    name = "resnet8"

    def build(self, num_classes: int, image_shape: tuple[int, int, int]) -> Classifier:
        c = image_shape[0]
        blocks = [
            nn.Sequential(nn.Conv2d(c, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True)),
            _Basic(32, 32, 1),
            _Basic(32, 64, 2),
            _Basic(64, 128, 2),
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        ]
        return Classifier(blocks, nn.Linear(128, num_classes), 128, num_classes, freeze_point=3)


@hookimpl
def register_architectures():
    return [CNN(), ResNet8()]
