"""Planted canaries (``--canaries K``, issue 29 item 5): canary targets of their own keys, trained
on K identities replaced by an attack prior's samples; recovery measured against the planted
image; an attack that misses them on the undefended target flagged broken; one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import reinv_bench
from reinv_bench.api import ConfigError, Inversion, Split, hookimpl
from reinv_bench.engine import canaries
from reinv_bench.engine.plan import Request, expand

sys.path.insert(0, str(Path(__file__).parent))
from conftest import MeanAttack  # noqa: E402


class BlankAttack(MeanAttack):
    """An attack that cannot find anything: a black image for every class."""

    name = "blankimg"

    def invert(self, ctx, priors, classes):
        shape = priors["blankimg"]["mean"].shape
        return Inversion(-torch.ones(len(classes), *shape), torch.tensor(classes), {})


@hookimpl
def register_attacks():
    return [BlankAttack]


@pytest.fixture(scope="module")
def reg():
    import conftest
    import test_worst_case

    from reinv_bench.registry.lookup import load

    return load(extra=(conftest, test_worst_case, sys.modules[__name__]))


def _req(attacks=("noisyimg", "meanimg", "blankimg"), defenses=("none",), canaries=2, **kw):
    return Request(
        list(attacks),
        list(defenses),
        archs=["tiny"],
        eval_arch="tiny",
        budget="smoke",
        metrics=["attack_acc"],
        canaries=canaries,
        **kw,
    )


def _expand(reg, req):
    return expand(req, reg, data_digest=lambda s: "d")


def test_canary_targets_have_their_own_keys_and_protocol(reg):
    plain = _expand(reg, _req(canaries=0))
    plan = _expand(reg, _req())
    assert [c.cell_id for c in plan.cells[:3]] == [c.cell_id for c in plain.cells]  # ordinary cells as before
    canary = plan.cells[3:]
    assert len(canary) == 3 and all(c.labels.protocol.endswith(", 2 canaries") for c in canary)
    target = plan.steps[canary[0].target_key]
    assert target.key != plan.cells[0].target_key
    spec = target.spec["canaries"]
    assert spec["k"] == 2 and spec["attack"]["name"] == "noisyimg"  # the first attack that can make them
    assert set(target.deps) >= set(spec["priors"].values())
    assert plan.steps[next(iter(spec["priors"].values()))].kind == "prior"
    assert canary[0].config["canaries"] == {"k": 2, "jitter": canaries.JITTER}


def test_canaries_without_a_prior_that_makes_them_is_one_line(reg, invoke, tmp_path):
    with pytest.raises(ConfigError, match="no attack of the run .* generator prior"):
        _expand(reg, _req(attacks=("meanimg",)))
    with pytest.raises(ConfigError, match="give 1 to 10"):
        _expand(reg, _req(canaries=11))
    res = invoke(
        "run",
        "-a",
        "meanimg",
        "-d",
        "none",
        "--arch",
        "tiny",
        "--eval-arch",
        "tiny",
        "--budget",
        "smoke",
        "--canaries",
        "2",
        "--workdir",
        tmp_path,
        "--dry-run",
        registry=reg,
    )
    assert res.exit_code != 0 and "--canaries on scenario mnist" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_which_attacks_make_canaries(registry):
    from reinv_bench.registry.components import resolve_attack

    def makes(text):
        return canaries.makes_canaries(resolve_attack(registry, text, "smoke")[2])

    assert makes("gmi") and makes("brepmi") and makes("lomma+gmi")
    assert not makes("kedmi") and not makes("meanimg")


def test_gmi_canary_images_are_its_generators_samples(registry):
    from reinv_attacks._gan import Generator
    from reinv_bench.registry.components import resolve_attack

    gmi = resolve_attack(registry, "gmi", "smoke")[2]
    torch.manual_seed(0)
    G = Generator((1, 32, 32), gmi.z_dim, gmi.config.gan_dim)
    prior = {"gmi-gan": {"G": G.state_dict()}}
    x = gmi.canary_images(prior, 3, 7, (1, 32, 32))
    assert x.shape == (3, 1, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(x, gmi.canary_images(prior, 3, 7, (1, 32, 32)))
    z = torch.randn(3, gmi.z_dim, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert torch.allclose(x, G.eval()(z).clamp(-1, 1))


def test_plant_replaces_every_image_of_the_canary_classes_only():
    class Prior:
        name = "p"

        def canary_images(self, priors, n, seed, shape):
            return torch.linspace(-0.5, 0.5, n)[:, None, None, None].expand(n, *shape).clone()

    y = torch.arange(5).repeat(4)
    train = Split(torch.zeros(20, 1, 4, 4), y)
    spec = {"k": 2, "jitter": 0.05, "seed": 1}
    planted, record = canaries.plant(train, spec, Prior(), {}, list(range(5)), (1, 4, 4))
    chosen = record["classes"].tolist()
    assert chosen == canaries.choose(list(range(5)), 2, 1) and len(chosen) == 2
    for c in range(5):
        idx = y == c
        if c in chosen:
            img = record["images"][chosen.index(c)]
            diff = planted.x[idx] - img
            assert 0 < diff.abs().max() < 0.3 and diff.std() == pytest.approx(0.05, abs=0.02)
        else:
            assert torch.equal(planted.x[idx], train.x[idx])
    assert record["ref"].shape == (2, canaries.REFERENCE)
    assert torch.equal(train.x, torch.zeros(20, 1, 4, 4))  # the scenario's data untouched


@pytest.fixture(scope="module")
def ran(reg, tmp_path_factory):
    work = tmp_path_factory.mktemp("canaries")
    res = reinv_bench.run(
        _req(defenses=("none", "re")), registry=reg, workdir=work, device="cpu", check=False
    )
    return work, res


def test_recovery_is_measured_and_a_blind_attack_is_flagged_broken(ran):
    _, res = ran
    rows = {(r.protocol.endswith("canaries"), r.defense, r.attack): r for r in res.rows}
    assert all(r.status == "ok" for r in rows.values())
    blank, mean = rows[(True, "none", "blankimg")], rows[(True, "none", "meanimg")]
    assert blank.notes["canary"].startswith(canaries.BROKEN)
    assert blank.metrics["canary_recovered"] == 0.0
    assert not mean.notes["canary"].startswith(canaries.BROKEN)
    assert mean.metrics["canary_dist"] < blank.metrics["canary_dist"]
    assert "canary_acc" in mean.metrics
    assert (
        not rows[(True, "re", "blankimg")].notes["canary"].startswith(canaries.BROKEN)
    )  # defended: a number
    assert "canary_dist" not in rows[(False, "none", "meanimg")].metrics  # ordinary rows: no canaries


def test_the_defense_view_flags_the_broken_attack(ran, reg, invoke):
    work, _ = ran
    out = invoke(
        "leaderboard", "--view", "defenses", "--format", "md", "--workdir", work, registry=reg, ok=True
    )
    ordinary = [line for line in out.output.splitlines() if "canaries]" not in line and "| none " in line]
    assert ordinary and "blankimg: failed the canary test (broken)" in ordinary[0]
    assert "meanimg: failed" not in out.output


def test_plant_on_images_read_from_files_replaces_them_batch_by_batch(tmp_path):
    import numpy as np
    from PIL import Image

    from reinv_bench.api import ImageFiles

    paths = []
    for i in range(6):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(np.full((4, 4, 3), 40 * i, np.uint8)).save(paths[-1])
    files = ImageFiles(paths, lambda p: np.array(Image.open(p)), (3, 4, 4))
    y = torch.tensor([0, 1, 2, 0, 1, 2])

    class Prior:
        name = "p"

        def canary_images(self, priors, n, seed, shape):
            return torch.full((n, *shape), 0.25)

    spec = {"k": 1, "jitter": 0.0, "seed": 0}
    planted, record = canaries.plant(Split(files, y), spec, Prior(), {}, [0, 1, 2], (3, 4, 4))
    (c,) = record["classes"].tolist()
    x = planted.x[torch.arange(6)]
    for i in range(6):
        expected = torch.full((3, 4, 4), 0.25) if y[i] == c else files[[i]].to("cpu")[0]
        assert torch.allclose(x[i], expected)
