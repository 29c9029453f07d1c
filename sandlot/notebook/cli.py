"""``sandlot sessions``: start, list, attach to and shut down notebook sessions."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..cell_input import cells_from, read_cells
from ..config import SandboxConfig
from ..console import RawOpt, expected_errors, group, say
from ..sink import Sink
from . import NotebookSession, attach, list_sessions, shutdown_session, start_session
from .execution import Execution
from .wire import check_mode

sessions_app = group(
    "Notebook sessions: warm Jupyter kernels in sandboxes that agents attach to by id."
)

SessionArg = Annotated[str, typer.Argument(metavar="SESSION_ID", help="The session's id.")]


def show_execution(ex: Execution, out: Console, err: Console, raw: bool = False) -> None:
    """Print a cell's outputs as a terminal can show them (images named, not drawn).

    The session server redacted them; here they pass a :class:`Sink` that, on a
    terminal and unless ``raw``, shows control characters as escapes.
    """
    shown, shown_err = Sink.to(sys.stdout, raw=raw), Sink.to(sys.stderr, raw=raw)
    if ex.stdout:
        sys.stdout.write(shown.text(ex.stdout))
    if ex.stderr:
        sys.stderr.write(shown_err.text(ex.stderr))
    for result in ex.results:
        text = result.text
        rich = [m for m in result.formats() if m != "text/plain"]
        if text is not None and (result.is_main_result or not rich):
            out.print(shown.text(text), markup=False, highlight=False)
        elif rich:
            listed = shown.text(", ".join(rich))
            out.print(f"[{listed}: see the notebook]", markup=False, style="dim")
    if ex.error is not None:
        error = ex.error.traceback.rstrip() or f"{ex.error.name}: {ex.error.value}"
        err.print(Text(shown_err.text(error), style="red"))
    if ex.truncated:
        say("warning: output was truncated (SandboxConfig.max_output_bytes)")
    if ex.timed_out:
        say("the cell ran out of time and was " + ("restarted" if ex.restarted else "interrupted"))


@sessions_app.command("start")
def sessions_start(
    name: Annotated[
        str | None, typer.Option(help="A name for the session and its notebook.")
    ] = None,
    mode: Annotated[str, typer.Option(help="notebook, filesystem or mcp.")] = "notebook",
    with_: Annotated[
        list[str] | None, typer.Option("--with", help="A package to install (repeatable).")
    ] = None,
    skill: Annotated[
        list[Path] | None, typer.Option(help="A skill file or directory (repeatable).")
    ] = None,
    init: Annotated[list[str] | None, typer.Option(help="Python run before attach.")] = None,
    serve: Annotated[
        list[Path] | None, typer.Option(help="An interface file to serve (repeatable).")
    ] = None,
    notebook: Annotated[Path | None, typer.Option(help="The .ipynb to write.")] = None,
    notebook_dir: Annotated[Path | None, typer.Option(help="Where a new notebook goes.")] = None,
    idle_timeout: Annotated[
        float, typer.Option(help="Seconds idle before the session ends.")
    ] = 3600.0,
    backend: Annotated[str | None, typer.Option(help="Where the sandbox runs.")] = None,
) -> None:
    """Start a session that outlives this command; print its id and how to attach."""
    with expected_errors():
        session = start_session(
            SandboxConfig(python_packages=with_ or []),
            None,
            notebook,
            name,
            mode=check_mode(mode),
            skills=skill or [],
            init_code=init or [],
            serve=serve or [],
            notebook_dir=notebook_dir,
            persist=True,
            idle_timeout=idle_timeout,
            backend=backend,
        )
        session.close()
    typer.echo(session.session_id)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    where = f"; notebook {session.notebook_path}" if session.notebook_path else ""
    err.print(
        f"session {session.session_id} ({session.mode}) is warm{where}. Attach with "
        f"'sandlot sessions attach {session.session_id}', or give an agent 'sandlot mcp' and "
        f"attach_to_session(session_id='{session.session_id}').",
        markup=False,
    )


@sessions_app.command("list")
def sessions_list() -> None:
    """The sessions the session server holds."""
    with expected_errors():
        infos = list_sessions()
    if not infos:
        typer.echo("no sessions")
        return
    table = Table("id", "name", "mode", "status", "idle", "notebook", box=None)
    now = time.time()
    for info in infos:
        table.add_row(
            info.session_id,
            info.name,
            info.mode,
            info.status,
            f"{now - info.last_activity:.0f}s",
            info.notebook_path or "",
        )
    Console(highlight=False, soft_wrap=True).print(table)


def _cells(code: list[str] | None) -> Iterator[str] | list[str]:
    if code:
        return code
    return read_cells() if sys.stdin.isatty() else cells_from(sys.stdin.read())


@sessions_app.command("attach")
def sessions_attach(
    session_id: SessionArg,
    code: Annotated[
        list[str] | None, typer.Option("-c", "--code", help="Run this cell and leave.")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="Each cell's timeout.")] = None,
    raw: RawOpt = False,
) -> None:
    """Work in a session's kernel cell by cell (the cells go into its notebook).

    At a terminal it prompts like Python; Ctrl-C interrupts the running cell,
    Ctrl-D leaves (the session stays). With piped input each group of lines
    separated by a blank line is one cell; the exit status is 1 if any raised.
    """
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    failed = False
    with expected_errors():
        session: NotebookSession = attach(session_id)
        with session:
            if sys.stdin.isatty() and not code:
                err.print(
                    f"attached to {session.session_id} ({session.notebook_path}); Ctrl-D leaves",
                    markup=False,
                )
            for cell in _cells(code):
                try:
                    ex = session.execute(cell, timeout=timeout)
                except KeyboardInterrupt:
                    session.interrupt()
                    ex = session.wait()
                show_execution(ex, out, err, raw)
                failed = failed or ex.error is not None
    raise typer.Exit(1 if failed else 0)


@sessions_app.command("shutdown")
def sessions_shutdown(
    session_id: Annotated[str | None, typer.Argument(metavar="[SESSION_ID]")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every session.")] = False,
) -> None:
    """End a session (or all of them); their notebooks stay."""
    with expected_errors():
        if all_:
            ids = [info.session_id for info in list_sessions()]
        elif session_id:
            ids = [session_id]
        else:
            raise typer.BadParameter("give a SESSION_ID or --all")
        for sid in ids:
            shutdown_session(sid)
            typer.echo(f"shut down {sid}")
