"""The attack suite: each paper's loss on hand-built models, batching equals the per-class loop,
prior sharing, threat-model enforcement, and the grid end to end."""

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from reinv_attacks._gan import Generator
from reinv_attacks._latent import latent_init
from reinv_attacks.brepmi import brep_optimize
from reinv_attacks.gmi import gmi_optimize
from reinv_attacks.kedmi import kedmi_optimize, prior_loss, soft_xent
from reinv_attacks.lomma import logit_identity
from reinv_attacks.plgmi import augment, max_margin, plg_optimize, top_n
from reinv_bench.api import Classifier, LabelOnly
from reinv_bench.engine.plan import Request, expand
from reinv_bench.engine.runner import Runner
from reinv_bench.registry.lookup import load
from reinv_bench.results.store import Store

CPU = torch.device("cpu")


def _linear_T():
    T = Classifier([nn.Identity()], nn.Linear(4, 3, bias=False), 4, 3)
    with torch.no_grad():
        T.head.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, -1.0]]))
    return T.eval().requires_grad_(False)


# ---- the papers' losses on hand-built models ------------------------------------------------


def test_kedmi_losses_by_hand():
    d = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    lse = torch.log(torch.tensor([2.0, torch.e + 1 / torch.e]))
    assert torch.allclose(prior_loss(d), F.softplus(lse) - lse)
    logits, target = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]])  # uniform soft label
    assert soft_xent(logits, target).item() == pytest.approx(-0.5 * torch.log_softmax(logits, 1).sum().item())


def test_kedmi_objective_is_prior_plus_lambda_ce():
    T = _linear_T()
    mu = torch.tensor([[0.5, -0.2, 0.3, 0.1], [0.0, 0.4, -0.5, 0.2]])
    y = torch.tensor([0, 2])

    def D(x):
        return x, x[:, :2]

    _, _, hist = kedmi_optimize(
        nn.Identity(),
        D,
        T,
        mu,
        torch.zeros_like(mu),
        y,
        iters=1,
        lr=0.0,
        lam=100.0,
        clip=1.0,
        scale=0.5,
        noise=lambda it: torch.zeros_like(mu),
    )
    want = (prior_loss(mu[:, :2]) + 100 * F.cross_entropy(T(mu), y, reduction="none")).mean()
    assert hist[0] == pytest.approx(want.item(), rel=1e-5)


def test_max_margin_and_plgmi_objective():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    assert max_margin(logits, torch.tensor([0, 0])).tolist() == [-1.0, 5.0]
    T = _linear_T()

    def G(z, y):
        return z

    z = torch.tensor([[0.5, -0.2, 0.3, 0.1]])
    y = torch.tensor([1])
    _, hist = plg_optimize(G, T, z, y, iters=1, lr=0.0, n_aug=2, scale=1.0, aug=lambda x: x)
    assert hist[0] == pytest.approx(max_margin(T(z), y).item())


def test_lomma_identity_by_hand():
    T = _linear_T()
    student = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        student.weight.fill_(1.0)
    x = torch.tensor([[1.0, 2.0, 0.0, 0.0]])
    y = torch.tensor([1])
    mu = torch.tensor([0.0, 0.0, 0.0, 1.0])
    got = logit_identity(T, [student], mu, reg=1.0)(x, y)
    logit_loss = (-2.0 + -3.0) / 2  # -logit_y of the target and of the student, averaged
    reg = ((x[0] - mu) ** 2).mean()  # (1 + 4 + 0 + 1) / 4
    assert got.item() == pytest.approx(logit_loss + reg.item())


def test_brepmi_moves_away_from_points_outside_the_class():
    """2-d latent, G = identity, class 1 where x0 > 0; the sphere points are fixed at
    (+-R, 0) and (0, +-R): the one at -R is outside, so z moves right by step/4."""

    def label_of(x):
        return (x[:, 0] > 0).long()

    def dirs(it, labels, k, dim, r):
        base = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
        return base[None].repeat(len(labels), 1, 1) * r[:, None, None]

    z0 = torch.tensor([[1.5, 0.0]])
    z, _, info = brep_optimize(
        nn.Identity(),
        label_of,
        z0.clone(),
        torch.tensor([1]),
        points=4,
        r0=2.0,
        grow=1.3,
        threshold=0.75,
        patience=100,
        max_iters=1,
        clamp=10.0,
        directions=dirs,
    )
    # v = [+1, -1, +1, -1]: (v - 1)/2 = [0, -1, 0, -1] (x at 1.5 +- 2: the left one and... the
    # point (0, -R) has x0 = 1.5 > 0, inside). Recompute with the real labels:
    pts = z0 + dirs(0, torch.tensor([1]), 4, 2, torch.tensor([2.0]))[0]
    v = label_of(pts).float() * 2 - 1
    direction = (((v - 1) / 2)[:, None] * (pts - z0)).mean(0) / 2.0
    assert torch.allclose(z[0], z0[0] + min(2.0 / 3, 3) * direction)
    assert z[0, 0] > z0[0, 0]  # repelled from the outside point at x0 = -0.5


# ---- batched equals per-class -----------------------------------------------------------------


def _nets():
    torch.manual_seed(0)
    G = Generator((1, 32, 32), 100, 8).eval().requires_grad_(False)
    T = load().get("architecture", "cnn").build(10, (1, 32, 32)).eval().requires_grad_(False)
    return G, T


def test_kedmi_batch_equals_loop():
    G, T = _nets()

    def D(x):
        f = x.flatten(1)[:, :10]
        return f, f

    classes, iters = [1, 4, 8], 6
    table = torch.randn(iters, 10, 100)
    kw = {"iters": iters, "lr": 0.02, "lam": 100.0, "clip": 1.0, "scale": 1 / 3}
    y = torch.tensor(classes)
    mu, lv, _ = kedmi_optimize(
        G, D, T, torch.zeros(3, 100), torch.ones(3, 100), y, noise=lambda it: table[it, classes], **kw
    )
    for i, c in enumerate(classes):
        m, v, _ = kedmi_optimize(
            G,
            D,
            T,
            torch.zeros(1, 100),
            torch.ones(1, 100),
            torch.tensor([c]),
            noise=lambda it, c=c: table[it, [c]],
            **kw,
        )
        assert torch.allclose(m[0], mu[i], atol=1e-5) and torch.allclose(v[0], lv[i], atol=1e-5)


def test_plgmi_batch_equals_loop():
    _, T = _nets()
    from reinv_attacks.plgmi import CGenerator

    torch.manual_seed(0)
    G = CGenerator((1, 32, 32), 10, 8, 128).eval().requires_grad_(False).double()  # float64: Adam amplifies
    T = T.double()  # float32 rounding in near-zero gradients
    classes = [0, 5, 9]
    kw = {"iters": 5, "lr": 0.1, "n_aug": 2, "scale": 1 / 3, "aug": lambda x: x}
    z0, y = latent_init(3, classes, 2, 128)
    z, _ = plg_optimize(G, T, z0.double(), y, **kw)
    for c in classes:
        zc0, yc = latent_init(3, [c], 2, 128)
        zc, _ = plg_optimize(G, T, zc0.double(), yc, **kw)
        assert torch.allclose(zc, z[y == c], atol=1e-5)


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_brepmi_batch_equals_loop():
    G, T = _nets()
    label_of = LabelOnly(T)
    gen = torch.Generator().manual_seed(0)
    cands = torch.randn(4096, 100, generator=gen).clamp(-1.5, 1.5)
    labels = label_of(G(cands))
    classes = [c for c in range(10) if (labels == c).any()][:3]
    z0 = torch.stack([cands[labels == c][0] for c in classes])
    table = torch.randn(8, 10, 6, 100)

    def dirs(it, lab, k, dim, r):
        d = table[it, lab]
        return d / d.norm(dim=2, keepdim=True) * r[:, None, None]

    kw = {
        "points": 6,
        "r0": 2.0,
        "grow": 1.3,
        "threshold": 0.75,
        "patience": 3,
        "max_iters": 8,
        "clamp": 1.5,
        "directions": dirs,
    }
    z, p, _ = brep_optimize(G, label_of, z0.clone(), torch.tensor(classes), **kw)
    for i, c in enumerate(classes):
        zc, pc, _ = brep_optimize(G, label_of, z0[i : i + 1].clone(), torch.tensor([c]), **kw)
        assert torch.allclose(zc[0], z[i], atol=1e-5) and torch.allclose(pc[0], p[i], atol=1e-5)


def test_lomma_identity_batch_equals_loop():
    G, T = _nets()

    def D(x):
        return x.mean((1, 2, 3))

    ident = logit_identity(T, [], torch.zeros(256), 1.0)
    kw = {"iters": 5, "lr": 0.02, "momentum": 0.9, "lam": 100, "clip": 1.0, "scale": 0.5, "identity": ident}
    z0, y = latent_init(0, [2, 7], 1, 100)
    z, _ = gmi_optimize(G, D, T, z0, y, **kw)
    for c in (2, 7):
        zc0, yc = latent_init(0, [c], 1, 100)
        assert torch.allclose(gmi_optimize(G, D, T, zc0, yc, **kw)[0], z[y == c], atol=1e-5)


# ---- augmentation, selection, threat model ---------------------------------------------------


def test_augment_keeps_shape_range_and_gradients():
    x = (torch.rand(8, 1, 32, 32) * 2 - 1).requires_grad_(True)
    out = augment(x)
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert augment(torch.rand(4, 3, 32, 32) * 2 - 1).shape == (4, 3, 32, 32)


def test_top_n_selects_the_most_confident_per_class():
    T = _linear_T()
    pub = torch.tensor([[5.0, 0, 0, 0], [1.0, 0, 0, 0], [0, 5.0, 0, 0], [0, 0, 5.0, 0]])
    x, y = top_n(T, pub, 3, 1, CPU)
    assert y.tolist() == [0, 1, 2]
    assert torch.equal(x, pub[[0, 2, 3]])


def test_label_only_view_exposes_labels_and_counts_queries():
    view = LabelOnly(_linear_T())
    out = view(torch.tensor([[0.0, 1.0, 0.0, 0.0], [1.0, 0, 0, 0]]))
    assert out.tolist() == [1, 0] and out.dtype == torch.long and view.queries == 2
    assert not hasattr(view, "parameters")


# ---- through the harness -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    reg = load()
    wd = tmp_path_factory.mktemp("attacks")
    plan = expand(
        Request(["kedmi", "plgmi", "lomma+gmi", "brepmi", "gmi"], ["none", "re"], budget="smoke"), reg
    )
    summary = Runner(reg, wd, CPU).run(plan, Store(wd / "results.db"))
    return plan, summary, wd


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_priors_are_reused_across_defenses(grid):
    plan, summary, _ = grid
    ran = [s.spec.get("kind") for s in summary.ran if s.kind == "prior"]
    assert ran.count("gmi-gan") == 1  # gmi, brepmi and lomma+gmi share the public GAN
    assert ran.count("kedmi-gan") == 2 and ran.count("plgmi-cgan") == 2  # one per target
    assert ran.count("lomma-students") == 2
    assert [s.kind for s in summary.ran].count("target") == 2


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_every_attack_stores_scenario_shaped_results(grid):
    plan, summary, wd = grid
    rows = Store(wd / "results.db").rows()
    assert len(rows) == 10 and all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    reg = load()
    runner = Runner(reg, wd, CPU)
    for cell in plan.cells:
        inv = runner.artifacts.load(cell.invert_key)
        assert inv["images"].shape[1:] == (1, 32, 32)
        assert inv["images"].min() >= -1 and inv["images"].max() <= 1
        assert len(inv["labels"]) == len(inv["images"])
    brep = [r for r in rows if r["attack"] == "brepmi"]
    assert all(r["threat_model"] == "label-only" and r["timings"]["queries"] > 0 for r in brep)
    assert all(r["timings"]["cell_s"] > 0 for r in rows)


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_grid_appears_on_the_leaderboard(grid):
    from reinv_bench.cli import State, cli

    wd = grid[2]
    result = CliRunner().invoke(cli, ["leaderboard", "--workdir", str(wd), "--format", "json"], obj=State(()))
    entries = json.loads(result.output)
    assert {(e["attack"], e["defense"]) for e in entries} == {
        (a, d) for a in ("kedmi", "plgmi", "lomma+gmi", "brepmi", "gmi") for d in ("none", "re")
    }
    assert {e["threat_model"] for e in entries if e["attack"] == "brepmi"} == {"label-only"}


def test_wrapper_syntax_errors(tmp_path):
    from reinv_bench.registry.spec import SpecError

    reg = load()
    with pytest.raises(SpecError, match="wraps a base attack"):
        expand(Request(["lomma"], ["none"], budget="smoke"), reg)
    with pytest.raises(SpecError, match="not a wrapper"):
        expand(Request(["gmi+kedmi"], ["none"], budget="smoke"), reg)
    from reinv_bench.api import ConfigError

    with pytest.raises(ConfigError, match="lomma wraps a white-box attack"):
        expand(Request(["lomma+brepmi"], ["none"], budget="smoke"), reg)


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_runner_hands_each_threat_model_its_view_of_the_target(tmp_path):
    """A label-only attack receives a LabelOnly view (labels only, queries counted), a black-box
    one a BlackBox view (probabilities), never the module itself."""
    from reinv_bench import hookimpl
    from reinv_bench.api import Attack, BlackBox, Inversion, PriorSpec

    seen = {}

    def make(threat):
        class Probe(Attack):
            name = f"probe-{threat}"
            threat_model = threat

            def priors(self):
                return [PriorSpec(f"none-{threat}", {})]

            def invert(self, ctx, priors, classes):
                seen[threat] = type(ctx.target)
                x = torch.zeros(len(classes), 1, 32, 32)
                out = ctx.target(x)
                assert not isinstance(ctx.target, nn.Module)
                assert (out.dtype == torch.long) == (threat == "label-only")
                return Inversion(x, torch.tensor(classes))

        return Probe

    class Plugin:
        @hookimpl
        def register_attacks(self):
            return [make("label-only"), make("black-box")]

    reg = load(extra=(Plugin(),))
    plan = expand(
        Request(["probe-label-only", "probe-black-box"], ["none"], budget="smoke", metrics=["attack_acc"]),
        reg,
    )
    Runner(reg, tmp_path, CPU).run(plan, Store(tmp_path / "results.db"))
    assert seen == {"label-only": LabelOnly, "black-box": BlackBox}
    rows = Store(tmp_path / "results.db").rows()
    assert all(r["status"] == "ok" and r["timings"]["queries"] == 10 for r in rows)
