"""``robust_acc`` (issue 18): AT-AT's robust-accuracy definition and the official AutoAttack
"standard" settings, transcribed here, against the metric built on torchattacks."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from reinv_bench.api import EvalContext, Inversion, NotComputed, ScenarioData, Split

ta = pytest.importorskip("torchattacks", reason="robust_acc needs the [robust] extra (torchattacks)")

# fra31/auto-attack autoattack/autoattack.py: AutoAttack.__init__ (n_iter=100 for APGD, APGD-T
# and FAB; Square p_init 0.8, resc_schedule False) and set_version('standard') for Linf, transcribed
AA_STANDARD = {
    "attacks_to_run": ["apgd-ce", "apgd-t", "fab-t", "square"],
    "apgd": {"n_iter": 100, "n_restarts": 1, "loss": "ce"},
    "apgd-t": {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9},
    "fab-t": {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9},
    "square": {"n_queries": 5000, "n_restarts": 1, "p_init": 0.8, "resc_schedule": False},
}
# BreuerLabs/Anti-Adversarial-Training configuration/classifier/config_evaluate.yaml, auto_attack
ATAT_EVAL = {"eps": 0.031, "norm": "Linf", "normalization_means": 0.5, "normalization_stds": 0.5}


def atat_robust_accuracy(model, x_test, x_adv, y_test):
    """Anti-Adversarial-Training utils/auto_attack.py::auto_attack (run_standard_evaluation branch):
    an image counts as robust unless its clean or its adversarial prediction is wrong."""
    with torch.no_grad():
        normal_predicted_labels = torch.argmax(model(x_test), dim=1)
        adv_predicted_labels = torch.argmax(model(x_adv), dim=1)
    is_misclassified = torch.logical_or(adv_predicted_labels != y_test, normal_predicted_labels != y_test)
    return is_misclassified


def tiny(num_classes=10, shape=(1, 8, 8), seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], num_classes)).eval()


def data(n=40, shape=(1, 8, 8), seed=1):
    """Images in [-1, 1], labelled by ``tiny()`` (so that it is right on them), every 8th label wrong."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=g) * 2 - 1
    with torch.no_grad():
        y = tiny(shape=shape)(x).argmax(1)
    y[::8] = (y[::8] + 1) % 10
    return x, y


def test_autoattack_is_the_official_standard_version():
    from reinv_metrics.robust import autoattack_standard

    apgd, apgdt, fab, square = autoattack_standard(tiny(), 10)
    assert (type(apgd), type(apgdt), type(fab), type(square)) == (ta.APGD, ta.APGDT, ta.FAB, ta.Square)
    s = AA_STANDARD
    assert (apgd.steps, apgd.n_restarts, apgd.loss) == tuple(s["apgd"].values())
    assert (apgdt.steps, apgdt.n_restarts, apgdt.n_target_classes) == tuple(s["apgd-t"].values())
    assert (fab.steps, fab.n_restarts, fab.n_target_classes, fab.multi_targeted) == (
        *s["fab-t"].values(),
        True,
    )
    assert (square.n_queries, square.n_restarts, square.p_init, square.rescale_schedule) == tuple(
        s["square"].values()
    )
    for a in (apgd, apgdt, fab, square):
        assert (a.norm, a.eps) == (ATAT_EVAL["norm"], ATAT_EVAL["eps"])
    # with few classes, the target classes are all the other ones
    assert autoattack_standard(tiny(num_classes=5), 5)[1].n_target_classes == 4


def test_cascade_is_atat_robust_accuracy():
    """With a deterministic attack, the cascade's mask equals AT-AT's misclassification rule."""
    from reinv_metrics.robust import _Pixels, cascade

    x, y = data()
    model = _Pixels(tiny()).eval()
    p = (x + 1) / 2
    fgsm = ta.FGSM(model, eps=0.01)
    (mask,) = cascade(model, [fgsm], p, y)
    ref = atat_robust_accuracy(model, p, fgsm(p, y), y)
    assert torch.equal(mask, ~ref)
    assert 0 < mask.sum() < (model(p).argmax(1) == y).sum()  # the attack took some, not all


def test_target_sees_the_harness_space_and_eps_is_in_pixels():
    from reinv_metrics.robust import EPS, _Pixels

    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = tiny()

        def forward(self, x):
            seen.append(x.detach())
            return self.lin(x)

    x, y = data(8)
    model = _Pixels(Spy())
    adv = ta.PGD(model, eps=EPS, alpha=2 / 255, steps=3)((x + 1) / 2, y)
    assert ((adv - (x + 1) / 2).abs().max() <= EPS + 1e-6) and adv.min() >= 0 and adv.max() <= 1
    # the harness-space input the target received for the final images: 2p - 1, within 2 eps of x
    assert all(s.min() >= -1 and s.max() <= 1 for s in seen)
    dev = max((s - x).abs().max().item() for s in seen)
    assert 1.5 * EPS < dev <= 2 * EPS + 1e-6  # eps 0.031 of [0, 1] is 0.062 of [-1, 1]
    assert (
        ATAT_EVAL["eps"] == EPS and ATAT_EVAL["normalization_means"] == ATAT_EVAL["normalization_stds"] == 0.5
    )


def _ctx(model, budget, n=80, cache=None):
    x, y = data(n, seed=2)
    split = Split(x, y)
    sd = ScenarioData(split, split, Split(x, None), split, split, digest="d0", source="test")
    scenario = type("S", (), {"num_classes": 10, "name": "toy"})()
    inv = Inversion(x[:2], y[:2])
    kw = {"cache": cache} if cache else {}
    return EvalContext(scenario, sd, inv, model, model, torch.device("cpu"), budget=budget, **kw)


def test_compute_is_bounded_by_clean_accuracy_and_cached_per_target(registry):
    from reinv_metrics.robust import SUBSET

    metric = registry.get("metric", "robust_acc")
    model = tiny()
    store, calls = {}, []

    def cache(name, key, compute):
        k = repr((name, key))
        if k not in store:
            calls.append(k)
            store[k] = compute()
        return store[k]

    ctx = _ctx(model, "smoke", cache=cache)
    out = metric.compute(ctx)
    r = out["robust_acc"]
    items = list(r.items)
    assert len(items) == min(SUBSET["smoke"], 80) and len(list(r.classes)) == len(items)
    x, y = ctx.data.private_test.x, ctx.data.private_test.y
    clean = (model(x).argmax(1) == y).float().mean().item()
    assert r.value < clean  # eps 0.031 hurts an untrained linear model
    assert "robust_acc_apgd" not in out  # APGD-CE alone is reported at the paper budget
    metric.compute(ctx)
    assert len(calls) == 1  # second cell on the same target: from the cache
    with torch.no_grad():
        model[1].bias += 1.0  # another target: another entry
    metric.compute(ctx)
    assert len(calls) == 2


def test_paper_budget_runs_autoattack_on_all_test_images(registry):
    from reinv_metrics.robust import _Pixels, cascade

    metric = registry.get("metric", "robust_acc")
    model = tiny()
    ctx = _ctx(model, "paper", n=12)
    out = metric.compute(ctx)
    assert len(list(out["robust_acc"].items)) == 12
    assert out["robust_acc"].value <= out["robust_acc_apgd"].value
    # robust_acc_apgd is APGD-CE run alone (seed 0, the chain's first attack), image by image
    pix, test = _Pixels(model).eval(), ctx.data.private_test
    apgd = ta.APGD(pix, norm="Linf", eps=0.031, steps=100, n_restarts=1, seed=0, loss="ce")
    (alone,) = cascade(pix, [apgd], (test.x + 1) / 2, test.y)
    assert list(out["robust_acc_apgd"].items) == alone.int().tolist()


def test_apgd_column_reads_the_first_attacks_mask_and_robust_acc_the_last(registry, monkeypatch):
    """Issue 30.9: with a chain whose second attack takes images the first left, the two columns
    differ, each the mask after its own attack (both read from one mask would be equal)."""
    import reinv_metrics.robust as robust

    weak_then_strong = lambda model, num_classes: [  # noqa: E731
        ta.FGSM(model, eps=0.005),
        ta.PGD(model, eps=0.031, alpha=2 / 255, steps=10, random_start=False),
    ]
    monkeypatch.setattr(robust, "autoattack_standard", weak_then_strong)
    model = tiny()
    ctx = _ctx(model, "paper", n=80)
    out = registry.get("metric", "robust_acc").compute(ctx)
    pix, test = robust._Pixels(model).eval(), ctx.data.private_test
    first, last = robust.cascade(pix, weak_then_strong(pix, 10), (test.x + 1) / 2, test.y)
    assert list(out["robust_acc_apgd"].items) == first.int().tolist()
    assert list(out["robust_acc"].items) == last.int().tolist()
    assert out["robust_acc"].value < out["robust_acc_apgd"].value - 0.3  # 0.225 vs 0.725 measured


def test_without_torchattacks_it_is_null_with_the_reason(registry, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchattacks", None)
    out = registry.get("metric", "robust_acc").compute(_ctx(tiny(), "smoke"))
    assert isinstance(out["robust_acc"], NotComputed) and "reinv-bench[robust]" in out["robust_acc"].reason


def test_not_run_by_default_only_when_named(registry):
    from reinv_bench.views.protocol import default_metrics

    for entry in registry.entries("scenario"):
        run, other = default_metrics(registry, entry.obj)
        assert "robust_acc" not in [m.name for m in run] and "robust_acc" in [m.name for m in other]
    text = registry.get("metric", "robust_acc").definition
    assert "L-inf" in text and "eps 0.031" in text and "PGD" in text and "AutoAttack" in text
