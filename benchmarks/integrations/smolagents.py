"""smolagents: time per CodeAgent step, SandlotExecutor beside LocalPythonExecutor.

Both sides run CodeAgent's own loop with the same scripted model (the stand-in of
``examples/integrations/smolagents.py``) and the same steps: each calls a tool
(on the host: in-process for the default, a host call from the sandbox for
sandlot), adds to a variable kept from the step before and prints it; the last
step calls ``final_answer``. A step's time is CodeAgent's own ``ActionStep``
timing (model call, parsing, execution, memory); the sandbox starts before the
first step (in ``agent.run``'s ``send_variables``), so its start is not in it.

smolagents' remote executors (E2B, Modal, Docker, Blaxel) need their services or a
Docker daemon, which this machine cannot reach, so they are not measured here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any

from smolagents import CodeAgent, tool
from smolagents.local_python_executor import LocalPythonExecutor
from smolagents.memory import ActionStep
from smolagents.monitoring import LogLevel

import sandlot
from sandlot.integrations.smolagents import SandlotExecutor

FRAMEWORK = f"smolagents {importlib.metadata.version('smolagents')}"
DEFAULT = "LocalPythonExecutor (AST interpreter in the agent's process, unisolated)"

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "integrations" / "smolagents.py"


def _scripted_model() -> Any:
    """The example's ScriptedModel class (the file is named smolagents.py: loaded by path)."""
    spec = importlib.util.spec_from_file_location("smolagents_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ScriptedModel


ScriptedModel = _scripted_model()


@tool
def add(a: int, b: int) -> int:
    """Adds two numbers.

    Args:
        a: the first number.
        b: the second number.
    """
    return a + b


def _script(count: int) -> list[str]:
    steps = [
        f"Thought: step {i}.\n<code>\ntotal = add(total, {i})\nprint('total', total)\n</code>"
        for i in range(count - 1)
    ]
    return [*steps, "Thought: done.\n<code>\nfinal_answer(total)\n</code>"]


def steps(side: str, count: int) -> list[float]:
    """Seconds per agent step for ``count`` steps of one run; ``side``: "sandlot" or
    "default"."""
    if side == "sandlot":
        executor: Any = SandlotExecutor(config=sandlot.SandboxConfig(memory_mb=512))
    elif side == "default":
        executor = LocalPythonExecutor([])
    else:
        raise ValueError(f"side must be 'sandlot' or 'default', not {side!r}")
    model = ScriptedModel(_script(count))
    with CodeAgent(
        tools=[add], model=model, executor=executor, verbosity_level=LogLevel.OFF
    ) as agent:
        answer = agent.run("add up", max_steps=count, additional_args={"total": 0})
    assert answer == sum(range(count - 1)), answer
    timed = [step for step in agent.memory.steps if isinstance(step, ActionStep)]
    assert len(timed) == count
    return [step.timing.duration for step in timed]
