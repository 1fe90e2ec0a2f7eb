"""Issue 19: judges. A store built here where the evaluation model and a judge disagree in known
ways: the confirmed accuracy, the evaluation model's false-positive rate, the judge's own rate,
the agreement of two evaluation models and their 95% intervals, each checked against a hand
computation; answers written into a stored row from outside a run (``store_verdicts``); the
plan and CLI of ``--judge`` and of several ``--eval-arch``; the verification judge."""

from __future__ import annotations

import pytest

from reinv_bench.api import Judge
from reinv_bench.registry.lookup import load
from reinv_bench.results.aggregate import aggregate, declared_columns, verdicts
from reinv_bench.results.judging import derive, store_verdicts, verdict_key
from reinv_bench.results.store import COLUMNS, Row, Store
from reinv_bench.views.tables import render, value_cell

COLS = declared_columns(load())
N = None

# three attacked classes, four reconstructions each. E: the evaluation model's success (attack_acc),
# J: the judge's answer (None: no answer), B: a second evaluation model's success
E = {0: [1, 1, 1, 1], 1: [1, 1, 0, 0], 2: [1, 0, 0, 0]}
J = {0: [1, 1, 0, N], 1: [0, 1, 1, 0], 2: [0, N, 1, 1]}
B = {0: [1, 1, 0, 1], 1: [1, 0, 0, 0], 2: [0, 0, 0, 1]}


def flat(pattern: dict[int, list]) -> list:
    return [None if v is None else float(v) for vs in pattern.values() for v in vs]


def row(defense: str, seed: int = 0, e=E, j=J, b=None, judge: str = "verification") -> dict:
    classes = [c for c, vs in e.items() for _ in vs]
    per = {"attack_acc": flat(e)}
    metrics = {"natural_acc": 0.9, "attack_acc": sum(flat(e)) / len(classes)}
    if j is not None:
        per[verdict_key(judge)] = flat(j)
        answered = [v for v in flat(j) if v is not None]
        metrics[verdict_key(judge)] = sum(answered) / len(answered) if answered else None
    if b is not None:
        per["attack_acc[resnet18]"] = flat(b)
        metrics["attack_acc[resnet18]"] = sum(flat(b)) / len(classes)
    r = dict.fromkeys(COLUMNS)
    r.update(
        cell_id=f"{defense}-{seed}",
        scenario="mnist",
        protocol="digits32",
        arch="cnn",
        defense=defense,
        attack="gmi",
        threat_model="white-box",
        seed=seed,
        budget="smoke",
        status="ok",
        config={"defense": [{"name": defense, "config": {}}], "metrics": {"attack_acc": 1}},
        notes={verdict_key(judge): "threshold 0.5 at FAR 1%"} if j is not None else {},
        timings={},
        device="cpu",
        metrics=metrics,
        data_digest="d" * 64,
        torch_version="2",
        reinv_version="0.1.0",
        created_at="2026-01-01T00:00:00+00:00",
        outcomes={
            "class": classes,
            "target_conf": [0.5] * len(classes),
            "per_reconstruction": per,
            "per_item": {},
        },
        artifacts=None,
    )
    return r


def stored(tmp_path, rows: list[dict]) -> list[Row]:
    store = Store(tmp_path / "results.db")
    for r in rows:
        store.put(r)
    return store.rows()


def entries(rows) -> dict:
    return {e.defense: e for e in aggregate(rows, columns=COLS)}


# With 3 attacked classes and one seed the class bootstrap draws 3 classes with replacement; a
# replicate's value is the ratio of the drawn classes' summed items to their counts, a weighted mean
# of the per-class ratios, so it lies between the smallest and the largest per-class ratio and
# reaches each when one class is drawn three times (probability 1/27 = 3.7% > 2.5%). The 95%
# percentile interval is therefore exactly [smallest, largest per-class ratio].


def test_confirmed_accuracy_false_positive_rate_and_intervals_by_hand(tmp_path):
    e = entries(stored(tmp_path, [row("none")]))["none"]
    key = "verification"
    # confirmed (E yes and J yes, over answered): class 0: 1,1,0,- = 2/3; class 1: 0,1,0,0 = 1/4;
    # class 2: 0,-,0,0 = 0/3; overall (2+1+0)/(3+4+3)
    assert e[f"confirmed_acc[{key}]"] == pytest.approx(3 / 10)
    assert e[f"confirmed_acc[{key}]_lo"] == pytest.approx(0.0)
    assert e[f"confirmed_acc[{key}]_hi"] == pytest.approx(2 / 3)
    # the evaluation model's false-positive rate (over J no: E yes): class 0: rec 2, E 1 -> 1/1;
    # class 1: recs 0 and 3, E 1,0 -> 1/2; class 2: rec 0, E 1 -> 1/1; overall 3/4
    assert e[f"eval_fpr[{key}]"] == pytest.approx(3 / 4) == official_fpr(flat(J), flat(E))
    assert e[f"eval_fpr[{key}]_lo"] == pytest.approx(1 / 2)
    assert e[f"eval_fpr[{key}]_hi"] == pytest.approx(1.0)
    # the judge alone: yes over answered: 2/3, 2/4, 2/3 -> 6/10
    assert e[f"judge[{key}]"] == pytest.approx(0.6)
    assert (e[f"judge[{key}]_lo"], e[f"judge[{key}]_hi"]) == (pytest.approx(0.5), pytest.approx(2 / 3))
    assert e["attack_acc"] == pytest.approx(7 / 12)
    # the table shows them as percent with the interval; the judge's remark survives the merge
    assert value_cell(e, f"confirmed_acc[{key}]", COLS) == "30.0 [0.0, 66.7]"
    assert value_cell(e, f"eval_fpr[{key}]", COLS) == "75.0 [50.0, 100.0]"
    assert e.rows[0].notes[verdict_key(key)] == "threshold 0.5 at FAR 1%"
    md = render(list(entries(stored(tmp_path, [])).values()) or [e], "md", COLS)
    assert "Confirmed verification %" in md and "Eval FPR verification %" in md


def official_fpr(judge: list, evaluator: list) -> float:
    """hosytuyen/MI-Eval-MLLM @89010bc utility.py::compute_metrics, transcribed: the judge's labels
    are the truth (``label``), the evaluation model's the prediction; a reconstruction the judge
    did not answer has no row in its CSV (the inner merge drops it)."""
    pairs = [(int(j), int(p)) for j, p in zip(judge, evaluator) if j is not None]
    TN = sum(1 for label, prediction in pairs if label == 0 and prediction == 0)
    FP = sum(1 for label, prediction in pairs if label == 0 and prediction == 1)
    return FP / (FP + TN) if (FP + TN) > 0 else 0


def test_two_seeds_average_the_per_seed_rates(tmp_path):
    # seed 1: the judge says no to everything it answers -> confirmed 0; every success is a false positive
    j1 = {c: [None if v is None else 0 for v in vs] for c, vs in J.items()}
    e = entries(stored(tmp_path, [row("none", 0), row("none", 1, j=j1)]))["none"]
    # seed 1 false-positive rate (E over the answered): class 0: 1,1,1 (3/3); class 1: 1,1,0,0 (2/4);
    # class 2: 1,0,0 (1/3): 6/10
    assert official_fpr(flat(j1), flat(E)) == pytest.approx(6 / 10)
    assert e["confirmed_acc[verification]"] == pytest.approx((3 / 10 + 0.0) / 2)
    assert e["eval_fpr[verification]"] == pytest.approx((3 / 4 + 6 / 10) / 2)
    assert e["eval_fpr[verification]_lo"] <= 0.675 <= e["eval_fpr[verification]_hi"]


def test_a_defense_is_compared_on_the_confirmed_accuracy(tmp_path):
    # re: the evaluation model still says yes as often, but the judge never agrees: the confirmed
    # accuracy drops to 0 and the false-positive rate is the evaluation model's acceptance (6/10)
    no = {c: [None if v is None else 0 for v in vs] for c, vs in J.items()}
    es = entries(stored(tmp_path, [row("none"), row("re", j=no)]))
    re = es["re"]
    assert re["confirmed_acc[verification]"] == 0.0 and re["eval_fpr[verification]"] == pytest.approx(0.6)
    assert re["d_confirmed_acc[verification]"] == pytest.approx(-3 / 10)
    assert re["d_attack_acc"] == pytest.approx(0.0)
    # the verdicts read both: no change by the evaluation model, a drop by the judge
    lines = verdicts(list(es.values()), COLS)
    assert lines[0].startswith("re vs none: attack accuracy +0.0 points")
    assert lines[1].startswith("re vs none: confirmed verification -30.0 points (95% CI")


def test_no_answer_at_all_is_null_with_the_reason(tmp_path):
    none = {c: [None] * 4 for c in J}
    silent, failed = row("none", j=none), row("re", j=none)
    silent["notes"], failed["notes"] = {}, {verdict_key("verification"): "judge failed: OSError: no weights"}
    es = entries(stored(tmp_path, [silent, failed]))
    assert es["none"]["confirmed_acc[verification]"] is None and es["none"]["eval_fpr[verification]"] is None
    assert (
        es["none"]["confirmed_acc[verification]_note"]
        == "judge verification answered none of the reconstructions"
    )
    assert (
        es["re"]["eval_fpr[verification]_note"] == "judge failed: OSError: no weights"
    )  # the judge's reason


def test_two_evaluation_models_agreement_by_hand(tmp_path):
    e = entries(stored(tmp_path, [row("none", b=B)]))["none"]
    # agree E == B: class 0: 1,1,0,1 (3/4); class 1: 1,0,1,1 (3/4); class 2: 0,1,1,0 (2/4): 8/12
    assert e["eval_agree[resnet18]"] == pytest.approx(8 / 12)
    assert (e["eval_agree[resnet18]_lo"], e["eval_agree[resnet18]_hi"]) == (
        pytest.approx(0.5),
        pytest.approx(0.75),
    )
    assert e["attack_acc[resnet18]"] == pytest.approx(5 / 12)


def test_derive_leaves_rows_without_outcomes_alone():
    r = Row(**{**row("none"), "outcomes": None})
    assert derive(r, "attack_acc") is r


def test_store_verdicts_writes_answers_from_outside_into_the_row(tmp_path):
    store = Store(tmp_path / "results.db")
    store.put(row("none", j=None))
    answers = [a if a is None else bool(a) for a in flat(J)]
    new = store_verdicts(store, "none-0", "human", answers, note="2 raters")
    back = store.get("none-0")
    assert back.metrics["judge[human]"] == pytest.approx(0.6) == new.metrics["judge[human]"]
    assert back.outcomes.per_reconstruction["judge[human]"] == flat(J)
    assert back.config["metrics"]["judge[human]"] == 1 and back.notes["judge[human]"] == "2 raters"
    assert back.metrics["attack_acc"] == pytest.approx(7 / 12)  # nothing else changed
    e = entries(store.rows())["none"]
    assert e["confirmed_acc[human]"] == pytest.approx(3 / 10)
    with pytest.raises(ValueError, match="12 reconstructions"):
        store_verdicts(store, "none-0", "human", answers[:3])
    with pytest.raises(ValueError, match="not in the results database"):
        store_verdicts(store, "nope", "human", answers)


# --------------------------------------------------------------------------------------------
# the plan: --judge and several --eval-arch


def _plan(**kw):
    from reinv_bench.engine.plan import Request, expand

    return expand(Request(["gmi"], ["none"], budget="smoke", **kw), load(), data_digest=lambda name: "d" * 16)


def test_without_judges_or_further_evaluators_cells_keep_their_ids():
    from reinv_bench.engine.plan import digest

    (cell,) = _plan().cells
    versions = sorted(f"{m}@{load().get('metric', m).version}" for m in cell.metrics)
    assert cell.cell_id == digest({"invert": cell.invert_key, "eval": cell.eval_key, "metrics": versions})
    assert cell.judges == [] and cell.extra_evals == {}


def test_judges_and_further_evaluators_enter_the_plan():
    plan = _plan(
        judges=["verification", "verification[far=0.001]"], eval_arch="resnet8", extra_eval_archs=["cnn"]
    )
    (cell,) = plan.cells
    assert [j["label"] for j in cell.judges] == ["verification", "verification[far=0.001]"]
    public = plan.steps[cell.judges[0]["public"]]  # the digits' judge: a network trained on public data
    assert public.kind == "pretrain" and public.spec["arch"] == "resnet8"
    assert plan.steps[cell.extra_evals["cnn"]].kind == "eval" and cell.labels.protocol == "digits32"
    assert cell.cell_id != _plan().cells[0].cell_id


def test_bad_judges_are_refused_at_plan_time():
    from reinv_bench.api import ConfigError
    from reinv_bench.registry.lookup import UnknownNameError

    with pytest.raises(UnknownNameError, match="unknown judge 'verifcation'.*did you mean 'verification'"):
        _plan(judges=["verifcation"])
    with pytest.raises(ConfigError, match="far='2': out of range"):
        _plan(judges=["verification[far=2]"])
    with pytest.raises(ConfigError, match="outside a run"):
        _plan_with(External, judges=["outside"])


class External(Judge):
    """Answers from outside a run."""

    name = "outside"
    external = True


def _plan_with(judge_cls, **kw):
    import types

    from reinv_bench import hookimpl
    from reinv_bench.engine.plan import Request, expand

    mod = types.ModuleType("judges_under_test")
    mod.register_judges = hookimpl(lambda: [judge_cls])
    reg = load(extra=(mod,))
    return expand(Request(["gmi"], ["none"], budget="smoke", **kw), reg, data_digest=lambda n: "d" * 16)


# --------------------------------------------------------------------------------------------
# the verification judge


def test_verification_judge_uses_the_weights_entry_facenet_dist_registers():
    from reinv_judges.verification import FACENET

    assert FACENET == load().get("weights", "facenet-vggface2")


def test_templates_and_calibration_by_hand():
    import torch
    from reinv_judges.verification import calibrate, templates

    # class 0's training embeddings (2,0) and (0,1) -> normalised (1,0), (0,1) -> mean (.5,.5) -> (1,1)/sqrt2
    tmpl = templates(torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0, 1]), 3)
    r = 2**-0.5
    assert tmpl[0].tolist() == pytest.approx([r, r]) and tmpl[1].tolist() == pytest.approx([0.0, 1.0])
    assert tmpl[2].tolist() == [0.0, 0.0]  # no image: no template, no impostor pair against it
    # probes: class 0 at (1,0): genuine r, impostor (class 1) 0; class 1 at (r, r): genuine r, impostor 1;
    # class 1 at (0,1): genuine 1, impostor r; class 0 at (-1, 0): genuine -r, impostor 0
    probes = torch.tensor([[1.0, 0.0], [r, r], [0.0, 1.0], [-1.0, 0.0]])
    cal = calibrate(probes, torch.tensor([0, 1, 1, 0]), tmpl, far=0.25)
    # impostor scores 1, r, 0, 0: at FAR 25% one of the four may pass: the threshold is the second, r
    assert cal["threshold"].item() == pytest.approx(r)
    assert cal["far"].item() == pytest.approx(0.25) and int(cal["impostor"]) == 4
    # genuine r, r, 1, -r: only 1 lies above r
    assert cal["tar"].item() == pytest.approx(0.25) and int(cal["genuine"]) == 4
    assert calibrate(probes, torch.tensor([0, 1, 1, 0]), tmpl, far=0.0)["threshold"].item() == pytest.approx(
        1.0
    )


def test_verification_judge_answers_by_its_calibrated_threshold():
    import torch
    from reinv_judges.verification import Verification

    from reinv_bench.api import EvalContext, Inversion, ScenarioData, Split

    class Identity(torch.nn.Module):  # a "network" whose features are its input, flattened
        def features(self, x):
            return x.flatten(1)

    def split(points, labels):
        return Split(torch.tensor(points, dtype=torch.float32)[:, None, None, :], torch.tensor(labels))

    scenario = load().get("scenario", "mnist")
    data = ScenarioData(
        private_train=split([[1, 0], [0, 1]], [0, 1]),
        private_test=split([[1, 0.1], [0.1, 1], [1, 0.2], [0.2, 1]], [0, 1, 0, 1]),
        public=split([[0, 0]], [0]),
        eval_train=split([[1, 0]], [0]),
        eval_test=split([[1, 0]], [0]),
        digest="x",
        source="test",
        pretrain=split([[0.0, 0.0]], [0]),  # centre 0: the embeddings as they are
    )
    recon = Inversion(torch.tensor([[1, 0.0], [0, 1.0], [0, 1.0]])[:, None, None, :], torch.tensor([0, 0, 1]))
    ctx = EvalContext(scenario, data, recon, None, None, torch.device("cpu"), public_model=Identity())
    v = Verification({"far": 0.01}).judge(ctx)  # 1% of 4 impostor pairs: none may pass
    # impostor cosines of the test probes are at most 0.2/sqrt(1.04) = 0.196: every genuine pair passes
    assert v.answers == [True, False, True]
    assert "TAR 1.0000 (4 genuine pairs)" in v.note and "FAR 0.0000 (4 impostor pairs)" in v.note


# --------------------------------------------------------------------------------------------
# end to end on the digits at smoke


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_run_with_a_judge_and_two_evaluation_models_end_to_end(tmp_path):
    from conftest import cli_invoke

    args = ["run", "-a", "gmi", "-d", "none", "--budget", "smoke", "--metric", "attack_acc"]
    args += ["--judge", "verification", "--eval-arch", "resnet8", "--eval-arch", "cnn"]
    cli_invoke(*args, "--quiet", "--workdir", str(tmp_path), ok=True)
    (r,) = Store(tmp_path / "results.db").rows()
    answers = r.outcomes.per_reconstruction["judge[verification]"]
    assert len(answers) == len(r.outcomes) and set(answers) <= {0.0, 1.0}
    assert r.metrics["judge[verification]"] == pytest.approx(sum(answers) / len(answers))
    assert "TAR" in r.notes["judge[verification]"] and "FAR 0.01" in r.notes["judge[verification]"]
    assert len(r.outcomes.per_reconstruction["attack_acc[cnn]"]) == len(r.outcomes)
    assert r.config["metrics"]["judge[verification]"] == 1 and "eval[cnn]" in r.config["metrics"]
    import json

    out = cli_invoke("leaderboard", "--workdir", str(tmp_path), "--format", "json", ok=True).output
    (e,) = json.loads(out)
    e_ = derive(r, "attack_acc")
    for key in ("confirmed_acc[verification]", "eval_agree[cnn]"):
        assert e[key] == pytest.approx(e_.metrics[key]) and key + "_lo" in e
    card = cli_invoke("protocol", "mnist", "--workdir", str(tmp_path), ok=True).output
    assert "Judge verification on mnist: resnet8 on public data" in card
