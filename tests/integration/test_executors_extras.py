"""The optional executors (extras ``ray`` and ``slurm``): a Ray cluster started here and
submitit's local executor store exactly what inline stores; a missing extra is a one-line error
naming it; a workdir the Ray nodes do not share is refused at the start; a killed worker or job
counts as lost (the driver retries it once)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from reinv_bench.api import ConfigError
from reinv_bench.engine.plan import Request, expand
from reinv_bench.engine.runner import Runner, build_executor
from reinv_bench.engine.steps import Env
from reinv_bench.results.store import Store

TESTS = Path(__file__).parent.parent  # tests/: conftest, the test plugin the workers import
CPU = torch.device("cpu")


def _plan(registry, defenses=("none", "re", "re[scale=0.1-0.8]")):
    return expand(
        Request(
            ["meanimg"],
            list(defenses),
            archs=["tiny"],
            eval_arch="tiny",
            budget="smoke",
            metrics=["natural_acc", "attack_acc", "knn_dist"],
        ),
        registry,
    )


def _numbers(store: Store) -> dict[str, tuple]:
    return {r["cell_id"]: (r["status"], r["metrics"]) for r in store.rows()}


@pytest.fixture(scope="module")
def inline_numbers(tmp_path_factory):
    """The smoke grid run inline under one torch thread (as each task or job runs it)."""
    import conftest

    from reinv_bench.registry.lookup import load

    registry = load(extra=(conftest,))
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # CPU float reductions depend on the thread count
    try:
        workdir = tmp_path_factory.mktemp("inline")
        store = Store(workdir / "results.db")
        Runner(registry, workdir, CPU).run(_plan(registry), store)
    finally:
        torch.set_num_threads(before)
    return _numbers(store)


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


# ---- ray --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """One local 2-CPU cluster for the module (starting one takes seconds); the executor that
    started it stops it. Its workers import the test plugin (``conftest``) from tests/."""
    pytest.importorskip("ray", reason='the ray extra is not installed: pip install "reinv-bench[ray]"')
    owner = build_executor(_registry(), "ray[address=local,cpus=2]")
    # the workers unpickle this module's functions (``_die``) by reference: its folder on their path
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(
            "PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
        )
        owner.start(Env(str(tmp_path_factory.mktemp("ray-start")), ("conftest",)))
    assert owner.owner and owner.slots == 2
    yield owner
    owner.close()
    import ray

    assert not ray.is_initialized()


def _registry():
    import conftest

    from reinv_bench.registry.lookup import load

    return load(extra=(conftest,))


def test_ray_stores_exactly_what_inline_stores(registry, tmp_path, ray_cluster, inline_numbers):
    store = Store(tmp_path / "results.db")
    summary = Runner(registry, tmp_path, CPU, executor="ray[address=local,cpus=2]").run(
        _plan(registry), store
    )
    assert len(summary.rows) == 3 and not summary.failed, summary.failed
    assert _numbers(store) == inline_numbers
    import ray

    assert ray.is_initialized()  # a cluster it did not start is left running
    assert not list(tmp_path.glob(".ray-probe-*"))  # the probe cleans up after itself


def test_ray_worker_killed_is_lost_and_a_step_error_is_the_steps_own(ray_cluster, tmp_path):
    import ray

    ex = build_executor(_registry(), "ray[address=local]")
    ex.start(Env(str(tmp_path), ("conftest",)))
    err = ex.submit(_die).exception(timeout=60)
    assert ex.lost(err), repr(err)
    err = ex.submit(int, "x").exception(timeout=60)
    assert type(err) is ValueError and not ex.lost(err)  # the step's exception, not Ray's wrapper
    assert ex.submit(sum, [1, 2]).result(timeout=60) == 3
    running = ex.submit(time.sleep, 60)
    time.sleep(1)
    ex.close(cancel=True)  # Ctrl-C: the task is stopped
    assert isinstance(running.exception(timeout=20), ray.exceptions.TaskCancelledError)


def test_ray_refuses_a_workdir_the_nodes_do_not_share(ray_cluster, tmp_path, monkeypatch):
    from reinv_executors import ray_executor

    monkeypatch.setattr(ray_executor, "read_probe", lambda path: None)  # the node's file is not seen here
    ex = build_executor(_registry(), "ray")
    with pytest.raises(ConfigError) as info:
        ex.start(Env(str(tmp_path), ("conftest",)))
    msg = str(info.value)
    assert "\n" not in msg and "not a filesystem all Ray nodes see" in msg and str(tmp_path) in msg
    assert not list(tmp_path.glob(".ray-probe-*"))


# ---- submitit ---------------------------------------------------------------------------------


def test_submitit_local_stores_exactly_what_inline_stores(registry, tmp_path, inline_numbers):
    pytest.importorskip(
        "submitit", reason='the slurm extra is not installed: pip install "reinv-bench[slurm]"'
    )
    store = Store(tmp_path / "results.db")
    runner = Runner(registry, tmp_path, CPU, executor="submitit[cluster=local,slots=2]")
    # one cell: each job is a fresh process (imports torch and the plugins: seconds on a shared
    # 2-core machine)
    summary = runner.run(_plan(registry, defenses=("none",)), store)
    assert len(summary.rows) == 1 and not summary.failed, summary.failed
    numbers = _numbers(store)
    assert numbers == {k: v for k, v in inline_numbers.items() if k in numbers}
    (run,) = (tmp_path / "slurm-logs").iterdir()  # one folder of job logs per run
    assert len(list(run.glob("*/*_log.out"))) == 5  # eval, target, prior, inversion, cell


def test_submitit_job_killed_is_lost_and_a_step_error_is_the_steps_own(tmp_path):
    """Also when the driver was started in the background (`cmd &` in a script), which ignores
    SIGINT: the local jobs inherited that, and submitit's cancel (SIGINT) left them running."""
    import signal

    pytest.importorskip(
        "submitit", reason='the slurm extra is not installed: pip install "reinv-bench[slurm]"'
    )
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _killed_and_cancelled_jobs(tmp_path)
    finally:
        signal.signal(signal.SIGINT, before)


def _killed_and_cancelled_jobs(tmp_path):
    ex = build_executor(_registry(), "submitit[cluster=local]")
    ex.start(Env(str(tmp_path), ("conftest",)))
    killed, bad = ex.submit(_die), ex.submit(int, "x")
    err = bad.exception(timeout=60)
    assert type(err) is ValueError and not ex.lost(err)
    err = killed.exception(timeout=60)
    assert ex.lost(err) and "\n" not in str(err), repr(err)
    running = ex.submit(time.sleep, 60)
    while not ex.jobs:
        time.sleep(0.1)
    (job,) = ex.jobs.values()
    ex.close(cancel=True)  # Ctrl-C: the job is cancelled
    assert running.cancelled()
    deadline = time.time() + 20
    while job._process.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert job._process.poll() is not None


# ---- missing extras ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, module, extra", [("ray", "ray", "ray"), ("submitit", "submitit", "slurm")])
def test_a_missing_extra_is_a_one_line_error_naming_it(name, module, extra, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # `import MODULE` raises ImportError
    with pytest.raises(ConfigError) as info:
        build_executor(_registry(), name)
    msg = str(info.value)
    assert "\n" not in msg and f'pip install "reinv-bench[{extra}]"' in msg
