"""``reinv_bench.run`` (the Python API) stops before any step with one error listing every missing
prerequisite of the plan, as the CLI's checklist does, rather than at the first one."""

from __future__ import annotations

import pytest

import reinv_bench
from reinv_bench.api import ConfigError, DataError
from reinv_bench.engine.plan import Request
from reinv_bench.engine.prerequisites import MissingPrerequisites


@pytest.fixture
def fresh_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("REINV_BENCH_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "data").mkdir()
    return tmp_path


@pytest.mark.parametrize("dry_run", [False, True])
def test_run_raises_one_error_listing_every_missing_prerequisite(fresh_machine, registry, dry_run):
    req = Request(
        ["meanimg"],
        ["none"],
        ["vgg16[weights=imagenet]", "ir152[weights=ms1m]"],
        ["celeba64"],
        budget="smoke",
        data_root=str(fresh_machine / "data"),
    )
    work = fresh_machine / "work"
    with pytest.raises(MissingPrerequisites) as info:
        reinv_bench.run(req, registry=registry, workdir=work, device="cpu", dry_run=dry_run)
    err = info.value
    assert isinstance(err, ConfigError)  # what callers already catch for a run that cannot start
    text = str(err)
    assert text.startswith("missing before this run can start:")
    for name in ("vgg16-imagenet", "ir152-ms1m"):  # both targets' weights, not only the first
        assert f"run `reinv-bench weights add {name} FILE`" in text
    assert f"reinv-bench data check celeba64 --data-root {fresh_machine / 'data'}" in text  # and the data
    assert {m.kind for m in err.missing} == {"weights", "data"} and all(m.required for m in err.missing)
    assert len(err.missing) >= 3 and f"{len(err.missing)} required" in text
    assert not work.exists() or not (work / "results.db").exists()  # stopped before any step


def test_a_missing_extra_of_the_executor_is_listed_too(fresh_machine, registry, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    req = Request(["meanimg"], ["none"], ["tiny"], ["celeba64"], budget="smoke", eval_arch="tiny")
    req.data_root = str(fresh_machine / "data")
    with pytest.raises(MissingPrerequisites) as info:
        reinv_bench.run(req, registry=registry, workdir=fresh_machine / "work", device="cpu", executor="ray")
    assert {m.kind for m in info.value.missing} == {"extra", "data"}
    assert "pip install 'reinv-bench[ray]'" in str(info.value)


def test_check_false_leaves_the_first_failure_to_the_plan(fresh_machine, registry):
    req = Request(["meanimg"], ["none"], ["tiny"], ["celeba64"], budget="smoke", eval_arch="tiny")
    req.data_root = str(fresh_machine / "data")
    with pytest.raises(DataError) as info:  # the plan's own error: the first thing it meets
        reinv_bench.run(req, registry=registry, workdir=fresh_machine / "work", device="cpu", check=False)
    assert not isinstance(info.value, MissingPrerequisites)
