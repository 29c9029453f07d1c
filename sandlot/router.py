"""The host's router: functions that sandboxed code may call, by name.

Every call that leaves a sandbox lands here, so the host decides what each
sandbox can reach. Plain functions run on a shared thread pool (so sixteen
threads calling a slow tool at once wait together, not in turn); coroutine
functions run on the event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .driver import codec

log = logging.getLogger("sandlot.tools")
# A route takes encoded arguments and returns an encoded result, untouched by the host:
# how a call to a library served by another sandbox is forwarded.
Route = Callable[[Any, bytes], Awaitable[tuple[Any, bytes]]]
_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=128, thread_name_prefix="sandlot-tool")
    return _executor


@dataclass(frozen=True)
class Tool:
    """A host function exposed to sandboxed code under ``name``."""

    name: str
    fn: Callable[..., Any]
    doc: str


class Router:
    """Host functions by name, and the calls to them."""

    def __init__(self) -> None:
        self.tools: dict[str, Tool] = {}
        self.routes: dict[str, Route] = {}

    def add_route(self, name: str, route: Route) -> None:
        """Forward calls to ``name`` (no REPL stub is made for it) to ``route``."""
        self.routes[name] = route

    def register(self, name: str, fn: Callable[..., Any], doc: str | None = None) -> Tool:
        """Add (or replace) tool ``name``; its name must be a Python identifier."""
        if not name.isidentifier():
            raise ValueError(f"tool name {name!r} is not a Python identifier")
        if not callable(fn):
            raise TypeError(f"tool {name!r}: {fn!r} is not callable")
        tool = Tool(name, fn, doc if doc is not None else inspect.getdoc(fn) or "")
        self.tools[name] = tool
        return tool

    async def call(self, name: str, structure: Any, payload: bytes) -> tuple[Any, bytes]:
        """Answer a call from a sandbox: arguments and result in their encoded form.

        A tool's exceptions propagate, to become the sandbox's ``ToolError``.
        """
        route = self.routes.get(name)
        if route is not None:
            return await route(structure, payload)
        tool = self.tools.get(name)
        if tool is None:
            known = ", ".join(sorted([*self.tools, *self.routes])) or "none"
            raise LookupError(f"unknown tool {name!r}; registered tools: {known}")
        if len(payload) > 1 << 20:  # decoding megabytes of strings would hold up every sandbox
            args, kwargs = await asyncio.to_thread(codec.decode, structure, payload)
        else:
            args, kwargs = codec.decode(structure, payload)
        try:
            if inspect.iscoroutinefunction(tool.fn):
                value = await tool.fn(*args, **kwargs)
            else:
                ctx = contextvars.copy_context()
                call = functools.partial(ctx.run, tool.fn, *args, **kwargs)
                value = await asyncio.get_running_loop().run_in_executor(_pool(), call)
        except Exception:
            log.info("tool %r raised", name, exc_info=True)
            raise
        return codec.encode(value, where=f"host function {name!r} return value")
