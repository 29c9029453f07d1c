"""A Deep Agents agent whose shell and files live in a sandlot sandbox.

    uv run python examples/integrations/deepagents.py                    # scripted model
    uv run python examples/integrations/deepagents.py --model anthropic:claude-sonnet-4-5

Without ``--model`` a scripted chat model (LangChain's fake one) plays the LM: it
writes a script, runs it, reads what it wrote and greps for it, then answers. With
``--model`` any chat model LangChain's ``init_chat_model`` knows is asked the same
task instead (its API key from the environment).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path, where this file's own
# name would hide the deepagents package.
_here = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _here]

from deepagents import create_deep_agent  # noqa: E402
from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402

from sandlot import SandboxConfig  # noqa: E402
from sandlot.integrations.deepagents import SandlotBackend  # noqa: E402

TASK = (
    "Write /workspace/primes.py that prints the primes below 50, run it with its output "
    "in /workspace/primes.txt, read that file back and tell me the largest prime."
)
PROGRAM = "print(*[n for n in range(2, 50) if all(n % d for d in range(2, n))])\n"


class ScriptedModel(GenericFakeChatModel):
    """LangChain's fake chat model: the next scripted message each turn, tools ignored."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:  # type: ignore[override]
        return self


def scripted() -> ScriptedModel:
    def call(n: int, name: str, **args: Any) -> AIMessage:
        return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"call{n}"}])

    return ScriptedModel(
        messages=iter(
            [
                call(1, "write_file", file_path="/workspace/primes.py", content=PROGRAM),
                call(2, "execute", command="python primes.py > primes.txt && wc -w primes.txt"),
                call(3, "read_file", file_path="/workspace/primes.txt"),
                call(4, "grep", pattern="47", path="/workspace"),
                AIMessage(content="The largest prime below 50 is 47."),
            ]
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a chat model for init_chat_model (default: scripted)")
    args = parser.parse_args()
    model: BaseChatModel
    if args.model:
        from langchain.chat_models import init_chat_model

        model = init_chat_model(args.model)
    else:
        model = scripted()
    # The sandbox: bubblewrap, no network, 1 GiB of memory, commands cut at 60 s.
    with SandlotBackend(SandboxConfig(memory_mb=1024), timeout=60) as backend:
        agent = create_deep_agent(model=model, backend=backend)
        state = agent.invoke({"messages": [HumanMessage(content=TASK)]})
    for message in state["messages"]:
        if isinstance(message, ToolMessage):
            print(f"[{message.name}] {str(message.content).strip()[:200]}")
    print(state["messages"][-1].content)


if __name__ == "__main__":
    main()
