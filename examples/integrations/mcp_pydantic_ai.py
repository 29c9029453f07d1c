"""A Pydantic AI agent that runs its code in sandlot sandboxes, through ``sandlot mcp``.

    pip install 'sandlot[notebook]' 'pydantic-ai-slim[mcp,openai]'
    python examples/integrations/mcp_pydantic_ai.py --model openai:gpt-5-mini
    python examples/integrations/mcp_pydantic_ai.py     # no model: a scripted one

Pydantic AI starts ``sandlot mcp`` as a stdio MCP server and hands its tools to the
agent (prefixed ``sandlot_``): ``start_new_session``, ``execute_code``,
``shutdown_session`` and the rest (docs/mcp.md). Every cell runs in a notebook
session: a warm kernel in a bubblewrap sandbox, no network, its cells saved to
``./notebooks``. Any MCP client takes the same server; ``sandlot mcp
--print-config`` prints its ``mcpServers`` block.

Without ``--model`` the agent's model is a scripted ``FunctionModel`` that makes the
calls a real model would (start a session, run a cell, shut it down), so the
example runs on a machine with no LM at hand.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from fastmcp.client.transports import StdioTransport
from pydantic_ai import Agent
from pydantic_ai.mcp import MCPToolset
from pydantic_ai.messages import (
    ModelMessage,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models import Model
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.toolsets import AbstractToolset

TASK = (
    "Start a sandlot session, compute the 30th Fibonacci number in it with Python, "
    "shut the session down and tell me the number."
)
FIBONACCI = "a, b = 0, 1\nfor _ in range(30):\n    a, b = b, a + b\na"


def sandlot_mcp() -> AbstractToolset[None]:
    """``sandlot mcp`` (notebook mode) over stdio, as this Python runs it.

    An MCP client starts its servers with a bare environment; the ``SANDLOT_*``
    settings of this one (the session directory, the backend) are passed on."""
    settings = {name: value for name, value in os.environ.items() if name.startswith("SANDLOT_")}
    args = ["-m", "sandlot.cli", "mcp"]
    transport = StdioTransport(command=sys.executable, args=args, env=settings)
    return MCPToolset(transport, id="sandlot").prefixed("sandlot")


def scripted(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """The turns a model would take for TASK, each read from the last tool result."""
    results = [
        part for message in messages for part in message.parts if isinstance(part, ToolReturnPart)
    ]
    if not results:
        return ModelResponse(parts=[ToolCallPart("sandlot_start_new_session", {})])
    session: dict[str, Any] = results[0].content
    sid = session["session_id"]
    if len(results) == 1:
        args = {"session_id": sid, "code": FIBONACCI}
        return ModelResponse(parts=[ToolCallPart("sandlot_execute_code", args)])
    if len(results) == 2:
        value = results[1].model_response_str().split("value:\n")[-1].strip()
        return ModelResponse(
            parts=[
                TextPart(f"The 30th Fibonacci number is {value}."),
                ToolCallPart("sandlot_shutdown_session", {"session_id": sid}),
            ]
        )
    said = next(part for part in messages[-2].parts if isinstance(part, TextPart))
    return ModelResponse(parts=[TextPart(said.content)])


def main(model: str | Model | None = None) -> str:
    """Run the agent on TASK; its answer."""
    agent = Agent(model or FunctionModel(scripted), toolsets=[sandlot_mcp()])
    return agent.run_sync(TASK).output


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a Pydantic AI model name, e.g. openai:gpt-5-mini")
    print(main(parser.parse_args().model))
