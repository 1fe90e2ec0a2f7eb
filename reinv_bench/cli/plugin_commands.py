"""The plugins' commands (``register_commands``) and a small cache of their names and help, so
that ``reinv-bench --help`` lists them without loading the plugins (which import torch).

The cache is one JSON file in the user's cache folder ($XDG_CACHE_HOME/reinv-bench, else
~/.cache/reinv-bench), keyed by what decides which commands the plugins add: every entry point of
the ``reinv_bench`` group (name, value, distribution and version, and the size and time of its
module's file), the ``-p`` values, ``REINV_BENCH_LOAD_PLUGINS`` and reinv-bench's version. It is
written whenever the plugins are loaded and the cache is stale, and only when every plugin
imported and registered its commands without an error: a broken plugin is loaded, and named,
by every ``--help``, as before. Without a valid cache, ``--help`` loads the plugins.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click

from reinv_bench import __version__
from reinv_bench.contract.files import ArtifactError, write_atomic, write_bytes
from reinv_bench.registry.plugins import ENV_LOAD, GROUP, PluginManager, call_each

CACHE_FORMAT = 1


def cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "reinv-bench" / "plugin-commands.json"


def _module_stamp(module: str) -> list | None:
    """Path, size and modification time of a module's file, found without importing it (nor its
    packages): a plugin edited in place changes the key."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
        for part in rest:
            if spec is None or not spec.submodule_search_locations:
                return None
            spec = importlib.machinery.PathFinder.find_spec(part, list(spec.submodule_search_locations))
        if spec is None or not spec.origin or not os.path.isfile(spec.origin):
            return None
        st = os.stat(spec.origin)
    except (ImportError, ValueError, OSError):
        return None
    return [spec.origin, st.st_size, st.st_mtime_ns]


def selection_key(plugin_args: tuple[str, ...]) -> str:
    """The digest of everything that decides the plugins' commands (see the module docstring)."""
    eps, dists = [], {}  # a distribution's name and version read once (each reads its metadata)
    for ep in entry_points(group=GROUP):
        if ep.dist is not None and id(ep.dist) not in dists:
            dists[id(ep.dist)] = [ep.dist.name, ep.dist.version]
        dist = dists[id(ep.dist)] if ep.dist is not None else None
        eps.append([ep.name, ep.value, dist, _module_stamp(ep.module)])
    modules = [[a, _module_stamp(a)] for a in plugin_args if not a.startswith("no:")]
    parts = [CACHE_FORMAT, __version__, sys.executable, list(plugin_args), os.environ.get(ENV_LOAD)]
    text = json.dumps([*parts, sorted(eps, key=str), modules], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def read(key: str) -> dict[str, dict[str, Any]] | None:
    """The cached listing of the plugins' commands for ``key``; None if there is none or it is stale."""
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key or not isinstance(data.get("commands"), dict):
        return None
    return data["commands"]


def write(key: str, commands: dict[str, click.Command]) -> None:
    """Cache the listing of ``commands`` under ``key``; a folder that cannot be written is skipped."""
    listing = {
        name: {"help": c.help, "short_help": c.short_help, "hidden": c.hidden, "deprecated": c.deprecated}
        for name, c in commands.items()
    }
    text = json.dumps({"key": key, "commands": listing}, indent=1, sort_keys=True)
    try:
        write_atomic(cache_file(), write_bytes(text.encode()))
    except ArtifactError:  # read-only home: --help loads the plugins, as without a cache
        pass


def stub(name: str, listed: dict[str, Any]) -> click.Command:
    """A command that only lists itself (name and short help) in ``--help``."""
    return click.Command(
        name,
        help=listed.get("help"),
        short_help=listed.get("short_help"),
        hidden=bool(listed.get("hidden")),
        deprecated=listed.get("deprecated") or False,
    )


def register(pm: PluginManager, group: click.Group, report: Callable[[str], None]) -> bool:
    """Every plugin's ``register_commands`` on ``group``, each on its own (one that raises is
    reported and skipped); True when every plugin imported and none raised."""
    failures: list[str] = []

    def failed(text: str) -> None:
        failures.append(text)
        report(text)

    call_each(pm, "register_commands", failed, cli=group)
    return not failures and not pm.failed


def refresh(pm: PluginManager, plugin_args: tuple[str, ...], core: set[str]) -> None:
    """Plugins loaded for a command other than ``--help``: rewrite a stale cache from the commands
    they register on a scratch group (their errors are the ``--help``'s to report)."""
    key = selection_key(plugin_args)
    if read(key) is not None:
        return
    scratch = click.Group()
    if register(pm, scratch, lambda text: None):
        write(key, {n: c for n, c in scratch.commands.items() if n not in core})
