"""The plugin manager: entry points, blocking and selecting, failures named, duplicates refused
(the docs of the hooks are tested in test_docs.py)."""

import pytest

from reinv_bench import hookimpl
from reinv_bench.api import Defense
from reinv_bench.registry.lookup import Registry, UnknownNameError, load
from reinv_bench.registry.plugins import PluginError, get_plugin_manager


def test_builtins_come_from_the_entry_point_group():
    reg = load()
    assert "gmi" in reg.names("attack")
    assert {"none", "re"} <= set(reg.names("defense"))
    assert {"mnist", "mnist-gmi"} <= set(reg.names("scenario"))
    assert reg.entry("attack", "gmi").source.startswith("reinv-bench ")


def test_plugin_registered_in_a_test_appears_in_plugins_command(invoke):
    class Shield(Defense):
        name = "shield"

    class Plugin:
        @hookimpl
        def register_defenses(self):
            return [Shield]

    result = invoke("plugins", extra=(Plugin(),), ok=True)
    line = next(ln for ln in result.output.splitlines() if " shield " in f" {ln} ")
    assert line.split()[0] == "defense"
    assert "registered in-process" in line


def test_misspelled_hook_is_an_error_naming_the_plugin():
    class Typo:
        @hookimpl
        def register_attack(self):  # missing the final 's'
            return []

    with pytest.raises(PluginError, match=r"register_attack.*Known hooks"):
        get_plugin_manager(extra=(Typo(),))


def test_unknown_name_gets_did_you_mean():
    with pytest.raises(UnknownNameError, match=r"did you mean 'gmi'\?.*Known: .*gmi"):
        load().get("attack", "gmj")


def test_failing_plugin_is_named():
    class Broken:
        @hookimpl
        def register_metrics(self):
            raise RuntimeError("boom")

    pm = get_plugin_manager(extra=(Broken(),))
    with pytest.raises(PluginError, match=r"failed in register_metrics: RuntimeError\('boom'\)"):
        Registry(pm)


def test_empty_env_var_loads_no_plugin(monkeypatch):
    monkeypatch.setenv("REINV_BENCH_LOAD_PLUGINS", "")
    reg = load()
    assert all(reg.names(k) == [] for k in ("attack", "defense", "scenario", "metric"))


def test_env_var_selects_plugins(monkeypatch):
    monkeypatch.setenv("REINV_BENCH_LOAD_PLUGINS", "re, none")
    reg = load()
    assert reg.names("defense") == ["none", "re"]
    assert reg.names("attack") == []
    monkeypatch.setenv("REINV_BENCH_LOAD_PLUGINS", "nosuch")
    with pytest.raises(PluginError, match="nosuch"):
        load()


def test_block_with_p_no():
    reg = load(plugin_args=("no:gmi",))
    assert "gmi" not in reg.names("attack")
    assert "re" in reg.names("defense")


def test_duplicate_names_are_refused():
    class Again(Defense):
        name = "re"

    class Plugin:
        @hookimpl
        def register_defenses(self):
            return [Again]

    with pytest.raises(PluginError, match="registered twice"):
        load(extra=(Plugin(),))


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_p_is_parsed_once_by_click_in_every_form():
    import subprocess
    import sys

    from reinv_bench.cli import _plugin_args

    assert _plugin_args(["-pno:gmi", "-p", "no:kedmi", "run", "-a", "gmi"]) == ("no:gmi", "no:kedmi")
    assert _plugin_args(["--help"]) == ()
    out = subprocess.run(
        [sys.executable, "-c", "from reinv_bench.cli import main; main()", "-pno:gmi", "plugins"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    names = {line.split()[1] for line in out.stdout.splitlines() if line.startswith("attack")}
    assert "gmi" not in names and "kedmi" in names
