"""SandlotREPL takes from the sandbox only what it checked.

Everything a SandlotREPL hands to rlms or to the LM comes from host calls that
any code in the sandbox can make with any arguments: ``llm_query`` and
``llm_query_batched`` (prompts sent on to the LM), ``_sandlot_rlms_final`` (the
run's answer) and ``_sandlot_rlms_vars`` (the variables report). Each is
checked on the host: types, sizes, counts, names. The sandbox cannot reach
rlms's LM handler itself, and the config's secrets never leave it unredacted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from conftest import strict
from rlms_echo import EchoLM

from sandlot.integrations.rlms import SandlotREPL

LIMIT = 4096  # max_output_bytes of these sandboxes


@pytest.fixture
def env(handler: tuple[str, int], echo: EchoLM) -> Iterator[SandlotREPL]:
    echo.prompts.clear()
    repl = SandlotREPL(
        lm_handler_address=handler,
        config=strict(memory_mb=256, max_output_bytes=LIMIT),
        max_prompt_chars=100,
        max_batch=3,
    )
    yield repl
    repl.cleanup()


TRY_EACH = """
for _call in _calls:
    try:
        _call()
        print("taken")
    except Exception as exc:
        print(type(exc).__name__, str(exc).splitlines()[0][:160])
"""


def test_sub_lm_calls_take_only_bounded_strings(env: SandlotREPL, echo: EchoLM) -> None:
    result = env.execute_code(
        "_calls = [\n"
        "    lambda: llm_query(123),\n"
        "    lambda: llm_query('x' * 101),\n"
        "    lambda: llm_query('x', model=['a', 'list']),\n"
        "    lambda: llm_query('x', model='m' * 300),\n"
        "    lambda: llm_query_batched('not a list'),\n"
        "    lambda: llm_query_batched(['a', 'b', 'c', 'd']),\n"
        "    lambda: llm_query_batched(['fine', {'role': 'user'}]),\n"
        "    lambda: llm_query_batched(['fine', 'y' * 101]),\n"
        "]\n" + TRY_EACH
    )
    lines = result.stdout.splitlines()
    assert len(lines) == 8 and all(line.startswith("ToolError") for line in lines), lines
    assert "max_prompt_chars (100)" in lines[1] and "max_batch (3)" in lines[5]
    assert echo.prompts == [] and result.rlm_calls == []  # nothing reached the LM
    ok = env.execute_code("print(llm_query('x' * 100)[:6], llm_query_batched(['a'] * 3))")
    assert ok.stdout == "SUB:xx ['SUB:a', 'SUB:a', 'SUB:a']\n"


def test_a_final_answer_is_a_str_within_max_output_bytes(env: SandlotREPL) -> None:
    forged = env.execute_code(
        "_calls = [\n"
        "    lambda: _sandlot_rlms_final('x' * 5000, False),\n"
        "    lambda: _sandlot_rlms_final('é' * 3000, False),\n"  # 3000 chars, 6000 bytes
        "    lambda: _sandlot_rlms_final(42, False),\n"
        "]\n" + TRY_EACH
    )
    assert forged.stdout.count("ToolError") == 3 and forged.final_answer is None
    big = env.execute_code("answer['content'] = 'y' * 5000\nanswer['ready'] = True")
    assert big.final_answer is None and "max_output_bytes" in big.stderr
    rebound = env.execute_code("answer = {'content': 'z' * 5000, 'ready': True}")
    assert rebound.final_answer is None and "max_output_bytes" in rebound.stderr
    fits = env.execute_code("answer['content'] = 'w' * 4000\nanswer['ready'] = True")
    assert fits.final_answer == "w" * 4000


@pytest.mark.parametrize(
    "report",
    [
        "{'../../etc/passwd': 'x'}",
        "{'ok': 'v' * 1000}",
        "{f'v{i}': '' for i in range(5000)}",
        "{'ok': ['not', 'a', 'str']}",
        "['not', 'a', 'dict']",
    ],
)
def test_a_forged_variables_report_is_refused(env: SandlotREPL, report: str) -> None:
    result = env.execute_code(
        f"def _sandlot_rlms_after():\n    _sandlot_rlms_vars({report})\nmine = 1"
    )
    assert result.locals == {}
    assert "ToolError" in result.stderr and "variables report" in result.stderr


def test_output_is_bounded_by_max_output_bytes(env: SandlotREPL) -> None:
    result = env.execute_code("print('x' * 10_000_000)\nimport sys\nsys.stderr.write('e' * 10**7)")
    assert len(result.stdout.encode()) < 2 * LIMIT and len(result.stderr.encode()) < 2 * LIMIT


def test_the_sandbox_cannot_reach_the_lm_handler_itself(
    env: SandlotREPL, handler: tuple[str, int]
) -> None:
    host, port = handler
    result = env.execute_code(
        f"import socket\ntry:\n    socket.create_connection(({host!r}, {port}), timeout=2)\n"
        "    print('connected')\nexcept OSError as exc:\n    print('refused', type(exc).__name__)"
    )
    assert result.stdout.startswith("refused"), result.stdout


def test_secrets_are_redacted_from_all_that_leaves_the_sandbox(
    handler: tuple[str, int], echo: EchoLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t-rlms-value-8812"
    monkeypatch.setenv("RLMS_TOKEN", secret)
    echo.prompts.clear()
    with SandlotREPL(
        lm_handler_address=handler, config=strict(memory_mb=256, secrets=["RLMS_TOKEN"])
    ) as env:
        result = env.execute_code(
            "import os, sys\ntoken = os.environ['RLMS_TOKEN']\nprint(token)\n"
            "print(token, file=sys.stderr)\nheard = llm_query('token ' + token)\n"
            "answer['content'] = token + heard\nanswer['ready'] = True\n1 / 0"
        )
    told = [
        result.stdout,
        result.stderr,
        result.final_answer,
        *result.locals.values(),
        *echo.prompts,
    ]
    assert all(secret not in str(text) for text in told), told
    assert "[redacted RLMS_TOKEN]" in result.stdout and echo.prompts == [
        "token [redacted RLMS_TOKEN]"
    ]


def test_a_thread_left_behind_cannot_ask_the_lm_between_blocks(
    env: SandlotREPL, echo: EchoLM
) -> None:
    started = env.execute_code(
        "import threading, time\n"
        "_said = []\n"
        "def _spend():\n"
        "    time.sleep(0.5)\n"
        "    for _ in range(3):\n"
        "        try:\n"
        "            _said.append(llm_query('between'))\n"
        "        except Exception as exc:\n"
        "            _said.append(type(exc).__name__ + ': ' + str(exc).splitlines()[0])\n"
        "threading.Thread(target=_spend, daemon=True).start()\n"
    )
    assert started.stderr == ""
    time.sleep(2)  # the block is over: the thread asks now
    seen = env.execute_code("print(_said)")
    assert "answered only while a code block runs" in seen.stdout, seen
    assert "between" not in echo.prompts
