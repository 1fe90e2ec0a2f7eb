"""The worst-case ensemble (``--attack auto``, issue 29 item 3): members planned as cells of their
own, a pool step over their stored reconstructions keeping candidates by the target's score only,
the permuted-identity null, "broken by", and one-line errors."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import reinv_bench
from reinv_bench.api import ConfigError, Inversion, Param, Reconstructions, hookimpl
from reinv_bench.engine.plan import Request, expand
from reinv_bench.results import ensemble

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from conftest import MeanAttack  # noqa: E402


class NoisyAttack(MeanAttack):
    """A second cheap member: the mean image with seeded noise, two candidates per class (it
    makes other candidates than meanimg, some better, some worse for the target)."""

    name = "noisyimg"
    params = {**MeanAttack.params, "scale": Param(0.5, "noise std")}

    def invert(self, ctx, priors, classes):
        mean = priors["noisyimg"]["mean"]
        gen = torch.Generator().manual_seed(ctx.seed)
        y = torch.tensor(classes * 2)
        x = mean.expand(len(y), *mean.shape) + self.config.scale * torch.randn(
            len(y), *mean.shape, generator=gen
        )
        return Inversion(x.clamp(-1, 1), y, {})

    def canary_images(self, priors, n, seed, image_shape):
        mean = priors["noisyimg"]["mean"]
        gen = torch.Generator().manual_seed(seed)
        return (mean + self.config.scale * torch.randn(n, *image_shape, generator=gen)).clamp(-1, 1)


@hookimpl
def register_attacks():
    return [NoisyAttack]


@pytest.fixture
def reg():
    import conftest

    from reinv_bench.registry.lookup import load

    return load(extra=(conftest, sys.modules[__name__]))


AUTO = "auto[members=meanimg/noisyimg]"


def _req(attacks=(AUTO,), defenses=("none",), **kw):
    return Request(
        list(attacks),
        list(defenses),
        archs=["tiny"],
        eval_arch="tiny",
        budget="smoke",
        metrics=["attack_acc"],
        **kw,
    )


def _expand(reg, req):
    return expand(req, reg, data_digest=lambda s: "d")


def test_member_lists_are_data_with_the_issues_digit_ensemble():
    from reinv_attacks.auto import MEMBERS
    from reinv_bench.registry import spec

    digits = MEMBERS[("white-box", "mnist")]
    for name in ("gmi", "kedmi", "plgmi", "lomma+gmi", "brepmi", "rlbmi", "transfer+gmi"):
        assert name in digits
    assert {"adaptive+gmi", "adaptive+kedmi", "adaptive+plgmi", "adaptive+lomma+gmi"} <= set(digits)
    for members in MEMBERS.values():
        for m in members:
            spec.parse(m)  # every member is a valid attack spec


def test_auto_plans_each_member_as_its_own_cell_and_one_pool_step(reg):
    plan = _expand(reg, _req([AUTO, "meanimg"]))
    attacks = [c.labels.attack for c in plan.cells]
    assert attacks == ["meanimg", "noisyimg", AUTO]  # meanimg once: the explicit one is the member
    alone = _expand(reg, _req(["meanimg"]))
    assert plan.cells[0].cell_id == alone.cells[0].cell_id  # a member's row is the ordinary row
    ens = plan.cells[2]
    pool = plan.steps[ens.invert_key]
    assert pool.kind == "pool" and ens.prior_keys == []
    assert set(pool.spec["members"].values()) == {plan.cells[0].invert_key, plan.cells[1].invert_key}
    assert set(pool.deps) == {ens.target_key, plan.cells[0].invert_key, plan.cells[1].invert_key}
    assert [m["name"] for m in ens.config["attack"]["members"]] == ["meanimg", "noisyimg"]
    assert sum(s.kind == "invert" for s in plan.steps.values()) == 2  # no member is inverted twice


def test_a_member_not_installed_is_left_out_with_a_note(reg):
    plan = _expand(reg, _req(["auto[members=meanimg/uninstalled+meanimg]"]))
    assert any("uninstalled+meanimg" in n and "left out" in n for n in plan.notes)
    ens = plan.cells[-1]
    assert list(plan.steps[ens.invert_key].spec["members"]) == ["meanimg"]
    with pytest.raises(ConfigError, match="none of its members"):
        _expand(reg, _req(["auto[members=uninstalled+meanimg]"]))


def test_auto_for_a_threat_model_without_members_is_one_line(reg, monkeypatch, invoke, tmp_path):
    from reinv_attacks import auto

    monkeypatch.delitem(auto.MEMBERS, ("label-only", "*"))
    with pytest.raises(ConfigError, match="no ensemble for threat model label-only on scenario mnist"):
        _expand(reg, _req(["auto[threat=label-only]"]))
    res = invoke(
        "run",
        "-a",
        "auto[threat=label-only]",
        "-d",
        "none",
        "--arch",
        "tiny",
        "--eval-arch",
        "tiny",
        "--budget",
        "smoke",
        "--workdir",
        tmp_path,
        "--dry-run",
        registry=reg,
    )
    assert res.exit_code != 0
    assert "no ensemble for threat model label-only" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_derangement_has_no_fixed_point():
    for n in (2, 3, 10, 57):
        perm = ensemble.derangement(list(range(n)), seed=n)
        assert sorted(perm) == sorted(perm.values()) == list(range(n))
        assert all(perm[c] != c for c in perm)


class _Bright(torch.nn.Module):
    """A target whose logit of class c is c times the image's mean: brighter images are more c."""

    def forward(self, x):
        m = x.flatten(1).mean(1, keepdim=True)
        return m * torch.arange(3.0)[None] - 0.5 * torch.arange(3.0)[None] ** 2 * 0.1


def test_pool_keeps_by_the_targets_score_only_and_reuses_stored_images():
    classes = [0, 1, 2]
    g = torch.Generator().manual_seed(0)
    a = Inversion(torch.rand(6, 1, 2, 2, generator=g) * 2 - 1, torch.tensor(classes * 2))
    b = Inversion(torch.rand(3, 1, 2, 2, generator=g) * 2 - 1, torch.tensor(classes))
    members = {"a": Reconstructions.of(a), "b": Reconstructions.of(b)}
    target = _Bright()
    obj, meta = ensemble.pool(members, target, "white-box", classes, 0, seed=3, device="cpu")
    assert obj["info"]["keep"] == 1 and meta == {"candidates": 9, "kept": 3}  # b makes 1 per class
    pool_x = torch.cat([a.images, b.images])
    pool_y = torch.cat([a.labels, b.labels])
    pool_src = ["a"] * 6 + ["b"] * 3
    logp = target(pool_x).log_softmax(1)
    perm = ensemble.derangement(classes, 3)
    for i, c in enumerate(classes):
        idx = [j for j in range(9) if pool_y[j] == c]
        best = max(idx, key=lambda j: logp[j, c])
        assert torch.equal(obj["images"][i], pool_x[best])  # a stored candidate, byte for byte
        assert obj["info"]["sources"][i] == pool_src[best]
        null = max(idx, key=lambda j: logp[j, perm[c]])  # among c's candidates, by pi(c)'s score
        assert torch.equal(obj["null"]["images"][i], pool_x[null])
        assert int(obj["null"]["labels"][i]) == perm[c] != c
    assert obj["labels"].tolist() == classes


def test_pool_label_only_scores_by_top1_agreement():
    x = torch.tensor([[[[0.9]]], [[[-0.9]]]])
    score = ensemble.attacker_score(
        lambda t: t.flatten(1).mean(1).gt(0).long(), "label-only", x, torch.tensor([1, 1]), "cpu"
    )
    assert score.tolist() == [1.0, 0.0]


def test_broken_by_names_the_member_with_most_successful_kept_candidates():
    text = ensemble.broken_by(["gmi", "kedmi", "gmi", "kedmi", "kedmi"], [1.0, 1.0, 0.0, 1.0, 0.0])
    assert text == "kedmi (2 of 3 successful kept candidates; gmi 1)"
    assert ensemble.leader(text) == "kedmi"
    none = ensemble.broken_by(["gmi", "gmi"], [0.0, 0.0])
    assert none.startswith("none") and ensemble.leader(none) is None


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    import conftest

    from reinv_bench.registry.lookup import load

    reg = load(extra=(conftest, sys.modules[__name__]))
    work = tmp_path_factory.mktemp("auto")
    res = reinv_bench.run(
        _req(defenses=("none", "re")), registry=reg, workdir=work, device="cpu", check=False
    )
    return reg, work, res


def test_run_stores_every_member_and_the_ensemble_with_its_null(ran):
    from reinv_bench.engine.artifacts import Artifacts

    reg, work, res = ran
    rows = {(r.defense, r.attack): r for r in res.rows}
    assert set(rows) == {(d, a) for d in ("none", "re") for a in ("meanimg", "noisyimg", AUTO)}
    assert all(r.status == "ok" for r in rows.values())
    ens = rows[("re", AUTO)]
    n = len(ens.outcomes)
    assert n == 10  # one kept per identity: meanimg makes one
    assert len(ens.outcomes.per_reconstruction["attack_acc" + ensemble.NULL]) == n
    assert ens.metrics["attack_acc" + ensemble.NULL] is not None
    sources = json.loads(ens.notes[ensemble.SOURCES])
    assert len(sources) == n and set(sources) <= {"meanimg", "noisyimg"}
    if ens.metrics["attack_acc"] > 0:  # the member with most successful kept candidates
        assert ensemble.leader(ens.notes[ensemble.BROKEN_BY]) in ("meanimg", "noisyimg")
    else:  # the smoke evaluation model may find no kept candidate a success: said so
        assert ens.notes[ensemble.BROKEN_BY].startswith("none (no kept candidate succeeded")
    assert ens.config["attacked"]["selection"].startswith("ensemble")
    # every kept candidate is one of its member's stored reconstructions
    art = Artifacts(work)
    kept = art.load(ens.artifacts["invert"])["images"]
    stored = torch.cat(
        [art.load(rows[("re", a)].artifacts["invert"])["images"] for a in ("meanimg", "noisyimg")]
    )
    for img in kept:
        assert any(torch.equal(img, s) for s in stored)


def test_a_second_run_reuses_everything(ran):
    reg, work, _ = ran
    again = reinv_bench.run(
        _req(defenses=("none", "re")), registry=reg, workdir=work, device="cpu", check=False
    )
    assert again.summary.ran == [] and again.summary.skipped_cells == 6


@pytest.mark.parametrize("name", ["adaptive-mnist", "adaptive-64px", "adaptive-224px"])
def test_adaptive_grids_parse_where_their_attacks_exist(reg, name):
    from pathlib import Path

    from reinv_bench.engine import grid
    from reinv_bench.registry import spec
    from reinv_bench.registry.components import resolve_attack, resolve_defense

    g = grid.load(Path(__file__).parent.parent / "benchmarks" / "grids" / f"{name}.toml")
    assert "auto" in g["attacks"]
    for text in g["defenses"]:
        resolve_defense(reg, text, g["budget"])
    here = [a for a in g["attacks"] if all(c.name in reg.names("attack") for c in spec.parse(a))]
    assert "auto" in here
    for text in here:
        resolve_attack(reg, text, g["budget"])


def test_adaptive_mnist_dry_run_plans_the_ensemble_and_canaries(reg, invoke, tmp_path):
    from pathlib import Path

    path = Path(__file__).parent.parent / "benchmarks" / "grids" / "adaptive-mnist.toml"
    res = invoke(
        "run",
        "--grid",
        path,
        "--budget",
        "smoke",
        "--seeds",
        "1",
        "-d",
        "none",
        "-d",
        "rolss",
        "--workdir",
        tmp_path,
        "--dry-run",
        registry=reg,
        ok=True,
    )
    assert "pool" in res.output and "left out of the ensemble" not in res.output  # every member installed
    # (gmi, kedmi, plgmi, lomma+gmi, brepmi, rlbmi, adaptive+ of gmi, kedmi, plgmi, lomma+gmi, transfer+gmi)
    # + auto, x 2 defenses x (ordinary, canary) targets
    assert "48 of 48 cell(s)" in res.output


def test_a_member_that_skips_identities_adds_nothing_to_their_pools():
    """BREP-MI reconstructs only the classes it found a first hit for: the others pool the rest."""
    a = Inversion(torch.zeros(6, 1, 2, 2), torch.tensor([0, 1, 2] * 2))
    b = Inversion(torch.tensor([[[[0.0, 5.0], [0.0, 0.0]]]]), torch.tensor([1]))  # class 1's logit high

    def pixels(x):  # a target whose logits are the first three pixels
        return x.flatten(1)[:, :3]

    obj, _ = ensemble.pool(
        {"a": Reconstructions.of(a), "b": Reconstructions.of(b)}, pixels, "white-box", [0, 1, 2], 0, 0, "cpu"
    )
    assert obj["labels"].tolist() == [0, 1, 2] and obj["info"]["sources"] == ["a", "b", "a"]
    with pytest.raises(ValueError, match=r"no member of the ensemble reconstructed classes \[3\]"):
        ensemble.pool(
            {"a": Reconstructions.of(a)}, lambda x: x.flatten(1), "white-box", [0, 1, 2, 3], 0, 0, "cpu"
        )


def test_the_ensembles_members_prerequisites_are_the_runs(reg):
    """`-a auto` alone on the 224-px faces needs PPA's StyleGAN weights: the checklist names them."""
    from reinv_bench.engine.prerequisites import missing_prerequisites

    def what(attack):
        req = Request([attack], ["none"], scenarios=["facescrub224-ffhq"], budget="paper")
        return {m.what for m in missing_prerequisites(req, reg, None, optional=False)}

    assert what("ppa") <= what("auto")
    assert any("for attack ppa" in w for w in what("ppa")) == any("for attack ppa" in w for w in what("auto"))


def test_one_identity_has_no_null():
    a = Inversion(torch.zeros(2, 1, 2, 2), torch.tensor([1, 1]))
    obj, _ = ensemble.pool(
        {"a": Reconstructions.of(a)}, lambda x: x.flatten(1), "white-box", [1], 0, 0, "cpu"
    )
    assert obj["null"] is None and obj["labels"].tolist() == [1, 1]
