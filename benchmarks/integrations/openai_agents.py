"""Agents SDK: time per SandboxAgent step, SandlotSandboxClient beside UnixLocalSandboxClient.

One ``Runner.run`` per measurement, driven by the SDK's ``ScriptedModel``: each model
turn calls the agent's shell tool (``exec_command``) with a small command that writes
a file and reads it back, then the next turn comes. A step is the time from one model
call to the next, so it holds the tool call through the SDK's sandbox session and
the Runner's own work; the session's start (before the first call) and its
persist and shutdown (after the last) are outside every step.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from agents import RunConfig, Runner
from agents.sandbox import SandboxAgent, SandboxRunConfig
from agents.sandbox.sandboxes.unix_local import UnixLocalSandboxClient
from agents.sandbox.session.sandbox_client import BaseSandboxClient
from agents.sandbox.snapshot import NoopSnapshotSpec
from agents.testing import ModelCall, ModelStep, ScriptedModel, assistant_message, function_call

from sandlot import SandboxConfig
from sandlot.integrations.openai_agents import SandlotSandboxClient

FRAMEWORK = "OpenAI Agents SDK (SandboxAgent shell tool)"
DEFAULT = "UnixLocalSandboxClient (unisolated on Linux)"


def _client(side: str) -> BaseSandboxClient[Any]:
    if side == "sandlot":
        return SandlotSandboxClient(SandboxConfig())
    if side == "default":
        return UnixLocalSandboxClient()
    raise ValueError(f"side must be 'sandlot' or 'default', not {side!r}")


def steps(side: str, count: int) -> list[float]:
    """Seconds per agent step for ``count`` steps of one run on ``side``."""
    stamps: list[float] = []

    def turn(n: int) -> ModelStep:
        def respond(_call: ModelCall) -> Any:
            stamps.append(time.perf_counter())
            if n == count:
                return [assistant_message("done")]
            cmd = f"echo step {n} > step.txt && cat step.txt"
            return [function_call("exec_command", {"cmd": cmd}, call_id=f"call-{n}")]

        return ModelStep.respond(respond)

    model = ScriptedModel([turn(n) for n in range(count + 1)])
    agent = SandboxAgent(name="bench", model=model, instructions="Run the commands.")
    config = RunConfig(
        tracing_disabled=True,
        sandbox=SandboxRunConfig(client=_client(side), snapshot=NoopSnapshotSpec()),
    )
    result = asyncio.run(Runner.run(agent, "go", run_config=config, max_turns=count + 2))
    if result.final_output != "done":
        raise RuntimeError(f"the {side} run ended with {result.final_output!r}")
    return [later - earlier for earlier, later in itertools.pairwise(stamps)]
