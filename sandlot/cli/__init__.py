"""The ``sandlot`` command line: run commands, scripts and a REPL in a fresh sandbox.

``sandlot exec``    upload a directory, run a command, download what it wrote.
``sandlot run``     run one Python file.
``sandlot repl``    an interactive (or piped) Python session in a sandbox.
``sandlot doctor``  show the isolation in force here and check that a sandbox starts.

Each subcommand lives in a module of this package (``run``: exec, run and repl;
``doctor``, ``mcp``, ``volume``, ``secrets``, ``modal``); ``rlm``, ``sessions`` and
``experiment`` live beside the layers they drive.

Expected failures (a bad option, a sandbox that dies, a missing file) print one
line to stderr and exit with status 2; a command's own exit status is passed on.
"""

from __future__ import annotations

import warnings
from typing import TextIO

import typer

from ..console import say
from ..experiment.cli import experiment_app
from ..notebook.cli import sessions_app
from ..rlm.cli import rlm_app
from . import doctor, mcp, modal, run, secrets, volume

app = typer.Typer(
    name="sandlot",
    help="Run commands, Python files and a Python REPL in isolated sandboxes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(run.app)
app.add_typer(doctor.app)
app.add_typer(mcp.app)
app.add_typer(rlm_app, name="rlm")
app.add_typer(sessions_app, name="sessions")
app.add_typer(experiment_app, name="experiment")
app.add_typer(volume.volume_app, name="volume")
app.add_typer(secrets.secrets_app, name="secrets")
app.add_typer(modal.modal_app, name="modal")


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Show warnings (such as missing isolation) as one plain line, not a source location."""
    say(f"warning: {message}")


def main() -> None:
    """Entry point of the ``sandlot`` console script."""
    warnings.showwarning = _show_warning
    app(prog_name="sandlot")
