"""``build_server``: the MCP server an agent uses to work in sandlot notebook sessions.

Three modes, one per kind of session:

- **notebook**: start or attach to sessions and run cells in their kernels;
  every cell lands in a real ``.ipynb``. A cell's reply is a text summary and
  its images (:mod:`sandlot.mcp.render`). A tool call waits at most
  ``tool_wait`` seconds, because clients cut long calls whatever their
  settings say: a longer cell comes back with what it printed so far and
  ``wait_for_cell`` picks it up again. A cell still running after half a
  second gets progress notifications, which keep the call alive and show what
  the cell prints; a quick one comes back in a single reply. Cancelling a
  call (a person pressing Esc in the client) interrupts its cell.
- **filesystem**: a workspace with a shell and files, no kernel.
- **mcp**: the functions an interface file serves, one tool each
  (:mod:`sandlot.mcp.served`).

Every tool failure is an ``is_error`` result that says what to do next
(:mod:`sandlot.mcp.errors`); nothing a tool meets ends the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from ..config import SandboxConfig
from ..errors import ConfigError
from ..notebook import (
    AsyncNotebookSession,
    Execution,
    Mode,
    SessionInfo,
    alist_sessions,
    ashutdown_session,
)
from ..notebook.execution import OnOutput
from ..tasks import TaskScope
from . import errors
from .images import IMAGE_MIME_TYPES
from .progress import CellProgress
from .render import Block, RenderLimits, render_exec, render_execution
from .served import ServedFunctionsServer
from .sessions import Sessions, StartOptions

SessionArg = Annotated[
    str | None,
    Field(
        description="The session's id, from start_new_session or list_sessions. May be left out "
        "only when this server was started for one session."
    ),
]
CellTimeout = Annotated[
    float | None,
    Field(
        gt=0,
        description="Seconds the cell may run before it is interrupted (default: no limit). "
        "This is not how long the call waits: a long cell returns early with what it has, "
        "and wait_for_cell gets the rest.",
    ),
]
WaitArg = Annotated[
    float | None, Field(gt=0, description="Seconds to wait this time (default: the most allowed).")
]
READ_ONLY = ToolAnnotations(read_only_hint=True)
QUIET_WAIT = 0.5  # seconds a cell runs before its tool call streams outputs and reports progress
INTERRUPT_WAIT = 10.0  # seconds an interrupt may take when a client cancels a cell's call


def _text(text: str, data: dict[str, Any] | None = None) -> CallToolResult:
    """A text reply, with ``data`` as structured content for programs that read it."""
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)


def _session_data(info: SessionInfo) -> dict[str, Any]:
    keys = ("session_id", "kernel_id", "name", "mode", "notebook_path", "status")
    data = info.to_dict()
    return {key: data[key] for key in keys}


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe_session(info: SessionInfo, *, verb: str) -> str:
    """What an agent needs to know about a session it just started or attached to."""
    sid = info.session_id
    lines = [f"{verb} session {sid} (name {info.name!r}, {info.mode} mode, {info.status})."]
    if info.notebook_path:
        lines.append(
            f"Notebook file: {info.notebook_path} (every cell and its output is written there)."
        )
    if info.persist:
        lifetime = (
            f"{_age(info.idle_timeout)} idle" if info.idle_timeout else "its session server stops"
        )
        lines.append(f"It lives until shutdown_session(session_id='{sid}') or {lifetime}.")
    if info.mode == "notebook":
        lines.append(
            f"Run code with execute_code(session_id='{sid}', code=...); variables persist "
            "between cells."
        )
    elif info.mode == "filesystem":
        lines.append(f"Use exec, read_file, write_file and list_files with session_id='{sid}'.")
    if info.prompt:
        lines += ["", info.prompt]
    return "\n".join(lines)


def describe_sessions(infos: Sequence[SessionInfo], attached: Sequence[str]) -> str:
    """The session list, one line each."""
    if not infos:
        return "No sessions are running. Start one with start_new_session()."
    now = time.time()
    lines = [f"{len(infos)} session(s):"]
    for info in infos:
        where = f", notebook {info.notebook_path}" if info.notebook_path else ""
        mark = " (attached here)" if info.session_id in attached else ""
        lines.append(
            f"- {info.session_id}{mark}: {info.name!r}, {info.mode} mode, {info.status}, "
            f"last active {_age(now - info.last_activity)} ago{where}"
        )
    return "\n".join(lines)


class _Runner:
    """What the cell tools share: the sessions, the wait budget, progress and rendering."""

    def __init__(
        self, sessions: Sessions, tool_wait: float, interval: float, limits: RenderLimits
    ) -> None:
        self.sessions = sessions
        self.tool_wait = tool_wait
        self.interval = interval
        self.limits = limits

    async def cell(
        self,
        ctx: Context[Any, Any],
        session_id: str | None,
        run: Callable[[AsyncNotebookSession, float, OnOutput | None], Awaitable[Execution]],
        wait: float | None = None,
    ) -> CallToolResult:
        """Run (or wait on) a cell with progress, and render what it gave within the wait.

        Most cells end in milliseconds, and for them progress would be noise and
        streaming their outputs one by one a cost: so the first ``QUIET_WAIT``
        seconds wait for the whole result in one reply. Only a cell still
        running then gets progress notifications and its outputs streamed.
        """
        handle = await self.sessions.get(session_id)
        wait = self.tool_wait if wait is None else min(wait, self.tool_wait)
        started = time.monotonic()
        try:
            ex = await run(handle, min(wait, QUIET_WAIT), None)
            left = wait - (time.monotonic() - started)
            if not ex.done and left > 0:
                progress = CellProgress(ctx, self.interval, started, ex)
                async with TaskScope("a cell's progress notifications") as beat:
                    beat.spawn(progress.heartbeat())
                    ex = await handle.wait(left, on_output=progress.output)
        except asyncio.CancelledError:
            # The client cancelled the call (a person pressed Esc): stop the cell too, as
            # Jupyter's stop button does, so the session is free for the next one.
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await asyncio.wait_for(handle.interrupt(), INTERRUPT_WAIT)
            raise
        where = handle.notebook_path or "the session's notebook file"
        if any(mime in result.data for result in ex.results for mime in IMAGE_MIME_TYPES):
            # Bounding images decodes and re-encodes them: keep that off the event loop.
            blocks: list[Block] = await asyncio.to_thread(
                render_execution, ex, handle.session_id, where, self.limits
            )
        else:
            blocks = render_execution(ex, handle.session_id, where, self.limits)
        return CallToolResult(content=list(blocks))


def _session_tools(mcp: MCPServer[None], sessions: Sessions) -> None:
    """The tools every non-mcp mode has: start, attach, list and shut down sessions."""
    reported = errors.reported(sessions)
    notebook = sessions.options.mode == "notebook"
    what = "notebook session (a warm Python kernel)" if notebook else "workspace"
    gives = "its id, its notebook file" if notebook else "its id"

    @mcp.tool(
        description=f"Start a new {what} in an isolated sandbox and return {gives} and what it "
        "has loaded. Keep the id: every other tool takes it."
    )
    @reported
    async def start_new_session(
        name: Annotated[
            str | None, Field(description="A short name for the session and its notebook file.")
        ] = None,
    ) -> CallToolResult:
        handle = await sessions.start(name)
        return _text(describe_session(handle.info, verb="Started"), _session_data(handle.info))

    @mcp.tool(
        description="Attach to a running session by id (one started earlier, by another agent, "
        "or by a person) and return what it has loaded. Read the text it returns: it says "
        "which models and functions are ready to use."
    )
    @reported
    async def attach_to_session(session_id: str) -> CallToolResult:
        handle = await sessions.get(session_id)
        info = await handle.refresh()
        return _text(describe_session(info, verb="Attached to"), _session_data(info))

    @mcp.tool(description="List the running sessions: id, name, mode, status, notebook file.")
    @reported
    async def list_sessions() -> CallToolResult:
        infos = await alist_sessions()
        return _text(describe_sessions(infos, list(sessions.handles)))

    @mcp.tool(
        description="End a session and its sandbox for every client. The notebook file stays."
    )
    @reported
    async def shutdown_session(session_id: SessionArg = None) -> CallToolResult:
        sid = sessions.resolve(session_id)
        await ashutdown_session(sid)
        await sessions.drop(sid)
        return _text(f"Session {sid} is shut down.")


def _notebook_tools(mcp: MCPServer[None], runner: _Runner) -> None:
    sessions = runner.sessions
    reported = errors.reported(sessions)

    @mcp.tool(
        description="Run Python code as a new cell in the session's kernel and return its "
        "stdout, stderr, value, error and images. Variables persist between cells. A cell "
        f"that runs longer than {runner.tool_wait:g} s returns early with what it has so far; "
        "call wait_for_cell for the rest."
    )
    @reported
    async def execute_code(
        ctx: Context[Any, Any],
        session_id: SessionArg = None,
        *,
        code: Annotated[str, Field(description="Python source; IPython magics work too.")],
        timeout: CellTimeout = None,
    ) -> CallToolResult:
        return await runner.cell(
            ctx,
            session_id,
            lambda h, wait, out: h.execute(code, timeout=timeout, wait=wait, on_output=out),
        )

    @mcp.tool(
        description="Wait for the session's running cell (one that execute_code or edit_cell "
        "left running) and return its output: all of it once it ends, or what it has so far "
        f"after timeout seconds (at most {runner.tool_wait:g}, the default)."
    )
    @reported
    async def wait_for_cell(
        ctx: Context[Any, Any],
        session_id: SessionArg = None,
        timeout: WaitArg = None,
    ) -> CallToolResult:
        return await runner.cell(
            ctx, session_id, lambda h, wait, out: h.wait(wait, on_output=out), wait=timeout
        )

    @mcp.tool(description="Add a markdown cell (notes, a plan, findings) to the notebook.")
    @reported
    async def add_markdown(
        session_id: SessionArg = None,
        *,
        content: Annotated[str, Field(description="Markdown text.")],
    ) -> CallToolResult:
        handle = await sessions.get(session_id)
        position = await handle.add_markdown(content)
        return _text(f"Added a markdown cell at position {position} of the notebook.")

    @mcp.tool(
        description="Replace the code of a code cell and run it again, with the kernel's current "
        "state. cell_index counts code cells only, from 0; -1 is the last one."
    )
    @reported
    async def edit_cell(
        ctx: Context[Any, Any],
        session_id: SessionArg = None,
        *,
        code: Annotated[str, Field(description="The cell's new Python source.")],
        cell_index: int = -1,
        timeout: CellTimeout = None,
    ) -> CallToolResult:
        return await runner.cell(
            ctx,
            session_id,
            lambda h, wait, out: h.edit_cell(
                code, cell_index, timeout=timeout, wait=wait, on_output=out
            ),
        )

    @mcp.tool(description="Interrupt the running cell (like Ctrl-C); the kernel keeps its state.")
    @reported
    async def interrupt(session_id: SessionArg = None) -> CallToolResult:
        handle = await sessions.get(session_id)
        await handle.interrupt()
        return _text(
            f"Interrupt sent to session {handle.session_id}; "
            f"wait_for_cell(session_id='{handle.session_id}') shows how the cell ended."
        )

    @mcp.tool(
        description="Restart the session's kernel: all variables are lost; models, skills and "
        "libraries are loaded again. Use it when the kernel died or hangs."
    )
    @reported
    async def restart(session_id: SessionArg = None) -> CallToolResult:
        handle = await sessions.get(session_id)
        await handle.restart()
        return _text(
            f"Session {handle.session_id} has a fresh kernel (models, skills and libraries "
            "loaded again); earlier variables are gone."
        )

    @mcp.tool(
        description="List the kernel's variables (name, type, short repr) without adding a cell.",
        annotations=READ_ONLY,
    )
    @reported
    async def list_variables(session_id: SessionArg = None) -> CallToolResult:
        handle = await sessions.get(session_id)
        found = await handle.variables()
        if not found:
            return _text("The kernel has no variables yet.")
        lines = [f"{len(found)} variable(s):"]
        lines += [f"- {v.name}: {v.type} = {v.repr}" for v in found]
        return _text("\n".join(lines))


def _filesystem_tools(mcp: MCPServer[None], sessions: Sessions) -> None:
    reported = errors.reported(sessions)

    @mcp.tool(
        description="Run a shell command (/bin/sh -c) in the session's workspace and return its "
        "exit status, stdout and stderr."
    )
    @reported
    async def exec(
        session_id: SessionArg = None,
        *,
        command: str,
        timeout: Annotated[
            float | None, Field(gt=0, description="Seconds before the command is killed.")
        ] = None,
    ) -> CallToolResult:
        handle = await sessions.get(session_id)
        result = await handle.exec(command, timeout=timeout)
        return _text(render_exec(result))

    @mcp.tool(description="Read a text file from the session's workspace.", annotations=READ_ONLY)
    @reported
    async def read_file(session_id: SessionArg = None, *, path: str) -> CallToolResult:
        handle = await sessions.get(session_id)
        return _text(await handle.read_file(path))

    @mcp.tool(
        description="Write a text file in the session's workspace (its directories are made)."
    )
    @reported
    async def write_file(
        session_id: SessionArg = None, *, path: str, content: str
    ) -> CallToolResult:
        handle = await sessions.get(session_id)
        size = await handle.write_file(path, content)
        return _text(f"Wrote {size} bytes to {path}.")

    @mcp.tool(
        description="List a directory of the session's workspace: name, type, size.",
        annotations=READ_ONLY,
    )
    @reported
    async def list_files(session_id: SessionArg = None, path: str = ".") -> CallToolResult:
        handle = await sessions.get(session_id)
        entries = await handle.list_files(path)
        if not entries:
            return _text(f"{path} is empty.")
        lines = [f"{len(entries)} entries in {path}:"]
        lines += [f"- {e.get('name')} ({e.get('type')}, {e.get('size')} bytes)" for e in entries]
        return _text("\n".join(lines))


def _instructions(mode: Mode, session_id: str | None) -> str:
    if mode == "mcp":
        return "The tools are functions served from an isolated sandlot sandbox."
    text = (
        "sandlot runs your code in isolated sandboxes. Start a session with "
        "start_new_session() (or attach_to_session(session_id=...) to one that runs), and pass "
        "its session_id to every other tool."
    )
    if session_id is not None:
        text += (
            f" This server was started for session {session_id}: call "
            f"attach_to_session(session_id='{session_id}') first to see what it has loaded; "
            "tools act on it when you leave session_id out."
        )
    return text


def build_server(
    mode: Mode = "notebook",
    session_id: str | None = None,
    *,
    tool_wait: float = 45.0,
    progress_interval: float = 5.0,
    config: SandboxConfig | None = None,
    skills: Sequence[str | Path] = (),
    serve: Sequence[str | Path] = (),
    notebook_dir: str | Path | None = None,
    idle_timeout: float | None = 3600.0,
    backend: str | None = None,
    limits: RenderLimits | None = None,
    name: str = "sandlot",
) -> MCPServer[None]:
    """An MCP server for ``mode`` sessions; run it with ``.run()`` (stdio) or :mod:`.http`.

    ``session_id`` is the session tools act on when they name none (in mcp
    mode, the session whose functions are the tools; ``serve`` instead starts
    one with those interface files, owned by the server). Sessions started
    through the tools are made from ``config``, ``skills``, ``serve`` and
    ``notebook_dir`` and persist until shut down or idle for ``idle_timeout``
    seconds. A cell tool returns after ``tool_wait`` seconds at most, sending
    progress every ``progress_interval`` seconds meanwhile.
    """
    if mode not in ("notebook", "filesystem", "mcp"):
        raise ConfigError(f"unknown mode {mode!r}: use 'notebook', 'filesystem' or 'mcp'")
    if tool_wait <= 0 or progress_interval <= 0:
        raise ConfigError("tool_wait and progress_interval must be greater than 0")
    if mode == "mcp" and session_id is None and not serve:
        raise ConfigError(
            "mcp mode serves one session's functions: give the session's id, or the interface "
            "files to serve (serve=[...], 'sandlot mcp --mode mcp --serve FILE')"
        )
    options = StartOptions(
        mode=mode,
        config=config,
        skills=skills,
        serve=serve,
        notebook_dir=notebook_dir,
        idle_timeout=idle_timeout,
        backend=backend,
        persist=mode != "mcp",  # an mcp-mode server's own session ends with it
    )
    sessions = Sessions(session_id, options)

    @contextlib.asynccontextmanager
    async def lifespan(_: MCPServer[None]) -> AsyncIterator[None]:
        """Open what the first run needs; detach every handle when the last run ends."""
        sessions.users += 1
        try:
            if sessions.users == 1 and mode == "mcp" and session_id is None:
                sessions.default = (await sessions.start(None)).session_id
            yield None
        finally:
            sessions.users -= 1
            if sessions.users == 0:
                await sessions.close()
                if mode == "mcp" and session_id is None:
                    sessions.default = None

    common: dict[str, Any] = {
        "name": name,
        "instructions": _instructions(mode, session_id),
        "lifespan": lifespan,
        "log_level": "WARNING",  # the SDK logs every request at INFO, on the client's stderr
    }
    if mode == "mcp":
        return ServedFunctionsServer(sessions, **common)
    mcp: MCPServer[None] = MCPServer(**common)
    if mode == "notebook":
        _session_tools(mcp, sessions)
        runner = _Runner(sessions, tool_wait, progress_interval, limits or RenderLimits())
        _notebook_tools(mcp, runner)
    else:
        _session_tools(mcp, sessions)
        _filesystem_tools(mcp, sessions)
    return mcp
