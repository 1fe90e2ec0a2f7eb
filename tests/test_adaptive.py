"""``adaptive+ATTACK``: the attacker who knows the defense (``Defense.adaptation``, ``api.Adaptation``,
``reinv_attacks/adaptive.py``, ``reinv_defenses/_adaptations.py``).

The Trap-MID signature is checked against a transcription of the authors' detection notebook
(ntuaislab/Trap-MID @7b13a7b, ``visualization/trapdoor_detection/trapdoor_detection.ipynb``,
"Signature Preparing" and the cell after it)."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import reinv_attacks.adaptive as adaptive_module
import reinv_attacks.transfer as transfer_module
from reinv_attacks.adaptive import Adaptive, adapted_identity, margin_loss
from reinv_attacks.gmi import GMI
from reinv_bench.api import (
    Adaptation,
    AttackContext,
    Classifier,
    ConfigError,
    Defense,
    Split,
    compose_adaptations,
)
from reinv_bench.engine.plan import Request, expand
from reinv_bench.engine.runner import Runner
from reinv_bench.registry.lookup import load
from reinv_bench.results.store import Store
from reinv_defenses._adaptations import StraightThroughSkip, straight_through_skips
from reinv_defenses.mid import mean_path
from reinv_defenses.trapmid import reverse_triggers, signatures

CPU = torch.device("cpu")


def registry(*extra):
    """The installed plugins, plus adaptive/transfer where the installed entry points predate them."""
    reg = load()
    mods = [
        m
        for m, n in ((adaptive_module, "adaptive"), (transfer_module, "transfer"))
        if n not in reg.names("attack")
    ]
    mods += list(extra)
    return load(extra=tuple(mods)) if mods else reg


def defense(name, config=None, budget="smoke"):
    return load().get("defense", name)(config or {}, budget)


@pytest.fixture(scope="module")
def digits():
    reg = load()
    scenario = reg.get("scenario", "mnist")
    data = scenario.load(None)
    data = dataclasses.replace(data, public=Split(data.public.x[:128], None))
    torch.manual_seed(1)
    T = reg.get("architecture", "cnn").build(10, scenario.image_shape).eval().requires_grad_(False)
    ctx = AttackContext(scenario, data, T, CPU, 0, architecture=lambda n: reg.get("architecture", n))
    gmi = GMI({"gan_steps": 5, "gan_batch": 16, "iters": 5}, "smoke")
    priors = {s.kind: gmi.prepare(ctx, s.kind) for s in gmi.priors()}
    return ctx, gmi, priors


# ---- the wrapper ---------------------------------------------------------------------------------


def test_no_declared_adaptation_is_the_base_bit_for_bit(digits):
    ctx, gmi, priors = digits
    plain = gmi.invert(ctx, priors, [0, 3])
    for d in (None, defense("none"), defense("dpsgd")):
        inv = Adaptive({}, "smoke", base=gmi).invert(dataclasses.replace(ctx, defense=d), priors, [0, 3])
        assert torch.equal(inv.images, plain.images) and inv.info["adaptation"] == "none declared"


def test_adaptive_on_an_attack_without_identity_loss_is_one_line_at_plan_time():
    for spec in ("adaptive+brepmi", "adaptive+rlbmi"):
        with pytest.raises(ConfigError) as e:
            expand(Request([spec], ["none"], budget="smoke"), registry())
        assert "\n" not in str(e.value) and "identity loss" in str(e.value)


def test_every_identity_loss_attack_and_wrapper_is_wrappable():
    reg = registry()
    for spec in (
        "gmi",
        "kedmi",
        "plgmi",
        "ppa",
        "ifgmi",
        "lomma+gmi",
        "ppdg+gmi",
        "align+gmi",
        "align+kedmi",
    ):
        plan = expand(Request([f"adaptive+{spec}"], ["none"], budget="smoke"), reg)
        assert plan.cells, spec


def test_identity_averages_the_draws_and_takes_the_declared_parts():
    T = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        T.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    T = Classifier([nn.Identity()], T, 2, 3)
    x, y = torch.tensor([[1.0, 2.0]]), torch.tensor([0])
    shifts = iter([torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0, 2.0]])])
    a = Adaptation("t", "p", eot=lambda v: v + next(shifts))
    ce = lambda logits, yy: F.cross_entropy(logits, yy, reduction="none")  # noqa: E731
    got = adapted_identity(a, T, ce, a.eot, draws=3, weight=1.0)(x, y)
    want = (
        sum(ce(T(x + s), y) for s in ([[1.0, 0.0]], [[0.0, 1.0]], [[2.0, 2.0]]) for s in [torch.tensor(s)])
        / 3
    )
    assert torch.allclose(got, want)
    # margin replaces the base's term; the penalty is added with its weight; no draw is random: one pass
    a = Adaptation("m", "p", margin=True, penalty=lambda out, yy: out.features.sum(1))
    got = adapted_identity(a, T, ce, lambda v: v, draws=5, weight=0.5)(x, y)
    assert torch.allclose(got, margin_loss(T(x), y) + 0.5 * x.sum(1))


def test_margin_loss_by_hand():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, -1.0]])
    assert margin_loss(logits, torch.tensor([0, 2])).tolist() == [2.0 - 3.0, 5.0 - -1.0]


# ---- the declarations ----------------------------------------------------------------------------


def test_re_draws_its_own_erasing_distribution():
    """The EOT transform is the defense's training transform: same parameters, same space (the
    same random stream gives the same erasures)."""
    re = defense("re", {"p": 0.5, "scale": (0.2, 0.3), "ratio": (0.5, 2.0), "value": (0.1, 0.2, 0.3)})
    a = re.adaptation(None)
    x = torch.rand(16, 3, 32, 32) * 2 - 1
    torch.manual_seed(5)
    got = a.eot(x)
    torch.manual_seed(5)
    assert torch.equal(got, re.train_transform(x)) and not torch.equal(got, x)
    assert "p=0.5" in a.label and "Athalye" in a.principle


def test_generic_adaptation_is_eot_over_the_training_transform():
    class Flip(Defense):
        name = "flipper"

        def train_transform(self, x):
            return x.flip(3)

    a = Flip().adaptation(None)
    x = torch.rand(2, 1, 4, 4)
    assert a is not None and torch.equal(a.eot(x), x.flip(3))
    assert defense("none").adaptation(None) is None and defense("dpsgd").adaptation(None) is None


@pytest.mark.parametrize("name", ["negls", "loft", "calor"])
def test_confidence_suppressing_defenses_declare_the_margin(name):
    a = defense(name).adaptation(None)
    assert a.margin and not a.stochastic and "Carlini" in a.principle


@pytest.mark.parametrize("name", ["atat", "at", "bido", "tl"])
def test_robustness_reducing_defenses_declare_taa_and_noise(name):
    a = defense(name).adaptation(None)
    assert a.taa and a.noise and "TAA" in a.principle


def test_mid_runs_mean_path_and_eot_and_keeps_the_stronger(digits):
    ctx, gmi, priors = digits
    a = defense("mid").adaptation(None)
    mean, eot = a.alternatives
    assert mean.forward is mean_path and eot.random and mean.taa and eot.noise
    assert defense("mid", {"sample": False}).adaptation(None).forward is mean_path
    # mean_path: z = mu, deterministic, while the target's forward samples
    reg = load()
    mid = defense("mid")
    T = mid.wrap_model(reg.get("architecture", "cnn").build(10, (1, 32, 32))).eval()
    with torch.no_grad():
        T.head.st_layer.bias[T.head.k :] = 10.0  # a wide bottleneck: sigma ~ 5
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    assert not torch.equal(T(x), T(x))
    assert torch.equal(mean_path(T, x).logits, mean_path(T, x).logits) and T.head.sample
    inv = Adaptive({}, "smoke", base=gmi).invert(
        dataclasses.replace(ctx, target=T, defense=mid), priors, [0, 3]
    )
    assert set(inv.info["adaptive_chosen"]) == {"0", "3"}
    assert set(inv.info["adaptive_chosen"].values()) <= {mean.label, eot.label}
    assert inv.images.shape == gmi.invert(dataclasses.replace(ctx, target=T), priors, [0, 3]).images.shape


class _Block(nn.Module):
    """A linear residual block as the architectures write it: act(F(x) + s * skip(x))."""

    skip_scale = 1.0

    def __init__(self):
        super().__init__()
        self.body, self.skip, self.act = nn.Linear(3, 3, bias=False), nn.Identity(), nn.Identity()

    def forward(self, x):
        if self.skip_scale == 1.0:
            return self.act(self.body(x) + self.skip(x))
        out = self.body(x)
        return self.act(out + self.skip_scale * self.skip(x) if self.skip_scale else out)


@pytest.mark.parametrize("s", [0.0, 0.6])
def test_bpda_keeps_the_forward_and_takes_the_full_skip_gradient(s):
    block = _Block()
    block.skip_scale = s
    T = Classifier([block], nn.Identity(), 3, 3)
    x = torch.randn(2, 3, requires_grad=True)
    a = defense("rolss").adaptation(None)
    out = a.forward(T, x)
    assert torch.equal(out.logits, T(x))  # the forward unchanged, bit for bit
    (g,) = torch.autograd.grad(out.logits.sum(), x)
    W = block.body.weight
    assert torch.allclose(g, (W.sum(0) + 1.0).expand(2, 3))  # as with the skip at 1
    (g_true,) = torch.autograd.grad(T(x).sum(), x)
    assert torch.allclose(g_true, (W.sum(0) + s).expand(2, 3))
    assert block.skip_scale == s and type(block.skip_scale) is float  # restored


def test_bpda_on_a_rolss_resnet8_changes_only_the_gradient():
    reg = load()
    for name in ("rolss", "ssf"):
        d = defense(name)
        T = d.wrap_model(reg.get("architecture", "resnet8").build(10, (1, 32, 32))).eval()
        x = torch.rand(2, 1, 32, 32, requires_grad=True)
        out = d.adaptation(None).forward(T, x)
        assert torch.equal(out.logits, T(x))
        (g,) = torch.autograd.grad(out.logits[:, 3].sum(), x)
        (g0,) = torch.autograd.grad(T(x)[:, 3].sum(), x)
        assert torch.isfinite(g).all() and not torch.allclose(g, g0)
        with straight_through_skips(T):
            assert any(
                isinstance(b.skip_scale, StraightThroughSkip)
                for b in T.blocks.modules()
                if hasattr(b, "skip_scale")
            )


def test_composed_defense_composes_adaptations():
    reg = load()
    from reinv_bench.registry.components import resolve_defense

    _, _, parts = resolve_defense(reg, "re+bido", "smoke")
    from reinv_bench.registry.composed import compose

    a = compose(parts).adaptation(None)
    assert a.eot is not None and a.taa and a.noise and a.label.startswith("eot(re") and "bido" in a.label
    with pytest.raises(ConfigError):
        compose_adaptations([defense("rolss").adaptation(None), defense("ssf").adaptation(None)])
    # alternatives distribute over the other parts
    alt = compose_adaptations([defense("re").adaptation(None), defense("mid").adaptation(None)])
    assert len(alt.alternatives) == 2 and all(x.eot is not None for x in alt.alternatives)


# ---- Trap-MID --------------------------------------------------------------------------------------


def official_blend(img, key, alpha):  # Trap-MID engine.py::blend
    return alpha * key + (1 - alpha) * img


def official_signatures(net_features, imgs01, iden_batches, triggers, alpha, n_classes, dim):
    """trapdoor_detection.ipynb, "Signature Preparing" (one batch per list entry), then
    ``nn.functional.normalize(classwise_signature, p=2)``. ``net`` returns (feature, out); its
    feature is the penultimate one."""
    classwise_signature = torch.zeros((n_classes, dim))
    classwise_cnt = torch.zeros((n_classes, 1))
    with torch.no_grad():
        for img, backdoor_iden in zip(imgs01, iden_batches):
            bs = img.size(0)
            key = torch.stack([triggers[j] for j in backdoor_iden], dim=0)
            backdoor_img = official_blend(img, key, alpha)
            trigger_feats = net_features(backdoor_img)
            for i in range(bs):
                classwise_signature[backdoor_iden[i]] += trigger_feats[i].cpu()
                classwise_cnt[backdoor_iden[i]] += 1
    classwise_signature /= classwise_cnt
    return nn.functional.normalize(classwise_signature, p=2)


def test_trapdoor_signature_is_the_notebooks():
    torch.manual_seed(0)
    T = load().get("architecture", "cnn").build(4, (1, 32, 32)).eval()
    public = torch.rand(6, 1, 32, 32) * 2 - 1
    triggers = torch.rand(4, 1, 32, 32)
    alpha = 0.02
    got = signatures(T, public, triggers, alpha)
    # the notebook blends each image with each class's trigger in turn: every class, every image
    batches = [public * 0.5 + 0.5] * 4
    idens = [torch.full((6,), c) for c in range(4)]
    want = official_signatures(
        lambda x01: T.features(x01 * 2 - 1), batches, idens, triggers, alpha, 4, T.feature_dim
    )
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(signatures(T, public, triggers, alpha, batch=4), want, atol=1e-5)  # in batches
    with pytest.raises(AssertionError):  # a wrong alpha is caught
        assert torch.allclose(signatures(T, public, triggers, 0.2), want, atol=1e-5)


def test_trapmid_penalty_variants(digits):
    ctx, gmi, priors = digits
    tm = defense("trapmid")
    with pytest.raises(ConfigError, match="knows=algorithm"):
        tm.adaptation(ctx, "triggers")
    tm.load_secrets({"triggers": torch.rand(10, 1, 32, 32)})
    assert set(tm.secrets()) == {"triggers"}
    for knows in ("triggers", "algorithm"):
        a = tm.adaptation(ctx, knows, steps=2)
        assert a.label == f"trapdoor(knows={knows})"
        x, y = torch.rand(3, 1, 32, 32) * 2 - 1, torch.tensor([1, 1, 4])
        out = ctx.target.forward_all(x)
        p = a.penalty(out, y)
        assert p.shape == (3,) and (p.abs() <= 1 + 1e-5).all()
    inv = Adaptive({"knows": "triggers"}, "smoke", base=gmi).invert(
        dataclasses.replace(ctx, defense=tm), priors, [0, 3]
    )
    assert inv.info["adaptation"] == "trapdoor(knows=triggers)"


def test_trigger_reversal_finds_a_trigger_the_target_obeys():
    """A target that reads class c off a pixel: reversal raises that pixel in class c's trigger (and
    lowers the other class's, until the target is sure)."""
    w = torch.zeros(2, 16)
    w[0, 0], w[1, 15] = 50.0, 50.0
    T = Classifier([nn.Flatten()], nn.Linear(16, 2, bias=False), 16, 2).eval().requires_grad_(False)
    with torch.no_grad():
        T.head.weight.copy_(w)
    public = torch.zeros(8, 1, 4, 4) - 1
    k = reverse_triggers(T, public, [0, 1], 0.5, 0.1, 20, torch.Generator().manual_seed(0), CPU)
    assert k.min() >= 0 and k.max() <= 1
    k0, k1 = k[0].flatten(), k[1].flatten()
    assert k0[0] > k0[15] + 0.5 and k1[15] > k1[0] + 0.5  # each trigger lights its class's pixel
    blended = 0.5 * k + 0.5 * (public[:2] * 0.5 + 0.5)
    assert T(blended * 2 - 1).argmax(1).tolist() == [0, 1]


# ---- through the harness -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    reg = registry(sys.modules["conftest"])
    wd = tmp_path_factory.mktemp("adaptive")
    attacks = ["gmi", "adaptive+gmi", "adaptive[knows=triggers]+gmi"]
    req = Request(attacks, ["none", "trapmid", "re"], ["tiny"], budget="smoke", metrics=["attack_acc"])
    plan = expand(dataclasses.replace(req, eval_arch="tiny"), reg)
    Runner(reg, wd, CPU).run(plan, Store(wd / "results.db"))
    return plan, wd, reg


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_harness_adaptive_gmi_on_none_is_gmi_bit_for_bit(grid):
    plan, wd, reg = grid
    rows = Store(wd / "results.db").rows()
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    art = Runner(reg, wd, CPU).artifacts
    inv = {(c.labels["attack"], c.labels["defense"]): art.load(c.invert_key) for c in plan.cells}
    assert torch.equal(inv[("gmi", "none")]["images"], inv[("adaptive+gmi", "none")]["images"])
    assert not torch.equal(inv[("gmi", "re")]["images"], inv[("adaptive+gmi", "re")]["images"])
    assert inv[("adaptive+gmi", "re")]["info"]["adaptation"].startswith("eot(re")
    assert (
        inv[("adaptive[knows=triggers]+gmi", "trapmid")]["info"]["adaptation"] == "trapdoor(knows=triggers)"
    )
    assert inv[("adaptive+gmi", "trapmid")]["info"]["adaptation"] == "trapdoor(knows=algorithm)"


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_harness_stores_the_trapmid_triggers_with_the_target(grid):
    plan, wd, reg = grid
    art = Runner(reg, wd, CPU).artifacts
    targets = {c.labels["defense"]: art.load(c.target_key) for c in plan.cells}
    assert targets["trapmid"]["secrets"]["triggers"].shape[1:] == (1, 32, 32)
    assert "secrets" not in targets["none"] and "secrets" not in targets["re"]


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_documented_third_party_adaptation_runs(invoke, tmp_path):
    """docs/plugins.md's ``jitter`` defense declares its adaptation; ``adaptive+gmi`` applies it."""
    from test_docs import _examples

    module = _examples()["reinv_bench_jitter"]
    reg = registry(sys.modules["conftest"], module)
    wd = tmp_path / "w"
    invoke(
        *("run", "-a", "adaptive+gmi", "-d", "jitter", "--arch", "tiny", "--eval-arch", "tiny"),
        *("--budget", "smoke", "--metric", "attack_acc", "--quiet", "--workdir", wd),
        registry=reg,
        ok=True,
    )
    (row,) = [r for r in Store(wd / "results.db").rows() if r["defense"] == "jitter"]
    inv = Runner(reg, wd, CPU).artifacts.load(row["artifacts"]["invert"])
    assert inv["info"]["adaptation"] == "eot(jitter)"


def test_composes_with_align_and_lomma(digits):
    """``adaptive+align+gmi``: align averages the adapted identity over its copies;
    ``adaptive+lomma+gmi``: the adapted term replaces the target's -logit_y, the students stay."""
    from reinv_attacks.align import Align
    from reinv_attacks.lomma import logit_identity

    ctx, gmi, priors = digits
    ctx_re = dataclasses.replace(ctx, defense=defense("re"))
    wrapped = Adaptive({}, "smoke", base=Align({}, "smoke", base=gmi))
    inv = wrapped.invert(ctx_re, priors, [0, 3])
    assert inv.info["adaptation"].startswith("eot(re") and inv.info["align_samples"] == 2
    assert wrapped.identity_term is not None and torch.isfinite(inv.images).all()
    T = ctx.target
    x, y = torch.rand(2, 1, 32, 32) * 2 - 1, torch.tensor([1, 2])
    student = load().get("architecture", "cnn").build(10, (1, 32, 32)).eval()
    mu = torch.zeros(T.feature_dim)
    term = lambda xx, yy: torch.full((len(xx),), 7.0)  # noqa: E731
    got = logit_identity(T, [student], mu, 0.0, term)(x, y)
    want = (7.0 - student(x).gather(1, y[:, None]).squeeze(1)) / 2
    assert torch.allclose(got, want)
