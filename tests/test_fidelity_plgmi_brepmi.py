"""PLG-MI and BREP-MI against transcriptions of their official code (written here, in the
official structure, with the source named on each): networks, augmentation, top-n selection,
reconstruction step, evaluated point, choice of identities and the paper budgets.

Official repositories: LetheSec/PLG-MI-Attack (commit 3cf8735) and
m-kahla/Label-Only-Model-Inversion-Attacks-via-Boundary-Repulsion (commit 8a2e200).
"""

import inspect
import itertools
import math
import queue

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import init, utils

from reinv_attacks import brepmi, plgmi
from reinv_attacks.brepmi import BREPMI, brep_optimize, initial_points
from reinv_attacks.plgmi import (
    PLGMI,
    CGenerator,
    ProjectionDiscriminator,
    augment,
    dequantise,
    max_margin,
    plg_optimize,
    top_n,
)

# ---- PLG-MI: transcriptions ------------------------------------------------------------------


class OfficialCondBN(nn.BatchNorm2d):
    """links/conditional_batchnorm.py: ConditionalBatchNorm2d + CategoricalConditionalBatchNorm2d."""

    def __init__(self, num_classes, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps, momentum, affine=False, track_running_stats=True)
        self.weights = nn.Embedding(num_classes, num_features)
        self.biases = nn.Embedding(num_classes, num_features)
        init.ones_(self.weights.weight.data)
        init.zeros_(self.biases.weight.data)

    def forward(self, input, c):
        weight, bias = self.weights(c), self.biases(c)
        exponential_average_factor = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            exponential_average_factor = self.momentum
        output = F.batch_norm(
            input,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training or not self.track_running_stats,
            exponential_average_factor,
            self.eps,
        )
        size = output.size()
        weight = weight.unsqueeze(-1).unsqueeze(-1).expand(size)
        bias = bias.unsqueeze(-1).unsqueeze(-1).expand(size)
        return weight * output + bias


def _official_upsample(x):  # models/generators/resblocks.py::_upsample
    h, w = x.size()[2:]
    return F.interpolate(x, size=(h * 2, w * 2), mode="bilinear")


class OfficialGBlock(nn.Module):
    """models/generators/resblocks.py::Block (upsample=True, num_classes > 0)."""

    def __init__(self, in_ch, out_ch, num_classes):
        super().__init__()
        h_ch = out_ch
        self.c1 = nn.Conv2d(in_ch, h_ch, 3, 1, 1)
        self.c2 = nn.Conv2d(h_ch, out_ch, 3, 1, 1)
        self.b1 = OfficialCondBN(num_classes, in_ch)
        self.b2 = OfficialCondBN(num_classes, h_ch)
        self.c_sc = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x, y):
        h = self.c1(_official_upsample(F.relu(self.b1(x, y))))
        return self.c_sc(_official_upsample(x)) + self.c2(F.relu(self.b2(h, y)))


class OfficialResNetGenerator(nn.Module):
    """models/generators/resnet64.py::ResNetGenerator (its _initialize is never called)."""

    def __init__(self, num_features=64, dim_z=128, bottom_width=4, num_classes=0):
        super().__init__()
        self.bottom_width = bottom_width
        self.l1 = nn.Linear(dim_z, 16 * num_features * bottom_width**2)
        self.block2 = OfficialGBlock(num_features * 16, num_features * 8, num_classes)
        self.block3 = OfficialGBlock(num_features * 8, num_features * 4, num_classes)
        self.block4 = OfficialGBlock(num_features * 4, num_features * 2, num_classes)
        self.block5 = OfficialGBlock(num_features * 2, num_features, num_classes)
        self.b6 = nn.BatchNorm2d(num_features)
        self.conv6 = nn.Conv2d(num_features, 3, 1, 1)

    def forward(self, z, y):
        h = self.l1(z).view(z.size(0), -1, self.bottom_width, self.bottom_width)
        for i in range(2, 6):
            h = getattr(self, f"block{i}")(h, y)
        return torch.tanh(self.conv6(F.relu(self.b6(h))))


class OfficialDBlock(nn.Module):
    """models/discriminators/resblocks.py::Block (downsample=True, h_ch=None -> in_ch)."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        h_ch = in_ch
        self.c1 = utils.spectral_norm(nn.Conv2d(in_ch, h_ch, 3, 1, 1))
        self.c2 = utils.spectral_norm(nn.Conv2d(h_ch, out_ch, 3, 1, 1))
        self.c_sc = utils.spectral_norm(nn.Conv2d(in_ch, out_ch, 1, 1, 0))
        init.xavier_uniform_(self.c1.weight.data, math.sqrt(2))
        init.xavier_uniform_(self.c2.weight.data, math.sqrt(2))
        init.xavier_uniform_(self.c_sc.weight.data)

    def forward(self, x):
        h = F.avg_pool2d(self.c2(F.relu(self.c1(F.relu(x)))), 2)
        return F.avg_pool2d(self.c_sc(x), 2) + h


class OfficialOptimizedBlock(nn.Module):
    """models/discriminators/resblocks.py::OptimizedBlock."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.c1 = utils.spectral_norm(nn.Conv2d(in_ch, out_ch, 3, 1, 1))
        self.c2 = utils.spectral_norm(nn.Conv2d(out_ch, out_ch, 3, 1, 1))
        self.c_sc = utils.spectral_norm(nn.Conv2d(in_ch, out_ch, 1, 1, 0))
        init.xavier_uniform_(self.c1.weight.data, math.sqrt(2))
        init.xavier_uniform_(self.c2.weight.data, math.sqrt(2))
        init.xavier_uniform_(self.c_sc.weight.data)

    def forward(self, x):
        return self.c_sc(F.avg_pool2d(x, 2)) + F.avg_pool2d(self.c2(F.relu(self.c1(x))), 2)


class OfficialProjectionD(nn.Module):
    """models/discriminators/snresnet64.py::SNResNetProjectionDiscriminator."""

    def __init__(self, num_features=64, num_classes=0):
        super().__init__()
        self.block1 = OfficialOptimizedBlock(3, num_features)
        self.block2 = OfficialDBlock(num_features, num_features * 2)
        self.block3 = OfficialDBlock(num_features * 2, num_features * 4)
        self.block4 = OfficialDBlock(num_features * 4, num_features * 8)
        self.block5 = OfficialDBlock(num_features * 8, num_features * 16)
        self.l6 = utils.spectral_norm(nn.Linear(num_features * 16, 1))
        self.l_y = utils.spectral_norm(nn.Embedding(num_classes, num_features * 16))
        init.xavier_uniform_(self.l6.weight.data)
        init.xavier_uniform_(self.l_y.weight.data)

    def forward(self, x, y):
        h = x
        for i in range(1, 6):
            h = getattr(self, f"block{i}")(h)
        h = torch.sum(F.relu(h), dim=(2, 3))
        output = self.l6(h)
        output += torch.sum(self.l_y(y) * h, dim=1, keepdim=True)
        return output


def official_max_margin_loss(out, iden):
    """losses.py::max_margin_loss."""
    real = out.gather(1, iden.unsqueeze(1)).squeeze(1)
    tmp1 = torch.argsort(out, dim=1)[:, -2:]
    new_y = torch.where(tmp1[:, -1] == iden, tmp1[:, -2], tmp1[:, -1])
    margin = out.gather(1, new_y.unsqueeze(1)).squeeze(1)
    return (-1 * real).mean() + margin.mean()


def official_top_n_selection(all_images_prob, all_images_path, num_classes, top_n):
    """top_n_selection.py::top_n_selection after inference; the copy to class folders is
    replaced by returning each class's selected paths."""
    selected = {}
    for class_idx in range(num_classes):
        bs = all_images_prob.shape[0]
        q = queue.PriorityQueue()
        class_idx_prob = all_images_prob[:, class_idx]
        for j in range(bs):
            current_value = float(class_idx_prob[j])
            image_path = all_images_path[j]
            if q.qsize() < top_n:
                q.put([current_value, image_path])
            else:
                current_min = q.get()
                if current_value < current_min[0]:
                    q.put(current_min)
                else:
                    q.put([current_value, image_path])
        selected[class_idx] = {q.get()[1] for _ in range(q.qsize())}
    return selected


def official_inversion(G, T, z, iden, lr, iter_times, aug_list):
    """reconstruct.py::inversion, the optimisation of one seed (evaluation and saving left out);
    T returns (features, logits) as the official classifiers do."""
    z = z.clone()
    z.requires_grad = True
    optimizer = torch.optim.Adam([z], lr=lr)
    for _ in range(iter_times):
        fake = G(z, iden)
        out1 = T(aug_list(fake))[-1]
        out2 = T(aug_list(fake))[-1]
        inv_loss = official_max_margin_loss(out1, iden) + official_max_margin_loss(out2, iden)
        optimizer.zero_grad()
        inv_loss.backward()
        optimizer.step()
    return z.detach()


# kornia's ImageSequential of reconstruct.py::inversion and train_cgan.py::main, with kornia's
# defaults written out (RandomResizedCrop p=1, ColorJitter p=1 and saturation = hue = 0,
# RandomHorizontalFlip p=0.5, RandomRotation p=0.5).
OFFICIAL_RECONSTRUCT_AUG = {
    "RandomResizedCrop": {"size": (64, 64), "scale": (0.8, 1.0), "ratio": (1.0, 1.0), "p": 1.0},
    "ColorJitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.0, "hue": 0.0, "p": 1.0},
    "RandomHorizontalFlip": {"p": 0.5},
    "RandomRotation": {"degrees": 5.0, "p": 0.5},
}
OFFICIAL_TRAIN_AUG = {
    **OFFICIAL_RECONSTRUCT_AUG,
    "ColorJitter": {**OFFICIAL_RECONSTRUCT_AUG["ColorJitter"], "p": 0.5},
}


def _as_augment_kwargs(official):
    return {
        "scale": official["RandomResizedCrop"]["scale"],
        "brightness": official["ColorJitter"]["brightness"],
        "contrast": official["ColorJitter"]["contrast"],
        "jitter_p": official["ColorJitter"]["p"],
        "flip_p": official["RandomHorizontalFlip"]["p"],
        "degrees": official["RandomRotation"]["degrees"],
        "rot_p": official["RandomRotation"]["p"],
    }


def _copy_by_order(dst: nn.Module, src: nn.Module) -> None:
    """Load ``src``'s state into ``dst`` entry by entry (same registration order), checking shapes."""
    d, s = dst.state_dict(), src.state_dict()
    assert len(d) == len(s)
    for (kd, vd), (ks, vs) in zip(d.items(), s.items()):
        assert vd.shape == vs.shape, (kd, ks)
    dst.load_state_dict(dict(zip(d, s.values())))


def _n_params(net):
    return sum(p.numel() for p in net.parameters())


# ---- PLG-MI: networks --------------------------------------------------------------------------


def test_plgmi_generator_is_the_official_resnet64():
    K = 10
    torch.manual_seed(0)
    off = OfficialResNetGenerator(64, 128, 4, num_classes=K)
    torch.manual_seed(1)
    ours = CGenerator((3, 64, 64), K, ch=64, z_dim=128)
    assert ours.l1.out_features == 16 * 64 * 16  # starts at 16 * ch = 1024 channels
    assert _n_params(ours) == _n_params(off)
    for (name, p), q in zip(ours.named_parameters(), off.parameters()):  # default init, as the official
        if p.numel() >= 4096:
            assert p.std().item() == pytest.approx(q.std().item(), rel=0.1), name
    _copy_by_order(off, ours)
    z, y = torch.randn(2, 128), torch.tensor([3, 7])
    for mode in (False, True):
        off.train(mode), ours.train(mode)
        with torch.no_grad():
            assert torch.allclose(ours(z, y), off(z, y), atol=1e-5)


def test_plgmi_discriminator_is_the_official_snresnet64():
    K = 10
    torch.manual_seed(0)
    off = OfficialProjectionD(64, num_classes=K)
    torch.manual_seed(1)
    ours = ProjectionDiscriminator((3, 64, 64), K, ch=64)
    assert len(ours.blocks) == 5 and ours.blocks[-1].c2.out_channels == 1024  # 5 downsamplings up to 16 * ch
    assert _n_params(ours) == _n_params(off)
    for (name, p), q in zip(ours.named_parameters(), off.parameters()):  # Xavier init, gain sqrt 2 / 1
        if p.numel() >= 4096:
            assert p.std().item() == pytest.approx(q.std().item(), rel=0.1), name
    _copy_by_order(off, ours)
    off.eval(), ours.eval()
    x, y = torch.rand(2, 3, 64, 64) * 2 - 1, torch.tensor([1, 9])
    with torch.no_grad():
        assert torch.allclose(ours(x, y), off(x, y).squeeze(1), rtol=1e-4, atol=1e-4)


# ---- PLG-MI: augmentation ---------------------------------------------------------------------


def test_plgmi_augmentation_parameters_are_the_official(monkeypatch):
    defaults = {k: p.default for k, p in inspect.signature(augment).parameters.items() if k != "x"}
    assert defaults == _as_augment_kwargs(OFFICIAL_RECONSTRUCT_AUG)
    calls, adams = [], []

    def recording_augment(x, **kw):
        calls.append({**defaults, **kw})
        return augment(x, **kw)

    class RecordingAdam(torch.optim.Adam):
        def __init__(self, params, lr, betas):
            super().__init__(params, lr=lr, betas=betas)
            self.rec = {"lr": lr, "betas": betas, "steps": 0}
            adams.append(self.rec)

        def step(self, closure=None):
            self.rec["steps"] += 1
            return super().step(closure)

    noised = []
    monkeypatch.setattr(plgmi, "dequantise", lambda x: noised.append(len(x)) or dequantise(x))
    monkeypatch.setattr(plgmi, "augment", recording_augment)
    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    T = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)).eval().requires_grad_(False)
    c = PLGMI().config
    plgmi.train_cgan(
        torch.rand(8, 3, 8, 8) * 2 - 1,
        torch.arange(8) % 3,
        T,
        (3, 8, 8),
        3,
        ch=4,
        z_dim=c_z(),
        iters=1,
        batch_size=4,
        lr=c.gan_lr,
        n_dis=c.n_dis,
        alpha=c.alpha,
        device=torch.device("cpu"),
        seed=0,
    )
    assert calls == [_as_augment_kwargs(OFFICIAL_TRAIN_AUG)]  # one generator step, jitter p = 0.5
    assert [a["betas"] for a in adams] == [(0.0, 0.9), (0.0, 0.9)] and {a["lr"] for a in adams} == {2e-4}
    assert [a["steps"] for a in adams] == [1, 5]  # G once, D n_dis = 5 times per iteration
    assert noised == [4] * 5  # every real batch


def test_plgmi_dequantisation_is_the_official_noise_adder():
    def official_noise_adder(img):  # train_cgan.py::main::_noise_adder, on images in [0, 1]
        return torch.empty_like(img, dtype=img.dtype).uniform_(0.0, 1 / 256.0) + img

    torch.manual_seed(0)
    x = torch.rand(20000) * 2 - 1
    ours = (dequantise(x) - x) * 0.5  # in [0, 1] pixels
    want = official_noise_adder(x * 0.5 + 0.5) - (x * 0.5 + 0.5)
    assert ours.min() >= 0 and ours.max() <= 1 / 256 + 1e-7 and ours.max() > 0.99 / 256
    assert ours.mean().item() == pytest.approx(want.mean().item(), rel=0.05)


def c_z():
    return PLGMI.z_dim


def _ramp(n, size=32):
    u = (torch.arange(size) * 2 + 1) / size - 1  # normalised x coordinate of the pixel centres
    return (0.5 * u).expand(n, 3, size, size).clone()


def test_plgmi_augmentation_geometry():
    """On a ramp along x, the centre of each output gives the crop side s, the flip and the angle:
    d/dx = 0.5 s cos(a) f, d/dy = -0.5 s sin(a)."""
    torch.manual_seed(0)
    n, size = 2000, 32
    out = augment(_ramp(n, size), jitter_p=0.0)[:, 0, 10:22, 10:22]
    step = 2 / size
    dx = (out[:, :, 1:] - out[:, :, :-1]).mean((1, 2)) / step / 0.5
    dy = (out[:, 1:, :] - out[:, :-1, :]).mean((1, 2)) / step / 0.5
    area = dx**2 + dy**2  # s^2, uniform over the crop scale (0.8, 1)
    angle = torch.atan2(dy.abs(), dx.abs()) * 180 / math.pi
    assert area.min() > 0.8 - 1e-3 and area.max() < 1 + 1e-3
    assert area.min() < 0.81 and area.max() > 0.99
    assert (dx < 0).float().mean().item() == pytest.approx(0.5, abs=0.05)  # flip p = 0.5
    assert (angle > 0.01).float().mean().item() == pytest.approx(0.5, abs=0.05)  # rotation p = 0.5
    assert 4.8 < angle.max().item() < 5.0 + 1e-2  # +-5 degrees
    white = augment(
        torch.ones(64, 3, size, size), scale=(1.0, 1.0), flip_p=0.0, degrees=45.0, rot_p=1.0, jitter_p=0.0
    )
    assert (white[:, :, 0, 0] == -1).float().mean() > 0.5  # black outside, as kornia's zero padding in [0, 1]
    assert torch.allclose(white[:, :, size // 2, size // 2], torch.ones(64, 3))


def test_plgmi_colour_jitter_is_kornia_brightness_contrast():
    """Two grey levels (0.4 and 0.6 in pixels): the output mean is 0.5 b and the difference
    0.2 b c whatever the order; b, c uniform in [0.8, 1.2], applied with probability p."""
    torch.manual_seed(0)
    n = 2000
    x = torch.full((n, 3, 8, 8), -0.2)
    x[..., 4:] = 0.2
    geo = {"scale": (1.0, 1.0), "flip_p": 0.0, "rot_p": 0.0}
    for p in (1.0, 0.5):
        out = augment(x, jitter_p=p, **geo) * 0.5 + 0.5
        b = out.mean((1, 2, 3)) / 0.5
        c = (out[..., 4:].mean((1, 2, 3)) - out[..., :4].mean((1, 2, 3))) / (0.2 * b)
        for f in (b, c):
            assert f.min() > 0.8 - 1e-4 and f.max() < 1.2 + 1e-4
            assert f.min() < 0.81 and f.max() > 1.19
        assert ((b - 1).abs() > 1e-5).float().mean().item() == pytest.approx(p, abs=0.05)
    # colour: every pixel and channel undergoes the same affine map (no saturation or hue), the
    # contrast centre is the image's luma mean (kornia rgb_to_grayscale weights)
    base = torch.rand(n, 1, 4, 4) * 0.2 + 0.4  # channels base + 0.1, base, base - 0.1
    x = torch.cat([base + 0.1, base, base - 0.1], 1)
    out = augment(x * 2 - 1, brightness=0.0, **geo) * 0.5 + 0.5
    alpha = (out[:, 0] - out[:, 1]) / (x[:, 0] - x[:, 1])
    beta = out[:, 0] - alpha * x[:, 0]
    assert torch.allclose(alpha, alpha[:, :1, :1].expand_as(alpha), atol=1e-3)
    assert torch.allclose(beta, beta[:, :1, :1].expand_as(beta), atol=1e-3)
    assert torch.allclose(out[:, 2], alpha * x[:, 2] + beta, atol=1e-4)
    a, bt = alpha[:, 0, 0], beta[:, 0, 0]
    luma = (x * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1).mean((1, 2))
    moved = (a - 1).abs() > 0.02
    assert torch.allclose((bt / (1 - a))[moved], luma[moved], atol=1e-2)


# ---- PLG-MI: selection, loss, reconstruction, budget ------------------------------------------


def test_plgmi_top_n_is_the_official_selection():
    torch.manual_seed(0)
    N, K = 50, 7
    logits = torch.randn(N, K) * 3
    public = torch.arange(N, dtype=torch.float32)[:, None, None, None].expand(N, 1, 2, 2).clone()

    def T(x):
        return logits[x[:, 0, 0, 0].long()]

    for n in (5, 60):  # 60 > N: every image for every class
        xs, ys = top_n(T, public, K, n, torch.device("cpu"))
        want = official_top_n_selection(F.softmax(logits, dim=1), list(range(N)), K, n)
        got = {k: set(xs[ys == k][:, 0, 0, 0].long().tolist()) for k in range(K)}
        assert got == want and len(ys) == K * min(n, N)


def test_plgmi_max_margin_is_the_official_loss():
    torch.manual_seed(0)
    out, iden = torch.randn(16, 9), torch.randint(0, 9, (16,))
    assert max_margin(out, iden).mean().item() == pytest.approx(
        official_max_margin_loss(out, iden).item(), abs=1e-6
    )


def test_plgmi_reconstruction_follows_the_official_per_seed_loop():
    """All classes and seeds in one batch (scale 1 / the number of classes) equals the official
    loop over seeds (sum of 2 augmentations, mean over the identity batch)."""
    torch.manual_seed(0)
    K, classes, seeds = 5, [0, 2, 4], 2
    G = CGenerator((3, 8, 8), K, ch=4, z_dim=16).double().eval().requires_grad_(False)
    T = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, K)).double().eval().requires_grad_(False)
    z0 = torch.randn(seeds * len(classes), 16, dtype=torch.float64)
    y = torch.tensor(classes * seeds)
    ours, _ = plg_optimize(G, T, z0, y, iters=4, lr=0.1, n_aug=2, scale=1 / len(classes), aug=lambda x: x)
    for s in range(seeds):
        rows = slice(s * len(classes), (s + 1) * len(classes))
        want = official_inversion(G, lambda x: (None, T(x)), z0[rows], y[rows], 0.1, 4, lambda x: x)
        assert torch.allclose(ours[rows], want, atol=1e-7)


def test_plgmi_paper_budget_is_the_official():
    # train_cgan.py::get_args defaults and the README's command (--max_iteration=30000 --alpha=0.2);
    # reconstruct.py: --lr 0.1, --iter_times 600, inversion(num_seeds=5), out1 and out2;
    # README: top_n_selection.py --top_n=30; z in R^128 (--gen_dim_z)
    official = {
        "batch_size": 64,
        "gen_num_features": 64,
        "gen_dim_z": 128,
        "lr": 2e-4,
        "max_iteration": 30000,
        "n_dis": 5,
        "alpha": 0.2,
        "rec_lr": 0.1,
        "iter_times": 600,
        "num_seeds": 5,
        "n_aug": 2,
        "top_n": 30,
    }
    c = PLGMI().config
    assert {
        "batch_size": c.gan_batch,
        "gen_num_features": c.gan_ch,
        "gen_dim_z": PLGMI.z_dim,
        "lr": c.gan_lr,
        "max_iteration": c.gan_iters,
        "n_dis": c.n_dis,
        "alpha": c.alpha,
        "rec_lr": c.lr,
        "iter_times": c.iters,
        "num_seeds": c.seeds,
        "n_aug": c.n_aug,
        "top_n": c.top_n,
    } == official


# ---- BREP-MI: transcriptions -----------------------------------------------------------------


CONFIG2 = {  # config2.yaml
    "sphere_points_count": 32,
    "current_sphere_radius": 2,
    "sphere_expansion_coeff": 1.3,
    "point_clamp_min": -1.5,
    "point_clamp_max": 1.5,
    "max_iters_at_radius_before_terminate": 1000,
    "z_dim": 100,
    "num_targets": 300,
    "batch_dim_for_initial_points": 256,
    "repulsion_only": True,
    "targeted_attack": False,
}


def official_decision(imgs, model):
    """brep_mi_utils.py::decision (score=False, low2high=False)."""
    with torch.no_grad():
        T_out = model(imgs)[-1]
        return torch.argmax(T_out, dim=1).view(-1)


def official_is_target_class(idens, target, model):
    """brep_mi_utils.py::is_target_class (score=False)."""
    val_iden = official_decision(idens, model)
    val_iden[val_iden != target] = -1
    val_iden[val_iden == target] = 1
    return val_iden


def official_gen_points_on_sphere(current_point, points_count, sphere_radius):
    """brep_mi.py::gen_points_on_sphere (on the CPU)."""
    points_shape = (points_count,) + current_point.shape
    perturbation_direction = torch.randn(*points_shape)
    dims = tuple([i for i in range(1, len(points_shape))])
    perturbation_direction = (
        sphere_radius / torch.sqrt(torch.sum(perturbation_direction**2, axis=dims, keepdims=True))
    ) * perturbation_direction
    return current_point + perturbation_direction, perturbation_direction


def official_attack_single_target(current_point, target_class, G, target_model, attack_params):
    """brep_mi.py::attack_single_target without logging, image saving and the evaluator; returns
    (point_before_inc_radius, current_point)."""
    current_iter = 0
    last_iter_when_radius_changed = 0
    current_sphere_radius = attack_params["current_sphere_radius"]
    point_before_inc_radius = None
    while (
        current_iter - last_iter_when_radius_changed < attack_params["max_iters_at_radius_before_terminate"]
    ):
        while (
            current_iter - last_iter_when_radius_changed
            < attack_params["max_iters_at_radius_before_terminate"]
        ):
            new_radius = False
            step_size = min(current_sphere_radius / 3, 3)
            new_points, perturbation_directions = official_gen_points_on_sphere(
                current_point, attack_params["sphere_points_count"], current_sphere_radius
            )
            new_points_classification = official_is_target_class(G(new_points), target_class, target_model)
            if new_points_classification.sum() > 0.75 * attack_params["sphere_points_count"]:
                current_sphere_radius = current_sphere_radius * attack_params["sphere_expansion_coeff"]
                new_radius = True
                last_iter_when_radius_changed = current_iter
            if attack_params["repulsion_only"]:
                new_points_classification = (new_points_classification - 1) / 2
            grad_direction = (
                torch.mean(new_points_classification.unsqueeze(1) * perturbation_directions, axis=0)
                / current_sphere_radius
            )
            current_point_new = current_point + step_size * grad_direction
            current_point_new = current_point_new.clamp(
                min=attack_params["point_clamp_min"], max=attack_params["point_clamp_max"]
            )
            current_img = G(current_point_new.unsqueeze(0))
            if official_is_target_class(current_img, target_class, target_model)[0] == -1:
                break
            current_point = current_point_new
            if new_radius:
                point_before_inc_radius = current_point.clone()
                break
            current_iter += 1
    return point_before_inc_radius, current_point


def official_gen_initial_points(num_idens, batch_size, G, model, min_clip, max_clip, z_dim, iden_range=None):
    """brep_mi_utils.py::gen_initial_points_untargeted, or ::gen_initial_points_targeted with
    ``iden_range`` = (iden_range_min, iden_range_max)."""
    if iden_range is not None:
        num_idens = iden_range[1] - iden_range[0] + 1
    initial_points = {}
    with torch.no_grad():
        while True:
            z = torch.randn(batch_size, z_dim).float().clamp(min=min_clip, max=max_clip)
            target_classes = official_decision(G(z), model)
            for i in range(target_classes.shape[0]):
                current_label = target_classes[i].item()
                if current_label in initial_points or (
                    iden_range is not None and not iden_range[0] <= current_label <= iden_range[1]
                ):
                    continue
                initial_points[current_label] = z[i]
                if len(initial_points) == num_idens:
                    break
            if len(initial_points) == num_idens:
                break
    return initial_points


# ---- BREP-MI: tests ------------------------------------------------------------------------------

CENTER = torch.tensor([3.0, 0.0, 0.0])


def _ball_model(x):
    """Toy target on a 3-d latent (G = identity): class 0 inside the ball of radius 4 around
    (3, 0, 0), class 1 outside; returns (features, logits) as the official classifiers do."""
    inside = (x - CENTER).norm(dim=1) < 4.0
    return x, torch.stack([inside.float(), (~inside).float()], 1)


class _Scripted:
    """The ball target, except that the single-image queries (the check of each move) numbered
    in ``reject`` are answered "outside": scripted rejected moves, the same in both loops."""

    def __init__(self, reject=()):
        self.n, self.reject = 0, set(reject)

    def __call__(self, x):
        feats, logits = _ball_model(x)
        if len(x) == 1:
            self.n += 1
            if self.n in self.reject:
                logits = torch.tensor([[0.0, 1.0]])
        return feats, logits


def test_brepmi_evaluates_the_point_at_the_last_radius_increase():
    params = {
        **CONFIG2,
        "sphere_points_count": 8,
        "current_sphere_radius": 1.0,
        "max_iters_at_radius_before_terminate": 4,
    }
    differed = 0
    for seed, start, reject in itertools.product(range(4), (0.0, -0.4), ((), (1, 4), (2, 3, 6, 9, 10))):
        z0 = torch.tensor([start, 0.0, 0.0])  # -0.4: near the boundary, moves when the radius grows
        torch.manual_seed(seed)
        want_point, want_final = official_attack_single_target(
            z0, 0, nn.Identity(), _Scripted(reject), params
        )
        torch.manual_seed(seed)
        target = _Scripted(reject)
        final, point, info = brep_optimize(
            nn.Identity(),
            lambda x, target=target: target(x)[-1].argmax(1),
            z0[None],
            torch.tensor([0]),
            points=8,
            r0=1.0,
            grow=1.3,
            threshold=0.75,
            patience=4,
            max_iters=10_000,
            clamp=1.5,
        )
        assert torch.allclose(final[0], want_final, atol=1e-5)
        assert torch.allclose(point[0], want_point if want_point is not None else z0, atol=1e-5)
        differed += not torch.allclose(want_point, want_final) if want_point is not None else 0
    assert differed  # the toy has runs whose final z is not the evaluated point


def test_brepmi_returns_the_evaluated_point_and_never_stops_on_the_radius(monkeypatch):
    """Every sphere point inside: the radius grows every step, past any bound (no R > 16.3 stop);
    the image returned is G of the evaluated point, not of the final z."""
    final, point, info = brep_optimize(
        nn.Identity(),
        lambda x: torch.zeros(len(x), dtype=torch.long),
        torch.zeros(1, 3),
        torch.tensor([0]),
        points=4,
        r0=2.0,
        grow=1.3,
        threshold=0.75,
        patience=2,
        max_iters=30,
        clamp=1.5,
    )
    assert info["iterations"] == 30 and info["final_radius_mean"] == pytest.approx(2 * 1.3**30, rel=1e-4)
    assert "max_radius" not in BREPMI.params
    seen = {}

    def fake_optimize(G, label_of, z, y, **kw):
        seen["z"] = z
        return z + 1.0, z + 0.5, {}

    monkeypatch.setattr(brepmi, "brep_optimize", fake_optimize)
    monkeypatch.setattr(BREPMI, "load_prior", lambda self, prior, shape, device: (nn.Identity(), None))

    class Ctx:
        scenario = type("S", (), {"image_shape": (1, 8, 8)})
        target, device, seed, progress = (
            staticmethod(lambda x: torch.zeros(len(x), dtype=torch.long)),
            torch.device("cpu"),
            0,
            staticmethod(lambda i, n: None),
        )

    inv = BREPMI({"restarts": 1}, budget="smoke").invert(Ctx, {"gmi-gan": {}}, [0])
    assert torch.equal(inv.images, seen["z"] + 0.5) and inv.labels.tolist() == [0]


def test_brepmi_identities_are_the_official_choice():
    def model(x):
        return x, x[:, :10]  # 10 classes: the argmax of the first 10 latent coordinates

    z_dim, batch = 100, 4
    for classes in (None, [2, 3, 4, 5]):
        torch.manual_seed(0)
        rng = (2, 5) if classes else None
        want = official_gen_initial_points(6, batch, nn.Identity(), model, -1.5, 1.5, z_dim, iden_range=rng)
        torch.manual_seed(0)
        z, y, found = initial_points(
            nn.Identity(),
            lambda x: model(x)[-1].argmax(1),
            classes,
            6,
            1,
            z_dim,
            batch,
            100,
            1.5,
            torch.device("cpu"),
        )
        assert found.all()
        if classes is None:  # the first 6 distinct labels, in the order reached
            assert y.tolist() == list(want)
        assert {k: v.tolist() for k, v in want.items()} == {c: r.tolist() for c, r in zip(y.tolist(), z)}


def test_brepmi_paper_budget_is_config2():
    c = BREPMI().config
    assert {
        "sphere_points_count": c.points,
        "current_sphere_radius": c.r0,
        "sphere_expansion_coeff": c.grow,
        "point_clamp_min": -c.clamp,
        "point_clamp_max": c.clamp,
        "max_iters_at_radius_before_terminate": c.patience,
        "z_dim": BREPMI.z_dim,
        "batch_dim_for_initial_points": c.init_batch,
        "targeted_attack": c.targeted,
    } == {k: v for k, v in CONFIG2.items() if k not in ("num_targets", "repulsion_only")}
    assert c.threshold == 0.75  # brep_mi.py: new_points_classification.sum() > 0.75 * count
