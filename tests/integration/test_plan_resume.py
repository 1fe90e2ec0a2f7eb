"""Plan hashing and sharing, resume after an interruption, failures that keep other results."""

import pytest
import torch

from reinv_bench.engine.plan import Request, expand
from reinv_bench.engine.runner import Runner
from reinv_bench.results.store import Store

CPU = torch.device("cpu")


def _req(**kw):
    base = dict(attacks=["meanimg"], defenses=["re"], budget="smoke", metrics=["attack_acc", "natural_acc"])
    base.update(kw)
    return Request(**base)


def _kinds(steps):
    return sorted(s.kind for s in steps)


def test_two_by_two_grid_trains_two_targets(registry):
    plan = expand(_req(attacks=["meanimg", "meanimg[steps=5]"], defenses=["none", "re"]), registry)
    assert len(plan.cells) == 4
    kinds = [s.kind for s in plan.steps.values()]
    assert kinds.count("target") == 2 and kinds.count("eval") == 1
    assert kinds.count("prior") == 1  # the prior ignores `steps` and the target: shared
    assert kinds.count("invert") == 4


def test_baseline_is_added_unless_disabled(registry):
    assert {c.labels["defense"] for c in expand(_req(), registry).cells} == {"none", "re"}
    assert {c.labels["defense"] for c in expand(_req(baseline=False), registry).cells} == {"re"}


def test_hash_is_the_resolved_spec_not_the_text(registry):
    a = expand(_req(defenses=["re"], baseline=False), registry)
    b = expand(_req(defenses=["re[p=1.0,scale=0.1-0.4]"], baseline=False), registry)
    c = expand(_req(defenses=["re[scale=0.1-0.8]"], baseline=False), registry)
    assert a.cells[0].cell_id == b.cells[0].cell_id
    assert a.cells[0].cell_id != c.cells[0].cell_id
    assert c.cells[0].labels["defense"] == "re[scale=0.1-0.8]"
    assert c.cells[0].config["defense"][0]["config"]["scale"] == (0.1, 0.8)


def test_seeds_multiply_targets_not_the_eval_model(registry):
    plan = expand(_req(seeds=3), registry)
    kinds = [s.kind for s in plan.steps.values()]
    assert kinds.count("target") == 6 and kinds.count("eval") == 1 and len(plan.cells) == 6


def test_second_identical_run_trains_nothing(registry, workdir):
    plan = expand(_req(defenses=["none", "re"]), registry)
    store = Store(workdir / "results.db")
    first = Runner(registry, workdir, CPU).run(plan, store)
    assert _kinds(first.ran) == ["eval", "invert", "invert", "prior", "target", "target"]
    assert all(r["status"] == "ok" for r in first.rows)
    second = Runner(registry, workdir, CPU).run(plan, store)
    assert second.ran == [] and second.rows == [] and second.skipped_cells == 2
    assert len(store.rows()) == 2


def test_interrupted_grid_resumes_without_duplicates(registry, workdir, monkeypatch):
    from reinv_bench.engine import steps as runner_mod

    plan = expand(_req(defenses=["none", "re", "re[scale=0.1-0.8]"]), registry)
    store = Store(workdir / "results.db")
    real = runner_mod.train_classifier
    trained = []

    def killed_on_third_target(model, *a, **kw):
        trained.append(1)
        if len(trained) == 3 + 1:  # eval model + two targets, then "kill"
            raise KeyboardInterrupt
        return real(model, *a, **kw)

    monkeypatch.setattr(runner_mod, "train_classifier", killed_on_third_target)
    with pytest.raises(KeyboardInterrupt):
        Runner(registry, workdir, CPU).run(plan, store)
    assert len(store.rows()) == 2  # the cells of finished targets were stored as they completed
    monkeypatch.setattr(runner_mod, "train_classifier", real)
    resumed = Runner(registry, workdir, CPU).run(plan, store)
    assert _kinds(s for s in resumed.ran if s.kind in ("eval", "target")) == ["target"]
    assert len(store.rows()) == 3 and len({r["cell_id"] for r in store.rows()}) == 3
    assert all(r["status"] == "ok" for r in store.rows())


def test_failing_step_fails_only_its_cells(registry, workdir, monkeypatch):
    from reinv_bench.engine import steps as runner_mod

    plan = expand(_req(defenses=["none", "re"]), registry)
    store = Store(workdir / "results.db")
    real = runner_mod.train_classifier

    def fail_re(model, train, recipe, defense, **kw):
        if getattr(defense, "name", None) == "re":
            raise RuntimeError("out of memory (simulated)")
        return real(model, train, recipe, defense, **kw)

    monkeypatch.setattr(runner_mod, "train_classifier", fail_re)
    summary = Runner(registry, workdir, CPU).run(plan, store)
    status = {r["defense"]: (r["status"], r["error"]) for r in store.rows()}
    assert status["none"] == ("ok", None)
    assert status["re"][0] == "failed" and "simulated" in status["re"][1]
    assert len(summary.failed) == 1
    monkeypatch.setattr(runner_mod, "train_classifier", real)
    Runner(registry, workdir, CPU).run(plan, store)  # the failed cell is retried
    assert {r["status"] for r in store.rows()} == {"ok"}


def test_corrupt_artifact_is_reported_and_recomputed(registry, workdir):
    from reinv_bench.engine.artifacts import ArtifactError

    plan = expand(_req(defenses=["none"]), registry)
    store = Store(workdir / "results.db")
    runner = Runner(registry, workdir, CPU)
    runner.run(plan, store)
    target = next(s for s in plan.steps.values() if s.kind == "target")
    runner.artifacts.path(target.key).write_bytes(b"not a checkpoint")
    with pytest.raises(ArtifactError, match="does not match its recorded SHA-256.*recomputed"):
        runner.load_model(target.key)
    assert not runner.artifacts.exists(target.key)
    assert len(store.rows()) == 1  # results untouched


def test_rows_carry_config_versions_and_timings(registry, workdir):
    plan = expand(_req(defenses=["re[scale=0.2-0.3]"], baseline=False), registry)
    store = Store(workdir / "results.db")
    Runner(registry, workdir, CPU).run(plan, store)
    (row,) = store.rows()
    assert row["config"]["defense"][0]["config"] == {
        "p": 1.0,
        "scale": [0.2, 0.3],
        "ratio": [1.0, 1.0],
        "value": [0.485, 0.456, 0.406],
        "location": "random",
    }
    assert row["config"]["target_recipe"]["epochs"] == 1
    assert row["torch_version"] == torch.__version__ and row["reinv_version"]
    assert row["device"].startswith("cpu (") and row["data_digest"]
    assert {"target_s", "prior_s", "invert_s", "evaluate_s", "cell_s", "queries"} <= set(row["timings"])
    assert 0 <= row["metrics"]["natural_acc"] <= 1 and 0 <= row["metrics"]["attack_acc"] <= 1
