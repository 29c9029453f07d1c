"""Tool failures as ``is_error`` results a model can act on.

A tool that fails must not take the server down, and the SDK's own handling
hides an unexpected exception's text from the client. So every tool catches
what it raises and answers with what happened and what to call next: a
session that is gone points at ``list_sessions``, a dead kernel at
``restart``, a dead sandbox (named by its cause, as the session server sent
it) at a new session, a lost session server at starting the session again.
The hint comes after the (bounded) message, so a long message never cuts it off.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec

from mcp.types import CallToolResult, TextContent

from ..errors import ConfigError, SandboxDied, SandboxError, ToolFailure
from ..notebook import SessionServerError
from ..notebook.wire import KernelDied
from .sessions import Sessions

MAX_ERROR_CHARS = 4_000
P = ParamSpec("P")
log = logging.getLogger("sandlot.mcp")


def failure(text: str, hint: str = "") -> CallToolResult:
    """An ``is_error`` result: ``text`` (bounded), then ``hint`` (always kept whole)."""
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    if hint:
        text = f"{text}\n{hint}"
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def _hint(exc: BaseException, message: str, session_id: str | None) -> str:
    """What to do next: from the error's class, and for a session's own errors its text."""
    sid = f"session_id='{session_id}'" if session_id else "session_id=..."
    if isinstance(exc, KernelDied):
        return f"The kernel is gone: call restart({sid}) for a fresh one (its variables are lost)."
    if isinstance(exc, SandboxDied):
        return (
            f"The session's sandbox is gone (cause: {exc.cause}), its kernel and files with it: "
            f"call shutdown_session({sid}), then start_new_session() for a new one."
        )
    lowered = message.lower()
    if "no session" in lowered:
        return "Call list_sessions() to see the sessions, or start_new_session() for a new one."
    if "still running" in lowered or "a cell is running" in lowered:
        return f"Call wait_for_cell({sid}) for its end, or interrupt({sid}) to stop it."
    return ""


def error_result(exc: BaseException, session_id: str | None) -> CallToolResult:
    """The ``is_error`` result an agent reads for ``exc``."""
    if isinstance(exc, ToolFailure):
        return failure(str(exc))
    if isinstance(exc, SessionServerError):
        return failure(
            f"the session server cannot be reached: {exc}",
            "Its sessions may be gone: call list_sessions(), and start_new_session() if yours "
            "is not listed.",
        )
    if isinstance(exc, ConfigError):
        return failure(f"bad request: {exc}")
    message = str(exc) or type(exc).__name__
    if not isinstance(exc, SandboxError):
        log.exception("unexpected error in a sandlot MCP tool")
        message = f"internal error in the sandlot MCP server: {type(exc).__name__}: {message}"
    return failure(message, _hint(exc, message, session_id))


def reported(
    sessions: Sessions,
) -> Callable[[Callable[P, Awaitable[CallToolResult]]], Callable[P, Awaitable[CallToolResult]]]:
    """A decorator that turns any exception a tool raises into an ``is_error`` result.

    A handle whose session server connection broke is dropped on the way, so
    that the next call attaches afresh instead of failing the same way forever.
    """

    def decorate(
        fn: Callable[P, Awaitable[CallToolResult]],
    ) -> Callable[P, Awaitable[CallToolResult]]:
        @functools.wraps(fn)
        async def tool(*args: P.args, **kwargs: P.kwargs) -> CallToolResult:
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                given = kwargs.get("session_id")
                sid = given if isinstance(given, str) and given else sessions.default
                if isinstance(exc, SessionServerError) and sid is not None:
                    await sessions.drop(sid)
                return error_result(exc, sid)

        return tool

    return decorate
