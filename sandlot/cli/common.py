"""What more than one of ``sandlot``'s subcommand modules takes: an option and its check."""

from __future__ import annotations

from typing import Annotated

import typer


def positive(value: float | None) -> float | None:
    """Option callback: reject a timeout that is not greater than zero."""
    if value is not None and value <= 0:
        raise typer.BadParameter(f"must be greater than 0 (got {value:g})")
    return value


BackendOpt = Annotated[
    str | None,
    typer.Option(
        "--backend",
        metavar="NAME",
        help="Where the sandbox runs (default: $SANDLOT_BACKEND, else local).",
    ),
]
