"""Deep Agents: one agent step (model call, then its tool) on SandlotBackend beside
deepagents' LocalShellBackend, with the same scripted chat model.

The steps cycle through write_file, execute (``cat`` of that file) and read_file;
a step's time runs from one model call to the next, so it holds the tool's work
and deepagents' own overhead (LangGraph, the filesystem middleware). The sandbox
starts before the clock does, as a pool's warm sandbox would be.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from typing import Any

from deepagents import create_deep_agent
from deepagents.backends import LocalShellBackend
from deepagents.backends.protocol import SandboxBackendProtocol
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatResult
from pydantic import Field

from sandlot import SandboxConfig
from sandlot.integrations.deepagents import SandlotBackend

FRAMEWORK = "LangChain Deep Agents"
DEFAULT = "LocalShellBackend (unisolated: host shell and files)"


class ClockedModel(GenericFakeChatModel):
    """LangChain's scripted chat model, noting when each call starts; tools ignored."""

    stamps: list[float] = Field(default_factory=list)

    def bind_tools(self, tools: Any, **kwargs: Any) -> ClockedModel:  # type: ignore[override]
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.stamps.append(time.perf_counter())
        return super()._generate(messages, *args, **kwargs)


def script(count: int, root: str) -> list[AIMessage]:
    """``count`` tool calls, then the answer; files under ``root`` (the agent's view)."""
    calls = [
        ("write_file", {"file_path": f"{root}/step.txt", "content": "step\n" * 20}),
        ("execute", {"command": "cat step.txt | wc -l"}),
        ("read_file", {"file_path": f"{root}/step.txt"}),
    ]
    steps = []
    for n in range(count):
        name, args = calls[n % len(calls)]
        steps.append(
            AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"c{n}"}])
        )
    return [*steps, AIMessage(content="done")]


def steps(side: str, count: int) -> list[float]:
    """Seconds per agent step for ``count`` steps on ``side`` ("sandlot" or "default")."""
    with contextlib.ExitStack() as stack:
        backend: SandboxBackendProtocol
        if side == "sandlot":
            backend = stack.enter_context(SandlotBackend(SandboxConfig()))
            root = "/workspace"
        else:
            workdir = stack.enter_context(tempfile.TemporaryDirectory())
            backend = LocalShellBackend(root_dir=workdir, virtual_mode=True, inherit_env=True)
            root = ""
        model = ClockedModel(messages=iter(script(count, root)))
        agent = create_deep_agent(model=model, backend=backend)
        agent.invoke({"messages": [HumanMessage(content="go")]})
    return [after - before for before, after in zip(model.stamps, model.stamps[1:], strict=False)]
