"""The plugin manager: pluggy, entry-point group ``reinv_bench``, blocking, provenance.

Habits taken from pytest and datasette: built-in plugins are loaded from the same entry-point
group as third-party ones; ``REINV_BENCH_LOAD_PLUGINS`` (comma list, empty = none) restricts
autoloading; ``-p no:NAME`` blocks one plugin and ``-p module.path`` registers a module by import
path; ``check_pending()`` turns a misspelled hook into an error that names the plugin.

A plugin that fails to import is skipped and recorded in ``pm.failed`` (the CLI warns and goes
on); ``call_each`` calls a hook's implementations one by one so that a raising observer
(``on_result``, ``register_commands``) is reported and skipped instead of aborting the command.
"""

from __future__ import annotations

import importlib
import os
import types
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points

import pluggy

from reinv_bench import hookspecs

GROUP = "reinv_bench"
ENV_LOAD = "REINV_BENCH_LOAD_PLUGINS"
# what every comparison and every run relies on (the undefended baseline, the serial executor):
# -p no: refuses them, as pytest refuses to block its essential plugins
ESSENTIAL = ("none", "inline")


class PluginError(RuntimeError):
    """A plugin could not be loaded or is malformed; the message names it and its package."""


class PluginManager(pluggy.PluginManager):
    def __init__(self) -> None:
        super().__init__(GROUP)
        self.add_hookspecs(hookspecs)
        self.sources: dict[str, str] = {}  # plugin name -> "distribution version"
        self.failed: dict[str, str] = {}  # entry-point name -> why it was skipped (one line)

    def source(self, plugin: object) -> str:
        return self.sources.get(self.get_name(plugin) or "", "registered in-process")

    def register(self, plugin: object, name: str | None = None, source: str | None = None) -> str | None:
        registered = super().register(plugin, name)
        if registered is not None and source is not None:
            self.sources[registered] = source
        return registered

    def load_entrypoints(self, only: Iterable[str] | None = None) -> None:
        wanted = None if only is None else set(only)
        seen = set()
        for ep in entry_points(group=GROUP):
            seen.add(ep.name)
            if (wanted is not None and ep.name not in wanted) or self.is_blocked(ep.name):
                continue
            if self.has_plugin(ep.name):
                continue
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown distribution"
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 - one broken plugin must not break every command
                self.sources[ep.name] = dist
                self.failed[ep.name] = (
                    f"plugin {ep.name!r} ({dist}) failed to import: {exc!r}; skipped it. "
                    f"Fix or uninstall it, block it with -p no:{ep.name}, "
                    f"or list the plugins to load in {ENV_LOAD}"
                )
                continue
            self.register(module, name=ep.name, source=dist)
        if wanted is not None and (missing := wanted - seen):
            raise PluginError(
                f"{ENV_LOAD} names unknown plugin(s) {sorted(missing)}; installed: {sorted(seen)}"
            )

    def check(self) -> None:
        try:
            self.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.get_name(exc.plugin) or repr(exc.plugin)
            raise PluginError(
                f"plugin {name!r} ({self.source(exc.plugin)}) implements an unknown hook: {exc}. "
                f"Known hooks: {', '.join(sorted(_hook_names()))}"
            ) from exc


def call_each(pm: PluginManager, hook: str, warn: Callable[[str], None], **kwargs: object) -> None:
    """Call each implementation of ``hook`` on its own, in pluggy's order; one that raises is
    reported through ``warn`` (a line naming the plugin and its distribution) and skipped."""
    for impl in reversed(getattr(pm.hook, hook).get_hookimpls()):
        try:
            impl.function(**{a: kwargs[a] for a in impl.argnames})
        except Exception as exc:  # noqa: BLE001 - contained: the plugin is named, the command goes on
            warn(
                f"plugin {impl.plugin_name!r} ({pm.source(impl.plugin)}) "
                f"failed in {hook}: {exc!r}; skipped it"
            )


def _hook_names() -> list[str]:
    return [n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "reinv_bench_spec")]


def get_plugin_manager(plugin_args: Iterable[str] = (), extra: Iterable[object] = ()) -> PluginManager:
    """Build a PluginManager from the entry-point group, ``REINV_BENCH_LOAD_PLUGINS`` and ``-p``.

    ``plugin_args`` are the values of ``-p``: ``no:NAME`` blocks NAME, anything else is a module
    imported and registered under its dotted name. ``extra`` objects are registered as well (tests).
    """
    pm = PluginManager()
    modules = []
    for arg in plugin_args:
        if arg.startswith("no:"):
            if arg[3:] in ESSENTIAL:
                raise PluginError(
                    f"-p {arg}: plugin {arg[3:]!r} is essential (the baseline defense and the serial "
                    f"executor: {', '.join(ESSENTIAL)}) and cannot be blocked"
                )
            pm.set_blocked(arg[3:])
        else:
            modules.append(arg)
    env = os.environ.get(ENV_LOAD)
    only = None if env is None else [n.strip() for n in env.split(",") if n.strip()]
    pm.load_entrypoints(only)
    for mod in modules:
        try:
            pm.register(importlib.import_module(mod), name=mod, source=f"-p {mod}")
        except ImportError as exc:
            raise PluginError(f"-p {mod}: cannot import module: {exc}") from exc
        except Exception as exc:
            raise PluginError(f"-p {mod}: importing the module raised {exc!r}") from exc
    for obj in extra:
        pm.register(obj)
    # how a worker process rebuilds this selection (reinv_bench.engine.steps.Env): the -p values, then
    # in-process plugin modules by name; plugin objects cannot be rebuilt elsewhere
    pm.selection = (*plugin_args, *(o.__name__ for o in extra if isinstance(o, types.ModuleType)))
    pm.in_process_only = [o for o in extra if not isinstance(o, types.ModuleType)]
    pm.check()
    return pm
