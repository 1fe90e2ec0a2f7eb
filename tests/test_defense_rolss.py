"""``rolss`` and ``ssf`` (Koh et al., ECCV 2024) against transcriptions of the official fork,
written here: Pillowkoh/RoLSS @304b147 ``models/torchvision/models/resnet.py``
(``BasicBlock.forward``, ``Bottleneck.forward``, ``ResNet.__init__``'s ``_make_layer`` calls,
``ResNet._make_layer``) and ``configs/training/targets/FaceScrub/resnet18/skip.yaml``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reinv_bench.api import ConfigError, TrainRecipe, residual_stages
from reinv_bench.engine.plan import Request, expand
from reinv_bench.engine.runner import Runner
from reinv_bench.registry.composed import compose
from reinv_bench.registry.lookup import load
from reinv_bench.results.store import Store
from reinv_defenses.rolss import stage_factors

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def reg():
    return load()


# ---- transcriptions -------------------------------------------------------------------------

# configs/training/targets/FaceScrub/resnet18/skip.yaml: model.skip, optimizer, lr_scheduler, training
SKIP_YAML = {
    "skip": [1, 1, 1, 0.6],
    "lr": 0.001,
    "betas": (0.9, 0.999),
    "weight_decay": 0.0,
    "milestones": [75, 90],
    "gamma": 0.1,
    "num_epochs": 100,
    "batch_size": 128,
}
ROLSS = [1, 1, 1, 0]  # the paper's RoLSS: the last stage's skips removed


def fork_basic_forward(self, x, skip):
    """resnet.py::BasicBlock.forward (the fork), ``self.skip`` passed as ``skip``."""
    identity = x
    out = self.conv1(x)
    out = self.bn1(out)
    out = self.relu(out)
    out = self.conv2(out)
    out = self.bn2(out)
    if self.downsample is not None:
        identity = self.downsample(x)
    if skip:
        out += skip * identity
    out = self.relu(out)
    return out


def fork_bottleneck_forward(self, x, skip):
    """resnet.py::Bottleneck.forward (the fork)."""
    identity = x
    out = self.conv1(x)
    out = self.bn1(out)
    out = self.relu(out)
    out = self.conv2(out)
    out = self.bn2(out)
    out = self.relu(out)
    out = self.conv3(out)
    out = self.bn3(out)
    if self.downsample is not None:
        identity = self.downsample(x)
    if skip:
        out += skip * identity
    out = self.relu(out)
    return out


def fork_make_layer_skips(blocks, skip=True, split=1):
    """The ``skip`` each block of ``ResNet._make_layer`` is built with (the fork's loop bounds)."""
    skips = [skip]  # the first block (with the downsample)
    split_blocks = int(split * blocks)
    for _ in range(1, split_blocks):
        skips.append(skip)
    for _ in range(split_blocks, blocks):
        skips.append(0)
    return skips


def fork_resnet_skips(layers, skip=None):
    """ResNet.__init__: skip_1..skip_4 (default [1, 1, 1, 1]) and the hard-coded layer3 split=0.8."""
    skip_1, skip_2, skip_3, skip_4 = skip if skip else [1, 1, 1, 1]
    return [
        fork_make_layer_skips(layers[0], skip=skip_1),
        fork_make_layer_skips(layers[1], skip=skip_2),
        fork_make_layer_skips(layers[2], skip=skip_3, split=0.8),
        fork_make_layer_skips(layers[3], skip=skip_4),
    ]


LAYERS = {"resnet18": [2, 2, 2, 2], "resnet50": [3, 4, 6, 3], "resnet152": [3, 8, 36, 3]}


# ---- the skip factors of each block -----------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(LAYERS))
@pytest.mark.parametrize("skip", [ROLSS, SKIP_YAML["skip"], [1, 1, 1, 1]])
def test_fork_variant_split_08_matches_the_forks_make_layer(arch, skip):
    want = [[float(s) for s in stage] for stage in fork_resnet_skips(LAYERS[arch], skip)]
    assert stage_factors(LAYERS[arch], skip[3], 1, split=0.8) == want


@pytest.mark.parametrize("arch", sorted(LAYERS))
def test_paper_definition_has_one_factor_per_stage_and_no_split(arch):
    got = stage_factors(LAYERS[arch], 0.0, 1)
    assert got == [[float(s)] * n for s, n in zip(ROLSS, LAYERS[arch])]
    # the fork's undefended ResNet-152 has 8 of layer3's 36 blocks without skip; the paper's none
    assert fork_resnet_skips(LAYERS["resnet152"])[2].count(0) == 8


def test_defaults_are_the_papers_and_the_forks(reg):
    m = reg.get("architecture", "resnet18").build(5, (3, 64, 64))
    reg.get("defense", "ssf")({}).wrap_model(m)
    assert [[b.skip_scale for b in s] for s in residual_stages(m)] == [
        [float(s)] * 2 for s in SKIP_YAML["skip"]
    ]
    m = reg.get("architecture", "resnet18").build(5, (3, 64, 64))
    reg.get("defense", "rolss")({}).wrap_model(m)
    assert [[b.skip_scale for b in s] for s in residual_stages(m)] == [[float(s)] * 2 for s in ROLSS]


# ---- the forward pass against the fork's ------------------------------------------------------


@pytest.mark.parametrize(
    "arch,forward", [("resnet18", fork_basic_forward), ("resnet50", fork_bottleneck_forward)]
)
@pytest.mark.parametrize("spec", ["ssf[split=0.8]", "rolss", "ssf[scale=0.2,stages=2]"])
def test_model_forward_matches_the_fork_block_by_block(reg, arch, forward, spec):
    torch.manual_seed(0)
    model = reg.get("architecture", arch).build(7, (3, 32, 32))
    from reinv_bench.registry.spec import parse

    (comp,) = parse(spec)
    defense = reg.get("defense", comp.name)(comp.params)
    model = defense.wrap_model(model).eval()
    c = defense.config
    fork = [c.scale if i >= 4 - c.stages else 1.0 for i in range(4)]
    skips = (
        fork_resnet_skips(LAYERS[arch], fork)
        if c.split < 1
        else [[s] * n for s, n in zip(fork, LAYERS[arch])]
    )
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        h = model.blocks[0](x)
        for layer, layer_skips in zip(model.blocks[1:5], skips):
            for block, s in zip(layer, layer_skips, strict=True):
                h = forward(block, h, s)
        want = model.head(model.blocks[5](h))
        got = model(x)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)


def test_scale_1_is_the_undefended_network_bit_for_bit(reg):
    for arch, shape in (("resnet8", (1, 16, 16)), ("resnet18", (3, 32, 32)), ("ir152", (3, 64, 64))):
        torch.manual_seed(0)
        plain = reg.get("architecture", arch).build(4, shape).eval()
        torch.manual_seed(0)
        same = (
            reg.get("defense", "ssf")({"scale": "1"})
            .wrap_model(reg.get("architecture", arch).build(4, shape))
            .eval()
        )
        x = torch.randn(2, *shape)
        with torch.no_grad():
            assert torch.equal(plain(x), same(x)), arch


@pytest.mark.parametrize("arch,shape", [("resnet8", (1, 16, 16)), ("ir152", (3, 64, 64))])
def test_own_residual_blocks_scale_the_shortcut(reg, arch, shape):
    torch.manual_seed(0)
    model = reg.get("architecture", arch).build(4, shape).eval()
    block = residual_stages(model)[-1][0]
    body, short = (block.body, block.skip) if arch == "resnet8" else (block.res_layer, block.shortcut_layer)
    x = torch.randn(2, *((64, 8, 8) if arch == "resnet8" else (256, 8, 8)))  # the last stage's input
    post = nn.ReLU() if arch == "resnet8" else nn.Identity()
    with torch.no_grad():
        for s in (0.6, 0.0):
            block.skip_scale = s
            want = post(body(x) + s * short(x)) if s else post(body(x))
            assert torch.allclose(block(x), want, atol=1e-6)


# ---- errors, recipe, composition ---------------------------------------------------------------


@pytest.mark.parametrize("arch", ["cnn", "vgg16"])
def test_non_residual_architecture_is_a_clear_error(reg, arch):
    model = reg.get("architecture", arch).build(4, (3, 64, 64))
    with pytest.raises(ConfigError, match="needs a residual architecture.*resnet8, resnet18"):
        reg.get("defense", "rolss")({}).wrap_model(model)


def test_non_residual_architecture_is_refused_at_plan_time(registry):
    """Before any data is read or step runs: the plan builds the model on the meta device."""
    req = Request(["meanimg"], ["rolss"], archs=["cnn"], eval_arch="tiny", budget="smoke", baseline=False)
    with pytest.raises(ConfigError, match="needs a residual architecture.*resnet8"):
        expand(req, registry)
    req = Request(["meanimg"], ["none"], archs=["vgg16"], eval_arch="tiny", budget="smoke", baseline=False)
    with pytest.raises(ConfigError, match="--arch vgg16 on scenario mnist: .*RGB"):
        expand(req, registry)


def test_bad_stage_counts_are_clear_errors(reg):
    with pytest.raises(ConfigError, match="3 residual stages"):
        reg.get("defense", "rolss")({"stages": "4"}).wrap_model(
            reg.get("architecture", "resnet8").build(4, (1, 16, 16))
        )
    with pytest.raises(ConfigError, match="split"):
        reg.get("defense", "rolss")({"split": "1.5"})


def test_recipe_at_paper_is_the_forks_config(reg):
    base = TrainRecipe(epochs=7, batch_size=5, optimizer="sgd", lr=0.3, weight_decay=0.1, augment="ppa")
    for name in ("rolss", "ssf"):
        r = reg.get("defense", name)({}).recipe(base, "paper", "resnet18")
        assert (r.optimizer, r.lr, r.weight_decay, r.epochs, r.batch_size, r.gamma, r.augment) == (
            "adam",
            SKIP_YAML["lr"],
            SKIP_YAML["weight_decay"],
            SKIP_YAML["num_epochs"],
            SKIP_YAML["batch_size"],
            SKIP_YAML["gamma"],
            "ppa",
        )
        assert sorted(round(f * r.epochs) for f in r.milestones) == SKIP_YAML["milestones"]
        assert reg.get("defense", name)({}).recipe(base, "smoke", "resnet18") == base


def test_composition(reg):
    d = lambda name: reg.get("defense", name)({})  # noqa: E731
    compose([d("re"), d("rolss")])
    compose([d("rolss"), d("negls")])
    with pytest.raises(ConfigError, match="cannot compose"):
        compose([d("rolss"), d("mid")])  # both change the model


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_smoke_run_on_resnet8(registry, tmp_path):
    plan = expand(
        Request(
            ["meanimg"],
            ["rolss"],
            archs=["resnet8"],
            eval_arch="tiny",
            budget="smoke",
            baseline=False,
            metrics=["natural_acc"],
        ),
        registry,
    )  # one resnet8 target; the test plugin's tiny evaluation model
    store = Store(tmp_path / "r.sqlite")
    Runner(registry, tmp_path, CPU).run(plan, store)
    rows = {r["defense"]: r for r in store.rows()}
    assert set(rows) == {"rolss"}
    assert all(r["status"] == "ok" for r in rows.values()), [r["error"] for r in rows.values()]
