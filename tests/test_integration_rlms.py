"""SandlotREPL: the RLM library's (rlms) environment contract on real sandboxes, beside
rlms's own LocalREPL, and rlms's whole RLM loop with a scripted LM on loopback."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import strict
from openai_server import ScriptedOpenAIServer
from rlm import RLM
from rlm.environments import LocalREPL
from rlms_echo import EchoLM

import sandlot
from sandlot.integrations.rlms import ENVIRONMENT, SandlotREPL

CONFIG = strict(memory_mb=256)


def repl(code: str) -> str:
    """A root LM reply that runs ``code`` (rlms's ```repl fence)."""
    return f"Let me run this.\n```repl\n{code}\n```"


class Scripted:
    """The OpenAI stand-in's reply function: the root LM's requests (a system message
    first) get the next of ``root`` and are kept in ``seen``; sub-LM requests (one user
    message) are answered ``SUB:<prompt>``."""

    def __init__(self) -> None:
        self.root: list[str] = []
        self.seen: list[list[dict[str, Any]]] = []
        self.sub_prompts: list[str] = []
        self.lock = threading.Lock()
        self.base_url = ""

    def __call__(self, body: dict[str, Any]) -> str:
        messages = body["messages"]
        with self.lock:
            if messages[0]["role"] == "system":
                self.seen.append(messages)
                return self.root.pop(0) if self.root else repl("print('no script left')")
            self.sub_prompts.append(messages[-1]["content"])
        return f"SUB:{messages[-1]['content']}"


@pytest.fixture(scope="module")
def script() -> Iterator[Scripted]:
    scripted = Scripted()
    with ScriptedOpenAIServer(scripted) as server:
        scripted.base_url = server.base_url
        yield scripted


@pytest.fixture
def lm(script: Scripted) -> Scripted:
    """The script, emptied for this test."""
    script.root.clear()
    script.seen.clear()
    script.sub_prompts.clear()
    return script


def backend_kwargs(script: Scripted, model: str = "scripted") -> dict[str, Any]:
    return {"model_name": model, "base_url": script.base_url, "api_key": "k"}


@pytest.fixture(params=["local", "sandlot"])
def make_env(request: pytest.FixtureRequest, handler: tuple[str, int]) -> Iterator[Any]:
    """Builds rlms's LocalREPL or a SandlotREPL with the same arguments; cleans them up."""
    made: list[Any] = []

    def make(**kwargs: Any) -> Any:
        kwargs.setdefault("lm_handler_address", handler)
        if request.param == "local":
            env = LocalREPL(**kwargs)
        else:
            env = SandlotREPL(**kwargs, config=CONFIG, timeout=20)
        made.append(env)
        return env

    yield make
    for env in made:
        env.cleanup()


# -- the environment contract, on LocalREPL and SandlotREPL alike --------------------


def test_state_persists_and_output_is_captured(make_env: Any) -> None:
    env = make_env()
    assert env.execute_code("x = 40\ndef inc(v):\n    return v + 1").stderr == ""
    result = env.execute_code("import sys\nprint(inc(x) + 1)\nprint('warn', file=sys.stderr)")
    assert result.stdout == "42\n"
    assert result.stderr == "warn\n"
    assert "x" in result.locals
    assert result.final_answer is None and result.rlm_calls == []
    fresh = make_env().execute_code("import math\nprint(round(math.pi, 2))\nprint(x)")
    assert fresh.stdout == "3.14\n"  # imports work; another completion's variables are not there
    assert "NameError" in fresh.stderr and "'x'" in fresh.stderr


def test_the_context_is_loaded_as_the_library_does(make_env: Any) -> None:
    text = make_env(context_payload="needle in ünïcode hay")
    printed = text.execute_code("print(context == context_0, context.count('hay'), type(context))")
    assert printed.stdout == "True 1 <class 'str'>\n"
    data = make_env(context_payload={"docs": ["a", "b"], "n": 2})
    assert data.execute_code("print(context['docs'][context['n'] - 1])").stdout == "b\n"
    listed = make_env(context_payload=[1, 2, 3, "four"])
    assert listed.execute_code("print(context[3], context_0[:3])").stdout == "four [1, 2, 3]\n"
    rebound = data.execute_code("context = 'gone'")
    assert rebound.stderr == ""
    assert data.execute_code("print(context['n'])").stdout == "2\n"  # the alias comes back


def test_llm_query_and_batched_reach_the_lm_handler(make_env: Any, echo: EchoLM) -> None:
    env = make_env()
    echo.prompts.clear()
    result = env.execute_code(
        "one = llm_query('first')\nmany = llm_query_batched(['a', 'b'])\nprint(one, many)"
    )
    assert result.stdout == "SUB:first ['SUB:a', 'SUB:b']\n", result.stderr
    assert sorted(echo.prompts) == ["a", "b", "first"]
    assert [c.response for c in result.rlm_calls] == ["SUB:first", "SUB:a", "SUB:b"]
    assert env.execute_code("print(rlm_query('deep'))").stdout == "SUB:deep\n"  # falls back


def test_errors_go_to_stderr_and_the_repl_goes_on(make_env: Any) -> None:
    env = make_env()
    env.execute_code("kept = 'yes'")
    failed = env.execute_code("print('before')\n1 / 0")
    assert failed.stdout == "before\n"
    assert "ZeroDivisionError: division by zero" in failed.stderr
    assert env.execute_code("print(kept)").stdout == "yes\n"
    assert "SyntaxError" in env.execute_code("def broken(").stderr


def test_answer_ready_is_the_final_answer(make_env: Any) -> None:
    env = make_env()
    assert env.execute_code("answer['content'] = 'draft'").final_answer is None
    done = env.execute_code("answer['content'] = 'forty-two'\nanswer['ready'] = True")
    assert done.final_answer == "forty-two"
    assert env.execute_code("print(1)").final_answer is None  # reported once
    rebound = env.execute_code("answer = {'content': 7, 'ready': True}")
    assert rebound.final_answer == "7"
    assert env.execute_code("print(answer)").stdout == "{'content': 7, 'ready': True}\n"
    unready = env.execute_code("answer = {'content': 'partial', 'ready': False}")
    assert unready.final_answer is None
    # The rebound dict is wrapped again, so flipping ready in a later block still counts.
    assert env.execute_code("answer['ready'] = True").final_answer == "partial"


def test_helpers_are_restored_and_show_vars_lists_the_code_variables(make_env: Any) -> None:
    env = make_env(context_payload="ctx")
    env.execute_code("llm_query = None\nSHOW_VARS = 1\nmine = [1, 2]")
    assert env.execute_code("print(llm_query('back'))").stdout == "SUB:back\n"
    shown = env.execute_code("print(SHOW_VARS())").stdout
    assert shown.startswith("Available variables: ") and "'mine': 'list'" in shown
    assert "llm_query" not in shown and "answer" not in shown


def test_custom_tools_functions_and_values(make_env: Any) -> None:
    def shout(word: str) -> str:
        return word.upper()

    env = make_env(
        custom_tools={"shout": shout, "LIMITS": {"tool": {"max": 3}, "description": "caps"}}
    )
    assert env.execute_code("print(shout('hi'), LIMITS['max'])").stdout == "HI 3\n"
    with pytest.raises(ValueError, match="reserved"):
        make_env(custom_tools={"llm_query": shout})


def test_without_a_handler_llm_query_says_so(make_env: Any) -> None:
    env = make_env(lm_handler_address=None)
    assert env.execute_code("print(llm_query('x'))").stdout == "Error: No LM handler configured\n"


# -- SandlotREPL only ---------------------------------------------------------------


def test_rlm_completion_runs_its_code_in_the_sandbox(lm: Scripted) -> None:
    lm.root += [
        repl(
            "import os\nn = context.count('needle')\n"
            "verdict = llm_query(f'is {n} many?')\nprint(os.getcwd(), n, verdict)"
        ),
        repl("answer['content'] = f'{n}|{verdict}'\nanswer['ready'] = True"),
    ]
    rlm = RLM(
        backend="openai",
        backend_kwargs=backend_kwargs(lm),
        environment=ENVIRONMENT,  # type: ignore[arg-type]
        environment_kwargs={"config": CONFIG},
        max_iterations=4,
    )
    result = rlm.completion("hay needle hay needle", root_prompt="how many needles?")
    assert result.response == "2|SUB:is 2 many?"
    assert lm.sub_prompts == ["is 2 many?"]
    told = lm.seen[1][-2]["content"]  # the REPL output the root LM saw after iteration 1
    assert "/workspace 2 SUB:is 2 many?" in told  # bubblewrap's workdir, not the host's


def test_a_runaway_block_and_a_memory_bomb_end_as_errors_and_the_run_goes_on(
    lm: Scripted,
) -> None:
    lm.root += [
        repl("kept = 1\nwhile True:\n    pass"),
        repl("print('kept', kept)"),
        repl("hog = bytearray(600 * 2**20)"),
        repl("print('kept' in globals(), len(context))"),
        repl("answer['content'] = 'recovered'\nanswer['ready'] = True"),
    ]
    with sandlot.SandboxPool(CONFIG, size=1) as pool:
        rlm = RLM(
            backend="openai",
            backend_kwargs=backend_kwargs(lm),
            environment=ENVIRONMENT,  # type: ignore[arg-type]
            environment_kwargs={"pool": pool, "timeout": 1.5},
            max_iterations=8,
        )
        result = rlm.completion("0123456789", root_prompt="q")
        assert result.response == "recovered"
        outputs = [seen[-2]["content"] for seen in lm.seen[1:5]]
        assert "TimeoutError" in outputs[0]
        assert "kept 1" in outputs[1]  # the interrupted REPL kept its state
        assert "SandboxDied" in outputs[2] and "out_of_memory" in outputs[2]
        assert "False 10" in outputs[3]  # a fresh sandbox, with the context again
        assert pool.stats()["lent"] == 0  # the RLM's cleanup gave the sandbox back


def test_cleanup_ends_the_sandbox_and_the_environment(handler: tuple[str, int]) -> None:
    env = SandlotREPL(lm_handler_address=handler, config=CONFIG)
    sandbox = env.sandbox
    assert sandbox is not None and sandbox.is_alive
    env.cleanup()
    env.cleanup()
    assert not sandbox.is_alive and env.sandbox is None
    with pytest.raises(sandlot.SandboxError, match="cleaned up"):
        env.execute_code("1")


def test_bad_settings_fail_at_once() -> None:
    pool = sandlot.SandboxPool(CONFIG, size=1)  # lazy: nothing starts
    with pytest.raises(sandlot.ConfigError, match="either pool or config"):
        SandlotREPL(pool=pool, config=CONFIG)
    pool.close()
    with pytest.raises(sandlot.ConfigError, match="timeout"):
        SandlotREPL(timeout=0)
    with pytest.raises(TypeError, match="JSON value"):
        SandlotREPL(context_payload={"x": object()}, config=CONFIG)
    rlm = RLM(
        backend_kwargs={"model_name": "m", "base_url": "http://127.0.0.1:9/v1", "api_key": "k"},
        environment=ENVIRONMENT,  # type: ignore[arg-type]
        environment_kwargs={"cfg": 1},
    )
    with pytest.raises(TypeError, match="unexpected keyword"):
        rlm.completion("c")


@pytest.mark.parametrize("questions", [1, 2])
def test_the_example_runs_as_written(
    lm: Scripted, questions: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "any value for a local server")
    path = Path(__file__).resolve().parent.parent / "examples" / "integrations" / "rlms.py"
    spec = importlib.util.spec_from_file_location("example_rlms", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    # The same turn for every run (two run at once): find the memos, ask the sub-LM.
    lm.root += questions * [
        repl(
            "memos = [line for line in context.splitlines() if line.startswith('Memo')]\n"
            "answer['content'] = llm_query('Answer from: ' + ' | '.join(memos))\n"
            "answer['ready'] = True"
        )
    ]
    answers = example.main("scripted", lm.base_url, questions)
    assert len(answers) == questions
    assert all("vault code is 4471" in answer for answer in answers), answers
