"""The notebook sessions one MCP server talks to, by id.

Sessions live in the session server, not here: this server only holds handles
on them, opened on first use (``aattach``) and reused after. Every tool names
its session, so two agents on one server (over HTTP, say) never write into each
other's notebook; only a server started for one session (``--session``) lets
tools leave the id out. A handle whose connection broke is dropped, and the
next call attaches again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import SandboxConfig
from ..errors import ToolFailure
from ..notebook import AsyncNotebookSession, Mode, aattach, astart_session


@dataclass
class StartOptions:
    """How this server starts sessions: what every session it starts is made of."""

    mode: Mode = "notebook"
    config: SandboxConfig | None = None
    skills: Sequence[str | Path] = ()
    serve: Sequence[str | Path] = ()
    notebook_dir: str | Path | None = None
    idle_timeout: float | None = 3600.0
    backend: str | None = None
    # Sessions an agent starts outlive this server (until shut down or idle), so
    # that a restarted client, or a second one, can attach to them again.
    persist: bool = True


class Sessions:
    """Handles on sessions by id, and the session tools act on when they give none."""

    def __init__(self, default: str | None, options: StartOptions) -> None:
        self.default = default
        self.options = options
        self.handles: dict[str, AsyncNotebookSession] = {}
        self._attaching = asyncio.Lock()  # one attach at a time: never two handles for one id
        self.users = 0  # server runs (connections, for an in-process server) using the handles

    def resolve(self, session_id: str | None) -> str:
        """The session a tool acts on: the one named, else the server's own."""
        if session_id:
            return session_id
        if self.default is not None:
            return self.default
        raise ToolFailure(
            "no session_id given, and this server was not started for a session: call "
            "start_new_session() for a new one, or list_sessions() and then "
            "attach_to_session(session_id=...)"
        )

    async def get(self, session_id: str | None) -> AsyncNotebookSession:
        """A handle on the session (attached now if this server has none yet)."""
        sid = self.resolve(session_id)
        handle = self.handles.get(sid)
        if handle is not None:
            return handle
        async with self._attaching:
            handle = self.handles.get(sid)
            if handle is None:
                handle = await aattach(sid)
                self.handles[sid] = handle
        return handle

    async def start(self, name: str | None) -> AsyncNotebookSession:
        """A new session made as this server's options say; this server holds a handle."""
        opts = self.options
        handle = await astart_session(
            opts.config,
            name=name,
            skills=opts.skills,
            serve=opts.serve,
            mode=opts.mode,
            persist=opts.persist,
            idle_timeout=opts.idle_timeout,
            backend=opts.backend,
            notebook_dir=opts.notebook_dir,
        )
        self.handles[handle.session_id] = handle
        return handle

    async def drop(self, session_id: str) -> None:
        """Forget the handle (after a shutdown, or when its connection broke)."""
        handle = self.handles.pop(session_id, None)
        if handle is not None:
            with contextlib.suppress(Exception):
                await handle.close()

    async def close(self) -> None:
        """Detach every handle (persistent sessions go on without this server)."""
        for sid in list(self.handles):
            await self.drop(sid)
        self._attaching = asyncio.Lock()  # a later run may be on another event loop
