"""``sandlot mcp --print-config``: the blocks to paste into an MCP client's configuration.

Claude Code reads ``.mcp.json`` at a project's root and Cursor reads
``.cursor/mcp.json`` (or ``~/.cursor/mcp.json``); both take an ``mcpServers``
object, Claude Code with an explicit ``type``. The command is an absolute path,
because clients start servers from their own working directory with their own
``PATH``; the environment carries ``SANDLOT_SESSIONS_DIR`` when it is set, so the
server finds the same session server as the shell that printed the config.

For HTTP, the token is not written into the file (project files get
committed): the blocks refer to ``SANDLOT_MCP_TOKEN``, which both clients expand
from their environment, unless a token was given on the command line with
``--token`` (which the server warns about: a command line is public).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from ..notebook import SessionInfo, alist_sessions
from .http import TOKEN_ENV

PASSED_ENV = ("SANDLOT_SESSIONS_DIR",)


def sandlot_command() -> list[str]:
    """How a client starts ``sandlot``: this environment's script, else this Python ``-m``."""
    script = Path(sys.executable).parent / "sandlot"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script.absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "sandlot.cli"]


def stdio_entries(args: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Claude Code and Cursor entries for a stdio server run with ``sandlot mcp <args>``."""
    command, *prefix = sandlot_command()
    env = {name: os.environ[name] for name in PASSED_ENV if os.environ.get(name)}
    cursor = {"command": command, "args": [*prefix, "mcp", *args], "env": env}
    return {"type": "stdio", **cursor}, cursor


def http_entries(url: str, token: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Claude Code and Cursor entries for the HTTP server at ``url``."""
    claude = f"Bearer {token}" if token else f"Bearer ${{{TOKEN_ENV}}}"
    cursor = f"Bearer {token}" if token else f"Bearer ${{env:{TOKEN_ENV}}}"
    return (
        {"type": "http", "url": url, "headers": {"Authorization": claude}},
        {"url": url, "headers": {"Authorization": cursor}},
    )


def attach_instruction(session_id: str, info: SessionInfo | None) -> str:
    """What to tell an agent so that it works in session ``session_id`` (``info``: if found)."""
    sid = f"session_id='{session_id}'"
    mode = info.mode if info is not None else "notebook"
    if mode == "mcp":
        first = (
            f"The sandlot MCP server's tools are the functions served by session {session_id}; "
            "call them like any other tool."
        )
    elif mode == "filesystem":
        first = (
            f"You have a sandlot workspace, session id {session_id}. Use the sandlot MCP "
            f"server's exec, read_file, write_file and list_files tools with {sid}."
        )
    else:
        first = (
            f"You have a warm sandlot notebook session, id {session_id}. Before anything else, "
            f"call attach_to_session({sid}) on the sandlot MCP server, then run code with "
            f"execute_code({sid}, code=...). Variables persist between cells, and every cell "
            "is saved to the session's notebook file."
        )
    lines = [first]
    if info is None:
        lines.append(
            "(The session was not found just now, so what it holds is not shown here; "
            "attach_to_session shows it.)"
        )
    elif info.prompt:
        lines += ["", info.prompt]
    return "\n".join(lines)


def render_config(
    name: str,
    server_args: list[str],
    *,
    session_id: str | None = None,
    info: SessionInfo | None = None,
    url: str | None = None,
    token: str | None = None,
    token_file: Path | None = None,
) -> str:
    """The text ``--print-config`` prints: both clients' JSON, and the agent's instruction.

    ``info`` describes session ``session_id`` when it was found. For HTTP, a
    ``token`` is written into the blocks; without one they name
    ``$SANDLOT_MCP_TOKEN``, and the server is started with ``token_file`` (which
    ``server_args`` then name) or that variable.
    """
    if url is None:
        claude, cursor = stdio_entries(server_args)
    else:
        claude, cursor = http_entries(url, token)
    parts = [
        "# Claude Code: .mcp.json at the project root",
        json.dumps({"mcpServers": {name: claude}}, indent=2),
        "",
        "# Cursor: .cursor/mcp.json in the project (or ~/.cursor/mcp.json)",
        json.dumps({"mcpServers": {name: cursor}}, indent=2),
    ]
    if url is not None:
        start = ["sandlot", "mcp", *server_args]
        # The token reaches the server from its file or the variable, never from argv.
        how = shlex.join(start) if token_file else f"{TOKEN_ENV}=<token> {shlex.join(start)}"
        parts += [
            "",
            "# Start the server first (the clients connect to it):",
            how,
        ]
        if token:
            pass  # the blocks hold it
        elif token_file is not None:
            parts.append(f"# and set {TOKEN_ENV} to the token in {token_file} where clients run.")
        else:
            parts.append(
                f"# and set {TOKEN_ENV} to the same token where the client runs "
                "('python -c \"import secrets; print(secrets.token_urlsafe(32))\"' makes one)."
            )
    if session_id is not None:
        parts += ["", "# Tell the agent:", attach_instruction(session_id, info)]
    return "\n".join(parts) + "\n"


async def find_session(session_id: str) -> SessionInfo | None:
    """Session ``session_id`` as the session server describes it, or None if not found.

    Asks without starting a session server: printing a config starts nothing.
    """
    try:
        infos = await alist_sessions()
    except Exception:  # an unreachable server only means the session is not described
        return None
    return next((info for info in infos if info.session_id == session_id), None)
