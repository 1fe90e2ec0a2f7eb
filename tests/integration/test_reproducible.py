"""Same command, same numbers (issue 9): steps are pure functions of their spec and seed, a
killed run resumes to the uninterrupted numbers, and the artifact cache verifies what it reuses.

The cross-process tests run the real CLI in subprocesses on the smoke budget with the test
plugin of conftest.py (``-p conftest``: the ``meanimg`` attack and the ``tiny`` network), so each
run takes seconds.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reinv_bench.engine.artifacts import ArtifactError, Artifacts
from reinv_bench.engine.plan import Request, expand
from reinv_bench.engine.runner import Runner
from reinv_bench.results.store import Store

TESTS = Path(__file__).parent.parent  # tests/: conftest, the test plugin the workers import
CPU = torch.device("cpu")
METRICS = ("--metric", "natural_acc", "--metric", "attack_acc", "--metric", "knn_dist")
GRID = (
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
    *METRICS,
    "--quiet",
)

# The CLI, optionally killed with SIGKILL in the middle of one step kind: while the artifact of
# the first step of that kind is half written (after its work is done), or, for "evaluate", when
# the first cell's metrics are computed and about to be stored.
DRIVER = r"""
import os, signal, sys
from reinv_bench.engine import artifacts
from reinv_bench.engine import steps
from reinv_bench.results import store
from reinv_bench.cli import main

kind, current = os.environ.get("KILL_AT"), {}
if kind:
    execute, write_atomic = steps.Worker.execute, artifacts.write_atomic

    def traced(self, step):
        current["kind"] = step.kind
        return execute(self, step)

    def killing(path, write):
        if current.get("kind") == kind and path.suffix == ".pt":
            tmp = path.with_name(path.name + f".tmp{os.getpid()}")
            path.parent.mkdir(parents=True, exist_ok=True)
            write(tmp)
            os.truncate(tmp, tmp.stat().st_size // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        return write_atomic(path, write)

    steps.Worker.execute, artifacts.write_atomic = traced, killing
    if kind == "evaluate":
        store.Store.put = lambda self, row: os.kill(os.getpid(), signal.SIGKILL)
sys.argv = ["reinv-bench", *sys.argv[1:]]
main()
"""


def cli(workdir: Path, *args: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "KILL_AT"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    if kill_at:
        env["KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, "-c", DRIVER, *GRID, "--workdir", str(workdir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def numbers(workdir: Path) -> dict[str, dict]:
    """{defense: metrics} of the stored rows."""
    rows = Store(workdir / "results.db").rows()
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    return {r["defense"]: r["metrics"] for r in rows}


def target_digests(workdir: Path) -> dict[str, str]:
    """{target label: sha256 of its artifact} from the artifact records."""
    out = {}
    for rec_path in (workdir / "artifacts").glob("*/*.json"):
        rec = json.loads(rec_path.read_text())
        if "history" in rec["meta"]:  # a trained network
            out[rec["key"]] = rec["sha256"]
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of ``-d re`` (cells: none, re)."""
    wd = tmp_path_factory.mktemp("reference")
    done = cli(wd, "-d", "re")
    assert done.returncode == 0, done.stderr
    return wd


def test_separate_processes_give_bit_identical_steps_whatever_else_is_in_the_grid(reference, tmp_path):
    # another process, another grid: a re[p=0.9] target is trained between the baseline and re
    done = cli(tmp_path, "-d", "re[p=0.9]", "-d", "re")
    assert done.returncode == 0, done.stderr
    ref, other = numbers(reference), numbers(tmp_path)
    assert other["re"] == ref["re"] and other["none"] == ref["none"]
    # the eval model and both shared targets are the same bytes
    ref_digests, other_digests = target_digests(reference), target_digests(tmp_path)
    assert ref_digests.items() <= other_digests.items() and len(ref_digests) == 3


@pytest.mark.parametrize("kind", ["eval", "target", "prior", "invert", "evaluate"])
def test_kill_9_in_each_step_kind_then_resume_gives_the_uninterrupted_numbers(kind, reference, tmp_path):
    killed = cli(tmp_path, "-d", "re", kill_at=kind)
    assert killed.returncode == -9, killed.stderr
    if kind != "evaluate":
        assert list((tmp_path / "artifacts").glob("*/*.tmp*")), "the kill should leave a half-written file"
    resumed = cli(tmp_path, "-d", "re")
    assert resumed.returncode == 0, resumed.stderr
    assert numbers(tmp_path) == numbers(reference)
    assert not list((tmp_path / "artifacts").glob("*/*.tmp*"))  # the stale temporary was removed
    assert target_digests(tmp_path) == target_digests(reference)


# ---- the cache verifies what it reuses (in-process) ------------------------------------------


def _plan(registry, **kw):
    base = dict(attacks=["meanimg"], defenses=["re"], budget="smoke", metrics=["attack_acc", "natural_acc"])
    return expand(Request(**{**base, **kw}), registry)


def _step(plan, kind, defense):
    return next(s for s in plan.steps.values() if s.kind == kind and f"/ {defense} /" in s.label)


def test_a_flipped_byte_is_detected_and_the_step_rebuilt_in_the_same_run(registry, workdir):
    plan = _plan(registry)
    runner = Runner(registry, workdir, CPU)
    runner.run(plan, Store(workdir / "results.db"))
    target = _step(plan, "target", "re")
    before = runner.artifacts.record(target.key)["sha256"]
    path = runner.artifacts.path(target.key)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    data[len(data) // 2 + 1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="SHA-256"):
        Artifacts(workdir).load(target.key)
    # the loader moved it aside; a new results database needs the cells again: rebuilt in this run
    summary = Runner(registry, workdir, CPU).run(plan, Store(workdir / "fresh.db"))
    assert [s.kind for s in summary.ran] == ["target"]  # rebuilt bit-identically: its inversion stays valid
    assert runner.artifacts.record(target.key)["sha256"] == before
    assert all(r["status"] == "ok" for r in summary.rows)


def test_a_rebuilt_dependency_invalidates_what_was_built_from_it(registry, workdir):
    plan = _plan(registry)
    runner = Runner(registry, workdir, CPU)
    runner.run(plan, Store(workdir / "results.db"))
    target, invert = _step(plan, "target", "re"), _step(plan, "invert", "re")
    # the target is rebuilt with other weights (another machine, another torch): new bytes
    obj = runner.artifacts.load(target.key)
    obj["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in obj["state_dict"].items()}
    runner.artifacts.save(target.key, obj, deps={}, meta=runner.artifacts.record(target.key)["meta"])
    summary = Runner(registry, workdir, CPU).run(plan, Store(workdir / "fresh.db"))
    assert invert.key in {s.key for s in summary.ran}  # not the stale inversion of the old target
    assert target.key not in {s.key for s in summary.ran}  # the target itself is intact
    rec = runner.artifacts.record(invert.key)
    assert rec["deps"][target.key] == runner.artifacts.record(target.key)["sha256"]


def test_an_artifact_copied_over_another_is_never_used(registry, workdir):
    plan = _plan(registry)
    runner = Runner(registry, workdir, CPU)
    runner.run(plan, Store(workdir / "results.db"))
    none_t, re_t = _step(plan, "target", "none"), _step(plan, "target", "re")
    art = runner.artifacts
    # the payload alone, and payload with record: both detected
    art.path(none_t.key).write_bytes(art.path(re_t.key).read_bytes())
    assert art.digest(none_t.key) is None and not art.exists(none_t.key)
    summary = Runner(registry, workdir, CPU).run(plan, Store(workdir / "fresh.db"))
    assert none_t.key in {s.key for s in summary.ran}
    for suffix in (".pt", ".json"):
        art.path(none_t.key).with_suffix(suffix).write_bytes(
            art.path(re_t.key).with_suffix(suffix).read_bytes()
        )
    assert not art.exists(none_t.key)
    summary = Runner(registry, workdir, CPU).run(plan, Store(workdir / "fresh2.db"))
    assert none_t.key in {s.key for s in summary.ran}
    assert all(r["status"] == "ok" for r in summary.rows)


def test_a_corrupt_inversion_fails_nothing_and_is_rebuilt_in_the_same_run(registry, workdir):
    plan = _plan(registry)
    Runner(registry, workdir, CPU).run(plan, Store(workdir / "results.db"))
    invert = _step(plan, "invert", "none")
    Artifacts(workdir).path(invert.key).write_bytes(b"garbage")
    summary = Runner(registry, workdir, CPU).run(plan, Store(workdir / "fresh.db"))
    assert [s.key for s in summary.ran] == [invert.key]
    assert len(summary.rows) == 2 and all(r["status"] == "ok" for r in summary.rows)
    assert summary.rows[0]["timings"]["invert_s"] >= 0


def test_data_and_plugin_versions_are_part_of_every_key(registry, monkeypatch):
    a = _plan(registry, defenses=["none"])
    b = expand(
        Request(["meanimg"], ["none"], budget="smoke", metrics=["attack_acc", "natural_acc"]),
        registry,
        data_digest=lambda s: "another subset",
    )
    assert not set(a.steps) & set(b.steps) and a.cells[0].cell_id != b.cells[0].cell_id
    arch = type(registry.get("architecture", "cnn"))
    monkeypatch.setattr(arch, "version", 2)
    c = _plan(registry, defenses=["none"])
    changed = {s.kind for s in c.steps.values() if s.key not in a.steps}
    assert changed == {"target", "invert"}  # the eval model is resnet8: untouched
    metric = type(registry.get("metric", "attack_acc"))
    monkeypatch.setattr(metric, "version", 7)
    assert _plan(registry, defenses=["none"]).cells[0].cell_id != c.cells[0].cell_id


def test_one_cell_per_resolved_defense(registry):
    plan = _plan(registry, defenses=["re[p=0.5]", "re[p=.5]", "none+re[p=0.50]"])
    assert sorted(c.labels["defense"] for c in plan.cells) == ["none", "re[p=0.5]"]
    with pytest.raises(Exception, match="re appears twice"):
        _plan(registry, defenses=["re+re"])


# ---- storage edges -----------------------------------------------------------------------------


def test_stale_temporaries_are_removed_live_ones_kept(workdir):
    art = Artifacts(workdir)
    art.save("ab" * 10, {"x": torch.ones(2)})
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = art.path("ab" * 10).with_name(f"x.pt.tmp{dead.stdout.strip()}")
    live = art.path("ab" * 10).with_name(f"y.pt.tmp{os.getpid()}")
    stale.write_bytes(b"half")
    live.write_bytes(b"being written")
    Artifacts(workdir)
    assert not stale.exists() and live.exists()


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left"), (errno.EROFS, "not writable")])
def test_disk_errors_are_one_line_and_say_what_to_do(workdir, monkeypatch, code, words):
    def failing(obj, f, *args, **kwargs):  # the payload is streamed to its file: the disk fills meanwhile
        f.write(b"half a payload")
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(torch, "save", failing)
    with pytest.raises(ArtifactError, match=words) as err:
        Artifacts(workdir).save("cd" * 10, {"x": torch.ones(2)})
    assert "\n" not in str(err.value) and "--workdir" in str(err.value)
    assert not list((workdir / "artifacts").glob("*/*.tmp*"))  # nothing half-written left behind


def test_a_workdir_that_cannot_be_written_is_a_one_line_error_before_any_work(tmp_path):
    from click.testing import CliRunner

    from reinv_bench.cli import State, cli

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(
        cli,
        ["run", "-d", "none", "--budget", "smoke", "--quiet", "--workdir", str(blocker / "wd")],
        obj=State(()),
    )
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: cannot write") and "--workdir" in line
