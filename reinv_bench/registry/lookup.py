"""Typed lookups over what the plugins registered (timm/lm-eval style registries).

Each kind maps to the hook that fills it. Every entry remembers the plugin and distribution it
came from, so ``reinv-bench plugins`` can show provenance and errors can name the culprit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reinv_bench.contract.config import did_you_mean
from reinv_bench.registry.plugins import PluginError, PluginManager, get_plugin_manager

KINDS = {
    "attack": "register_attacks",
    "defense": "register_defenses",
    "architecture": "register_architectures",
    "scenario": "register_datasets",
    "metric": "register_metrics",
    "judge": "register_judges",
    "executor": "register_executors",
    "weights": "register_weights",
}


class UnknownNameError(KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    obj: Any
    plugin: str
    source: str


class Registry:
    def __init__(self, pm: PluginManager) -> None:
        self.pm = pm
        self.selection: tuple[str, ...] = getattr(pm, "selection", ())  # rebuilds it in a worker
        self._entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        for kind, hook in KINDS.items():
            # call each implementation on its own so every item keeps its provenance
            for impl in reversed(getattr(pm.hook, hook).get_hookimpls()):
                plugin = impl.plugin_name
                source = pm.source(impl.plugin)
                try:
                    items = impl.function() or []
                except Exception as exc:
                    raise PluginError(f"plugin {plugin!r} ({source}) failed in {hook}: {exc!r}") from exc
                for obj in items:
                    name = getattr(obj, "name", None)
                    if not isinstance(name, str) or not name:
                        raise PluginError(f"plugin {plugin!r} ({source}) registered a {kind} without a name")
                    if name in self._entries[kind]:
                        other = self._entries[kind][name]
                        raise PluginError(
                            f"{kind} {name!r} is registered twice: by {other.plugin!r} ({other.source}) "
                            f"and by {plugin!r} ({source}); block one with -p no:NAME"
                        )
                    self._entries[kind][name] = Entry(kind, name, obj, plugin, source)

    def get(self, kind: str, name: str) -> Any:
        entries = self._entries[kind]
        if name not in entries:
            raise UnknownNameError(f"unknown {kind} {name!r}{did_you_mean(name, entries)}")
        return entries[name].obj

    def entry(self, kind: str, name: str) -> Entry:
        self.get(kind, name)
        return self._entries[kind][name]

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def entries(self, kind: str) -> list[Entry]:
        return [self._entries[kind][n] for n in self.names(kind)]

    def registered(self, kind: str) -> list[Entry]:
        """The entries of ``kind`` in registration order (plugin load order, then each hook's list)."""
        return list(self._entries[kind].values())


def load(plugin_args: tuple[str, ...] = (), extra: tuple[object, ...] = ()) -> Registry:
    return Registry(get_plugin_manager(plugin_args, extra))
