"""The ``sandlot`` command line: run commands, scripts and a REPL in a fresh sandbox.

``sandlot exec``    upload a directory, run a command, download what it wrote.
``sandlot run``     run one Python file.
``sandlot repl``    an interactive (or piped) Python session in a sandbox.
``sandlot doctor``  show the isolation in force here and check that a sandbox starts.

Each subcommand lives in a module of this package (``run``: exec, run and repl;
``doctor``, ``mcp``, ``volume``, ``secrets``, ``modal``), or beside the layer it
drives (``rlm``, ``sessions``, ``experiment``), and is imported only when it
runs: ``SUBCOMMANDS`` names each one, its help line and how to load it.

Expected failures (a bad option, a sandbox that dies, a missing file) print one
line to stderr and exit with status 2; a command's own exit status is passed on.
"""

from __future__ import annotations

import warnings
from typing import TextIO

import typer

from ..console import say
from .lazy import LazyGroup, Subcommand


def _run() -> typer.Typer:
    from .run import app

    return app


def _doctor() -> typer.Typer:
    from .doctor import app

    return app


def _mcp() -> typer.Typer:
    from .mcp import app

    return app


def _rlm() -> typer.Typer:
    from ..rlm.cli import rlm_app

    return rlm_app


def _sessions() -> typer.Typer:
    from ..notebook.cli import sessions_app

    return sessions_app


def _experiment() -> typer.Typer:
    from ..experiment.cli import experiment_app

    return experiment_app


def _volume() -> typer.Typer:
    from .volume import volume_app

    return volume_app


def _secrets() -> typer.Typer:
    from .secrets import secrets_app

    return secrets_app


def _modal() -> typer.Typer:
    from .modal import modal_app

    return modal_app


# In the order `sandlot --help` lists them.
SUBCOMMANDS = (
    Subcommand("exec", "Run a command in a fresh sandbox and exit with its status.", _run),
    Subcommand("run", "Run one Python file in a fresh sandbox and exit with its status.", _run),
    Subcommand(
        "repl",
        "An interactive Python session in a fresh sandbox; its state lasts until you leave.",
        _run,
    ),
    Subcommand(
        "doctor",
        "Show the isolation sandboxes get on this machine and check that one starts.",
        _doctor,
    ),
    Subcommand(
        "mcp",
        "Run an MCP server for notebook sessions (stdio, or loopback HTTP with --http).",
        _mcp,
    ),
    Subcommand(
        "rlm",
        "Recursive Language Models: ask, needle-in-a-haystack, view a trajectory.",
        _rlm,
        group=True,
    ),
    Subcommand(
        "sessions",
        "Notebook sessions: warm Jupyter kernels in sandboxes that agents attach to by id.",
        _sessions,
        group=True,
    ),
    Subcommand(
        "experiment",
        "Experiments from one YAML file: deploy for an outside agent, run, view.",
        _experiment,
        group=True,
    ),
    Subcommand(
        "volume",
        "Named volumes: directories that outlive sandboxes (SandboxConfig(volumes=...)).",
        _volume,
        group=True,
    ),
    Subcommand("secrets", "Check secrets without showing them.", _secrets, group=True),
    Subcommand(
        "modal",
        "Sandboxes on Modal (backend='modal'; pip install 'sandlot\\[modal]').",
        _modal,
        group=True,
    ),
)


class _Sandlot(LazyGroup):
    subcommands = SUBCOMMANDS


app = typer.Typer(
    name="sandlot",
    help="Run commands, Python files and a Python REPL in isolated sandboxes.",
    cls=_Sandlot,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root() -> None:
    """Nothing to do before a subcommand; Typer builds a group only for an app with one."""


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
