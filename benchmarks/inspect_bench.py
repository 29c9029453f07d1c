"""Inspect AI evals on sandlot, beside Inspect's own ``local`` sandbox (unisolated: the floor).

    uv run python benchmarks/inspect_bench.py                         # 100 samples, 3 rounds
    uv run python benchmarks/inspect_bench.py --samples 100 --rounds 5 --overhead 60

Two measurements, the two sandbox types alternating in this one process:

- per-sample overhead: ``sample_init`` to the first ``exec`` result (what a
  sample waits for before its first tool call returns), then ``sample_cleanup``,
  through each provider's own lifecycle calls, ``--overhead`` samples a side;
- a whole eval of ``--samples`` trivial tool-using samples (the scripted
  ``mockllm`` model runs one ``bash`` command, then submits what it printed),
  wall time from ``eval()`` to its log, ``--max-sandboxes`` at once.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from inspect_ai import Task, eval
from inspect_ai.dataset import Sample
from inspect_ai.model import ChatMessageTool, ModelOutput, ModelUsage, get_model
from inspect_ai.scorer import includes
from inspect_ai.solver import basic_agent
from inspect_ai.tool import bash
from inspect_ai.util._sandbox.local import LocalSandboxEnvironment
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import console, header, versus, versus_columns

from sandlot.integrations.inspect_ai import SandlotSandboxEnvironment

SIDES = {"sandlot": SandlotSandboxEnvironment, "local": LocalSandboxEnvironment}


def _policy(messages: list[Any], tools: Any, tool_choice: Any, config: Any) -> ModelOutput:
    """One ``bash`` call that echoes the sample's number, then ``submit`` of what it printed."""
    results = [m for m in messages if isinstance(m, ChatMessageTool)]
    if not results:
        n = str(messages[-1].content).split()[-1]
        output = ModelOutput.for_tool_call("mockllm/model", "bash", {"command": f"echo {n}"})
    else:
        answer = str(results[-1].content).strip()
        output = ModelOutput.for_tool_call("mockllm/model", "submit", {"answer": answer})
    output.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)  # no tokenizer
    return output


def trivial_task(samples: int) -> Task:
    """``samples`` samples of one tool call each, scored on the echoed number."""
    return Task(
        dataset=[Sample(input=f"Echo {n}", target=str(n)) for n in range(samples)],
        solver=basic_agent(tools=[bash(timeout=30)], message_limit=10),
        scorer=includes(),
        model=get_model("mockllm/model", custom_outputs=_policy),
    )


def whole_eval(side: str, samples: int, max_sandboxes: int) -> float:
    """Seconds for one eval on ``side``; raises unless every sample scored correct."""
    with tempfile.TemporaryDirectory() as logs:
        started = time.perf_counter()
        (log,) = eval(
            trivial_task(samples),
            sandbox=side,
            max_samples=max_sandboxes,
            max_sandboxes=max_sandboxes,
            display="none",
            log_dir=logs,
            log_samples=False,
        )
        took = time.perf_counter() - started
    assert log.status == "success" and log.results is not None, log.error
    accuracy = log.results.scores[0].metrics["accuracy"].value
    assert accuracy == 1.0, f"{side}: accuracy {accuracy}"
    return took


async def overheads(side: str, count: int) -> tuple[list[float], list[float]]:
    """Per sample: sample_init to the first exec result, and sample_cleanup; ``count`` each."""
    provider = SIDES[side]
    await provider.task_init("startup", None)
    ready, cleanup = [], []
    try:
        for _ in range(count):
            started = time.perf_counter()
            envs = await provider.sample_init("bench", None, {})
            done = await envs["default"].exec(["echo", "ready"])
            ready.append(time.perf_counter() - started)
            assert done.stdout == "ready\n"
            started = time.perf_counter()
            await provider.sample_cleanup("bench", None, envs, False)
            cleanup.append(time.perf_counter() - started)
    finally:
        await provider.task_cleanup("shutdown", None, True)
    return ready, cleanup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=100, help="samples in each whole eval")
    parser.add_argument("--rounds", type=int, default=3, help="whole evals a side")
    parser.add_argument("--overhead", type=int, default=60, help="per-sample timings a side")
    parser.add_argument("--max-sandboxes", type=int, default=8, help="samples at once")
    args = parser.parse_args()
    header("Inspect AI: the sandlot sandbox beside Inspect's local one")
    got: dict[str, dict[str, list[float]]] = {side: {} for side in SIDES}
    for turn in range(2):  # overhead, in two halves, alternating which side goes first
        for side in list(SIDES) if turn % 2 == 0 else list(SIDES)[::-1]:
            ready, cleanup = asyncio.run(overheads(side, args.overhead // 2))
            got[side].setdefault("ready", []).extend(ready)
            got[side].setdefault("cleanup", []).extend(cleanup)
    for side in SIDES:  # a first, small eval a side, not counted: imports and first starts
        whole_eval(side, 4, args.max_sandboxes)
    for turn in range(args.rounds):
        for side in list(SIDES) if turn % 2 else list(SIDES)[::-1]:
            took = whole_eval(side, args.samples, args.max_sandboxes)
            got[side].setdefault("eval", []).append(took)
    table = Table(title="Inspect AI (ms; local is unisolated: the floor)", title_justify="left")
    table.add_column("measurement")
    for column in versus_columns("sandlot", "local"):
        table.add_column(column, justify="right")
    rows = {
        "ready": "sample_init to first exec result",
        "cleanup": "sample_cleanup",
        "eval": f"whole eval, {args.samples} samples, {args.max_sandboxes} at once",
    }
    for series, label in rows.items():
        table.add_row(label, *versus(got["sandlot"][series], got["local"][series]))
    console.print(table)


if __name__ == "__main__":
    main()
