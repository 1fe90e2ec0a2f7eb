"""Executors and the driver: worker processes store exactly what inline stores, a worker that
dies is retried, two drivers on one workdir never compute a step twice, stale locks are taken
over."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from reinv_bench.engine.artifacts import Artifacts, parse_holder
from reinv_bench.engine.plan import Request, expand
from reinv_bench.engine.runner import Runner
from reinv_bench.engine.steps import reconstructions
from reinv_bench.results.store import Store

TESTS = Path(__file__).parent.parent  # tests/: conftest, the test plugin the workers import
CPU = torch.device("cpu")


def _plan(registry, attacks=("meanimg",), defenses=("none", "re", "re[scale=0.1-0.8]")):
    return expand(
        Request(
            list(attacks),
            list(defenses),
            archs=["tiny"],
            eval_arch="tiny",
            budget="smoke",
            metrics=["natural_acc", "attack_acc", "knn_dist"],
        ),
        registry,
    )


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # CPU float reductions depend on the thread count: pin it as the workers do
    yield
    torch.set_num_threads(before)


def _numbers(store: Store) -> dict[str, tuple]:
    return {r["cell_id"]: (r["status"], r["metrics"]) for r in store.rows()}


def test_local_workers_store_exactly_what_inline_stores(registry, tmp_path, one_thread):
    plan = _plan(registry)
    inline = Store(tmp_path / "inline" / "results.db")
    Runner(registry, tmp_path / "inline", CPU).run(plan, inline)
    local = Store(tmp_path / "local" / "results.db")
    summary = Runner(registry, tmp_path / "local", CPU, executor="local[workers=2,threads=1]").run(
        plan, local
    )
    assert len(summary.rows) == 3 and not summary.failed
    assert _numbers(local) == _numbers(inline)
    assert all(r["status"] == "ok" for r in local.rows())


def test_a_worker_killed_mid_step_is_retried_once(registry, tmp_path):
    marker = tmp_path / "killed-once"
    os.environ["REINV_TEST_KILL_ONCE"] = str(marker)  # conftest's meanimg kills its worker once
    try:
        plan = _plan(registry, defenses=("none",))
        store = Store(tmp_path / "results.db")
        summary = Runner(registry, tmp_path, CPU, executor="local[workers=1,threads=1]").run(plan, store)
    finally:
        del os.environ["REINV_TEST_KILL_ONCE"]
    assert marker.exists()  # the first attempt died
    assert [r["status"] for r in summary.rows] == ["ok"]


def test_a_step_failing_twice_by_worker_loss_fails_only_its_cells(registry, tmp_path):
    os.environ["REINV_TEST_KILL_ALWAYS"] = "1"  # meanimg[steps=5] kills its worker, every time
    try:
        plan = _plan(registry, attacks=("meanimg", "meanimg[steps=5]"), defenses=("none",))
        store = Store(tmp_path / "results.db")
        Runner(registry, tmp_path, CPU, executor="local[workers=1,threads=1]").run(plan, store)
    finally:
        del os.environ["REINV_TEST_KILL_ALWAYS"]
    status = {r["attack"]: (r["status"], r["error"]) for r in store.rows()}
    assert status["meanimg"] == ("ok", None)
    assert status["meanimg[steps=5]"][0] == "failed" and "BrokenProcessPool" in status["meanimg[steps=5]"][1]


def test_two_drivers_on_one_workdir_compute_each_step_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    args = [
        sys.executable,
        "-c",
        "from reinv_bench.cli import main; main()",
        "-p",
        "conftest",
        "run",
        "--budget",
        "smoke",
        "-a",
        "meanimg",
        "--arch",
        "tiny",
        "--eval-arch",
        "tiny",
        "-d",
        "re",
        "--metric",
        "natural_acc",
        "--metric",
        "attack_acc",
        "--quiet",
        "--workdir",
        str(tmp_path),
    ]
    procs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    done = [
        line.split("done", 1)[1].split("(")[0].strip()
        for _, err in outs
        for line in err.splitlines()
        if " done " in line and not line.split("done", 1)[1].strip().startswith("cell")
    ]
    assert len(done) == len(set(done)) == 6  # eval, 2 targets, prior, 2 inversions: each by one driver
    rows = Store(tmp_path / "results.db").rows()
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)


def test_a_lock_left_by_a_killed_process_is_taken_over_a_live_one_waited_for(tmp_path):
    art = Artifacts(tmp_path)
    key = "ef" * 10
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    lock = art.root / key[:2] / f"{key}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    import socket

    lock.write_text(f"{socket.gethostname()} {dead.stdout.strip()}")
    with art.lock(key):
        assert parse_holder(lock.read_text()) == (socket.gethostname(), os.getpid())
    assert not lock.exists()

    order = []

    def second():
        with art.lock(key):
            order.append("second")

    with art.lock(key):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.5)
        order.append("first")
    t.join(10)
    assert order == ["first", "second"]


def test_cells_are_stored_target_by_target(registry, tmp_path):
    """Dependency-driven, cell-major order: each cell is evaluated as soon as its steps are done."""
    plan = _plan(registry)
    stored = []
    Runner(registry, tmp_path, CPU).run(
        plan,
        Store(tmp_path / "results.db"),
        on_result=lambda cell, result: stored.append(len(list((tmp_path / "artifacts").glob("*/*.json")))),
    )
    assert stored[0] < stored[1] < stored[2]  # not all targets first, then all cells


@pytest.mark.parametrize("attack", ["gmi", "plgmi"])
def test_class_chunks_aligned_with_the_identity_batch_give_the_unchunked_reconstructions(
    attack, registry, tmp_path
):
    def inversion(chunk):
        req = Request(
            [f"{attack}[batch_ids=5]"],
            ["none"],
            archs=["tiny"],
            eval_arch="tiny",
            budget="smoke",
            metrics=["attack_acc"],
            class_chunk=chunk,
        )
        plan = expand(req, registry)
        runner = Runner(registry, tmp_path, CPU)
        summary = runner.run(plan, Store(tmp_path / f"{chunk}.db"))
        assert not summary.failed
        inv = reconstructions(runner.artifacts, plan.cells[0].invert_key)
        return plan, {"images": inv.images, "labels": inv.labels}, summary

    plan, whole, _ = inversion(0)
    chunked_plan, chunked, summary = inversion(5)
    kinds = sorted(s.kind for s in summary.ran)
    assert kinds == ["invert", "invert", "merge"]  # target, eval model and GAN reused; two chunks
    a, b = chunked["labels"].argsort(stable=True), whole["labels"].argsort(stable=True)  # class by class
    assert torch.equal(chunked["labels"][a], whole["labels"][b])
    assert torch.equal(chunked["images"][a], whole["images"][b])  # restarts in order within a class
    auto = expand(
        Request(
            [f"{attack}[batch_ids=5]"],
            ["none"],
            archs=["tiny"],
            eval_arch="tiny",
            budget="smoke",
            metrics=["attack_acc"],
            class_chunk="auto",
        ),
        registry,
    )
    assert set(auto.steps) == set(chunked_plan.steps)
