"""Failures that stay contained: a bad or busy results database, failing third-party plugins, bad
input and Ctrl-C are each a one-line error (or a warning) with the right exit code, never a traceback."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import cli_invoke  # the one CLI-invoke helper (also the `invoke` fixture)

from reinv_bench import hookimpl
from reinv_bench.api import ConfigError, Param
from reinv_bench.registry.plugins import PluginError, call_each, get_plugin_manager
from reinv_bench.registry.spec import SpecError, parse
from reinv_bench.results.store import Store, StoreError


def _invoke(*args):
    return cli_invoke(*args)


def _one_line_error(result, *needles):
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


# ---- item 6: the results database ------------------------------------------------------------


def test_garbage_results_db_is_one_line_error(tmp_path):
    (tmp_path / "results.db").write_bytes(os.urandom(8192))
    result = _invoke("leaderboard", "--workdir", str(tmp_path))
    _one_line_error(result, "not a usable SQLite database", "move it aside or use another --workdir")


def test_schema_version_mismatch_is_one_line_error(tmp_path):
    Store(tmp_path / "results.db").close()
    db = sqlite3.connect(tmp_path / "results.db")
    with db:
        db.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    db.close()
    _one_line_error(_invoke("leaderboard", "--workdir", str(tmp_path)), "schema version 999", "--workdir")


def test_busy_database_is_waited_for(tmp_path):
    store = Store(tmp_path / "results.db")
    other = sqlite3.connect(tmp_path / "results.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")  # another writer holds the lock for 1.5 s
    threading.Timer(1.5, lambda: other.execute("COMMIT")).start()
    start = time.monotonic()
    store.put({"cell_id": "c1", "status": "ok"})
    assert time.monotonic() - start >= 1.0
    assert store.done("c1")


def test_database_locked_for_too_long_is_clear_error(tmp_path):
    Store(tmp_path / "results.db").close()
    other = sqlite3.connect(tmp_path / "results.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    store = Store(tmp_path / "results.db", timeout=0.3)
    with pytest.raises(StoreError, match="locked by another process.*let the other run finish"):
        store.put({"cell_id": "c1"})
    other.execute("ROLLBACK")


class _FailingDb:
    """Stands in for the sqlite3 connection to raise what a full or read-only disk raises."""

    def __init__(self, message):
        self.message = message

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, *args):
        raise sqlite3.OperationalError(self.message)

    executemany = execute  # Store.put writes through put_many (one transaction)


@pytest.mark.parametrize(
    "message, advice",
    [
        ("database or disk is full", "no space left on device"),
        ("attempt to write a readonly database", "make it writable"),
        ("disk I/O error", "move it aside"),
    ],
)
def test_write_errors_are_one_line_with_advice(tmp_path, message, advice):
    store = Store(tmp_path / "results.db")
    store.db = _FailingDb(message)
    with pytest.raises(StoreError, match=advice) as info:
        store.put({"cell_id": "c1"})
    assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)


def test_workdir_that_cannot_be_created_is_store_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StoreError, match="results.db"):
        Store(tmp_path / "file" / "results.db")


# ---- item 7: plugins that fail outside steps --------------------------------------------------


class _Observer:
    def __init__(self, fail):
        self.fail, self.seen = fail, []

    @hookimpl
    def on_result(self, cell, result):
        if self.fail:
            raise RuntimeError("observer broke")
        self.seen.append(result["cell_id"])


def test_raising_on_result_is_named_and_others_still_called():
    pm = get_plugin_manager()
    bad, good = _Observer(True), _Observer(False)
    pm.register(good, name="goodobs")
    pm.register(bad, name="badobs")
    warnings = []
    call_each(pm, "on_result", warnings.append, cell=object(), result={"cell_id": "c1"})
    assert good.seen == ["c1"]
    (line,) = warnings
    assert "'badobs' (registered in-process) failed in on_result" in line and "observer broke" in line


def test_run_goes_on_after_a_raising_on_result(registry, tmp_path):
    registry.pm.register(_Observer(True), name="badobs")
    args = [
        "run",
        "-a",
        "meanimg",
        "-d",
        "none",
        "-d",
        "re",
        "--arch",
        "tiny",
        "--eval-arch",
        "tiny",
        "--budget",
        "smoke",
        "--metric",
        "attack_acc",
        "--quiet",
        "--workdir",
        str(tmp_path),
    ]
    result = cli_invoke(*args, registry=registry)
    assert result.exit_code == 0, result.output
    assert result.output.count("failed in on_result: RuntimeError('observer broke')") == 2  # both cells
    assert len(Store(tmp_path / "results.db").rows("ok")) == 2


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def _cli(pythonpath, *args):
    env = {k: v for k, v in os.environ.items() if k != "REINV_BENCH_LOAD_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", "from reinv_bench.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def broken_entry_point(tmp_path_factory):
    """An installed distribution 'brokenplug 1.0' whose reinv_bench entry point raises on import."""
    site = tmp_path_factory.mktemp("site")
    _write(
        site / "brokenplug-1.0.dist-info" / "METADATA",
        "Metadata-Version: 2.1\nName: brokenplug\nVersion: 1.0\n",
    )
    _write(
        site / "brokenplug-1.0.dist-info" / "entry_points.txt", "[reinv_bench]\nbrokenplug = brokenplug_mod\n"
    )
    _write(site / "brokenplug_mod.py", "raise RuntimeError('half-installed')\n")
    _write(
        site / "cmdplug.py",
        """
        from reinv_bench import hookimpl

        @hookimpl
        def register_commands(cli):
            raise ValueError("no commands today")
    """,
    )
    _write(site / "raiseplug.py", "raise ValueError('bad config at import')\n")
    return site


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_plugin_failing_to_import_does_not_break_commands(broken_entry_point, tmp_path):
    for args in (["--help"], ["plugins"]):
        proc = _cli(broken_entry_point, *args)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        (warning,) = [ln for ln in proc.stderr.splitlines() if "brokenplug" in ln]
        assert "'brokenplug' (brokenplug 1.0) failed to import" in warning and "-p no:brokenplug" in warning
    assert "FAILED" in proc.stdout and "brokenplug" in proc.stdout and " gmi " in proc.stdout
    proc = _cli(broken_entry_point, "leaderboard", "--workdir", str(tmp_path))
    assert proc.returncode == 1 and "no results at" in proc.stderr and "Traceback" not in proc.stderr
    proc = _cli(broken_entry_point, "-p", "no:brokenplug", "--help")
    assert proc.returncode == 0 and "brokenplug" not in proc.stderr


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_raising_register_commands_is_named_and_other_commands_work(broken_entry_point):
    proc = _cli(broken_entry_point, "-p", "no:brokenplug", "-p", "cmdplug", "--help")
    assert proc.returncode == 0 and "run" in proc.stdout, proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("Error: plugin 'cmdplug' (-p cmdplug) failed in register_commands")


def test_p_module_raising_anything_is_plugin_error_naming_it(broken_entry_point, monkeypatch):
    monkeypatch.syspath_prepend(str(broken_entry_point))
    with pytest.raises(PluginError, match=r"-p raiseplug: importing the module raised ValueError"):
        get_plugin_manager(("raiseplug", "no:brokenplug"))


# ---- item 10: input validation and Ctrl-C -----------------------------------------------------


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1e999", "NaN"])
def test_nan_and_inf_fail_param_checks(raw):
    with pytest.raises(ConfigError, match=r"p=.*must be a finite number"):
        Param(0.5, low=0.0, high=1.0).parse("p", raw)
    with pytest.raises(ConfigError, match="finite"):
        Param(0.01).parse("beta", raw)  # no range declared: still refused
    with pytest.raises(ConfigError, match="finite"):
        Param((0.1, 0.4)).parse("scale", f"0.1/{raw}")


@pytest.mark.parametrize("spec, message", [("re[p=nan]", "p='nan'"), ("mid[beta=1e999]", "beta='1e999'")])
def test_nan_and_inf_are_one_line_cli_errors(tmp_path, spec, message):
    result = _invoke("run", "--budget", "smoke", "--workdir", str(tmp_path), "-d", spec)
    _one_line_error(result, message, "finite")


def test_duplicate_keys_are_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="'p' is given twice"):
        parse("re[p=0.5,p=0.3]")
    assert parse("re[p=0.5]+bido[p=0.3]")[1].params == {"p": "0.3"}  # one key per component
    _one_line_error(_invoke("run", "--workdir", str(tmp_path), "-d", "re[p=0.5, p=0.3]"), "given twice")


@pytest.mark.parametrize("device", ["mps", "meta", "garbage", "cuda:x", "cuda:99"])
def test_device_is_validated_up_front(tmp_path, device):
    result = _invoke("run", "--budget", "smoke", "--workdir", str(tmp_path), "--device", device)
    _one_line_error(result, f"--device {device}" if device.startswith("cuda:9") else f"--device {device!r}")
    assert not (tmp_path / "results.db").exists()


@pytest.mark.parametrize(
    "where",
    [
        "reinv_bench.engine.runner.expand",
        "reinv_bench.engine.runner.Store",
        "reinv_bench.engine.runner.Runner.run",
    ],
)
def test_ctrl_c_anywhere_in_run_gives_resume_message_and_130(tmp_path, monkeypatch, where):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(where, interrupt)
    result = _invoke(
        "run", "-a", "gmi", "-d", "none", "--budget", "smoke", "--quiet", "--workdir", str(tmp_path)
    )
    assert result.exit_code == 130, result.output
    assert "rerun the same command to resume" in result.output and "Aborted" not in result.output


def test_stores_opening_one_new_database_at_once_all_succeed(tmp_path):
    """Drivers starting on a fresh workdir (here 8 connections at once): each saw no schema version
    and inserted it; all but the first failed
    (UNIQUE constraint failed: meta.key), which made test_two_drivers_on_one_workdir flaky."""
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def open_store(path):
        barrier.wait()
        try:
            Store(path).close()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    for trial in range(20):
        path = tmp_path / f"{trial}" / "results.db"
        threads = [threading.Thread(target=open_store, args=(path,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[0]
