"""The command line's context object: the plugins and their registry, loaded on first use."""

from __future__ import annotations

from reinv_bench.cli.errors import PluginsFailed, warn
from reinv_bench.cli.plugin_commands import refresh
from reinv_bench.registry.lookup import Registry
from reinv_bench.registry.plugins import PluginError, PluginManager, get_plugin_manager


class State:
    def __init__(self, plugin_args: tuple[str, ...]) -> None:
        self.plugin_args = plugin_args
        self._registry: Registry | None = None
        self._pm: PluginManager | None = None
        # the core commands' names, where the plugins are loaded for one of them: the cache of the
        # plugins' commands (plugin_commands) is refreshed then; None: not by this State
        self.refresh_commands: set[str] | None = None

    @property
    def pm(self) -> PluginManager:
        if self._pm is None:
            try:
                self._pm = get_plugin_manager(self.plugin_args)
            except PluginError as exc:
                raise PluginsFailed(str(exc)) from None
            for message in self._pm.failed.values():  # once per command: it goes on without them
                warn(message)
            if self.refresh_commands is not None:
                refresh(self._pm, self.plugin_args, self.refresh_commands)
        return self._pm

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self.pm)
        return self._registry
