"""``run --dry-run`` on a workdir without timings estimates from the step costs shipped with the
package (``reinv_bench.engine.estimates``), scaled by each step's size, and says so; a step the table
has no figure for stays unknown."""

from __future__ import annotations

import re

import pytest

from reinv_bench.engine import estimates
from reinv_bench.engine.plan import Request, expand


def _steps(registry, kind, **fields):
    req = Request(["gmi"], ["none"], budget="smoke", scenarios=["mnist"], **fields)
    return [s for s in expand(req, registry).steps.values() if s.kind == kind]


def test_a_dry_run_on_an_empty_workdir_estimates_from_the_shipped_table(tmp_path, invoke):
    result = invoke(
        "run",
        "-a",
        "gmi",
        "-d",
        "none",
        "--budget",
        "smoke",
        "--device",
        "cpu",
        "--workdir",
        tmp_path,
        "--dry-run",
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "unknown" not in out
    minutes = re.search(r"estimated time: ([0-9.]+) min \(estimate from the shipped table \(device cpu", out)
    assert minutes and float(minutes.group(1)) > 0
    for kind in ("eval", "target", "prior", "invert"):
        assert re.search(rf"^{kind}\s+1\s+0\s+[0-9.]+ min\s+table$", out, re.M), out


def test_the_estimate_scales_with_the_step_size(registry):
    """Twice the epochs: the fixed part plus twice the per-image-epoch part; a GAN twice as long,
    an inversion of twice the iterations: the same."""
    data = registry.get("scenario", "mnist").load(None)
    fixed, per = estimates.TABLE[("cpu", "mnist", "target", "cnn")]["smoke"]
    one = _steps(registry, "target")[0]
    two = _steps(registry, "target", recipes={"target": {"epochs": 2}})[0]
    e1, e2 = (estimates.estimate(s, "mnist", "smoke", "cpu", lambda: data) for s in (one, two))
    images = len(data.private_train)
    assert e1.seconds == pytest.approx(fixed + per * images)
    assert e2.seconds == pytest.approx(fixed + per * images * 2)
    prior = _steps(registry, "prior")[0]
    assert estimates.units(prior, lambda: data) == prior.spec["params"]["gan_steps"]
    invert = _steps(registry, "invert")[0]
    config = invert.spec["attack"]["config"]
    assert estimates.units(invert, lambda: data) == len(invert.spec["classes"]) * config["iters"]


def test_another_budget_is_said_and_a_missing_figure_stays_unknown(registry):
    data = registry.get("scenario", "mnist").load(None)
    target = _steps(registry, "target")[0]
    est = estimates.estimate(target, "mnist", "quick", "cpu", lambda: data)
    assert est is not None and est.budget == "smoke"  # the smoke figure, said to be another budget's
    assert estimates.estimate(target, "mnist", "smoke", "cuda", lambda: data) is None  # no cuda mnist
    assert estimates.estimate(target, "celeba64", "smoke", "cpu", lambda: data) is None


def test_the_preview_says_which_kinds_come_from_the_table(registry, tmp_path, invoke):
    result = invoke(
        "run",
        "-a",
        "gmi",
        "-d",
        "none",
        "--budget",
        "quick",
        "--device",
        "cpu",
        "--workdir",
        tmp_path,
        "--dry-run",
    )
    assert result.exit_code == 0, result.output
    assert "table, scaled from budget smoke" in result.output
    assert "a figure of another budget is rough" in " ".join(result.output.split())
