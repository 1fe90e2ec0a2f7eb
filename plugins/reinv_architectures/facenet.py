"""``inception_resnet_v1``: facenet-pytorch's InceptionResnetV1 as a classifier (a target of the
224-px face protocol in PPA's code). Blocks: stem, repeat_1, mixed_6a + repeat_2,
mixed_7a + repeat_3 + block8, then pooling, dropout, ``last_linear`` and ``last_bn`` (the 512-d
penultimate embedding, before facenet's L2 normalisation); a linear head.
``--arch "inception_resnet_v1[weights=vggface2]"`` starts from facenet-pytorch's VGGFace2 weights
(the file the ``facenet_dist`` metric uses).

Pin ``facenet-pytorch>=2.5.3,<2.6``: 2.6.0 pins torch 2.2 and drags a multi-GB downgrade.
"""

from __future__ import annotations

from torch import nn

from reinv_bench import hookimpl
from reinv_bench.api import Architecture, Classifier

from ._layers import rgb as _rgb


class InceptionResnetV1(Architecture):
    name = "inception_resnet_v1"
    pretrained = {"vggface2": "facenet-vggface2"}

    def build(self, num_classes, image_shape):
        from facenet_pytorch import InceptionResnetV1 as Net

        _rgb(image_shape, self.name)
        net = Net(pretrained=None, classify=False)
        blocks = [
            nn.Sequential(
                net.conv2d_1a,
                net.conv2d_2a,
                net.conv2d_2b,
                net.maxpool_3a,
                net.conv2d_3b,
                net.conv2d_4a,
                net.conv2d_4b,
            ),
            net.repeat_1,
            nn.Sequential(net.mixed_6a, net.repeat_2),
            nn.Sequential(net.mixed_7a, net.repeat_3, net.block8),
            nn.Sequential(net.avgpool_1a, net.dropout, nn.Flatten(), net.last_linear, net.last_bn),
        ]
        return Classifier(blocks, nn.Linear(512, num_classes), 512, num_classes, freeze_point=2, upstream=net)


@hookimpl
def register_architectures():
    return [InceptionResnetV1()]
