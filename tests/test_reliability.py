"""Issue 21 sections 1, 3 and 4: step locks that never hang (heartbeat, stale on any host, a
message naming the holder, --break-locks), bounded seeds, clean one-line errors for bad grid files
and unwritable outputs, a results.db readable on read-only media and an honest full-disk message,
and workers that compute with the driver's thread count."""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from reinv_bench.api import ConfigError
from reinv_bench.engine.artifacts import Artifacts, StepLock, describe_holder, parse_holder
from reinv_bench.engine.grid import MAX_SEEDS, load
from reinv_bench.results.store import Store, StoreError

TESTS = Path(__file__).parent
KEY = "ab" * 10


def _lock_file(art: Artifacts, text: str, age: float = 0.0) -> Path:
    """A lock file for KEY holding ``text``, last refreshed ``age`` seconds ago."""
    path = art.root / KEY[:2] / f"{KEY}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def _acquire(art: Artifacts, within: float, **kw) -> tuple[float, list[str]]:
    """Take KEY's lock in a thread; (seconds it took, messages). Fails if it takes over ``within``
    seconds (before issue 21 such locks were polled forever)."""
    said: list[str] = []
    took: list[float] = []

    def take():
        t0 = time.monotonic()
        with art.lock(KEY, poll=0.02, notify=said.append, **kw):
            took.append(time.monotonic() - t0)

    t = threading.Thread(target=take, daemon=True)
    t.start()
    t.join(within)
    assert took, f"the lock was not taken within {within} s; messages: {said}"
    return took[0], said


# ---- 1. step locks -------------------------------------------------------------------------------


def test_an_old_lock_of_another_host_is_taken_over(tmp_path):
    art = Artifacts(tmp_path)
    holder = json.dumps(
        {"host": "killed-container-7f3a", "pid": 4242, "since": "2026-01-01T00:00:00Z", "token": "x"}
    )
    _lock_file(art, holder, age=3600)
    seconds, said = _acquire(art, 10, stale=0.5)
    assert 0.4 <= seconds < 5  # judged by watching it unchanged, not by its mtime (issue 30, item 21)
    assert any("took over" in m and "killed-container-7f3a" in m for m in said)
    assert not (art.root / KEY[:2] / f"{KEY}.lock").exists()  # released


def test_a_lock_of_another_host_written_before_heartbeats_is_taken_over_once_not_refreshed(tmp_path):
    art = Artifacts(tmp_path)
    _lock_file(art, "node17 999999", age=0)  # "host pid": the format of earlier versions, just written
    seconds, said = _acquire(art, 10, stale=0.5)
    assert 0.4 <= seconds < 5  # waited the stale time, watching it not being refreshed, then took it
    assert any("waiting" in m and "host node17 pid 999999" in m for m in said)


def test_a_lock_naming_a_live_unrelated_process_of_this_host_is_taken_over(tmp_path):
    art = Artifacts(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock_file(art, f"{socket.gethostname()} {other.pid}", age=600)  # its pid is alive: not a holder
        seconds, said = _acquire(art, 10, stale=0.5)
    finally:
        other.kill()
        other.wait()
    assert seconds < 5 and any("unchanged for" in m for m in said)


def test_the_waiting_message_names_the_holder_host_pid_and_since(tmp_path):
    art = Artifacts(tmp_path)
    holder = json.dumps({"host": "gpu-node-3", "pid": 31337, "since": "2026-12-02T06:00:00Z", "token": "t"})
    path = _lock_file(art, holder)
    said: list[str] = []
    t = threading.Thread(
        target=lambda: art.lock(KEY, poll=0.02, stale=30, notify=said.append).__enter__(), daemon=True
    )
    t.start()
    time.sleep(0.5)
    assert t.is_alive()  # a fresh lock is waited for
    assert len(said) == 1  # said once, not at every poll
    assert "host gpu-node-3 pid 31337 since 2026-12-02T06:00:00Z" in said[0]
    assert "--break-locks" in said[0] and "30 s" in said[0]
    path.unlink()  # the holder releases it
    t.join(5)
    assert not t.is_alive()


def test_a_live_holder_keeps_its_lock_by_its_heartbeat(tmp_path):
    """The holder refreshes the lock well within the stale time: a waiter never takes it over,
    however long the step runs."""
    art = Artifacts(tmp_path)
    order: list[str] = []
    said: list[str] = []

    def second():
        with art.lock(KEY, poll=0.02, stale=0.4, notify=said.append):
            order.append("second")

    with art.lock(KEY, stale=0.4):
        t = threading.Thread(target=second, daemon=True)
        t.start()
        time.sleep(1.5)  # almost four stale times
        order.append("first")
    t.join(5)
    assert order == ["first", "second"]
    assert not any("took over" in m for m in said)


def test_release_leaves_a_lock_that_was_taken_over(tmp_path):
    art = Artifacts(tmp_path)
    path = art.root / KEY[:2] / f"{KEY}.lock"
    with art.lock(KEY, stale=30):
        assert parse_holder(path.read_text()) == (socket.gethostname(), os.getpid())
        path.write_text(json.dumps({"host": "other", "pid": 1, "since": "now", "token": "theirs"}))
    assert path.exists() and "theirs" in path.read_text()  # the new holder's lock is not removed


def test_parse_and_describe_holder():
    assert parse_holder("host-a 123") == ("host-a", 123)
    assert parse_holder('{"host": "h", "pid": 5, "since": "S"}') == ("h", 5)
    assert parse_holder("garbage") == ("garbage", None)
    assert describe_holder('{"host": "h", "pid": 5, "since": "S"}') == "host h pid 5 since S"


def test_stale_time_from_the_environment_is_checked(monkeypatch, tmp_path):
    monkeypatch.setenv("REINV_BENCH_LOCK_STALE", "2.5")
    assert StepLock(tmp_path / "x.lock").stale == 2.5
    monkeypatch.setenv("REINV_BENCH_LOCK_STALE", "soon")
    with pytest.raises(Exception, match="REINV_BENCH_LOCK_STALE='soon'"):
        StepLock(tmp_path / "x.lock")


def test_break_locks_removes_every_lock(tmp_path):
    art = Artifacts(tmp_path)
    _lock_file(art, "elsewhere 1")
    (art.root / "cd").mkdir()
    (art.root / "cd" / "cdcd.lock").write_text("elsewhere 2")
    assert len(art.break_locks()) == 2 and art.locks() == []


def test_run_break_locks_is_documented_and_removes_the_locks(tmp_path, invoke):
    assert "--break-locks" in invoke("run", "--help").output
    art = Artifacts(tmp_path)
    path = _lock_file(art, json.dumps({"host": "busy", "pid": 1, "since": "S", "token": "t"}))
    result = invoke(
        "run", "--break-locks", "-a", "nosuch-attack", "--workdir", tmp_path
    )  # fails after breaking
    assert not path.exists()
    assert "removed 1 step lock(s)" in result.output


# ---- 4. bounded seeds, grid files, outputs ------------------------------------------------------


def test_run_with_an_absurd_seed_count_is_refused_at_once():
    env = {**os.environ, "REINV_BENCH_LOAD_PLUGINS": ""}
    proc = subprocess.run(
        [sys.executable, "-c", "from reinv_bench.cli import main; main()", "run", "--seeds", "100000000"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2
    assert f"1<=x<={MAX_SEEDS}" in proc.stderr and "Traceback" not in proc.stderr


def test_an_absurd_seed_count_from_python_is_refused_at_plan_time(registry):
    from reinv_bench.api import ConfigError
    from reinv_bench.engine.plan import Request, expand

    req = Request(["gmi"], ["re"], [], ["mnist"], 10**8, "smoke", True, None, None, None)
    with pytest.raises(ConfigError, match="seeds must be between 1 and"):
        expand(req, registry, data_digest=lambda name: "d")


@pytest.mark.parametrize("seeds", [0, -1, MAX_SEEDS + 1])
def test_grid_seeds_out_of_bounds_is_an_error(tmp_path, seeds, invoke):
    grid = tmp_path / "g.toml"
    grid.write_text(f'attacks = ["meanimg"]\nseeds = {seeds}\n')
    with pytest.raises(ConfigError, match=f"seeds must be between 1 and {MAX_SEEDS}.*got {seeds}"):
        load(grid)
    result = invoke("run", "--grid", grid, "--workdir", tmp_path / "w", extra=(sys.modules["conftest"],))
    assert result.exit_code == 1 and "seeds must be between" in result.output
    assert not (tmp_path / "w" / "results.db").exists()


def test_grid_seeds_within_bounds_load(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text("seeds = 3\n")
    assert load(grid)["seeds"] == 3


def test_a_grid_file_that_is_not_utf8_is_one_line(tmp_path, invoke):
    grid = tmp_path / "g.toml"
    before = 'attacks = ["gmi"]\n# caf'
    grid.write_bytes((before + "\u00e9\n").encode("latin-1"))  # é in Latin-1: byte 0xe9
    with pytest.raises(
        ConfigError, match=rf"not UTF-8 text \(byte 0xe9 at offset {len(before)}\); save it as UTF-8"
    ):
        load(grid)
    result = invoke("run", "--grid", grid, "--workdir", tmp_path / "w")
    assert result.exit_code == 1 and "not UTF-8" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def _unwritable(monkeypatch, target: Path, code: int = errno.EROFS) -> None:
    """Writing ``target`` fails as on read-only media (root writes through chmod, so tests raise it)."""
    real = Path.write_text

    def write_text(self, *args, **kwargs):
        if self == target:
            raise OSError(code, os.strerror(code), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A workdir with the results of a smoke run of conftest's meanimg on the tiny network."""
    wd = tmp_path_factory.mktemp("stored")
    from conftest import cli_invoke

    cli_invoke(
        "run",
        "-a",
        "meanimg",
        "--arch",
        "tiny",
        "--eval-arch",
        "tiny",
        "-d",
        "re",
        "--budget",
        "smoke",
        "--metric",
        "natural_acc",
        "--metric",
        "attack_acc",
        "--quiet",
        "--workdir",
        wd,
        extra=(sys.modules["conftest"],),
        ok=True,
    )
    return wd


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_report_to_an_unwritable_file_is_one_line(stored, tmp_path, monkeypatch, invoke, code):
    out = tmp_path / "report.html"
    _unwritable(monkeypatch, out, code)
    result = invoke("report", "-o", out, "--workdir", stored)
    assert result.exit_code == 1, result.output
    assert f"cannot write {out}: {os.strerror(code)}; pass -o a path" in result.output
    assert isinstance(result.exception, SystemExit)  # no traceback


def test_report_into_a_missing_folder_is_one_line(stored, tmp_path, invoke):
    (tmp_path / "file").write_text("")
    result = invoke("report", "-o", tmp_path / "file" / "report.html", "--workdir", stored)
    assert result.exit_code == 1 and "cannot write" in result.output


# ---- 4. the results database on read-only media and on a full disk ------------------------------


def _namespace_ok() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_namespace = pytest.mark.skipif(
    shutil.which("unshare") is None or not _namespace_ok(),
    reason="needs unshare -rm (a private mount namespace) for real read-only/full disks",
)


def _in_namespace(script: str, code: str) -> subprocess.CompletedProcess:
    """Run ``script`` (sh: mounts) then ``python -c code`` in a private mount namespace."""
    py = f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"{script} && {py}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=TESTS.parent,
    )


def _db_with_rows(folder: Path) -> Path:
    store = Store(folder / "results.db")
    store.put({"cell_id": "c1", "status": "ok", "metrics": {"attack_acc": 0.5}})
    store.put({"cell_id": "c2", "status": "failed", "error": "boom"})
    store.close()
    return folder / "results.db"


@needs_namespace
def test_a_database_on_read_only_media_can_be_read(tmp_path):
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    _db_with_rows(src)
    code = (
        f"from reinv_bench.results.store import Store, StoreError\n"
        f"s = Store({str(mnt / 'results.db')!r})\n"
        f"print(s.read_only, sorted(r.cell_id for r in s.rows()), s.get('c1').metrics)\n"
        f"try:\n    s.put({{'cell_id': 'c3'}})\nexcept StoreError as e:\n    print('ERR', e)\n"
    )
    proc = _in_namespace(f"mount --bind -o ro {src} {mnt}", code)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "True ['c1', 'c2'] {'attack_acc': 0.5}"
    assert lines[1].startswith("ERR cannot write results.db") and "readonly" in lines[1]
    assert sorted(p.name for p in src.iterdir()) == ["results.db"]  # nothing written beside it


@needs_namespace
def test_a_read_only_database_with_its_journal_and_shared_memory_files_reads_the_journal(tmp_path):
    """Copied while a writer had it open: the rows still in results.db-wal are read too."""
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    store = Store(tmp_path / "live" / "results.db")
    store.put({"cell_id": "c1", "status": "ok"})
    for name in ("results.db", "results.db-wal", "results.db-shm"):  # copied before the writer closes
        shutil.copy(tmp_path / "live" / name, src / name)
    store.close()
    assert (src / "results.db-wal").stat().st_size > 0
    code = (
        "from reinv_bench.results.store import Store\n"
        f"print([r.cell_id for r in Store({str(mnt / 'results.db')!r}).rows()])\n"
    )
    proc = _in_namespace(f"mount --bind -o ro {src} {mnt}", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['c1']"


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
@needs_namespace
def test_the_leaderboard_reads_a_database_on_read_only_media(stored, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    code = (
        "from reinv_bench.cli import main; import sys; "
        f"sys.argv = ['reinv-bench', 'leaderboard', '--format', 'csv', '--workdir', {str(mnt)!r}]; main()"
    )
    proc = _in_namespace(f"mount --bind -o ro {stored} {mnt}", code)
    assert proc.returncode == 0, proc.stderr
    assert "meanimg" in proc.stdout and "re" in proc.stdout


def test_read_only_database_with_unmerged_journal_says_so(tmp_path, monkeypatch):
    db = _db_with_rows(tmp_path)
    (tmp_path / "results.db-wal").write_bytes(b"x" * 100)
    monkeypatch.setattr("reinv_bench.results.store._read_only", lambda path: True)
    with pytest.raises(StoreError, match="read-only and its write-ahead journal results.db-wal holds writes"):
        Store(db)


def test_a_read_only_database_of_another_schema_is_one_line(tmp_path, monkeypatch):
    db = _db_with_rows(tmp_path)
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    con.commit()
    con.close()
    monkeypatch.setattr("reinv_bench.results.store._read_only", lambda path: True)
    with pytest.raises(StoreError, match="read-only and has schema version 2.*copy it to a writable folder"):
        Store(db)


@needs_namespace
def test_a_full_disk_says_the_database_is_intact(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    code = (
        f"from reinv_bench.results.store import Store, StoreError\n"
        f"s = Store({str(disk / 'results.db')!r}); s.put({{'cell_id': 'c1', 'status': 'ok'}}); s.close()\n"
        f"try:\n    f = open({str(disk / 'fill')!r}, 'wb')\n    while True: f.write(b'0' * 4096); f.flush()\n"
        f"except OSError:\n    pass\n"
        f"try:\n    print(len(Store({str(disk / 'results.db')!r}).rows()))\nexcept StoreError as e:\n"
        f"    print('ERR', e)\n"
    )
    proc = _in_namespace(f"mount -t tmpfs -o size=1m tmpfs {disk}", code)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip()
    assert out.startswith("ERR") and "no space left on device" in out and "the database is intact" in out
    assert "move it aside" not in out


def test_disk_io_error_on_a_full_disk_is_not_called_unusable(tmp_path, monkeypatch):
    store = Store(tmp_path / "results.db")

    class Failing:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def execute(self, *args):
            raise sqlite3.OperationalError("disk I/O error")

        executemany = execute  # Store.put writes through put_many (one transaction)

    store.db = Failing()
    monkeypatch.setattr(
        "reinv_bench.results.store.shutil.disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 0)
    )
    with pytest.raises(StoreError, match="no space left on device.*the database is intact") as info:
        store.put({"cell_id": "c1"})
    assert "move it aside" not in str(info.value)


# ---- 3. threads -----------------------------------------------------------------------------------


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_local_workers_compute_with_the_drivers_thread_count(registry, tmp_path):
    """Each local worker computes with the driver's torch threads (what an inline run uses), so
    both executors write the same bytes; rows record the count in their device column."""
    import torch

    from reinv_bench.engine.plan import Request, expand
    from reinv_bench.engine.runner import Runner

    plan = expand(
        Request(
            ["meanimg"],
            ["none"],
            archs=["tiny"],
            eval_arch="tiny",
            budget="smoke",
            metrics=["natural_acc", "attack_acc"],
        ),
        registry,
    )
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # not torch's default here, nor the cores divided between two workers
    try:
        rows = {}
        for name in ("inline", "local[workers=2]"):
            wd = tmp_path / name
            rows[name] = Store(wd / "results.db")
            Runner(registry, wd, torch.device("cpu"), executor=name).run(plan, rows[name])
    finally:
        torch.set_num_threads(before)
    inline, local = (sorted((r.cell_id, r.device, r.metrics) for r in s.rows()) for s in rows.values())
    assert [r[1] for r in local] == ["cpu (3 threads)"] and local == inline
    digests = {
        name: sorted(
            json.loads(p.read_text())["sha256"] for p in (tmp_path / name / "artifacts").glob("*/*.json")
        )
        for name in rows
    }
    assert digests["inline"] == digests["local[workers=2]"]
