"""SandlotExecutor: smolagents' own CodeAgent loop, a scripted model, real sandboxes."""

from __future__ import annotations

import datetime
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import strict
from smolagents import CodeAgent, tool
from smolagents.memory import ActionStep
from smolagents.monitoring import LogLevel
from smolagents.utils import AgentExecutionError

import sandlot
from sandlot.integrations.smolagents import SandlotExecutor
from sandlot.sandbox import live_sandboxes

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "integrations" / "smolagents.py"


def _load_example() -> Any:
    # By path, under another name: the file is called smolagents.py.
    spec = importlib.util.spec_from_file_location("smolagents_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _load_example()
ScriptedModel = example.ScriptedModel
CONFIG = strict(memory_mb=256)
CALLS: list[tuple[str, str]] = []  # (tool, argument) of every call of a host tool, kept here


@tool
def lookup(key: str) -> str:
    """Looks a key up on the host.

    Args:
        key: what to look up.
    """
    CALLS.append(("lookup", key))
    return f"value-of-{key}"


@tool
def today() -> datetime.date:
    """Today's date, as the host knows it (not JSON: it enters the sandbox as text)."""
    return datetime.date(2026, 1, 2)


def code(body: str) -> str:
    """A model reply with ``body`` as its code block, as CodeAgent parses it."""
    return f"Thought: next.\n<code>\n{body}\n</code>"


def run(executor: SandlotExecutor, steps: list[str], **kwargs: Any) -> tuple[Any, CodeAgent]:
    model = ScriptedModel([code(step) for step in steps])
    agent = CodeAgent(
        tools=[lookup, today], model=model, executor=executor, verbosity_level=LogLevel.OFF
    )
    answer = agent.run("the task", max_steps=len(steps), **kwargs)
    assert not model.replies, "the agent stopped before the script's end"
    return answer, agent


def actions(agent: CodeAgent) -> list[ActionStep]:
    return [step for step in agent.memory.steps if isinstance(step, ActionStep)]


@pytest.fixture(autouse=True, scope="module")
def _nothing_left_running() -> Iterator[None]:
    """Set up before the shared executor, so checked after it ended."""
    yield
    assert not [sb for sb in live_sandboxes() if sb.is_alive], "a sandbox outlived the tests"


@pytest.fixture(scope="module")
def executor() -> Iterator[SandlotExecutor]:
    """One executor (one sandbox) for the tests that do not end it."""
    with SandlotExecutor(config=CONFIG, timeout=1) as shared:
        yield shared


def test_steps_keep_state_call_host_tools_and_end_with_final_answer(
    executor: SandlotExecutor,
) -> None:
    CALLS.clear()
    answer, agent = run(
        executor,
        [
            "import os\nfound = lookup('k')\nprint('found', found)\nlen(found)",
            "when = today()\nprint(type(lookup).__name__, lookup.__code__.co_filename, when)",
            "final_answer({'found': found, 'pid_here': os.getpid() != host_pid, "
            "'tags': sorted(tags), 'when': when})",
        ],
        additional_args={"host_pid": os.getpid(), "tags": {"b", "a"}},
    )
    assert answer == {
        "found": "value-of-k",
        "pid_here": True,
        "tags": ["a", "b"],
        "when": "2026-01-02",
    }
    # The tool ran here, in the host's process, with the argument the sandbox gave.
    assert CALLS == [("lookup", "k")]
    first, second, last = actions(agent)
    assert (
        first.observations
        == "Execution logs:\nfound value-of-k\nLast output from code snippet:\n10"
    )
    assert first.action_output == "10"  # the last expression's repr, as remote executors give it
    # In the sandbox the tool is a stub that calls the host, not the tool's source.
    assert "function <host tool> 2026-01-02" in second.observations
    assert last.is_final_answer and last.error is None


def test_an_error_step_goes_back_to_the_model_and_the_agent_recovers(
    executor: SandlotExecutor,
) -> None:
    answer, agent = run(
        executor,
        ["print('before the error')\nratio = 1 / 0", "ratio = 1 / 2\nfinal_answer(ratio)"],
    )
    assert answer == 0.5
    failed = actions(agent)[0]
    assert isinstance(failed.error, AgentExecutionError)
    assert "ZeroDivisionError: division by zero" in str(failed.error)
    assert "ratio = 1 / 0" in str(failed.error)  # the cell's line, for the model
    assert failed.observations == "Execution logs:\nbefore the error\n"  # from executor.state
    # What the model saw next holds the error.
    seen = agent.model.seen[1]
    assert any("ZeroDivisionError" in str(message.content) for message in seen)


def test_an_infinite_loop_times_out_as_agent_execution_error_and_state_survives(
    executor: SandlotExecutor,
) -> None:
    answer, agent = run(
        executor,
        ["kept = 41\nwhile True:\n    pass", "final_answer(kept + 1)"],
    )
    assert answer == 42
    error = actions(agent)[0].error
    assert isinstance(error, AgentExecutionError)
    assert "maximum execution time of 1 seconds" in str(error)
    assert "keeps its state" in str(error)


def test_a_memory_bomb_kills_the_sandbox_and_the_next_step_gets_a_fresh_one() -> None:
    with SandlotExecutor(config=CONFIG, timeout=10) as executor:
        answer, agent = run(
            executor,
            [
                "lost = 1",
                "hog = bytearray(2 * 1024 ** 3)",
                "final_answer([lookup(word), 'lost' in globals()])",
            ],
            additional_args={"word": "w"},
        )
        assert answer == ["value-of-w", False]  # tools and variables back; the old state gone
        error = actions(agent)[1].error
        assert isinstance(error, AgentExecutionError)
        assert "died (out_of_memory)" in str(error)
        assert "state (variables, imports, functions) is lost" in str(error)
        sandbox = executor.sandbox
        assert sandbox is not None and sandbox.is_alive
    assert executor.sandbox is None and not sandbox.is_alive  # cleanup ended it
    with pytest.raises(AgentExecutionError, match="cleaned up"):
        executor("1")


def test_the_agent_context_manager_ends_the_sandbox() -> None:
    executor = SandlotExecutor(config=CONFIG)
    with CodeAgent(
        tools=[],
        model=ScriptedModel([code("final_answer('ok')")]),
        executor=executor,
        verbosity_level=LogLevel.OFF,
    ) as agent:
        assert agent.run("t") == "ok"
        sandbox = executor.sandbox
    assert sandbox is not None and not sandbox.is_alive


def test_agents_share_a_pool_and_a_dead_sandbox_goes_back_to_it() -> None:
    with sandlot.SandboxPool(CONFIG, size=1) as pool:
        with SandlotExecutor(pool=pool) as executor:
            first = run(executor, ["final_answer(lookup('a'))"])[0]
        assert pool.stats()["lent"] == 0
        with SandlotExecutor(pool=pool) as executor:
            steps = ["hog = bytearray(2 * 1024 ** 3)", "final_answer(lookup('b'))"]
            second, agent = run(executor, steps)
        assert isinstance(actions(agent)[0].error, AgentExecutionError)
        assert (first, second) == ("value-of-a", "value-of-b")
        stats = pool.stats()
        assert stats["lent"] == 0 and stats["started"] == 3  # the dead one was replaced


def test_a_managed_agent_runs_on_the_host(executor: SandlotExecutor) -> None:
    # smolagents' remote executors refuse managed agents; here they are host calls too.
    helper = CodeAgent(
        tools=[lookup],
        model=ScriptedModel([code("final_answer(lookup('inner'))")]),
        name="helper",
        description="Looks things up.",
        verbosity_level=LogLevel.OFF,
    )
    model = ScriptedModel([code("final_answer(helper(task='look up inner'))")])
    agent = CodeAgent(
        tools=[],
        model=model,
        managed_agents=[helper],
        executor=executor,
        verbosity_level=LogLevel.OFF,
    )
    answer = agent.run("delegate")
    assert "value-of-inner" in answer and "helper" in answer


def test_logs_are_cut_as_smolagents_cuts_them(executor: SandlotExecutor) -> None:
    executor.max_print_outputs_length = 1000
    try:
        output = executor("print('x' * 5000)")
    finally:
        executor.max_print_outputs_length = 50_000
    assert len(output.logs) < 1200 and "truncated" in output.logs
    assert not output.is_final_answer


def test_the_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert example.main() == {"words": 13, "sandbox": 2}
    assert "answer: {'words': 13, 'sandbox': 2}" in capsys.readouterr().out
