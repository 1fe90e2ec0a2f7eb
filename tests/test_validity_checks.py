"""Issue 29 item 4: evaluation-validity checks. The target checks (randomised forward, zero and
vanishing gradients, probabilities instead of logits) against models built to fail each one and
against a real MID target; the flags the leaderboard derives from stored rows (vanishing gradients
against the undefended twin, black-box beating white-box, not converged); the opt-in convergence
cells of the plan (ordinary cells keep their ids); the checks stored with a real run's rows."""

from __future__ import annotations

import torch
from conftest import MeanAttack
from test_stats import row

from reinv_bench import hookimpl
from reinv_bench.engine.plan import Request, expand, iteration_param, subsample
from reinv_bench.registry.lookup import load
from reinv_bench.results.aggregate import aggregate, declared_columns
from reinv_bench.results.store import Store
from reinv_bench.results.validity import RANDOM_TOL, VANISHING_RATIO, target_checks
from reinv_bench.views.tables import render

COLS = declared_columns(load())
CPU = torch.device("cpu")
X = torch.rand(40, 1, 8, 8) * 2 - 1


class Linear(torch.nn.Module):
    def __init__(self, noise: float = 0.0, scale: float = 1.0, softmax: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(64, 10)
        self.noise, self.scale, self.softmax = noise, scale, softmax

    def forward(self, x):
        out = self.fc(x.flatten(1)) * self.scale
        if self.noise:
            out = out + self.noise * torch.randn_like(out)
        return out.softmax(1) if self.softmax else out


class Dead(torch.nn.Module):
    """A target whose logits do not depend on the input where it is evaluated (gradient 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.arange(10.0))

    def forward(self, x):
        return torch.relu(x.flatten(1)[:, :1] - 10) + self.bias


def test_a_deterministic_target_passes_and_a_noisy_one_is_randomised():
    ok = target_checks(Linear(), X, [0, 1, 2], CPU, seed=0, samples=16)
    assert ok["randomised"] is False and ok["max_diff"] <= RANDOM_TOL and ok["flips"] == 0
    assert ok["samples"] == 16 and ok["zero_grad"] == 0 and ok["grad_norm"] > 0
    noisy = target_checks(Linear(noise=0.5), X, [0, 1, 2], CPU, seed=0, samples=16)
    assert noisy["randomised"] is True and noisy["max_diff"] > RANDOM_TOL


def test_zero_gradients_and_probabilities_are_found():
    dead = target_checks(Dead(), X, [3], CPU, seed=0, samples=8)
    assert dead["zero_grad"] == 8 and dead["grad_norm"] == 0.0
    probs = target_checks(Linear(softmax=True), X, [3], CPU, seed=0, samples=8)
    assert probs["probabilities"] is True
    assert target_checks(Linear(), X, [3], CPU, seed=0, samples=8)["probabilities"] is False


def test_the_gradient_norm_scales_with_the_logits():
    # CE's input gradient near a uniform output is about proportional to the logit scale
    small = target_checks(Linear(scale=1e-3), X, [0], CPU, seed=0)["grad_norm"]
    big = target_checks(Linear(), X, [0], CPU, seed=0)["grad_norm"]
    assert small < VANISHING_RATIO * big


def test_a_mid_target_samples_at_inference_and_is_flagged(registry):
    from conftest import TinyNet

    mid = registry.get("defense", "mid")({}, "smoke")
    model = mid.wrap_model(TinyNet().build(10, (1, 32, 32))).eval()
    x = torch.rand(16, 1, 32, 32) * 2 - 1
    assert target_checks(model, x, [0, 1], CPU, seed=0)["randomised"] is True
    fixed = registry.get("defense", "mid")({"sample": "false"}, "smoke")
    model = fixed.wrap_model(TinyNet().build(10, (1, 32, 32))).eval()
    assert target_checks(model, x, [0, 1], CPU, seed=0)["randomised"] is False


# ---- flags from stored rows -------------------------------------------------------------------


def checks(grad: float = 1.0, randomised: bool = False, zero: int = 0) -> dict:
    return {
        "version": 1,
        "samples": 64,
        "randomised": randomised,
        "max_diff": 0.3 if randomised else 0.0,
        "flips": 2 if randomised else 0,
        "probabilities": False,
        "grad_norm": grad,
        "grad_norm_median": grad,
        "zero_grad": zero,
    }


def cell(defense, seed, pattern, attack="gmi", threat="white-box", validity=None, config=None):
    r = row(defense, seed, pattern)
    r.update(attack=attack, threat_model=threat, cell_id=f"{attack}-{defense}-{seed}")
    r["config"] = {**r["config"], "attack": {"name": attack}, **(config or {})}
    if validity is not None:
        r["notes"] = {"validity": validity}
    return r


def entries_of(tmp_path, rows):
    store = Store(tmp_path / "results.db")
    for r in rows:
        store.put(r)
    return aggregate(store.rows(), columns=COLS)


def by(entries, attack, defense):
    return next(e for e in entries if e.attack == attack and e.defense == defense)


ALL = {c: [1, 1] for c in range(8)}
NONE = {c: [0, 0] for c in range(8)}
HALF = {c: [1, 0] for c in range(8)}


def test_flags_randomised_and_vanishing_gradients_against_the_undefended_twin(tmp_path):
    es = entries_of(
        tmp_path,
        [
            cell("none", 0, ALL, validity=checks(grad=2.0)),
            cell("mid", 0, HALF, validity=checks(grad=1.5, randomised=True)),
            cell("negls", 0, NONE, validity=checks(grad=0.05, zero=3)),
        ],
    )
    none, mid, negls = (by(es, "gmi", d) for d in ("none", "mid", "negls"))
    assert none.flags == [] and none.validity["grad_norm"] == 2.0
    assert mid.validity["randomised"] is True and mid.validity["grad_ratio"] == 0.75
    assert [f.split(" (")[0] for f in mid.flags] == ["randomised target: use EOT/adaptive"]
    assert abs(negls.validity["grad_ratio"] - 0.025) < 1e-12
    assert any(f.startswith("vanishing gradients") for f in negls.flags)
    assert any(f.startswith("3 of 64 samples have zero identity-loss gradient") for f in negls.flags)
    md = render(es, "md", COLS)
    assert "Validity mid (gmi, cnn, mnist): randomised target: use EOT/adaptive" in md
    json_ = {e["defense"]: e for e in __import__("json").loads(render(es, "json", COLS))}
    assert json_["negls"]["validity"]["grad_ratio"] < VANISHING_RATIO
    assert any("vanishing" in f for f in json_["negls"]["validity_flags"])


def test_rows_without_checks_say_so_and_are_not_passed(tmp_path):
    (e,) = entries_of(tmp_path, [cell("none", 0, ALL)])
    assert e.validity["checks"].startswith("not run") and e.flags == []


def test_a_black_box_attacker_beating_white_box_flags_gradient_masking(tmp_path):
    es = entries_of(
        tmp_path,
        [
            cell("rolss", 0, NONE),
            cell("rolss", 0, ALL, attack="brepmi", threat="label-only"),
            cell("none", 0, ALL),
            cell("none", 0, ALL, attack="brepmi", threat="label-only"),
            cell("re", 0, HALF),
            cell("re", 0, {c: [c % 2, 0] for c in range(8)}, attack="transfer+gmi"),
        ],
    )
    rolss = by(es, "gmi", "rolss")
    (flag,) = [f for f in rolss.flags if "masking" in f]
    assert flag.startswith("gradient masking suspected: brepmi (label-only) beats gmi by +100.0 points")
    assert rolss.validity["beaten_by"][0]["attack"] == "brepmi"
    assert not any("masking" in f for f in by(es, "gmi", "none").flags)  # equal: not beaten
    assert not any("masking" in f for f in by(es, "gmi", "re").flags)  # transfer lower: not beaten


def test_transfer_attackers_count_as_black_box(tmp_path):
    es = entries_of(tmp_path, [cell("rolss", 0, NONE), cell("rolss", 0, ALL, attack="transfer+gmi")])
    assert any("transfer+gmi (white-box) beats gmi" in f for f in by(es, "gmi", "rolss").flags)


def conv(of="gmi", classes=4):
    return {
        "convergence": {
            "of": of,
            "param": "iters",
            "from": "20",
            "to": "40",
            "classes": classes,
            "attacked": [0, 2, 4, 6],
        }
    }


def test_convergence_rows_flag_not_converged_and_never_become_entries(tmp_path):
    doubled = {c: [1, 1] for c in (0, 2, 4, 6)}
    es = entries_of(
        tmp_path,
        [
            cell("re", 0, NONE),
            cell("re", 0, doubled, attack="gmi[iters=40]", config=conv()),
            cell("none", 0, ALL),
            cell("none", 0, doubled, attack="gmi[iters=40]", config=conv()),
        ],
    )
    assert sorted(e.attack for e in es) == ["gmi", "gmi"]  # the checks are no entries
    re_, none = by(es, "gmi", "re"), by(es, "gmi", "none")
    rec = re_.validity["convergence"]
    assert rec["converged"] is False and rec["at_double"] == 1.0 and rec["estimate"] == 1.0
    (flag,) = [f for f in re_.flags if f.startswith("not converged")]
    assert "iters 20 -> 40 on 4 classes" in flag and flag.endswith("at twice the iterations: 100.0")
    assert none.validity["convergence"]["converged"] is True  # 1.0 -> 1.0
    assert not any(f.startswith("not converged") for f in none.flags)


# ---- the opt-in convergence cells of a plan ----------------------------------------------------


def _expand(registry, **kw):
    req = Request(["gmi", "meanimg"], ["none"], archs=["tiny"], eval_arch="tiny", budget="smoke", **kw)
    return expand(req, registry, data_digest=lambda s: "d" * 64)


def test_convergence_is_opt_in_and_keeps_the_ordinary_cell_ids(registry):
    plain = _expand(registry)
    checked = _expand(registry, convergence=3)
    assert [c.cell_id for c in checked.cells[: len(plain.cells)]] == [c.cell_id for c in plain.cells]
    assert set(plain.steps) <= set(checked.steps)
    (extra,) = checked.cells[len(plain.cells) :]  # meanimg declares no iterations: not checked
    assert extra.labels.attack == "gmi[iters=40]" and extra.config["attack"]["config"]["iters"] == 40
    c = extra.config["convergence"]
    assert c["of"] == "gmi" and (c["from"], c["to"], c["classes"]) == ("20", "40", 3)
    invert = checked.steps[extra.invert_key]
    assert invert.spec["classes"] == c["attacked"] == subsample(list(range(10)), 3) == [0, 3, 6]
    assert any("meanimg declares no iteration count" in n for n in checked.notes)


def test_iteration_params_follow_the_wrapper_chain(registry):
    from reinv_bench.registry.components import resolve_attack

    def of(text):
        return iteration_param(resolve_attack(registry, text, "smoke")[2])

    assert of("gmi") == (0, "iters")
    assert of("lomma+gmi") == (0, "iters")  # lomma's own count replaces the base's
    assert of("align+gmi") == (1, "iters")
    assert of("rlbmi") == (0, "episodes")
    assert of("meanimg") is None


def test_a_negative_convergence_is_a_one_line_error(registry):
    import pytest

    from reinv_bench.api import ConfigError

    with pytest.raises(ConfigError, match="convergence: give a number of classes"):
        _expand(registry, convergence=-1)


# ---- stored with a real run's rows -------------------------------------------------------------


def test_a_run_stores_the_target_checks_with_each_row_and_caches_them(registry, tmp_path):
    from reinv_bench.engine.runner import Runner

    plan = expand(
        Request(
            ["meanimg"],
            ["none"],
            archs=["tiny"],
            eval_arch="tiny",
            budget="smoke",
            metrics=["attack_acc", "natural_acc"],
        ),
        registry,
    )
    runner = Runner(registry, tmp_path / "w", CPU)
    store = Store(tmp_path / "w" / "results.db")
    runner.run(plan, store)
    (r,) = store.rows()
    v = r.notes["validity"]
    assert v["randomised"] is False and v["grad_norm"] > 0 and v["samples"] > 0
    assert r.cell_id == plan.cells[0].cell_id
    again = runner.worker.evaluate(plan.cells[0]).notes["validity"]
    assert again == v  # the cached artifact: computed once per target
    (e,) = aggregate(store.rows(), columns=COLS)
    assert e.validity["checks"] == "run" and e.flags == []


class SteppedMean(MeanAttack):
    """The test attack, declaring its ``steps`` as its iteration count."""

    name = "meanimg_steps"
    prior_kind = "meanimg"
    iterations_param = "steps"


@hookimpl
def register_attacks():  # this module is a plugin too: load(extra=...)
    return [SteppedMean]


def test_a_convergence_run_end_to_end(tmp_path):
    import sys

    from reinv_bench.engine.runner import Runner

    reg = load(extra=(sys.modules["conftest"], sys.modules[__name__]))
    req = Request(
        ["meanimg_steps"],
        ["none"],
        archs=["tiny"],
        eval_arch="tiny",
        budget="smoke",
        metrics=["attack_acc", "natural_acc"],
        convergence=4,
    )
    plan = expand(req, reg)
    assert [c.labels.attack for c in plan.cells] == ["meanimg_steps", "meanimg_steps[steps=6]"]
    store = Store(tmp_path / "w" / "results.db")
    Runner(reg, tmp_path / "w", CPU).run(plan, store)
    rows = store.rows()
    assert [r.status for r in rows] == ["ok", "ok"], [r.error for r in rows]
    doubled = next(r for r in rows if r.config.get("convergence"))
    assert sorted(set(doubled.outcomes.classes)) == [0, 2, 5, 7]  # 4 of the 10 digits, evenly spaced
    (e,) = aggregate(rows, columns=COLS)  # the check is no entry of its own
    rec = e.validity["convergence"]
    assert (rec["param"], rec["from"], rec["to"], rec["classes"]) == ("steps", "3", "6", 4)
    assert rec["at_double"] == doubled.metrics["attack_acc"]
    assert rec["converged"] is (not any(f.startswith("not converged") for f in e.flags))


def test_grid_files_take_convergence(tmp_path):
    import pytest

    from reinv_bench.api import ConfigError
    from reinv_bench.engine.grid import load as load_grid

    good, bad = tmp_path / "g.toml", tmp_path / "b.toml"
    good.write_text('attacks = ["gmi"]\ndefenses = ["re"]\nconvergence = 5\n')
    bad.write_text("convergence = -2\n")
    assert load_grid(good)["convergence"] == 5
    with pytest.raises(ConfigError, match="convergence is a number of classes"):
        load_grid(bad)


def test_the_report_states_the_flags(tmp_path):
    from reinv_bench.engine.loaders import workdir_loaders
    from reinv_bench.views.report import build

    rows = [
        cell("none", 0, ALL, validity=checks(grad=2.0)),
        cell("mid", 0, HALF, validity=checks(grad=1.5, randomised=True)),
    ]
    for r in rows:
        r["artifacts"] = None
    store = Store(tmp_path / "results.db")
    for r in rows:
        store.put(r)
    html = build(store.rows(), tmp_path, workdir_loaders(load(), tmp_path), COLS, classes=2)
    assert "Validity mid (gmi, cnn, mnist): randomised target: use EOT/adaptive" in html


def test_a_gap_as_large_on_the_undefended_twin_is_a_weaker_white_box_attack_not_masking(tmp_path):
    """Measured on the digits (issue 29): transfer+gmi beat gmi by +22 points on the undefended
    target and by +16 on re; masking is what a defense adds beyond the undefended twin's gap."""
    es = entries_of(
        tmp_path,
        [
            cell("none", 0, HALF),
            cell("none", 0, ALL, attack="transfer+gmi"),
            cell("re", 0, HALF),
            cell("re", 0, ALL, attack="transfer+gmi"),
            cell("rolss", 0, NONE),
            cell("rolss", 0, ALL, attack="transfer+gmi"),
        ],
    )
    none, re_, rolss = (by(es, "gmi", d) for d in ("none", "re", "rolss"))
    assert not any("masking suspected" in f for f in none.flags + re_.flags)
    (weak,) = none.flags
    assert weak.startswith("white-box attack weaker: transfer+gmi (white-box) beats gmi by +50.0 points")
    assert weak.endswith("with no defense to mask gradients") and none.validity["beaten_by"][0]["undefended"]
    (same,) = re_.flags
    assert "as on the undefended twin" in same and "not a sign of masking" in same
    assert re_.validity["beaten_by"][0]["beyond_undefended"]["estimate"] == 0.0
    (masked,) = rolss.flags
    assert masked.startswith(
        "gradient masking suspected: transfer+gmi (white-box) beats gmi by +100.0 points"
    )
    assert "+50.0 points (95% CI +50.0 points to +50.0 points) beyond the undefended twin's gap" in masked


def test_contrast_of_two_sides_is_the_paired_difference(tmp_path):
    from reinv_bench.results import stats

    es = entries_of(
        tmp_path,
        [cell("none", s, {c: [(c + s) % 2, 1, c % 3 == 0] for c in range(8)}) for s in (0, 1, 2)]
        + [cell("re", s, {c: [c % 2, (c * s) % 2, 0] for c in range(8)}) for s in (0, 1, 2)],
    )
    a, b = by(es, "gmi", "re").rows, by(es, "gmi", "none").rows
    two, pair = stats.contrast([a, b], [1.0, -1.0], "attack_acc"), stats.paired(a, b, "attack_acc")
    assert (two.estimate, two.lo, two.hi, two.method) == (pair.estimate, pair.lo, pair.hi, pair.method)
    assert two.has_interval
