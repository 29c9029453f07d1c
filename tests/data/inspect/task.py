"""An Inspect task whose samples use tools in their sandbox, driven by a scripted mockllm.

Each sample asks for the square of a number. The scripted model writes a
script with ``bash``, runs it into ``result.txt``, reads the file back and
submits what it read; the scorer checks the sandbox's ``result.txt`` itself.
Samples whose metadata name a ``misbehave`` command run that command first
(a fork bomb, a memory bomb, an endless loop, a 1 GB write).

``inspect eval tests/data/inspect/task.py --sandbox sandlot`` runs it (the model
is part of the task); ``SAMPLES`` sets how many ordinary samples there are.
"""

from __future__ import annotations

import os
from typing import Any

from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.model import ChatMessageTool, ModelOutput, ModelUsage, get_model
from inspect_ai.scorer import CORRECT, INCORRECT, Score, Target, accuracy, scorer
from inspect_ai.solver import TaskState, basic_agent
from inspect_ai.tool import bash, python
from inspect_ai.util import sandbox

MISBEHAVIOURS = {
    "fork_bomb": "b() { b | b & }; b",
    "memory_bomb": "python3 -c 'x = bytearray(8 << 30)'",
    "endless_loop": "while :; do :; done",
    # The first file stops at the file-size limit (disk_mb), the second takes the workdir past it.
    "big_write": "head -c 1G /dev/zero > big.bin; head -c 1G /dev/zero > big2.bin",
}


def _steps(n: int, misbehave: str | None) -> list[tuple[str, dict[str, Any]]]:
    """The tool calls the scripted model makes for the square of ``n``."""
    steps: list[tuple[str, dict[str, Any]]] = []
    if misbehave is not None:
        steps.append(("bash", {"command": MISBEHAVIOURS[misbehave]}))
    steps += [
        ("bash", {"command": f"printf 'print({n} * {n})\\n' > square.py"}),
        (
            "python",
            {
                "code": "import subprocess; subprocess.run(['python3', 'square.py'], "
                "stdout=open('result.txt', 'w'), check=True)"
            },
        ),
        ("bash", {"command": "cat result.txt"}),
    ]
    return steps


def policy(messages: list[Any], tools: list[Any], tool_choice: Any, config: Any) -> ModelOutput:
    """The next move of the scripted model, from the conversation so far."""
    output = _move(messages)
    # Usage given, so mockllm does not count tokens (its tokenizer would be downloaded).
    output.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
    return output


def _move(messages: list[Any]) -> ModelOutput:
    prompt = str(messages[1].content if len(messages) > 1 else messages[0].content)
    n = int(prompt.split("square of ")[1].split(".")[0])
    misbehave = prompt.split("First run: ")[1].split(".")[0] if "First run: " in prompt else None
    done = [m for m in messages if isinstance(m, ChatMessageTool)]
    steps = _steps(n, misbehave)
    if len(done) < len(steps):
        name, arguments = steps[len(done)]
        return ModelOutput.for_tool_call("mockllm/model", name, arguments)
    answer = str(done[-1].content).strip() if done else ""
    return ModelOutput.for_tool_call("mockllm/model", "submit", {"answer": answer})


@scorer(metrics=[accuracy()])
def square_in_sandbox():  # type: ignore[no-untyped-def]
    """Correct when the sandbox's result.txt holds the square and the answer says the same."""

    async def score(state: TaskState, target: Target) -> Score:
        try:
            held = (await sandbox().read_file("result.txt")).strip()
        except FileNotFoundError:
            return Score(value=INCORRECT, explanation="no result.txt in the sandbox")
        ok = held == target.text and state.output.completion.strip() == target.text
        config = (await sandbox().exec(["printenv", "SQUARES_CONFIG"])).stdout.strip()
        return Score(value=CORRECT if ok else INCORRECT, answer=held, metadata={"config": config})

    return score


@task
def squares(
    samples: int = int(os.environ.get("SAMPLES", "4")), misbehave: str | list[str] = ""
) -> Task:
    """``samples`` squares to compute, plus one sample per misbehaviour named.

    ``-T misbehave=fork_bomb,memory_bomb`` (Inspect makes the list) or a comma-separated str.
    """
    if isinstance(misbehave, str):
        misbehave = misbehave.split(",")
    dataset = [
        Sample(input=f"Compute the square of {n}.", target=str(n * n), id=f"square-{n}")
        for n in range(2, 2 + samples)
    ]
    for i, name in enumerate(filter(None, misbehave)):
        n = 100 + i
        dataset.append(
            Sample(
                input=f"Compute the square of {n}. First run: {name}.",
                target=str(n * n),
                id=f"misbehave-{name}",
            )
        )
    return Task(
        dataset=dataset,
        solver=basic_agent(tools=[bash(timeout=5), python(timeout=5)], message_limit=30),
        scorer=square_in_sandbox(),
        model=get_model("mockllm/model", custom_outputs=policy),
    )
