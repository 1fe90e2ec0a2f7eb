"""Issue 19, natural accuracy like for like: ``TrainRecipe.select`` keeps the last epoch (default)
or, as the official training scripts, the epoch with the best test accuracy (``best_test``)."""

from __future__ import annotations

import pytest
import torch

from reinv_bench.api import ConfigError, Defense, Split, TrainRecipe
from reinv_bench.engine.train import accuracy, train_classifier

CPU = torch.device("cpu")


def data(seed: int, n: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 1, 4, 4, generator=g) * 0.8 + y.view(-1, 1, 1, 1).float() * 0.3
    return Split(x, y)


def model(registry):
    torch.manual_seed(0)
    return registry.get("architecture", "tiny").build(3, (1, 4, 4))


TRAIN, TEST = data(0, 48), data(1, 30)


def trained(registry, epochs: int, select: str = "last"):
    m = model(registry)
    recipe = TrainRecipe(epochs=epochs, batch_size=8, optimizer="sgd", lr=0.2, select=select)
    train_classifier(m, TRAIN, recipe, Defense(), device=CPU, seed=0, test=TEST)
    return m


def official_best(states_and_accs):
    """Knowledge-Enriched-DMI ``engine.py::train_reg`` (transcribed): after each epoch
    ``if test_acc > best_ACC: best_ACC = test_acc; best_model = deepcopy(model)``, best_ACC from 0."""
    best_ACC, best_model = 0.0, None
    for state, test_acc in states_and_accs:
        if test_acc > best_ACC:
            best_ACC = test_acc
            best_model = state
    return best_model, best_ACC


def test_best_test_keeps_the_official_epoch(registry):
    epochs = 6
    per_epoch = []  # the weights after epoch k: a run of k epochs (same seed, no schedule: same steps)
    for k in range(1, epochs + 1):
        m = trained(registry, k)
        per_epoch.append(({n: v.clone() for n, v in m.state_dict().items()}, accuracy(m, TEST, CPU)))
    accs = [a for _, a in per_epoch]
    assert len(set(accs)) > 1 and accs.index(max(accs)) != epochs - 1, accs  # the case where it matters
    want, best = official_best(per_epoch)
    got = trained(registry, epochs, "best_test")
    assert accuracy(got, TEST, CPU) == best == max(accs)
    for n, v in got.state_dict().items():
        assert torch.equal(v, want[n]), n
    last = trained(registry, epochs)  # the default: the last epoch, whatever the test accuracy
    assert all(torch.equal(v, per_epoch[-1][0][n]) for n, v in last.state_dict().items())


def test_select_is_checked_and_keeps_old_step_keys():
    from reinv_bench.engine.recipes import validate

    assert validate({"target": {"select": "best_test"}}) == {"target": {"select": "best_test"}}
    with pytest.raises(ConfigError, match="select='best': must be one of 'last', 'best_test'"):
        validate({"target": {"select": "best"}})
    assert "select" not in TrainRecipe(epochs=1).spec()  # keys of steps stored before it are kept
    assert TrainRecipe(epochs=1, select="best_test").spec()["select"] == "best_test"
    with pytest.raises(ValueError, match="needs the test split"):
        train_classifier(
            torch.nn.Linear(1, 1),
            TRAIN,
            TrainRecipe(epochs=1, select="best_test"),
            Defense(),
            device=CPU,
            seed=0,
        )
