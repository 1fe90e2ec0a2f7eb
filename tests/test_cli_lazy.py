"""The command line's start-up (issue 28): the top group lists the core commands from a table and
the plugins' commands from a cache, so that ``reinv-bench --help`` imports no torch; and one set of
run defaults for ``reinv_bench.run()`` and ``reinv-bench run``."""

import importlib
import inspect
import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner
from click.utils import make_default_short_help

from reinv_bench.cli import COMMANDS, State, cli, plugin_commands
from reinv_bench.engine.defaults import DEFAULTS
from reinv_bench.engine.plan import Request

PROBE = (
    "import sys\nfrom reinv_bench.cli import main\nsys.argv = ['reinv-bench', *sys.argv[1:]]\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
    "sys.stderr.write('TORCH=%s' % ('torch' in sys.modules))\n"
    "sys.stderr.write(' PLUGINS=%s' % ('reinv_judges.human' in sys.modules))"
)


def _help(cache: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": cache, "COLUMNS": "100"}
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_table_lists_each_command_as_its_own_help_does(name):
    target, listed = COMMANDS[name]
    module, attr = target.split(":")
    cmd = getattr(importlib.import_module(module), attr)
    assert isinstance(cmd, click.Command) and cmd.name == name
    for limit in range(1, 95):  # every width click's formatter gives (at most 80 columns)
        assert make_default_short_help(listed, limit) == cmd.get_short_help_str(limit), limit


def test_help_with_a_warm_cache_imports_no_torch_and_lists_the_plugins_commands(tmp_path):
    cold = _help(str(tmp_path), "--help")  # no cache: the plugins are loaded (and the cache written)
    assert "TORCH=True" in cold.stderr and plugin_commands.cache_file().name in os.listdir(
        tmp_path / "reinv-bench"
    )
    warm = _help(str(tmp_path), "--help")
    assert "TORCH=False" in warm.stderr, warm.stderr
    assert warm.stdout == cold.stdout and "  judge " in warm.stdout and "  run " in warm.stdout
    # another plugin selection is another key: the plugins are loaded, the human judge blocked
    blocked = _help(str(tmp_path), "-p", "no:human", "--help")
    assert "TORCH=True" in blocked.stderr and "  judge " not in blocked.stdout
    again = _help(str(tmp_path), "--help")  # one key at a time: the plugins are loaded again
    assert "TORCH=True" in again.stderr and again.stdout == cold.stdout


def test_a_broken_cache_file_is_ignored(tmp_path):
    (tmp_path / "reinv-bench").mkdir()
    (tmp_path / "reinv-bench" / plugin_commands.cache_file().name).write_text("{not json")
    proc = _help(str(tmp_path), "--help")
    assert proc.returncode == 0 and "  judge " in proc.stdout and "TORCH=True" in proc.stderr


def test_a_core_command_runs_without_loading_the_plugins(tmp_path):
    proc = _help(str(tmp_path), "verify", str(tmp_path / "missing.tar.gz"))
    assert "no such bundle file" in proc.stderr and "PLUGINS=False" in proc.stderr, proc.stderr


def test_cli_and_python_run_defaults_are_one(monkeypatch, tmp_path):
    """``reinv-bench run`` and ``reinv_bench.run()`` without options: the same budget, executor,
    device, precision and workdir, from reinv_bench.engine.defaults."""
    from reinv_bench.cli import run as run_cmd
    from reinv_bench.engine import runner

    class Called(Exception):
        pass

    def cli_run_grid(req, **kw):
        raise Called(req.budget, kw["executor"], str(kw["device"]), req.precision, kw["workdir"])

    monkeypatch.setenv("REINV_BENCH_HOME", str(tmp_path))  # the --workdir default, as the env sets it
    monkeypatch.setattr(run_cmd, "run_grid", cli_run_grid)
    monkeypatch.setattr(run_cmd, "_check_prerequisites", lambda *a: None)
    result = CliRunner().invoke(cli, ["run"], obj=State(()))
    assert isinstance(result.exception, Called), result.output + repr(result.exception)
    from_cli = result.exception.args

    seen = {}

    def runner_at(registry, workdir, dev, executor, reporter, deterministic, precision):
        seen.update(executor=executor, device=str(dev), precision=precision, workdir=workdir)

    def expand(req, *a, **kw):
        raise Called(req.budget, *seen.values())

    monkeypatch.setattr(runner, "Runner", runner_at)
    monkeypatch.setattr(runner, "expand", expand)
    with pytest.raises(Called) as called:
        runner.run(attacks=["gmi"], defenses=["re"], workdir=tmp_path, check=False)
    assert from_cli == called.value.args
    dev = runner.resolve_device(DEFAULTS.device)
    assert from_cli[:2] == (DEFAULTS.budget(dev.type), DEFAULTS.executor(dev.type, dev.index, 0))
    # and the declared defaults themselves
    params = {p.name: p for p in run_cmd.run.params}
    python = inspect.signature(runner.run).parameters
    assert params["workdir"].default == python["workdir"].default == DEFAULTS.workdir
    assert params["device"].default == python["device"].default == DEFAULTS.device
    assert params["precision"].default == Request.precision == DEFAULTS.precision
    assert params["budget"].default is None and python["executor"].default is None
