"""PPA and IF-GMI against transcriptions of their official code (written here, in the official
structure, with the source named on each): the Poincaré loss, the candidate search, the
optimisation step, the transforms, the final selection and the whole PPA pipeline; IF-GMI's L1
projection and layer-wise search; the named configurations; smoke runs (directly and through the
CLI on the fake FaceScrub tree).

Official repository: LukasStruppek/Plug-and-Play-Attacks (commit 3087a4f); the seed paper's
config: ngoc-nguyen-0/MIDRE_TMLR ``configs/attacking/FaceScrub_FFHQ_resnet18_midre.yml``.
The generator here is a stand-in with NVlabs' StyleGAN2-ADA interface (``mapping(z, c,
truncation_psi, truncation_cutoff)``, ``synthesis(ws, noise_mode)``, ``num_ws``, ``z_dim``,
``mapping.w_avg``), cheap at any output size.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from torch import nn

from reinv_attacks import _stylegan
from reinv_attacks._stylegan import attack_transforms, candidate_search, poincare_loss
from reinv_attacks.ppa import PPA, final_selection, optimize, selection_transforms
from reinv_bench.api import AttackContext, ConfigError

# ---- a generator with NVlabs' interface, and a toy target ---------------------------------------


class StandInMapping(nn.Module):
    def __init__(self, z_dim, w_dim, num_ws):
        super().__init__()
        self.fc = nn.Linear(z_dim, w_dim)
        self.num_ws = num_ws
        self.register_buffer("w_avg", torch.randn(w_dim) * 0.3)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        x = z.to(torch.float32)
        x = x * (x.square().mean(1, keepdim=True) + 1e-8).rsqrt()  # normalize_2nd_moment
        ws = F.leaky_relu(self.fc(x), 0.2).unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:  # networks.py::MappingNetwork.forward
            if truncation_cutoff is None:
                ws = self.w_avg.lerp(ws, truncation_psi)
            else:
                ws[:, :truncation_cutoff] = self.w_avg.lerp(ws[:, :truncation_cutoff], truncation_psi)
        return ws


class StandInSynthesis(nn.Module):
    """Every style input changes the image; the output may leave [-1, 1] (so clipping matters)."""

    def __init__(self, w_dim, num_ws, res, base=8):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(w_dim, 3 * base * base) for _ in range(num_ws))
        self.base, self.res = base, res

    def forward(self, ws, noise_mode="random", force_fp32=False):
        x = sum(layer(ws[:, i]) for i, layer in enumerate(self.layers)).view(-1, 3, self.base, self.base)
        return 1.2 * torch.tanh(F.interpolate(x, size=self.res, mode="bilinear", align_corners=False))


class StandInG(nn.Module):
    def __init__(self, res=16, z_dim=8, w_dim=8, num_ws=10, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.z_dim, self.w_dim, self.num_ws, self.img_resolution = z_dim, w_dim, num_ws, res
        self.mapping = StandInMapping(z_dim, w_dim, num_ws)
        self.synthesis = StandInSynthesis(w_dim, num_ws, res)
        self.eval().requires_grad_(False)


def toy_target(num_classes=5, seed=1):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, num_classes))
    with torch.no_grad():
        net[2].weight.mul_(20)
    return net.eval().requires_grad_(False)


# ---- transcriptions of the official code ------------------------------------------------------


def loader(*tensors, batch_size):
    """``DataLoader(TensorDataset(*tensors), batch_size)`` without shuffling, as the official code
    uses it: consecutive batches. (A DataLoader also draws its workers' base seed from the global
    generator when iterated; left out, so that the random crops of both sides come from the same
    stream.)"""
    for i in range(0, len(tensors[0]), batch_size):
        yield [t[i : i + batch_size] for t in tensors]


def official_poincare_loss(outputs, targets, xi=1e-4):
    """losses/poincare.py::poincare_loss."""
    u = outputs / torch.norm(outputs, p=1, dim=-1).unsqueeze(1)
    v = torch.clip(torch.eye(outputs.shape[-1], device=outputs.device)[targets] - xi, 0, 1)
    v = v.to(u.device)
    u_norm_squared = torch.norm(u, p=2, dim=1) ** 2
    v_norm_squared = torch.norm(v, p=2, dim=1) ** 2
    diff_norm_squared = torch.norm(u - v, p=2, dim=1) ** 2
    delta = 2 * diff_norm_squared / ((1 - u_norm_squared) * (1 - v_norm_squared))
    return torch.arccosh(1 + delta)


def official_find_initial_w(
    generator,
    target_model,
    targets,
    search_space_size,
    clip=True,
    center_crop=768,
    resize=224,
    horizontal_flip=True,
    truncation_psi=0.7,
    truncation_cutoff=18,
    batch_size=25,
    seed=0,
):
    """attacks/initial_selection.py::find_initial_w (tqdm, printing and saving left out; ``loader``
    for the DataLoader)."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(search_space_size, generator.z_dim))
    c = None
    target_model.eval()
    with torch.no_grad():
        confidences = []
        final_candidates = []
        candidates = generator.mapping(
            z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff
        )
        for w in loader(candidates, batch_size=batch_size):
            imgs = generator.synthesis(w[0], noise_mode="const", force_fp32=True)
            if clip:
                lower_bound = torch.tensor(-1.0).float().to(imgs.device)
                upper_bound = torch.tensor(1.0).float().to(imgs.device)
                imgs = torch.where(imgs > upper_bound, upper_bound, imgs)
                imgs = torch.where(imgs < lower_bound, lower_bound, imgs)
            if center_crop is not None:
                imgs = TF.center_crop(imgs, (center_crop, center_crop))
            if resize is not None:
                imgs = [TF.resize(imgs, resize, antialias=True)]
            if horizontal_flip:
                imgs.append(TF.hflip(imgs[0]))
            target_conf = None
            for im in imgs:
                if target_conf is not None:
                    target_conf += target_model(im).softmax(dim=1) / len(imgs)
                else:
                    target_conf = target_model(im).softmax(dim=1) / len(imgs)
            confidences.append(target_conf)
        confidences = torch.cat(confidences, dim=0)
        for target in targets:
            sorted_conf, sorted_idx = confidences[:, target].sort(descending=True)
            final_candidates.append(candidates[sorted_idx[0]].unsqueeze(0))
            confidences[sorted_idx[0], target] = -1.0
    return torch.cat(final_candidates, dim=0)


def official_attack_transformations(transformations):
    """utils/attack_config_parser.py::AttackConfigParser.create_attack_transformations."""
    return T.Compose([getattr(T, name)(**args) for name, args in transformations.items()])


# configs/attacking/FaceScrub_FFHQ.yaml (and the midre file): attack.transformations
OFFICIAL_TRANSFORMATIONS = {
    "CenterCrop": {"size": 800},
    "Resize": {"size": 224, "antialias": True},
    "RandomResizedCrop": {"size": [224, 224], "scale": [0.9, 1.0], "ratio": [1.0, 1.0], "antialias": True},
}


def official_optimize(
    synthesis,
    target,
    transformations,
    num_ws,
    w_batch,
    targets_batch,
    num_epochs,
    lr,
    betas,
    milestones,
    gamma,
):
    """attacks/optimize.py::Optimization.optimize with clip false, discriminator weight 0, the
    optimizer Adam(lr, weight_decay 0, betas) and MultiStepLR (AttackConfigParser.create_optimizer /
    create_lr_scheduler), ``synthesize`` inlined."""
    optimizer = torch.optim.Adam(params=[w_batch.requires_grad_()], lr=lr, weight_decay=0, betas=betas)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)
    for _ in range(num_epochs):
        if w_batch.shape[1] == 1:
            w_expanded = torch.repeat_interleave(w_batch, repeats=num_ws, dim=1)
            imgs = synthesis(w_expanded, noise_mode="const", force_fp32=True)
        else:
            imgs = synthesis(w_batch, noise_mode="const", force_fp32=True)
        discriminator_loss = torch.tensor(0.0)
        imgs = transformations(imgs)
        outputs = target(imgs)
        target_loss = poincare_loss_official_mean(outputs, targets_batch)
        optimizer.zero_grad()
        loss = target_loss + discriminator_loss * 0.0
        loss.backward()
        optimizer.step()
        scheduler.step()
    return w_batch.detach()


def poincare_loss_official_mean(outputs, targets):
    return official_poincare_loss(outputs, targets).mean()


def official_create_image(w, generator, num_ws, crop_size=None, resize=None, batch_size=20):
    """utils/stylegan.py::create_image (``generator.num_ws`` passed as num_ws)."""
    with torch.no_grad():
        if w.shape[1] == 1:
            w_expanded = torch.repeat_interleave(w, repeats=num_ws, dim=1)
        else:
            w_expanded = w
        imgs = []
        for i in range(math.ceil(w_expanded.shape[0] / batch_size)):
            w_batch = w_expanded[i * batch_size : (i + 1) * batch_size]
            imgs.append(generator(w_batch, noise_mode="const", force_fp32=True).cpu())
        imgs = torch.cat(imgs, dim=0)
        if crop_size is not None:
            imgs = TF.center_crop(imgs, (crop_size, crop_size))
        if resize is not None:
            imgs = TF.resize(imgs, resize, antialias=True)
        return imgs


def official_scores_by_transform(imgs, targets, target_model, transforms, iterations=100):
    """attacks/final_selection.py::scores_by_transform."""
    score = torch.zeros_like(targets, dtype=torch.float32).to(imgs.device)
    with torch.no_grad():
        for _ in range(iterations):
            imgs_transformed = transforms(imgs)
            prediction_vector = target_model(imgs_transformed).softmax(dim=1)
            score += torch.gather(prediction_vector, 1, targets.unsqueeze(1)).squeeze()
        score = score / iterations
    return score


def official_perform_final_selection(
    w, synthesis, num_ws, crop, resize, targets, target_model, samples_per_target, iterations, batch_size
):
    """attacks/final_selection.py::perform_final_selection, approach 'transforms' (``loader`` for
    the DataLoader)."""
    target_values = set(targets.cpu().tolist())
    final_targets, final_w = [], []
    target_model.eval()
    transforms = T.Compose(
        [
            T.RandomResizedCrop(size=(224, 224), scale=(0.5, 0.9), ratio=(0.8, 1.2), antialias=True),
            T.RandomHorizontalFlip(0.5),
        ]
    )
    for target in target_values:
        mask = torch.where(targets == target, True, False).cpu()
        w_masked = w[mask]
        candidates = official_create_image(w_masked, synthesis, num_ws, crop_size=crop, resize=resize).cpu()
        targets_masked = targets[mask].cpu()
        scores = []
        for imgs, t in loader(candidates, targets_masked, batch_size=batch_size):
            scores.append(official_scores_by_transform(imgs, t, target_model, transforms, iterations))
        scores = torch.cat(scores, dim=0).cpu()
        indices = torch.sort(scores, descending=True).indices
        selected_indices = indices[:samples_per_target]
        final_targets.append(targets_masked[selected_indices].cpu())
        final_w.append(w_masked[selected_indices].cpu())
    return torch.cat(final_w, dim=0), torch.cat(final_targets, dim=0)


# ---- the pieces ----------------------------------------------------------------------------------


def test_poincare_loss_is_the_official_one():
    torch.manual_seed(0)
    logits = torch.randn(64, 530) * 5
    y = torch.randint(0, 530, (64,))
    torch.testing.assert_close(poincare_loss(logits, y), official_poincare_loss(logits, y))
    small = torch.randn(7, 3, dtype=torch.float64)  # and its gradient, in double precision
    small.requires_grad_(True)
    (g_ours,) = torch.autograd.grad(poincare_loss(small, torch.tensor([0, 1, 2, 0, 1, 2, 0])).sum(), small)
    (g_off,) = torch.autograd.grad(
        official_poincare_loss(small, torch.tensor([0, 1, 2, 0, 1, 2, 0])).sum(), small
    )
    torch.testing.assert_close(g_ours, g_off)


def test_candidate_search_is_find_initial_w():
    """Same z (np.random.RandomState(seed)), truncation, clipping, crop/resize/flip scoring, and the
    greedy per-class pick; on a 1024-px stand-in so that the official 800-px crop applies as is."""
    G, target = StandInG(res=1024), toy_target()
    classes, k = [3, 0, 4], 4
    ws, conf = candidate_search(
        G,
        target,
        classes,
        search=10,
        k=k,
        psi=0.5,
        cutoff=8,
        crop=800,
        size=224,
        flip=True,
        batch=4,
        seed=42,
        device=torch.device("cpu"),
    )
    targets = torch.tensor(classes).repeat_interleave(k)
    official = official_find_initial_w(
        G,
        target,
        targets,
        10,
        center_crop=800,
        resize=224,
        truncation_psi=0.5,
        truncation_cutoff=8,
        batch_size=25,
        seed=42,
    )
    torch.testing.assert_close(ws.flatten(0, 1), official)
    assert ws.shape == (3, k, G.num_ws, G.w_dim)
    assert (conf[:, :-1] >= conf[:, 1:]).all()  # best first
    # truncation: rows below the cutoff are pulled towards w_avg by psi, the others are not
    z = _stylegan.search_latents(G.z_dim, 10, 42)
    raw = G.mapping(z, None)
    trunc = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=8)
    torch.testing.assert_close(trunc[:, :8], G.mapping.w_avg + 0.5 * (raw[:, :8] - G.mapping.w_avg))
    torch.testing.assert_close(trunc[:, 8:], raw[:, 8:])


def test_candidate_selection_rule_on_a_scripted_target():
    """A target whose confidences are scripted: the top-k per class, best first, a latent may
    serve several classes, as the official pick-and-mask loop."""
    conf = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.7], [0.6, 0.05]])
    assert _stylegan.select_candidates(conf, 2).tolist() == [[0, 3], [1, 2]]
    assert _stylegan.select_candidates(conf, 3).tolist() == [[0, 3, 2], [1, 2, 0]]
    # the official loop on the same confidences
    picks = []
    c = conf.clone()
    for target in [0, 0, 0, 1, 1, 1]:
        idx = c[:, target].sort(descending=True).indices[0]
        picks.append(idx.item())
        c[idx, target] = -1.0
    assert picks == [0, 3, 2, 1, 2, 0]


def test_transforms_are_the_official_ones():
    ours = attack_transforms(1024, 224, 800, (0.9, 1.0))
    official = official_attack_transformations(OFFICIAL_TRANSFORMATIONS)

    def params(t):
        return [
            (
                type(s).__name__,
                {
                    k: (tuple(v) if isinstance(v, (list, tuple)) else v)
                    for k, v in vars(s).items()
                    if not k.startswith("_") and k != "training"
                },
            )
            for s in t.transforms
        ]

    assert params(ours) == params(official)
    x = torch.rand(2, 3, 1024, 1024)
    torch.manual_seed(5)
    a = ours(x)
    torch.manual_seed(5)
    torch.testing.assert_close(a, official(x))
    sel = selection_transforms(224)
    official_sel = T.Compose(
        [
            T.RandomResizedCrop(size=(224, 224), scale=(0.5, 0.9), ratio=(0.8, 1.2), antialias=True),
            T.RandomHorizontalFlip(0.5),
        ]
    )
    assert params(sel) == params(official_sel)
    # another generator size: the crop keeps its fraction of the image (800 of 1024)
    assert attack_transforms(256, 224, 800, (0.9, 1.0)).transforms[0].size == (200, 200)


def test_optimisation_steps_are_the_official_update():
    """Adam(lr 0.005, betas (0.1, 0.1)), single_w broadcast to every style input, the transforms
    (one crop per batch, same random stream), the batch-mean Poincaré loss, MultiStepLR stepped
    every iteration (milestones 1, 2 here so that it acts within three steps)."""
    G, target = StandInG(res=1024), toy_target()
    torch.manual_seed(0)
    w = torch.randn(3, 1, G.w_dim)
    y = torch.tensor([1, 1, 4])
    torch.manual_seed(7)
    ours, _ = optimize(
        G,
        target,
        w,
        y,
        epochs=3,
        lr=0.005,
        betas=(0.1, 0.1),
        milestones=(1.0, 2.0),
        gamma=0.1,
        transform=attack_transforms(1024, 224, 800, (0.9, 1.0)),
    )
    torch.manual_seed(7)
    official = official_optimize(
        G.synthesis,
        target,
        official_attack_transformations(OFFICIAL_TRANSFORMATIONS),
        G.num_ws,
        w.clone(),
        y,
        3,
        0.005,
        [0.1, 0.1],
        [1, 2],
        0.1,
    )
    torch.testing.assert_close(ours, official)
    assert not torch.equal(ours, w)
    # all style inputs optimised (single_w=false)
    wf = w.expand(-1, G.num_ws, -1).clone()
    torch.manual_seed(7)
    ours_f, _ = optimize(
        G,
        target,
        wf,
        y,
        epochs=1,
        lr=0.005,
        betas=(0.1, 0.1),
        milestones=(0.0,),
        gamma=0.1,
        transform=attack_transforms(1024, 224, 800, (0.9, 1.0)),
    )
    torch.manual_seed(7)
    official_f = official_optimize(
        G.synthesis,
        target,
        official_attack_transformations(OFFICIAL_TRANSFORMATIONS),
        G.num_ws,
        wf.clone(),
        y,
        1,
        0.005,
        [0.1, 0.1],
        [],
        0.1,
    )
    torch.testing.assert_close(ours_f, official_f)


def test_final_selection_is_the_official_rule():
    """Mean target confidence under random transforms (10 here; 100 in the configs), one per chunk
    of images (the official loader batch, 10 x the attack batch: 4 here, so that a class spans two
    chunks), best first; the images as create_image makes them."""
    G, target = StandInG(res=1024), toy_target()
    torch.manual_seed(0)
    w = torch.randn(12, 1, G.w_dim)
    targets = torch.tensor([2] * 7 + [0] * 5)
    torch.manual_seed(3)
    official_w, official_t = official_perform_final_selection(
        w, G.synthesis, G.num_ws, 800, 224, targets, target, 3, 10, batch_size=4
    )
    torch.manual_seed(3)
    ours_w = []
    for c in sorted(set(targets.tolist())):  # the official iterates a set of small ints: ascending
        sel, imgs, score = final_selection(
            G,
            target,
            w[targets == c],
            c,
            k=3,
            iters=10,
            crop=800,
            size=224,
            batch=5,
            chunk=4,
            device=torch.device("cpu"),
        )
        ours_w.append(w[targets == c][sel])
        torch.testing.assert_close(
            imgs, official_create_image(w[targets == c][sel], G.synthesis, G.num_ws, 800, 224)
        )
        assert (score[:-1] >= score[1:]).all()
    torch.testing.assert_close(torch.cat(ours_w), official_w)
    assert official_t.tolist() == [0] * 3 + [2] * 3


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_whole_attack_is_the_official_pipeline():
    """Candidate search, single_w, batches of the class-major candidates (a batch spans two
    classes here), final selection (loader batch 10 x the attack batch) and the images of the
    final latents, against the official functions run in attack.py's order."""
    G, target = StandInG(res=1024), toy_target()
    classes, seed = [1, 3], 42
    attack = PPA({"search": 10, "candidates": 3, "final": 2, "epochs": 2, "batch": 4, "final_iters": 3})
    ctx = AttackContext(SimpleNamespace(image_shape=(3, 224, 224)), None, target, torch.device("cpu"), seed)
    inv = attack.attack(ctx, G, classes)

    torch.manual_seed(seed)
    targets = torch.tensor(classes).repeat_interleave(3)
    w = official_find_initial_w(
        G,
        target,
        targets,
        10,
        center_crop=800,
        resize=224,
        truncation_psi=0.5,
        truncation_cutoff=8,
        seed=seed,
    )[:, 0].unsqueeze(1)  # attack.py: single_w
    transformations = official_attack_transformations(OFFICIAL_TRANSFORMATIONS)
    w_opt = torch.cat(
        [
            official_optimize(
                G.synthesis,
                target,
                transformations,
                G.num_ws,
                w[i : i + 4].clone(),
                targets[i : i + 4],
                2,
                0.005,
                [0.1, 0.1],
                [],
                0.1,
            )
            for i in range(0, 6, 4)
        ]
    )
    final_w, final_t = official_perform_final_selection(
        w_opt, G.synthesis, G.num_ws, 800, 224, targets, target, 2, 3, batch_size=4 * 10
    )
    images = official_create_image(final_w, G.synthesis, G.num_ws, 800, 224)
    assert inv.labels.tolist() == final_t.tolist() == [1, 1, 3, 3]
    torch.testing.assert_close(inv.images, images.clamp(-1, 1))
    assert inv.images.shape == (4, 3, 224, 224)
    assert set(inv.info) >= {"loss_first", "loss_last", "search_conf", "final_score", "seconds_per_class"}


# ---- configurations -----------------------------------------------------------------------------


def test_configurations_are_the_official_files():
    ppa_default = PPA().config  # configs/attacking/FaceScrub_FFHQ.yaml
    assert (
        ppa_default.search,
        ppa_default.candidates,
        ppa_default.final,
        ppa_default.epochs,
        ppa_default.batch,
    ) == (2000, 200, 50, 50, 25)
    assert (ppa_default.lr, ppa_default.betas, ppa_default.psi, ppa_default.cutoff, ppa_default.crop) == (
        0.005,
        (0.1, 0.1),
        0.5,
        8,
        800,
    )
    assert ppa_default.rrc_scale == (0.9, 1.0) and ppa_default.final_iters == 100 and ppa_default.single_w
    assert ppa_default.flip and ppa_default.milestones == (0.0,)  # that file has no lr_scheduler
    celeba = PPA({"config": "ppa-celeba"}).config  # CelebA_FFHQ.yaml
    assert (celeba.search, celeba.candidates, celeba.final, celeba.epochs) == (5000, 200, 50, 70)
    midre = PPA({"config": "midre"}).config  # MIDRE_TMLR FaceScrub_FFHQ_resnet18_midre.yml
    assert (midre.search, midre.candidates, midre.final, midre.epochs, midre.batch) == (2000, 16, 8, 50, 16)
    assert (midre.milestones, midre.gamma, midre.lr, midre.betas, midre.psi, midre.cutoff) == (
        (30.0, 40.0),
        0.1,
        0.005,
        (0.1, 0.1),
        0.5,
        8,
    )
    assert midre.final_iters == 100 and midre.rrc_scale == (0.9, 1.0)
    # a value given explicitly, or by the budget, wins over the configuration's
    assert PPA({"config": "midre", "epochs": "70"}).config.epochs == 70
    smoke = PPA({"config": "midre"}, "smoke").config
    assert smoke.candidates == PPA.budgets["smoke"]["candidates"] and smoke.milestones == (30.0, 40.0)
    # the stored (resolved) configuration rebuilds the same attack
    assert PPA(dict(midre)).config == midre
    with pytest.raises(ConfigError, match="candidates=20 exceeds search=10"):
        PPA({"search": "10", "candidates": "20"})
    with pytest.raises(ConfigError, match="must be one of"):
        PPA({"config": "nope"})


def test_the_label_names_the_configuration():
    from reinv_bench.registry.components import resolve_attack
    from reinv_bench.registry.lookup import load

    label, desc, attack = resolve_attack(load(), "ppa[config=midre]", "paper")
    assert label == "ppa[config=midre]" and desc["config"]["candidates"] == 16
    assert attack.priors()[0].kind == "stylegan2" and attack.priors()[0].params == {
        "weights": "stylegan2-ffhq"
    }
    assert attack.threat_model == "white-box"


# ---- the prior and smoke runs -------------------------------------------------------------------


def tiny_generator(seed=0, res=16):
    from reinv_attacks._stylegan2_net import Generator

    torch.manual_seed(seed)
    return Generator(
        z_dim=16,
        c_dim=0,
        w_dim=16,
        img_resolution=res,
        img_channels=3,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 128, "channel_max": 16},
    ).eval()


def test_missing_generator_weights_name_the_command(tmp_path, monkeypatch):
    from reinv_bench.contract.weights import WeightsUnavailable

    monkeypatch.setenv("REINV_BENCH_WEIGHTS", str(tmp_path / "none"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "none-either"))
    with pytest.raises(WeightsUnavailable, match=r"reinv-bench weights add stylegan2-ffhq FILE"):
        PPA().prepare(None, "stylegan2")


def test_smoke_with_the_native_generator(tmp_path, monkeypatch):
    """The prior from a registered tiny StyleGAN2-ADA file, and the attack at the smoke budget."""
    from reinv_attacks import _stylegan2_load as stylegan2

    monkeypatch.setenv("REINV_BENCH_WEIGHTS", str(tmp_path))
    G = tiny_generator()
    stylegan2.save_generator(G, tmp_path / "stylegan2-ffhq.pt")
    attack = PPA({}, "smoke")
    with pytest.warns(UserWarning, match="unverified"):
        prior = attack.prepare(None, "stylegan2")
    assert prior["weights"] == "stylegan2-ffhq" and len(prior["sha256"]) == 64
    target = toy_target(num_classes=6)
    ctx = AttackContext(SimpleNamespace(image_shape=(3, 32, 32)), None, target, torch.device("cpu"), 0)
    inv = attack.invert(ctx, {"stylegan2": prior}, [0, 2, 5])
    assert inv.images.shape == (3 * attack.config.final, 3, 32, 32)
    assert inv.labels.tolist() == [0, 2, 5] and -1 <= inv.images.min() and inv.images.max() <= 1
    inv2 = attack.invert(ctx, {"stylegan2": prior}, [0, 2, 5])  # deterministic
    torch.testing.assert_close(inv.images, inv2.images)
    from reinv_attacks.ifgmi import IFGMI

    inv = IFGMI({"candidates": "2"}, "smoke").invert(ctx, {"stylegan2": prior}, [0, 2, 5])
    assert inv.images.shape == (6, 3, 32, 32) and inv.labels.tolist() == [0, 0, 2, 2, 5, 5]
    assert inv.info["phases"] == 2 and -1 <= inv.images.min() and inv.images.max() <= 1  # 16 px: 3 blocks


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
@pytest.mark.filterwarnings("ignore::reinv_bench.contract.weights.UnverifiedWeightsWarning")
def test_cli_smoke_on_the_fake_facescrub_tree(tmp_path, monkeypatch, registry):
    """``reinv-bench run -a ppa[config=midre] -a ifgmi`` on facescrub224-ffhq: without the
    generator the run stops before any step, naming the command that adds it; with a tiny random generator
    registered they run and the leaderboard shows the rows."""
    from click.testing import CliRunner

    from reinv_attacks import _stylegan2_load as stylegan2
    from reinv_bench.cli import State, cli
    from reinv_bench.results.store import Store
    from reinv_bench.testing import make_facescrub, make_ffhq

    root = tmp_path / "data"
    make_facescrub(root, per_person=2)
    make_ffhq(root, "images1024x1024", 1, 1024)
    weights = tmp_path / "weights"
    monkeypatch.setenv("REINV_BENCH_WEIGHTS", str(weights))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    state = State(())
    state._registry = registry
    args = [
        "run",
        "-a",
        "ppa[config=midre]",
        "-a",
        "ifgmi",
        "-d",
        "none",
        "--scenario",
        "facescrub224-ffhq",
        "--arch",
        "tiny",
        "--eval-arch",
        "tiny",
        "--budget",
        "smoke",
        "--data-root",
        str(root),
        "--workdir",
        str(tmp_path / "w"),
        "--metric",
        "attack_acc",
        "--quiet",
    ]
    missing = CliRunner().invoke(cli, args, obj=state)
    # the missing generator is listed before any step starts, with the command that adds it
    assert missing.exit_code != 0 and "reinv-bench weights add stylegan2-ffhq" in missing.output
    assert not (tmp_path / "w" / "results.db").exists() or not Store(tmp_path / "w" / "results.db").rows()

    weights.mkdir()
    stylegan2.save_generator(tiny_generator(res=8), weights / "stylegan2-ffhq.pt")
    result = CliRunner().invoke(cli, args, obj=state)
    assert result.exit_code == 0, result.output
    rows = [r for r in Store(tmp_path / "w" / "results.db").rows() if r["status"] == "ok"]
    assert sorted(r["attack"] for r in rows) == ["ifgmi", "ppa[config=midre]"]
    assert all(r["metrics"]["attack_acc"] is not None for r in rows)
    board = CliRunner().invoke(cli, ["leaderboard", "--workdir", str(tmp_path / "w"), "--format", "md"])
    assert "ppa[config=midre]" in board.output and "ifgmi" in board.output


# ---- IF-GMI (final-solution/IF-GMI, commit e792ef1) ---------------------------------------------


def official_project_onto_l1_ball(x, eps):
    """utils/stylegan.py::project_onto_l1_ball."""
    original_shape = x.shape
    x = x.view(x.shape[0], -1)
    mask = (torch.norm(x, p=1, dim=1) < eps).float().unsqueeze(1)
    mu, _ = torch.sort(torch.abs(x), dim=1, descending=True)
    cumsum = torch.cumsum(mu, dim=1)
    arange = torch.arange(1, x.shape[1] + 1, device=x.device)
    rho, _ = torch.max((mu * arange > (cumsum - eps)) * arange, dim=1)
    theta = (cumsum[torch.arange(x.shape[0]), rho.cpu() - 1] - eps) / rho
    proj = (torch.abs(x) - theta.unsqueeze(1)).clamp(min=0)
    x = mask * x + (1 - mask) * proj * torch.sign(x)
    return x.view(original_shape)


class OfficialIntermediateSynthesis:
    """stylegan2_intermediate/training/networks.py::SynthesisNetwork.forward(ws, layer_in) and
    set_layer, over the blocks of a native generator's synthesis network."""

    def __init__(self, synthesis):
        self.s, self.start_layer, self.end_layer = synthesis, 0, 8

    def set_layer(self, start, end):
        self.start_layer, self.end_layer = start, end

    def __call__(self, ws, layer_in=None, **block_kwargs):
        block_ws = []
        ws = ws.to(torch.float32)
        w_idx = 0
        for res in self.s.block_resolutions:
            block = getattr(self.s, f"b{res}")
            block_ws.append(ws.narrow(1, w_idx, block.num_conv + block.num_torgb))
            w_idx += block.num_conv
        img = None
        current_layer = 0
        for res, cur_ws in zip(self.s.block_resolutions, block_ws):
            if current_layer < self.start_layer:
                current_layer += 1
                continue
            elif current_layer == self.start_layer:
                x = layer_in
            elif current_layer > self.end_layer:
                return x, img
            block = getattr(self.s, f"b{res}")
            x, img = block(x, img, cur_ws, **block_kwargs)
            current_layer += 1
        return img


def official_if_optimize(
    synthesis, target, transformations, num_ws, w, targets_batch, steps, radius_mid, radius_w, end, lr, betas
):
    """attacks/optimize.py::Optimization.optimize/intermediate (start 0, clip false, Adam(lr,
    weight_decay 0, betas) per phase, logging left out). Returns (w, images of each phase)."""
    mid_vector = [None]
    out_imgs = []
    for index, n in enumerate(steps):
        start_layer = index
        with torch.no_grad():
            if start_layer == 0:
                var_list = [w.requires_grad_()]
            else:
                mid_vector[-1].requires_grad = True
                var_list = [w.requires_grad_()] + [mid_vector[-1]]
                prev_mid_vector = torch.ones(mid_vector[-1].shape) * mid_vector[-1]
            prev_w = torch.ones(w.shape) * w
            synthesis.set_layer(start_layer, end)
        optimizer = torch.optim.Adam(params=var_list, lr=lr, weight_decay=0, betas=betas)
        origin_imgs = None
        for _ in range(n):
            w_expanded = torch.repeat_interleave(w, repeats=num_ws, dim=1)
            imgs = synthesis(w_expanded, layer_in=mid_vector[-1], noise_mode="const", force_fp32=True)
            origin_imgs = imgs.detach().cpu()
            imgs = transformations(imgs)
            outputs = target(imgs)
            loss = official_poincare_loss(outputs, targets_batch).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if start_layer != 0 and radius_mid[index] > 0:
                deviation = official_project_onto_l1_ball(mid_vector[-1] - prev_mid_vector, radius_mid[index])
                var_list[-1].data = (prev_mid_vector + deviation).data
            if radius_w[index] > 0:
                deviation = official_project_onto_l1_ball(w - prev_w, radius_w[index])
                var_list[0].data = (prev_w + deviation).data
        with torch.no_grad():
            synthesis.set_layer(start_layer, start_layer)
            w_expanded = torch.repeat_interleave(w, repeats=num_ws, dim=1)
            mid, _ = synthesis(w_expanded, layer_in=mid_vector[-1], noise_mode="const", force_fp32=True)
            mid_vector.append(mid)
            synthesis.set_layer(start_layer, end)
        out_imgs.append(origin_imgs)
    return w.detach(), out_imgs


def test_l1_projection_is_the_official_one():
    from reinv_attacks.ifgmi import project_l1

    torch.manual_seed(0)
    x = torch.randn(6, 3, 5, 5) * torch.tensor([0.01, 1, 3, 10, 0.1, 5])[:, None, None, None]
    for eps in (0.5, 10.0, 100.0):
        ours = project_l1(x, eps)
        torch.testing.assert_close(ours, official_project_onto_l1_ball(x, eps))
        assert (ours.flatten(1).abs().sum(1) <= eps * (1 + 1e-5)).all()


def test_ifgmi_layer_search_is_the_official_one():
    """Phases of w, then w and the feature entering blocks 1, 2 (a 16-px generator has blocks at
    4, 8, 16 px), fresh Adam per phase, L1 projections small enough to act, the skip image started
    afresh, the last iteration's forward images kept."""
    from reinv_attacks.ifgmi import layer_search

    G, target = tiny_generator(), toy_target()
    torch.manual_seed(0)
    w0 = torch.randn(3, 1, G.w_dim)
    y = torch.tensor([0, 2, 2])
    transform = attack_transforms(16, 32, 800, (0.9, 1.0))
    steps, radii = (3, 2), (0.05, 0.05)
    torch.manual_seed(4)
    w_ours, imgs_ours, _ = layer_search(
        G,
        target,
        w0,
        y,
        steps=steps,
        radius_w=radii,
        radius_mid=radii,
        lr=0.005,
        betas=(0.1, 0.1),
        transform=transform,
    )
    torch.manual_seed(4)
    w_off, imgs_off = official_if_optimize(
        OfficialIntermediateSynthesis(G.synthesis),
        target,
        transform,
        G.num_ws,
        w0.clone(),
        y,
        steps,
        radii,
        radii,
        2,
        0.005,
        [0.1, 0.1],
    )
    torch.testing.assert_close(w_ours, w_off)
    torch.testing.assert_close(imgs_ours, imgs_off[-1])
    assert (w_ours - w0).abs().sum((1, 2)).max() <= 0.05 * 2 * (1 + 1e-5)  # two phases, each within its ball


def test_ifgmi_configuration_is_the_official_file():
    from reinv_attacks.ifgmi import IFGMI

    c = IFGMI().config  # configs/ffhq_facescrub/main-resnet.yaml
    assert (c.search, c.candidates, c.batch, c.lr, c.betas, c.psi, c.cutoff, c.crop) == (
        2000,
        50,
        5,
        0.005,
        (0.1, 0.1),
        0.5,
        8,
        800,
    )
    assert c.steps == (50, 10, 10, 10, 10, 10, 10, 10) and c.rrc_scale == (0.9, 1.0)
    assert c.radius_w == c.radius_mid == (1000, 2000, 3000, 4000, 5000, 6000, 8000, 8000)
    with pytest.raises(ConfigError, match="a value for each"):
        IFGMI({"steps": "5/5/5", "radius_w": "1/2"})
    assert IFGMI().priors() == PPA().priors()  # one cached generator prior for both
