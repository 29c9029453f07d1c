"""``sandlot mcp``: an MCP server for notebook sessions (stdio, or loopback HTTP)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..console import expected_errors, fail, say
from ..errors import ConfigError
from .common import BackendOpt, positive

app = typer.Typer(add_completion=False)


@app.command("mcp")
def mcp_command(
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            metavar="MODE",
            help="notebook (cells in a warm kernel, saved to a notebook), filesystem (a shell "
            "and files) or mcp (served functions, one tool each). Default: the --session's "
            "mode, else notebook.",
        ),
    ] = None,
    session: Annotated[
        str | None,
        typer.Option(
            "--session",
            metavar="ID",
            help="The session tools act on when they name none; in mcp mode, the session "
            "whose served functions are the tools.",
        ),
    ] = None,
    serve: Annotated[
        list[Path] | None,
        typer.Option(
            "--serve",
            exists=True,
            dir_okay=False,
            metavar="FILE",
            help="An interface file whose @expose functions the sessions this server starts "
            "serve (in mcp mode: its tools). Repeatable.",
        ),
    ] = None,
    notebook_dir: Annotated[
        Path | None,
        typer.Option(
            "--notebook-dir",
            metavar="DIR",
            help="Where sessions started here write their notebooks (default ./notebooks).",
        ),
    ] = None,
    tool_wait: Annotated[
        float,
        typer.Option(
            "--tool-wait",
            metavar="SECONDS",
            callback=positive,
            help="The longest a cell tool call waits; a longer cell returns what it has so "
            "far and wait_for_cell gets the rest.",
        ),
    ] = 45.0,
    http: Annotated[
        bool,
        typer.Option(
            "--http", help="Serve streamable HTTP on a loopback address instead of stdio."
        ),
    ] = False,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            metavar="ADDR",
            help="With --http: the loopback address to listen on (other addresses are "
            "refused; use an SSH tunnel to reach it from elsewhere).",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option("--port", metavar="N", help="With --http: the port (0 picks a free one)."),
    ] = 8765,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            metavar="FILE",
            help="With --http: a file holding the bearer token every request must carry "
            "(or set $SANDLOT_MCP_TOKEN; default: a random one, printed once on stderr).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="TOKEN",
            help="With --http: the token itself, on the command line, where every local user "
            "can read it; prefer --token-file or $SANDLOT_MCP_TOKEN.",
        ),
    ] = None,
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config",
            help="Print the JSON to paste into Claude Code (.mcp.json) and Cursor "
            "(.cursor/mcp.json) for this server, and with --session what to tell the agent; "
            "then exit.",
        ),
    ] = False,
    name: Annotated[
        str, typer.Option("--name", metavar="NAME", help="The server's name in the config.")
    ] = "sandlot",
    backend: BackendOpt = None,
) -> None:
    """Run an MCP server for notebook sessions (stdio, or loopback HTTP with --http).

    Example: sandlot mcp --print-config --session 3f2a... >> notes.txt
    """
    import asyncio

    try:
        from .. import mcp
    except ImportError as exc:
        fail(
            f"sandlot mcp needs the notebook extra ({exc.name} is missing): "
            "pip install 'sandlot[notebook]'"
        )
    with expected_errors():
        info = asyncio.run(mcp.find_session(session)) if session else None
        mode = mode or (info.mode if info is not None else "notebook")
        if mode not in ("notebook", "filesystem", "mcp"):
            raise ConfigError(f"unknown --mode {mode!r}: use notebook, filesystem or mcp")
        if http:
            mcp.check_loopback(host)
        chosen, source = mcp.given_token(token, token_file)
        if source == "--token":
            say(
                "warning: --token puts the token on this command line, which every local user "
                "can read (/proc/PID/cmdline); use --token-file FILE or $SANDLOT_MCP_TOKEN"
            )
        if print_config:
            args = [] if mode == "notebook" else ["--mode", mode]
            args += ["--session", session] if session else []
            for path in serve or []:
                args += ["--serve", str(path.resolve())]
            if notebook_dir is not None:
                args += ["--notebook-dir", str(notebook_dir.resolve())]
            if tool_wait != 45.0:
                args += ["--tool-wait", f"{tool_wait:g}"]
            args += ["--backend", backend] if backend else []
            if http:
                args += ["--http", "--host", host, "--port", str(port)]
                if token_file is not None:
                    token_file = token_file.resolve()
                    args += ["--token-file", str(token_file)]
            url = mcp.server_url(host, port) if http else None
            text = mcp.render_config(
                name,
                args,
                session_id=session,
                info=info,
                url=url,
                token=token,
                token_file=token_file,
            )
            typer.echo(text, nl=False)
            return
        server = mcp.build_server(
            mode,  # type: ignore[arg-type]  # checked above
            session,
            tool_wait=tool_wait,
            serve=serve or (),
            notebook_dir=notebook_dir,
            backend=backend,
            name=name,
        )
        if not http:
            mcp.serve_stdio(server)
            return
        secret = chosen or mcp.new_token()

        def ready(url: str) -> None:
            if chosen:
                say(f"MCP server at {url} (bearer token from {source})")
            else:
                say(f"MCP server at {url}; send the header 'Authorization: Bearer {secret}'")

        asyncio.run(mcp.serve_http(server, host, port, secret, ready))
