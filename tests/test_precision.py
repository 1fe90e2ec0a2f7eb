"""--precision fp32|bf16|tf32 (issue 11): keys, rows and the leaderboard (CPU, seconds)."""

from __future__ import annotations

import pytest
import torch

from reinv_bench.api import ConfigError
from reinv_bench.leaderboard import aggregate, comparison_key
from reinv_bench.plan import Request, expand


def _plan(registry, **kw):
    return expand(Request(["meanimg"], ["re"], archs=["tiny"], eval_arch="tiny", budget="smoke",
                          metrics=["attack_acc"], **kw), registry, data_digest=lambda s: "d")


def test_fp32_keys_are_those_of_a_plan_without_the_field(registry):
    default, fp32 = _plan(registry), _plan(registry, precision="fp32")
    assert list(fp32.steps) == list(default.steps)
    assert [c.cell_id for c in fp32.cells] == [c.cell_id for c in default.cells]
    assert all("precision" not in s.spec for s in fp32.steps.values())
    assert {c.config["precision"] for c in fp32.cells} == {"fp32"}


def test_bf16_and_tf32_give_other_keys_for_targets_priors_and_inversions(registry):
    fp32, bf16, tf32 = (_plan(registry, precision=p) for p in ("fp32", "bf16", "tf32"))
    for other, name in ((bf16, "bf16"), (tf32, "tf32")):
        changed = {s.kind for k, s in other.steps.items() if k not in fp32.steps}
        assert changed == {"target", "prior", "invert"}
        assert {s.kind for k, s in other.steps.items() if k in fp32.steps} == {"eval"}  # the judge stays fp32
        assert not {c.cell_id for c in other.cells} & {c.cell_id for c in fp32.cells}
        assert {c.config["precision"] for c in other.cells} == {name}
    assert not set(bf16.steps) & set(tf32.steps) - set(fp32.steps)


def test_an_unknown_precision_is_a_one_line_error(registry, tmp_path):
    import reinv_bench

    with pytest.raises(ConfigError, match=r"precision 'fp16': give one of fp32, bf16, tf32") as exc:
        _plan(registry, precision="fp16")
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="precision 'half'"):
        reinv_bench.run(attacks=["meanimg"], defenses=["re"], archs=["tiny"], eval_arch="tiny", budget="smoke",
                        registry=registry, workdir=tmp_path, device="cpu", precision="half")


def test_a_bf16_run_stores_its_precision_and_is_ranked_apart_from_fp32(registry, tmp_path):
    import reinv_bench

    kw = dict(attacks=["meanimg"], defenses=["re"], archs=["tiny"], eval_arch="tiny", budget="smoke",
              metrics=["attack_acc"], registry=registry, workdir=tmp_path, device="cpu")
    fp32 = reinv_bench.run(**kw)
    bf16 = reinv_bench.run(**kw, precision="bf16")
    assert not fp32.summary.failed and not bf16.summary.failed
    assert {s.kind for s in bf16.summary.ran} == {"target", "prior", "invert"}  # the eval model is reused
    assert {r["config"]["precision"] for r in bf16.rows} == {"bf16"}
    assert {r["config"]["precision"] for r in fp32.rows} == {"fp32"}
    from reinv_bench.artifacts import Artifacts

    art = Artifacts(tmp_path)
    key = {r["defense"]: r["artifacts"]["target"] for r in fp32.rows}
    key16 = {r["defense"]: r["artifacts"]["target"] for r in bf16.rows}
    w32, w16 = art.load(key["re"])["state_dict"], art.load(key16["re"])["state_dict"]
    assert all(v.dtype == w32[k].dtype for k, v in w16.items())  # weights (and optimizer) stay fp32
    assert any(not torch.equal(v, w32[k]) for k, v in w16.items() if v.is_floating_point())  # autocast ran
    entries = aggregate(fp32.rows + bf16.rows)
    assert len(entries) == 4  # none and re, at each precision
    groups = {comparison_key(e) for e in entries}
    assert len(groups) == 2
    for e in entries:  # each compared with the baseline of its own precision
        assert e["precision"] == (e["_config"]["precision"])
        same = [o for o in entries if comparison_key(o) == comparison_key(e)]
        assert {o["precision"] for o in same} == {e["precision"]}
        assert ("bf16" in e["variant"]) == (e["precision"] == "bf16")
    # rows from before --precision (no precision in their config) are fp32 rows
    old = [{**r, "config": {k: v for k, v in r["config"].items() if k != "precision"}} for r in fp32.rows]
    assert len(aggregate(fp32.rows + old)) == 2


def test_a_grid_file_gives_the_precision(tmp_path):
    from reinv_bench.grid import load

    (tmp_path / "g.toml").write_text('attacks = ["gmi"]\nprecision = "bf16"\n')
    assert load(tmp_path / "g.toml")["precision"] == "bf16"
    (tmp_path / "bad.toml").write_text("precision = 16\n")
    with pytest.raises(ConfigError, match="precision must be str"):
        load(tmp_path / "bad.toml")
