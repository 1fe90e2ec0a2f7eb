"""``loft`` and ``calor`` (Rank Matters, KDD 2026) against transcriptions of the official code,
written here: the MIBench toolbox (ffhibnese/Model-Inversion-Attack-ToolBox, branch ``tomain``
@d58590c) ``src/modelinversion/models/classifiers/wrappers.py::_neck_builder`` and
``src/modelinversion/utils/losses.py::InverseFocalLoss``, and Chrisqcwx/LoFt's scripts
``scripts/ffhq256_facescrub224/classifier/lrc.py`` and ``ca_ft.py`` (@07f1e25)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reinv_bench.api import ConfigError, Split, TrainRecipe
from reinv_bench.engine.plan import Request, expand
from reinv_bench.engine.runner import Runner
from reinv_bench.engine.train import train_classifier
from reinv_bench.registry.composed import compose
from reinv_bench.registry.lookup import load
from reinv_bench.results.store import Store

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def reg():
    return load()


# ---- transcriptions -------------------------------------------------------------------------

_ACTIVATION = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "none": nn.Identity,
}


def official_neck_builder(neck_dim, activation="tanh"):
    """wrappers.py::_neck_builder (toolbox ``tomain``): the head NeckWrapper puts in place of fc."""
    activation_builder = _ACTIVATION[activation]

    def _builder(input_dim, output_dim):
        return nn.Sequential(
            nn.BatchNorm1d(input_dim),
            nn.Linear(input_dim, neck_dim),
            activation_builder(),
            nn.Linear(neck_dim, output_dim),
        )

    return _builder


class OfficialInverseFocalLoss:
    """utils/losses.py::InverseFocalLoss (toolbox ``tomain``), label_smoothing 0 as ca_ft.py."""

    def __init__(self, gamma=4, alpha=0.25, label_smoothing=0):
        self.gamma, self.alpha, self.label_smoothing = gamma, alpha, label_smoothing

    def __call__(self, inputs, targets):
        ls = self.label_smoothing
        confidence = 1.0 - ls
        logprobs = F.log_softmax(inputs, dim=-1)
        nll_loss = -logprobs.gather(dim=-1, index=targets.unsqueeze(1))
        nll_loss = nll_loss.squeeze(1)
        smooth_loss = -logprobs.mean(dim=-1)
        pt = torch.exp(-nll_loss)
        focal_loss = -self.alpha * pt**self.gamma * nll_loss
        loss = confidence * focal_loss + ls * smooth_loss
        return torch.mean(loss)


# lrc.py (= loft.py @9d53293): main(neck_dim) for necks = [50], neck_activation 'tanh';
# Adam(lr 0.001, betas 0.9/0.999), MultiStepLR([75, 90], 0.1), epoch_num 100, batch_size 96
LOFT_PY = {
    "neck_dim": 50,
    "activation": "tanh",
    "lr": 1e-3,
    "milestones": [75, 90],
    "gamma": 0.1,
    "epochs": 100,
    "batch_size": 96,
}
# ca_ft.py: focal_p 8 -> InverseFocalLoss(focal_p); lr 0.00002; ft_epoch 5; SGD(momentum 0.9);
# MultiStepLR(milestones=[int(ft_epoch*0.6), int(ft_epoch*0.8)], gamma=0.1); flip-only transform
CA_FT_PY = {"focal_p": 8, "lr": 2e-5, "ft_epoch": 5, "momentum": 0.9}


def official_ca_ft_lrs(epochs=CA_FT_PY["ft_epoch"], lr=CA_FT_PY["lr"]):
    """The learning rate of each fine-tune epoch under ca_ft.py's optimizer and scheduler."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr, momentum=CA_FT_PY["momentum"])
    sched = torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=[int(epochs * 0.6), int(epochs * 0.8)], gamma=0.1
    )
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


# ---- the low-rank head -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["loft", "calor"])
def test_the_neck_is_the_official_neck_builder_with_k_50_tanh(reg, name):
    d, c = 128, 10
    torch.manual_seed(3)
    want = official_neck_builder(LOFT_PY["neck_dim"], LOFT_PY["activation"])(d, c)
    model = reg.get("architecture", "resnet8").build(c, (1, 32, 32))
    torch.manual_seed(3)  # the head is built first in both: the same initial weights
    model = reg.get("defense", name)({}).wrap_model(model)
    assert [type(m) for m in model.head] == [type(m) for m in want]
    assert [tuple(p.shape) for p in model.head.parameters()] == [tuple(p.shape) for p in want.parameters()]
    for a, b in zip(model.head.state_dict().values(), want.state_dict().values()):
        assert torch.equal(a, b)
    h = torch.randn(6, d)
    model.head.train(), want.train()
    assert torch.equal(model.head(h), want(h))
    model.head.eval(), want.eval()
    assert torch.equal(model.head(h), want(h))


def test_the_features_stay_the_necks_input_as_official_feature_compressed_false(reg):
    model = reg.get("defense", "loft")({"k": "7"}).wrap_model(
        reg.get("architecture", "resnet8").build(10, (1, 32, 32))
    )
    assert model.head[1].out_features == 7
    x = torch.randn(3, 1, 32, 32)
    out = model.eval().forward_all(x)
    assert out.features.shape == (3, model.feature_dim)  # the penultimate features, not the k-dim code
    assert torch.equal(out.logits, model.head(out.features))


def test_bad_activation_is_a_clear_error(reg):
    with pytest.raises(ConfigError, match="activation"):
        reg.get("defense", "loft")({"activation": "gelu"})


def test_loft_recipe_at_paper_is_lrc_py(reg):
    base = TrainRecipe(epochs=7, batch_size=5, optimizer="sgd", lr=0.3, weight_decay=0.1, augment="ppa")
    r = reg.get("defense", "loft")({}).recipe(base, "paper", "resnet152")
    assert (r.optimizer, r.lr, r.epochs, r.batch_size, r.weight_decay) == (
        "adam",
        LOFT_PY["lr"],
        LOFT_PY["epochs"],
        LOFT_PY["batch_size"],
        0.0,
    )
    assert (
        sorted(round(f * r.epochs) for f in r.milestones) == LOFT_PY["milestones"]
        and r.gamma == LOFT_PY["gamma"]
    )
    assert r.augment == "ppa"  # lrc.py's crop/jitter/flip is the scenario's ppa augmentation
    assert reg.get("defense", "loft")({}).recipe(base, "quick", "resnet152") == base


# ---- CALoR: the inverse focal loss and the fine-tune ------------------------------------------


def test_calor_fine_tune_loss_is_the_official_inverse_focal_loss(reg):
    calor = reg.get("defense", "calor")({})
    official = OfficialInverseFocalLoss(CA_FT_PY["focal_p"])  # alpha: the class default 0.25
    torch.manual_seed(0)
    y = torch.randint(0, 10, (16,))
    logits = (torch.randn(16, 10) + 4 * F.one_hot(y, 10)).requires_grad_(True)  # confident: p_y ~ 0.3-0.99
    from reinv_bench.api import Output

    out = Output(logits, torch.zeros(16, 4))
    assert torch.equal(calor.loss(out, None, y), F.cross_entropy(logits, y))  # main phase: cross-entropy
    calor.on_phase(1)
    got, want = calor.loss(out, None, y), official(logits, y)
    assert torch.allclose(got, want, rtol=1e-6, atol=0)
    (g1,) = torch.autograd.grad(got, logits)
    (g2,) = torch.autograd.grad(want, logits)
    assert torch.allclose(g1, g2, rtol=1e-5, atol=1e-9)
    # gamma and alpha matter: another value of either would be caught above
    assert not torch.allclose(OfficialInverseFocalLoss(4)(logits, y), want, rtol=1e-3, atol=0)
    assert not torch.allclose(OfficialInverseFocalLoss(8, alpha=0.5)(logits, y), want, rtol=1e-3, atol=0)


def test_calor_fine_tune_schedule_is_ca_ft_py(reg):
    """Run the harness's loop on the phase recipe and read the optimizer it builds, epoch by epoch."""
    calor = reg.get("defense", "calor")({})
    main = TrainRecipe(epochs=3, batch_size=8, optimizer="adam", lr=1e-3, augment="ppa")
    (phase,) = calor.phases(main)
    assert phase.augment == "flip" and phase.batch_size == main.batch_size
    assert calor.phases(TrainRecipe(epochs=3, augment=""))[0].augment == ""  # digits are never flipped
    seen = []

    class Probe(type(calor)):
        def begin_training(self, model, optimizer, recipe, n):
            self.opt = optimizer
            return optimizer

        def on_epoch(self, epoch, epochs):
            g = self.opt.param_groups[0]
            seen.append((g["lr"], g["momentum"], g["weight_decay"], type(self.opt).__name__))

    torch.manual_seed(0)
    model = reg.get("architecture", "cnn").build(3, (1, 16, 16))
    probe = Probe({})
    model = probe.wrap_model(model)
    probe.on_phase(1)
    data = Split(torch.randn(16, 1, 16, 16), torch.randint(0, 3, (16,)))
    train_classifier(model, data, phase, probe, device=CPU, seed=0)
    want = official_ca_ft_lrs()
    assert [s[0] for s in seen] == pytest.approx(want, rel=1e-12)
    assert {s[1:] for s in seen} == {(CA_FT_PY["momentum"], 0.0, "SGD")}


def test_calor_smoke_budget_shortens_only_the_epochs(reg):
    smoke = reg.get("defense", "calor")({}, "smoke")
    assert smoke.config.ft_epochs == 1 and smoke.config.ft_lr == CA_FT_PY["lr"] and smoke.config.gamma == 8
    assert reg.get("defense", "calor")({"ft_epochs": "0"}).phases(TrainRecipe(epochs=1)) == []


def test_composition(reg):
    d = lambda name: reg.get("defense", name)({})  # noqa: E731
    both = compose([d("re"), d("calor")])
    assert len(both.phases(TrainRecipe(epochs=2))) == 1
    both.on_phase(1)
    assert both.parts[1].phase == 1
    compose([d("loft"), d("bido")])  # the head and the loss: different hooks
    assert compose([d("re"), d("bido")]).phases(TrainRecipe(epochs=2)) == []
    for other in ("mid", "negls", "loft"):  # the same head or the same loss
        with pytest.raises(ConfigError, match="cannot compose"):
            compose([d("calor"), d(other)])


def test_smoke_run_trains_the_fine_tune_phase(registry, tmp_path):
    plan = expand(
        Request(
            ["meanimg"],
            ["loft", "calor"],
            archs=["tiny"],
            eval_arch="tiny",
            budget="smoke",
            baseline=False,
            metrics=["natural_acc"],
        ),
        registry,
    )  # the test plugin's tiny network, evaluation model included: seconds on a CPU
    store = Store(tmp_path / "r.sqlite")
    runner = Runner(registry, tmp_path, CPU)
    runner.run(plan, store)
    rows = {r["defense"]: r for r in store.rows()}
    assert set(rows) == {"loft", "calor"}
    assert all(r["status"] == "ok" for r in rows.values()), [r["error"] for r in rows.values()]
    hist = {}
    for step in plan.steps.values():
        if step.kind == "target":
            hist[step.spec["defense"][0]["name"]] = runner.artifacts.record(step.key)["meta"]["history"]
    assert len(hist["loft"]) == 1 and len(hist["calor"]) == 2  # smoke: 1 epoch, then 1 fine-tune epoch
    assert hist["calor"][1] < 0  # the inverse focal loss is alpha * p^gamma * log p <= 0
