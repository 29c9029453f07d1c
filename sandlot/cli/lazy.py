"""Subcommands whose modules are imported only when they run.

``sandlot --help`` lists every subcommand with its help line from a stub (a
name and that line, nothing imported); the command that runs, or whose own
``--help`` is asked for, is built from its module then. ``tests/test_cli.py``
checks each stub's line against the help of the command it stands for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

if TYPE_CHECKING:
    from typer import _click  # typer's own copy of click: its commands and contexts


@dataclass(frozen=True)
class Subcommand:
    """One subcommand of a lazy group, known by name and help line before it is imported."""

    name: str
    help: str  # the first paragraph of the command's help, as the group's help lists it
    load: Callable[[], typer.Typer]  # imports the module; the Typer app that holds it
    group: bool = False  # the app is the subcommand (a group); else it holds a command of `name`

    def command(self) -> _click.Command:
        """The subcommand itself, built from its module (imported now)."""
        built = typer.main.get_group(self.load())
        if self.group:
            built.name = self.name
            return built
        return built.commands[self.name]


class _Stub(TyperCommand):
    """A subcommand's place in its group before it is imported: its name and help line."""

    def __init__(self, subcommand: Subcommand) -> None:
        super().__init__(subcommand.name, help=subcommand.help)
        self.subcommand = subcommand


class LazyGroup(TyperGroup):
    """A group whose ``subcommands`` are stubs until one is resolved to run."""

    subcommands: ClassVar[tuple[Subcommand, ...]] = ()

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for subcommand in self.subcommands:
            self.commands[subcommand.name] = _Stub(subcommand)

    def resolve_command(
        self, ctx: _click.Context, args: list[str]
    ) -> tuple[str | None, _click.Command | None, list[str]]:
        """Click's lookup of the subcommand to run, with a stub replaced by its command."""
        name, command, rest = super().resolve_command(ctx, args)
        if isinstance(command, _Stub):
            subcommand = command.subcommand
            command = self.commands[subcommand.name] = subcommand.command()
        return name, command, rest
