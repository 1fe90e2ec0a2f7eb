"""Issue 28, item 7: a busy machine does not collapse the run. Passive OpenMP waiting is set before
torch loads its runtime, and ``run`` without ``--threads`` computes with the free cores, saying so."""

from __future__ import annotations

import os
import subprocess
import sys

from reinv_bench.engine.threads import free_threads


def test_a_quiet_machine_keeps_torchs_default():
    assert free_threads(2, load=0.1, ncores=2) == (2, "")
    assert free_threads(2, load=0.6, ncores=2) == (2, "")  # one busy half-core: still two free


def test_a_busy_machine_computes_with_the_free_cores_and_says_so():
    threads, why = free_threads(2, load=4.8, ncores=2)
    assert threads == 1
    assert "busy (load 4.8 on 2 cores)" in why and "1 torch thread instead of 2" in why
    assert free_threads(16, load=6.2, ncores=16)[0] == 10
    assert free_threads(16, load=40.0, ncores=16)[0] == 1  # never fewer than one


def test_passive_waiting_on_a_busy_machine_unless_the_environment_chose(monkeypatch):
    from reinv_bench.engine.threads import cores, passive_waiting

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    passive_waiting(load=0.0)  # quiet: spinning waits are faster, left as OpenMP has them
    assert "OMP_WAIT_POLICY" not in os.environ
    passive_waiting(load=4.8 * cores())
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    passive_waiting(load=4.8 * cores())
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_importing_reinv_bench_decides_before_torch_loads():
    code = "import sys, reinv_bench; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # the policy is set while OpenMP can still read it


def test_the_cli_imports_no_torch_for_its_own_module():
    code = "import sys, reinv_bench.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
