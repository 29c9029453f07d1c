"""MCP mode: a session's served functions are the server's tools.

The tool list (names, descriptions, input schemas) is what the serving sandbox
reported about its ``@expose`` functions, so it is checked like anything else
a sandbox sends: names must be plain tool names, descriptions and schemas are
bounded, and a schema that is not a JSON object schema is replaced by an open
one. The list is read from the session when a client asks, which is why these
tools bypass ``@mcp.tool()``: their schemas come from data, not from Python
signatures in this process, so :class:`ServedFunctionsServer` answers
``tools/list`` and ``tools/call`` for them itself.
"""

from __future__ import annotations

import json
import re
import reprlib
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, InputRequiredResult, TextContent, Tool

from .errors import error_result, failure
from .render import clip
from .sessions import Sessions

TOOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
MAX_TOOLS = 256
MAX_DESCRIPTION = 4_000
MAX_SCHEMA_CHARS = 64_000
MAX_RESULT_CHARS = 100_000
OPEN_SCHEMA: dict[str, Any] = {"type": "object"}


def checked_tools(functions: object) -> list[Tool]:
    """The served functions a session reported, as MCP tools, keeping only well-formed ones."""
    tools: list[Tool] = []
    seen: set[str] = set()
    for item in functions[:MAX_TOOLS] if isinstance(functions, list) else []:
        if not isinstance(item, dict):
            continue
        name = item.get("name")
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name) or name in seen:
            continue
        seen.add(name)
        description = item.get("description")
        description = description[:MAX_DESCRIPTION] if isinstance(description, str) else ""
        tools.append(
            Tool(name=name, description=description, input_schema=_schema(item.get("inputSchema")))
        )
    return tools


def _schema(schema: object) -> dict[str, Any]:
    """``schema`` if it is a bounded JSON object schema, else one that accepts any object."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return dict(OPEN_SCHEMA)
    try:
        text = json.dumps(schema)
    except (TypeError, ValueError, RecursionError):
        return dict(OPEN_SCHEMA)
    if len(text) > MAX_SCHEMA_CHARS:
        return dict(OPEN_SCHEMA)
    parsed: dict[str, Any] = json.loads(text)  # a plain copy, nothing shared with the input
    return parsed


def result_text(value: object) -> str:
    """A served function's return value as bounded text (JSON where it can be)."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, indent=1, default=repr)
        except (TypeError, ValueError, RecursionError):
            text = reprlib.repr(value)  # depth- and size-limited, where repr() may recurse forever
    return clip(text, MAX_RESULT_CHARS, "the function's full return value", keep="start")[0]


class ServedFunctionsServer(MCPServer[None]):
    """An MCP server whose tools are the served functions of one mcp-mode session."""

    def __init__(self, sessions: Sessions, **options: Any) -> None:
        super().__init__(**options)
        self.sessions = sessions

    async def list_tools(self) -> list[Tool]:
        handle = await self.sessions.get(None)
        return checked_tools(handle.info.functions)

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[None, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            handle = await self.sessions.get(None)
            if name not in {tool.name for tool in checked_tools(handle.info.functions)}:
                known = ", ".join(tool.name for tool in await self.list_tools()) or "none"
                return failure(f"no tool {name!r} in this server; its tools: {known}")
            value = await handle.call_function(name, arguments)
        except Exception as exc:  # every failure is the model's to read, never the server's end
            return error_result(exc, self.sessions.default)
        return CallToolResult(content=[TextContent(type="text", text=result_text(value))])
