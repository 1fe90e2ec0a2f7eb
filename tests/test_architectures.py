"""The literature's architectures: shapes, blocks, and loading the upstream checkpoints by name."""

from __future__ import annotations

import re

import pytest
import torch
import torchvision

from reinv_bench.api import ConfigError
from reinv_bench.engine.plan import Request, expand
from reinv_bench.engine.runner import Runner


@pytest.mark.parametrize(
    "name, side, dim",
    [
        ("vgg16", 64, 2048),
        ("ir152", 64, 512),
        ("facenet64", 64, 512),
        ("ir50_112", 64, 512),
        ("resnet18", 224, 512),
        ("resnet50", 224, 2048),
        ("densenet121", 224, 1024),
        ("inception_v3", 224, 2048),
        ("inception_resnet_v1", 224, 512),
    ],
)
def test_builds_logits_features_and_blocks(registry, name, side, dim):
    model = registry.get("architecture", name).build(7, (3, side, side)).eval()
    with torch.no_grad():
        out = model.forward_all(torch.rand(2, 3, side, side) * 2 - 1, hidden=True)
    assert out.logits.shape == (2, 7) and out.features.shape == (2, dim) == (2, model.feature_dim)
    assert len(out.hidden) == len(model.blocks) and 0 < model.freeze_point < len(model.blocks)
    assert torch.equal(out.hidden[-1], out.features)


def test_vgg16_feature_batchnorm_has_no_shift_as_the_official_code(registry, tmp_path):
    from reinv_bench.api import Defense, Split, TrainRecipe
    from reinv_bench.engine.train import train_classifier

    model = registry.get("architecture", "vgg16").build(3, (3, 64, 64))
    bn = model.blocks[-1][1]
    assert not bn.bias.requires_grad and bn.weight.requires_grad
    data = Split(torch.rand(8, 3, 64, 64) * 2 - 1, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    train_classifier(
        model,
        data,
        TrainRecipe(epochs=1, batch_size=4, optimizer="sgd", lr=0.1),
        Defense(),
        device=torch.device("cpu"),
        seed=0,
    )
    assert torch.equal(bn.bias, torch.zeros_like(bn.bias))


def test_non_rgb_scenario_is_a_clear_error(registry):
    with pytest.raises(ValueError, match=r"vgg16 takes RGB images; this scenario's images are \(1, 32, 32\)"):
        registry.get("architecture", "vgg16").build(10, (1, 32, 32))


def _runner(registry, tmp_path):
    return Runner(registry, tmp_path, torch.device("cpu")).worker  # where steps load their weights


def _init(path):
    from reinv_bench.engine.artifacts import file_sha256

    return {"weights": str(path), "sha256": file_sha256(path)}


def test_torchvision_checkpoints_load_by_name(registry, tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18()
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(tv.state_dict(), path)
    model = registry.get("architecture", "resnet18").build(5, (3, 224, 224))
    origin = _runner(registry, tmp_path)._init_weights(model, "resnet18", _init(path))
    assert "resnet18-f37072fd.pth" in origin
    assert torch.equal(model.blocks[0][0].weight, tv.conv1.weight)
    assert torch.equal(model.blocks[4][1].bn2.running_var, tv.layer4[1].bn2.running_var)
    assert model.head.weight.shape == (5, 512)  # the 1000-class fc is not loaded


def test_densenet_legacy_checkpoint_keys_are_renamed(registry, tmp_path):
    tv = torchvision.models.densenet121()
    legacy = {
        re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v
        for k, v in tv.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }  # as the real file
    assert any(".norm.1." in k for k in legacy)
    path = tmp_path / "densenet121-a639ec97.pth"
    torch.save(legacy, path)
    model = registry.get("architecture", "densenet121").build(5, (3, 224, 224))
    _runner(registry, tmp_path)._init_weights(model, "densenet121", _init(path))
    assert torch.equal(
        model.blocks[1][0].denselayer1.norm1.weight, tv.features.denseblock1.denselayer1.norm1.weight
    )


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_ms1m_backbone_loads_into_the_64px_ir152_except_its_own_output_layer(registry, tmp_path):
    from reinv_architectures.face_evolve import IRBackbone

    backbone = IRBackbone(152, 112)  # face.evoLVe's 112-px backbone, as the MS-Celeb-1M file
    path = tmp_path / "backbone.pth"
    torch.save({"state_dict": backbone.state_dict()}, path)
    model = registry.get("architecture", "ir152").build(5, (3, 64, 64))
    fresh_before = model.blocks[4][3].weight.clone()
    _runner(registry, tmp_path)._init_weights(model, "ir152", _init(path))
    assert torch.equal(model.blocks[0][0][0].weight, backbone.input_layer[0].weight)
    assert torch.equal(model.blocks[3][2].res_layer[3].weight, backbone.body[-1].res_layer[3].weight)
    assert torch.equal(model.blocks[4][3].weight, fresh_before)  # 512*4*4 -> 512: the 64-px model's own
    # the 112-px evaluation model takes the whole backbone, output layer included
    evaluator = registry.get("architecture", "ir50_112").build(5, (3, 64, 64))
    torch.save(IRBackbone(50, 112).state_dict(), path)
    _runner(registry, tmp_path)._init_weights(evaluator, "ir50_112", _init(path))
    # a checkpoint of another network is refused, naming what does not fit
    with pytest.raises(
        ValueError, match=r"do not fit architecture ir152: missing \[.*shapes differ \['blocks"
    ):
        _runner(registry, tmp_path)._init_weights(model, "ir152", _init(path))


def test_arch_weights_in_specs(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("REINV_BENCH_WEIGHTS", str(tmp_path / "w"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(
        ConfigError,
        match=r"--arch resnet18\[weights=imagenet\]: weights 'resnet18-imagenet'.*absent.*"
        r"weights add resnet18-imagenet FILE",
    ):
        expand(Request(["gmi"], ["none"], ["resnet18[weights=imagenet]"]), registry)
    with pytest.raises(
        ConfigError,
        match=r"architecture resnet18: unknown parameter\(s\) weigths; the only one is "
        r"weights=NAME\|PATH \(NAME: imagenet\)",
    ):
        expand(Request(["gmi"], ["none"], ["resnet18[weigths=imagenet]"]), registry)
    path = tmp_path / "mine.pt"
    torch.save(registry.get("architecture", "cnn").build(10, (1, 32, 32)).state_dict(), path)
    plan = expand(Request(["gmi"], ["none", "tl"], [f"cnn[weights={path}]"], budget="smoke"), registry)
    targets = [s for s in plan.steps.values() if s.kind == "target"]
    assert len(targets) == 2 and all(s.spec["init"]["weights"] == str(path) for s in targets)
    assert "pretrain" not in {s.kind for s in plan.steps.values()}  # TL starts from the arch's weights
    assert {c.labels["arch"] for c in plan.cells} == {f"cnn[weights={path}]"}


def test_another_evaluation_model_is_another_protocol(registry):
    default = expand(Request(["gmi"], ["none"], budget="smoke"), registry)
    same = expand(Request(["gmi"], ["none"], budget="smoke", eval_arch="resnet8"), registry)
    other = expand(Request(["gmi"], ["none"], budget="smoke", eval_arch="cnn"), registry)
    assert {c.cell_id for c in same.cells} == {c.cell_id for c in default.cells}
    assert {c.labels["protocol"] for c in default.cells} == {"digits32"}
    assert {c.labels["protocol"] for c in other.cells} == {"digits32, eval cnn"}
    assert {c.eval_key for c in other.cells}.isdisjoint(c.eval_key for c in default.cells)


def test_tl_on_a_scenario_without_public_labels_asks_for_weights_before_training(registry):
    with pytest.raises(
        ConfigError,
        match=r"tl starts from pretrained weights, and scenario celeba64 has no labelled "
        r"public data.*tl\[weights=PATH\|NAME\]",
    ):
        expand(Request(["gmi"], ["tl"], scenarios=["celeba64"]), registry)
