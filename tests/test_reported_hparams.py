"""Issue 30, item 4: ``leaderboard --reported`` pairs like with like on the attack's own
hyperparameters (optimiser, iterations or epochs), on which classes were attacked, and, for a
best-epoch published accuracy, on the target's ``select``; AlignMI is credited to Peng et al."""

from __future__ import annotations

from test_reported_setting import M64, M224, attached, row, sel

from reinv_bench.api import ConfigError, Reported
from reinv_bench.engine.loaders import paper_label
from reinv_bench.engine.plan import resolve_attack
from reinv_bench.engine.runner import attacked
from reinv_bench.registry.lookup import load
from reinv_bench.results.reported import class_ranges, reported_rows

ALIGN = "AlignMI paper, baseline rows (code: AlanPeng0897/AlignMI)"
ALIGN_PPA = "AlignMI paper (code: AlanPeng0897/AlignMI)"


def test_attacks_state_their_optimiser_and_iterations():
    reg = load()

    def opt(text):
        return resolve_attack(reg, text, "paper")[2].optimisation()

    assert opt("lomma+kedmi") == {"optimizer": "adam", "iterations": 2400}
    assert opt("lomma[iters=200]+kedmi[optimizer=sgd,lr=0.01]") == {"optimizer": "sgd", "iterations": 200}
    assert opt("lomma[iters=200]+align+kedmi[optimizer=sgd]") == {"optimizer": "sgd", "iterations": 200}
    assert opt("ppa") == {"optimizer": "adam", "iterations": 50}
    assert opt("ppa[epochs=70]") == {"optimizer": "adam", "iterations": 70}
    assert opt("gmi")["optimizer"] == "sgd" and opt("plgmi") == {"optimizer": "adam", "iterations": 600}
    assert "optimizer" not in opt("brepmi")  # no optimiser of its own


def test_a_stored_row_records_the_hyperparameters_and_which_classes():
    class Outcomes:
        classes = [0, 1, 2, 5] * 3

        def __len__(self):
            return len(self.classes)

    reg = load()
    _, desc, _ = resolve_attack(reg, "lomma[iters=200]+kedmi[optimizer=sgd]", "paper")
    got = attacked(reg, {"attack": desc}, Outcomes())
    assert got["attacked"]["class_ids"] == "0-2,5" and got["attacked"]["classes"] == 4
    assert (got["attacked"]["optimizer"], got["attacked"]["iterations"]) == ("sgd", 200)
    assert class_ranges([9, 3, 4, 5, 0]) == "0,3-5,9" and class_ranges([7]) == "7"


def test_the_project_default_lomma_kedmi_is_not_paired_with_alignmis_sgd_200():
    ours = row("celeba64", "vgg16", "lomma+kedmi", sel(100, 100, "none", "adam", 2400), "ir50_112", M64)
    beside, unmatched, _ = attached([ours])
    assert ("vgg16", "lomma+kedmi", ALIGN) not in beside
    (miss,) = [r for r in unmatched if r["scenario"] == "celeba64" and r["arch"] == "vgg16" and r["attack"]]
    assert miss["differs"].endswith("optimizer adam (published sgd), iterations 2400 (published 200)")
    # the like-for-like run, written with its parameters, sits beside it
    label = "lomma[iters=200]+kedmi[optimizer=sgd,lr=0.01,std_offset=5,clamp=1]"
    like = row("celeba64", "vgg16", label, sel(100, 100), "ir50_112", M64)
    beside, _, _ = attached([like])
    assert ("vgg16", label, ALIGN) in beside


def test_alignmi_ppa_ran_70_epochs_and_the_project_default_50_is_not_paired():
    ours = row(
        "facescrub224-ffhq", "resnet18", "ppa", sel(100, 100, "none", "adam", 50), "inception_v3", M224
    )
    beside, unmatched, _ = attached([ours])
    assert ("resnet18", "ppa", ALIGN_PPA) not in beside
    (miss,) = [r for r in unmatched if r["arch"] == "resnet18" and r["scenario"] == "facescrub224-ffhq"]
    assert miss["differs"].endswith("iterations 50 (published 70)")


def test_same_number_of_other_classes_is_not_paired():
    other = sel(100, 100)
    other["class_ids"] = "100-199"
    beside, unmatched, _ = attached([row("celeba64", "vgg16", "lomma+kedmi", other, "ir50_112", M64)])
    assert ("vgg16", "lomma+kedmi", ALIGN) not in beside
    assert any("class ids 100-199 (published 0-99)" in (r.get("differs") or "") for r in unmatched)


def test_best_epoch_checkpoint_accuracies_need_select_best_test():
    kept_last = row("celeba64", "vgg16", "lomma+kedmi", sel(100, 100), "ir50_112", M64)
    kept_last.config["target_recipe"] = {}  # spec() leaves out the default select="last"
    beside, unmatched, _ = attached([kept_last])
    assert ("vgg16", "lomma+kedmi", "VGG16_88.26.tar") not in beside
    (miss,) = [r for r in unmatched if r["source"] == "VGG16_88.26.tar"]
    assert miss["differs"].endswith("select last (published best_test)")
    beside, _, _ = attached([row("celeba64", "vgg16", "lomma+kedmi", sel(100, 100), "ir50_112", M64)])
    assert ("vgg16", "lomma+kedmi", "VGG16_88.26.tar") in beside
    checkpoints = [
        r
        for r in reported_rows(load(), paper_label(load()))
        if r["source"].endswith(".tar") and r["paper"].startswith("official")
    ]
    assert len(checkpoints) == 4 and all(r["select"] == "best_test" for r in checkpoints)


def test_alignmi_is_credited_to_peng_et_al():
    alignmi = [r for r in reported_rows(load(), paper_label(load())) if r["paper"].startswith("AlignMI")]
    assert alignmi and all(r["paper"] == "AlignMI (Peng et al., NeurIPS 2025)" for r in alignmi)
    assert not any("tmlr-group" in r["source"] for r in alignmi)


def test_reported_refuses_an_unknown_select():
    import pytest

    with pytest.raises(ConfigError, match="select 'best'"):
        Reported(paper="p", setting="s", metrics={"natural_acc": 0.5}, source="x", select="best")
