"""The face.evoLVe IR networks (``face_evolve.py``) against a transcription of the official code,
written here: construction order and ``_initialize_weights``, so that one seed gives the official
tensors, and the per-module-type init scheme on its own."""

from __future__ import annotations

import math
from collections import namedtuple

import pytest
import torch
from torch import nn

# ---- transcription ------------------------------------------------------------------------
# Official source: the MI repos' copy of face.evoLVe's backbone, identical in
#   SCccc21/Knowledge-Enriched-DMI       evolve.py
#   sutd-visual-computing-group/Re-thinking_MI  models/evolve.py
#   hosytuyen/TL-DMI                     models/evolve.py
# (classes bottleneck_IR, Backbone64, Backbone112, method _initialize_weights, functions get_block,
# get_blocks, IR_50_64, IR_152_64, IR_50_112), whose _initialize_weights is that of face.evoLVe
# (ZhaoJ9014/face.evoLVe backbone/model_irse.py, Backbone._initialize_weights); and the targets
# around it, hosytuyen/TL-DMI models/classify.py (classes IR152, FaceNet64, FaceNet; the same in
# KEDMI classify.py and LOMMA models/classify.py).


class OfficialFlatten(nn.Module):
    def forward(self, input):
        return input.view(input.size(0), -1)


class official_bottleneck_IR(nn.Module):
    def __init__(self, in_channel, depth, stride):
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channel, depth, (1, 1), stride, bias=False), nn.BatchNorm2d(depth)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, (3, 3), (1, 1), 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        )


Bottleneck = namedtuple("Block", ["in_channel", "depth", "stride"])


def official_get_block(in_channel, depth, num_units, stride=2):
    return [Bottleneck(in_channel, depth, stride)] + [
        Bottleneck(depth, depth, 1) for i in range(num_units - 1)
    ]


def official_get_blocks(num_layers):
    if num_layers == 50:
        return [
            official_get_block(64, 64, 3),
            official_get_block(64, 128, 4),
            official_get_block(128, 256, 14),
            official_get_block(256, 512, 3),
        ]
    if num_layers == 152:
        return [
            official_get_block(64, 64, 3),
            official_get_block(64, 128, 8),
            official_get_block(128, 256, 36),
            official_get_block(256, 512, 3),
        ]
    raise ValueError(num_layers)


def official_initialize_weights(self):
    """evolve.py Backbone64/Backbone112._initialize_weights (= face.evoLVe model_irse.py
    Backbone._initialize_weights)."""
    for m in self.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight.data)
            if m.bias is not None:
                m.bias.data.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(1)
            m.bias.data.zero_()
        elif isinstance(m, nn.BatchNorm1d):
            m.weight.data.fill_(1)
            m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight.data)
            if m.bias is not None:
                m.bias.data.zero_()


def _official_body(num_layers):
    modules = []
    for block in official_get_blocks(num_layers):
        for bottleneck in block:
            modules.append(official_bottleneck_IR(bottleneck.in_channel, bottleneck.depth, bottleneck.stride))
    return nn.Sequential(*modules)


class OfficialBackbone64(nn.Module):
    """evolve.py Backbone64 (mode 'ir'): no output layer."""

    def __init__(self, input_size, num_layers):
        super().__init__()
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, 64, (3, 3), 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
        )
        self.body = _official_body(num_layers)
        official_initialize_weights(self)


class OfficialBackbone112(nn.Module):
    """evolve.py Backbone112 (mode 'ir', input 112): the output layer is built before the body."""

    def __init__(self, input_size, num_layers):
        super().__init__()
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, 64, (3, 3), 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
        )
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(),
            OfficialFlatten(),
            nn.Linear(512 * 7 * 7, 512),
            nn.BatchNorm1d(512),
        )
        self.body = _official_body(num_layers)
        official_initialize_weights(self)


class OfficialIR64(nn.Module):
    """classify.py IR152 (IR_152_64) / FaceNet64 (IR_50_64), freeze_layers=0: the output layer and
    the head are built after the backbone, with PyTorch's default init."""

    def __init__(self, num_layers, num_classes):
        super().__init__()
        self.feature = OfficialBackbone64((64, 64), num_layers)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(),
            OfficialFlatten(),
            nn.Linear(512 * 4 * 4, 512),
            nn.BatchNorm1d(512),
        )
        self.fc_layer = nn.Linear(512, num_classes)


class OfficialFaceNet(nn.Module):
    """classify.py FaceNet (the evaluation model): IR_50_112 and a linear head."""

    def __init__(self, num_classes):
        super().__init__()
        self.feature = OfficialBackbone112((112, 112), 50)
        self.fc_layer = nn.Linear(512, num_classes)


# ---- tests --------------------------------------------------------------------------------
NETS = {
    "ir152": lambda n: OfficialIR64(152, n),
    "facenet64": lambda n: OfficialIR64(50, n),
    "ir50_112": OfficialFaceNet,
}


def _official_state(official: nn.Module) -> dict[str, torch.Tensor]:
    """The official tensors under face.evoLVe's names (those of our ``upstream`` backbone)."""
    out = {}
    for k, v in official.state_dict().items():
        if k.startswith("feature."):
            out[k[len("feature.") :]] = v
        elif k.startswith("output_layer."):
            out[k] = v
    return out


@pytest.mark.parametrize("arch", ["ir152", "facenet64", "ir50_112"])
def test_ir_nets_are_initialised_as_the_official_code_tensor_for_tensor(registry, arch):
    """Same seed, same tensors: every weight, bias, BN buffer and PReLU slope of the backbone, the
    output layer and the head. Any other scheme fails, e.g. Xavier on the 64-px output layer's
    Linear (its official init is PyTorch's default, bound 1/sqrt(8192), non-zero bias),
    kaiming_normal_ convs, or Backbone112's output layer initialised after the body."""
    torch.manual_seed(0)
    ours = registry.get("architecture", arch).build(7, (3, 64, 64))
    torch.manual_seed(0)
    official = NETS[arch](7)
    mine = ours.state_dict()
    theirs = _official_state(official)
    names = ours.upstream_names  # face.evoLVe name -> our name
    assert set(theirs) == set(names)
    for k, v in theirs.items():
        assert torch.equal(mine[names[k]], v), k
    assert torch.equal(ours.head.weight, official.fc_layer.weight)
    assert torch.equal(ours.head.bias, official.fc_layer.bias)


def _xavier_bound(w: torch.Tensor) -> float:
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
    return math.sqrt(6.0 / (fan_in + fan_out))


@pytest.mark.parametrize("arch", ["ir152", "ir50_112"])
def test_ir_init_scheme_per_module_type(registry, arch):
    """Seed-independent: the scheme of the official _initialize_weights per module type."""
    torch.manual_seed(1)
    model = registry.get("architecture", arch).build(7, (3, 64, 64))
    out_linear = model.blocks[4][3]
    for name, m in model.named_modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            # weight 1, bias 0 (a BN initialised otherwise, e.g. weight 0 for zero-init residuals, fails)
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(
                m.bias, torch.zeros_like(m.bias)
            )
        elif isinstance(m, nn.Conv2d):
            assert m.bias is None  # the official convs have no bias
            b = _xavier_bound(m.weight)
            # Xavier-uniform: within its bound and reaching near it; PyTorch's default conv init
            # (kaiming_uniform_, a=sqrt(5): bound 1/sqrt(fan_in) = 0.58 of Xavier's for 3x3 same-width
            # convs) fails the lower check, kaiming_normal_ (std sqrt(2/fan_in)) the upper one
            assert m.weight.abs().max() <= b and m.weight.abs().max() > 0.9 * b, name
    fan_in = out_linear.weight.shape[1]
    if arch == "ir50_112":  # inside Backbone112: Xavier, zero bias
        b = _xavier_bound(out_linear.weight)
        assert out_linear.weight.abs().max() <= b and out_linear.weight.abs().max() > 0.9 * b
        assert torch.equal(out_linear.bias, torch.zeros_like(out_linear.bias))
    else:  # classify.py's own output layer: PyTorch's default (bound 1/sqrt(fan_in)), bias non-zero;
        # Xavier here (bound sqrt(6/(8192+512)) = 0.026 > 1/sqrt(8192) = 0.011, bias 0) fails
        assert out_linear.weight.abs().max() <= 1 / math.sqrt(fan_in)
        assert out_linear.bias.abs().max() > 0
    # the head: classify.py's fc_layer, PyTorch's default init
    assert model.head.weight.abs().max() <= 1 / math.sqrt(512) and model.head.bias.abs().max() > 0
