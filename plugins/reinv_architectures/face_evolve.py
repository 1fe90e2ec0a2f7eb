"""The face.evoLVe IR backbones of the 64-px protocol (KEDMI, PLG-MI, LOMMA, TL-DMI code).

``ir152``: target ``IR152`` = ``evolve.IR_152_64`` (IR units 3/8/36/3) on 64-px input, then the
official output layer BatchNorm2d(512), Dropout, Flatten, Linear(512*4*4, 512), BatchNorm1d(512)
(the 512-d penultimate features), a linear head. ``facenet64``: target ``FaceNet64`` = the same
with ``IR_50_64`` (units 3/4/14/3). ``ir50_112``: the evaluation model "FaceNet" =
``evolve.IR_50_112`` (its output layer flattens 512*7*7) and a linear head; it resizes its input
to 112 px itself (the official evaluation upsamples reconstructions 64 -> 112 with
``utils.low2high``; the official model was trained on crops resized to 112 directly, here on the
scenario's 64-px crops upsampled the same way).

An IR unit: shortcut (MaxPool(1, stride), or 1x1 conv + BN when the depth changes) plus the
residual BN, 3x3 conv, PReLU, 3x3 conv (stride), BN; the first unit of each stage has stride 2.
Weights initialised as the official ``Backbone64``/``Backbone112._initialize_weights`` (the MI
repos' ``evolve.py``; face.evoLVe ``backbone/model_irse.py`` ``Backbone._initialize_weights``;
tests/test_fidelity_architectures.py): Xavier-uniform convs and linears with zero biases,
BatchNorm weight 1 and bias 0, over the backbone's own modules, in the official construction
order (so a seed gives the official tensors). The 64-px targets' output layer is not part of
``Backbone64`` (``models/classify.py`` adds it after), so it keeps PyTorch's default init, as
officially; ``Backbone112`` builds its output layer before the body and initialises it with the
rest.
Module names follow face.evoLVe (``input_layer``, ``body.N``, ``output_layer``), so the official
MS-Celeb-1M backbones load: ``--arch "ir152[weights=ms1m]"`` (the 64-px targets keep their own
output layer, as the official code does, since the 112-px backbone's does not fit 4x4 maps).
Blocks (BiDO, TL): input layer with stage 1, stages 2, 3, 4 (each a sequence of IR units), the
output layer. TL freeze points (the one definition the ``tl`` defense reads), TL-DMI
``classify.json`` ``freeze_layers`` (units ``i <= freeze_layers`` of ``body`` frozen,
``models/classify.py``): ir152 46 = stages 1-3 (``freeze_point=3``); facenet64 5 = stage 1 and
the first 3 of stage 2's 4 units (``freeze_point=1``, ``freeze_within=3``); the input layer is
frozen with stage 1 (the official code means to, see ``tl``). ``ir50_112`` (the evaluation
model) keeps the harness default of 2 blocks.
"""

from __future__ import annotations

from torch import nn

from reinv_bench import hookimpl
from reinv_bench.api import Architecture, Classifier, WeightsFile

from ._layers import Resize
from ._layers import rgb as _rgb

UNITS = {50: (3, 4, 14, 3), 152: (3, 8, 36, 3)}
# TL freeze point per network: (whole blocks, leading units of the next block); see the docstring
FREEZE = {"ir152": (3, 0), "facenet64": (1, 3)}


class IRUnit(nn.Module):
    skip_scale = 1.0  # out = res(x) + skip_scale * shortcut(x) (api.residual_stages; rolss/ssf set it)

    def __init__(self, cin: int, depth: int, stride: int) -> None:
        super().__init__()
        if cin == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(cin, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.Conv2d(cin, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        )

    def forward(self, x):
        if self.skip_scale == 1.0:
            return self.res_layer(x) + self.shortcut_layer(x)
        out = self.res_layer(x)
        return out + self.skip_scale * self.shortcut_layer(x) if self.skip_scale else out


class IRBackbone(nn.Module):
    """face.evoLVe's IR backbone (names as the official checkpoints), input side ``size``."""

    def __init__(self, layers: int, size: int) -> None:
        super().__init__()
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
        )
        if size != 64:  # Backbone112 builds (and registers) its output layer before the body
            self.output_layer = self._output_layer(size)
        units, cin = [], 64
        self.stages = []
        for depth, n in zip((64, 128, 256, 512), UNITS[layers]):
            first = len(units)
            for i in range(n):
                units.append(IRUnit(cin, depth, 2 if i == 0 else 1))
                cin = depth
            self.stages.append(range(first, len(units)))
        self.body = nn.Sequential(*units)
        self._init_weights()
        if size == 64:  # classify.py's IR152/FaceNet64 add it after Backbone64: default init
            self.output_layer = self._output_layer(size)

    @staticmethod
    def _output_layer(size: int) -> nn.Sequential:
        side = size // 16
        return nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(),
            nn.Flatten(),
            nn.Linear(512 * side * side, 512),
            nn.BatchNorm1d(512),
        )

    def _init_weights(self) -> None:
        """The official scheme, module by module in registration order (the RNG order)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def blocks(self) -> list[nn.Module]:
        s = [nn.Sequential(*(self.body[i] for i in r)) for r in self.stages]
        return [nn.Sequential(self.input_layer, s[0]), s[1], s[2], s[3], self.output_layer]


class IRNet(Architecture):
    # 2: the 64-px output layer keeps PyTorch's default init (was Xavier), and the modules are
    # initialised in the official order (Backbone112 registers its output layer before the body)
    version = 2

    def __init__(self, name: str, layers: int, size: int, weights: str) -> None:
        self.name, self.layers, self.size = name, layers, size
        self.pretrained = {"ms1m": weights}

    def build(self, num_classes, image_shape):
        _rgb(image_shape, self.name)
        if self.size == 64 and image_shape[1:] != (64, 64):
            raise ValueError(
                f"{self.name} is the 64-px protocol's network; this scenario's images are {image_shape}"
            )
        net = IRBackbone(self.layers, self.size)
        blocks = net.blocks()
        if self.size != 64:
            blocks[0] = nn.Sequential(Resize(self.size), blocks[0])
        head = nn.Linear(512, num_classes)
        fresh = ("blocks.4.",) if self.size == 64 else ()
        blocks_frozen, within = FREEZE.get(self.name, (2, 0))
        model = Classifier(
            blocks, head, 512, num_classes, freeze_point=blocks_frozen, upstream=net, fresh=fresh
        )
        model.freeze_within = within
        return model


WEIGHTS = [
    WeightsFile(
        "ir50-ms1m",
        "backbone_ir50_ms1m_epoch120.pth",
        "",
        "face.evoLVe IR-50 trained on MS-Celeb-1M (112 px): the official start of FaceNet64 and of the "
        "evaluation model 'FaceNet' (KEDMI/PLG-MI/TL-DMI)",
        "https://github.com/ZhaoJ9014/face.evoLVe",
        "",
    ),
    WeightsFile(
        "ir152-ms1m",
        "Backbone_IR_152_Epoch_112_Batch_2547328_Time_2019-07-13-02-59_checkpoint.pth",
        "",
        "face.evoLVe IR-152 trained on MS-Celeb-1M: the official start of the IR152 target",
        "https://github.com/ZhaoJ9014/face.evoLVe",
        "",
    ),
]


@hookimpl
def register_architectures():
    return [
        IRNet("ir152", 152, 64, "ir152-ms1m"),
        IRNet("facenet64", 50, 64, "ir50-ms1m"),
        IRNet("ir50_112", 50, 112, "ir50-ms1m"),
    ]


@hookimpl
def register_weights():
    return WEIGHTS
