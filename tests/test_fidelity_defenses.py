"""TL-DMI, BiDO, MID and FID against transcriptions of the official code, written here (issue 10,
items 6-9). Each transcription cites repository, file and function; the plugins are compared
with it on small random tensors or networks built here."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reinv_bench.api import EvalContext, Inversion, NotComputed, ScenarioData, Split, TrainRecipe
from reinv_bench.engine.plan import Request, expand
from reinv_bench.engine.train import make_optimizer

# ---- TL-DMI (item 6) -----------------------------------------------------------------------
# hosytuyen/TL-DMI config/celeba/training_classifiers/classify.json, transcribed
TL_CLASSIFY_JSON = {
    "VGG16": {
        "epochs": 200,
        "batch_size": 64,
        "lr": 8e-2,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "freeze_layers": 26,
    },
    "IR152": {
        "epochs": 100,
        "batch_size": 64,
        "lr": 1e-2,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "freeze_layers": 46,
    },
    "FaceNet64": {
        "epochs": 200,
        "batch_size": 8,
        "lr": 8e-3,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "freeze_layers": 5,
    },
}
ARCH = {"vgg16": "VGG16", "ir152": "IR152", "facenet64": "FaceNet64"}


def official_vgg16_tl_freeze(features: nn.Sequential, freeze_layers: int) -> None:
    """TL-DMI models/classify.py::VGG16_TL.__init__ (freeze_layers > 0 branch)."""
    for i, child in enumerate(features.children()):
        if i <= freeze_layers:
            for param in child.parameters():
                param.requires_grad = False


def official_ir_freeze(feature, freeze_layers: int) -> None:
    """TL-DMI models/classify.py::IR152.__init__ / FaceNet64.__init__ (the input layer's
    ``requries_grad`` typo included: it sets a new attribute and freezes nothing)."""
    if freeze_layers > 0:
        for param in feature.input_layer.parameters():
            param.requries_grad = False
        for i, child in enumerate(feature.body.children()):
            if i <= freeze_layers:
                for param in child.parameters():
                    param.requires_grad = False


def trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _tl_model(registry, arch):
    model = registry.get("architecture", arch).build(10, (3, 64, 64))
    tl = registry.get("defense", "tl")({})
    list(tl.trainable(model))
    return model


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_tl_freezes_vgg16_as_the_official_vgg16_tl(registry):
    import torchvision

    ours = _tl_model(registry, "vgg16")
    features = torchvision.models.vgg16_bn(weights=None).features
    official_vgg16_tl_freeze(features, TL_CLASSIFY_JSON["VGG16"]["freeze_layers"])
    stages, cur = [], []  # the official trainable parameters per conv stage (split at the pools)
    for m in features:
        cur.append(m)
        if isinstance(m, nn.MaxPool2d):
            stages.append(sum(trainable(c) for c in cur))
            cur = []
    assert [trainable(b) for b in ours.blocks[:5]] == stages
    assert stages[:3] == [0, 0, 0] and 0 < stages[3] < sum(p.numel() for p in ours.blocks[3].parameters())
    assert trainable(ours.blocks[5]) == 2048 and trainable(ours.head) == 2048 * 10 + 10  # VGG16_TL's bn, fc


@pytest.mark.parametrize("arch, units", [("ir152", (3, 8, 36, 3)), ("facenet64", (3, 4, 14, 3))])
def test_tl_freezes_the_ir_nets_as_the_official_code(registry, arch, units):
    from reinv_architectures.face_evolve import IRBackbone

    with torch.device("meta"):  # parameter counts only: nothing is allocated
        ours = _tl_model(registry, arch)
        feature = IRBackbone(152 if arch == "ir152" else 50, 64)
    official_ir_freeze(feature, TL_CLASSIFY_JSON[ARCH[arch]]["freeze_layers"])
    bounds = [sum(units[:i]) for i in range(5)]
    official = [sum(trainable(feature.body[j]) for j in range(bounds[i], bounds[i + 1])) for i in range(4)]
    mine = [trainable(ours.blocks[0][1]), *(trainable(b) for b in ours.blocks[1:4])]
    assert mine == official
    assert trainable(ours.blocks[4]) == trainable(feature.output_layer) > 0  # output layer and head train
    # deliberate difference: the official input layer still trains (the typo); here it is frozen
    assert trainable(feature.input_layer) > 0 and trainable(ours.blocks[0][0]) == 0
    frozen_stages = {"ir152": 3, "facenet64": 1}[arch]
    assert all(o == 0 for o in official[:frozen_stages]) and official[frozen_stages] > 0


def test_tl_freeze_param_still_counts_whole_blocks(registry):
    with torch.device("meta"):
        model = registry.get("architecture", "vgg16").build(10, (3, 64, 64))
    list(registry.get("defense", "tl")({"freeze": "2"}).trainable(model))
    assert [trainable(b) == 0 for b in model.blocks] == [True, True, False, False, False, False]


@pytest.mark.parametrize("arch", ["vgg16", "ir152", "facenet64"])
def test_tl_trains_with_the_official_schedule_at_the_paper_budget(registry, arch):
    tl = registry.get("defense", "tl")({})
    base = TrainRecipe(
        epochs=50,
        batch_size=64,
        optimizer="sgd",
        lr=1e-2,
        momentum=0.9,
        weight_decay=1e-4,
        milestones=(0.4, 0.7),
        gamma=0.2,
        augment="flip",
    )
    cfg = TL_CLASSIFY_JSON[ARCH[arch]]
    got = tl.recipe(base, "paper", arch)
    # train_classifier.py: SGD(lr, momentum, weight_decay); engine.py::train_reg builds its
    # MultiStepLR only when model_name == "Test": a constant rate
    assert (
        got.epochs,
        got.batch_size,
        got.optimizer,
        got.lr,
        got.momentum,
        got.weight_decay,
        got.milestones,
    ) == (cfg["epochs"], cfg["batch_size"], "sgd", cfg["lr"], cfg["momentum"], cfg["weight_decay"], ())
    assert got.augment == "flip"  # the official loader's RandomHorizontalFlip
    assert tl.recipe(base, "quick", arch) == base and tl.recipe(base, "paper", "cnn") == base


def test_defense_schedules_reach_the_target_step(registry, tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"any file: only hashed when planning")
    plan = expand(
        Request(
            ["gmi"],
            [f"tl[weights={weights}]", "bido", "mid"],
            archs=["vgg16"],
            scenarios=["celeba64"],
            budget="paper",
        ),
        registry,
        data_digest=lambda s: "d",
    )
    recipes = {
        s.spec["defense"][0]["name"]: s.spec["recipe"] for s in plan.steps.values() if s.kind == "target"
    }
    assert (recipes["tl"]["epochs"], recipes["tl"]["lr"]) == (200, 8e-2)
    assert (recipes["bido"]["optimizer"], recipes["bido"]["lr"], recipes["bido"]["epochs"]) == (
        "adam",
        1e-4,
        50,
    )
    assert recipes["mid"] == recipes["none"]  # MID trains with the scenario's recipe


# ---- BiDO (item 7) -------------------------------------------------------------------------


def official_make_layers(cfg, batch_norm=False):
    """Defend_MI BiDO/model.py::make_layers."""
    blocks, layers, in_channels = [], [], 3
    for v in cfg:
        if v == "M":
            layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
            blocks.append(nn.Sequential(*layers))
            layers = []
        else:
            conv2d = nn.Conv2d(in_channels, v, kernel_size=3, padding=1)
            layers += (
                [conv2d, nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                if batch_norm
                else [conv2d, nn.ReLU(inplace=True)]
            )
            in_channels = v
    return blocks


class OfficialVGG16HSIC(nn.Module):
    """Defend_MI BiDO/model.py::VGG16(hsic_training=True, dataset='celeba')."""

    def __init__(self, n_classes):
        super().__init__()
        blocks = official_make_layers(
            [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
            batch_norm=True,
        )
        self.layer1, self.layer2, self.layer3, self.layer4, self.layer5 = blocks
        self.feat_dim = 512 * 2 * 2
        self.bn = nn.BatchNorm1d(self.feat_dim)
        self.bn.bias.requires_grad_(False)
        self.fc_layer = nn.Linear(self.feat_dim, n_classes)

    def forward(self, x):
        hiddens = []
        out = self.layer1(x)
        hiddens.append(out)
        out = self.layer2(out)
        hiddens.append(out)
        out = self.layer3(out)
        hiddens.append(out)
        out = self.layer4(out)
        hiddens.append(out)
        feature = self.layer5(out)
        feature = feature.view(feature.size(0), -1)
        feature = self.bn(feature)
        hiddens.append(feature)
        return hiddens, self.fc_layer(feature)


def official_kernelmat(X, sigma, ktype="gaussian"):
    """Defend_MI BiDO/hsic.py::hisc_kernelmat (float64 here: see bido.py's deliberate difference)."""
    X = X.double()
    m = int(X.size()[0])
    H = torch.eye(m, dtype=X.dtype) - (1.0 / m) * torch.ones([m, m], dtype=X.dtype)
    if ktype == "gaussian":
        Dxx = torch.cdist(X, X).pow(2)  # distmat
        Kx = torch.exp(-Dxx / (2.0 * sigma * sigma * X.size()[1]))
    elif ktype == "linear":
        Kx = torch.mm(X, X.T)
    return torch.mm(Kx, H)


def official_hsic_normalized_cca(x, y, sigma, ktype="gaussian"):
    """Defend_MI BiDO/hsic.py::hsic_normalized_cca."""
    m = int(x.size()[0])
    Kxc = official_kernelmat(x, sigma=sigma)
    Kyc = official_kernelmat(y, sigma=sigma, ktype=ktype)
    epsilon = 1e-5
    K_I = torch.eye(m, dtype=torch.float64)
    Rx = Kxc.mm(torch.inverse(Kxc + epsilon * m * K_I))
    Ry = Kyc.mm(torch.inverse(Kyc + epsilon * m * K_I))
    return torch.sum(torch.mul(Rx, Ry.t()))


def official_multilayer_hsic(model, inputs, images01, target, a1, a2, n_classes, ktype="linear"):
    """Defend_MI BiDO/engine.py::multilayer_hsic (hsic_training, measure HSIC). ``inputs`` is what
    the network sees; ``images01`` is the [0, 1] image the official loader gives (there the two
    are the same tensor, see bido.py's deliberate differences)."""
    bs = inputs.size(0)
    hiddens, out_digit = model(inputs)
    total_loss = F.cross_entropy(out_digit, target)
    h_target = torch.eye(n_classes)[target].float()  # utils.to_categorical
    h_data = images01.view(bs, -1)
    for hidden in hiddens:
        hidden = hidden.view(bs, -1)
        hxz_l = official_hsic_normalized_cca(hidden, h_data, sigma=5.0)
        hyz_l = official_hsic_normalized_cca(hidden, h_target, sigma=5.0, ktype=ktype)
        total_loss = total_loss + a1 * hxz_l - a2 * hyz_l
    return total_loss


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_bido_loss_equals_the_official_multilayer_hsic_on_vgg16(registry):
    torch.manual_seed(0)
    ours = registry.get("architecture", "vgg16").build(5, (3, 64, 64)).train()
    official = OfficialVGG16HSIC(5).train()
    for (_, p), (_, q) in zip(official.state_dict().items(), ours.state_dict().items(), strict=True):
        p.copy_(q)  # as train_HSIC.py::load_my_state_dict: in order (same shapes = same layers)
    images01 = torch.rand(8, 3, 64, 64)
    x = images01 * 2 - 1  # the harness's [-1, 1] batch
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    bido = registry.get("defense", "bido")({"a1": "1.0", "a2": "1.0"})
    got = bido.loss(ours.forward_all(x, hidden=True), x, y)
    want = official_multilayer_hsic(official, x, images01, y, 1.0, 1.0, 5)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    # what the checks above would miss: d(X, Z) on [-1, 1] images, or the raw 5th stage
    wrong_range = official_multilayer_hsic(official, x, x, y, 1.0, 1.0, 5)
    assert abs(wrong_range.item() - want.item()) > 1e-2 * abs(want.item())
    out = ours.forward_all(x, hidden=True)
    assert len(bido.layers(out.hidden)) == 5 and bido.layers(out.hidden)[3] is out.hidden[3]
    assert bido.layers(out.hidden)[4] is out.hidden[5] and all(
        h is not out.hidden[4] for h in bido.layers(out.hidden)
    )


def test_bido_trains_with_the_official_optimiser_at_the_paper_budget(registry):
    bido = registry.get("defense", "bido")({})
    base = TrainRecipe(
        epochs=50,
        batch_size=64,
        optimizer="sgd",
        lr=1e-2,
        weight_decay=1e-4,
        milestones=(0.4, 0.7),
        gamma=0.2,
        augment="flip",
    )
    got = bido.recipe(base, "paper", "vgg16")
    # config/celeba.json "VGG16": epochs 50, batch_size 64, lr 1e-4; train_HSIC.py: Adam(params, lr)
    # and MultiStepLR(milestones=[60], gamma=0.5), which never fires in 50 epochs
    assert (
        got.optimizer,
        got.epochs,
        got.batch_size,
        got.lr,
        got.weight_decay,
        got.milestones,
        got.augment,
    ) == ("adam", 50, 64, 1e-4, 0.0, (), "flip")
    assert bido.recipe(base, "quick", "vgg16") == base and bido.recipe(base, "paper", "ir152") == base
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    official = torch.optim.Adam(a.parameters(), 1e-4)
    mine = make_optimizer(list(b.parameters()), got)
    for step in range(3):  # Adam's first step is lr * sign(grad): a few, to see its other constants
        x = torch.randn(5, 4, generator=torch.Generator().manual_seed(step))
        for net, opt in ((a, official), (b, mine)):
            opt.zero_grad()
            net(x).pow(2).sum().backward()
            opt.step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


# ---- MID (item 8) --------------------------------------------------------------------------


def official_vib_forward(feature, st_layer, fc_layer, k):
    """mi-defense gmi/target/model.py::VGG16_vib.forward (= predict) after the features
    (Defend_MI BiDO/model.py::VGG16_vib is the same); on the CPU instead of ``.cuda()``."""
    statis = st_layer(feature)
    mu, std = statis[:, :k], statis[:, k:]
    std = F.softplus(std - 5, beta=1)
    eps = torch.FloatTensor(std.size()).normal_()
    res = mu + std * eps
    return fc_layer(res)


def test_mid_samples_the_bottleneck_at_test_time_as_the_official_model(registry):
    torch.manual_seed(0)
    model = registry.get("defense", "mid")({}).wrap_model(
        registry.get("architecture", "vgg16").build(5, (3, 64, 64))
    )
    model.eval()
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        h = x
        for block in model.blocks:
            h = block(h)
        # VGG16_vib: the flattened conv features go straight into st_layer (no BatchNorm1d)
        conv = model.blocks[4](model.blocks[3](model.blocks[2](model.blocks[1](model.blocks[0](x)))))
        assert torch.equal(h, conv.view(3, -1))
        assert not any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
        assert (model.head.st_layer.in_features, model.head.k) == (2048, 1024)  # feat_dim, feat_dim // 2
        torch.manual_seed(7)
        got = model(x)
        torch.manual_seed(7)
        want = official_vib_forward(h, model.head.st_layer, model.head.fc, model.head.k)
        assert torch.allclose(got, want, atol=1e-6)
        assert not torch.equal(model(x), model(x))  # two test-time passes differ
    det = (
        registry.get("defense", "mid")({"sample": "false"})
        .wrap_model(registry.get("architecture", "cnn").build(10, (1, 32, 32)))
        .eval()
    )
    xs = torch.randn(2, 1, 32, 32)
    assert torch.equal(det(xs), det(xs))


def test_mid_keeps_the_ir_output_layers_batchnorm(registry):
    with torch.device("meta"):
        model = registry.get("defense", "mid")({}).wrap_model(
            registry.get("architecture", "ir152").build(5, (3, 64, 64))
        )
    assert isinstance(
        model.blocks[-1][-1], nn.BatchNorm1d
    )  # IR152_vib's output_layer ends in BatchNorm1d(512)
    assert model.head.k == 256


# ---- FID (item 9) --------------------------------------------------------------------------


def official_success_filter(fake, eval_prob, iden):
    """Re-thinking_MI (LOMMA) metrics/fid.py::gen_samples: the successfully attacked samples."""
    eval_iden = torch.argmax(eval_prob, dim=1).view(-1)
    sucessful_iden = []
    for id in range(iden.shape[0]):
        if eval_iden[id] == iden[id]:
            sucessful_iden.append(id)
    return fake[sucessful_iden] if sucessful_iden else fake[:0]


class MeanColour(nn.Module):
    """A stand-in for pytorch-fid's InceptionV3: [pool features] = the mean colour."""

    def forward(self, x):
        return [x.mean((2, 3), keepdim=True)]


def _fid_ctx(protocol, n=12, classes=4):
    torch.manual_seed(0)
    images = torch.rand(n, 3, 8, 8) * 2 - 1
    evaluator = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, classes))
    with torch.no_grad():
        pred = evaluator(images).argmax(1)
    labels = torch.where(torch.arange(n) % 3 == 0, (pred + 1) % classes, pred)  # a third fail
    priv = Split(torch.rand(16, 3, 8, 8) * 2 - 1, torch.arange(16) % classes)
    data = ScenarioData(priv, priv, Split(priv.x, None), priv, priv, "digest", "test")
    scenario = SimpleNamespace(protocol=protocol)
    return EvalContext(
        scenario, data, Inversion(images, labels), None, evaluator, torch.device("cpu")
    ), evaluator


@pytest.mark.parametrize("protocol", ["64px", "224px"])
def test_fid_compares_successful_reconstructions_at_64px_and_all_at_224px(protocol, monkeypatch):
    from reinv_metrics import _pretrained, fid

    ctx, evaluator = _fid_ctx(protocol)
    inv = ctx.inversion
    with torch.no_grad():
        success = official_success_filter(inv.images, evaluator(inv.images), inv.labels)
    want_images = success if protocol == "64px" else inv.images
    assert 2 <= len(success) < len(inv.images)
    (chunk,) = ctx.inversion.chunks()
    images = fid.fid_images(ctx, chunk)
    assert torch.equal(images, want_images)
    # the metric itself, with a stand-in Inception (mean colour as the feature)
    monkeypatch.setattr(_pretrained, "locate", lambda w: "inception.pth")  # the metrics' shared base
    monkeypatch.setattr(_pretrained, "sha256_of", lambda p: "sha")
    net = MeanColour()
    monkeypatch.setattr(fid, "fid_inception", lambda path, sha: net)
    ref = fid.statistics(fid.pool_features(net, ctx.attacked_private().x, ctx.device))
    want = fid.frechet(fid.pool_features(net, want_images, ctx.device), ref)
    assert fid.FID().compute(ctx)["fid"] == pytest.approx(want)


def test_fid_without_two_successes_is_null_with_the_reason(monkeypatch):
    from reinv_metrics import _pretrained, fid

    ctx, _ = _fid_ctx("64px")
    ctx.inversion.labels[:] = (ctx.inversion.labels + 1) % 4
    ctx.inversion.labels[0] = fid.predict(ctx.eval_model, ctx.inversion.images[:1], ctx.device).argmax(1)
    monkeypatch.setattr(_pretrained, "locate", lambda w: "inception.pth")
    monkeypatch.setattr(_pretrained, "sha256_of", lambda p: "sha")
    monkeypatch.setattr(fid, "fid_inception", lambda path, sha: MeanColour())
    out = fid.FID().compute(ctx)["fid"]
    assert isinstance(out, NotComputed) and "2 successful reconstructions, got" in out.reason


# ---- TL-DMI: frozen BatchNorm layers in training -------------------------------------------


def official_train_reg_epoch(model, criterion, optimizer, batches):
    """TL-DMI engine.py::train_reg, one epoch: ``model.train()`` on the whole model (frozen layers
    only have requires_grad False, so their BatchNorm layers are in training mode and update
    running_mean/var), then cross-entropy steps. (The official model returns (feat, logits).)"""
    model.train()
    for img, iden in batches:
        out_prob = model(img)
        loss = criterion(out_prob, iden.view(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_tl_frozen_batchnorm_running_stats_update_as_the_official_train_reg(registry):
    import copy

    from reinv_bench.engine.train import train_classifier

    cfg = TL_CLASSIFY_JSON["FaceNet64"]
    torch.manual_seed(0)
    ours = registry.get("architecture", "facenet64").build(4, (3, 64, 64))
    official = copy.deepcopy(ours)
    before = copy.deepcopy(ours.state_dict())
    x, y = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 4

    # official: train_classifier.py builds FaceNet64(n_classes, freeze_layers) (classify.py), SGD over
    # all of net.parameters(), then train_reg; the body as face.evoLVe's (input_layer, body units)
    units = [*official.blocks[0][1], *official.blocks[1], *official.blocks[2], *official.blocks[3]]
    official_ir_freeze(
        SimpleNamespace(input_layer=official.blocks[0][0], body=nn.Sequential(*units)), cfg["freeze_layers"]
    )
    opt = torch.optim.SGD(
        official.parameters(), lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"]
    )
    official_train_reg_epoch(official, nn.CrossEntropyLoss(), opt, [(x, y)])

    # ours: one epoch of one official-size batch (8) under tl
    tl = registry.get("defense", "tl")({})
    recipe = TrainRecipe(
        epochs=1,
        batch_size=cfg["batch_size"],
        optimizer="sgd",
        lr=cfg["lr"],
        momentum=cfg["momentum"],
        weight_decay=cfg["weight_decay"],
    )
    train_classifier(ours, Split(x, y), recipe, tl, device=torch.device("cpu"), seed=0)

    frozen = {id(s) for f in tl.frozen_modules(ours) for s in f.modules()}
    frozen_bns = [n for n, m in ours.named_modules() if isinstance(m, nn.BatchNorm2d) and id(m) in frozen]
    assert (
        len(frozen_bns) == 1 + 3 * 2 + 3 * 2 + 1
    )  # input layer; 3 stage-1 units; 3 stage-2 units + shortcut BN
    mine, theirs = ours.state_dict(), official.state_dict()
    for name in frozen_bns:
        w = f"{name}.weight"
        assert torch.equal(mine[w], before[w])  # frozen: the affine parameters do not move
        for buf in ("running_mean", "running_var", "num_batches_tracked"):
            k = f"{name}.{buf}"
            # as the official: updated from the batch (a frozen BN kept in eval mode would fail here)
            assert not torch.equal(mine[k], before[k]), k
            torch.testing.assert_close(mine[k], theirs[k], rtol=1e-4, atol=1e-5)
