"""smolagents' CodeAgent with its code in a sandlot sandbox and its tools on the host.

    uv run python examples/integrations/smolagents.py

The agent's code runs in a bubblewrap sandbox (no network, 512 MiB, its own
processes and files); the ``word_count`` tool runs in this process, reached from
the sandbox by a host call. With ``SMOLAGENTS_MODEL`` set (a model id served by an
OpenAI-compatible endpoint: ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``) a real model
writes the code (``pip install 'smolagents[openai]'``); without it a scripted
stand-in does, so the example runs anywhere.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

# This file is named after the framework: keep its folder off the import path, or
# ``import smolagents`` below would import this file.
HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]

from smolagents import ChatMessage, CodeAgent, Model, tool  # noqa: E402

import sandlot  # noqa: E402
from sandlot.integrations.smolagents import SandlotExecutor  # noqa: E402

TASK = "How many words are in the text, and how many of them are 'sandbox'?"
TEXT = "a sandbox runs code; the sandbox keeps state; the host keeps the tools"

# The stand-in's steps, in the <code> blocks CodeAgent parses.
SCRIPT = [
    "Thought: count the words with the host tool.\n"
    "<code>\ntotal = word_count(text)\nprint('words:', total)\n</code>",
    "Thought: count 'sandbox' here, in the sandbox; `total` is still defined.\n"
    "<code>\nhits = text.split().count('sandbox')\nfinal_answer({'words': total, 'sandbox': hits})"
    "\n</code>",
]


class ScriptedModel(Model):  # type: ignore[misc]
    """A stand-in model: answers each call with the next of ``replies`` and keeps the
    messages it was given (``seen``)."""

    def __init__(self, replies: list[str]) -> None:
        super().__init__(model_id="scripted")
        self.replies = list(replies)
        self.seen: list[list[Any]] = []

    def generate(self, messages: list[Any], *args: Any, **kwargs: Any) -> ChatMessage:
        self.seen.append(list(messages))
        return ChatMessage(role="assistant", content=self.replies.pop(0))


@tool
def word_count(text: str) -> int:
    """Counts the words of a text (runs on the host).

    Args:
        text: the text to count the words of.
    """
    return len(text.split())


def model() -> Model:
    """The model named by ``SMOLAGENTS_MODEL``, else the scripted stand-in."""
    model_id = os.environ.get("SMOLAGENTS_MODEL")
    if not model_id:
        return ScriptedModel(SCRIPT)
    from smolagents import OpenAIServerModel

    return OpenAIServerModel(model_id=model_id, api_base=os.environ.get("OPENAI_BASE_URL"))


def main() -> Any:
    config = sandlot.SandboxConfig(memory_mb=512)
    executor = SandlotExecutor(config=config, timeout=30)
    with CodeAgent(tools=[word_count], model=model(), executor=executor) as agent:
        answer = agent.run(TASK, additional_args={"text": TEXT})
    print("answer:", answer)
    return answer


if __name__ == "__main__":
    main()
