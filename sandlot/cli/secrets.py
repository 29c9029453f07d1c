"""``sandlot secrets``: check a secret is set without showing it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ..console import expected_errors, group
from ..secrets import read_env_file

secrets_app = group("Check secrets without showing them.")


@secrets_app.command("check")
def secrets_check(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The variable's name.")],
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file", metavar="FILE", help="A .env file to look in (default: ./.env if any)."
        ),
    ] = None,
) -> None:
    """Say whether secret NAME is set (in the environment or a .env file), never its value.

    Exit status 0 when it is set and not empty, 1 when not.
    """
    file = env_file if env_file is not None else Path(".env")
    with expected_errors():
        from_file = read_env_file(file) if env_file is not None or file.is_file() else {}
    where = []
    if name in os.environ:
        where.append(("the environment", os.environ[name]))
    if name in from_file:
        where.append((str(file), from_file[name]))
    if not where:
        looked = "the environment" + (f" and {file}" if from_file or env_file else "")
        typer.echo(f"{name} is not set (looked in {looked})")
        raise typer.Exit(1)
    for place, value in where:
        typer.echo(f"{name} is {'set' if value else 'set but empty'} in {place}")
    raise typer.Exit(0 if any(value for _, value in where) else 1)
