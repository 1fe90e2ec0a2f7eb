"""Issue 19, published numbers like for like: ``leaderboard --reported`` places a published number
beside a measured group only when the attack's setting matches (identities attacked, samples per
class, selection, evaluation model), and the protocol card reads each attack's selection."""

from __future__ import annotations

import pytest

from reinv_bench.api import ConfigError, Reported
from reinv_bench.engine.loaders import paper_label
from reinv_bench.registry.lookup import load
from reinv_bench.results.aggregate import aggregate, declared_columns, sort_entries
from reinv_bench.results.reported import attach_reported, reported_rows, unmatched_rows
from reinv_bench.results.store import COLUMNS, Row
from reinv_bench.views.protocol import card

M64 = {"natural_acc": 0.85, "attack_acc": 0.5, "attack_acc5": 0.8, "knn_dist": 1300.0}
M224 = {"natural_acc": 0.9, "attack_acc": 0.7, "attack_acc5": 0.9, "facenet_dist": 0.8}


def row(scenario, arch, attack, attacked, eval_arch, metrics, defense="none", seed=0):
    r = dict.fromkeys(COLUMNS)
    r.update(
        cell_id=f"{scenario}-{arch}-{attack}-{defense}-{seed}-{attacked}",
        scenario=scenario,
        protocol="64px" if scenario.startswith("celeba64") else "224px",
        arch=arch,
        defense=defense,
        attack=attack,
        threat_model="white-box",
        seed=seed,
        budget="paper",
        status="ok",
        config={
            "defense": defense,
            "eval": {"arch": eval_arch},
            "target_recipe": {"select": "best_test"},  # as the released checkpoints
            **({"attacked": attacked} if attacked else {}),
        },
        metrics=dict(metrics),
        notes={},
        data_digest="d" * 16,
        reinv_version="0.1.0",
        created_at="2025-01-01T00:00:00+00:00",
    )
    return Row(**r)


def attached(rows):
    cols = declared_columns(load())
    entries = sort_entries(aggregate(rows, columns=cols), columns=cols)
    merged, unmatched = attach_reported(entries, reported_rows(load(), paper_label(load())))
    beside = {(e.arch, e.attack, e.reported.source) for e in merged if e.reported is not None}
    return beside, unmatched, cols


def sel(n_classes, per_class, selection="none", optimizer="sgd", iterations=200):
    """A row's ``attacked``: classes 0..n-1; AlignMI's KEDMI(LOMMA) optimiser by default."""
    return {
        "classes": n_classes,
        "class_ids": f"0-{n_classes - 1}",
        "per_class": per_class,
        "reconstructions": n_classes * per_class,
        "selection": selection,
        "optimizer": optimizer,
        "iterations": iterations,
    }


ALIGN = "AlignMI paper, baseline rows (code: AlanPeng0897/AlignMI)"


def test_alignmi_64px_numbers_sit_only_beside_100_identities_x_100():
    same = row("celeba64", "vgg16", "lomma+kedmi", sel(100, 100), "ir50_112", M64)
    beside, _, _ = attached([same])
    assert ("vgg16", "lomma+kedmi", ALIGN) in beside and ("vgg16", "lomma+kedmi", "VGG16_88.26.tar") in beside
    # the scenario's own protocol: 300 identities x 5 reconstructions; natural accuracy still matches
    ours = row("celeba64", "vgg16", "lomma+kedmi", sel(300, 5), "ir50_112", M64)
    beside, unmatched, cols = attached([ours])
    assert ("vgg16", "lomma+kedmi", ALIGN) not in beside
    assert ("vgg16", "lomma+kedmi", "VGG16_88.26.tar") in beside  # no attack: no attack setting stated
    (miss,) = [r for r in unmatched if r["scenario"] == "celeba64" and r["arch"] == "vgg16" and r["attack"]]
    assert miss["differs"] == (
        "vgg16 lomma+kedmi vs none seed 0: classes 300 (published 100), class ids 0-299 (published 0-99), "
        "per class 5 (published 100)"
    )
    _, table = unmatched_rows([miss], cols)
    assert "measured here, another setting: vgg16 lomma+kedmi" in table[0][0]
    # another evaluation model, and a row that recorded nothing of its setting
    other_eval = row("celeba64", "vgg16", "lomma+kedmi", sel(100, 100), "vgg16", M64)
    unrecorded = row("celeba64", "facenet64", "lomma+kedmi", None, "ir50_112", M64)
    beside, unmatched, _ = attached([other_eval, unrecorded])
    assert not any(src == ALIGN for *_, src in beside)
    differs = {r["arch"]: r["differs"] for r in unmatched if r.get("differs")}
    assert differs["vgg16"].endswith("eval arch vgg16 (published ir50_112)")
    assert "classes not recorded (published 100)" in differs["facenet64"]


def test_alignmi_ppa_numbers_need_no_final_selection():
    official = row(
        "facescrub224-ffhq",
        "resnet18",
        "ppa",
        sel(530, 50, "final selection: 50 of 200", "adam", 70),
        "inception_v3",
        M224,
    )
    beside, unmatched, _ = attached([official])
    assert not any(a == "ppa" for _, a, _ in beside)
    (miss,) = [r for r in unmatched if r["arch"] == "resnet18" and r["scenario"] == "facescrub224-ffhq"]
    assert miss["differs"].endswith(
        "classes 530 (published 100), class ids 0-529 (published 0-99), per class 50 (published 100), "
        "selection final (published none)"
    )
    like = row(
        "facescrub224-ffhq", "resnet18", "ppa", sel(100, 100, "none", "adam", 70), "inception_v3", M224
    )
    beside, _, _ = attached([like])
    assert ("resnet18", "ppa", "AlignMI paper (code: AlanPeng0897/AlignMI)") in beside


def test_reported_refuses_an_unknown_selection():
    with pytest.raises(ConfigError, match="selection 'some'"):
        Reported(paper="p", setting="s", metrics={"attack_acc": 0.5}, source="x", selection="some")


def test_ppa_states_its_final_selection_and_the_card_reads_it():
    from reinv_attacks.ppa import PPA

    assert PPA(None, "paper").selection() == (
        "final selection: the 50 of 200 optimised candidates per class with the highest mean target "
        "confidence over 100 random transforms"
    )
    assert PPA({"candidates": 100, "final": 100}).selection() is None  # keeps every candidate
    from reinv_attacks.gmi import GMI

    assert GMI(None).selection() is None
    text = " ".join(card(load(), "facescrub224-ffhq", load_data=False).split())
    # every selecting attack is named (auto, the worst-case ensemble, selects too)
    assert "ppa: final selection: the 50 of 200 optimised candidates" in text
    assert "auto: ensemble: per identity" in text
    assert "every other attack: none, every reconstruction it optimised is evaluated" in text
    assert "none is selected" not in text.split("Metrics run by default")[0]
