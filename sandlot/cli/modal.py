"""``sandlot modal``: find and end the Modal sandboxes sandlot left running."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..console import expected_errors, fail, group

modal_app = group("Sandboxes on Modal (backend='modal'; pip install 'sandlot\\[modal]').")


@modal_app.command("cleanup")
def modal_cleanup(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Terminate them unasked.")] = False,
    everyone: Annotated[
        bool, typer.Option("--all", help="Every sandlot sandbox of the workspace, not only yours.")
    ] = False,
    owner: Annotated[
        str | None, typer.Option("--owner", help="Whose sandboxes (default: user@this machine).")
    ] = None,
) -> None:
    """Find the Modal sandboxes sandlot left running (by their tags) and terminate them."""
    from ..backends import modal as modal_backend  # imported on use: Modal is an extra

    who = None if everyone else (owner or modal_backend.default_owner())
    with expected_errors():
        found = asyncio.run(modal_backend.find_sandboxes(who))
    mine = "sandlot's" if who is None else f"{who}'s"
    if not found:
        typer.echo(f"no running sandboxes of {mine} on Modal")
        return
    table = Table("sandbox", "owner", "host pid")
    for sb, tags in found:
        table.add_row(sb.object_id, tags.get("sandlot-owner", "?"), tags.get("sandlot-pid", "?"))
    Console(highlight=False).print(table)
    if not yes:
        if not sys.stdin.isatty():
            fail(f"terminating {len(found)} sandbox(es) needs --yes")
        typer.confirm(f"Terminate these {len(found)} sandbox(es)?", abort=True)
    with expected_errors():
        asyncio.run(modal_backend.terminate_sandboxes([sb for sb, _ in found]))
    typer.echo(f"terminated {len(found)} sandbox(es) of {mine}")
