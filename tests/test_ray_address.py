"""``--executor ray`` finds its cluster as ``ray.init()`` does: the running one (RAY_ADDRESS, ``ray
start``) when there is one, else a local cluster started for the run and stopped at its end. Ray is
faked here (whether or not the extra is installed): what is checked is which ``ray.init`` calls the
executor makes and what it says."""

from __future__ import annotations

import sys
import types

import pytest

from reinv_bench.api import ConfigError
from reinv_bench.engine.runner import build_executor
from reinv_bench.engine.steps import Env


class FakeRay(types.ModuleType):
    """``ray`` with a cluster that is running (``cluster=True``) or not: ``init(address=...)`` as
    Ray 2.x resolves it (auto: RAY_ADDRESS or the running cluster, else ConnectionError; local:
    start one)."""

    def __init__(self, cluster: bool, reachable: tuple[str, ...] = ()):
        super().__init__("ray")
        self.cluster, self.reachable = cluster, reachable
        self.calls: list[dict] = []
        self.initialized = False
        self.shutdowns = 0

    def init(self, address=None, **kwargs):
        self.calls.append({"address": address, **kwargs})
        if address == "auto" and not self.cluster:
            raise ConnectionError("Could not find any running Ray instance. Please specify ...")
        if address not in ("auto", "local") and address not in self.reachable:
            raise ConnectionError(f"Failed to connect to Ray cluster at {address}")
        self.initialized = True

    def is_initialized(self):
        return self.initialized

    def cluster_resources(self):
        return {"CPU": 4.0}

    def remote(self, fn):
        return fn

    def shutdown(self):
        self.initialized = False
        self.shutdowns += 1


def _executor(monkeypatch, ray, spec="ray"):
    import conftest

    from reinv_bench.registry.lookup import load

    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ex = build_executor(load(extra=(conftest,)), spec)
    monkeypatch.setattr(type(ex), "_check_shared", lambda self, workdir: None)
    return ex


def test_without_a_cluster_a_local_one_is_started_for_the_run_and_stopped(monkeypatch, tmp_path, capsys):
    ray = FakeRay(cluster=False)
    ex = _executor(monkeypatch, ray)
    ex.start(Env(str(tmp_path)))
    assert [c["address"] for c in ray.calls] == ["auto", "local"]  # looked for one, then started one
    assert ray.calls[1]["include_dashboard"] is False and ray.calls[1]["num_cpus"] is None
    err = capsys.readouterr().err
    assert "no running Ray cluster" in err and "starting a local one for this run" in err
    assert ex.slots == 4  # the local cluster's CPUs / cpus_per_task
    ex.close()
    assert ray.shutdowns == 1 and not ray.initialized  # the cluster it started is stopped


def test_a_running_cluster_is_used_and_only_disconnected(monkeypatch, tmp_path, capsys):
    ray = FakeRay(cluster=True)
    ex = _executor(monkeypatch, ray)
    ex.start(Env(str(tmp_path)))
    assert [c["address"] for c in ray.calls] == ["auto"]  # no local cluster, no start-only options
    assert "num_cpus" not in ray.calls[0] and "include_dashboard" not in ray.calls[0]
    assert "local" not in capsys.readouterr().err
    ex.close()
    assert ray.shutdowns == 1  # ray.shutdown only disconnects from a cluster this process did not start


def test_a_ray_address_that_cannot_be_reached_is_an_error_not_a_local_run(monkeypatch, tmp_path):
    ray = FakeRay(cluster=False)
    ex = _executor(monkeypatch, ray)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")
    with pytest.raises(ConfigError) as info:
        ex.start(Env(str(tmp_path)))
    msg = str(info.value)
    assert "\n" not in msg and "address=auto" in msg and "RAY_ADDRESS" in msg
    assert [c["address"] for c in ray.calls] == ["auto"]


def test_an_explicit_address_that_cannot_be_reached_is_an_error(monkeypatch, tmp_path):
    ray = FakeRay(cluster=False)
    ex = _executor(monkeypatch, ray, "ray[address=10.0.0.9:6379]")
    with pytest.raises(ConfigError, match=r"cannot connect to a Ray cluster at address=10\.0\.0\.9:6379"):
        ex.start(Env(str(tmp_path)))
    assert [c["address"] for c in ray.calls] == ["10.0.0.9:6379"]


def test_address_local_starts_a_private_cluster_without_looking(monkeypatch, tmp_path):
    ray = FakeRay(cluster=True)
    ex = _executor(monkeypatch, ray, "ray[address=local,cpus=2]")
    ex.start(Env(str(tmp_path)))
    assert [(c["address"], c["num_cpus"]) for c in ray.calls] == [("local", 2)]
    ex.close()
