"""An OpenAI Agents SDK ``SandboxAgent`` whose shell and file tools run in sandlot sandboxes.

    pip install 'sandlot[openai-agents]'
    python examples/integrations/openai_agents.py            # one agent
    python examples/integrations/openai_agents.py --many 4   # four at once, from a pool

With ``OPENAI_API_KEY`` set, the agent is driven by ``$OPENAI_MODEL`` (default
``gpt-5-mini``). Without it, the SDK's own ``ScriptedModel`` plays the model: its
turns are written below, and everything else (the Runner, the agent's tools, the
sandboxes, the workspace snapshot) runs for real.

The agent gets a CSV file through its manifest, writes a script with its
``apply_patch`` tool, runs it with its shell tool, and answers with the result.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from typing import Any

from agents import Model, RunConfig, Runner
from agents.sandbox import LocalSnapshotSpec, Manifest, SandboxAgent, SandboxRunConfig
from agents.sandbox.entries import File
from agents.testing import ModelCall, ModelStep, ScriptedModel, assistant_message, function_call
from openai.types.responses import ResponseCustomToolCall

import sandlot
from sandlot.integrations.openai_agents import SandlotSandboxClient

DATA = b"city,rain_mm\nBergen,2250\nCairo,18\nLima,16\nMumbai,2400\n"
SCRIPT = """*** Begin Patch
*** Add File: wettest.py
+import csv
+rows = list(csv.DictReader(open("data/rain.csv")))
+best = max(rows, key=lambda row: int(row["rain_mm"]))
+print(best["city"], best["rain_mm"])
*** End Patch
"""


def scripted_model() -> ScriptedModel:
    """The model's turns when no real model is configured."""
    return ScriptedModel(
        [
            [function_call("exec_command", {"cmd": "ls -l data; id"}, call_id="look")],
            [
                ResponseCustomToolCall(
                    type="custom_tool_call", name="apply_patch", call_id="write", input=SCRIPT
                )
            ],
            [function_call("exec_command", {"cmd": "python3 wettest.py"}, call_id="run")],
            ModelStep.respond(answer_from_last_output),
        ]
    )


def answer_from_last_output(call: ModelCall) -> list[Any]:
    """The scripted model's answer: what the script printed in the sandbox, read back."""
    outputs = [item for item in call.input if item.get("type") == "function_call_output"]
    printed = str(outputs[-1]["output"]).split("Output:\n", 1)[-1].split()
    return [assistant_message(f"{printed[0]} is the wettest, with {printed[1]} mm a year.")]


def model() -> Model | str:
    if os.environ.get("OPENAI_API_KEY"):
        return os.environ.get("OPENAI_MODEL", "gpt-5-mini")
    return scripted_model()


def agent() -> SandboxAgent[Any]:
    return SandboxAgent(
        name="analyst",
        model=model(),
        instructions=(
            "Answer from data/rain.csv in your workspace: write a small Python script "
            "with apply_patch, run it with the shell, and say which city is the wettest."
        ),
        default_manifest=Manifest(entries={"data/rain.csv": File(content=DATA)}),
    )


async def main(many: int) -> None:
    config = sandlot.SandboxConfig(memory_mb=1024, timeout=600)  # no network: the default
    question = "Which city is the wettest?"
    with tempfile.TemporaryDirectory() as snapshots:

        def run_config(client: SandlotSandboxClient) -> RunConfig:
            return RunConfig(
                tracing_disabled=not os.environ.get("OPENAI_API_KEY"),
                sandbox=SandboxRunConfig(
                    client=client,
                    snapshot=LocalSnapshotSpec(base_path=snapshots),  # where workspaces persist
                ),
            )

        if many <= 1:
            client = SandlotSandboxClient(config)
            result = await Runner.run(agent(), question, run_config=run_config(client))
            print(result.final_output)
            return
        # Many agents: each run borrows a started sandbox from one pool and gives it back.
        async with sandlot.AsyncSandboxPool(config, size=many, warm=many) as pool:
            client = SandlotSandboxClient(pool=pool)
            results = await asyncio.gather(
                *(Runner.run(agent(), question, run_config=run_config(client)) for _ in range(many))
            )
        for n, result in enumerate(results):
            print(f"agent {n}: {result.final_output}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--many", type=int, default=1, help="agents to run at once")
    asyncio.run(main(parser.parse_args().many))
