"""The top command group: commands imported when they run, user errors as clean messages."""

from __future__ import annotations

import importlib

import click

from reinv_bench.cli.errors import USER_ERRORS
from reinv_bench.cli.plugin_commands import stub
from reinv_bench.registry.lookup import UnknownNameError


class Cli(click.Group):
    """A group whose core commands are a table of name -> ("module:attribute", help): ``--help``
    lists them from the table and a command's module is imported only when it runs or its own
    ``--help`` is asked. Plugins' commands are added with ``add_command`` (``register_commands``)
    or, for the listing only, from their cache (``cached``: plugin_commands). Turns user errors
    (unknown names, bad parameters, missing data) into clean messages."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy
        self.cached: dict[str, dict] = {}  # name -> listing, of the plugins' commands not loaded
        self._imported: dict[str, click.Command] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.lazy, *self.commands, *self.cached})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name not in self.lazy:
            return None
        if cmd_name not in self._imported:
            module, attr = self.lazy[cmd_name][0].split(":")
            self._imported[cmd_name] = getattr(importlib.import_module(module), attr)
        return self._imported[cmd_name]

    def _listed(self, name: str) -> click.Command:
        """The command as ``--help`` lists it, imported or not."""
        if name in self.commands:
            return self.commands[name]
        if name in self._imported:
            return self._imported[name]
        if name in self.lazy:
            return click.Command(name, help=self.lazy[name][1])
        return stub(name, self.cached[name])

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's listing of the commands (same layout), from ``_listed``: nothing imported."""
        commands = [(name, self._listed(name)) for name in self.list_commands(ctx)]
        commands = [(name, cmd) for name, cmd in commands if not cmd.hidden]
        if commands:
            limit = formatter.width - 6 - max(len(name) for name, _ in commands)
            rows = [(name, cmd.get_short_help_str(limit)) for name, cmd in commands]
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            failed = getattr(getattr(ctx.obj, "_pm", None), "failed", None)
            if isinstance(exc, UnknownNameError) and failed:
                raise click.ClickException(
                    f"{exc} (plugins that failed to import: {', '.join(failed)})"
                ) from None
            raise click.ClickException(str(exc)) from None
