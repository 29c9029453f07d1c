"""MCP: time per Pydantic AI agent step through ``sandlot mcp``, beside a plain Python tool.

Both sides run Pydantic AI's own ``Agent`` loop with the same scripted
``FunctionModel``. Each step is one model turn that calls a tool running a small
Python cell (``total += sum(range(1000))``) and gets its result back; its time is
from one model turn to the next.

- sandlot: ``sandlot mcp`` over stdio (``MCPToolset``), ``execute_code`` in a notebook
  session (a warm kernel in a bubblewrap sandbox). The session's start, before the
  first step, is not counted; the session is shut down at the end.
- default: a plain Pydantic AI function tool that ``exec``s the cell in a dict in the
  agent's own process: no isolation at all, so its figure is a floor, not a rival.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import sys
import tempfile
import time
from typing import Any

from fastmcp.client.transports import StdioTransport
from pydantic_ai import Agent
from pydantic_ai.mcp import MCPToolset
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

FRAMEWORK = "MCP (Pydantic AI agent)"
DEFAULT = "a plain Python function tool (exec in the agent's process, unisolated)"

CELL = "total = globals().get('total', 0) + sum(range(1000))\nprint(total)"


def _sandlot_agent(count: int, turns: list[float], notebooks: str) -> Agent[None, str]:
    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        results = [p for m in messages for p in m.parts if isinstance(p, ToolReturnPart)]
        if not results:
            return ModelResponse(parts=[ToolCallPart("sandlot_start_new_session", {})])
        sid = results[0].content["session_id"]
        turns.append(time.perf_counter())
        if len(results) <= count:
            args = {"session_id": sid, "code": CELL}
            return ModelResponse(parts=[ToolCallPart("sandlot_execute_code", args)])
        if len(results) == count + 1:
            return ModelResponse(
                parts=[ToolCallPart("sandlot_shutdown_session", {"session_id": sid})]
            )
        return ModelResponse(parts=[TextPart("done")])

    args = ["-m", "sandlot.cli", "mcp", "--notebook-dir", notebooks]
    settings = {name: value for name, value in os.environ.items() if name.startswith("SANDLOT_")}
    transport = StdioTransport(command=sys.executable, args=args, env=settings)
    toolset = MCPToolset(transport, id="sandlot").prefixed("sandlot")
    return Agent(FunctionModel(model), toolsets=[toolset])


def _plain_agent(count: int, turns: list[float]) -> Agent[None, str]:
    namespace: dict[str, Any] = {}

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        results = [p for m in messages for p in m.parts if isinstance(p, ToolReturnPart)]
        turns.append(time.perf_counter())
        if len(results) < count:
            return ModelResponse(parts=[ToolCallPart("run_python", {"code": CELL})])
        return ModelResponse(parts=[TextPart("done")])

    agent = Agent(FunctionModel(model))

    @agent.tool_plain
    def run_python(code: str) -> str:
        """Run Python code in this process; what it printed."""
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(code, namespace)
        return printed.getvalue()

    return agent


def steps(side: str, count: int) -> list[float]:
    """Seconds per agent step (a model turn and its tool call) for ``count`` steps."""
    turns: list[float] = []
    if side == "sandlot":
        with tempfile.TemporaryDirectory() as notebooks:
            output = _sandlot_agent(count, turns, notebooks).run_sync("run the cells").output
    elif side == "default":
        output = _plain_agent(count, turns).run_sync("run the cells").output
    else:
        raise ValueError(f"side must be 'sandlot' or 'default', not {side!r}")
    if output != "done" or len(turns) < count + 1:
        raise RuntimeError(f"{side}: the agent ended early ({len(turns)} turns, {output!r})")
    return [later - earlier for earlier, later in itertools.pairwise(turns[: count + 1])]
