"""Issue 30.5: the weights the official training code of AT-AT, LoFt and RoLSS keeps, offered as the
defenses' ``select`` parameter; AT-AT's protocol (``select=best_val_loss``) against a transcription."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reinv_bench.api import Defense, Split, TrainRecipe
from reinv_bench.engine.train import accuracy, train_classifier
from reinv_bench.registry.lookup import load

CPU = torch.device("cpu")


def data(seed: int, n: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 1, 4, 4, generator=g) * 1.2 + y.view(-1, 1, 1, 1).float() * 0.3
    return Split(x, y)


TRAIN = data(0, 50)


# ---- BreuerLabs/Anti-Adversarial-Training @ec6069a, transcribed -------------------------------


def official_split(n: int, validation_size: float = 0.2, seed: int = 42):
    """data_processing/datasets.py::get_datasets: the training and validation indices."""
    generator1 = torch.Generator().manual_seed(seed)
    train_size = int((1 - validation_size) * n)
    val_size = n - train_size
    indices = torch.randperm(n, generator=generator1)
    return indices[:-val_size], indices[-val_size:]


def official_evaluate(model, x, y):
    """classifiers/abstract_classifier.py::evaluate: summed cross-entropy over the instances."""
    with torch.no_grad():
        output = model(x)
        total_loss = F.cross_entropy(output, y, reduction="sum").item()
    return total_loss / len(x)


def official_selection(val_losses, evaluate_freq: int = 5):
    """abstract_classifier.py::train_model: the epoch whose model is saved last as the best one
    (``if val_loader and epoch % evaluate_freq == 0``; ``if val_loss < best_loss``, from inf)."""
    best_loss, best_epoch = math.inf, None
    for epoch, val_loss in enumerate(val_losses):
        if epoch % evaluate_freq == 0:
            if val_loss < best_loss:
                best_loss, best_epoch = val_loss, epoch
    return best_epoch


def _model(registry):
    torch.manual_seed(0)
    return registry.get("architecture", "tiny").build(3, (1, 4, 4))


def _train(registry, split, epochs, select="last"):
    m = _model(registry)
    recipe = TrainRecipe(epochs=epochs, batch_size=8, optimizer="sgd", lr=0.05, select=select)
    train_classifier(m, split, recipe, Defense(), device=CPU, seed=0)
    return m


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_best_val_loss_is_atat_train_model(registry):
    fit, held = official_split(len(TRAIN.y))
    train80, val = Split(TRAIN.x[fit], TRAIN.y[fit]), (TRAIN.x[held], TRAIN.y[held])
    assert len(fit) == 40 and len(held) == 10
    epochs = 12
    # the weights after epoch k: a run of k epochs on the 80 % (same seed, no schedule: same steps)
    states, losses = [], []
    for k in range(1, epochs + 1):
        m = _train(registry, train80, k).eval()
        states.append({n: v.clone() for n, v in m.state_dict().items()})
        losses.append(official_evaluate(m, *val))
    want = official_selection(losses)
    # the case where the protocol matters: neither the last epoch nor the lowest loss of all epochs
    # (measured: epoch 6 of 12 kept, epoch 5 has the lowest loss)
    assert want not in (epochs - 1, losses.index(min(losses))), losses
    got = _train(registry, TRAIN, epochs, "best_val_loss")
    for n, v in got.state_dict().items():
        assert torch.equal(v, states[want][n]), n
    assert not got.training


def test_the_defenses_offer_their_official_selection():
    reg = load()
    recipe = TrainRecipe(epochs=3)
    for name, official in [("atat", "best_val_loss"), ("at", "best_val_loss"), ("loft", "best_test")]:
        cls = reg.get("defense", name)
        assert cls.params["select"].new and cls.params["select"].default == "last"
        assert cls({}, "paper").recipe(recipe, "paper", "resnet18").select == "last"
        assert cls({"select": official}, "smoke").recipe(recipe, "smoke", "resnet18").select == official
    for name in ("rolss", "ssf"):
        assert reg.get("defense", name)({"select": "best_test"}, "smoke").recipe(
            recipe, "smoke", "x"
        ).select == ("best_test")
    # calor: the main phase keeps the best test epoch, the fine-tune its last (ca_ft.py save_best_ckpts=False)
    calor = reg.get("defense", "calor")({"select": "best_test"}, "paper")
    main = calor.recipe(recipe, "paper", "resnet18")
    assert main.select == "best_test" and [p.select for p in calor.phases(main)] == ["last"]


def test_select_stays_out_of_the_keys_at_its_default():
    from reinv_bench.engine.plan import Request, expand

    reg = load()
    plain = expand(
        Request(["gmi"], ["atat", "loft", "rolss", "trapmid"], archs=["resnet8"], budget="smoke"), reg
    )
    said = expand(
        Request(
            ["gmi"],
            ["atat[select=last]", "loft[select=last]", "rolss[select=last]", "trapmid[trapls=1]"],
            archs=["resnet8"],
            budget="smoke",
        ),
        reg,
    )
    assert sorted(plain.steps) == sorted(said.steps)
    other = expand(Request(["gmi"], ["atat[select=best_val_loss]"], archs=["resnet8"], budget="smoke"), reg)
    targets = [s for s in other.steps.values() if s.kind == "target" and "atat" in s.label]
    assert targets and all(s.spec["recipe"]["select"] == "best_val_loss" for s in targets)


def test_best_val_loss_trains_a_target_through_the_step(registry):
    """The step trains on 80 % and reports the test accuracy of the kept weights."""
    m = _train(registry, TRAIN, 3, "best_val_loss")
    assert 0 <= accuracy(m, TRAIN, CPU) <= 1
    with pytest.raises(ValueError, match="at least 2 training images"):
        _train(registry, Split(TRAIN.x[:1], TRAIN.y[:1]), 1, "best_val_loss")
